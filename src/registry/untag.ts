/**
 * Removing exactly one tag: never the manifest it points at, never another tag. Two strategies, chosen per
 * registry by configuration and never by probing (a DELETE by tag on some registries removes the whole
 * manifest with every co-tag):
 * - `native`: `DELETE /v2/<name>/manifests/<tag>` (OCI distribution 1.1; distribution 3.x, recent zot).
 * - `swap`: put a unique, tiny placeholder manifest under the tag, then delete the placeholder by digest, which
 *   takes only that tag with it. Works on any registry that accepts a PUT and a DELETE by digest (2.8.x).
 */
import { randomUUID } from 'node:crypto'
import { GatewayError, isGatewayError, type ErrorCode } from '../errors.js'
import { sha256Digest, type Manifest, type RegistryClient, type Scope } from './client.js'
import { OCI_MANIFEST } from './media-types.js'

export type UntagStrategy = 'swap' | 'native'

/** The OCI "empty" blob `{}`, the config of every placeholder. */
export const EMPTY_BLOB = Buffer.from('{}')
export const EMPTY_DESCRIPTOR = {
  mediaType: 'application/vnd.oci.empty.v1+json',
  digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
  size: 2
} as const

/** Annotation carrying a fresh nonce, so no two placeholders share a digest (deleting one never takes another). */
export const PLACEHOLDER_ANNOTATION = 'dev.registry-delete-gateway.untag'

/** One token for the whole swap: it pulls (checks), pushes (blob, placeholder, restore) and deletes. */
const SWAP_SCOPE: Scope = 'pull,push,delete'
const DEFAULT_BLOB_CACHE_SIZE = 10_000

/** Runs work one at a time per key. The app may pass one shared lock so other tag-changing work queues too. */
export interface KeyedLock {
  run: <T>(key: string, work: () => Promise<T>) => Promise<T>
}

/** An in-process KeyedLock: a promise chain per key, dropped once the key is idle, so its size is what is in flight. */
export class KeyedQueue implements KeyedLock {
  private readonly tails = new Map<string, Promise<void>>()

  async run<T> (key: string, work: () => Promise<T>): Promise<T> {
    const result = (this.tails.get(key) ?? Promise.resolve()).then(work)
    const tail = result.then(() => {}, () => {})
    this.tails.set(key, tail)
    try {
      return await result
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key)
    }
  }

  /** Keys with work queued or running. */
  get size (): number {
    return this.tails.size
  }
}

/**
 * The key under which an untag serialises its work. On distribution 2.8.2 a manifest DELETE walks every tag of
 * the repository and sometimes answers 500 when another request changes a tag meanwhile, so every tag-changing
 * request in one repository should hold this key.
 */
export function repositoryLockKey (registry: string, repository: string): string {
  return `${registry}\n${repository}`
}

export interface UntagRequest {
  repository: string
  tag: string
  /** The manifest the tag points at now, exact bytes and media type: put back if a swap cannot finish. */
  original: Manifest
  /**
   * The caller holds this repository's lock and read `original` under it, so nothing of the gateway's can have
   * moved the tag since: the untag neither takes the lock again nor looks at the tag once more.
   */
  readUnderLock?: boolean
}

export interface UntagResult {
  strategy: UntagStrategy
  /**
   * Registry requests the untag made (a blob upload counts two). A 401 challenge answered on the way adds one
   * that only the registry metrics see.
   */
  requests: number
  /** Swap: the digest of the placeholder that was put under the tag and then deleted. */
  placeholderDigest?: string
  /** Swap: a request failed with this code, yet the registry, asked again, shows the tag gone: the untag is done. */
  recheckedAfter?: ErrorCode
}

export interface UntaggerOptions {
  lock?: KeyedLock
  /** Repositories remembered as holding the empty blob; the oldest is forgotten first. */
  blobCacheSize?: number
}

/** The placeholder for one swap: an OCI image manifest with the empty config, no layers and a fresh nonce. */
export function placeholderManifest (nonce: string = randomUUID()): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: EMPTY_DESCRIPTOR,
    layers: [],
    annotations: { [PLACEHOLDER_ANNOTATION]: nonce }
  }))
}

/** Whether manifest bytes are a swap's placeholder: the empty config, no layers, and the gateway's nonce annotation. */
export function isPlaceholder (bytes: Buffer): boolean {
  let manifest: { config?: { digest?: unknown }, layers?: unknown, annotations?: Record<string, unknown> }
  try {
    manifest = JSON.parse(bytes.toString('utf8'))
  } catch {
    return false
  }
  return typeof manifest?.annotations?.[PLACEHOLDER_ANNOTATION] === 'string' && manifest.config?.digest === EMPTY_DESCRIPTOR.digest &&
    Array.isArray(manifest.layers) && manifest.layers.length === 0
}

type Ask = <T>(work: () => Promise<T>, requests?: number) => Promise<T>

function asGatewayError (error: unknown): GatewayError {
  return isGatewayError(error) ? error : new GatewayError('INTERNAL_ERROR', `untag failed unexpectedly: ${String(error)}`, { cause: error })
}

function withNote (error: GatewayError, detail: string, extras: Record<string, unknown>): GatewayError {
  return new GatewayError(error.code, detail, {
    extras: { ...error.extras, ...extras },
    ...(error.retryAfter === undefined ? {} : { retryAfter: error.retryAfter }),
    cause: error
  })
}

/**
 * Refuses, before anything changes, when the tag no longer points at the manifest the untag was planned for: the
 * original was read outside the repository's lock, and untagging now would remove whatever was pushed since.
 */
async function ensureUnmoved (client: RegistryClient, { repository, tag, original }: UntagRequest, scope: Scope): Promise<void> {
  const now = (await client.resolve(repository, tag, scope)).digest
  if (now === original.digest) return
  throw new GatewayError('PLAN_STALE',
    `${repository}:${tag} moved to ${now} after the untag was planned for ${original.digest}; nothing was changed. Make a new dry-run and untag again if ${now} should go too.`,
    { extras: { digest: now, plannedDigest: original.digest } })
}

export class Untagger {
  private readonly lock: KeyedLock
  private readonly blobCacheSize: number
  /** Insertion-ordered, so the first entry is the one to forget. */
  private readonly blobPresent = new Set<string>()

  constructor (options: UntaggerOptions = {}) {
    this.lock = options.lock ?? new KeyedQueue()
    this.blobCacheSize = options.blobCacheSize ?? DEFAULT_BLOB_CACHE_SIZE
  }

  /** Removes `request.tag` and nothing else, the way `strategy` says; throws a catalogue error otherwise. */
  async untag (client: RegistryClient, strategy: UntagStrategy, request: UntagRequest): Promise<UntagResult> {
    const run = async (): Promise<UntagResult> => strategy === 'native' ? await this.native(client, request) : await this.swap(client, request)
    return request.readUnderLock === true ? await run() : await this.lock.run(repositoryLockKey(client.name, request.repository), run)
  }

  private async native (client: RegistryClient, request: UntagRequest): Promise<UntagResult> {
    const { repository, tag } = request
    // The registry has no conditional DELETE by tag: a push between this look and the DELETE is still untagged.
    if (request.readUnderLock !== true) await ensureUnmoved(client, request, 'pull,delete')
    try {
      await client.deleteTag(repository, tag)
    } catch (error) {
      // distribution 2.8 answers 400 DIGEST_INVALID to a DELETE by tag and keeps the tag.
      if (isGatewayError(error) && error.extras.upstreamStatus === 400) {
        throw withNote(error,
          `registry "${client.name}" does not remove a tag with DELETE /v2/${repository}/manifests/${tag} (it answered 400); ${repository}:${tag} is unchanged. Set untagStrategy: swap for this registry.`,
          {})
      }
      throw error
    }
    return { strategy: 'native', requests: request.readUnderLock === true ? 1 : 2 }
  }

  private async swap (client: RegistryClient, request: UntagRequest): Promise<UntagResult> {
    let requests = 0
    const ask: Ask = async (work, count = 1) => {
      requests += count
      return await work()
    }
    const placeholder = placeholderManifest()
    const placeholderDigest = sha256Digest(placeholder)
    try {
      const recheckedAfter = await this.swapSteps(client, request, placeholder, placeholderDigest, ask)
      return { strategy: 'swap', requests, placeholderDigest, ...(recheckedAfter === undefined ? {} : { recheckedAfter }) }
    } catch (error) {
      const failure = asGatewayError(error)
      if (failure.code !== 'UPSTREAM_AUTH_FAILED') throw failure
      throw withNote(failure,
        `Untag by swap needs push: the gateway's registry account needs pull, push and delete on ${request.repository} (token scope pull,push,delete), as restore does. ${failure.detail}`,
        {})
    }
  }

  /** Answers the code of a failure after which the registry showed the tag gone, if any. */
  private async swapSteps (
    client: RegistryClient, request: UntagRequest, placeholder: Buffer, placeholderDigest: string, ask: Ask
  ): Promise<ErrorCode | undefined> {
    const { repository, tag } = request
    if (!this.blobPresent.has(repositoryLockKey(client.name, repository))) await this.ensureEmptyBlob(client, repository, ask)
    if (request.readUnderLock !== true) await ask(async () => { await ensureUnmoved(client, request, SWAP_SCOPE) })
    try {
      await this.putPlaceholder(client, repository, tag, placeholder, ask)
      await ask(async () => { await client.deleteManifest(repository, placeholderDigest, SWAP_SCOPE) })
      return undefined
    } catch (error) {
      const failure = asGatewayError(error)
      await this.recover(client, request, placeholderDigest, failure, ask)
      return failure.code
    }
  }

  private async ensureEmptyBlob (client: RegistryClient, repository: string, ask: Ask): Promise<void> {
    if (!await ask(async () => await client.blobExists(repository, EMPTY_DESCRIPTOR.digest, SWAP_SCOPE))) {
      await ask(async () => await client.uploadBlob(repository, EMPTY_BLOB, SWAP_SCOPE), 2)
    }
    const key = repositoryLockKey(client.name, repository)
    if (this.blobPresent.size >= this.blobCacheSize) this.blobPresent.delete(this.blobPresent.values().next().value as string)
    this.blobPresent.add(key)
  }

  private async putPlaceholder (client: RegistryClient, repository: string, tag: string, placeholder: Buffer, ask: Ask): Promise<void> {
    const put = async (): Promise<void> => { await ask(async () => await client.putManifest(repository, tag, placeholder, OCI_MANIFEST, SWAP_SCOPE)) }
    try {
      await put()
    } catch (error) {
      if (!isGatewayError(error) || error.extras.upstreamCode !== 'MANIFEST_BLOB_UNKNOWN') throw error
      // Remembered as present, but garbage collection took it once no placeholder referenced it any more.
      this.blobPresent.delete(repositoryLockKey(client.name, repository))
      await this.ensureEmptyBlob(client, repository, ask)
      await put()
    }
  }

  /**
   * After a failed PUT or DELETE: asks the registry what the tag points at now and makes sure it never stays on
   * the placeholder. Returns when the tag is gone (a DELETE that answered 500 may have acted); throws otherwise,
   * saying whether the original is back.
   */
  private async recover (client: RegistryClient, request: UntagRequest, placeholderDigest: string, failure: GatewayError, ask: Ask): Promise<void> {
    const { repository, tag, original } = request
    const image = `${repository}:${tag}`
    const extras = { placeholderDigest }
    let now: string | undefined
    try {
      now = (await ask(async () => await client.resolve(repository, tag, SWAP_SCOPE))).digest
    } catch (error) {
      if (isGatewayError(error) && error.code === 'NOT_FOUND') return
    }
    if (now === original.digest) {
      throw withNote(failure, `${failure.detail} Untag of ${image} did not happen; the tag still points at ${original.digest}.`, { ...extras, restored: true })
    }
    if (now !== undefined && now !== placeholderDigest) {
      throw withNote(failure,
        `${failure.detail} Untag of ${image} did not finish and the tag now points at ${now}, pushed by someone else meanwhile; the gateway left it alone.`,
        { ...extras, restored: false, tagDigest: now })
    }
    // On the placeholder, or the registry cannot say: the original goes back either way.
    try {
      await ask(async () => await client.putManifest(repository, tag, original.bytes, original.mediaType, SWAP_SCOPE))
    } catch (error) {
      throw withNote(failure,
        `${failure.detail} Untag of ${image} did not finish, and putting ${original.digest} back under the tag failed too (${asGatewayError(error).detail}); the tag may point at the placeholder ${placeholderDigest}. ${original.digest} is still in the registry, untagged: tag it again (e.g. skopeo copy of ${repository}@${original.digest} to ${image}) once the registry answers.`,
        { ...extras, restored: false })
    }
    throw withNote(failure, `${failure.detail} Untag of ${image} did not finish; the tag was put back on ${original.digest}.`, { ...extras, restored: true })
  }
}
