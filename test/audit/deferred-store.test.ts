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
  t.equal(await store.heartbeatCleanupRun('cleanup_1'), undefined)
  t.equal(await store.requestCleanupCancel('cleanup_1', 'bob'), false)
  t.same(await store.interruptStaleCleanupRuns(1000), [])
  t.equal(opener.opens(), 1, 'one open shared by every call')
  await store.close()
  await store.close()
  await t.rejects(opener.inner()!.get(record.id), /closed/, 'closing closes the opened store')
  await t.rejects(store.get(record.id), /audit store is closed/)
})

t.test('a failed open is retried in the background with doubling, capped waits; calls meanwhile fail at once with the reason', async t => {
  const opener = flakyOpener(4)
  const times: number[] = []
  const failed: Array<[number, number]> = []
  const store = deferredAuditStore(async () => { times.push(Date.now()); return await opener.open() }, {
    retry: { initialMs: 40, maxMs: 100 },
    random: () => 1,
    describe: error => `described: ${(error as Error).message}`,
    onOpenFailed: (_error, attempt, retryInMs) => { failed.push([attempt, retryInMs]) }
  })
  t.teardown(() => store.close())
  await t.rejects(store.check(), { name: 'AuditStoreUnavailable', publicDetail: /^described: connect ECONNREFUSED \(attempt 1\) \(attempt 1; retrying, the next in 1 s\)$/ },
    'the first call waits for the start-up open and gets its reason')
  await t.rejects(store.append(attempt()), /audit store not open: described/, 'a call between attempts fails at once')
  t.equal(opener.opens(), 1, 'and does not try again itself')
  while (opener.inner() === undefined) await new Promise(resolve => setTimeout(resolve, 10))
  t.same(failed, [[1, 40], [2, 80], [3, 100], [4, 100]], 'waits double up to the cap')
  const gaps = times.slice(1).map((time, index) => time - (times[index] as number))
  t.ok(gaps.every((gap, index) => gap >= [40, 80, 100, 100][index]! - 5), `the retries kept the waits (${gaps.join(', ')} ms)`)
  await store.check()
  t.equal(opener.opens(), 5, 'the fifth attempt opened it, without a restart')
  await store.append(attempt())
  t.equal(opener.opens(), 5)
})

t.test('without options: the default wait and a reason that names nothing', async t => {
  const store = deferredAuditStore(flakyOpener(1).open)
  t.teardown(() => store.close())
  await t.rejects(store.check(), { name: 'AuditStoreUnavailable', publicDetail: /^the store did not open \(attempt 1; retrying, the next in 1 s\)$/ })
})

t.test('closing while the open failed or is still under way', async t => {
  const failed = deferredAuditStore(flakyOpener(1).open)
  await new Promise(resolve => setTimeout(resolve, 20))
  await failed.close()
  await t.rejects(failed.append(attempt()), /audit store is closed/)

  const failingOpener = flakyOpener(1)
  const failing = deferredAuditStore(failingOpener.open, { retry: { initialMs: 10, maxMs: 10 } })
  await failing.close()
  await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(failingOpener.opens(), 1, 'closed while the open was failing: no retry is scheduled')
  await t.rejects(failing.check(), /audit store is closed/)

  const slow = flakyOpener(0)
  const underway = deferredAuditStore(slow.open)
  await underway.close()
  await t.rejects(slow.inner()!.get('x'), /closed/, 'the store that finished opening after close is closed too')
})

t.test('issue 14: the shared state is reached through the opened store too', async t => {
  const opener = flakyOpener(0)
  const store = deferredAuditStore(opener.open)
  t.teardown(() => store.close())
  t.equal(await store.shared.exclusive('k', async () => 'ran'), 'ran')
  await store.shared.putPlan({ kind: 'k', id: 'p', payload: { a: 1 }, requester: 'alice', expiresMs: 10 }, 5, 0)
  t.match(await store.shared.peekPlan('k', 'p', 0), { payload: { a: 1 } })
  t.match(await store.shared.takePlan('k', 'p', 0, 'alice'), { id: 'p' })
  const pending = await store.append(attempt({ time: '2000-01-01T00:00:00.000Z' }))
  t.equal(await store.shared.claimPending('me', new Date().toISOString(), 1000, Date.now()), pending.id)
  await t.rejects(store.shared.hit!('alice', 1000), /keeps no shared rate-limit windows/, 'SQLite under it: no shared windows')
  await t.rejects(store.shared.rememberOnce!('k', 'x', 10), /keeps no shared records/, 'nor shared records')
})
