import { GatewayError, isGatewayError } from '../errors.js'
import type {
  AuditFilter, AuditImageRef, AuditPage, AuditRecord, AuditRecordChanges, AuditStore, ClaimRestoreResult, CleanupRecord, NewAuditRecord
} from './types.js'

export interface AuditLogger {
  info: (details: object, message: string) => void
}

/** What a log line may show of a record: everything but the saved manifest bytes. */
export function withoutManifest (record: AuditRecord): Omit<AuditRecord, 'manifest'> {
  const { manifest: _manifest, ...shown } = record
  return shown
}

/**
 * The audit store as the use cases write to it: every record also becomes one log line, and a store that
 * cannot write is a catalogue error, so a deletion never goes ahead unrecorded.
 */
export class AuditTrail {
  constructor (readonly store: AuditStore, private readonly logger: AuditLogger, private readonly observe: (record: AuditRecord) => void = () => {}) {}

  /** The store's own catalogue errors (a bad cursor) pass through; anything else means it cannot be used. */
  private async guard<T> (work: () => Promise<T>): Promise<T> {
    try {
      return await work()
    } catch (error) {
      if (isGatewayError(error)) throw error
      throw new GatewayError('AUDIT_UNAVAILABLE',
        'the audit trail cannot be used, so the gateway will not act; nothing more was changed in the registry. Check the audit database (AUDIT_DB).',
        { cause: error })
    }
  }

  private log (record: AuditRecord): AuditRecord {
    this.logger.info({ audit: withoutManifest(record) }, `audit ${record.action} ${record.name}:${record.tag} ${record.outcome}`)
    this.observe(record)
    return record
  }

  async record (record: NewAuditRecord): Promise<AuditRecord> {
    return this.log(await this.guard(async () => await this.store.append(record)))
  }

  async settle (id: string, changes: AuditRecordChanges): Promise<AuditRecord> {
    return this.log(await this.guard(async () => await this.store.update(id, changes)))
  }

  /** `settle` only while the record is still pending: undefined (nothing written) when it was settled meanwhile. */
  async settlePending (id: string, changes: AuditRecordChanges): Promise<AuditRecord | undefined> {
    const settled = await this.guard(async () => await this.store.settlePending(id, changes))
    return settled === undefined ? undefined : this.log(settled)
  }

  async get (id: string): Promise<AuditRecord | undefined> {
    return await this.guard(async () => await this.store.get(id))
  }

  async list (filter: AuditFilter, page: { limit: number, cursor?: string }, visible: (record: AuditImageRef) => boolean): Promise<AuditPage> {
    return await this.guard(async () => await this.store.list(filter, page, visible))
  }

  /** Claims the oldest pending record older than `olderThan` for `leaseMs` (see SharedState.claimPending). */
  async claimPending (owner: string, olderThan: string, leaseMs: number, nowMs: number, after?: string): Promise<string | undefined> {
    return await this.guard(async () => await this.store.shared.claimPending(owner, olderThan, leaseMs, nowMs, after))
  }

  /** A cleanup plan, durable when it resolves (logged by id only: the plan can list thousands of tags). */
  async saveCleanup (cleanup: CleanupRecord): Promise<void> {
    await this.guard(async () => { await this.store.saveCleanup(cleanup) })
    const { id, registry, createdBy, state } = cleanup
    this.logger.info({ cleanup: { id, registry, createdBy, state } }, `cleanup ${id} ${state}`)
  }

  async getCleanup (id: string): Promise<CleanupRecord | undefined> {
    return await this.guard(async () => await this.store.getCleanup(id))
  }

  async claimRestore (deletionId: string, restore: NewAuditRecord): Promise<ClaimRestoreResult> {
    const claim = await this.guard(async () => await this.store.claimRestore(deletionId, restore))
    if (claim.ok) this.log(claim.restore)
    return claim
  }

  async releaseRestore (deletionId: string, restoreId: string): Promise<void> {
    await this.guard(async () => { await this.store.releaseRestore(deletionId, restoreId) })
  }
}
