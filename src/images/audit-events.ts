import type { AuditTrail } from '../audit/trail.js'
import type { AuditEvent } from '../audit/shapes.js'
import type { AuditFilter, AuditImageRef, AuditListItem } from '../audit/types.js'
import { GatewayError, invalidField } from '../errors.js'
import type { Identity } from '../policy/types.js'
import type { Authorize } from './attempt.js'

export type { AuditEvent }

export interface ListAuditInput {
  identity: Identity
  filter: AuditFilter
  limit?: number
  cursor?: string
}

export const DEFAULT_AUDIT_PAGE = 50
export const MAX_AUDIT_PAGE = 200

export function toAuditEvent (record: AuditListItem): AuditEvent {
  const { manifestSaved, ...event } = record
  return { ...event, restorable: record.action === 'delete' && record.outcome === 'deleted' && record.restoredBy === undefined && manifestSaved }
}

/** The trail, newest first, showing only records of repositories the caller may audit. */
export interface ListAuditDeps {
  audit: AuditTrail
  authorizer: () => Authorize
  mayAuditAnything: (identity: Identity) => boolean
}

export async function listAuditEvents (deps: ListAuditDeps, input: ListAuditInput): Promise<{ items: AuditEvent[], cursors: string[], nextCursor?: string }> {
  const limit = input.limit ?? DEFAULT_AUDIT_PAGE
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_AUDIT_PAGE) {
    throw invalidField('limit', `integer 1..${MAX_AUDIT_PAGE}`, `limit must be an integer from 1 to ${MAX_AUDIT_PAGE}.`)
  }
  // Refused before reading anything: a caller no rule lets audit would otherwise make every page scan for nothing.
  if (!deps.mayAuditAnything(input.identity)) {
    throw new GatewayError('FORBIDDEN',
      `${input.identity.subject} may not audit anything: no rule of its roles grants the audit action, so the audit trail has nothing to show it.`,
      { extras: { subject: input.identity.subject, action: 'audit' } })
  }
  const authorize = deps.authorizer()
  const visible = (record: AuditImageRef): boolean =>
    authorize(input.identity, 'audit', { registry: record.registry, repository: record.name, tag: record.tag }).allow
  const page = await deps.audit.list(input.filter, { limit, ...(input.cursor === undefined ? {} : { cursor: input.cursor }) }, visible)
  return { items: page.items.map(toAuditEvent), cursors: page.cursors, ...(page.nextCursor === undefined ? {} : { nextCursor: page.nextCursor }) }
}
