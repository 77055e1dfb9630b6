/**
 * What every image use case (delete, restore, reconcile, audit listing) shares: the request context, how a policy
 * refusal becomes an error, how a failure is written to the trail, and how a record is settled once the registry
 * has acted.
 */
import type { AuditOutcome, AuditRecord } from '../audit/types.js'
import type { AuditTrail } from '../audit/trail.js'
import { GatewayError, isGatewayError, type ErrorCode } from '../errors.js'
import type { Action, Decision, Identity, Resource } from '../policy/types.js'
import type { RegistryClient } from '../registry/client.js'
import { isPlaceholder } from '../registry/untag.js'

export type Authorize = (identity: Identity, action: Action, resource: Resource) => Decision

export interface RequestContext {
  requestId: string
  /** The caller's X-Request-Id, when it sent a well-formed one. */
  clientRequestId?: string
  transport: AuditRecord['transport']
  /** A cleanup run's deletions carry the cleanup's id into their audit records. */
  cleanupId?: string
}

const OUTCOME_OF: Partial<Record<ErrorCode, AuditOutcome>> = {
  FORBIDDEN: 'denied',
  PROTECTED_TAG: 'denied',
  APPROVAL_REQUIRED: 'denied',
  SHARED_DIGEST: 'rejected',
  REFERENCED_BY_INDEX: 'rejected',
  PLAN_STALE: 'rejected',
  TAG_EXISTS: 'rejected',
  ALREADY_RESTORED: 'rejected',
  NOT_RESTORABLE: 'rejected',
  NOT_FOUND: 'not-found'
}

/** Failures after which the registry may or may not have acted. */
export const AMBIGUOUS: ReadonlySet<ErrorCode> = new Set(['UPSTREAM_TIMEOUT', 'UPSTREAM_UNAVAILABLE', 'UPSTREAM_ERROR'])

/** The policy's refusal as the catalogue error the caller sees, or undefined when it allows. */
export function denial (identity: Identity, action: Action, resource: Resource, decision: Decision): GatewayError | undefined {
  if (decision.allow) return undefined
  return new GatewayError(decision.code, decision.reason, {
    extras: { subject: identity.subject, roles: decision.roles, action, image: `${resource.repository}:${resource.tag}`, registry: resource.registry }
  })
}

/** The fields every audit record of one request starts with: who asked, through what, about which tag. */
export type AttemptFields = Pick<AuditRecord,
  'requestId' | 'clientRequestId' | 'transport' | 'subject' | 'groups' | 'action' | 'registry' | 'name' | 'tag' | 'cleanupId'>

export function attemptFields (
  identity: Identity, context: RequestContext, action: AuditRecord['action'], image: Pick<AuditRecord, 'registry' | 'name' | 'tag'>
): AttemptFields {
  return {
    requestId: context.requestId,
    ...(context.clientRequestId === undefined ? {} : { clientRequestId: context.clientRequestId }),
    transport: context.transport,
    ...(context.cleanupId === undefined ? {} : { cleanupId: context.cleanupId }),
    subject: identity.subject,
    groups: identity.groups,
    action,
    ...image
  }
}

export function errorFields (error: GatewayError): Pick<AuditRecord, 'outcome' | 'errorCode' | 'errorDetail' | 'upstreamStatus'> {
  const upstreamStatus = error.extras.upstreamStatus
  return {
    outcome: OUTCOME_OF[error.code] ?? 'failed',
    errorCode: error.code,
    errorDetail: error.detail,
    ...(typeof upstreamStatus === 'number' ? { upstreamStatus } : {})
  }
}

/**
 * Whether a manifest is gone, asked after a DELETE whose answer never arrived. Undefined when the registry
 * cannot tell us now either; the record then stays pending for start-up reconciliation.
 */
export async function manifestGone (client: RegistryClient, name: string, digest: string): Promise<boolean | undefined> {
  try {
    await client.resolve(name, digest)
    return false
  } catch (error) {
    if (isGatewayError(error) && error.code === 'NOT_FOUND') return true
    return undefined
  }
}

/**
 * Whether an untag happened: its tag no longer resolves. A tag on the digest it had means it did not; a tag on
 * another manifest someone pushed did not happen either, and `detail` says what the tag points at. A tag left on
 * one of the gateway's own swap placeholders (it stopped between the PUT and the DELETE) would otherwise point at
 * an empty image for good: the untag is finished by deleting the placeholder, which nothing else can name (each
 * has a nonce of its own), and then it happened. Undefined when the registry cannot tell now.
 */
export async function untagOutcome (client: RegistryClient, record: AuditRecord): Promise<{ happened: boolean, detail?: string } | undefined> {
  try {
    const now = (await client.resolve(record.name, record.tag)).digest
    if (now === record.digest) return { happened: false }
    if (!await isPlaceholderDigest(client, record.name, now)) return { happened: false, detail: `; ${record.name}:${record.tag} points at ${now} now` }
    await client.deleteManifest(record.name, now)
    return { happened: true, detail: `; the tag was left on the untag's placeholder ${now}, which was deleted to finish the untag` }
  } catch (error) {
    if (isGatewayError(error) && error.code === 'NOT_FOUND') return { happened: true }
    return undefined
  }
}

/** Only a manifest read whole and recognised is a placeholder: anything the registry will not show is left alone. */
async function isPlaceholderDigest (client: RegistryClient, repository: string, digest: string): Promise<boolean> {
  try {
    return isPlaceholder((await client.getManifest(repository, digest, 'pull')).bytes)
  } catch {
    return false
  }
}

export interface SettleDeps {
  audit: AuditTrail
  onAuditLost: (error: unknown, record: AuditRecord) => void
}

export async function settleQuietly (deps: SettleDeps, record: AuditRecord, changes: Parameters<AuditTrail['settle']>[1]): Promise<void> {
  try {
    await deps.audit.settle(record.id, changes)
  } catch (error) {
    // The registry already acted: answering with an error would make the caller retry a deletion that happened.
    deps.onAuditLost(error, record)
  }
}
