import { AUDIT_ID } from './id.js'
export { AUDIT_ID }

/** The cursor that continues a page after the record `id`; opaque to callers so its form can change. */
export function encodeAuditCursor (id: string): string {
  return Buffer.from(id, 'utf8').toString('base64url')
}
