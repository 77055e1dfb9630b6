export { auditSchemaVersion, openSqliteAuditStore } from './sqlite-store.js'
export type {
  AuditAction, AuditFilter, AuditOutcome, AuditPage, AuditRecord, AuditRecordChanges, AuditStore, ClaimRestoreResult,
  NewAuditRecord
} from './types.js'
