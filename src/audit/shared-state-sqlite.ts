/**
 * The shared state on SQLite (see shared-state.ts): one gateway per file, so the lock is the process's own queue
 * and rate-limit windows stay in memory; plans and reconcile claims live in the file, behind the same contract
 * as PostgreSQL's, so a restart keeps a plan's buttons working and the two drivers cannot drift.
 */
import type Database from 'better-sqlite3'
import type { SharedState, StoredPlan, TakenPlan } from './shared-state.js'
import { localHeldLock } from '../registry/lock-guard.js'

export const sharedStateMigration = `ALTER TABLE audit_records ADD COLUMN reconcile_owner TEXT;
  ALTER TABLE audit_records ADD COLUMN reconcile_until INTEGER;
  CREATE TABLE gateway_plans (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    payload TEXT NOT NULL,
    requester TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
  ) STRICT;
  CREATE INDEX gateway_plans_by_expiry ON gateway_plans (kind, expires_ms);`

interface PlanRow { kind: string, id: string, payload: string, requester: string, expires_ms: number }

const toPlan = (row: PlanRow): StoredPlan =>
  ({ kind: row.kind, id: row.id, payload: JSON.parse(row.payload), requester: row.requester, expiresMs: row.expires_ms })

/** Call once the schema is migrated: statements are prepared against it. */
export function sqliteSharedState (db: Database.Database, ensureOpen: () => void): SharedState {
  const upsert = db.prepare(`INSERT INTO gateway_plans (kind, id, payload, requester, expires_ms) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (kind, id) DO UPDATE SET payload = excluded.payload, requester = excluded.requester, expires_ms = excluded.expires_ms`)
  const trim = db.prepare(`DELETE FROM gateway_plans WHERE kind = @kind AND (expires_ms <= @now OR id IN
    (SELECT id FROM gateway_plans WHERE kind = @kind AND expires_ms > @now ORDER BY expires_ms DESC, id DESC LIMIT -1 OFFSET @capacity))`)
  const peek = db.prepare('SELECT * FROM gateway_plans WHERE kind = ? AND id = ? AND expires_ms > ?')
  const take = db.prepare('DELETE FROM gateway_plans WHERE kind = @kind AND id = @id AND expires_ms > @now AND (@requester IS NULL OR requester = @requester) RETURNING *')
  const oldestPending = db.prepare(`SELECT id FROM audit_records WHERE outcome = 'pending' AND time < @olderThan AND id > @after
    AND (reconcile_until IS NULL OR reconcile_until <= @now OR reconcile_owner = @owner) ORDER BY id LIMIT 1`)
  const claim = db.prepare('UPDATE audit_records SET reconcile_owner = ?, reconcile_until = ? WHERE id = ?')
  // IMMEDIATE: the look and the claim are one step even for another process on the file.
  const claimTransaction = db.transaction((owner: string, olderThan: string, until: number, nowMs: number, after: string): string | undefined => {
    const row = oldestPending.get({ olderThan, now: nowMs, owner, after }) as { id: string } | undefined
    if (row !== undefined) claim.run(owner, until, row.id)
    return row?.id
  })

  // tryExclusive's keys held in this process (the one replica of the file).
  const tried = new Set<string>()

  return {
    // One replica per file: the in-process queue in front of this is the whole lock.
    exclusive: async (_key, work) => await work(localHeldLock),

    async tryExclusive (key, work) {
      if (tried.has(key)) return { held: false }
      tried.add(key)
      try {
        return { held: true, value: await work(localHeldLock) }
      } finally {
        tried.delete(key)
      }
    },

    async putPlan (plan, capacity, nowMs) {
      ensureOpen()
      db.transaction(() => {
        upsert.run(plan.kind, plan.id, JSON.stringify(plan.payload), plan.requester, plan.expiresMs)
        trim.run({ kind: plan.kind, now: nowMs, capacity })
      })()
    },

    async peekPlan (kind, id, nowMs) {
      ensureOpen()
      const row = peek.get(kind, id, nowMs) as PlanRow | undefined
      return row === undefined ? undefined : toPlan(row)
    },

    async takePlan (kind, id, nowMs, requester): Promise<TakenPlan> {
      ensureOpen()
      const row = take.get({ kind, id, now: nowMs, requester: requester ?? null }) as PlanRow | undefined
      if (row !== undefined) return toPlan(row)
      return requester !== undefined && peek.get(kind, id, nowMs) !== undefined ? 'not-yours' : undefined
    },

    async claimPending (owner, olderThan, leaseMs, nowMs, after = '') {
      ensureOpen()
      return claimTransaction.immediate(owner, olderThan, nowMs + leaseMs, nowMs, after)
    }
  }
}
