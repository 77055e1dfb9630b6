import type { AuditTrail } from '../audit/trail.js'
import type { AuditRecord } from '../audit/types.js'
import { isGatewayError } from '../errors.js'
import type { RegistryClient } from '../registry/client.js'
import type { RegistryDirectory } from '../registry/directory.js'
import { manifestGone, untagOutcome } from './attempt.js'

export interface ReconcileSummary { settled: number, left: number }

interface ReconcileLogger { warn: (details: object, message: string) => void }

const NOTE = 'reconciled at start-up: the gateway stopped before recording the registry\'s answer'

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
 * happened; an untag whose tag no longer resolves happened. Records whose registry cannot answer now stay pending for the next start.
 */
export async function reconcilePending (deps: { registries: RegistryDirectory, audit: AuditTrail }, logger: ReconcileLogger): Promise<ReconcileSummary> {
  const summary = { settled: 0, left: 0 }
  for (const record of await deps.audit.pending()) {
    const client = deps.registries.names.includes(record.registry) ? deps.registries.get(record.registry) : undefined
    const untag = client !== undefined && record.deleteAction === 'untagged' ? await untagOutcome(client, record) : undefined
    const happened = client === undefined
      ? undefined
      : record.action === 'restore'
        ? await tagsAllPointAt(client, record)
        : record.deleteAction === 'untagged' ? untag?.happened : await manifestGone(client, record.name, record.digest as string)
    if (happened === undefined) {
      summary.left++
      logger.warn({ auditId: record.id, registry: record.registry }, 'pending audit record left for the next start: its registry cannot tell what happened now')
      continue
    }
    if (record.action === 'restore') {
      if (!happened) await deps.audit.releaseRestore(record.restoreOf as string, record.id)
      await deps.audit.settle(record.id, { outcome: happened ? 'restored' : 'failed', errorDetail: NOTE })
    } else {
      await deps.audit.settle(record.id, { outcome: happened ? 'deleted' : 'failed', errorDetail: `${NOTE}${untag?.detail ?? ''}` })
    }
    summary.settled++
  }
  return summary
}
