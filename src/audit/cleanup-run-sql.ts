/**
 * Where cleanup runs are kept: one row per cleanup that was executed (or cancelled before it ran), beside the
 * audit trail in the same store, so the run's state is as durable as the deletion records it writes. The row's
 * primary key is the claim: a second execute of one cleanup finds the row and runs nothing. Each deletion of a
 * run carries the cleanup id in its audit record (audit_records.cleanup_id), which is how a run's work is found
 * again after a restart and undone. One migration per store, appended to each store's list.
 */
import type { CleanupRun, CleanupRunChanges, CleanupRunCounts } from './types.js'

export const SQLITE_CLEANUP_RUNS_MIGRATION = `ALTER TABLE audit_records ADD COLUMN cleanup_id TEXT;
  CREATE INDEX audit_records_by_cleanup ON audit_records (cleanup_id, id);
  CREATE TABLE cleanup_runs (
    cleanup_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    started_by TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    max_deletions INTEGER NOT NULL,
    counts TEXT NOT NULL
  ) STRICT;`

export const POSTGRES_CLEANUP_RUNS_MIGRATION = `ALTER TABLE audit_records ADD COLUMN cleanup_id TEXT COLLATE "C";
  CREATE INDEX audit_records_by_cleanup ON audit_records (cleanup_id, id);
  CREATE TABLE cleanup_runs (
    cleanup_id TEXT COLLATE "C" PRIMARY KEY,
    state TEXT NOT NULL,
    started_by TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    max_deletions INTEGER NOT NULL,
    counts TEXT NOT NULL
  );`

/**
 * Runs across replicas: the replica running a cleanup writes `heartbeat_at` every cleanups.heartbeatMs, so any
 * replica can tell a run whose process died (kill -9, a lost node) from one still going; `cancel_requested_*` is how
 * a cancel reaches the replica running it. SQLite keeps the heartbeat on the gateway's clock (one host); PostgreSQL
 * on the database's, so replicas whose clocks disagree still judge staleness alike. A run without a heartbeat
 * (claimed before this migration) is never judged stale: its owner may be a gateway that does not beat.
 */
export const SQLITE_CLEANUP_RUN_LEASES_MIGRATION = `ALTER TABLE cleanup_runs ADD COLUMN heartbeat_at TEXT;
  ALTER TABLE cleanup_runs ADD COLUMN cancel_requested_at TEXT;
  ALTER TABLE cleanup_runs ADD COLUMN cancel_requested_by TEXT;
  CREATE INDEX cleanup_runs_running ON cleanup_runs (heartbeat_at) WHERE state = 'running';`

export const POSTGRES_CLEANUP_RUN_LEASES_MIGRATION = `ALTER TABLE cleanup_runs ADD COLUMN heartbeat_at TIMESTAMPTZ;
  ALTER TABLE cleanup_runs ADD COLUMN cancel_requested_at TEXT;
  ALTER TABLE cleanup_runs ADD COLUMN cancel_requested_by TEXT;
  CREATE INDEX cleanup_runs_running ON cleanup_runs (heartbeat_at) WHERE state = 'running';`

const runColumns = 'cleanup_id, state, started_by, started_at, finished_at, max_deletions, counts'
const readColumns = `${runColumns}, cancel_requested_at, cancel_requested_by`

/*
 * A state other than `running` is final: an update sets state and finish time only while the run is `running` (a run
 * another replica marked interrupted stays so), while counts are always written (the owner's last removals still
 * count). Every SET expression reads the row as it was before the update, in both databases.
 */
const finish = (p: (n: number) => string): string => `UPDATE cleanup_runs SET
    state = CASE WHEN state = 'running' THEN ${p(1)} ELSE state END,
    finished_at = CASE WHEN state = 'running' THEN COALESCE(${p(2)}, finished_at) ELSE finished_at END,
    counts = COALESCE(${p(3)}, counts)
  WHERE cleanup_id = ${p(4)} RETURNING state`
const cancel = (p: (n: number) => string): string => `UPDATE cleanup_runs SET
    cancel_requested_at = COALESCE(cancel_requested_at, ${p(1)}), cancel_requested_by = COALESCE(cancel_requested_by, ${p(2)})
  WHERE cleanup_id = ${p(3)} AND state = 'running' RETURNING cleanup_id`
const sqliteParameter = (): string => '?'
const postgresParameter = (n: number): string => `$${n}`

/** interruptCleanupRuns' default cut-off: after every ISO time a run can have started at. */
export const LATEST = '9999-12-31T23:59:59.999Z'

export const CLEANUP_RUN_SQL = {
  sqlite: {
    claim: `INSERT INTO cleanup_runs (${runColumns}, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cleanup_id) DO NOTHING`,
    select: `SELECT ${readColumns} FROM cleanup_runs WHERE cleanup_id = ?`,
    update: finish(sqliteParameter),
    interrupt: "UPDATE cleanup_runs SET state = 'interrupted', finished_at = ? WHERE state = 'running' AND started_at < ? RETURNING cleanup_id",
    heartbeat: "UPDATE cleanup_runs SET heartbeat_at = ? WHERE cleanup_id = ? AND state = 'running' RETURNING cancel_requested_at",
    cancel: cancel(sqliteParameter),
    interruptStale: "UPDATE cleanup_runs SET state = 'interrupted', finished_at = ? WHERE state = 'running' AND heartbeat_at < ? RETURNING cleanup_id"
  },
  postgres: {
    claim: `INSERT INTO cleanup_runs (${runColumns}, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now()) ON CONFLICT (cleanup_id) DO NOTHING`,
    select: `SELECT ${readColumns} FROM cleanup_runs WHERE cleanup_id = $1`,
    update: finish(postgresParameter),
    interrupt: "UPDATE cleanup_runs SET state = 'interrupted', finished_at = $1 WHERE state = 'running' AND started_at < $2 RETURNING cleanup_id",
    heartbeat: "UPDATE cleanup_runs SET heartbeat_at = now() WHERE cleanup_id = $1 AND state = 'running' RETURNING cancel_requested_at",
    cancel: cancel(postgresParameter),
    interruptStale: `UPDATE cleanup_runs SET state = 'interrupted', finished_at = $1
      WHERE state = 'running' AND heartbeat_at < now() - $2::double precision * interval '1 millisecond' RETURNING cleanup_id`
  }
} as const

export interface CleanupRunRow {
  cleanup_id: string
  state: string
  started_by: string
  started_at: string
  finished_at: string | null
  max_deletions: number
  counts: string
  cancel_requested_at: string | null
  cancel_requested_by: string | null
}

export function claimValues (run: CleanupRun): unknown[] {
  return [run.cleanupId, run.state, run.startedBy, run.startedAt, run.finishedAt ?? null, run.maxDeletions, JSON.stringify(run.counts)]
}

/** Claimed runs start with a heartbeat (SQLite: the gateway's clock; PostgreSQL adds the database's own). */
export function sqliteClaimValues (run: CleanupRun, now: Date): unknown[] {
  return [...claimValues(run), now.toISOString()]
}

export function updateValues (cleanupId: string, changes: CleanupRunChanges): unknown[] {
  return [changes.state, changes.finishedAt ?? null, changes.counts === undefined ? null : JSON.stringify(changes.counts), cleanupId]
}

export function toCleanupRun (row: CleanupRunRow): CleanupRun {
  return {
    cleanupId: row.cleanup_id,
    state: row.state === 'running' && row.cancel_requested_at !== null ? 'cancelling' : row.state as CleanupRun['state'],
    startedBy: row.started_by,
    startedAt: row.started_at,
    ...(row.finished_at === null ? {} : { finishedAt: row.finished_at }),
    maxDeletions: Number(row.max_deletions),
    counts: JSON.parse(row.counts) as CleanupRunCounts,
    ...(row.cancel_requested_at === null ? {} : { cancelRequestedAt: row.cancel_requested_at, cancelRequestedBy: row.cancel_requested_by as string })
  }
}
