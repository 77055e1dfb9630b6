import t from 'tap'
import { deferredAuditStore, openSqliteAuditStore, type AuditStore } from '../../src/audit/index.js'
import { attempt } from '../fixtures/audit-store-contract.js'

/** An opener that fails `failures` times ("database down"), then opens an in-memory SQLite store. */
function flakyOpener (failures: number): { open: () => Promise<AuditStore>, opens: () => number, inner: () => AuditStore | undefined } {
  let calls = 0
  let inner: AuditStore | undefined
  return {
    open: async () => {
      calls++
      await new Promise(resolve => setTimeout(resolve, 5))
      if (calls <= failures) throw new Error(`connect ECONNREFUSED (attempt ${calls})`)
      inner = openSqliteAuditStore(':memory:')
      return inner
    },
    opens: () => calls,
    inner: () => inner
  }
}

t.test('opening starts at once; calls wait for it and reach the opened store', async t => {
  const opener = flakyOpener(0)
  const store = deferredAuditStore(opener.open)
  t.equal(opener.opens(), 1, 'opened at construction (migrations run at start-up)')
  const record = await store.append(attempt({ outcome: 'deleted' }))
  t.equal((await store.get(record.id))?.id, record.id)
  t.equal((await store.update(record.id, { durationMs: 3 })).durationMs, 3)
  t.equal((await store.list({}, { limit: 5 })).items.length, 1)
  t.same(await store.pending(), [])
  const claim = await store.claimRestore(record.id, attempt())
  t.equal(claim.ok, true)
  if (claim.ok) await store.releaseRestore(record.id, claim.restore.id)
  t.equal((await store.get(record.id))?.restoredBy, undefined, 'released')
  await store.check()
  t.equal(await store.prune(new Date(0)), 0)
  t.same(await store.claimDeliveries(5, 1000), [], 'the outbox calls reach the opened store too')
  t.same((await store.listDeliveries({}, { limit: 5 })).items, [])
  t.same(await store.countDeliveries(), [])
  await t.rejects(store.finishDelivery('evt', 'hook', { delivered: true, status: 200 }), /no outbox row/)
  await store.saveCleanup({ id: 'cleanup_1', registry: 'r', createdBy: 'alice', createdAt: '2024-05-01T00:00:00.000Z', state: 'planned', body: '{}' })
  t.equal((await store.getCleanup('cleanup_1'))?.createdBy, 'alice')
  const run = { cleanupId: 'cleanup_1', state: 'running' as const, startedBy: 'alice', startedAt: '2024-05-01T00:00:00.000Z', maxDeletions: 1, counts: { done: 0, stale: 0, failed: 0, skipped: 0 } }
  t.equal(await store.claimCleanupRun(run), true)
  await store.updateCleanupRun('cleanup_1', { state: 'done' })
  t.equal((await store.getCleanupRun('cleanup_1'))?.state, 'done')
  t.same(await store.interruptCleanupRuns(), [])
  t.equal(opener.opens(), 1, 'one open shared by every call')
  await store.close()
  await store.close()
  await t.rejects(opener.inner()!.get(record.id), /closed/, 'closing closes the opened store')
  await t.rejects(store.get(record.id), /audit store is closed/)
})

t.test('a failed open is not kept: each later call retries until the database answers', async t => {
  const opener = flakyOpener(2)
  const store = deferredAuditStore(opener.open)
  t.teardown(() => store.close())
  await new Promise(resolve => setTimeout(resolve, 20))
  await t.rejects(store.check(), /ECONNREFUSED \(attempt 2\)/, 'the reason reaches the caller (/readyz says why)')
  t.equal(opener.opens(), 2)
  await store.check()
  t.equal(opener.opens(), 3, 'the third attempt opened it, without a restart')
  await store.append(attempt())
  t.equal(opener.opens(), 3)
})

t.test('closing while the open failed or is still under way', async t => {
  const failed = deferredAuditStore(flakyOpener(1).open)
  await new Promise(resolve => setTimeout(resolve, 20))
  await failed.close()
  await t.rejects(failed.append(attempt()), /audit store is closed/)

  const slow = flakyOpener(0)
  const underway = deferredAuditStore(slow.open)
  await underway.close()
  await t.rejects(slow.inner()!.get('x'), /closed/, 'the store that finished opening after close is closed too')
})
