/**
 * Issue 14: reconciliation on every replica, at start-up and periodically; each pending record is claimed by one
 * replica, young records (maybe in flight elsewhere) are left alone, and a pass never overlaps the next.
 */
import t from 'tap'
import { AuditTrail } from '../../src/audit/trail.js'
import { openSqliteAuditStore } from '../../src/audit/index.js'
import { ReplicaLock } from '../../src/audit/shared-state.js'
import { startAuditHousekeeping } from '../../src/images/housekeeping.js'
import { reconcilePending } from '../../src/images/reconcile.js'
import { KeyedQueue, repositoryLockKey } from '../../src/registry/untag.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { deleteInRegistry } from '../fixtures/audit.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { deletionRecord, directory, memoryTrail } from '../fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

function logger (): { info: (details: object, message: string) => void, warn: () => void, error: (details: object, message: string) => void, errors: string[], infos: string[] } {
  const errors: string[] = []
  const infos: string[] = []
  return { errors, infos, info: (_details, message) => { infos.push(message) }, warn: () => {}, error: (_details, message) => { errors.push(message) } }
}

async function deletedImage (name: string): Promise<Awaited<ReturnType<typeof pushImage>>> {
  const image = await pushImage(target, name, ['v1'], 'schema2')
  t.equal(await deleteInRegistry(registry.url, name, image.digest), 202)
  return image
}

t.test('two replicas reconciling at once judge each record once', async t => {
  const path = `${t.testdir()}/trail.db`
  const stores = [openSqliteAuditStore(path), openSqliteAuditStore(path)]
  t.teardown(async () => { await Promise.all(stores.map(store => store.close())) })
  const trails = stores.map(store => new AuditTrail(store, { info () {} }))
  const ids: string[] = []
  for (let i = 0; i < 6; i++) ids.push((await stores[0]!.append(deletionRecord('default', await deletedImage(`housekeeping/both-${i}`), ['v1'], 'pending'))).id)
  const registries = directory(t, { default: registry.url })
  const settles: string[] = []
  const counted = trails.map(trail => Object.assign(Object.create(trail) as AuditTrail, {
    settlePending: async (id: string, changes: object) => {
      const settled = await trail.settlePending(id, changes)
      if (settled !== undefined) settles.push(id)
      return settled
    }
  }))
  const summaries = await Promise.all(counted.map(async (audit, i) => await reconcilePending({ registries, audit, owner: `replica-${i}` }, { warn () {} })))
  t.equal(summaries[0]!.settled + summaries[1]!.settled, 6, `every record settled once between them (${JSON.stringify(summaries)})`)
  t.same([...settles].sort(), [...ids].sort(), 'no record settled twice')
  for (const id of ids) t.match(await stores[1]!.get(id), { outcome: 'deleted' })
})

t.test('a record settled by its own request while the reconciler waited for the lock is left as it is', async t => {
  const { store, audit } = memoryTrail(t)
  const image = await deletedImage('housekeeping/live')
  const record = await store.append(deletionRecord('default', image, ['v1'], 'pending'))
  const locks = new ReplicaLock(new KeyedQueue(), store.shared)
  let release = (): void => {}
  const live = locks.run(repositoryLockKey('default', image.name), async () => {
    await new Promise<void>(resolve => { release = resolve })
    await audit.settle(record.id, { outcome: 'deleted', upstreamStatus: 202 })
  })
  const reconciling = reconcilePending({ registries: directory(t, { default: registry.url }), audit, locks }, { warn () {} })
  await sleep(50)
  release()
  await live
  t.same(await reconciling, { settled: 0, left: 0 })
  t.match(await store.get(record.id), { outcome: 'deleted', upstreamStatus: 202, errorDetail: undefined }, 'the request\'s own answer stands')
})

t.test('start-up leaves young records alone only when replicas share the store; periodic passes settle them once old enough', async t => {
  for (const sharedAtStartup of [false, true]) {
    const { store, audit } = memoryTrail(t)
    const image = await deletedImage(`housekeeping/young-${String(sharedAtStartup)}`)
    const record = await store.append(deletionRecord('default', image, ['v1'], 'pending'))
    const ancient = await store.append({ ...deletionRecord('default', image, ['v1']), time: '2000-01-01T00:00:00.000Z' })
    const log = logger()
    const housekeeping = startAuditHousekeeping({
      audit,
      registries: directory(t, { default: registry.url }),
      retentionDays: 90,
      logger: log,
      reconcile: { owner: 'me', locks: new KeyedQueue(), intervalMs: 100, inFlightMs: 400, sharedAtStartup },
      cleanupRuns: { staleAfterMs: 60_000, intervalMs: 100 }
    })
    await housekeeping.startup
    t.equal(await store.get(ancient.id), undefined, 'records past retention are pruned at start-up')
    t.ok(log.infos.includes('pruned old audit records'))
    t.equal((await store.get(record.id))?.outcome, sharedAtStartup ? 'pending' : 'deleted', `sharedAtStartup ${String(sharedAtStartup)}`)
    const deadline = Date.now() + 5000
    while ((await store.get(record.id))?.outcome === 'pending' && Date.now() < deadline) await sleep(50)
    t.match(await store.get(record.id), { outcome: 'deleted', errorDetail: /by a later pass \(on any replica\)/ })
    t.ok(log.infos.includes('reconciled pending audit records'))
    await housekeeping.stop()
  }
})

t.test('a pass that takes long is not overlapped; stop waits for it; a pass that fails is logged', async t => {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  const { store, audit } = memoryTrail(t)
  const image = await deletedImage('housekeeping/slow')
  const log = logger()
  const housekeeping = startAuditHousekeeping({
    audit,
    registries: directory(t, { default: proxy.url }),
    retentionDays: 90,
    logger: log,
    reconcile: { owner: 'me', locks: new KeyedQueue(), intervalMs: 50, inFlightMs: 0, sharedAtStartup: false },
    cleanupRuns: { staleAfterMs: 60_000, intervalMs: 50 }
  })
  await housekeeping.startup
  let release = (): void => {}
  proxy.fault({ method: 'HEAD', action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) } })
  const record = await store.append(deletionRecord('default', image, ['v1'], 'pending'))
  await proxy.waitFor(request => request.method === 'HEAD', 5000)
  await sleep(300)
  t.equal(proxy.requests.filter(request => request.method === 'HEAD').length, 1, 'the next ticks found the pass still running and did not start another')
  const stopping = housekeeping.stop()
  release()
  await stopping
  t.match(await store.get(record.id), { outcome: 'deleted' }, 'stop waited for the pass under way')

  const failing = logger()
  const { store: closed, audit: closedAudit } = memoryTrail(t)
  const broken = startAuditHousekeeping({
    audit: closedAudit,
    registries: directory(t, { default: registry.url }),
    retentionDays: 90,
    logger: failing,
    reconcile: { owner: 'me', locks: new KeyedQueue(), intervalMs: 50, inFlightMs: 0, sharedAtStartup: false },
    cleanupRuns: { staleAfterMs: 60_000, intervalMs: 50 }
  })
  await broken.startup
  await closed.close()
  await sleep(200)
  await broken.stop()
  t.ok(failing.errors.includes('reconciling pending audit records failed'), 'the failure is logged and the timer goes on')
  t.ok(failing.errors.includes('marking stale cleanup runs interrupted failed'), 'so is a failed look for stale cleanup runs')
})

t.test('every replica marks a running cleanup run interrupted once its heartbeat is older than the bound, and only then', async t => {
  let clock = Date.parse('2026-01-01T00:00:00.000Z')
  const store = openSqliteAuditStore(':memory:', { now: () => new Date(clock) })
  t.teardown(async () => { await store.close() })
  const audit = new AuditTrail(store, { info () {} })
  const counts = { done: 0, stale: 0, failed: 0, skipped: 0 }
  const run = { state: 'running' as const, startedBy: 'alice', startedAt: new Date(clock).toISOString(), maxDeletions: 10, counts }
  const [dead, live] = ['cleanup_' + 'd'.repeat(32), 'cleanup_' + 'e'.repeat(32)] as const
  await store.claimCleanupRun({ ...run, cleanupId: dead })
  await store.claimCleanupRun({ ...run, cleanupId: live })
  clock += 10_000
  t.same(await store.heartbeatCleanupRun(live), { cancelRequested: false }, 'the live owner beats')
  clock += 2_000
  const warnings: Array<[object, string]> = []
  const told: Array<readonly string[]> = []
  const housekeeping = startAuditHousekeeping({
    audit,
    registries: directory(t, { default: registry.url }),
    retentionDays: 90,
    logger: { info () {}, warn: (details, message) => { warnings.push([details, message]) }, error () {} },
    reconcile: { owner: 'me', locks: new KeyedQueue(), intervalMs: 60_000, inFlightMs: 0, sharedAtStartup: true },
    cleanupRuns: { staleAfterMs: 11_000, intervalMs: 20 },
    onRunsInterrupted: async ids => { told.push(ids) }
  })
  await housekeeping.startup
  t.same(warnings.map(([details]) => details), [{ cleanups: [dead] }], 'at start-up, only the run whose heartbeat is 12 s old')
  t.match(await store.getCleanupRun(dead), { state: 'interrupted', finishedAt: new Date(clock).toISOString() })
  t.equal((await store.getCleanupRun(live))?.state, 'running', 'the one that beat 2 s ago goes on')
  clock += 10_000
  while (warnings.length < 2) await sleep(20)
  await housekeeping.stop()
  t.match(warnings[1], [{ cleanups: [live], staleAfterMs: 11_000 }, /stopped beating/], 'a later sweep marks it once it too stopped beating')
  t.equal(await store.heartbeatCleanupRun(live), undefined, 'its owner, beating late, learns the run is no longer its own')
  t.same(told, [[dead], [live]], 'each marking told once (scheduled runs are reported from there)')
})

t.test('a look for stale cleanup runs that takes long is not overlapped, and stop waits for it', async t => {
  const { store } = memoryTrail(t)
  let calls = 0
  let release = (): void => {}
  const held = new Promise<void>(resolve => { release = resolve })
  const slow = Object.assign(Object.create(store) as typeof store, {
    interruptStaleCleanupRuns: async () => {
      calls++
      await held
      return []
    }
  })
  const housekeeping = startAuditHousekeeping({
    audit: new AuditTrail(slow, { info () {} }),
    registries: directory(t, { default: registry.url }),
    retentionDays: 90,
    logger: logger(),
    reconcile: { owner: 'me', locks: new KeyedQueue(), intervalMs: 60_000, inFlightMs: 0, sharedAtStartup: false },
    cleanupRuns: { staleAfterMs: 60_000, intervalMs: 10 }
  })
  await housekeeping.startup
  const called = (): boolean => calls > 0
  while (!called()) await sleep(10)
  await sleep(100)
  t.equal(calls, 1, 'the next ticks found the look still under way')
  let stopped = false
  const stopping = housekeeping.stop().then(() => { stopped = true })
  await sleep(20)
  t.equal(stopped, false, 'stop waits for it')
  release()
  await stopping
})
