import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import Database from 'better-sqlite3'
import t, { type Test } from 'tap'
import { type GatewayError, isGatewayError } from '../../src/errors.js'
import { auditSchemaVersion, openSqliteAuditStore } from '../../src/audit/index.js'
import type { AuditFilter, AuditImageRef, AuditRecord, AuditStore, NewAuditRecord } from '../../src/audit/index.js'

const start = Date.parse('2024-05-01T00:00:00.000Z')
const minute = 60_000

/** A clock the test moves by hand, so record times and ULID prefixes are known. */
function manualClock (): { now: () => Date, set: (ms: number) => void } {
  let current = start
  return { now: () => new Date(current), set: ms => { current = ms } }
}

function attempt (overrides: Partial<NewAuditRecord> = {}): NewAuditRecord {
  return {
    requestId: 'req-1',
    transport: 'rest',
    subject: 'alice',
    groups: ['dev', 'ops'],
    action: 'delete',
    registry: 'main',
    name: 'team/app',
    tag: 'v1',
    removedTags: ['v1'],
    decision: { allow: true, reason: 'role deleter on team/*' },
    outcome: 'pending',
    ...overrides
  }
}

function memoryStore (t: Test, options?: { now?: () => Date }): AuditStore {
  const store = openSqliteAuditStore(':memory:', options)
  t.teardown(() => store.close())
  return store
}

async function rejectsWith (t: Test, promise: Promise<unknown>, field: string): Promise<void> {
  const error = await promise.then(() => undefined, (error: unknown) => error)
  t.ok(isGatewayError(error), `${field}: a GatewayError`)
  t.equal((error as GatewayError).code, 'INVALID_REQUEST')
  t.equal((error as GatewayError).extras.field, field)
}

// Every byte value, so an accidental text conversion anywhere would show.
const manifestBytes = Buffer.concat([Buffer.from('{"schemaVersion":2}\n'), Buffer.from(Array.from({ length: 256 }, (_, i) => i))])

t.test('append then get returns the record exactly, manifest bytes included', async t => {
  const clock = manualClock()
  const store = memoryStore(t, { now: clock.now })
  const full = attempt({
    digest: `sha256:${'a'.repeat(64)}`,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    removedTags: ['v1', 'latest'],
    upstreamStatus: 202,
    errorCode: 'UPSTREAM_ERROR',
    errorDetail: 'something to say',
    durationMs: 12.5,
    manifest: manifestBytes,
    restoredBy: '01HZZZZZZZZZZZZZZZZZZZZZZZ',
    restoreOf: '01HYYYYYYYYYYYYYYYYYYYYYYY'
  })
  const appended = await store.append(full)
  t.match(appended.id, /^[0-9A-HJKMNP-TV-Z]{26}$/, 'a ULID')
  t.equal(appended.time, '2024-05-01T00:00:00.000Z', 'time from the store clock')
  const { manifest, ...rest } = (await store.get(appended.id))!
  const { manifest: _, ...expected } = full
  t.same(rest, { ...expected, id: appended.id, time: appended.time })
  t.ok(Buffer.isBuffer(manifest))
  t.ok(manifest!.equals(manifestBytes), 'manifest bytes are exact')
  t.same(appended, await store.get(appended.id), 'append answers what get reads')

  const minimal = await store.append(attempt({ removedTags: [], groups: [], outcome: 'denied', decision: { allow: false, reason: 'no binding' } }))
  const read = (await store.get(minimal.id))!
  t.same(Object.keys(read).sort(), ['action', 'decision', 'groups', 'id', 'name', 'outcome', 'registry', 'removedTags', 'requestId', 'subject', 'tag', 'time', 'transport'],
    'absent optional fields stay absent, not null')
  t.same(read.decision, { allow: false, reason: 'no binding' })
  t.same(read.groups, [])

  t.equal(await store.get('01HXXXXXXXXXXXXXXXXXXXXXXX'), undefined, 'unknown id')
})

t.test('a given time is kept, in one canonical form', async t => {
  const store = memoryStore(t)
  const record = await store.append(attempt({ time: '2024-05-01T02:30:00+02:00' }))
  t.equal(record.time, '2024-05-01T00:30:00.000Z')
  await rejectsWith(t, store.append(attempt({ time: 'yesterday-ish' })), 'time')
})

t.test('the store clock defaults to the real one', async t => {
  const before = Date.now()
  const record = await memoryStore(t).append(attempt())
  t.ok(Date.parse(record.time) >= before && Date.parse(record.time) <= Date.now())
})

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
const idValue = (id: string): bigint => [...id].reduce((value, character) => value * 32n + BigInt(CROCKFORD.indexOf(character)), 0n)

t.test('finding 10: ids made in the same millisecond are random, not neighbours; the time prefix still sorts', async t => {
  const clock = manualClock()
  const store = memoryStore(t, { now: clock.now })
  const ids = await Promise.all(Array.from({ length: 200 }, async () => (await store.append(attempt())).id))
  t.equal(new Set(ids).size, ids.length, 'unique')
  t.ok(ids.every(id => id.slice(0, 10) === ids[0]?.slice(0, 10)), 'one millisecond, one time prefix')
  const steps = ids.slice(1).map((id, index) => idValue(id) - idValue(ids[index] as string))
  t.equal(steps.filter(step => step > 0n && step < 1n << 40n).length, 0, 'no id is a small step from the one before: none can be guessed from another')
  t.notSame([...ids].sort(), ids, 'not in creation order within the millisecond')
  clock.set(start + minute)
  const later = (await store.append(attempt())).id
  t.ok(ids.every(id => id < later), 'a later millisecond sorts after')
})

t.test('update changes only the fields given', async t => {
  const store = memoryStore(t)
  const pending = await store.append(attempt({ manifest: manifestBytes, digest: `sha256:${'b'.repeat(64)}` }))
  const deleted = await store.update(pending.id, { outcome: 'deleted', upstreamStatus: 202, durationMs: 41, manifest: undefined, errorCode: undefined })
  t.equal(deleted.outcome, 'deleted')
  t.equal(deleted.upstreamStatus, 202)
  t.equal(deleted.durationMs, 41)
  t.ok(deleted.manifest!.equals(manifestBytes), 'an undefined manifest does not wipe the saved bytes')
  t.equal(deleted.digest, pending.digest)
  t.same(await store.get(pending.id), deleted, 'persisted')

  const failed = await store.update(pending.id, {
    outcome: 'failed', errorCode: 'UPSTREAM_TIMEOUT', errorDetail: 'no answer in 10 s', mediaType: 'application/x', removedTags: ['v1', 'v2'], restoredBy: 'someone'
  })
  t.match(failed, { outcome: 'failed', errorCode: 'UPSTREAM_TIMEOUT', errorDetail: 'no answer in 10 s', mediaType: 'application/x', removedTags: ['v1', 'v2'], restoredBy: 'someone' })
  t.equal(failed.time, pending.time)
  t.equal(failed.subject, pending.subject)

  await t.rejects(store.update('01HXXXXXXXXXXXXXXXXXXXXXXX', { outcome: 'deleted' }), /does not exist/)
})

/** Eight records, one a minute, with known fields; returned oldest first. */
async function seed (store: AuditStore, clock: ReturnType<typeof manualClock>): Promise<AuditRecord[]> {
  const rows: Array<Partial<NewAuditRecord>> = [
    { subject: 'alice', registry: 'main', name: 'team/app', tag: 'v1', outcome: 'deleted' },
    { subject: 'bob', registry: 'main', name: 'team/app', tag: 'v2', outcome: 'denied', action: 'delete' },
    { subject: 'alice', registry: 'backup', name: 'team/app', tag: 'v1', outcome: 'dry-run', action: 'dry-run' },
    { subject: 'carol', registry: 'main', name: 'team/api', tag: 'v1', outcome: 'failed' },
    { subject: 'alice', registry: 'main', name: 'team/api', tag: 'v2', outcome: 'deleted' },
    { subject: 'bob', registry: 'backup', name: 'team/api', tag: 'v1', outcome: 'not-found' },
    { subject: 'alice', registry: 'main', name: 'team/app', tag: 'v1', outcome: 'restored', action: 'restore' },
    { subject: 'carol', registry: 'main', name: 'team/app', tag: 'v3', outcome: 'pending' }
  ]
  const records: AuditRecord[] = []
  for (const [index, row] of rows.entries()) {
    clock.set(start + index * minute)
    records.push(await store.append(attempt(row)))
  }
  return records
}

t.test('filters, alone and combined, newest first', async t => {
  const clock = manualClock()
  const store = memoryStore(t, { now: clock.now })
  const records = await seed(store, clock)
  const expect = async (filter: AuditFilter, indexes: number[]): Promise<void> => {
    const page = await store.list(filter, { limit: 100 })
    t.same(page.items.map(record => record.id), indexes.map(index => records[index].id), JSON.stringify(filter))
    t.equal(page.nextCursor, undefined)
  }
  await expect({}, [7, 6, 5, 4, 3, 2, 1, 0])
  await expect({ subject: 'alice' }, [6, 4, 2, 0])
  await expect({ registry: 'backup' }, [5, 2])
  await expect({ name: 'team/api' }, [5, 4, 3])
  await expect({ tag: 'v1' }, [6, 5, 3, 2, 0])
  await expect({ outcome: 'deleted' }, [4, 0])
  await expect({ action: 'dry-run' }, [2])
  await expect({ subject: 'alice', registry: 'main', name: 'team/app', tag: 'v1' }, [6, 0])
  await expect({ subject: 'alice', outcome: 'deleted', name: 'team/api' }, [4])
  await expect({ subject: 'nobody' }, [])
})

t.test('since is inclusive, until exclusive, whatever offset they are written in', async t => {
  const clock = manualClock()
  const store = memoryStore(t, { now: clock.now })
  const records = await seed(store, clock)
  const ids = async (filter: AuditFilter): Promise<string[]> => (await store.list(filter, { limit: 100 })).items.map(record => record.id)
  const at = (index: number): string => new Date(start + index * minute).toISOString()
  t.same(await ids({ since: at(5) }), [records[7].id, records[6].id, records[5].id])
  t.same(await ids({ until: at(2) }), [records[1].id, records[0].id])
  t.same(await ids({ since: at(2), until: at(4) }), [records[3].id, records[2].id])
  t.same(await ids({ since: '2024-05-01T02:03:00+02:00', until: '2024-05-01T02:04:00+02:00' }), [records[3].id])
  t.same(await ids({ since: at(2), until: at(6), subject: 'alice' }), [records[4].id, records[2].id])
  await rejectsWith(t, store.list({ since: 'not a time' }, { limit: 10 }), 'since')
  await rejectsWith(t, store.list({ until: '' }, { limit: 10 }), 'until')
})

t.test('cursor pagination walks every record once, with full pages', async t => {
  const clock = manualClock()
  const store = memoryStore(t, { now: clock.now })
  const records = await seed(store, clock)
  const newestFirst = [...records].reverse().map(record => record.id)

  const walk = async (filter: AuditFilter, limit: number, visible?: (record: AuditImageRef) => boolean): Promise<string[][]> => {
    const pages: string[][] = []
    let cursor: string | undefined
    do {
      const page: Awaited<ReturnType<AuditStore['list']>> = await store.list(filter, { limit, cursor }, visible)
      pages.push(page.items.map(record => record.id))
      cursor = page.nextCursor
      if (cursor !== undefined) t.notMatch(cursor, /^[0-9A-Z]{26}$/, 'the cursor is not the raw id')
    } while (cursor !== undefined && pages.length < 20)
    return pages
  }

  t.same(await walk({}, 3), [newestFirst.slice(0, 3), newestFirst.slice(3, 6), newestFirst.slice(6)])
  t.same(await walk({}, 4), [newestFirst.slice(0, 4), newestFirst.slice(4)], 'an exact fit ends without an empty page')
  t.same(await walk({}, 8), [newestFirst])
  t.same(await walk({ subject: 'alice' }, 3), [[records[6].id, records[4].id, records[2].id], [records[0].id]], 'with a filter')

  // Visibility is decided on the image alone (what the policy's audit rules look at); these are alice's records.
  const aliceOnly = (record: AuditImageRef): boolean =>
    (record.name === 'team/app' && record.tag === 'v1') || (record.name === 'team/api' && record.tag === 'v2')
  t.same(await walk({}, 2, aliceOnly), [[records[6].id, records[4].id], [records[2].id, records[0].id]],
    'hidden records do not shrink pages, and the last full page says there is no more')
  t.same(await walk({}, 3, aliceOnly), [[records[6].id, records[4].id, records[2].id], [records[0].id]])
  t.same(await walk({ registry: 'main' }, 1, aliceOnly), [[records[6].id], [records[4].id], [records[0].id]])
  t.same(await walk({}, 5, () => false), [[]], 'nothing visible: one empty page')

  await rejectsWith(t, store.list({}, { limit: 2, cursor: 'garbage!' }), 'cursor')
  await rejectsWith(t, store.list({}, { limit: 2, cursor: Buffer.from('not-a-ulid').toString('base64url') }), 'cursor')
  for (const limit of [0, -1, 1.5, Number.NaN]) await rejectsWith(t, store.list({}, { limit }), 'limit')
})

t.test('finding 1: a list call reads at most the scan limit of rows, and never the manifest bytes', async t => {
  const clock = manualClock()
  const store = memoryStore(t, { now: clock.now, listScanLimit: 5 })
  const records: AuditRecord[] = []
  for (let index = 0; index < 23; index++) {
    clock.set(start + index * minute)
    records.push(await store.append(attempt({ tag: `v${index}`, outcome: 'deleted', manifest: manifestBytes })))
  }
  const oldest = records[0] as AuditRecord
  let calls = 0
  const onlyOldest = (record: AuditRecord | Omit<AuditRecord, 'manifest'>): boolean => { calls++; return record.id === oldest.id }
  const pages: Array<{ ids: string[], calls: number }> = []
  let cursor: string | undefined
  do {
    calls = 0
    const page: Awaited<ReturnType<AuditStore['list']>> = await store.list({}, { limit: 3, cursor }, onlyOldest)
    pages.push({ ids: page.items.map(item => item.id), calls })
    cursor = page.nextCursor
  } while (cursor !== undefined && pages.length < 20)
  t.ok(pages.every(page => page.calls <= 5), `no page looks at more than 5 rows: ${pages.map(page => page.calls).join(',')}`)
  t.same(pages.map(page => page.ids.length), [0, 0, 0, 0, 1], 'short pages with a cursor until the one record is found')
  t.same(pages.at(-1)?.ids, [oldest.id])

  const unmatched = await store.list({ tag: 'nothing-has-this' }, { limit: 3 })
  t.same(unmatched.items, [])
  t.ok(unmatched.nextCursor !== undefined, 'a filter nothing matches reads one window, then hands back a cursor')

  const [item] = (await store.list({}, { limit: 1 })).items
  t.notOk('manifest' in (item as object), 'a listing carries no manifest bytes')
  t.equal(item?.manifestSaved, true, 'only whether some were saved')
  t.same((await store.list({ subject: 'alice', tag: 'v22' }, { limit: 1 })).items.map(record => record.id), [records[22]?.id], 'the subject index drives the window')
})

t.test('pending() lists the records cut short, oldest first', async t => {
  const clock = manualClock()
  const store = memoryStore(t, { now: clock.now })
  const first = await store.append(attempt())
  clock.set(start + minute)
  await store.append(attempt({ outcome: 'deleted' }))
  clock.set(start + 2 * minute)
  const restore = await store.append(attempt({ action: 'restore', restoreOf: first.id }))
  t.same((await store.pending()).map(record => record.id), [first.id, restore.id])
  await store.update(first.id, { outcome: 'deleted' })
  t.same((await store.pending()).map(record => record.id), [restore.id])
})

t.test('claimRestore: unknown, not a deletion, claimed, already restored', async t => {
  const store = memoryStore(t)
  const unknown = await store.claimRestore('01HXXXXXXXXXXXXXXXXXXXXXXX', attempt())
  t.same(unknown, { ok: false, reason: 'unknown' })

  for (const outcome of ['pending', 'dry-run', 'failed', 'denied'] as const) {
    const record = await store.append(attempt({ outcome }))
    const claim = await store.claimRestore(record.id, attempt())
    t.same(claim, { ok: false, reason: 'not-a-deletion', deletion: record }, outcome)
  }

  const deletion = await store.append(attempt({ outcome: 'deleted', manifest: manifestBytes }))
  const claim = await store.claimRestore(deletion.id, attempt({ subject: 'bob', requestId: 'req-2', action: 'delete', outcome: 'failed' }))
  if (!claim.ok) throw new Error('expected the claim to win')
  t.match(claim.restore, { action: 'restore', outcome: 'pending', restoreOf: deletion.id, subject: 'bob', requestId: 'req-2' },
    'the restore record is a pending restore of the deletion, whatever the caller passed')
  t.equal(claim.deletion.restoredBy, claim.restore.id)
  t.ok(claim.deletion.manifest!.equals(manifestBytes), 'the deletion comes back with its bytes')
  t.same(await store.get(deletion.id), claim.deletion)
  t.same(await store.get(claim.restore.id), claim.restore)

  const again = await store.claimRestore(deletion.id, attempt())
  t.same(again, { ok: false, reason: 'already-restored', deletion: claim.deletion })

  await store.update(deletion.id, { outcome: 'restored' })
  const afterOutcomeChange = await store.claimRestore(deletion.id, attempt())
  t.match(afterOutcomeChange, { ok: false, reason: 'already-restored' }, 'restoredBy is what counts, not the outcome')
})

t.test('concurrent claims on one store: exactly one wins', async t => {
  const store = memoryStore(t)
  const deletion = await store.append(attempt({ outcome: 'deleted' }))
  const claims = await Promise.all(Array.from({ length: 5 }, (_, i) => store.claimRestore(deletion.id, attempt({ requestId: `req-${i}` }))))
  t.equal(claims.filter(claim => claim.ok).length, 1)
  t.same(claims.filter(claim => !claim.ok).map(claim => claim.ok ? '' : claim.reason), Array(4).fill('already-restored'))
  t.equal((await store.list({ action: 'restore' }, { limit: 10 })).items.length, 1, 'the losers left no restore record')
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

t.test('releaseRestore frees a claim only for the restore that holds it', async t => {
  const store = memoryStore(t)
  const deletion = await store.append(attempt({ outcome: 'deleted' }))
  const first = await store.claimRestore(deletion.id, attempt())
  if (!first.ok) throw new Error('expected the claim to win')

  await store.releaseRestore(deletion.id, '01HXXXXXXXXXXXXXXXXXXXXXXX')
  t.equal((await store.get(deletion.id))!.restoredBy, first.restore.id, 'another restore id changes nothing')

  await store.releaseRestore(deletion.id, first.restore.id)
  t.equal((await store.get(deletion.id))!.restoredBy, undefined)
  const second = await store.claimRestore(deletion.id, attempt())
  t.equal(second.ok, true, 'the deletion can be claimed again')
})

t.test('prune removes old records but keeps the pending ones', async t => {
  const clock = manualClock()
  const store = memoryStore(t, { now: clock.now })
  const records = await seed(store, clock)
  clock.set(start + 8 * minute)
  const oldPending = await store.append(attempt({ time: new Date(start - minute).toISOString() }))
  t.equal(await store.prune(new Date(start + 3 * minute)), 3, 'the three before minute 3')
  const left = (await store.list({}, { limit: 100 })).items.map(record => record.id)
  t.same(left, [oldPending.id, ...records.slice(3).map(record => record.id).reverse()])
  t.equal(await store.prune(new Date(start + 3 * minute)), 0, 'nothing more to prune')
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
  t.same(schema, ['audit_records', 'audit_store_check'])
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
    ['check', () => store.check()]
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
