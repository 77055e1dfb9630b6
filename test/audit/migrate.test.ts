import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import pg from 'pg'
import t from 'tap'
import { openPostgresAuditStore, openSqliteAuditStore, type AuditRecord } from '../../src/audit/index.js'
import { auditSchemaVersion } from '../../src/audit/sqlite-store.js'
import { recordChecksum, withoutPassword } from '../../src/audit/migrate.js'
import { runCli } from '../../src/cli.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { attempt } from '../fixtures/audit-store-contract.js'

const postgres = await startPostgres()
t.teardown(() => postgres.stop())
const dir = mkdtempSync(join(tmpdir(), 'rdg-migrate-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })

async function run (...argv: string[]): Promise<{ code: number, out: string, err: string }> {
  const out: string[] = []
  const err: string[] = []
  const code = await runCli(argv, { out: text => { out.push(text) }, err: text => { err.push(text) } })
  return { code, out: out.join('\n'), err: err.join('\n') }
}

/** A SQLite trail with `count` records of every kind: settled and pending deletions with manifest bytes, an undone one, a restore, an approval. */
async function seedSqlite (path: string, count: number): Promise<AuditRecord[]> {
  const store = openSqliteAuditStore(path)
  const records: AuditRecord[] = []
  for (let index = 0; index < count; index++) {
    const kind = index % 4
    records.push(await store.append(attempt({
      name: `team/app-${index % 7}`,
      tag: `v${index}`,
      outcome: kind === 3 ? 'pending' : 'deleted',
      digest: `sha256:${index.toString(16).padStart(64, '0')}`,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      manifest: Buffer.from(JSON.stringify({ schemaVersion: 2, index, bytes: [0, 255, index % 256] })),
      durationMs: index / 3,
      upstreamStatus: 202,
      ...(kind === 1 ? { approvedBy: 'apikey:approver', clientRequestId: `client-${index}` } : {}),
      ...(kind === 2 ? { mode: 'untag', deleteAction: 'untagged', strategy: 'swap', groups: [] } : {})
    })))
  }
  const claim = await store.claimRestore((records[0] as AuditRecord).id, attempt({ outcome: 'pending' }))
  if (claim.ok) records.push(await store.update(claim.restore.id, { outcome: 'restored' }))
  await store.close()
  const reopened = openSqliteAuditStore(path)
  const all = await Promise.all(records.map(async record => await reopened.get(record.id) as AuditRecord))
  await reopened.close()
  return all
}

t.test('issue 14: audit migrate copies every record with its id and manifest bytes, verifies, and a second run copies nothing', async t => {
  const path = join(dir, 'trail.db')
  const records = await seedSqlite(path, 1203)
  const url = await postgres.createDatabase('migrate_twice')
  const shown = url.replace('postgres@', 'postgres:pw-secret@')

  const first = await run('audit', 'migrate', '--from', `sqlite:${path}`, '--to', shown, '--batch', '250')
  t.equal(first.code, 0, first.err)
  t.match(first.out, `audit migrate: ${path} -> postgres://postgres:***@`)
  t.notMatch(first.out + first.err, /pw-secret/, 'the password is never printed')
  t.match(first.out, /^records in SQLite: 1204$/m)
  t.match(first.out, /^copied: 1204; already in PostgreSQL: 0$/m)
  t.match(first.out, /^verified: 1204 of 1204 match in PostgreSQL/m)
  const checksums = /^checksum: SQLite ([0-9a-f]{64}), PostgreSQL ([0-9a-f]{64})$/m.exec(first.out)
  t.equal(checksums?.[1], checksums?.[2], 'both sides hash the same')
  t.match(first.out, /^ok: every record is in PostgreSQL/m)

  const store = await openPostgresAuditStore({ connectionString: url })
  t.teardown(() => store.close())
  for (const record of records) t.equal(recordChecksum(await store.get(record.id) as AuditRecord), recordChecksum(record), `${record.id} as it was`)
  t.same((await store.get((records[5] as AuditRecord).id))?.manifest, (records[5] as AuditRecord).manifest, 'manifest bytes kept')
  t.same((await store.pending()).length, records.filter(record => record.outcome === 'pending').length, 'pending records stay pending, for reconciliation')
  t.equal((await store.get((records[0] as AuditRecord).id))?.restoredBy, records.at(-1)?.id, 'the undo link is kept')

  const second = await run('audit', 'migrate', '--from', `sqlite:${path}`, '--to', url)
  t.equal(second.code, 0)
  t.match(second.out, /^copied: 0; already in PostgreSQL: 1204$/m, 'idempotent: nothing copied twice')
  t.match(second.out, /^verified: 1204 of 1204/m)
  t.match(second.out, `checksum: SQLite ${checksums?.[1] as string}, PostgreSQL ${checksums?.[1] as string}`)
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  t.teardown(() => client.end())
  t.equal((await client.query<{ count: number }>('SELECT count(*)::int AS count FROM audit_records')).rows[0]?.count, 1204, 'no duplicates')

  // Records edited in PostgreSQL since: reported, not overwritten.
  await client.query("UPDATE audit_records SET subject = 'mallory' WHERE id IN (SELECT id FROM audit_records ORDER BY id LIMIT 21)")
  const third = await run('audit', 'migrate', '--from', `sqlite:${path}`, '--to', url)
  t.equal(third.code, 1)
  t.match(third.out, /^verified: 1183 of 1204/m)
  t.match(third.err, /^mismatch: 21 record\(s\) differ in PostgreSQL, e\.g\. /)
  t.equal(/e\.g\. ([^;]*);/.exec(third.err)?.[1]?.split(', ').length, 20, 'twenty examples at most')
  t.equal((await client.query<{ count: number }>("SELECT count(*)::int AS count FROM audit_records WHERE subject = 'mallory'")).rows[0]?.count, 21, 'left as they were')
})

t.test('issue 14: a record PostgreSQL refuses rolls its batch back and the command fails with the reason', async t => {
  const path = join(dir, 'nul.db')
  await seedSqlite(path, 3)
  const store = openSqliteAuditStore(path)
  await store.append(attempt({ subject: 'bad\u0000subject' }))
  await store.close()
  const url = await postgres.createDatabase('migrate_refused')
  const result = await run('audit', 'migrate', '--from', `sqlite:${path}`, '--to', url)
  t.equal(result.code, 1)
  t.match(result.err, /invalid byte sequence|0x00/)
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  t.teardown(() => client.end())
  t.equal((await client.query<{ count: number }>('SELECT count(*)::int AS count FROM audit_records')).rows[0]?.count, 0, 'the batch was rolled back')
})

t.test('issue 14: audit migrate usage errors', async t => {
  t.match(await run('audit'), { code: 2, err: /^audit: use "audit migrate/ })
  t.match(await run('audit', 'copy'), { code: 2, err: /^audit: use/ })
  t.match(await run('audit', 'migrate', '--to', 'postgres://h/db'), { code: 2, err: /^--from must be sqlite:PATH/ })
  t.match(await run('audit', 'migrate', '--from', 'sqlite:', '--to', 'postgres://h/db'), { code: 2, err: /^--from must be sqlite:PATH/ })
  const saved = process.env.DATABASE_URL
  delete process.env.DATABASE_URL
  t.teardown(() => { if (saved !== undefined) process.env.DATABASE_URL = saved })
  t.match(await run('audit', 'migrate', '--from', 'sqlite:x.db'), { code: 2, err: /^--to must be a postgres:\/\/ URL \(or leave it out and set DATABASE_URL\)/ })
  t.match(await run('audit', 'migrate', '--from', 'sqlite:x.db', '--to', 'mysql://h/db'), { code: 2, err: /^--to must be/ })
  t.match(await run('audit', 'migrate', '--from', 'sqlite:x.db', '--to', 'postgres://h/db', '--batch', '0'), { code: 2, err: /^--batch must be an integer/ })
  t.match(await run('audit', 'migrate', '--from', 'sqlite:x.db', '--to', 'postgres://h/db', 'extra'), { code: 2, err: /^audit migrate takes no arguments/ })
  t.match(await run('audit', 'migrate', '--bogus'), { code: 2, err: /bogus/ })
})

t.test('audit migrate never creates, migrates or writes its source, and refuses one it cannot copy', async t => {
  const url = await postgres.createDatabase('migrate_source_checks')
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  t.teardown(() => client.end())
  const tables = async (): Promise<number> =>
    (await client.query<{ count: number }>("SELECT count(*)::int AS count FROM information_schema.tables WHERE table_name = 'audit_records'")).rows[0]?.count as number

  const typo = join(dir, 'absent', 'trial.db')
  const missing = await run('audit', 'migrate', '--from', `sqlite:${typo}`, '--to', url)
  t.equal(missing.code, 1, 'a mistyped path fails')
  t.match(missing.err, `audit migrate: ${typo} does not exist`)
  t.notOk(existsSync(typo), 'and is not created')
  t.notOk(existsSync(join(dir, 'absent')), 'nor its directory')
  t.equal(await tables(), 0, 'PostgreSQL is not touched')

  const empty = join(dir, 'empty.db')
  new Database(empty).close()
  t.match(await run('audit', 'migrate', '--from', `sqlite:${empty}`, '--to', url), { code: 1, err: /is not an audit trail of this gateway \(schema version 0\)/ })
  const text = join(dir, 'notes.txt')
  writeFileSync(text, 'not a database at all, just some words that fill more than a header of one hundred bytes.\n'.repeat(20))
  t.match(await run('audit', 'migrate', '--from', `sqlite:${text}`, '--to', url), { code: 1, err: /cannot be read as SQLite: file is not a database/ })

  const newer = join(dir, 'newer.db')
  await seedSqlite(newer, 2)
  const bump = new Database(newer)
  bump.pragma(`user_version = ${auditSchemaVersion + 1}`)
  bump.close()
  const refused = await run('audit', 'migrate', '--from', `sqlite:${newer}`, '--to', url)
  t.equal(refused.code, 1)
  t.match(refused.err, `has audit schema version ${auditSchemaVersion + 1}, newer than this gateway knows (${auditSchemaVersion})`)
  t.equal(await tables(), 0, 'still nothing in PostgreSQL')

  // A trail from before cleanup runs (three migrations behind: the runs, their heartbeat and cancel columns, the
  // repository index): copied from an up-to-date copy in memory, file unchanged.
  const older = join(dir, 'older.db')
  const records = await seedSqlite(older, 5)
  const downgrade = new Database(older)
  downgrade.exec('DROP INDEX audit_records_by_name_id; DROP INDEX audit_records_by_cleanup; DROP TABLE cleanup_runs; ALTER TABLE audit_records DROP COLUMN cleanup_id;')
  downgrade.pragma(`user_version = ${auditSchemaVersion - 3}`)
  downgrade.close()
  const copied = await run('audit', 'migrate', '--from', `sqlite:${older}`, '--to', url)
  t.equal(copied.code, 0, copied.err)
  t.match(copied.out, `copied: ${records.length}; already in PostgreSQL: 0`)
  const after = new Database(older, { readonly: true })
  t.equal(after.pragma('user_version', { simple: true }), auditSchemaVersion - 3, 'the source file is not migrated')
  t.notOk((after.pragma('table_info(audit_records)') as Array<{ name: string }>).some(column => column.name === 'cleanup_id'))
  after.close()

  // A good source and an unreachable PostgreSQL: fails with the connection error, the source closed.
  const unreachable = await run('audit', 'migrate', '--from', `sqlite:${older}`, '--to', 'postgres://127.0.0.1:1/none')
  t.equal(unreachable.code, 1)
  t.match(unreachable.err, /ECONNREFUSED|connect/)
})

t.test('audit migrate takes the target from DATABASE_URL when --to is absent', async t => {
  const path = join(dir, 'env.db')
  const records = await seedSqlite(path, 3)
  const url = await postgres.createDatabase('migrate_env')
  const saved = process.env.DATABASE_URL
  process.env.DATABASE_URL = url.replace('postgres@', 'postgres:env-secret@')
  t.teardown(() => { if (saved === undefined) delete process.env.DATABASE_URL; else process.env.DATABASE_URL = saved })
  const result = await run('audit', 'migrate', '--from', `sqlite:${path}`)
  t.equal(result.code, 0, result.err)
  t.match(result.out, /-> postgres:\/\/postgres:\*\*\*@/)
  t.notMatch(result.out, /env-secret/)
  t.match(result.out, `copied: ${records.length}; already in PostgreSQL: 0`)
  process.env.DATABASE_URL = 'mysql://h/db'
  t.match(await run('audit', 'migrate', '--from', `sqlite:${path}`), { code: 2, err: /^--to must be a postgres:\/\/ URL/ })
})

t.test('withoutPassword hides the password and nothing else', async t => {
  t.equal(withoutPassword('postgres://rdg:s3cret@db:5432/rdg?sslmode=verify-full'), 'postgres://rdg:***@db:5432/rdg?sslmode=verify-full')
  t.equal(withoutPassword('postgres://rdg@db/rdg'), 'postgres://rdg@db/rdg')
  t.equal(withoutPassword('postgres://db/rdg?user=rdg&password=s3cret&sslmode=require&sslpassword=k3y'),
    'postgres://db/rdg?user=rdg&password=***&sslmode=require&sslpassword=***', 'query-string passwords too')
  t.equal(withoutPassword('postgres://rdg:s3cret@[bad/rdg'), 'the PostgreSQL URL (unparsable)')
})
