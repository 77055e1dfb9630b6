/**
 * Where cleanup plans are kept: beside the audit trail, in the same store, so a plan is as durable as the
 * records its execution will write, and every replica sharing a PostgreSQL store sees it. The plan itself is one
 * JSON document (written once, read whole); the columns beside it are what a later listing or execution claims
 * will select on. One migration per store, appended to each store's list.
 */
import type { CleanupRecord } from './types.js'

export const SQLITE_CLEANUPS_MIGRATION = `CREATE TABLE cleanups (
    id TEXT PRIMARY KEY,
    registry TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL
  ) STRICT;
  CREATE INDEX cleanups_by_creator ON cleanups (created_by, created_at);`

export const POSTGRES_CLEANUPS_MIGRATION = `CREATE TABLE cleanups (
    id TEXT COLLATE "C" PRIMARY KEY,
    registry TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL
  );
  CREATE INDEX cleanups_by_creator ON cleanups (created_by, created_at);`

export const INSERT_CLEANUP_SQLITE = 'INSERT INTO cleanups (id, registry, created_by, created_at, state, body) VALUES (?, ?, ?, ?, ?, ?)'
export const INSERT_CLEANUP_POSTGRES = 'INSERT INTO cleanups (id, registry, created_by, created_at, state, body) VALUES ($1, $2, $3, $4, $5, $6)'
export const SELECT_CLEANUP_SQLITE = 'SELECT id, registry, created_by, created_at, state, body FROM cleanups WHERE id = ?'
export const SELECT_CLEANUP_POSTGRES = 'SELECT id, registry, created_by, created_at, state, body FROM cleanups WHERE id = $1'

/**
 * Pruning with the audit records: plans made before the retention cut-off go, with their runs; a plan whose run is
 * still going stays until it ends. Runs first, so the second statement sees which old plans still have one.
 */
export const PRUNE_CLEANUPS_SQLITE = [
  "DELETE FROM cleanup_runs WHERE state <> 'running' AND cleanup_id IN (SELECT id FROM cleanups WHERE created_at < ?)",
  'DELETE FROM cleanups WHERE created_at < ? AND NOT EXISTS (SELECT 1 FROM cleanup_runs WHERE cleanup_runs.cleanup_id = cleanups.id)'
] as const
export const PRUNE_CLEANUPS_POSTGRES = PRUNE_CLEANUPS_SQLITE.map(sql => sql.replace('?', '$1'))

export interface CleanupRow { id: string, registry: string, created_by: string, created_at: string, state: string, body: string }

export function cleanupValues (cleanup: CleanupRecord): string[] {
  return [cleanup.id, cleanup.registry, cleanup.createdBy, cleanup.createdAt, cleanup.state, cleanup.body]
}

export function toCleanupRecord (row: CleanupRow): CleanupRecord {
  return { id: row.id, registry: row.registry, createdBy: row.created_by, createdAt: row.created_at, state: row.state, body: row.body }
}
