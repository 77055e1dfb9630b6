import type { ConnectionOptions } from 'node:tls'
import pg from 'pg'
import { AuditStoreUnavailable } from './deferred-store.js'
import {
  cleanupValues, INSERT_CLEANUP_POSTGRES, POSTGRES_CLEANUPS_MIGRATION, PRUNE_CLEANUPS_POSTGRES, SELECT_CLEANUP_POSTGRES, toCleanupRecord, type CleanupRow
} from './cleanup-sql.js'
import {
  CLEANUP_RUN_SQL, claimValues, LATEST, POSTGRES_CLEANUP_RUN_LEASES_MIGRATION, POSTGRES_CLEANUP_RUNS_MIGRATION, toCleanupRun, updateValues, type CleanupRunRow
} from './cleanup-run-sql.js'
import { newAuditId } from './id.js'
import { describePostgresError } from './postgres-errors.js'
import { outboxMigration, postgresOutbox } from './outbox-postgres.js'
import type { OutboxRouter } from './outbox.js'
import {
  checkLimit, decodeCursor, definedChanges, encodeAuditCursor, filterKeys, filterValues, LIST_CHUNK_ROWS, toIsoTime, windowIndexes, withOptionalColumns
} from './listing.js'
import { postgresSharedState, sharedStateMigration } from './shared-state-postgres.js'
import type { AuditFilter, AuditRecord, AuditRecordChanges, AuditStore, ClaimRestoreResult, CleanupRunState, NewAuditRecord } from './types.js'

/**
 * Applied in order, each in the transaction that records it in audit_schema_migrations. Never edit one that has
 * shipped: append. Ids and times are compared with COLLATE "C" (byte order), which is the order ULIDs and ISO 8601
 * UTC times sort in whatever the database's locale.
 */
const migrations: readonly string[] = [
  `CREATE TABLE audit_records (
    id TEXT COLLATE "C" PRIMARY KEY,
    time TEXT COLLATE "C" NOT NULL,
    request_id TEXT NOT NULL,
    client_request_id TEXT,
    transport TEXT NOT NULL,
    subject TEXT NOT NULL,
    groups TEXT[] NOT NULL,
    action TEXT NOT NULL,
    registry TEXT NOT NULL,
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT,
    media_type TEXT,
    removed_tags TEXT[] NOT NULL,
    mode TEXT,
    delete_action TEXT,
    strategy TEXT,
    decision_allow BOOLEAN NOT NULL,
    decision_reason TEXT NOT NULL,
    outcome TEXT NOT NULL,
    upstream_status INTEGER,
    error_code TEXT,
    error_detail TEXT,
    duration_ms DOUBLE PRECISION,
    manifest BYTEA,
    restored_by TEXT,
    restore_of TEXT,
    approved_by TEXT
  );
  CREATE INDEX audit_records_by_subject ON audit_records (subject, id);
  CREATE INDEX audit_records_by_image ON audit_records (registry, name, tag, id);
  CREATE INDEX audit_records_by_name ON audit_records (name, tag, id);
  CREATE INDEX audit_records_by_outcome ON audit_records (outcome, id);
  CREATE INDEX audit_records_by_time ON audit_records (time);
  CREATE TABLE audit_store_check (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
  );`,
  // Webhook deliveries, written in the transaction of the record they announce (src/audit/outbox-postgres.ts).
  outboxMigration,
  // Issue 14: what replicas share (cross-replica lock, plans, reconcile claims, rate limits): shared-state-postgres.ts.
  sharedStateMigration,
  // Cleanup plans (issue 15), kept whole until executed.
  POSTGRES_CLEANUPS_MIGRATION,
  // Cleanup runs (issue 15): each deletion names its cleanup; a run's state and counts.
  POSTGRES_CLEANUP_RUNS_MIGRATION,
  // Cleanup runs across replicas: the owner's heartbeat and a cancel asked from anywhere (cleanup-run-sql.ts).
  POSTGRES_CLEANUP_RUN_LEASES_MIGRATION,
  // `GET /audit?name=` alone: the repository's records in id order (the (name, tag, id) index needs the tag too).
  'CREATE INDEX audit_records_by_name_id ON audit_records (name, id);'
]

export const postgresAuditSchemaVersion = migrations.length

/**
 * Held (transaction-scoped) while migrating, so replicas starting together migrate once: the others wait, then
 * find the work done. The number is arbitrary but fixed: it names this lock in pg_locks.
 */
const MIGRATION_LOCK = 7_314_001

/** Exported with toValues and toRecord for `audit migrate`, which copies records with their ids. */
export const columns = `id, time, request_id, client_request_id, transport, subject, groups, action, registry, name, tag, digest,
  media_type, removed_tags, mode, delete_action, strategy, decision_allow, decision_reason, outcome, upstream_status,
  error_code, error_detail, duration_ms, manifest, restored_by, restore_of, approved_by, cleanup_id`

/** What a listing reads: everything but the saved manifest bytes, which only a restore needs. */
const listColumns = columns.replace('manifest,', 'NULL::bytea AS manifest, manifest IS NOT NULL AS manifest_saved,')

export interface AuditRow {
  id: string
  time: string
  request_id: string
  client_request_id: string | null
  transport: AuditRecord['transport']
  subject: string
  groups: string[]
  action: AuditRecord['action']
  registry: string
  name: string
  tag: string
  digest: string | null
  media_type: string | null
  removed_tags: string[]
  mode: AuditRecord['mode'] | null
  delete_action: AuditRecord['deleteAction'] | null
  strategy: AuditRecord['strategy'] | null
  decision_allow: boolean
  decision_reason: string
  outcome: AuditRecord['outcome']
  upstream_status: number | null
  error_code: string | null
  error_detail: string | null
  duration_ms: number | null
  manifest: Buffer | null
  restored_by: string | null
  restore_of: string | null
  approved_by: string | null
  cleanup_id: string | null
}

type ListedRow = AuditRow & { manifest_saved: boolean }
interface WindowRow { id: string, registry: string, name: string, tag: string, matches: boolean }

/** The row's values in `columns` order; undefined becomes NULL. */
export function toValues (record: AuditRecord): unknown[] {
  return [
    record.id, record.time, record.requestId, record.clientRequestId, record.transport, record.subject, record.groups,
    record.action, record.registry, record.name, record.tag, record.digest, record.mediaType, record.removedTags,
    record.mode, record.deleteAction, record.strategy, record.decision.allow, record.decision.reason, record.outcome,
    record.upstreamStatus, record.errorCode, record.errorDetail, record.durationMs, record.manifest, record.restoredBy,
    record.restoreOf, record.approvedBy, record.cleanupId
  ].map(value => value ?? null)
}

export function toRecord (row: AuditRow): AuditRecord {
  const record: AuditRecord = {
    id: row.id,
    time: row.time,
    requestId: row.request_id,
    transport: row.transport,
    subject: row.subject,
    groups: row.groups,
    action: row.action,
    registry: row.registry,
    name: row.name,
    tag: row.tag,
    removedTags: row.removed_tags,
    decision: { allow: row.decision_allow, reason: row.decision_reason },
    outcome: row.outcome
  }
  return withOptionalColumns(record, row)
}

const filterSql: Record<keyof AuditFilter, string> = {
  subject: 'subject =',
  registry: 'registry =',
  name: 'name =',
  tag: 'tag =',
  outcome: 'outcome =',
  action: 'action =',
  since: 'time >=',
  until: 'time <',
  cleanupId: 'cleanup_id ='
}

const insertSql = `INSERT INTO audit_records (${columns}) VALUES (${columns.split(',').map((_, i) => `$${i + 1}`).join(', ')})`
const updateSql = `UPDATE audit_records SET outcome = $2, digest = $3, media_type = $4, removed_tags = $5, upstream_status = $6,
  error_code = $7, error_detail = $8, duration_ms = $9, manifest = $10, restored_by = $11, delete_action = $12, strategy = $13
  WHERE id = $1`

export interface PostgresAuditStoreOptions {
  /** postgres://… (the gateway takes it from audit.url or DATABASE_URL). */
  connectionString: string
  now?: () => Date
  /** Rows one list call reads at most (1000 by default); a page that hits it ends early with a cursor. */
  listScanLimit?: number
  /** Connections in the pool (10 by default). */
  poolSize?: number
  /** Server-side limit on each statement (10 s by default), so a stuck query frees its connection. */
  statementTimeoutMs?: number
  /** How long to wait for a connection, new or from the full pool, before the call fails (10 s by default). */
  connectTimeoutMs?: number
  /** TLS options (CA, client certificate and key as PEM, rejectUnauthorized, servername); absent: as audit.url says. */
  tls?: ConnectionOptions
  /** Which webhook deliveries a record produces; none without it. */
  outbox?: OutboxRouter
  /** How long a replica waits for another replica's repository lock (60 s by default). */
  lockWaitMs?: number
}

/** How the gateway's connections show in pg_stat_activity, so an operator can count them. */
export const POSTGRES_APPLICATION_NAME = 'registry-delete-gateway'

type Queryable = Pick<pg.PoolClient, 'query'>

/** Opens the pool and applies the migrations this gateway knows; rejects (pool closed) if either fails. */
export async function openPostgresAuditStore (options: PostgresAuditStoreOptions): Promise<AuditStore> {
  const now = options.now ?? (() => new Date())
  const scanLimit = options.listScanLimit ?? 1000
  const connection: pg.PoolConfig = {
    connectionString: options.connectionString,
    application_name: POSTGRES_APPLICATION_NAME,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
    ...(options.tls === undefined ? {} : { ssl: options.tls })
  }
  const pool = new pg.Pool({ ...connection, max: options.poolSize ?? 10, statement_timeout: options.statementTimeoutMs ?? 10_000 })
  // An idle connection the server drops (restart, failover) must not crash the process: the pool discards it and
  // the next query opens a fresh one.
  pool.on('error', () => {})
  try {
    await inTransaction(pool, async client => { await migrate(client) })
  } catch (error) {
    await pool.end()
    throw error
  }

  let closed = false
  function ensureOpen (): void {
    if (closed) throw new Error('audit store is closed')
  }
  const shared = postgresSharedState(pool, {
    connection, poolSize: options.poolSize ?? 10, lockWaitMs: options.lockWaitMs ?? 60_000
  })

  const outbox = postgresOutbox(pool, {
    now, router: options.outbox, ensureOpen, scanLimit, inTransaction: async work => await inTransaction(pool, work)
  })

  async function find (db: Queryable, id: string, lock = false): Promise<AuditRecord | undefined> {
    const { rows } = await db.query<AuditRow>(`SELECT ${columns} FROM audit_records WHERE id = $1${lock ? ' FOR UPDATE' : ''}`, [id])
    return rows.length === 0 ? undefined : toRecord(rows[0] as AuditRow)
  }

  function prepareRecord (record: NewAuditRecord): AuditRecord {
    const clock = now()
    const { time, ...fields } = record
    return {
      ...fields,
      id: newAuditId(clock.getTime()),
      time: time === undefined ? clock.toISOString() : toIsoTime(time, 'time')
    }
  }

  async function insert (db: Queryable, record: NewAuditRecord): Promise<AuditRecord> {
    const stored = prepareRecord(record)
    await db.query(insertSql, toValues(stored))
    const inserted = await find(db, stored.id) as AuditRecord
    await outbox.enqueue(db, inserted)
    return inserted
  }

  /** Changes a record under its row lock; with onlyPending, a record no longer pending stays as it is (undefined). */
  async function change (client: Queryable, id: string, changes: AuditRecordChanges, onlyPending: boolean): Promise<AuditRecord | undefined> {
    const current = await find(client, id, true)
    if (current === undefined) throw new Error(`audit record ${id} does not exist`)
    if (onlyPending && current.outcome !== 'pending') return undefined
    const next = { ...current, ...definedChanges(changes) }
    await client.query(updateSql, [
      id, next.outcome, next.digest, next.mediaType, next.removedTags, next.upstreamStatus, next.errorCode,
      next.errorDetail, next.durationMs, next.manifest, next.restoredBy, next.deleteAction, next.strategy
    ].map(value => value ?? null))
    const updated = await find(client, id) as AuditRecord
    await outbox.enqueue(client, updated, current)
    return updated
  }

  /** The scan window, as in the SQLite store: at most $scan rows of one index in id order, the rest only marks rows. */
  function windowQuery (filter: Partial<Record<keyof AuditFilter, string>>, cursor: string | undefined, scan: number): [string, unknown[]] {
    const values: unknown[] = []
    const param = (value: unknown): string => { values.push(value); return `$${values.length}` }
    const given = filterKeys.filter(key => filter[key] !== undefined)
    const driving = windowIndexes.find(keys => keys.every(key => filter[key] !== undefined)) ?? []
    const conditions = new Map(given.map(key => [key, `${filterSql[key]} ${param(filter[key])}`]))
    const windowConditions = given.filter(key => driving.includes(key)).map(key => conditions.get(key) as string)
    if (cursor !== undefined) windowConditions.push(`id < ${param(cursor)}`)
    const windowWhere = windowConditions.length === 0 ? '' : `WHERE ${windowConditions.join(' AND ')}`
    const matches = given.length === 0 ? 'TRUE' : [...conditions.values()].join(' AND ')
    const sql = `SELECT id, registry, name, tag, (${matches}) AS matches FROM
      (SELECT * FROM audit_records ${windowWhere} ORDER BY id DESC LIMIT ${param(scan)}) AS w ORDER BY id DESC`
    return [sql, values]
  }

  return {
    claimDeliveries: outbox.claimDeliveries,
    finishDelivery: outbox.finishDelivery,
    listDeliveries: outbox.listDeliveries,
    countDeliveries: outbox.countDeliveries,
    publish: outbox.publish,
    shared,

    async append (record) {
      ensureOpen()
      // The record and its outbox rows commit together (without webhooks, one autocommitted INSERT); with
      // synchronous_commit on (the default) it is on disk when this returns.
      if (options.outbox === undefined) return await insert(pool, record)
      return await inTransaction(pool, async client => await insert(client, record))
    },

    async update (id, changes) {
      ensureOpen()
      return await inTransaction(pool, async client => await change(client, id, changes, false) as AuditRecord)
    },

    async settlePending (id, changes) {
      ensureOpen()
      return await inTransaction(pool, async client => await change(client, id, changes, true))
    },

    async get (id) {
      ensureOpen()
      return await find(pool, id)
    },

    async list (filter, page, visible) {
      ensureOpen()
      checkLimit(page.limit)
      const values = filterValues(filter)
      let cursor = page.cursor === undefined ? undefined : decodeCursor(page.cursor)
      const shown: string[] = []
      let scanned = 0
      let lastScanned = ''
      let more = false
      while (scanned < scanLimit) {
        const chunk = Math.min(LIST_CHUNK_ROWS, scanLimit - scanned)
        const { rows } = await pool.query<WindowRow>(...windowQuery(values, cursor, chunk))
        for (const row of rows) {
          scanned++
          lastScanned = row.id
          if (!row.matches) continue
          if (visible !== undefined && !visible(row)) continue
          if (shown.length === page.limit) {
            more = true
            break
          }
          shown.push(row.id)
        }
        if (more || rows.length < chunk) break
        cursor = lastScanned
        ensureOpen()
      }
      const { rows } = await pool.query<ListedRow>(`SELECT ${listColumns} FROM audit_records WHERE id = ANY($1::text[]) ORDER BY id DESC`, [shown])
      const items = rows.map(row => ({ ...toRecord(row), manifestSaved: row.manifest_saved }))
      const cursors = items.map(item => encodeAuditCursor(item.id))
      if (more || (scanned === scanLimit && items.length === page.limit)) return { items, cursors, nextCursor: cursors.at(-1) as string }
      if (scanned === scanLimit) return { items, cursors, nextCursor: encodeAuditCursor(lastScanned) }
      return { items, cursors }
    },

    async pending () {
      ensureOpen()
      const { rows } = await pool.query<AuditRow>(`SELECT ${columns} FROM audit_records WHERE outcome = 'pending' ORDER BY id`)
      return rows.map(toRecord)
    },

    async claimRestore (deletionId, restore) {
      ensureOpen()
      return await inTransaction(pool, async (client): Promise<ClaimRestoreResult> => {
        // FOR UPDATE: a second claim waits here until the first commits, then sees its restoredBy.
        const deletion = await find(client, deletionId, true)
        if (deletion === undefined) return { ok: false, reason: 'unknown' }
        if (deletion.restoredBy !== undefined) return { ok: false, reason: 'already-restored', deletion }
        if (deletion.outcome !== 'deleted') return { ok: false, reason: 'not-a-deletion', deletion }
        const claimed = await insert(client, { ...restore, action: 'restore', outcome: 'pending', restoreOf: deletionId })
        await client.query('UPDATE audit_records SET restored_by = $1 WHERE id = $2', [claimed.id, deletionId])
        return { ok: true, deletion: await find(client, deletionId) as AuditRecord, restore: claimed }
      })
    },

    async releaseRestore (deletionId, restoreId) {
      ensureOpen()
      await pool.query('UPDATE audit_records SET restored_by = NULL WHERE id = $1 AND restored_by = $2', [deletionId, restoreId])
    },

    async saveCleanup (cleanup) {
      ensureOpen()
      await pool.query(INSERT_CLEANUP_POSTGRES, cleanupValues(cleanup))
    },

    async getCleanup (id) {
      ensureOpen()
      const { rows } = await pool.query<CleanupRow>(SELECT_CLEANUP_POSTGRES, [id])
      return rows.length === 0 ? undefined : toCleanupRecord(rows[0] as CleanupRow)
    },

    async prune (olderThan) {
      ensureOpen()
      await outbox.prune(olderThan)
      for (const sql of PRUNE_CLEANUPS_POSTGRES) await pool.query(sql, [olderThan.toISOString()])
      const result = await pool.query("DELETE FROM audit_records WHERE time < $1 AND outcome <> 'pending'", [olderThan.toISOString()])
      return result.rowCount as number
    },

    async claimCleanupRun (run) {
      ensureOpen()
      return (await pool.query(CLEANUP_RUN_SQL.postgres.claim, claimValues(run))).rowCount === 1
    },

    async updateCleanupRun (cleanupId, changes) {
      ensureOpen()
      const { rows } = await pool.query<{ state: CleanupRunState }>(CLEANUP_RUN_SQL.postgres.update, updateValues(cleanupId, changes))
      return rows[0]?.state
    },

    async getCleanupRun (cleanupId) {
      ensureOpen()
      const { rows } = await pool.query<CleanupRunRow>(CLEANUP_RUN_SQL.postgres.select, [cleanupId])
      return rows.length === 0 ? undefined : toCleanupRun(rows[0] as CleanupRunRow)
    },

    async interruptCleanupRuns (startedBefore = LATEST) {
      ensureOpen()
      const { rows } = await pool.query<{ cleanup_id: string }>(CLEANUP_RUN_SQL.postgres.interrupt, [now().toISOString(), startedBefore])
      return rows.map(row => row.cleanup_id)
    },

    async heartbeatCleanupRun (cleanupId) {
      ensureOpen()
      const { rows } = await pool.query<{ cancel_requested_at: string | null }>(CLEANUP_RUN_SQL.postgres.heartbeat, [cleanupId])
      const row = rows[0]
      return row === undefined ? undefined : { cancelRequested: row.cancel_requested_at !== null }
    },

    async requestCleanupCancel (cleanupId, requestedBy) {
      ensureOpen()
      return (await pool.query(CLEANUP_RUN_SQL.postgres.cancel, [now().toISOString(), requestedBy, cleanupId])).rowCount === 1
    },

    async interruptStaleCleanupRuns (staleAfterMs) {
      ensureOpen()
      const { rows } = await pool.query<{ cleanup_id: string }>(CLEANUP_RUN_SQL.postgres.interruptStale, [now().toISOString(), staleAfterMs])
      return rows.map(row => row.cleanup_id)
    },

    async check () {
      ensureOpen()
      try {
        await pool.query(`INSERT INTO audit_store_check (id, checked_at) VALUES (1, $1)
          ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at`, [now().toISOString()])
      } catch (error) {
        // /readyz shows why, in words safe to publish, also when the database goes away after start-up.
        throw new AuditStoreUnavailable(describePostgresError(error), error)
      }
    },

    async close () {
      if (closed) return
      closed = true
      await Promise.all([pool.end(), shared.close()])
    },

    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max: pool.options.max })
  } satisfies AuditStore
}

async function inTransaction<T> (pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const result = await work(client)
    await client.query('COMMIT')
    client.release()
    return result
  } catch (error) {
    // Closing the connection rolls its transaction back, also when the connection itself is what failed.
    client.release(true)
    throw error
  }
}

async function migrate (client: pg.PoolClient): Promise<void> {
  await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
  await client.query('CREATE TABLE IF NOT EXISTS audit_schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())')
  const { rows } = await client.query<{ version: number | null }>('SELECT max(version) AS version FROM audit_schema_migrations')
  const applied = (rows[0] as { version: number | null }).version ?? 0
  if (applied > migrations.length) {
    throw new Error(
      `audit database schema version ${applied} is newer than this gateway knows (${migrations.length}): run a newer gateway or restore a backup`
    )
  }
  for (const [index, migration] of migrations.entries()) {
    if (index < applied) continue
    await client.query(migration)
    await client.query('INSERT INTO audit_schema_migrations (version) VALUES ($1)', [index + 1])
  }
}
