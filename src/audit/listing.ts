/** What both audit stores share about listings, so their cursors, filters and errors cannot drift apart. */
import { GatewayError } from '../errors.js'
import { AUDIT_ID } from './id.js'
import type { AuditFilter, AuditRecord, AuditRecordChanges } from './types.js'

/** Rows of the list window read per turn of the event loop. */
export const LIST_CHUNK_ROWS = 100

/**
 * The filters whose index is ordered by id after them, best first: the scan window walks one of these (or the id
 * index), so it reads only rows that match it and stops after the scan limit.
 */
export const windowIndexes: ReadonlyArray<ReadonlyArray<keyof AuditFilter>> = [
  ['cleanupId'], ['subject'], ['registry', 'name', 'tag'], ['name', 'tag'], ['name'], ['outcome']
]

/** Every filter field, in the fixed order each store builds its SQL in. */
export const filterKeys: ReadonlyArray<keyof AuditFilter> = ['subject', 'registry', 'name', 'tag', 'outcome', 'action', 'since', 'until', 'cleanupId']

export function invalidRequest (field: string, detail: string): GatewayError {
  return new GatewayError('INVALID_REQUEST', detail, { extras: { field } })
}

/** One textual form, so that times compare correctly as strings in SQL whatever offset the caller wrote. */
export function toIsoTime (value: string, field: string): string {
  const ms = Date.parse(value)
  if (Number.isNaN(ms)) throw invalidRequest(field, `${field} must be an ISO 8601 time, got ${JSON.stringify(value)}`)
  return new Date(ms).toISOString()
}

/** The one cursor encoding: it continues a listing after the record `id`, and is opaque so its form can change. */
export function encodeAuditCursor (id: string): string {
  return Buffer.from(id, 'utf8').toString('base64url')
}

export function decodeCursor (cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString('utf8')
  if (!AUDIT_ID.test(id)) throw invalidRequest('cursor', 'cursor is not one this gateway handed out: start again without it')
  return id
}

export function checkLimit (limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1) throw invalidRequest('limit', `limit must be a positive integer, got ${String(limit)}`)
}

/** The filter's values as the SQL compares them (times normalised); rejects a malformed time. */
export function filterValues (filter: AuditFilter): Partial<Record<keyof AuditFilter, string>> {
  const values: Partial<Record<keyof AuditFilter, string>> = {}
  for (const key of filterKeys) {
    const value = filter[key]
    if (value === undefined) continue
    values[key] = key === 'since' || key === 'until' ? toIsoTime(value, key) : value
  }
  return values
}

export function definedChanges (changes: AuditRecordChanges): AuditRecordChanges {
  return Object.fromEntries(Object.entries(changes).filter(([, value]) => value !== undefined))
}

/** The nullable columns and the record fields they fill: the same in every store, so one mapping serves them all. */
const OPTIONAL_COLUMNS: ReadonlyArray<[string, keyof AuditRecord]> = [
  ['digest', 'digest'], ['media_type', 'mediaType'], ['upstream_status', 'upstreamStatus'], ['error_code', 'errorCode'],
  ['error_detail', 'errorDetail'], ['duration_ms', 'durationMs'], ['manifest', 'manifest'], ['restored_by', 'restoredBy'],
  ['restore_of', 'restoreOf'], ['client_request_id', 'clientRequestId'], ['mode', 'mode'], ['delete_action', 'deleteAction'],
  ['strategy', 'strategy'], ['approved_by', 'approvedBy'], ['cleanup_id', 'cleanupId']
]

/** Fills `record`'s optional fields from a row's non-null columns (a record never carries a field set to null). */
export function withOptionalColumns (record: AuditRecord, row: object): AuditRecord {
  const columns = row as Record<string, unknown>
  const fields = record as unknown as Record<string, unknown>
  for (const [column, field] of OPTIONAL_COLUMNS) {
    if (columns[column] !== null) fields[field] = columns[column]
  }
  return record
}
