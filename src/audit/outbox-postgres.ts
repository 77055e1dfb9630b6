import type pg from 'pg'
import { checkLimit } from './listing.js'
import {
  decodeDeliveryCursor, deliveryPage, messageRows, outboxRows, settledStatus, toClaimed,
  type DeliveryRow, type DeliveryStatus, type OutboxRouter, type OutboxStore
} from './outbox.js'
import type { AuditRecord } from './types.js'

/** The outbox table: one row per event and endpoint, written in the transaction of the record it announces. */
export const outboxMigration = `CREATE TABLE audit_outbox (
    seq BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    event_type TEXT NOT NULL,
    registry TEXT NOT NULL,
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT COLLATE "C" NOT NULL,
    next_attempt_at TEXT COLLATE "C" NOT NULL,
    last_attempt_at TEXT,
    last_status INTEGER,
    last_error TEXT,
    finished_at TEXT,
    UNIQUE (event_id, endpoint)
  );
  CREATE INDEX audit_outbox_due ON audit_outbox (status, next_attempt_at, seq);`

const rowColumns = `seq::float8 AS seq, event_id, endpoint, event_type, registry, name, tag, body, status, attempts, created_at,
  next_attempt_at, last_attempt_at, last_status, last_error, finished_at`

type Queryable = Pick<pg.PoolClient, 'query'>

async function insertRows (db: Queryable, rows: ReadonlyArray<Record<string, string>>): Promise<void> {
  for (const row of rows) {
    await db.query(`INSERT INTO audit_outbox (event_id, endpoint, event_type, registry, name, tag, body, created_at, next_attempt_at)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id, endpoint) DO NOTHING`,
    [row.event_id, row.endpoint, row.event_type, row.registry, row.name, row.tag, row.body, row.created_at, row.next_attempt_at])
  }
}

export interface PostgresOutboxOptions {
  now: () => Date
  router?: OutboxRouter
  ensureOpen: () => void
  /** Rows one listing reads at most. */
  scanLimit: number
  /** Runs work in one transaction on one connection. */
  inTransaction: <T>(work: (client: pg.PoolClient) => Promise<T>) => Promise<T>
}

export interface PostgresOutbox extends OutboxStore {
  /** Writes the rows `record` produces, on the connection whose transaction writes the record. */
  enqueue: (db: Queryable, record: AuditRecord, previous?: AuditRecord) => Promise<void>
  /** Removes finished rows (delivered or failed) written before `olderThan`, with the records they announced. */
  prune: (olderThan: Date) => Promise<void>
}

/**
 * The outbox half of the PostgreSQL store. Claims lock their rows with FOR UPDATE SKIP LOCKED, so replicas
 * claiming at once each get different rows and never wait on each other.
 */
export function postgresOutbox (pool: pg.Pool, { now, router, ensureOpen, scanLimit, inTransaction }: PostgresOutboxOptions): PostgresOutbox {
  return {
    async enqueue (db, record, previous) {
      // An update that leaves the outcome as it was announces nothing new.
      if (previous !== undefined && previous.outcome === record.outcome) return
      await insertRows(db, outboxRows(router, record, now()))
    },

    async publish (image, messages) {
      ensureOpen()
      await inTransaction(async client => { await insertRows(client, messageRows(image, messages, now())) })
    },

    async prune (olderThan) {
      await pool.query("DELETE FROM audit_outbox WHERE created_at < $1 AND status <> 'pending'", [olderThan.toISOString()])
    },

    async claimDeliveries (limit, leaseMs) {
      ensureOpen()
      const clock = now()
      const { rows } = await pool.query<DeliveryRow>(`UPDATE audit_outbox SET next_attempt_at = $3, last_attempt_at = $1, attempts = attempts + 1
        WHERE seq IN (SELECT seq FROM audit_outbox WHERE status = 'pending' AND next_attempt_at <= $1
          ORDER BY next_attempt_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED)
        RETURNING ${rowColumns}`, [clock.toISOString(), limit, new Date(clock.getTime() + leaseMs).toISOString()])
      return rows.sort((a, b) => Number(a.seq) - Number(b.seq)).map(toClaimed)
    },

    async finishDelivery (eventId, endpoint, outcome, claimed) {
      ensureOpen()
      return await inTransaction(async (client): Promise<DeliveryStatus | 'superseded'> => {
        const { rows } = await client.query<DeliveryRow>(`SELECT ${rowColumns} FROM audit_outbox WHERE event_id = $1 AND endpoint = $2 FOR UPDATE`,
          [eventId, endpoint])
        const row = rows[0]
        if (row === undefined) throw new Error(`no outbox row for event ${eventId} and endpoint ${endpoint}`)
        if (claimed !== undefined && row.attempts !== claimed) return 'superseded'
        if (row.status !== 'pending') return row.status
        const status = settledStatus(outcome, row.created_at)
        await client.query(`UPDATE audit_outbox SET status = $2, next_attempt_at = $3, last_status = $4, last_error = $5, finished_at = $6
          WHERE seq = $1`, [
          row.seq, status,
          !outcome.delivered && status === 'pending' ? (outcome.retryAt as Date).toISOString() : row.next_attempt_at,
          outcome.status ?? null,
          outcome.delivered ? null : outcome.error,
          status === 'pending' ? null : now().toISOString()
        ])
        return status
      })
    },

    async listDeliveries (filter, { limit, cursor }, visible) {
      ensureOpen()
      checkLimit(limit)
      const before = cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeDeliveryCursor(cursor)
      const { rows } = await pool.query<DeliveryRow>(`SELECT ${rowColumns.replace('body', "'' AS body")} FROM audit_outbox
        WHERE ($1::text IS NULL OR status = $1) AND seq < $2 ORDER BY seq DESC LIMIT $3`, [filter.status ?? null, before, scanLimit])
      return deliveryPage(rows, limit, scanLimit, visible)
    },

    async countDeliveries () {
      ensureOpen()
      const { rows } = await pool.query<{ endpoint: string, status: DeliveryStatus, count: number }>(
        'SELECT endpoint, status, count(*)::int AS count FROM audit_outbox GROUP BY endpoint, status ORDER BY endpoint, status')
      return rows
    }
  }
}
