import type { AuditPoolStats, AuditStore } from './types.js'

/** Raised by every call while the store is not open: says why in words safe to show (no address, URL or password). */
export class AuditStoreUnavailable extends Error {
  constructor (readonly publicDetail: string, cause: unknown) {
    super(`audit store not open: ${publicDetail}`, { cause })
    this.name = 'AuditStoreUnavailable'
  }
}

export interface DeferredStoreOptions {
  /** First wait after a failed open; each further failure doubles it up to maxMs. */
  retry?: { initialMs: number, maxMs: number }
  /** A failed open in words that may be shown to anyone (/readyz is public). */
  describe?: (error: unknown) => string
  /** Told of each failed open, e.g. to log it with its details. */
  onOpenFailed?: (error: unknown, attempt: number, retryInMs: number) => void
  /** The pool size the opened store will have, reported by poolStats until it is open. */
  poolSize?: number
  /** [0, 1); spreads the waits so replicas started together do not retry in step. */
  random?: () => number
}

/**
 * An AuditStore that opens asynchronously (PostgreSQL: connect and migrate) behind a synchronous constructor. The
 * open starts at once and calls wait for it. A failed open is retried in the background with a doubling, capped
 * wait; meanwhile calls fail at once with the reason rather than each trying again (a burst of requests against a
 * database that is down must not become a burst of connection attempts). When an open succeeds, calls go through
 * without a restart.
 */
export function deferredAuditStore (open: () => Promise<AuditStore>, options: DeferredStoreOptions = {}): AuditStore {
  const notOpen: AuditPoolStats = { total: 0, idle: 0, waiting: 0, max: options.poolSize ?? 0 }
  const retry = options.retry ?? { initialMs: 500, maxMs: 30_000 }
  const describe = options.describe ?? (() => 'the store did not open')
  const random = options.random ?? Math.random
  let opening: Promise<AuditStore> | undefined
  let opened: AuditStore | undefined
  // Replaced by the first failure before any call can see it: calls wait for the first open.
  let failure = new AuditStoreUnavailable('the store is opening', undefined)
  let failures = 0
  let timer: NodeJS.Timeout | undefined
  let closed = false

  function attempt (): void {
    timer = undefined
    opening = open()
    opening.then(store => {
      opened = store
      failures = 0
    }, (error: unknown) => {
      failures++
      const full = Math.min(retry.maxMs, retry.initialMs * 2 ** (failures - 1))
      const wait = Math.round(full * (0.8 + 0.2 * random()))
      failure = new AuditStoreUnavailable(`${describe(error)} (attempt ${failures}; retrying, the next in ${Math.ceil(wait / 1000)} s)`, error)
      opening = undefined
      options.onOpenFailed?.(error, failures, wait)
      if (closed) return
      timer = setTimeout(attempt, wait)
      // A pending retry must not keep a process alive that is otherwise done.
      timer.unref()
    })
  }

  async function store (): Promise<AuditStore> {
    if (closed) throw new Error('audit store is closed')
    // An open under way (start-up's, or a retry's) is waited for; its failure is this call's.
    if (opened === undefined) await opening?.catch(() => undefined)
    if (opened !== undefined) return opened
    throw failure
  }

  attempt()
  return {
    append: async record => await (await store()).append(record),
    update: async (id, changes) => await (await store()).update(id, changes),
    settlePending: async (id, changes) => await (await store()).settlePending(id, changes),
    get: async id => await (await store()).get(id),
    list: async (filter, page, visible) => await (await store()).list(filter, page, visible),
    pending: async () => await (await store()).pending(),
    claimRestore: async (deletionId, restore) => await (await store()).claimRestore(deletionId, restore),
    releaseRestore: async (deletionId, restoreId) => { await (await store()).releaseRestore(deletionId, restoreId) },
    saveCleanup: async cleanup => { await (await store()).saveCleanup(cleanup) },
    getCleanup: async id => await (await store()).getCleanup(id),
    claimCleanupRun: async run => await (await store()).claimCleanupRun(run),
    updateCleanupRun: async (cleanupId, changes) => await (await store()).updateCleanupRun(cleanupId, changes),
    getCleanupRun: async cleanupId => await (await store()).getCleanupRun(cleanupId),
    interruptCleanupRuns: async startedBefore => await (await store()).interruptCleanupRuns(startedBefore),
    heartbeatCleanupRun: async cleanupId => await (await store()).heartbeatCleanupRun(cleanupId),
    requestCleanupCancel: async (cleanupId, requestedBy) => await (await store()).requestCleanupCancel(cleanupId, requestedBy),
    interruptStaleCleanupRuns: async staleAfterMs => await (await store()).interruptStaleCleanupRuns(staleAfterMs),
    prune: async olderThan => await (await store()).prune(olderThan),
    claimDeliveries: async (limit, leaseMs) => await (await store()).claimDeliveries(limit, leaseMs),
    finishDelivery: async (eventId, endpoint, outcome, claimed) => await (await store()).finishDelivery(eventId, endpoint, outcome, claimed),
    listDeliveries: async (filter, page, visible) => await (await store()).listDeliveries(filter, page, visible),
    countDeliveries: async () => await (await store()).countDeliveries(),
    publish: async (image, messages) => { await (await store()).publish(image, messages) },
    check: async () => { await (await store()).check() },
    shared: {
      exclusive: async (key, work) => await (await store()).shared.exclusive(key, work),
      tryExclusive: async (key, work) => await (await store()).shared.tryExclusive(key, work),
      putPlan: async (plan, capacity, nowMs) => { await (await store()).shared.putPlan(plan, capacity, nowMs) },
      peekPlan: async (kind, id, nowMs) => await (await store()).shared.peekPlan(kind, id, nowMs),
      takePlan: async (kind, id, nowMs, requester) => await (await store()).shared.takePlan(kind, id, nowMs, requester),
      claimPending: async (owner, olderThan, leaseMs, nowMs, after) => await (await store()).shared.claimPending(owner, olderThan, leaseMs, nowMs, after),
      rememberOnce: async (kind, id, ttlMs) => {
        const shared = (await store()).shared
        if (shared.rememberOnce === undefined) throw new Error('this audit store keeps no shared records')
        return await shared.rememberOnce(kind, id, ttlMs)
      },
      hit: async (key, windowMs) => {
        const shared = (await store()).shared
        if (shared.hit === undefined) throw new Error('this audit store keeps no shared rate-limit windows')
        return await shared.hit(key, windowMs)
      }
    },
    poolStats: () => opened?.poolStats?.() ?? notOpen,
    async close () {
      if (closed) return
      closed = true
      clearTimeout(timer)
      await opening?.catch(() => undefined)
      await opened?.close()
    }
  }
}
