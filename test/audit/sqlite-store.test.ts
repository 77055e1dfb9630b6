import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import Database from 'better-sqlite3'
import t from 'tap'
import { auditSchemaVersion, openSqliteAuditStore, type AuditStore } from '../../src/audit/index.js'
import { attempt, auditStoreContract, manifestBytes, start } from '../fixtures/audit-store-contract.js'

// In memory: each test gets its own empty database.
// In memory: each test gets its own empty database; a pair shares a file, as two processes would.
auditStoreContract(async (t, options) => {
  const store = openSqliteAuditStore(':memory:', options)
  t.teardown(() => store.close())
  return store
}, async (t, options) => {
  const path = join(t.testdir(), 'pair.db')
  const stores: [AuditStore, AuditStore] = [openSqliteAuditStore(path, options), openSqliteAuditStore(path, options)]
  t.teardown(async () => { await Promise.all(stores.map(store => store.close())) })
  return stores
})

/** A separate process that opens the store, says ready, waits for `go`, claims, and prints the result. */
function claimInChild (path: string, deletionId: string): { ready: Promise<void>, go: () => void, result: Promise<{ ok: boolean, reason?: string }> } {
  const storeUrl = pathToFileURL(join(import.meta.dirname, '../../src/audit/sqlite-store.ts')).href
  const code = `
    import { openSqliteAuditStore } from ${JSON.stringify(storeUrl)}
    const store = openSqliteAuditStore(${JSON.stringify(path)})
    process.stdout.write('ready\\n')
    process.stdin.once('data', async () => {
      const claim = await store.claimRestore(${JSON.stringify(deletionId)}, ${JSON.stringify(attempt({ requestId: 'child' }))})
      await store.close()
      process.stdout.write(JSON.stringify({ ok: claim.ok, reason: claim.ok ? undefined : claim.reason }) + '\\n')
      process.stdin.destroy()
    })`
  const child = spawn(process.execPath, [...process.execArgv, '--input-type=module', '--eval', code], { stdio: ['pipe', 'pipe', 'pipe'] })
  let output = ''
  let errors = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk: string) => { errors += chunk })
  const exited = new Promise<string>((resolve, reject) => {
    child.on('close', status => {
      if (status === 0) resolve(output)
      else reject(new Error(`claim child exited with ${String(status)}: ${output}${errors}`))
    })
  })
  // Settles on exit too, so a child that dies before it is ready fails the test instead of hanging it.
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      output += chunk
      if (output.startsWith('ready\n')) resolve()
    })
    exited.then(() => reject(new Error(`claim child exited before it was ready: ${output}`)), reject)
  })
  const result = exited.then(text => JSON.parse(text.slice('ready\n'.length)) as { ok: boolean, reason?: string })
  return { ready, go: () => child.stdin.write('go\n'), result }
}

t.test('concurrent claims from several processes on one file: exactly one wins', async t => {
  const path = join(t.testdir(), 'audit.db')
  const store = openSqliteAuditStore(path)
  const deletion = await store.append(attempt({ outcome: 'deleted' }))
  const children = Array.from({ length: 4 }, () => claimInChild(path, deletion.id))
  await Promise.all(children.map(child => child.ready))
  for (const child of children) child.go()
  const results = await Promise.all(children.map(child => child.result))
  t.equal(results.filter(result => result.ok).length, 1, JSON.stringify(results))
  t.equal(results.filter(result => result.reason === 'already-restored').length, 3)
  t.equal((await store.list({ action: 'restore' }, { limit: 10 })).items.length, 1)
  t.ok((await store.get(deletion.id))!.restoredBy)
  await store.close()
})

t.test('a file store survives close and reopen, in WAL mode', async t => {
  const path = join(t.testdir(), 'nested', 'deeper', 'audit.db')
  const first = openSqliteAuditStore(path)
  const record = await first.append(attempt({ manifest: manifestBytes }))
  t.ok(existsSync(`${path}-wal`), 'a write-ahead log while open')
  await first.close()

  const raw = new Database(path, { readonly: true })
  t.equal(raw.pragma('journal_mode', { simple: true }), 'wal')
  t.equal(raw.pragma('user_version', { simple: true }), auditSchemaVersion)
  raw.close()

  const second = openSqliteAuditStore(path, { now: () => new Date(Date.now() + 1000) })
  t.same(await second.get(record.id), record)
  const later = await second.append(attempt())
  t.ok(later.id > record.id)
  await second.close()
})

t.test('migrations run once: a database that says it is up to date is not migrated again', async t => {
  const dir = t.testdir()
  const current = join(dir, 'current.db')
  const raw = new Database(current)
  raw.pragma(`user_version = ${auditSchemaVersion}`)
  raw.close()
  t.throws(() => openSqliteAuditStore(current), /no such table: audit_records/, 'the migration that creates the table did not run')

  const fresh = join(dir, 'fresh.db')
  await openSqliteAuditStore(fresh).close()
  const check = new Database(fresh, { readonly: true })
  const schema = check.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all()
  check.close()
  t.same(schema, ['audit_outbox', 'audit_records', 'audit_store_check', 'cleanup_runs', 'cleanups', 'gateway_plans', 'sqlite_sequence'])
})

t.test('finding 9: a database made by the first schema gains clientRequestId and keeps its records', async t => {
  const path = join(t.testdir(), 'v1.db')
  const raw = new Database(path)
  raw.exec(`CREATE TABLE audit_records (id TEXT PRIMARY KEY, time TEXT NOT NULL, request_id TEXT NOT NULL, transport TEXT NOT NULL,
    subject TEXT NOT NULL, groups TEXT NOT NULL, action TEXT NOT NULL, registry TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL,
    digest TEXT, media_type TEXT, removed_tags TEXT NOT NULL, decision TEXT NOT NULL, outcome TEXT NOT NULL, upstream_status INTEGER,
    error_code TEXT, error_detail TEXT, duration_ms REAL, manifest BLOB, restored_by TEXT, restore_of TEXT) STRICT;
    CREATE TABLE audit_store_check (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at TEXT NOT NULL) STRICT;
    INSERT INTO audit_records (id, time, request_id, transport, subject, groups, action, registry, name, tag, removed_tags, decision, outcome)
      VALUES ('01HXXXXXXXXXXXXXXXXXXXXXXX', '2024-05-01T00:00:00.000Z', 'old', 'rest', 'alice', '[]', 'delete', 'main', 'a', 'v1', '[]', '{"allow":true,"reason":"r"}', 'deleted');`)
  raw.pragma('user_version = 1')
  raw.close()
  const store = openSqliteAuditStore(path)
  t.teardown(async () => { await store.close() })
  t.match(await store.get('01HXXXXXXXXXXXXXXXXXXXXXXX'), { requestId: 'old', outcome: 'deleted' })
  t.equal((await store.get('01HXXXXXXXXXXXXXXXXXXXXXXX'))?.clientRequestId, undefined)
  const fresh = await store.append(attempt({ clientRequestId: 'their-id' }))
  t.match(await store.get(fresh.id), { requestId: 'req-1', clientRequestId: 'their-id' })
})

t.test('issue 11: an older database gains mode, deleteAction and strategy; a settle can change the action', async t => {
  const path = join(t.testdir(), 'v1-modes.db')
  const raw = new Database(path)
  raw.exec(`CREATE TABLE audit_records (id TEXT PRIMARY KEY, time TEXT NOT NULL, request_id TEXT NOT NULL, transport TEXT NOT NULL,
    subject TEXT NOT NULL, groups TEXT NOT NULL, action TEXT NOT NULL, registry TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL,
    digest TEXT, media_type TEXT, removed_tags TEXT NOT NULL, decision TEXT NOT NULL, outcome TEXT NOT NULL, upstream_status INTEGER,
    error_code TEXT, error_detail TEXT, duration_ms REAL, manifest BLOB, restored_by TEXT, restore_of TEXT) STRICT;
    CREATE TABLE audit_store_check (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at TEXT NOT NULL) STRICT;
    INSERT INTO audit_records (id, time, request_id, transport, subject, groups, action, registry, name, tag, removed_tags, decision, outcome)
      VALUES ('01HXXXXXXXXXXXXXXXXXXXXXXX', '2024-05-01T00:00:00.000Z', 'old', 'rest', 'alice', '[]', 'delete', 'main', 'a', 'v1', '[]', '{"allow":true,"reason":"r"}', 'deleted');`)
  raw.pragma('user_version = 1')
  raw.close()
  const store = openSqliteAuditStore(path)
  t.teardown(async () => { await store.close() })
  const old = await store.get('01HXXXXXXXXXXXXXXXXXXXXXXX')
  t.same([old?.mode, old?.deleteAction, old?.strategy], [undefined, undefined, undefined], 'records from before modes say nothing of them')
  const fresh = await store.append(attempt({ mode: 'auto', deleteAction: 'deleted-digest', strategy: 'digest' }))
  t.match(await store.get(fresh.id), { mode: 'auto', deleteAction: 'deleted-digest', strategy: 'digest' })
  await store.update(fresh.id, { deleteAction: 'untagged', strategy: 'swap' })
  t.match(await store.get(fresh.id), { mode: 'auto', deleteAction: 'untagged', strategy: 'swap' }, 'auto that untags after all says so')
  const [listed] = (await store.list({}, { limit: 1 })).items
  t.match(listed, { mode: 'auto', deleteAction: 'untagged', strategy: 'swap' }, 'and listings show them')
})

t.test('a database from a newer gateway is refused', async t => {
  const path = join(t.testdir(), 'newer.db')
  const raw = new Database(path)
  raw.pragma(`user_version = ${auditSchemaVersion + 1}`)
  raw.close()
  t.throws(() => openSqliteAuditStore(path), new RegExp(`schema version ${auditSchemaVersion + 1} is newer than this gateway knows \\(${auditSchemaVersion}\\)`))
})

t.test('check() commits a write', async t => {
  const path = join(t.testdir(), 'audit.db')
  const store = openSqliteAuditStore(path, { now: () => new Date(start) })
  await store.check()
  await store.check()
  const raw = new Database(path, { readonly: true })
  t.same(raw.prepare('SELECT id, checked_at FROM audit_store_check').all(), [{ id: 1, checked_at: '2024-05-01T00:00:00.000Z' }])
  raw.close()
  await store.close()
})

t.test('an empty path opens a private temporary database', async t => {
  const store = openSqliteAuditStore('')
  const record = await store.append(attempt())
  t.same(await store.get(record.id), record)
  await store.close()
})

t.test('a closed store rejects every call, and closing twice is fine', async t => {
  const store = openSqliteAuditStore(':memory:')
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

t.test('appends in one turn of the event loop commit together, in order; closing flushes what is queued', async t => {
  const store = openSqliteAuditStore(':memory:')
  const batch = await Promise.all(Array.from({ length: 20 }, (_, index) => store.append(attempt({ requestId: `batch-${index}` }))))
  t.same(batch.map(record => record.requestId), Array.from({ length: 20 }, (_, index) => `batch-${index}`))
  t.same((await store.list({}, { limit: 50 })).items.map(record => record.requestId).sort(), batch.map(record => record.requestId).sort(), 'all stored (ids in one millisecond do not sort by creation)')
  const last = store.append(attempt({ requestId: 'queued-at-close' }))
  await store.close()
  t.match(await last, { requestId: 'queued-at-close' }, 'a queued append is committed before the store closes')
})

t.test('a batch that cannot be written fails every append in it', async t => {
  const store = openSqliteAuditStore(':memory:')
  t.teardown(async () => { await store.close() })
  const results = await Promise.allSettled([store.append(attempt()), store.append(attempt({ upstreamStatus: 'not a number' as unknown as number }))])
  t.same(results.map(result => result.status), ['rejected', 'rejected'], 'one transaction: all or nothing')
  t.same((await store.list({}, { limit: 10 })).items, [])
})

t.test('a running cleanup run is marked interrupted once its heartbeat is older than the bound, and only then', async t => {
  let clock = start
  const store = openSqliteAuditStore(':memory:', { now: () => new Date(clock) })
  t.teardown(() => store.close())
  const counts = { done: 0, stale: 0, failed: 0, skipped: 0 }
  const run = { state: 'running' as const, startedBy: 'alice', startedAt: new Date(start).toISOString(), maxDeletions: 10, counts }
  const [dead, live] = ['d', 'e'].map(digit => `cleanup_${digit.repeat(32)}`) as [string, string]
  for (const cleanupId of [dead, live]) await store.claimCleanupRun({ ...run, cleanupId })
  clock += 40_000
  t.same(await store.heartbeatCleanupRun(live), { cancelRequested: false })
  t.same(await store.interruptStaleCleanupRuns(60_000), [], 'nothing is a minute old')
  t.same(await store.interruptStaleCleanupRuns(30_000), [dead], 'the one that stopped beating 40 s ago')
  t.match(await store.getCleanupRun(dead), { state: 'interrupted', finishedAt: new Date(clock).toISOString() })
  t.same(await store.interruptStaleCleanupRuns(30_000), [], 'once')
  t.equal((await store.getCleanupRun(live))?.state, 'running')
})
