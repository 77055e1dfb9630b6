import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import Database from 'better-sqlite3'
import pg from 'pg'
import { openPostgresAuditStore } from './postgres-store.js'
import * as postgresRows from './postgres-store.js'
import { auditSchemaVersion, migrate } from './sqlite-store.js'
import * as sqliteRows from './sqlite-store.js'
import type { AuditRecord } from './types.js'

export interface MigrateOptions {
  /** The SQLite file of the audit trail. */
  from: string
  /** postgres://… (libpq ssl parameters work here as in audit.url). */
  to: string
  /** Records per transaction. */
  batchSize: number
}

export interface MigrateSummary {
  /** Records in the SQLite file. */
  source: number
  /** Inserted by this run. */
  copied: number
  /** Already in PostgreSQL with the same id (an earlier run, or a resumed one). */
  alreadyThere: number
  /** Source records found in PostgreSQL with identical fields and manifest bytes. */
  verified: number
  /** Ids present on both sides whose contents differ (at most 20 listed). */
  mismatched: string[]
  /** sha256 over every source record's checksum in id order; the same over the PostgreSQL copies when all match. */
  sourceChecksum: string
  targetChecksum: string
}

/**
 * One record's checksum, from the fields both stores keep: the same record read from SQLite and from PostgreSQL
 * hashes the same, and any difference (a field, a byte of the saved manifest) changes it.
 */
export function recordChecksum (record: AuditRecord): string {
  const { manifest, ...fields } = record
  const canonical = JSON.stringify(Object.fromEntries(Object.entries(fields).sort(([a], [b]) => a < b ? -1 : 1)))
  const hash = createHash('sha256').update(canonical).update('\0')
  if (manifest !== undefined) hash.update('manifest\0').update(manifest)
  return hash.digest('hex')
}

/**
 * Copies every record of a SQLite audit trail into PostgreSQL, keeping ids, times and manifest bytes: INSERT … ON
 * CONFLICT (id) DO NOTHING, so a second run (or one after an interruption) copies only what is missing. Then reads
 * each source id back from PostgreSQL and compares checksums. The source is only read: a missing file, one that is not
 * an audit trail, or one from a newer gateway is refused before PostgreSQL is touched, and an older schema is brought up
 * to date on an in-memory copy. PostgreSQL's schema is brought up to date by its store's migrations. Run it with the
 * gateway stopped (or before switching audit.driver): records written to SQLite after a batch was read are copied by
 * the next run.
 */
export async function migrateSqliteToPostgres (options: MigrateOptions): Promise<MigrateSummary> {
  const batchSize = options.batchSize
  const sqlite = openSource(options.from)
  try {
    await (await openPostgresAuditStore({ connectionString: options.to, poolSize: 1 })).close()
  } catch (error) {
    sqlite.close()
    throw error
  }
  const client = new pg.Client({ connectionString: options.to, application_name: 'registry-delete-gateway audit migrate' })
  await client.connect()
  const source = createHash('sha256')
  const target = createHash('sha256')
  const summary: MigrateSummary = { source: 0, copied: 0, alreadyThere: 0, verified: 0, mismatched: [], sourceChecksum: '', targetChecksum: '' }
  try {
    const page = sqlite.prepare<[string, number], sqliteRows.AuditRow>(`SELECT ${sqliteRows.columns} FROM audit_records WHERE id > ? ORDER BY id LIMIT ?`)
    const placeholders = postgresRows.columns.split(',').map((_, index) => `$${index + 1}`).join(', ')
    const insert = `INSERT INTO audit_records (${postgresRows.columns}) VALUES (${placeholders}) ON CONFLICT (id) DO NOTHING`
    let after = ''
    for (;;) {
      const records = page.all(after, batchSize).map(sqliteRows.toRecord)
      if (records.length === 0) break
      after = (records.at(-1) as AuditRecord).id
      await client.query('BEGIN')
      try {
        for (const record of records) summary.copied += (await client.query(insert, postgresRows.toValues(record))).rowCount as number
        const { rows } = await client.query<postgresRows.AuditRow>(`SELECT ${postgresRows.columns} FROM audit_records WHERE id = ANY($1::text[])`,
          [records.map(record => record.id)])
        await client.query('COMMIT')
        // A source id PostgreSQL does not return (deleted meanwhile) keeps an empty checksum and counts as a mismatch.
        const copies = new Map(records.map(record => [record.id, '']))
        for (const row of rows) copies.set(row.id, recordChecksum(postgresRows.toRecord(row)))
        for (const record of records) {
          const expected = recordChecksum(record)
          const found = copies.get(record.id) as string
          source.update(expected)
          target.update(found)
          if (found === expected) summary.verified++
          else if (summary.mismatched.length < 20) summary.mismatched.push(record.id)
        }
      } catch (error) {
        await client.query('ROLLBACK')
        throw error
      }
      summary.source += records.length
    }
  } finally {
    sqlite.close()
    await client.end()
  }
  summary.alreadyThere = summary.source - summary.copied
  summary.sourceChecksum = source.digest('hex')
  summary.targetChecksum = target.digest('hex')
  return summary
}

/**
 * Opens the source trail read-only, never creating or changing it: a mistyped path would otherwise become an empty,
 * freshly migrated file and the copy of nothing would report ok.
 */
function openSource (path: string): Database.Database {
  if (!existsSync(path)) throw new Error(`audit migrate: ${path} does not exist (the SQLite audit file to copy from)`)
  const file = new Database(path, { readonly: true, fileMustExist: true })
  let version: number
  try {
    version = file.pragma('user_version', { simple: true }) as number
  } catch (error) {
    file.close()
    throw new Error(`audit migrate: ${path} cannot be read as SQLite: ${(error as Error).message}`)
  }
  const refusal = version === 0
    ? `audit migrate: ${path} is not an audit trail of this gateway (schema version 0)`
    : version > auditSchemaVersion
      ? `audit migrate: ${path} has audit schema version ${version}, newer than this gateway knows (${auditSchemaVersion}): ` +
        'run the migration with a newer gateway'
      : undefined
  if (refusal !== undefined) {
    file.close()
    throw new Error(refusal)
  }
  if (version === auditSchemaVersion) return file
  // An older trail: its columns are brought up to date on a copy in memory, the file itself stays as it is.
  const image = file.serialize()
  file.close()
  // The header's read and write versions say WAL (2), which an in-memory database cannot open: say rollback (1).
  image[18] = 1
  image[19] = 1
  const copy = new Database(image)
  migrate(copy)
  return copy
}

/** Query parameters that carry a secret in a libpq-style URL. */
const SECRET_PARAMETERS = ['password', 'sslpassword']

/** A connection string as it may be printed: without its password, in the user part or the query string. */
export function withoutPassword (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    for (const name of SECRET_PARAMETERS) if (parsed.searchParams.has(name)) parsed.searchParams.set(name, '***')
    return parsed.toString()
  } catch {
    return 'the PostgreSQL URL (unparsable)'
  }
}
