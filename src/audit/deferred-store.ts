import type { AuditStore } from './types.js'

/**
 * An AuditStore that opens asynchronously (PostgreSQL: connect and migrate) behind a synchronous constructor. The
 * open starts at once; calls wait for it. A failed open is not cached: the next call (a request, /readyz's check)
 * tries again, so a database that is down at start-up is picked up when it returns, without a restart, and
 * meanwhile every call rejects with the reason.
 */
export function deferredAuditStore (open: () => Promise<AuditStore>): AuditStore {
  let opening: Promise<AuditStore> | undefined
  let closed = false
  async function store (): Promise<AuditStore> {
    if (closed) throw new Error('audit store is closed')
    opening ??= open().catch((error: unknown) => {
      opening = undefined
      throw error
    })
    return await opening
  }
  // Started now so migrations run at start-up; a failure here is seen (and retried) by the first call.
  store().catch(() => undefined)
  return {
    append: async record => await (await store()).append(record),
    update: async (id, changes) => await (await store()).update(id, changes),
    get: async id => await (await store()).get(id),
    list: async (filter, page, visible) => await (await store()).list(filter, page, visible),
    pending: async () => await (await store()).pending(),
    claimRestore: async (deletionId, restore) => await (await store()).claimRestore(deletionId, restore),
    releaseRestore: async (deletionId, restoreId) => { await (await store()).releaseRestore(deletionId, restoreId) },
    saveCleanup: async cleanup => { await (await store()).saveCleanup(cleanup) },
    getCleanup: async id => await (await store()).getCleanup(id),
    claimCleanupRun: async run => await (await store()).claimCleanupRun(run),
    updateCleanupRun: async (cleanupId, changes) => { await (await store()).updateCleanupRun(cleanupId, changes) },
    getCleanupRun: async cleanupId => await (await store()).getCleanupRun(cleanupId),
    interruptCleanupRuns: async () => await (await store()).interruptCleanupRuns(),
    prune: async olderThan => await (await store()).prune(olderThan),
    claimDeliveries: async (limit, leaseMs) => await (await store()).claimDeliveries(limit, leaseMs),
    finishDelivery: async (eventId, endpoint, outcome) => await (await store()).finishDelivery(eventId, endpoint, outcome),
    listDeliveries: async (filter, page, visible) => await (await store()).listDeliveries(filter, page, visible),
    countDeliveries: async () => await (await store()).countDeliveries(),
    check: async () => { await (await store()).check() },
    async close () {
      if (closed) return
      closed = true
      const opened = await opening?.catch(() => undefined)
      await opened?.close()
    }
  }
}
