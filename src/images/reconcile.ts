import type { AuditTrail } from '../audit/trail.js'
import type { AuditRecord } from '../audit/types.js'
import { isGatewayError } from '../errors.js'
import type { RegistryClient } from '../registry/client.js'
import type { RegistryDirectory } from '../registry/directory.js'
import { repositoryLockKey, type KeyedLock } from '../registry/untag.js'
import { manifestGone, untagOutcome } from './attempt.js'

export interface ReconcileSummary { settled: number, left: number }

interface ReconcileLogger { warn: (details: object, message: string) => void }

const NOTE = 'reconciled at start-up or by a later pass (on any replica): the gateway stopped before recording the registry\'s answer'

export interface ReconcileDeps {
  registries: RegistryDirectory
  audit: AuditTrail
  /**
   * The repository lock deletions hold: a record is looked at under it, and read again first, so a request still
   * working on that repository (on any replica) finishes before its record is judged.
   */
  locks?: KeyedLock
  /** Who claims (a replica's id); records are claimed one at a time so two replicas never judge the same one. */
  owner?: string
  /** Only records older than this are judged: a younger one may still be in flight on some replica. 0: all. */
  inFlightMs?: number
  /** How long a claim keeps other owners off a record (a replica that dies mid-pass lets go when it ends). */
  leaseMs?: number
}

const direct: KeyedLock = { run: async (_key, work) => await work() }

async function tagsAllPointAt (client: RegistryClient, record: AuditRecord): Promise<boolean | undefined> {
  try {
    for (const tag of record.removedTags) {
      if ((await client.resolve(record.name, tag)).digest !== record.digest) return false
    }
    return true
  } catch (error) {
    if (isGatewayError(error) && error.code === 'NOT_FOUND') return false
    return undefined
  }
}

/**
 * Settles records a stopped gateway left `pending` by asking the registry what really happened: a deletion whose
 * digest is gone happened, one whose digest is still there did not; a restore whose tags all point at the digest
 * happened; an untag whose tag no longer resolves happened. Records whose registry cannot answer now stay pending
 * for a later pass. Each record is claimed first (FOR UPDATE SKIP LOCKED on PostgreSQL), so replicas reconciling
 * at once share the work and never judge one record twice.
 */
export async function reconcilePending (deps: ReconcileDeps, logger: ReconcileLogger): Promise<ReconcileSummary> {
  const summary = { settled: 0, left: 0 }
  const started = Date.now()
  // + 1: with no grace, a record written this very millisecond counts too.
  const olderThan = new Date(started - (deps.inFlightMs ?? 0) + 1).toISOString()
  const owner = deps.owner ?? 'reconcile'
  const locks = deps.locks ?? direct
  let after: string | undefined
  for (;;) {
    const id = await deps.audit.claimPending(owner, olderThan, deps.leaseMs ?? 120_000, Date.now(), after)
    if (id === undefined) break
    after = id
    const claimed = await deps.audit.get(id) as AuditRecord
    const judged = await locks.run(repositoryLockKey(claimed.registry, claimed.name), async () => {
      const record = await deps.audit.get(id) as AuditRecord
      return record.outcome === 'pending' ? await reconcileOne(deps, record, logger) : undefined
    })
    if (judged !== undefined) summary[judged]++
  }
  return summary
}

async function reconcileOne (deps: ReconcileDeps, record: AuditRecord, logger: ReconcileLogger): Promise<'settled' | 'left'> {
  const client = deps.registries.names.includes(record.registry) ? deps.registries.get(record.registry) : undefined
  const untag = client !== undefined && record.deleteAction === 'untagged' ? await untagOutcome(client, record) : undefined
  const happened = client === undefined
    ? undefined
    : record.action === 'restore'
      ? await tagsAllPointAt(client, record)
      : record.deleteAction === 'untagged' ? untag?.happened : await manifestGone(client, record.name, record.digest as string)
  if (happened === undefined) {
    logger.warn({ auditId: record.id, registry: record.registry }, 'pending audit record left for a later pass: its registry cannot tell what happened now')
    return 'left'
  }
  // Only while still pending: a request still in flight (its lock lost, or slower than reconcileAfterMs) may have
  // settled the record with the registry's own answer meanwhile, and that answer wins over this guess.
  const settled = record.action === 'restore'
    ? await deps.audit.settlePending(record.id, { outcome: happened ? 'restored' : 'failed', errorDetail: NOTE })
    : await deps.audit.settlePending(record.id, { outcome: happened ? 'deleted' : 'failed', errorDetail: `${NOTE}${untag?.detail ?? ''}` })
  if (settled === undefined) {
    logger.warn({ auditId: record.id, registry: record.registry },
      'pending audit record settled by its own request while being reconciled: its answer was kept')
    return 'left'
  }
  if (record.action === 'restore' && !happened) await deps.audit.releaseRestore(record.restoreOf as string, record.id)
  return 'settled'
}
