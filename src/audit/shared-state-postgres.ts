/**
 * The shared state of several replicas on PostgreSQL (see shared-state.ts). Its tables come with the audit
 * store's migrations (sharedStateMigration below is one entry of them).
 *
 * The lock is a transaction-scoped advisory lock (pg_advisory_xact_lock) on a connection of a pool of its own,
 * held for as long as the work runs. Chosen over a claims table with an expiry because the database itself ends
 * it when the holder goes away: a replica killed mid-delete closes its connection and the lock is free at once,
 * with no expiry to tune against a slow registry (too short lets a second replica in while the first still acts,
 * too long blocks the repository after a crash). Transaction-scoped, not session-level, so a connection can never
 * go back to its pool still holding a lock (pitfall 21). A pool of its own, because a lock holder's work writes
 * audit records: sharing the audit pool would let lock holders take every connection and wait forever for one.
 */
import { createHash } from 'node:crypto'
import pg from 'pg'
import type { HeldLock } from '../registry/lock-guard.js'
import { auditUnavailable, type RateWindow, type SharedState, type StoredPlan, type TakenPlan } from './shared-state.js'

export const sharedStateMigration = `ALTER TABLE audit_records ADD COLUMN reconcile_owner TEXT, ADD COLUMN reconcile_until BIGINT;
  CREATE TABLE gateway_plans (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    payload JSONB NOT NULL,
    requester TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
  );
  CREATE INDEX gateway_plans_by_expiry ON gateway_plans (kind, expires_ms);
  CREATE TABLE gateway_rate_limits (
    key TEXT PRIMARY KEY,
    window_ends TIMESTAMPTZ NOT NULL,
    hits INTEGER NOT NULL
  );`

export interface PostgresSharedStateOptions {
  /** How the audit pool connects (URL, TLS, application name, connect timeout): the lock pool connects the same way. */
  connection: pg.PoolConfig
  /** Connections the lock pool keeps at most: repositories locked at once by this replica. */
  poolSize: number
  /** How long a replica waits for another's lock before answering AUDIT_UNAVAILABLE. */
  lockWaitMs: number
  /** Rate-limit windows past their end are deleted once every this many hits. */
  rateSweepEvery?: number
}

/** What `locked` answers when it did not wait and another held the key. */
const NOT_HELD = Symbol('not held')

/** A 64-bit advisory lock id for a key: the first 8 bytes of its SHA-256, as PostgreSQL's signed bigint. */
export function advisoryLockId (key: string): string {
  return createHash('sha256').update(`registry-delete-gateway\n${key}`).digest().readBigInt64BE(0).toString()
}

interface PlanRow { kind: string, id: string, payload: unknown, requester: string, expires_ms: string }

const toPlan = (row: PlanRow): StoredPlan => ({ kind: row.kind, id: row.id, payload: row.payload, requester: row.requester, expiresMs: Number(row.expires_ms) })

export function postgresSharedState (pool: pg.Pool, options: PostgresSharedStateOptions): Required<SharedState> & { close: () => Promise<void> } {
  // Named apart from the audit pool, so pg_stat_activity (and the pool gauges' check against it) tells them apart.
  const lockPool = new pg.Pool({
    ...options.connection,
    application_name: `${options.connection.application_name ?? 'registry-delete-gateway'} lock`,
    max: options.poolSize,
    lock_timeout: options.lockWaitMs
  })
  // As for the audit pool: a dropped idle connection is replaced, never a crash.
  lockPool.on('error', () => {})
  const sweepEvery = options.rateSweepEvery ?? 1000
  let hits = 0

  /** Runs `work` holding `key`; without `wait`, answers NOT_HELD at once when another holds it. */
  async function locked<T> (key: string, work: (held: HeldLock) => Promise<T>, wait: boolean): Promise<T | typeof NOT_HELD> {
    const client = await lockPool.connect()
    // A connection that breaks while checked out (server restart, failover, a terminated backend) emits 'error'
    // and 'end' on the client; unheard, 'error' would crash the process. The server has freed the lock by then,
    // so the holder is told through the signal and refused at its next confirm().
    const lost = new AbortController()
    const loseLock = (cause: unknown): void => { if (!lost.signal.aborted) lost.abort(cause) }
    const onEnd = (): void => { loseLock(new Error('the lock connection ended')) }
    client.on('error', loseLock)
    client.on('end', onEnd)
    const detach = (): void => {
      client.off('error', loseLock)
      client.off('end', onEnd)
    }
    try {
      await client.query('BEGIN')
      // A role or database default must not end the lock's transaction while a slow registry keeps it idle.
      await client.query('SET LOCAL idle_in_transaction_session_timeout = 0')
      await client.query('SET LOCAL statement_timeout = 0')
      if (wait) {
        await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [advisoryLockId(key)])
      } else {
        const { rows } = await client.query<{ held: boolean }>('SELECT pg_try_advisory_xact_lock($1::bigint) AS held', [advisoryLockId(key)])
        if (rows[0]?.held !== true) {
          await client.query('COMMIT')
          detach()
          client.release()
          return NOT_HELD
        }
      }
    } catch (error) {
      detach()
      client.release(true)
      throw error
    }
    let released = false
    const held: HeldLock = {
      signal: lost.signal,
      async confirm () {
        // Work that outlives its lock is no longer guarded by it; the client is back in the pool.
        if (released) return
        if (!lost.signal.aborted) await client.query('SELECT 1').catch(loseLock)
        if (lost.signal.aborted) throw auditUnavailable(lost.signal.reason, 'the lock shared by the gateway replicas was lost mid-work')
      }
    }
    try {
      return await work(held)
    } finally {
      released = true
      // Ending the transaction frees the lock; if the connection broke meanwhile, the server already freed it.
      const done = await client.query('COMMIT').then(() => !lost.signal.aborted, (error: unknown) => { loseLock(error); return false })
      detach()
      client.release(!done)
    }
  }

  return {
    async exclusive<T> (key: string, work: (held: HeldLock) => Promise<T>): Promise<T> {
      return await locked(key, work, true) as T
    },

    async tryExclusive (key, work) {
      const outcome = await locked(key, work, false)
      return outcome === NOT_HELD ? { held: false } : { held: true, value: outcome }
    },

    async putPlan (plan, capacity, nowMs) {
      await pool.query(`INSERT INTO gateway_plans (kind, id, payload, requester, expires_ms) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (kind, id) DO UPDATE SET payload = excluded.payload, requester = excluded.requester, expires_ms = excluded.expires_ms`,
      [plan.kind, plan.id, JSON.stringify(plan.payload), plan.requester, plan.expiresMs])
      await pool.query(`DELETE FROM gateway_plans WHERE kind = $1 AND (expires_ms <= $2 OR id IN
        (SELECT id FROM gateway_plans WHERE kind = $1 AND expires_ms > $2 ORDER BY expires_ms DESC, id DESC OFFSET $3))`, [plan.kind, nowMs, capacity])
    },

    async peekPlan (kind, id, nowMs) {
      const { rows } = await pool.query<PlanRow>('SELECT * FROM gateway_plans WHERE kind = $1 AND id = $2 AND expires_ms > $3', [kind, id, nowMs])
      return rows.length === 0 ? undefined : toPlan(rows[0] as PlanRow)
    },

    async takePlan (kind, id, nowMs, requester): Promise<TakenPlan> {
      const { rows } = await pool.query<PlanRow>(`DELETE FROM gateway_plans WHERE kind = $1 AND id = $2 AND expires_ms > $3
        AND ($4::text IS NULL OR requester = $4) RETURNING *`, [kind, id, nowMs, requester ?? null])
      if (rows.length > 0) return toPlan(rows[0] as PlanRow)
      if (requester === undefined) return undefined
      const { rows: left } = await pool.query('SELECT 1 FROM gateway_plans WHERE kind = $1 AND id = $2 AND expires_ms > $3', [kind, id, nowMs])
      return left.length > 0 ? 'not-yours' : undefined
    },

    async rememberOnce (kind, id, ttlMs) {
      // The database's clock for both the expiry and what counts as expired: a replica whose clock runs ahead must
      // not drop a record another replica, behind, would still accept the request for. Expired records of the kind
      // are dropped in the same statement (by the expiry index), so only live ones stay.
      const { rows } = await pool.query(`WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms),
        expired AS (DELETE FROM gateway_plans WHERE kind = $1 AND id <> $2 AND expires_ms <= (SELECT now_ms FROM clock))
        INSERT INTO gateway_plans AS p (kind, id, payload, requester, expires_ms) SELECT $1, $2, '{}', '', now_ms + $3 FROM clock
        ON CONFLICT (kind, id) DO UPDATE SET expires_ms = excluded.expires_ms WHERE p.expires_ms <= excluded.expires_ms - $3
        RETURNING 1`, [kind, id, ttlMs])
      return rows.length === 1
    },

    async claimPending (owner, olderThan, leaseMs, nowMs, after = '') {
      // SKIP LOCKED: a replica never waits for, nor takes, the row another replica is claiming right now.
      const { rows } = await pool.query<{ id: string }>(`UPDATE audit_records SET reconcile_owner = $1, reconcile_until = $2 WHERE id =
        (SELECT id FROM audit_records WHERE outcome = 'pending' AND time < $3 AND id > $5
          AND (reconcile_until IS NULL OR reconcile_until <= $4 OR reconcile_owner = $1)
          ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id`, [owner, nowMs + leaseMs, olderThan, nowMs, after])
      return rows[0]?.id
    },

    async hit (key, windowMs): Promise<RateWindow> {
      // The database's clock, not each replica's: every replica sees the same window boundaries.
      const { rows } = await pool.query<{ hits: number, ttl_ms: number }>(`INSERT INTO gateway_rate_limits AS r (key, window_ends, hits)
        VALUES ($1, clock_timestamp() + $2 * interval '1 millisecond', 1)
        ON CONFLICT (key) DO UPDATE SET
          hits = CASE WHEN r.window_ends <= clock_timestamp() THEN 1 ELSE r.hits + 1 END,
          window_ends = CASE WHEN r.window_ends <= clock_timestamp() THEN excluded.window_ends ELSE r.window_ends END
        RETURNING hits, greatest(0, extract(epoch FROM window_ends - clock_timestamp()) * 1000)::float8 AS ttl_ms`, [key, windowMs])
      hits++
      if (hits % sweepEvery === 0) await pool.query('DELETE FROM gateway_rate_limits WHERE window_ends < clock_timestamp()')
      const row = rows[0] as { hits: number, ttl_ms: number }
      return { count: row.hits, ttlMs: Math.ceil(row.ttl_ms) }
    },

    async close () {
      await lockPool.end()
    }
  }
}
