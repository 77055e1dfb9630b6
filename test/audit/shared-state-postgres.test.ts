/**
 * Issue 14: the shared-state contract on PostgreSQL — two stores (two pools) on one database are two replicas —
 * and what only PostgreSQL shares: the advisory lock and the rate-limit windows.
 */
import pg from 'pg'
import t, { type Test } from 'tap'
import type { AuditStore } from '../../src/audit/index.js'
import { openPostgresAuditStore, type PostgresAuditStoreOptions } from '../../src/audit/postgres-store.js'
import { ReplicaLock } from '../../src/audit/shared-state.js'
import { advisoryLockId } from '../../src/audit/shared-state-postgres.js'
import { KeyedQueue } from '../../src/registry/untag.js'
import { confirmLockHeld, type HeldLock } from '../../src/registry/lock-guard.js'
import { RegistryClient } from '../../src/registry/client.js'
import { createMetrics } from '../../src/metrics.js'
import { lostLockReporter } from '../../src/services.js'
import pino from 'pino'
import { isGatewayError } from '../../src/errors.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { sharedStateContract } from '../fixtures/shared-state-contract.js'

const server = await startPostgres()
t.teardown(() => server.stop())
let databases = 0
const freshDatabase = async (): Promise<string> => await server.createDatabase(`shared_${++databases}`)

async function replicas (t: Test, count: number, options: Partial<PostgresAuditStoreOptions> = {}) {
  const url = await freshDatabase()
  const stores: AuditStore[] = []
  for (let i = 0; i < count; i++) stores.push(await openPostgresAuditStore({ connectionString: url, ...options }))
  t.teardown(async () => { await Promise.all(stores.map(store => store.close())) })
  return { url, stores }
}

sharedStateContract(async (t, options) => {
  const { stores } = await replicas(t, 2, options)
  return [stores[0]!, stores[1]!]
})

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

t.test('advisory lock ids: 64-bit, stable, different per key', async t => {
  t.equal(advisoryLockId('main\nteam/app'), advisoryLockId('main\nteam/app'))
  t.not(advisoryLockId('main\nteam/app'), advisoryLockId('main\nteam/api'))
  const id = BigInt(advisoryLockId('x'))
  t.ok(id >= -(2n ** 63n) && id < 2n ** 63n)
})

t.test('one key is held by one replica at a time; other keys do not wait', async t => {
  const { stores: [a, b] } = await replicas(t, 2)
  const order: string[] = []
  let release = (): void => {}
  const held = a!.shared.exclusive('repo', async () => {
    order.push('a in')
    await new Promise<void>(resolve => { release = resolve })
    order.push('a out')
  })
  await sleep(100)
  const waiting = b!.shared.exclusive('repo', async () => { order.push('b in') })
  t.equal(await b!.shared.exclusive('other', async () => 'free'), 'free', 'another key is not blocked')
  await sleep(200)
  t.same(order, ['a in'], 'b waits while a holds the key')
  release()
  await Promise.all([held, waiting])
  t.same(order, ['a in', 'a out', 'b in'])
})

t.test('tryExclusive on another replica passes while one holds the key, without waiting for lockWaitMs', async t => {
  const { stores: [a, b] } = await replicas(t, 2, { lockWaitMs: 60_000 })
  let release = (): void => {}
  const held = a!.shared.exclusive('policy', async () => { await new Promise<void>(resolve => { release = resolve }) })
  await sleep(100)
  t.same(await b!.shared.tryExclusive('policy', async () => 'ran'), { held: false })
  release()
  await held
  t.same(await b!.shared.tryExclusive('policy', async () => 'ran'), { held: true, value: 'ran' })
})

t.test('a holder whose connection dies (kill -9 of its replica) frees the lock at once', async t => {
  const { url, stores: [a, b] } = await replicas(t, 2)
  let release = (): void => {}
  const held = a!.shared.exclusive('repo', async () => { await new Promise<void>(resolve => { release = resolve }) })
  await sleep(100)
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  t.teardown(() => admin.end())
  const { rows } = await admin.query<{ pid: number }>("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
  t.equal(rows.length, 1, 'the lock is visible in pg_locks')
  await admin.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid])
  t.equal(await b!.shared.exclusive('repo', async () => 'got it'), 'got it', 'the other replica takes it without waiting for a lease')
  release()
  await held
  t.equal(await a!.shared.exclusive('repo', async () => 'a again'), 'a again', 'the broken connection was not put back in the pool')
})

t.test('a role\'s idle_in_transaction_session_timeout does not end a lock held by slow work', async t => {
  const { url, stores: [a, b] } = await replicas(t, 2, { lockWaitMs: 200 })
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  await admin.query("ALTER ROLE postgres SET idle_in_transaction_session_timeout = '1s'")
  t.teardown(async () => {
    await admin.query('ALTER ROLE postgres RESET idle_in_transaction_session_timeout')
    await admin.end()
  })
  let lost: unknown
  const lock = new ReplicaLock(new KeyedQueue(), a!.shared, (_key, cause) => { lost = cause })
  const result = await lock.run('repo', async () => {
    await sleep(2000)
    const other = await b!.shared.exclusive('repo', async () => 'taken').catch((error: unknown) => error)
    t.not(other, 'taken', 'after 2 s idle in its transaction the lock is still held')
    await t.resolves(confirmLockHeld(), 'the lock connection still answers')
    return 'done'
  })
  t.equal(result, 'done')
  t.equal(lost, undefined, 'the lock was not lost, COMMIT succeeded')
  t.equal(await b!.shared.exclusive('repo', async () => 'free'), 'free')
})

t.test('a lock lost mid-work refuses the destructive registry call, and is reported', async t => {
  const { url, stores: [a] } = await replicas(t, 1)
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  t.teardown(() => admin.end())
  const lines: string[] = []
  const metrics = createMetrics()
  const log = pino({ level: 'info' }, { write: (line: string) => { lines.push(line) } })
  const lock = new ReplicaLock(new KeyedQueue(), a!.shared, lostLockReporter(metrics, log))
  // Nothing listens there: a call that got past the lock check would fail as unreachable, not AUDIT_UNAVAILABLE.
  const client = new RegistryClient({ name: 'main', url: 'http://127.0.0.1:9', connectTimeoutMs: 500, requestTimeoutMs: 500, connections: 1, trustedRealmOrigins: [] })
  t.teardown(() => client.close())
  const error = await lock.run('repo', async () => {
    const { rows } = await admin.query<{ pid: number }>("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
    await admin.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid])
    await sleep(200)
    const put = await client.putManifest('team/app', 'v1', Buffer.from('{}'), 'application/json').catch((error: unknown) => error)
    t.ok(isGatewayError(put) && put.code === 'AUDIT_UNAVAILABLE', 'the PUT is refused')
    await client.deleteManifest('team/app', `sha256:${'a'.repeat(64)}`)
  }).catch((error: unknown) => error)
  t.ok(isGatewayError(error) && error.code === 'AUDIT_UNAVAILABLE', 'the DELETE is refused with AUDIT_UNAVAILABLE')
  t.match((error as Error).message, /lost mid-work/)
  const report = lines.map(line => JSON.parse(line) as { level: number, lock: string, msg: string }).find(line => line.level === 50)
  t.equal(report?.lock, 'repo', 'logged at error level')
  t.match(await metrics.registry.getSingleMetricAsString('gateway_replica_locks_lost_total'), /gateway_replica_locks_lost_total 1/)

  t.equal(await lock.run('repo', async () => 'again'), 'again', 'a fresh connection takes the lock afterwards')

  const quiet = new ReplicaLock(new KeyedQueue(), a!.shared)
  t.equal(await quiet.run('repo', async () => {
    const { rows } = await admin.query<{ pid: number }>("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
    await admin.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid])
    await sleep(200)
    return 'no registry call'
  }), 'no registry call', 'work that never asks finishes with its own result (and a lock without a reporter tells nobody)')
  let kept: HeldLock | undefined
  await a!.shared.exclusive('repo', async held => { kept = held })
  await t.resolves(kept!.confirm(), 'once released, the lock guards nothing more: work that outlives it is not refused by it')
})

t.test('waiting longer than lockWaitMs, or no database: AUDIT_UNAVAILABLE and the work never runs', async t => {
  const { stores: [a, b] } = await replicas(t, 2, { lockWaitMs: 200 })
  let release = (): void => {}
  const held = a!.shared.exclusive('repo', async () => { await new Promise<void>(resolve => { release = resolve }) })
  await sleep(100)
  let ran = false
  const lock = new ReplicaLock(new KeyedQueue(), b!.shared)
  const error = await lock.run('repo', async () => { ran = true }).catch((error: unknown) => error)
  t.ok(isGatewayError(error) && error.code === 'AUDIT_UNAVAILABLE', 'AUDIT_UNAVAILABLE')
  t.match((error as Error).message, /lock shared by the gateway replicas/)
  t.equal(ran, false)
  release()
  await held
  t.equal(await lock.run('repo', async () => 7), 7, 'free again')
  await t.rejects(lock.run('repo', async () => { throw new Error('registry said no') }), /registry said no/, 'the work\'s own error passes unchanged')
  await b!.close()
  const closed = await lock.run('repo', async () => { ran = true }).catch((error: unknown) => error)
  t.ok(isGatewayError(closed) && closed.code === 'AUDIT_UNAVAILABLE')
  t.equal(ran, false)
})

t.test('rate-limit windows are shared by replicas and restart when they end', async t => {
  const { url, stores: [a, b] } = await replicas(t, 2)
  const first = await a!.shared.hit!('alice', 400)
  t.equal(first.count, 1)
  t.ok(first.ttlMs > 300 && first.ttlMs <= 400, `ttl ${first.ttlMs}`)
  t.equal((await b!.shared.hit!('alice', 400)).count, 2, 'the other replica counts in the same window')
  t.equal((await b!.shared.hit!('bob', 400)).count, 1, 'per key')
  await sleep(450)
  const renewed = await a!.shared.hit!('alice', 400)
  t.equal(renewed.count, 1, 'a new window')
  t.ok(renewed.ttlMs > 300)
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  t.teardown(() => admin.end())
  t.equal((await admin.query('SELECT key FROM gateway_rate_limits')).rowCount, 2)
})

t.test('ended windows are swept every rateSweepEvery hits', async t => {
  const url = await freshDatabase()
  const { postgresSharedState } = await import('../../src/audit/shared-state-postgres.js')
  const store = await openPostgresAuditStore({ connectionString: url })
  t.teardown(() => store.close())
  const pool = new pg.Pool({ connectionString: url })
  const shared = postgresSharedState(pool, { connection: { connectionString: url }, poolSize: 1, lockWaitMs: 1000, rateSweepEvery: 2 })
  t.teardown(async () => { await shared.close(); await pool.end() })
  await shared.hit('gone', 50)
  await sleep(100)
  await shared.hit('kept', 60_000)
  t.same((await pool.query('SELECT key FROM gateway_rate_limits')).rows, [{ key: 'kept' }])
})

t.test('rememberOnce: one replica records an id, the others (and itself) find it until it expires; expired ones are dropped', async t => {
  const { url, stores: [a, b] } = await replicas(t, 2)
  // Expiry is on the database's clock; these waits only let short lives run out.
  t.equal(await a!.shared.rememberOnce!('replay', 'sig-1', 60_000), true, 'recorded')
  t.equal(await b!.shared.rememberOnce!('replay', 'sig-1', 60_000), false, 'the other replica finds it')
  t.equal(await a!.shared.rememberOnce!('replay', 'sig-1', 60_000), false, 'and so does the first')
  t.equal(await b!.shared.rememberOnce!('other-kind', 'sig-1', 60_000), true, 'per kind')
  const answers = await Promise.all([a!, b!, a!, b!].map(async store => await store.shared.rememberOnce!('replay', 'sig-2', 60_000)))
  t.same(answers.filter(Boolean), [true], 'four at once: exactly one records it')
  t.equal(await a!.shared.rememberOnce!('replay', 'short', 100), true)
  await sleep(300)
  t.equal(await b!.shared.rememberOnce!('replay', 'short', 100), true, 'expired: recorded again')
  await sleep(300)
  await a!.shared.rememberOnce!('replay', 'sig-3', 60_000)
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  t.teardown(() => admin.end())
  const left = await admin.query("SELECT id FROM gateway_plans WHERE kind = 'replay' ORDER BY id")
  t.same(left.rows.map(row => row.id), ['sig-1', 'sig-2', 'sig-3'], 'the expired one was dropped by a later call')
})
