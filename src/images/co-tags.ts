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
      if (found.digest === digest) sharing.push(candidate)
      else if (scan.indexes !== undefined && isIndex(found.mediaType)) scan.indexes.set(found.digest, [...scan.indexes.get(found.digest) ?? [], candidate])
    } catch (error) {
      if (isGatewayError(error) && error.code === 'NOT_FOUND') return
      throw error
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
