/**
 * The co-tag guard: which other tags point at the digest a deletion would remove (every tag listed, each resolved,
 * bounded per request and per caller, stopped by the first failure or the caller leaving), which tagged indexes
 * reference it, and the late look right before the DELETE for tags pushed meanwhile.
 */
import { setMaxListeners } from 'node:events'
import { GatewayError, isGatewayError } from '../errors.js'
import type { RegistryClient } from '../registry/client.js'
import { isIndex } from '../registry/media-types.js'

/**
 * Runs `work` over `items` with at most `limit` in flight. The first failure, or `signal` (the caller went away),
 * stops it: no item starts after that, and the items in flight are aborted through the signal they are given, so
 * a scan never outlives its request nor keeps the registry busy for nothing. Settles only when every started item
 * has, then throws the first failure.
 */
export async function forEachLimited<T> (
  items: readonly T[], limit: number, work: (item: T, signal: AbortSignal) => Promise<void>, signal?: AbortSignal
): Promise<void> {
  const stop = new AbortController()
  // Every item in flight listens on it (undici does, per request): that is `limit` listeners, not a leak.
  setMaxListeners(limit + 1, stop.signal)
  let failure: { error: unknown } | undefined
  const fail = (error: unknown): void => {
    failure ??= { error }
    stop.abort()
  }
  const callerGone = (): void => { fail(signal?.reason) }
  if (signal?.aborted === true) callerGone()
  signal?.addEventListener('abort', callerGone)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length && !stop.signal.aborted) {
      const item = items[next++] as T
      try {
        await work(item, stop.signal)
      } catch (error) {
        fail(error)
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  } finally {
    signal?.removeEventListener('abort', callerGone)
  }
  if (failure !== undefined) throw failure.error
}

/**
 * Manifests one request may fetch to check co-tags (`coTagScanLimit`): a repository with more tags than that is
 * refused before the scan starts, rather than letting one request fetch without bound.
 */
export class ManifestBudget {
  private spent = 0

  constructor (private readonly limit: number) {}

  spend (count: number, what: string): void {
    this.spent += count
    if (this.spent <= this.limit) return
    throw new GatewayError('UPSTREAM_ERROR',
      `checking ${what} needs more than ${this.limit} manifest fetches in one request, the most coTagScanLimit allows; nothing was deleted. Raise coTagScanLimit in the gateway configuration if the repository really has that many tags.`,
      { extras: { coTagScanLimit: this.limit } })
  }
}

/** Co-tag scans in flight per caller identity: beyond the limit a caller gets 429 at once, not a queue. */
export class ScansPerCaller {
  private readonly running = new Map<string, number>()

  constructor (private readonly limit: number) {}

  /** Takes a slot for `subject`, or throws RATE_LIMITED; answers the function that gives the slot back. */
  acquire (subject: string): () => void {
    const running = this.running.get(subject) ?? 0
    if (running >= this.limit) {
      throw new GatewayError('RATE_LIMITED',
        `${subject} already has ${running} deletions or dry-runs checking co-tags, the most one caller may run at once (limits.coTagScansPerCaller); retry after 1 s.`,
        { retryAfter: 1 })
    }
    this.running.set(subject, running + 1)
    return () => {
      const left = (this.running.get(subject) as number) - 1
      if (left === 0) this.running.delete(subject)
      else this.running.set(subject, left)
    }
  }
}

export interface CoTagScan {
  concurrency: number
  budget: ManifestBudget
  /** The request's signal: the scan stops when the caller goes away. */
  signal?: AbortSignal
  /** When given, also collects the tags that point at image indexes or manifest lists (digest → tags). */
  indexes?: Map<string, string[]>
  /** When given, told what every tag asked points at, or that it is gone (a run's shared view keeps up this way). */
  seen?: TagObserver
}

export interface TagObserver {
  saw: (tag: string, digest: string, mediaType: string) => void
  gone: (tag: string) => void
}

/** What the first scan found: the co-tags, and every tag it listed (so the last look checks only new ones). */
export interface CoTagFindings { coTags: string[], listed: ReadonlySet<string> }

export function requestAborted (repository: string, tag: string): GatewayError {
  return new GatewayError('REQUEST_ABORTED', `the caller went away while the co-tags of ${repository}:${tag} were checked; the check stopped and nothing was deleted.`)
}

/**
 * Which of `candidates` point at `digest` now (and, with `scan.indexes`, which point at indexes). A tag removed
 * meanwhile points at nothing, so it cannot be lost with this digest.
 */
export async function tagsOnDigest (
  client: RegistryClient, repository: string, digest: string, candidates: readonly string[], scan: CoTagScan
): Promise<string[]> {
  const sharing: string[] = []
  await forEachLimited(candidates, scan.concurrency, async (candidate, signal) => {
    try {
      // GET, not HEAD: undici closes the connection after every HEAD, which would cost a TCP (and TLS)
      // handshake per tag; a manifest is a few KB, and its bytes are hashed, so the digest is checked too.
      const found = await client.getManifest(repository, candidate, 'pull,delete', signal)
      scan.seen?.saw(candidate, found.digest, found.mediaType)
      if (found.digest === digest) sharing.push(candidate)
      else if (scan.indexes !== undefined && isIndex(found.mediaType)) scan.indexes.set(found.digest, [...scan.indexes.get(found.digest) ?? [], candidate])
    } catch (error) {
      if (!isGatewayError(error) || error.code !== 'NOT_FOUND') throw error
      scan.seen?.gone(candidate)
    }
  }, scan.signal)
  return sharing.sort()
}

/** Runs a scan step; when the caller went away meanwhile, that is what the failure says. */
async function scanning<T> (scan: CoTagScan, repository: string, tag: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step()
  } catch (error) {
    if (scan.signal?.aborted === true) throw requestAborted(repository, tag)
    throw error
  }
}

/**
 * The other tags of `repository` that point at `digest`: deleting the digest removes them too, which is the
 * registry's most surprising behaviour and the reason this check exists. Also answers every tag the listing
 * had, so a later look can tell which tags are new.
 */
export async function findCoTags (
  client: RegistryClient, repository: string, digest: string, tag: string, scan: CoTagScan
): Promise<CoTagFindings> {
  return await scanning(scan, repository, tag, async () => {
    const listed = await client.listTags(repository, scan.signal)
    const others = listed.filter(candidate => candidate !== tag)
    scan.budget.spend(others.length, `the co-tags of ${repository}:${tag} (${others.length} other tags)`)
    return { coTags: await tagsOnDigest(client, repository, digest, others, scan), listed: new Set(listed) }
  })
}

/**
 * Co-tags that appeared since `findCoTags` looked, asked right before the DELETE: the tags a second listing has
 * that the first did not, and every tag the policy protects by name (listed or not, since a tag can be moved
 * onto the digest after it was checked). Tags already known to share the digest are not asked again.
 */
export async function lateCoTags (
  client: RegistryClient, repository: string, digest: string, tag: string,
  first: Readonly<CoTagFindings>, protectedTags: readonly string[], scan: CoTagScan
): Promise<string[]> {
  return await scanning(scan, repository, tag, async () => {
    const listedNow = await client.listTags(repository, scan.signal)
    const known = new Set([tag, ...first.coTags])
    const unseen = listedNow.filter(candidate => !first.listed.has(candidate))
    const candidates = [...new Set([...unseen, ...protectedTags])].filter(candidate => !known.has(candidate))
    scan.budget.spend(candidates.length, `the tags of ${repository} added while ${repository}:${tag} was checked (${candidates.length})`)
    return await tagsOnDigest(client, repository, digest, candidates, scan)
  })
}

/** What a tag pointed at when a run last looked. */
interface SeenTag { digest: string, mediaType: string }

/**
 * A cleanup run's one co-tag scan of a repository, shared by all its removals there: the tag list and every tag
 * resolved once, then kept up to date instead of scanned again per removal (which made a run of N removals in an
 * N-tag repository cost N² manifest fetches). It changes by what the run itself does (a deleted digest takes its
 * tags, an untag its tag) and by what each removal's late look finds right before its DELETE: a fresh listing, whose
 * unknown names are resolved and whose vanished names are forgotten. An index learnt that way is then read for the
 * removal's digest, as a fresh scan would have (deleteDigest's late index check). What it cannot see is a tag it
 * already knows being moved onto a digest: the listing looks the same. The post-DELETE listing (`vanished`) catches
 * that one; an unprotected index tag moved onto a new index that lists the digest it does not.
 */
export class RepositoryTags implements TagObserver {
  readonly #tags = new Map<string, SeenTag>()
  /** Index digest → child digests: a manifest's content never changes under its digest, so this never goes stale. */
  readonly children = new Map<string, unknown[]>()

  saw (tag: string, digest: string, mediaType: string): void { this.#tags.set(tag, { digest, mediaType }) }
  gone (tag: string): void { this.#tags.delete(tag) }
  digestOf (tag: string): string | undefined { return this.#tags.get(tag)?.digest }

  /** The digest the run deleted: every tag last seen on it went with it. */
  deleted (digest: string): void {
    for (const [tag, seen] of this.#tags) if (seen.digest === digest) this.#tags.delete(tag)
  }

  /** The co-tags of `digest` as last seen, the tags that point at indexes, and every name known now (the late look's baseline). */
  findings (digest: string, tag: string, indexes?: Map<string, string[]>): CoTagFindings {
    const coTags: string[] = []
    for (const [other, seen] of this.#tags) {
      if (other === tag) continue
      if (seen.digest === digest) coTags.push(other)
      else if (indexes !== undefined && isIndex(seen.mediaType)) indexes.set(seen.digest, [...indexes.get(seen.digest) ?? [], other])
    }
    return { coTags: coTags.sort(), listed: new Set(this.#tags.keys()) }
  }

  /**
   * The late look with a shared view: a fresh listing; names it no longer has are forgotten, names the view does not
   * know are resolved (and remembered), protected tags are always asked again. Answers the tags on `digest` now that
   * the removal's first look did not report, and the listing, for the check after the DELETE.
   */
  async late (
    client: RegistryClient, repository: string, digest: string, tag: string,
    first: Readonly<CoTagFindings>, protectedTags: readonly string[], scan: CoTagScan
  ): Promise<{ late: string[], listed: string[] }> {
    return await scanning(scan, repository, tag, async () => {
      const listed = await client.listTags(repository, scan.signal)
      const now = new Set(listed)
      for (const known of this.#tags.keys()) if (!now.has(known)) this.#tags.delete(known)
      const candidates = [...new Set([...listed.filter(name => !this.#tags.has(name)), ...protectedTags])].filter(name => name !== tag)
      scan.budget.spend(candidates.length, `the tags of ${repository} added while ${repository}:${tag} was checked (${candidates.length})`)
      await tagsOnDigest(client, repository, digest, candidates, { ...scan, seen: this })
      const reported = new Set([tag, ...first.coTags])
      const late = [...now].filter(name => !reported.has(name) && this.#tags.get(name)?.digest === digest)
      return { late: late.sort(), listed }
    })
  }
}

/** A run's shared scans, one per registry and repository, each made by the first removal that needs it. */
export class SharedTagScans {
  readonly #scans = new Map<string, Promise<RepositoryTags>>()

  /**
   * The co-tags of the removal's `digest` from the shared view, scanning the repository first if this run has not:
   * one listing and every tag resolved, counted against this removal's budget. The removal's own tag was just
   * resolved, so the view learns it first. A scan that fails is forgotten, and the next removal scans again.
   */
  async findCoTags (
    client: RegistryClient, resolved: { repository: string, tag: string, digest: string, mediaType: string }, scan: CoTagScan
  ): Promise<{ first: CoTagFindings, tags: RepositoryTags }> {
    const { repository, tag } = resolved
    const key = `${client.name}\n${repository}`
    let pending = this.#scans.get(key)
    if (pending === undefined) {
      pending = scanning(scan, repository, tag, async () => {
        const tags = new RepositoryTags()
        const listed = await client.listTags(repository, scan.signal)
        scan.budget.spend(listed.length, `the tags of ${repository} (${listed.length}), scanned once for this run`)
        await tagsOnDigest(client, repository, '', listed, { ...scan, indexes: undefined, seen: tags })
        return tags
      })
      this.#scans.set(key, pending)
      pending.catch(() => { this.#scans.delete(key) })
    }
    const tags = await pending
    tags.saw(tag, resolved.digest, resolved.mediaType)
    return { first: tags.findings(resolved.digest, tag, scan.indexes), tags }
  }
}
