import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import {
  cleanupValues, INSERT_CLEANUP_SQLITE, PRUNE_CLEANUPS_SQLITE, SELECT_CLEANUP_SQLITE, SQLITE_CLEANUPS_MIGRATION, toCleanupRecord, type CleanupRow
} from './cleanup-sql.js'
import {
  CLEANUP_RUN_SQL, LATEST, SQLITE_CLEANUP_RUN_LEASES_MIGRATION, SQLITE_CLEANUP_RUNS_MIGRATION, sqliteClaimValues, toCleanupRun, updateValues, type CleanupRunRow
} from './cleanup-run-sql.js'
import { newAuditId } from './id.js'
import { outboxMigration, sqliteOutbox } from './outbox-sqlite.js'
import type { OutboxRouter } from './outbox.js'
import {
  checkLimit, decodeCursor, definedChanges, encodeAuditCursor, filterValues, LIST_CHUNK_ROWS, toIsoTime, windowIndexes, withOptionalColumns
} from './listing.js'
import { sharedStateMigration, sqliteSharedState } from './shared-state-sqlite.js'
import type {
  AuditFilter, AuditRecord, AuditRecordChanges, AuditStore, ClaimRestoreResult, CleanupRunState, NewAuditRecord
} from './types.js'

/**
 * Applied in order; the database's `user_version` counts how many ran. Never edit one that has shipped: append.
 * Enumerations (outcome, action, transport) have no CHECK constraint because SQLite can only change a constraint
 * by rebuilding the table, and new outcomes are expected.
 */
const migrations: readonly string[] = [
  `CREATE TABLE audit_records (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    request_id TEXT NOT NULL,
    transport TEXT NOT NULL,
    subject TEXT NOT NULL,
    groups TEXT NOT NULL,
    action TEXT NOT NULL,
    registry TEXT NOT NULL,
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT,
    media_type TEXT,
    removed_tags TEXT NOT NULL,
    decision TEXT NOT NULL,
    outcome TEXT NOT NULL,
    upstream_status INTEGER,
    error_code TEXT,
    error_detail TEXT,
    duration_ms REAL,
    manifest BLOB,
    restored_by TEXT,
    restore_of TEXT
  ) STRICT;
  CREATE INDEX audit_records_by_subject ON audit_records (subject, id);
  CREATE INDEX audit_records_by_image ON audit_records (registry, name, tag, id);
  CREATE INDEX audit_records_by_name ON audit_records (name, tag, id);
  CREATE INDEX audit_records_by_outcome ON audit_records (outcome, id);
  CREATE INDEX audit_records_by_time ON audit_records (time);
  CREATE TABLE audit_store_check (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
  ) STRICT;`,
  // The caller's X-Request-Id, kept apart from request_id, which is always the gateway's own.
  'ALTER TABLE audit_records ADD COLUMN client_request_id TEXT;',
  // Deletions say how the tag was removed: the mode asked, the action taken (untag or digest) and the strategy.
  `ALTER TABLE audit_records ADD COLUMN mode TEXT;
  ALTER TABLE audit_records ADD COLUMN delete_action TEXT;
  ALTER TABLE audit_records ADD COLUMN strategy TEXT;`,
  // A deletion a rule required approval for names its approver beside its subject.
  'ALTER TABLE audit_records ADD COLUMN approved_by TEXT;',
  // Webhook deliveries, written in the transaction of the record they announce (src/audit/outbox-sqlite.ts).
  outboxMigration,
  // Issue 14: what replicas share (plans, reconcile claims): shared-state-sqlite.ts.
  sharedStateMigration,
  // Cleanup plans (issue 15), kept whole until executed.
  SQLITE_CLEANUPS_MIGRATION,
  // Cleanup runs (issue 15): each deletion names its cleanup; a run's state and counts.
  SQLITE_CLEANUP_RUNS_MIGRATION,
  // Cleanup runs across replicas: the owner's heartbeat and a cancel asked from anywhere (cleanup-run-sql.ts).
  SQLITE_CLEANUP_RUN_LEASES_MIGRATION,
  // `GET /audit?name=` alone: the repository's records in id order (the (name, tag, id) index needs the tag too).
  'CREATE INDEX audit_records_by_name_id ON audit_records (name, id);'
]

export const auditSchemaVersion = migrations.length

/** Exported with toRecord for `audit migrate`, which reads a whole file in id order. */
export const columns = `id, time, request_id, transport, subject, groups, action, registry, name, tag, digest, media_type,
  removed_tags, decision, outcome, upstream_status, error_code, error_detail, duration_ms, manifest, restored_by, restore_of,
  client_request_id, mode, delete_action, strategy, approved_by, cleanup_id`

/** What a listing reads: everything but the saved manifest bytes, which only a restore needs. */
const listColumns = `id, time, request_id, transport, subject, groups, action, registry, name, tag, digest, media_type,
  removed_tags, decision, outcome, upstream_status, error_code, error_detail, duration_ms, NULL AS manifest,
  manifest IS NOT NULL AS manifest_saved, restored_by, restore_of, client_request_id, mode, delete_action, strategy, approved_by, cleanup_id`

export interface AuditRow {
  id: string
  time: string
  request_id: string
  transport: AuditRecord['transport']
  subject: string
  groups: string
  action: AuditRecord['action']
  registry: string
  name: string
  tag: string
  digest: string | null
  media_type: string | null
  removed_tags: string
  decision: string
  outcome: AuditRecord['outcome']
  upstream_status: number | null
  error_code: string | null
  error_detail: string | null
  duration_ms: number | null
  manifest: Buffer | null
  restored_by: string | null
  restore_of: string | null
  client_request_id: string | null
  mode: AuditRecord['mode'] | null
  delete_action: AuditRecord['deleteAction'] | null
  strategy: AuditRecord['strategy'] | null
  approved_by: string | null
  cleanup_id: string | null
}

type ListedRow = AuditRow & { manifest_saved: number }
interface WindowRow { id: string, registry: string, name: string, tag: string, matches: number }
type RowParams = { [K in keyof AuditRow]: AuditRow[K] | undefined }

function toParams (record: AuditRecord): RowParams {
  return {
    id: record.id,
    time: record.time,
    request_id: record.requestId,
    transport: record.transport,
    subject: record.subject,
    groups: JSON.stringify(record.groups),
    action: record.action,
    registry: record.registry,
    name: record.name,
    tag: record.tag,
    digest: record.digest,
    media_type: record.mediaType,
    removed_tags: JSON.stringify(record.removedTags),
    decision: JSON.stringify({ allow: record.decision.allow, reason: record.decision.reason }),
    outcome: record.outcome,
    upstream_status: record.upstreamStatus,
    error_code: record.errorCode,
    error_detail: record.errorDetail,
    duration_ms: record.durationMs,
    manifest: record.manifest,
    restored_by: record.restoredBy,
    restore_of: record.restoreOf,
    client_request_id: record.clientRequestId,
    mode: record.mode,
    delete_action: record.deleteAction,
    strategy: record.strategy,
    approved_by: record.approvedBy,
    cleanup_id: record.cleanupId
  }
}

export function toRecord (row: AuditRow): AuditRecord {
  const record: AuditRecord = {
    id: row.id,
    time: row.time,
    requestId: row.request_id,
    transport: row.transport,
    subject: row.subject,
    groups: JSON.parse(row.groups) as string[],
    action: row.action,
    registry: row.registry,
    name: row.name,
    tag: row.tag,
    removedTags: JSON.parse(row.removed_tags) as string[],
    decision: JSON.parse(row.decision) as AuditRecord['decision'],
    outcome: row.outcome
  }
  return withOptionalColumns(record, row)
}

/** SQL fragment for each filter field, in the fixed order that keeps the cache of prepared lists small. */
const filterConditions: ReadonlyArray<[keyof AuditFilter, string]> = [
  ['subject', 'subject = @subject'],
  ['registry', 'registry = @registry'],
  ['name', 'name = @name'],
  ['tag', 'tag = @tag'],
  ['outcome', 'outcome = @outcome'],
  ['action', 'action = @action'],
  ['since', 'time >= @since'],
  ['until', 'time < @until'],
  ['cleanupId', 'cleanup_id = @cleanupId']
]

export interface SqliteAuditStoreOptions {
  now?: () => Date
  /** Rows one list call reads at most (1000 by default); a page that hits it ends early with a cursor. */
  listScanLimit?: number
  /** Which webhook deliveries a record produces; none without it. */
  outbox?: OutboxRouter
}

export function openSqliteAuditStore (path: string, options: SqliteAuditStoreOptions = {}): AuditStore {
  const now = options.now ?? (() => new Date())
  const scanLimit = options.listScanLimit ?? 1000
  if (path !== ':memory:' && path !== '') mkdirSync(dirname(path), { recursive: true })
  // Waits this long for another process (the CLI, a second gateway on the same file) to finish its write.
  const db = new Database(path, { timeout: 5000 })
  let statements: ReturnType<typeof prepareStatements>
  let outbox: ReturnType<typeof sqliteOutbox>
  try {
    db.pragma('journal_mode = WAL')
    // FULL, not NORMAL: with WAL, NORMAL skips the fsync at commit, so an OS crash or power cut can drop the last
    // commits, among them the `pending` record and manifest bytes written before a registry DELETE that did happen.
    // One fsync per audit write costs little at the rate people delete images.
    db.pragma('synchronous = FULL')
    migrate(db)
    statements = prepareStatements(db)
    outbox = sqliteOutbox(db, { now, router: options.outbox, ensureOpen: () => { ensureOpen() }, scanLimit })
  } catch (error) {
    db.close()
    throw error
  }

  const {
    insertRow, updateRow, selectById, selectPending, selectListed, setRestoredBy, clearRestoredBy, deleteOlderThan, recordCheck, insertCleanup, selectCleanup,
    pruneCleanups, cleanupRuns
  } = statements
  const listStatements = new Map<string, Database.Statement>()

  let closed = false
  function ensureOpen (): void {
    if (closed) throw new Error('audit store is closed')
  }
  const shared = sqliteSharedState(db, ensureOpen)

  function find (id: string): AuditRecord | undefined {
    const row = selectById.get(id) as AuditRow | undefined
    return row === undefined ? undefined : toRecord(row)
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

  function insert (record: NewAuditRecord): AuditRecord {
    const stored = prepareRecord(record)
    insertRow.run(toParams(stored))
    return find(stored.id) as AuditRecord
  }

  // Group commit: appends made in the same turn of the event loop share one transaction and so one fsync, and
  // each caller is answered only after that commit. Under load this turns one sync per denial into one per batch.
  let queued: Array<{ record: AuditRecord, resolve: (stored: AuditRecord) => void, reject: (error: unknown) => void }> = []
  const insertBatch = db.transaction((records: AuditRecord[]) => {
    for (const record of records) {
      insertRow.run(toParams(record))
      outbox.enqueue(record)
    }
  })
  function flushAppends (): void {
    // close() may already have flushed this batch.
    if (queued.length === 0) return
    const batch = queued
    queued = []
    try {
      insertBatch(batch.map(entry => entry.record))
    } catch (error) {
      for (const entry of batch) entry.reject(error)
      return
    }
    for (const entry of batch) entry.resolve(find(entry.record.id) as AuditRecord)
  }

  // IMMEDIATE takes the write lock before the first read, so a check-then-write cannot interleave with another
  // connection's; a DEFERRED transaction would fail with SQLITE_BUSY instead of waiting.
  const updateTransaction = db.transaction((id: string, changes: AuditRecordChanges, onlyPending = false): AuditRecord | undefined => {
    const current = find(id)
    if (current === undefined) throw new Error(`audit record ${id} does not exist`)
    if (onlyPending && current.outcome !== 'pending') return undefined
    updateRow.run(toParams({ ...current, ...definedChanges(changes) }))
    const updated = find(id) as AuditRecord
    outbox.enqueue(updated, current)
    return updated
  })

  const claimTransaction = db.transaction((deletionId: string, restore: NewAuditRecord): ClaimRestoreResult => {
    const deletion = find(deletionId)
    if (deletion === undefined) return { ok: false, reason: 'unknown' }
    // Checked before the outcome so that a deletion already undone answers ALREADY_RESTORED even if its outcome
    // was changed afterwards.
    if (deletion.restoredBy !== undefined) return { ok: false, reason: 'already-restored', deletion }
    if (deletion.outcome !== 'deleted') return { ok: false, reason: 'not-a-deletion', deletion }
    const claimed = insert({ ...restore, action: 'restore', outcome: 'pending', restoreOf: deletionId })
    setRestoredBy.run(claimed.id, deletionId)
    return { ok: true, deletion: find(deletionId) as AuditRecord, restore: claimed }
  })

  /** The scan window: only what filtering and visibility need, so a thousand rows cost little to read. */
  function windowStatement (filter: AuditFilter, withCursor: boolean): Database.Statement {
    const given = filterConditions.filter(([key]) => filter[key] !== undefined)
    const driving = windowIndexes.find(keys => keys.every(key => filter[key] !== undefined)) ?? []
    const windowConditions = given.filter(([key]) => driving.includes(key)).map(([, sql]) => sql)
    if (withCursor) windowConditions.push('id < @cursor')
    const windowWhere = windowConditions.length === 0 ? '' : `WHERE ${windowConditions.join(' AND ')}`
    const matches = given.length === 0 ? '1' : given.map(([, sql]) => sql).join(' AND ')
    // The window is at most @scan rows of one index in id order; the other filters only mark rows inside it, so
    // a filter nothing matches cannot make SQLite step through the whole table.
    const sql = `SELECT id, registry, name, tag, (${matches}) AS matches FROM audit_records
      WHERE id IN (SELECT id FROM audit_records ${windowWhere} ORDER BY id DESC LIMIT @scan) ORDER BY id DESC`
    let statement = listStatements.get(sql)
    if (statement === undefined) {
      statement = db.prepare(sql)
      listStatements.set(sql, statement)
    }
    return statement
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
      const prepared = prepareRecord(record)
      return await new Promise<AuditRecord>((resolve, reject) => {
        queued.push({ record: prepared, resolve, reject })
        if (queued.length === 1) setImmediate(flushAppends)
      })
    },

    async update (id, changes) {
      ensureOpen()
      return updateTransaction.immediate(id, changes) as AuditRecord
    },

    async settlePending (id, changes) {
      ensureOpen()
      return updateTransaction.immediate(id, changes, true)
    },

    async get (id) {
      ensureOpen()
      return find(id)
    },

    async list (filter, page, visible) {
      ensureOpen()
      checkLimit(page.limit)
      const params: Record<string, string | number> = filterValues(filter)
      if (page.cursor !== undefined) params.cursor = decodeCursor(page.cursor)
      const shown: string[] = []
      let scanned = 0
      let lastScanned = ''
      let more = false
      // The window is read a chunk at a time with a turn of the event loop in between, so ten callers paging
      // through a large trail at once never hold up /healthz or anyone else's request for more than one chunk.
      while (scanned < scanLimit) {
        const chunk = Math.min(LIST_CHUNK_ROWS, scanLimit - scanned)
        const rows = windowStatement(filter, params.cursor !== undefined).all({ ...params, scan: chunk }) as WindowRow[]
        for (const row of rows) {
          scanned++
          lastScanned = row.id
          if (row.matches === 0) continue
          if (visible !== undefined && !visible(row)) continue
          if (shown.length === page.limit) {
            more = true
            break
          }
          shown.push(row.id)
        }
        if (more || rows.length < chunk) break
        params.cursor = lastScanned
        await new Promise(resolve => setImmediate(resolve))
        ensureOpen()
      }
      const items = (selectListed.all(JSON.stringify(shown)) as ListedRow[])
        .map(row => ({ ...toRecord(row), manifestSaved: row.manifest_saved === 1 }))
      const cursors = items.map(item => encodeAuditCursor(item.id))
      if (more || (scanned === scanLimit && items.length === page.limit)) return { items, cursors, nextCursor: cursors.at(-1) as string }
      // The window ended before the page filled: older rows may still match, so the caller continues from here.
      if (scanned === scanLimit) return { items, cursors, nextCursor: encodeAuditCursor(lastScanned) }
      return { items, cursors }
    },

    async pending () {
      ensureOpen()
      return (selectPending.all() as AuditRow[]).map(toRecord)
    },

    async claimRestore (deletionId, restore) {
      ensureOpen()
      return claimTransaction.immediate(deletionId, restore)
    },

    async releaseRestore (deletionId, restoreId) {
      ensureOpen()
      clearRestoredBy.run(deletionId, restoreId)
    },

    async saveCleanup (cleanup) {
      ensureOpen()
      insertCleanup.run(...cleanupValues(cleanup))
    },

    async getCleanup (id) {
      ensureOpen()
      const row = selectCleanup.get(id) as CleanupRow | undefined
      return row === undefined ? undefined : toCleanupRecord(row)
    },

    async prune (olderThan) {
      ensureOpen()
      outbox.prune(olderThan)
      for (const statement of pruneCleanups) statement.run(olderThan.toISOString())
      return deleteOlderThan.run(olderThan.toISOString()).changes
    },

    async claimCleanupRun (run) {
      ensureOpen()
      return cleanupRuns.claim.run(...sqliteClaimValues(run, now())).changes === 1
    },

    async updateCleanupRun (cleanupId, changes) {
      ensureOpen()
      return (cleanupRuns.update.get(...updateValues(cleanupId, changes)) as { state: CleanupRunState } | undefined)?.state
    },

    async getCleanupRun (cleanupId) {
      ensureOpen()
      const row = cleanupRuns.select.get(cleanupId) as CleanupRunRow | undefined
      return row === undefined ? undefined : toCleanupRun(row)
    },

    async interruptCleanupRuns (startedBefore = LATEST) {
      ensureOpen()
      return (cleanupRuns.interrupt.all(now().toISOString(), startedBefore) as Array<{ cleanup_id: string }>).map(row => row.cleanup_id)
    },

    async heartbeatCleanupRun (cleanupId) {
      ensureOpen()
      const row = cleanupRuns.heartbeat.get(now().toISOString(), cleanupId) as { cancel_requested_at: string | null } | undefined
      return row === undefined ? undefined : { cancelRequested: row.cancel_requested_at !== null }
    },

    async requestCleanupCancel (cleanupId, requestedBy) {
      ensureOpen()
      return cleanupRuns.cancel.all(now().toISOString(), requestedBy, cleanupId).length === 1
    },

    async interruptStaleCleanupRuns (staleAfterMs) {
      ensureOpen()
      const clock = now()
      const cutoff = new Date(clock.getTime() - staleAfterMs).toISOString()
      return (cleanupRuns.interruptStale.all(clock.toISOString(), cutoff) as Array<{ cleanup_id: string }>).map(row => row.cleanup_id)
    },

    async check () {
      ensureOpen()
      // A real committed write, fsync included, is what a full disk or a read-only volume would make fail.
      recordCheck.run(now().toISOString())
    },

    async close () {
      if (closed) return
      closed = true
      if (queued.length > 0) flushAppends()
      db.close()
    }
  } satisfies AuditStore
}

/** Brings a SQLite audit database's schema up to date (also `audit migrate`, on an in-memory copy of an older source). */
export function migrate (db: Database.Database): void {
  // IMMEDIATE, so two processes opening a new file at once do not both run the same migration.
  db.transaction(() => {
    const applied = db.pragma('user_version', { simple: true }) as number
    if (applied > migrations.length) {
      throw new Error(
        `audit database schema version ${applied} is newer than this gateway knows (${migrations.length}): run a newer gateway or restore a backup`
      )
    }
    if (applied === migrations.length) return
    for (const migration of migrations.slice(applied)) db.exec(migration)
    db.pragma(`user_version = ${migrations.length}`)
  }).immediate()
}

/** Prepared once the schema is there: SQLite checks every table and column a statement names. */
function prepareStatements (db: Database.Database) {
  return {
    insertRow: db.prepare(`INSERT INTO audit_records (${columns}) VALUES (@id, @time, @request_id, @transport,
      @subject, @groups, @action, @registry, @name, @tag, @digest, @media_type, @removed_tags, @decision, @outcome,
      @upstream_status, @error_code, @error_detail, @duration_ms, @manifest, @restored_by, @restore_of, @client_request_id,
      @mode, @delete_action, @strategy, @approved_by, @cleanup_id)`),
    updateRow: db.prepare(`UPDATE audit_records SET outcome = @outcome, digest = @digest,
      media_type = @media_type, removed_tags = @removed_tags, upstream_status = @upstream_status,
      error_code = @error_code, error_detail = @error_detail, duration_ms = @duration_ms, manifest = @manifest,
      restored_by = @restored_by, delete_action = @delete_action, strategy = @strategy WHERE id = @id`),
    selectById: db.prepare(`SELECT ${columns} FROM audit_records WHERE id = ?`),
    selectPending: db.prepare(`SELECT ${columns} FROM audit_records WHERE outcome = 'pending' ORDER BY id`),
    // A page's rows, by the ids its window chose (a JSON array), without the manifest bytes.
    selectListed: db.prepare(`SELECT ${listColumns} FROM audit_records WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id DESC`),
    setRestoredBy: db.prepare('UPDATE audit_records SET restored_by = ? WHERE id = ?'),
    clearRestoredBy: db.prepare('UPDATE audit_records SET restored_by = NULL WHERE id = ? AND restored_by = ?'),
    deleteOlderThan: db.prepare("DELETE FROM audit_records WHERE time < ? AND outcome <> 'pending'"),
    recordCheck: db.prepare(`INSERT INTO audit_store_check (id, checked_at) VALUES (1, ?)
      ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at`),
    insertCleanup: db.prepare(INSERT_CLEANUP_SQLITE),
    selectCleanup: db.prepare(SELECT_CLEANUP_SQLITE),
    pruneCleanups: PRUNE_CLEANUPS_SQLITE.map(sql => db.prepare(sql)),
    cleanupRuns: {
      claim: db.prepare(CLEANUP_RUN_SQL.sqlite.claim),
      select: db.prepare(CLEANUP_RUN_SQL.sqlite.select),
      update: db.prepare(CLEANUP_RUN_SQL.sqlite.update),
      interrupt: db.prepare(CLEANUP_RUN_SQL.sqlite.interrupt),
      heartbeat: db.prepare(CLEANUP_RUN_SQL.sqlite.heartbeat),
      cancel: db.prepare(CLEANUP_RUN_SQL.sqlite.cancel),
      interruptStale: db.prepare(CLEANUP_RUN_SQL.sqlite.interruptStale)
    }
  }
}
