import { createHash } from 'node:crypto'
import { Agent, Pool, type Dispatcher } from 'undici'
import { GatewayError, isGatewayError } from '../errors.js'
import { basicAuthorization, TokenService, type RegistryCredentials } from './auth.js'
import { headerValue as header, readLimited } from './http-body.js'
import { parseChallenges, type Challenge } from './challenge.js'
import { malformedAnswer, mapRegistryResponse, mapTransportError, type OperationContext } from './errors.js'
import { essence, MANIFEST_ACCEPT } from './media-types.js'
import { confirmLockHeld } from './lock-guard.js'
import type { RegistryObserver } from '../metrics.js'

export interface RegistryClientOptions {
  name: string
  url: string
  credentials?: RegistryCredentials
  connectTimeoutMs: number
  requestTimeoutMs: number
  /** Connections to the registry, and so the most requests in flight to it at once. */
  connections: number
  trustedRealmOrigins: readonly string[]
  /** Most registry tokens cached (default 10 000). */
  tokenCacheSize?: number
  tls?: { ca?: string, insecure?: boolean }
  /** Replaces the connection pool; tests use it to inject faults a real registry cannot show. */
  dispatcher?: Dispatcher
  /** Told of every request and token lookup (metrics). */
  observer?: RegistryObserver
  /** How far a tag listing may go before it is refused as incomplete (defaults: 10,000 pages, 32 MiB). */
  tagList?: TagListLimits
}

export interface TagListLimits {
  maxPages: number
  maxBytes: number
}

export interface ManifestDescriptor {
  digest: string
  mediaType: string
  size: number
}

export interface Manifest extends ManifestDescriptor {
  bytes: Buffer
}

/** Registry manifests are capped at 4 MiB by distribution; more is not a manifest. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024
const MAX_ERROR_BODY_BYTES = 64 * 1024
export const TAG_LIST_LIMITS: TagListLimits = { maxPages: 10_000, maxBytes: 32 * 1024 * 1024 }
const DIGEST_HEADER = /^sha256:[a-f0-9]{64}$/

/** Token scopes by what an operation does; an untag by swap pulls, pushes and deletes under one token. */
export type Scope = 'pull' | 'pull,delete' | 'pull,push' | 'pull,push,delete'

interface SendOptions {
  method: Dispatcher.HttpMethod
  path: string
  repository: string
  scope: Scope
  context: OperationContext
  headers?: Record<string, string>
  body?: Buffer
  /** Aborts the request when the work it serves is over (its caller went away, or a sibling request failed). */
  signal?: AbortSignal
  /** The token scope when it is not the repository's (the catalog's is `registry:catalog:*`). */
  tokenScope?: string
}

export function sha256Digest (bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

/** `Link: </v2/x/tags/list?last=a&n=100>; rel="next"` → `/v2/x/tags/list?last=a&n=100`, as written. */
export function nextLink (link: string | undefined): string | undefined {
  if (link === undefined) return undefined
  for (const part of link.split(/,(?=\s*<)/)) {
    const match = /^\s*<([^>]*)>(.*)$/.exec(part)
    if (match !== null && /;\s*rel="?next"?/i.test(match[2] as string)) return match[1] as string
  }
  return undefined
}

/**
 * Speaks the registry API for one registry over one keep-alive pool: resolve, fetch, delete and put manifests,
 * list tags, and authenticate the way the registry's 401 challenge asks (anonymous, Basic or Bearer token).
 * Knows nothing of the gateway's routes or policy: callers decide, this only speaks the protocol.
 */
export class RegistryClient {
  readonly name: string
  private readonly origin: string
  private readonly basePath: string
  private readonly pool: Dispatcher
  private readonly tokenDispatcher: Dispatcher
  private readonly ownsDispatchers: boolean
  private readonly tokens: TokenService
  /** The registry's last challenge tells how to authenticate the next request before it is refused. */
  private challenge: Challenge | undefined

  constructor (private readonly options: RegistryClientOptions) {
    this.name = options.name
    const url = new URL(options.url)
    this.origin = url.origin
    this.basePath = url.pathname.replace(/\/+$/, '')
    const connect = {
      timeout: options.connectTimeoutMs,
      ...(options.tls?.ca === undefined ? {} : { ca: options.tls.ca }),
      ...(options.tls?.insecure === true ? { rejectUnauthorized: false } : {})
    }
    this.ownsDispatchers = options.dispatcher === undefined
    this.pool = options.dispatcher ?? new Pool(this.origin, { connections: options.connections, connect, pipelining: 1 })
    this.tokenDispatcher = options.dispatcher ?? new Agent({ connect, connections: 4 })
    this.tokens = new TokenService({
      registryName: options.name,
      registryOrigin: this.origin,
      credentials: options.credentials,
      trustedRealmOrigins: options.trustedRealmOrigins,
      dispatcher: this.tokenDispatcher,
      timeoutMs: options.requestTimeoutMs,
      cacheSize: options.tokenCacheSize,
      onLookup: hit => options.observer?.tokenLookup(options.name, hit)
    })
  }

  private repositoryPath (repository: string, rest: string): string {
    return `${this.basePath}/v2/${repository}/${rest}`
  }

  private tokenScopes (options: SendOptions): string[] {
    return [options.tokenScope ?? `repository:${options.repository}:${options.scope}`]
  }

  private async authorization (options: SendOptions, challenge: Challenge | undefined): Promise<string | undefined> {
    if (challenge === undefined) return undefined
    if (challenge.scheme === 'basic') {
      // A Basic challenge is only remembered when there are credentials to answer it with.
      return basicAuthorization(this.options.credentials as RegistryCredentials)
    }
    // supportedChallenge only keeps Bearer challenges that name a realm.
    return `Bearer ${await this.tokens.token(challenge.params.realm as string, challenge.params.service, this.tokenScopes(options))}`
  }

  private async dispatch (options: SendOptions, authorization: string | undefined): Promise<Dispatcher.ResponseData> {
    const started = performance.now()
    const observe = (status: number | 'error'): void => {
      this.options.observer?.request({ registry: this.name, operation: options.context.operation, status, seconds: (performance.now() - started) / 1000 })
    }
    try {
      const response = await this.pool.request({
        origin: this.origin,
        method: options.method,
        path: options.path,
        headers: { ...options.headers, ...(authorization === undefined ? {} : { authorization }) },
        body: options.body,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
        headersTimeout: this.options.requestTimeoutMs,
        bodyTimeout: this.options.requestTimeoutMs
      })
      observe(response.statusCode)
      return response
    } catch (error) {
      observe('error')
      throw mapTransportError(error, options.context, this.options.requestTimeoutMs)
    }
  }

  /**
   * Sends a request, answering at most one 401 challenge: a second 401 means the credentials or the token's
   * scope are not enough, which retrying cannot fix.
   */
  private async send (options: SendOptions): Promise<Dispatcher.ResponseData> {
    const known = this.challenge
    const response = await this.dispatch(options, await this.authorization(options, known))
    if (response.statusCode !== 401) return response
    const challenge = this.supportedChallenge(response.headers['www-authenticate'])
    await response.body.dump()
    if (challenge === undefined) throw this.authFailure(options, 'it asked for an authentication scheme the gateway does not support')
    if (challenge.scheme === 'basic' && this.options.credentials === undefined) {
      throw this.authFailure(options,
        'it requires credentials and none are configured (set REGISTRY_USERNAME and REGISTRY_PASSWORD or the registry\'s username/password)')
    }
    if (known !== undefined && known.scheme === challenge.scheme) {
      if (challenge.scheme === 'basic') throw this.authFailure(options, 'it rejected the configured username and password')
      // A refused token may be stale (registry restarted with a new key); one fresh token settles it.
      this.tokens.invalidate(challenge.params.realm as string, challenge.params.service, this.tokenScopes(options))
    }
    this.challenge = challenge
    const retried = await this.dispatch(options, await this.authorization(options, challenge))
    if (retried.statusCode === 401) {
      const error = parseChallenges(header(retried.headers, 'www-authenticate') ?? '')[0]?.params.error
      await retried.body.dump()
      throw this.authFailure(options, error === 'insufficient_scope'
        ? `the gateway's account lacks ${options.tokenScope ?? `${options.scope} on ${options.repository}`}`
        : 'it rejected the gateway\'s credentials')
    }
    return retried
  }

  private supportedChallenge (value: string | string[] | undefined): Challenge | undefined {
    const all = (Array.isArray(value) ? value : [value ?? '']).flatMap(parseChallenges)
    return all.find(challenge => challenge.scheme === 'bearer' && challenge.params.realm !== undefined) ??
      all.find(challenge => challenge.scheme === 'basic')
  }

  private authFailure (options: SendOptions, why: string): GatewayError {
    return new GatewayError('UPSTREAM_AUTH_FAILED',
      `registry "${this.name}" refused ${options.context.operation} of ${options.repository}: ${why}.`,
      { extras: { upstreamStatus: 401 } })
  }

  private async failure (response: Dispatcher.ResponseData, context: OperationContext): Promise<GatewayError> {
    const body = await readLimited(response.body, MAX_ERROR_BODY_BYTES).catch(() => undefined)
    return mapRegistryResponse(response.statusCode, response.headers, body, context)
  }

  /** Checks that the registry answers its API root (200, or 401 when it wants credentials we then present). */
  async ping (): Promise<void> {
    const context = { registry: this.name, operation: 'ping' }
    const response = await this.dispatch({ method: 'GET', path: `${this.basePath}/v2/`, repository: '', scope: 'pull', context }, undefined)
    if (response.statusCode === 200 || response.statusCode === 401) {
      await response.body.dump()
      return
    }
    throw await this.failure(response, context)
  }

  /**
   * Where the digest is resolved: the digest that DELETE accepts for `reference`, by a HEAD with every manifest
   * type in Accept (with fewer, distribution answers 404 or a converted schema1 digest that DELETE refuses),
   * falling back to GET and hashing the raw bytes when the registry omits or garbles Docker-Content-Digest.
   */
  async resolve (repository: string, reference: string, scope: Scope = 'pull,delete'): Promise<ManifestDescriptor> {
    const context = { registry: this.name, operation: 'resolve', repository, reference }
    const response = await this.send({
      method: 'HEAD', path: this.repositoryPath(repository, `manifests/${reference}`), repository, scope, context, headers: { accept: MANIFEST_ACCEPT }
    })
    if (response.statusCode !== 200) throw await this.failure(response, context)
    await response.body.dump()
    const digest = header(response.headers, 'docker-content-digest')
    if (digest === undefined || !DIGEST_HEADER.test(digest)) {
      const manifest = await this.getManifest(repository, reference, scope)
      return { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.size }
    }
    return {
      digest,
      mediaType: essence(header(response.headers, 'content-type') ?? ''),
      size: Number(header(response.headers, 'content-length') ?? 0)
    }
  }

  /** The manifest's exact bytes, verified against the digest the registry claims for them. */
  async getManifest (repository: string, reference: string, scope: Scope = 'pull,delete', signal?: AbortSignal): Promise<Manifest> {
    const context = { registry: this.name, operation: 'get manifest', repository, reference }
    const response = await this.send({
      method: 'GET', path: this.repositoryPath(repository, `manifests/${reference}`), repository, scope, context, headers: { accept: MANIFEST_ACCEPT }, signal
    })
    if (response.statusCode !== 200) throw await this.failure(response, context)
    const bytes = await readLimited(response.body, MAX_MANIFEST_BYTES)
    const digest = sha256Digest(bytes)
    const claimed = header(response.headers, 'docker-content-digest')
    const expected = reference.startsWith('sha256:') ? reference : claimed
    if (expected !== undefined && expected !== digest) {
      throw malformedAnswer(200,
        `registry "${this.name}" sent manifest bytes for ${repository}:${reference} whose digest ${digest} does not match ${expected}; refusing to act on them.`)
    }
    // Stored and put back on restore as the bare type: parameters are not part of the manifest's identity.
    return { digest, mediaType: essence(header(response.headers, 'content-type') ?? ''), size: bytes.length, bytes }
  }

  /** Deletes a manifest by digest; only 202 Accepted counts as done. */
  async deleteManifest (repository: string, digest: string, scope: Scope = 'pull,delete'): Promise<void> {
    const context = { registry: this.name, operation: 'delete', repository, reference: digest }
    await confirmLockHeld()
    const response = await this.send({ method: 'DELETE', path: this.repositoryPath(repository, `manifests/${digest}`), repository, scope, context })
    if (response.statusCode !== 202) throw await this.failure(response, context)
    await response.body.dump()
  }

  /** Puts manifest bytes under a tag; answers the digest the registry stored them as. */
  async putManifest (repository: string, tag: string, bytes: Buffer, mediaType: string, scope: Scope = 'pull,push'): Promise<string> {
    const context = { registry: this.name, operation: 'put manifest', repository, reference: tag }
    await confirmLockHeld()
    const response = await this.send({
      method: 'PUT', path: this.repositoryPath(repository, `manifests/${tag}`), repository, scope, context, headers: { 'content-type': mediaType }, body: bytes
    })
    if (response.statusCode !== 201) throw await this.failure(response, context)
    await response.body.dump()
    return header(response.headers, 'docker-content-digest') ?? sha256Digest(bytes)
  }

  /**
   * Every tag of a repository, following `Link: rel="next"` where the registry paginates: the whole list or an
   * error, never a part. The co-tag guard decides on this list, and a tag missing from it is a tag deleted
   * unseen; so a listing that cannot be completed (page or size limit, a loop, a failed page, a next-page link
   * that cannot be followed) throws UPSTREAM_ERROR. There is deliberately no "first N tags" mode here: a
   * caller that wants one must add it under a name that says so. The scope defaults to the deletion's, whose token
   * the co-tag guard shares; browsing asks for `pull` alone, so reading never needs an account that can delete.
   */
  async listTags (repository: string, signal?: AbortSignal, scope: Scope = 'pull,delete'): Promise<string[]> {
    const context = { registry: this.name, operation: 'list tags', repository }
    const limits = this.options.tagList ?? TAG_LIST_LIMITS
    const listPath = this.repositoryPath(repository, 'tags/list')
    const incomplete = (why: string, upstreamStatus = 200): GatewayError => malformedAnswer(upstreamStatus,
      `registry "${this.name}" did not give the whole tag list of ${repository}: ${why}. The gateway never decides on part of a tag list, so nothing was deleted.`)
    const tags: string[] = []
    const seen = new Set<string>()
    const visited = new Set<string>()
    let path: string | undefined = listPath
    let read = 0
    for (let page = 1; path !== undefined; page++) {
      if (page > limits.maxPages) {
        throw incomplete(`it still announced more after ${limits.maxPages} pages; raise tagListMaxPages in the gateway configuration if the repository really has that many`)
      }
      if (visited.has(path)) throw incomplete(`its pages loop (page ${page} would be ${path} again)`)
      visited.add(path)
      const response: Dispatcher.ResponseData = await this.send({ method: 'GET', path, repository, scope, context, signal })
      if (response.statusCode !== 200) {
        const error = await this.failure(response, context)
        // The first page speaks for the repository (404: it does not exist); a later one only breaks the list.
        if (page === 1) throw error
        throw incomplete(`page ${page} failed (${error.detail})`, response.statusCode)
      }
      const body = await readLimited(response.body, limits.maxBytes - read).catch((error: unknown) => {
        throw isGatewayError(error)
          ? incomplete(
            `it is larger than ${limits.maxBytes} bytes; raise tagListMaxBytes in the gateway configuration if the repository really has that many tags`
          )
          : mapTransportError(error, context, this.options.requestTimeoutMs)
      })
      read += body.length
      for (const tag of this.pageTags(body, repository, page)) {
        if (seen.has(tag)) {
          throw incomplete(`tag ${JSON.stringify(tag.slice(0, 128))} came twice (page ${page} repeats an earlier one: the listing restarted or loops)`)
        }
        seen.add(tag)
        tags.push(tag)
      }
      path = this.nextPage(header(response.headers, 'link'), path, listPath, 'this repository\'s tag list', incomplete)
    }
    return tags
  }

  /** Whether the repository holds a blob (HEAD; 404 is an answer, not an error). */
  async blobExists (repository: string, digest: string, scope: Scope): Promise<boolean> {
    const context = { registry: this.name, operation: 'check blob', repository, reference: digest }
    const response = await this.send({ method: 'HEAD', path: this.repositoryPath(repository, `blobs/${digest}`), repository, scope, context })
    if (response.statusCode !== 200 && response.statusCode !== 404) throw await this.failure(response, context)
    await response.body.dump()
    return response.statusCode === 200
  }

  /** Uploads a small blob in one piece (POST for a session, then PUT with the digest); answers its digest. */
  async uploadBlob (repository: string, bytes: Buffer, scope: Scope): Promise<string> {
    const digest = sha256Digest(bytes)
    const context = { registry: this.name, operation: 'upload blob', repository, reference: digest }
    const started = await this.send({ method: 'POST', path: this.repositoryPath(repository, 'blobs/uploads/'), repository, scope, context })
    if (started.statusCode !== 202) throw await this.failure(started, context)
    await started.body.dump()
    const sent = header(started.headers, 'location')
    const location = new URL(sent ?? '', this.origin + this.repositoryPath(repository, 'blobs/uploads/'))
    // The session's URL gets the gateway's credentials, so it must be the registry itself.
    if (sent === undefined || location.origin !== this.origin) {
      const got = sent === undefined ? 'none' : location.origin
      throw malformedAnswer(202,
        `registry "${this.name}" started an upload to ${repository} without a Location on its own origin (got ${got}); the gateway sends its credentials only to ${this.origin}.`)
    }
    location.searchParams.set('digest', digest)
    const finished = await this.send({
      method: 'PUT', path: location.pathname + location.search, repository, scope, context, headers: { 'content-type': 'application/octet-stream' }, body: bytes
    })
    if (finished.statusCode !== 201) throw await this.failure(finished, context)
    await finished.body.dump()
    return digest
  }

  /**
   * Removes one tag with `DELETE /v2/<name>/manifests/<tag>` (OCI distribution 1.1). Only for registries known
   * to untag that way: some delete the whole manifest and every co-tag instead.
   */
  async deleteTag (repository: string, tag: string): Promise<void> {
    const context = { registry: this.name, operation: 'delete tag', repository, reference: tag }
    await confirmLockHeld()
    const response = await this.send({ method: 'DELETE', path: this.repositoryPath(repository, `manifests/${tag}`), repository, scope: 'pull,delete', context })
    if (response.statusCode !== 202) throw await this.failure(response, context)
    await response.body.dump()
  }

  /** A page's tags; anything that is not `{"tags": [strings] | null}` is not a page of a tag list. */
  private pageTags (body: Buffer, repository: string, page: number): string[] {
    let parsed: unknown
    try {
      parsed = JSON.parse(body.toString('utf8'))
    } catch {
      throw malformedAnswer(200, `registry "${this.name}" answered the tag list of ${repository} with something that is not JSON.`)
    }
    const tags = typeof parsed === 'object' && parsed !== null ? (parsed as { tags?: unknown }).tags : undefined
    if (tags === null) return []
    if (!Array.isArray(tags) || !tags.every(tag => typeof tag === 'string')) {
      throw malformedAnswer(200,
        `registry "${this.name}" answered page ${page} of the tag list of ${repository} with JSON that is not a list of tag names; refusing to decide on it.`)
    }
    return tags
  }

  /**
   * The next page a Link header names, only ever `listPath` (`what`, in words) on this registry. A next page the
   * gateway cannot read, or one elsewhere, is refused: a listing that goes on is not one that ended.
   */
  private nextPage (
    link: string | undefined, current: string, listPath: string, what: string, incomplete: (why: string) => GatewayError
  ): string | undefined {
    const target = nextLink(link)
    if (target === undefined) {
      if (link !== undefined && /rel="?next\b/i.test(link)) {
        throw incomplete(`its Link header announces a next page the gateway cannot read (${JSON.stringify(link.slice(0, 200))})`)
      }
      return undefined
    }
    const url = URL.canParse(target, this.origin + current) ? new URL(target, this.origin + current) : undefined
    if (url?.origin !== this.origin || url.pathname !== listPath) {
      throw incomplete(`its next page ${JSON.stringify(target.slice(0, 200))} is not ${what} on this registry`)
    }
    return url.pathname + url.search
  }

  async close (): Promise<void> {
    if (!this.ownsDispatchers) return
    await Promise.all([this.pool.close(), this.tokenDispatcher.close()])
  }

  /**
   * One page of the registry's catalog (`/v2/_catalog?n=&last=`, token scope `registry:catalog:*`): the names
   * after `last`, in the registry's order, and whether its Link header announces more. A page that is not a
   * list of repository names, or a next link that is not this registry's catalog, is refused whole.
   */
  async catalogPage (last: string | undefined, size: number, signal?: AbortSignal): Promise<CatalogPage> {
    const context = { registry: this.name, operation: 'list catalog' }
    const query = new URLSearchParams({ n: String(size), ...(last === undefined ? {} : { last }) })
    const catalogPath = `${this.basePath}/v2/_catalog`
    const response = await this.send({
      method: 'GET', path: `${catalogPath}?${query.toString()}`, repository: 'the catalog', scope: 'pull', tokenScope: 'registry:catalog:*', context, signal
    })
    if (response.statusCode === 404) {
      await response.body.dump()
      // Hosted registries (Docker Hub, GHCR, …) do not serve the catalog; it is not a repository that is missing.
      throw malformedAnswer(404, `registry "${this.name}" does not serve a catalog (/v2/_catalog answered 404); list its repositories with the registry's own tools.`)
    }
    if (response.statusCode !== 200) throw await this.failure(response, context)
    const body = await readLimited(response.body, MAX_CATALOG_PAGE_BYTES)
    let parsed: unknown
    try {
      parsed = JSON.parse(body.toString('utf8'))
    } catch {
      throw malformedAnswer(200, `registry "${this.name}" answered a catalog page with something that is not JSON; refusing to list from it.`)
    }
    const names = typeof parsed === 'object' && parsed !== null ? (parsed as { repositories?: unknown }).repositories : undefined
    if (!Array.isArray(names) || !names.every(name => typeof name === 'string')) {
      throw malformedAnswer(200, `registry "${this.name}" answered a catalog page with JSON that is not a list of repository names; refusing to list from it.`)
    }
    const next = this.nextPage(header(response.headers, 'link'), catalogPath, catalogPath, 'its catalog',
      why => malformedAnswer(200, `registry "${this.name}" did not give a catalog page the gateway can follow: ${why}; refusing to list from it.`))
    return { repositories: names, more: next !== undefined }
  }

  /** A blob's bytes (an image config), at most `maxBytes`, verified against its digest. */
  async getBlob (repository: string, digest: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
    const context = { registry: this.name, operation: 'get blob', repository, reference: digest }
    const response = await this.send({ method: 'GET', path: this.repositoryPath(repository, `blobs/${digest}`), repository, scope: 'pull', context, signal })
    if (response.statusCode !== 200) throw await this.failure(response, context)
    const bytes = await readLimited(response.body, maxBytes)
    if (sha256Digest(bytes) !== digest) {
      throw malformedAnswer(200, `registry "${this.name}" sent bytes for blob ${digest} of ${repository} that do not hash to that digest; refusing to read them.`)
    }
    return bytes
  }
}

export interface CatalogPage {
  repositories: string[]
  /** The registry's Link header announced a next page. */
  more: boolean
}

/** 1,000 names (distribution's largest page) of at most 255 characters, quoted, with room to spare. */
const MAX_CATALOG_PAGE_BYTES = 1024 * 1024
