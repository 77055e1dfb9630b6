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

const runColumns = 'cleanup_id, state, started_by, started_at, finished_at, max_deletions, counts'

export const CLEANUP_RUN_SQL = {
  sqlite: {
    claim: `INSERT INTO cleanup_runs (${runColumns}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cleanup_id) DO NOTHING`,
    select: `SELECT ${runColumns} FROM cleanup_runs WHERE cleanup_id = ?`,
    update: 'UPDATE cleanup_runs SET state = ?, finished_at = COALESCE(?, finished_at), counts = COALESCE(?, counts) WHERE cleanup_id = ?',
    interrupt: "UPDATE cleanup_runs SET state = 'interrupted', finished_at = ? WHERE state = 'running' RETURNING cleanup_id"
  },
  postgres: {
    claim: `INSERT INTO cleanup_runs (${runColumns}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (cleanup_id) DO NOTHING`,
    select: `SELECT ${runColumns} FROM cleanup_runs WHERE cleanup_id = $1`,
    update: 'UPDATE cleanup_runs SET state = $1, finished_at = COALESCE($2, finished_at), counts = COALESCE($3, counts) WHERE cleanup_id = $4',
    interrupt: "UPDATE cleanup_runs SET state = 'interrupted', finished_at = $1 WHERE state = 'running' RETURNING cleanup_id"
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
}

export function claimValues (run: CleanupRun): unknown[] {
  return [run.cleanupId, run.state, run.startedBy, run.startedAt, run.finishedAt ?? null, run.maxDeletions, JSON.stringify(run.counts)]
}

export function updateValues (cleanupId: string, changes: CleanupRunChanges): unknown[] {
  return [changes.state, changes.finishedAt ?? null, changes.counts === undefined ? null : JSON.stringify(changes.counts), cleanupId]
}

export function toCleanupRun (row: CleanupRunRow): CleanupRun {
  return {
    cleanupId: row.cleanup_id,
    state: row.state as CleanupRun['state'],
    startedBy: row.started_by,
    startedAt: row.started_at,
    ...(row.finished_at === null ? {} : { finishedAt: row.finished_at }),
    maxDeletions: Number(row.max_deletions),
    counts: JSON.parse(row.counts) as CleanupRunCounts
  }
}
