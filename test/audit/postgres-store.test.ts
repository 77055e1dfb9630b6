import pg from 'pg'
import t from 'tap'
import { openPostgresAuditStore, postgresAuditSchemaVersion } from '../../src/audit/postgres-store.js'
import type { AuditStore } from '../../src/audit/types.js'
import { openAuditStore } from '../../src/services.js'
import { freePort } from '../../testing/ports.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { attempt, auditStoreContract, manifestBytes, start } from '../fixtures/audit-store-contract.js'

const server = await startPostgres()
t.teardown(() => server.stop())

let databases = 0
async function freshDatabase (): Promise<string> {
  databases++
  return await server.createDatabase(`audit_${databases}`)
}

async function withClient<T> (url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}

// A database of its own for each test, as SQLite's :memory: is.
auditStoreContract(async (t, options) => {
  const store = await openPostgresAuditStore({ connectionString: await freshDatabase(), ...options })
  t.teardown(() => store.close())
  return store
}, async (t, options) => {
  const url = await freshDatabase()
  const stores: [AuditStore, AuditStore] = [
    await openPostgresAuditStore({ connectionString: url, ...options }), await openPostgresAuditStore({ connectionString: url, ...options })
  ]
  t.teardown(async () => { await Promise.all(stores.map(store => store.close())) })
  return stores
})

t.test('replicas starting together migrate once, under the advisory lock', async t => {
  const url = await freshDatabase()
  const stores = await Promise.all(Array.from({ length: 4 }, async () => await openPostgresAuditStore({ connectionString: url, poolSize: 2 })))
  t.teardown(() => Promise.all(stores.map(store => store.close())))
  const versions = await withClient(url, async client => (await client.query<{ version: number }>('SELECT version FROM audit_schema_migrations ORDER BY version')).rows)
  t.same(versions.map(row => row.version), Array.from({ length: postgresAuditSchemaVersion }, (_, i) => i + 1), 'each migration recorded once')
  const record = await (stores[0] as (typeof stores)[number]).append(attempt())
  t.equal((await (stores[3] as (typeof stores)[number]).get(record.id))?.id, record.id, 'every replica reads what another wrote')

  const again = await openPostgresAuditStore({ connectionString: url })
  await again.close()
  const after = await withClient(url, async client => (await client.query('SELECT count(*)::int AS n FROM audit_schema_migrations')).rows[0] as { n: number })
  t.equal(after.n, postgresAuditSchemaVersion, 'a restart applies nothing again')
})

t.test('a database from a newer gateway is refused', async t => {
  const url = await freshDatabase()
  await (await openPostgresAuditStore({ connectionString: url })).close()
  await withClient(url, async client => { await client.query('INSERT INTO audit_schema_migrations (version) VALUES ($1)', [postgresAuditSchemaVersion + 1]) })
  await t.rejects(openPostgresAuditStore({ connectionString: url }),
    new RegExp(`schema version ${postgresAuditSchemaVersion + 1} is newer than this gateway knows \\(${postgresAuditSchemaVersion}\\)`))
})

t.test('records survive close and reopen; the columns are typed', async t => {
  const url = await freshDatabase()
  const first = await openPostgresAuditStore({ connectionString: url })
  const record = await first.append(attempt({ manifest: manifestBytes, groups: ['a', 'b,c', '{d}'], upstreamStatus: 202, durationMs: 1.25 }))
  await first.close()
  const second = await openPostgresAuditStore({ connectionString: url })
  t.teardown(() => second.close())
  t.same(await second.get(record.id), record, 'the same record, bytes and awkward group names included')
  const types = await withClient(url, async client => (await client.query<{ column_name: string, data_type: string }>(
    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'audit_records' AND column_name IN ('groups', 'manifest', 'decision_allow')  ORDER BY column_name")).rows)
  t.same(types, [{ column_name: 'decision_allow', data_type: 'boolean' }, { column_name: 'groups', data_type: 'ARRAY' }, { column_name: 'manifest', data_type: 'bytea' }])
})

t.test('concurrent claims from several replicas (pools) on one database: exactly one wins', async t => {
  const url = await freshDatabase()
  const replicas = await Promise.all(Array.from({ length: 3 }, async () => await openPostgresAuditStore({ connectionString: url })))
  t.teardown(() => Promise.all(replicas.map(store => store.close())))
  const deletion = await (replicas[0] as (typeof replicas)[number]).append(attempt({ outcome: 'deleted' }))
  const claims = await Promise.all(Array.from({ length: 12 }, async (_, i) =>
    await (replicas[i % 3] as (typeof replicas)[number]).claimRestore(deletion.id, attempt({ requestId: `req-${i}` }))))
  t.equal(claims.filter(claim => claim.ok).length, 1)
  t.equal(claims.filter(claim => !claim.ok && claim.reason === 'already-restored').length, 11)
  t.equal((await (replicas[1] as (typeof replicas)[number]).list({ action: 'restore' }, { limit: 10 })).items.length, 1, 'one restore record')
})

t.test('check() commits a write', async t => {
  const url = await freshDatabase()
  const store = await openPostgresAuditStore({ connectionString: url, now: () => new Date(start) })
  t.teardown(() => store.close())
  await store.check()
  const rows = await withClient(url, async client => (await client.query('SELECT id, checked_at FROM audit_store_check')).rows)
  t.same(rows, [{ id: 1, checked_at: new Date(start).toISOString() }])
})

t.test('a statement stuck behind a lock is cancelled after the statement timeout and frees its connection', async t => {
  const url = await freshDatabase()
  const store = await openPostgresAuditStore({ connectionString: url, statementTimeoutMs: 300, poolSize: 1 })
  t.teardown(() => store.close())
  const record = await store.append(attempt())
  await withClient(url, async client => {
    await client.query('BEGIN')
    await client.query('SELECT id FROM audit_records WHERE id = $1 FOR UPDATE', [record.id])
    const began = Date.now()
    await t.rejects(store.update(record.id, { outcome: 'deleted' }), /statement timeout/)
    t.ok(Date.now() - began < 5000, 'it did not wait for the lock holder')
    await client.query('ROLLBACK')
  })
  t.equal((await store.update(record.id, { outcome: 'deleted' })).outcome, 'deleted', 'the one pooled connection works again')
})

t.test('idle connections the server drops are replaced without a crash', async t => {
  const url = await freshDatabase()
  const store = await openPostgresAuditStore({ connectionString: url })
  t.teardown(() => store.close())
  const record = await store.append(attempt())
  const killed = await withClient(url, async client => (await client.query(
    'SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')).rows[0] as { n: number })
  t.ok(killed.n >= 1, 'the pool had an idle connection to lose')
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal((await store.get(record.id))?.id, record.id, 'the next call opens a fresh connection')
})

t.test('a closed store rejects every call, and closing twice is fine', async t => {
  const store = await openPostgresAuditStore({ connectionString: await freshDatabase() })
  await store.close()
  await store.close()
  const calls: Array<[string, () => Promise<unknown>]> = [
    ['append', () => store.append(attempt())],
    ['update', () => store.update('x', { outcome: 'deleted' })],
    ['get', () => store.get('x')],
    ['list', () => store.list({}, { limit: 1 })],
    ['pending', () => store.pending()],
    ['claimRestore', () => store.claimRestore('x', attempt())],
    ['releaseRestore', () => store.releaseRestore('x', 'y')],
    ['prune', () => store.prune(new Date())],
    ['check', () => store.check()],
    ['claimDeliveries', () => store.claimDeliveries(1, 1000)],
    ['finishDelivery', () => store.finishDelivery('x', 'y', { delivered: true, status: 200 })],
    ['listDeliveries', () => store.listDeliveries({}, { limit: 1 })],
    ['countDeliveries', () => store.countDeliveries()],
    ['heartbeatCleanupRun', () => store.heartbeatCleanupRun('x')],
    ['requestCleanupCancel', () => store.requestCleanupCancel('x', 'y')],
    ['interruptStaleCleanupRuns', () => store.interruptStaleCleanupRuns(1000)]
  ]
  for (const [name, call] of calls) await t.rejects(call(), /audit store is closed/, name)
})

t.test('issue 14: the configured driver picks the store; PostgreSQL opens in the background and retries', async t => {
  const url = await freshDatabase()
  const base = { path: ':memory:', retentionDays: 90, listScanLimit: 1000, poolSize: 2, statementTimeoutMs: 5000, lockWaitMs: 5000, reconcileIntervalMs: 300_000, reconcileAfterMs: 300_000, connectRetry: { initialMs: 500, maxMs: 30_000 } }
  const postgres = openAuditStore({ ...base, driver: 'postgres', url })
  t.teardown(() => postgres.close())
  const record = await postgres.append(attempt())
  const seen = await withClient(url, async client => (await client.query('SELECT id FROM audit_records')).rows)
  t.same(seen, [{ id: record.id }], 'written to PostgreSQL')

  const sqlite = openAuditStore({ ...base, driver: 'sqlite' })
  t.teardown(() => sqlite.close())
  t.equal(await sqlite.get(record.id), undefined, 'SQLite is a store of its own')

  const nowhere = openAuditStore({ ...base, driver: 'postgres', url: `postgres://postgres@127.0.0.1:${await freePort()}/none` })
  t.teardown(() => nowhere.close())
  await t.rejects(nowhere.check(), /PostgreSQL refused the connection/, 'a database that is down: the check says why')
  await t.rejects(nowhere.append(attempt()), /PostgreSQL refused the connection/, 'and nothing is written')
})

t.test('a running cleanup run is marked interrupted once its heartbeat is older than the bound, by the database\'s clock, and only then', async t => {
  const url = await freshDatabase()
  const store = await openPostgresAuditStore({ connectionString: url })
  t.teardown(() => store.close())
  const counts = { done: 0, stale: 0, failed: 0, skipped: 0 }
  const run = { state: 'running' as const, startedBy: 'alice', startedAt: new Date(start).toISOString(), maxDeletions: 10, counts }
  const [dead, live, old] = ['d', 'e', 'f'].map(digit => `cleanup_${digit.repeat(32)}`) as [string, string, string]
  for (const cleanupId of [dead, live, old]) await store.claimCleanupRun({ ...run, cleanupId })
  await withClient(url, async client => {
    // Another replica's clock does not matter: only the database's, which the claim and the beats write.
    await client.query("UPDATE cleanup_runs SET heartbeat_at = heartbeat_at - interval '40 seconds' WHERE cleanup_id = ANY($1)", [[dead, live]])
    // A run claimed before heartbeats existed has none: its owner may be a gateway that never beats.
    await client.query('UPDATE cleanup_runs SET heartbeat_at = NULL WHERE cleanup_id = $1', [old])
  })
  t.same(await store.heartbeatCleanupRun(live), { cancelRequested: false }, 'the live owner beats')
  t.same(await store.interruptStaleCleanupRuns(60_000), [], 'nothing is a minute old')
  t.same(await store.interruptStaleCleanupRuns(30_000), [dead], 'the one that stopped beating 40 s ago')
  t.same(await store.interruptStaleCleanupRuns(30_000), [], 'once')
  t.equal((await store.getCleanupRun(live))?.state, 'running')
  t.equal((await store.getCleanupRun(old))?.state, 'running', 'a run without a heartbeat is left alone')
  t.equal(await store.heartbeatCleanupRun(dead), undefined, 'its owner, if it comes back, learns the run is not its own any more')
})
