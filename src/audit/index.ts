export { AUDIT_ID } from './id.js'
export * from './shapes.js'
export { auditSchemaVersion, openSqliteAuditStore, type SqliteAuditStoreOptions } from './sqlite-store.js'
export { deferredAuditStore } from './deferred-store.js'
export { openPostgresAuditStore, postgresAuditSchemaVersion, type PostgresAuditStoreOptions } from './postgres-store.js'
export { AuditTrail, withoutManifest, type AuditLogger } from './trail.js'
export type {
  AuditAction, AuditFilter, AuditImageRef, AuditPoolStats, AuditListItem, AuditOutcome, AuditPage, AuditRecord, AuditRecordChanges, AuditStore,
  ClaimRestoreResult, NewAuditRecord
} from './types.js'
export {
  OUTBOX_GIVE_UP_MS, type ClaimedDelivery, type Delivery, type DeliveryOutcome, type DeliveryPage, type DeliveryStatus, type OutboxMessage, type OutboxRouter,
  type OutboxStore
} from './outbox.js'
