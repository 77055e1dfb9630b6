/** Audit ids are ULIDs: they sort by time, which is what newest-first pages and cursors rely on. */
export const AUDIT_ID = /^[0-9A-HJKMNP-TV-Z]{26}$/

/** The cursor that continues a page after the record `id`; opaque to callers so its form can change. */
export function encodeAuditCursor (id: string): string {
  return Buffer.from(id, 'utf8').toString('base64url')
}
