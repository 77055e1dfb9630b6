import type Database from 'better-sqlite3'
import { checkLimit } from './listing.js'
import {
  decodeDeliveryCursor, deliveryPage, messageRows, outboxRows, settledStatus, toClaimed,
  type DeliveryRow, type DeliveryStatus, type OutboxRouter, type OutboxStore
} from './outbox.js'
import type { AuditRecord } from './types.js'

/** The outbox table: one row per event and endpoint, written in the transaction of the record it announces. */
export const outboxMigration = `CREATE TABLE audit_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    event_type TEXT NOT NULL,
    registry TEXT NOT NULL,
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_attempt_at TEXT,
    last_status INTEGER,
    last_error TEXT,
    finished_at TEXT,
    UNIQUE (event_id, endpoint)
  ) STRICT;
  CREATE INDEX audit_outbox_due ON audit_outbox (status, next_attempt_at, seq);`

const rowColumns = `seq, event_id, endpoint, event_type, registry, name, tag, body, status, attempts, created_at, next_attempt_at,
  last_attempt_at, last_status, last_error, finished_at`

export interface SqliteOutbox extends OutboxStore {
  /** Writes the rows `record` produces; called inside the transaction that writes the record. */
  enqueue: (record: AuditRecord, previous?: AuditRecord) => void
  /** Removes finished rows (delivered or failed) written before `olderThan`, with the records they announced. */
  prune: (olderThan: Date) => void
}

/**
 * The outbox half of the SQLite store. better-sqlite3 runs one statement at a time on one connection, and the
 * claim is an IMMEDIATE transaction, so two stores on one file (two processes) never claim the same row.
 */
export interface SqliteOutboxOptions {
  now: () => Date
  router?: OutboxRouter
  ensureOpen: () => void
  /** Rows one listing reads at most. */
  scanLimit: number
}

export function sqliteOutbox (db: Database.Database, { now, router, ensureOpen, scanLimit }: SqliteOutboxOptions): SqliteOutbox {
  const insert = db.prepare(`INSERT OR IGNORE INTO audit_outbox (event_id, endpoint, event_type, registry, name, tag, body, created_at, next_attempt_at)
    VALUES (@event_id, @endpoint, @event_type, @registry, @name, @tag, @body, @created_at, @next_attempt_at)`)
  const due = db.prepare(`SELECT ${rowColumns} FROM audit_outbox WHERE status = 'pending' AND next_attempt_at <= ?
    ORDER BY next_attempt_at, seq LIMIT ?`)
  const lease = db.prepare(`UPDATE audit_outbox SET next_attempt_at = ?, last_attempt_at = ?, attempts = attempts + 1
    WHERE seq = ? RETURNING ${rowColumns}`)
  const byKey = db.prepare(`SELECT ${rowColumns} FROM audit_outbox WHERE event_id = ? AND endpoint = ?`)
  const finish = db.prepare(`UPDATE audit_outbox SET status = @status, next_attempt_at = @next, last_status = @last_status,
    last_error = @last_error, finished_at = @finished_at WHERE seq = @seq AND status = 'pending'`)
  const page = db.prepare(`SELECT ${rowColumns.replace('body', "'' AS body")} FROM audit_outbox
    WHERE (@status IS NULL OR status = @status) AND seq < @before ORDER BY seq DESC LIMIT @window`)
  const deleteFinished = db.prepare("DELETE FROM audit_outbox WHERE created_at < ? AND status <> 'pending'")
  const publishAll = db.transaction((rows: Array<Record<string, string>>) => { for (const row of rows) insert.run(row) })
  const counts = db.prepare('SELECT endpoint, status, count(*) AS count FROM audit_outbox GROUP BY endpoint, status ORDER BY endpoint, status')

  const claim = db.transaction((limit: number, leaseMs: number) => {
    const clock = now()
    const rows = due.all(clock.toISOString(), limit) as DeliveryRow[]
    const until = new Date(clock.getTime() + leaseMs).toISOString()
    return rows.map(row => toClaimed(lease.get(until, clock.toISOString(), row.seq) as DeliveryRow))
  })

  const settle = db.transaction((eventId: string, endpoint: string, outcome: Parameters<OutboxStore['finishDelivery']>[2],
    claimed: number | undefined): DeliveryStatus | 'superseded' => {
    const row = byKey.get(eventId, endpoint) as DeliveryRow | undefined
    if (row === undefined) throw new Error(`no outbox row for event ${eventId} and endpoint ${endpoint}`)
    if (claimed !== undefined && row.attempts !== claimed) return 'superseded'
    if (row.status !== 'pending') return row.status
    const status = settledStatus(outcome, row.created_at)
    finish.run({
      seq: row.seq,
      status,
      next: !outcome.delivered && status === 'pending' ? (outcome.retryAt as Date).toISOString() : row.next_attempt_at,
      last_status: outcome.status ?? null,
      last_error: outcome.delivered ? null : outcome.error,
      finished_at: status === 'pending' ? null : now().toISOString()
    })
    return status
  })

  return {
    enqueue (record, previous) {
      // An update that leaves the outcome as it was announces nothing new.
      if (previous !== undefined && previous.outcome === record.outcome) return
      for (const row of outboxRows(router, record, now())) insert.run(row)
    },
    prune (olderThan) {
      deleteFinished.run(olderThan.toISOString())
    },
    async claimDeliveries (limit, leaseMs) {
      ensureOpen()
      return claim.immediate(limit, leaseMs)
    },
    async finishDelivery (eventId, endpoint, outcome, claimed) {
      ensureOpen()
      return settle.immediate(eventId, endpoint, outcome, claimed)
    },
    async listDeliveries (filter, { limit, cursor }, visible) {
      ensureOpen()
      checkLimit(limit)
      const before = cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeDeliveryCursor(cursor)
      const rows = page.all({ status: filter.status ?? null, before, window: scanLimit }) as DeliveryRow[]
      return deliveryPage(rows, limit, scanLimit, visible)
    },
    async countDeliveries () {
      ensureOpen()
      return counts.all() as Array<{ endpoint: string, status: DeliveryStatus, count: number }>
    },
    async publish (image, messages) {
      ensureOpen()
      publishAll(messageRows(image, messages, now()))
    }
  }
}
