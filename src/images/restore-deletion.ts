import { AUDIT_ID } from '../audit/id.js'
import type { AuditRecord } from '../audit/types.js'
import { GatewayError, isGatewayError } from '../errors.js'
import type { Identity } from '../policy/types.js'
import { sha256Digest, type RegistryClient } from '../registry/client.js'
import { repositoryLockKey } from '../registry/untag.js'
import { errorFields, settleQuietly, type RequestContext } from './attempt.js'
import type { ImageServices } from './delete-image.js'
import type { RestoreDeletionResult } from './shapes.js'

/** `locks`: the repository lock deletions and untags hold, so a restore's PUTs never interleave with their DELETEs. */
export type RestoreDeletionDeps = Pick<ImageServices, 'registries' | 'authorizer' | 'audit' | 'onAuditLost' | 'locks'>

export interface RestoreDeletionInput {
  identity: Identity
  context: RequestContext
  deletionId: string
  force?: boolean
}

function unknownDeletion (id: string): GatewayError {
  return new GatewayError('NOT_FOUND', `no deletion ${id.slice(0, 40)} in the audit trail; GET /audit lists deletions and their ids.`, {
    extras: { field: 'id' }
  })
}

/** A tag that points at another digest now: putting the old manifest back would silently move it. */
async function tagsMovedElsewhere (client: RegistryClient, deletion: AuditRecord): Promise<string[]> {
  const moved: string[] = []
  for (const tag of deletion.removedTags) {
    try {
      if ((await client.resolve(deletion.name, tag, 'pull,push')).digest !== deletion.digest) moved.push(tag)
    } catch (error) {
      if (!isGatewayError(error) || error.code !== 'NOT_FOUND') throw error
    }
  }
  return moved
}

function restoreFailure (error: GatewayError): GatewayError {
  if (error.extras.upstreamStatus === 400 && ['MANIFEST_BLOB_UNKNOWN', 'MANIFEST_UNKNOWN', 'BLOB_UNKNOWN'].includes(String(error.extras.upstreamCode))) {
    return new GatewayError('RESTORE_UNAVAILABLE',
      'the registry no longer has the layers or child manifests this manifest references: garbage collection removed them, so the deletion cannot be undone. Push the image again instead.',
      { extras: error.extras, cause: error })
  }
  return error
}

/**
 * Undoes a deletion by putting its saved manifest bytes back under every tag it removed, while the registry still
 * has what the manifest references (until garbage collection). The deletion is claimed atomically first, so two
 * restores cannot both run; a restore that fails releases the claim.
 */
export async function restoreDeletion (deps: RestoreDeletionDeps, input: RestoreDeletionInput): Promise<RestoreDeletionResult> {
  if (!AUDIT_ID.test(input.deletionId)) throw unknownDeletion(input.deletionId)
  const deletion = await deps.audit.get(input.deletionId)
  if (deletion === undefined) throw unknownDeletion(input.deletionId)
  const authorize = deps.authorizer()
  const tags = [...new Set([deletion.tag, ...deletion.removedTags])]
  // A caller who may neither read the trail nor restore here learns nothing from the id, not even that it exists:
  // a 403 naming the image would tell what any deletion id was.
  const mayKnow = tags.some(tag => (['audit', 'restore'] as const).some(action =>
    authorize(input.identity, action, { registry: deletion.registry, repository: deletion.name, tag }).allow))
  if (!mayKnow) throw unknownDeletion(input.deletionId)
  const client = deps.registries.get(deletion.registry)
  const started = performance.now()
  const attempt = {
    requestId: input.context.requestId,
    ...(input.context.clientRequestId === undefined ? {} : { clientRequestId: input.context.clientRequestId }),
    transport: input.context.transport,
    ...(input.context.cleanupId === undefined ? {} : { cleanupId: input.context.cleanupId }),
    subject: input.identity.subject,
    groups: input.identity.groups,
    action: 'restore' as const,
    registry: deletion.registry,
    name: deletion.name,
    tag: deletion.tag,
    digest: deletion.digest,
    mediaType: deletion.mediaType,
    removedTags: deletion.removedTags
  }
  const elapsed = (): number => Math.round(performance.now() - started)

  const denial = (action: 'restore' | 'force', tag: string): GatewayError | undefined => {
    const decision = authorize(input.identity, action, { registry: deletion.registry, repository: deletion.name, tag })
    if (decision.allow) return undefined
    return new GatewayError(decision.code, decision.reason, {
      extras: { subject: input.identity.subject, roles: decision.roles, action, image: `${deletion.name}:${tag}`, registry: deletion.registry }
    })
  }
  const refused = tags.map(tag => denial('restore', tag)).find(error => error !== undefined)
  if (refused !== undefined) {
    await deps.audit.record({ ...attempt, decision: { allow: false, reason: refused.detail }, ...errorFields(refused), durationMs: elapsed() })
    throw refused
  }
  const decision = { allow: true, reason: `restore allowed for ${deletion.removedTags.join(', ')}` }
  const claim = await deps.audit.claimRestore(deletion.id, { ...attempt, decision, outcome: 'pending' })
  if (!claim.ok) {
    const refusal = claim.reason === 'already-restored'
      ? new GatewayError('ALREADY_RESTORED', `deletion ${deletion.id} was already restored, by restore ${claim.deletion?.restoredBy as string}.`, {
        extras: { restoredBy: claim.deletion?.restoredBy }
      })
      : new GatewayError('NOT_RESTORABLE',
        `record ${deletion.id} is a ${deletion.action} with outcome ${deletion.outcome}, not a completed deletion; only deletions the registry accepted can be restored.`,
        { extras: { action: deletion.action, outcome: deletion.outcome } })
    await deps.audit.record({ ...attempt, decision, ...errorFields(refusal), durationMs: elapsed() })
    throw refusal
  }
  const restore = claim.restore
  try {
    if (sha256Digest(deletion.manifest as Buffer) !== deletion.digest) {
      throw new GatewayError('NOT_RESTORABLE', `the manifest saved with deletion ${deletion.id} does not hash to ${deletion.digest as string}; the record is damaged, so nothing was put back.`)
    }
    // Under the repository's lock: what the check sees is what the PUTs act on, as far as the gateway's own
    // deletions and untags go, and 2.8.2 answers a DELETE 500 when a tag changes beside it.
    await deps.locks.run(repositoryLockKey(client.name, deletion.name), async () => {
      const moved = await tagsMovedElsewhere(client, deletion)
      if (moved.length > 0 && input.force !== true) {
        throw new GatewayError('TAG_EXISTS',
          `${moved.map(tag => `${deletion.name}:${tag}`).join(', ')} now point${moved.length === 1 ? 's' : ''} at another manifest; restoring would move ${moved.length === 1 ? 'it' : 'them'} back. Restore with force=true to do that.`,
          { extras: { tags: moved } })
      }
      // Moving a tag someone re-pushed takes its new image away, as a forced delete does: it needs `force` too.
      const forceRefused = moved.map(tag => denial('force', tag)).find(error => error !== undefined)
      if (forceRefused !== undefined) throw forceRefused
      // The bytes hash to the deleted digest (checked above), so the registry stores them under that same digest.
      for (const tag of deletion.removedTags) {
        await client.putManifest(deletion.name, tag, deletion.manifest as Buffer, deletion.mediaType as string)
          .catch((error: GatewayError) => { throw restoreFailure(error) })
      }
    })
  } catch (error) {
    await deps.audit.releaseRestore(deletion.id, restore.id)
    await deps.audit.settle(restore.id, { ...errorFields(error as GatewayError), durationMs: elapsed() })
    throw error
  }
  await settleQuietly(deps, restore, { outcome: 'restored', upstreamStatus: 201, durationMs: elapsed() })
  return {
    auditId: restore.id,
    deletionId: deletion.id,
    registry: deletion.registry,
    name: deletion.name,
    digest: deletion.digest as string,
    mediaType: deletion.mediaType as string,
    restoredTags: deletion.removedTags
  }
}
