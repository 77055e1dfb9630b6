import type { AuditOutcome, AuditRecord } from '../audit/types.js'
import type { AuditTrail } from '../audit/trail.js'
import { GatewayError, isGatewayError, type ErrorCode } from '../errors.js'
import type { Action, Decision, Identity, Resource } from '../policy/types.js'
import type { RegistryClient } from '../registry/client.js'
import type { RegistryDirectory } from '../registry/directory.js'
import { parseImageRef } from '../registry/reference.js'
import { isIndex } from '../registry/media-types.js'
import { findCoTags, lateCoTags, ManifestBudget, type CoTagScan, type ScansPerCaller } from './co-tags.js'
import type { DeleteImageResult } from './shapes.js'

export type Authorize = (identity: Identity, action: Action, resource: Resource) => Decision

export interface RequestContext {
  requestId: string
  /** The caller's X-Request-Id, when it sent a well-formed one. */
  clientRequestId?: string
  transport: AuditRecord['transport']
}

export interface DeleteImageDeps {
  registries: RegistryDirectory
  authorize: Authorize
  /** An Authorize bound to the policy in force now, so one request is judged by one policy. */
  authorizer?: () => Authorize
  /** False when no rule of the caller's roles grants `audit` anywhere: the trail is refused without reading it. */
  mayAuditAnything: (identity: Identity) => boolean
  audit: AuditTrail
  coTagConcurrency: number
  /** Manifests one request may fetch to check co-tags; beyond it the request is refused, nothing fetched. */
  coTagScanLimit: number
  /** Co-tag scans in flight per caller identity. */
  coTagScans: ScansPerCaller
  /** Tags the policy in force protects by name in a repository: looked up again right before each DELETE. */
  literalProtectedTags: (registry: string, repository: string) => string[]
  /** Told when the registry acted but the audit trail could not record it (reconciled at the next start). */
  onAuditLost: (error: unknown, record: AuditRecord) => void
}

export interface DeleteImageInput {
  identity: Identity
  context: RequestContext
  name: string
  tag: string
  registry?: string
  dryRun?: boolean
  force?: boolean
  /** The request's abort signal: a caller that goes away stops the co-tag scan. */
  signal?: AbortSignal
}

const OUTCOME_OF: Partial<Record<ErrorCode, AuditOutcome>> = {
  FORBIDDEN: 'denied',
  PROTECTED_TAG: 'denied',
  SHARED_DIGEST: 'rejected',
  REFERENCED_BY_INDEX: 'rejected',
  TAG_EXISTS: 'rejected',
  ALREADY_RESTORED: 'rejected',
  NOT_RESTORABLE: 'rejected',
  NOT_FOUND: 'not-found'
}

/** Settles (never rejects) when the deletion of that registry, repository and digest is over. */
const deletesInFlight = new Map<string, Promise<void>>()

/** Failures after which the DELETE may or may not have reached the registry. */
const AMBIGUOUS: ReadonlySet<ErrorCode> = new Set(['UPSTREAM_TIMEOUT', 'UPSTREAM_UNAVAILABLE', 'UPSTREAM_ERROR'])

function denial (identity: Identity, action: Action, resource: Resource, decision: Decision): GatewayError | undefined {
  if (decision.allow) return undefined
  return new GatewayError(decision.code, decision.reason, {
    extras: { subject: identity.subject, roles: decision.roles, action, image: `${resource.repository}:${resource.tag}`, registry: resource.registry }
  })
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
 * Deletes one tag's manifest the safe way: validate, authorize, resolve the digest DELETE accepts, refuse when
 * other tags share it (unless forced and allowed for each of them), write the exact manifest bytes ahead to the
 * audit trail, then delete exactly that digest and record the outcome. Every attempt that passes validation is
 * recorded, allowed or not. A dry-run needs only `read`; it takes every step but the DELETE and reports, in
 * `allowed` and `reason`, whether the caller's real call would pass authorization.
 */
export async function deleteImage (deps: DeleteImageDeps, input: DeleteImageInput): Promise<DeleteImageResult> {
  const scanSlot = { release: (): void => {} }
  // The caller's co-tag scan slot is given back however the attempt ends.
  return await attemptDeletion(deps, input, scanSlot).finally(() => { scanSlot.release() })
}

async function attemptDeletion (deps: DeleteImageDeps, input: DeleteImageInput, scanSlot: { release: () => void }): Promise<DeleteImageResult> {
  const { name, tag } = parseImageRef(input.name, input.tag)
  const client = deps.registries.get(input.registry)
  const dryRun = input.dryRun === true
  const started = performance.now()
  const resource = { registry: client.name, repository: name, tag }
  const elapsed = (): number => Math.round(performance.now() - started)
  const authorize = deps.authorizer?.() ?? deps.authorize
  const check = (action: Action, target: Resource): GatewayError | undefined =>
    denial(input.identity, action, target, authorize(input.identity, action, target))
  const attempt = {
    requestId: input.context.requestId,
    ...(input.context.clientRequestId === undefined ? {} : { clientRequestId: input.context.clientRequestId }),
    transport: input.context.transport,
    subject: input.identity.subject,
    groups: input.identity.groups,
    action: dryRun ? 'dry-run' as const : 'delete' as const,
    registry: client.name,
    name,
    tag
  }
  let decision = { allow: false, reason: 'not yet authorized' }
  let found: { digest: string, mediaType: string, removedTags: string[] } | undefined
  let pending: AuditRecord | undefined
  try {
    const entryAction = dryRun ? 'read' : 'delete'
    const entry = authorize(input.identity, entryAction, resource)
    decision = { allow: entry.allow, reason: entry.reason }
    const refusedEntry = denial(input.identity, entryAction, resource, entry)
    if (refusedEntry !== undefined) throw refusedEntry
    scanSlot.release = deps.coTagScans.acquire(input.identity.subject)

    // A real deletion reads the manifest bytes now, in the same request that resolves the digest, to save them.
    const manifest = dryRun ? undefined : await client.getManifest(name, tag)
    const { digest, mediaType } = manifest ?? await client.resolve(name, tag)
    found = { digest, mediaType, removedTags: [] }
    // Listed as late as possible, right before the DELETE, so a tag added meanwhile is still seen.
    const indexes = new Map<string, string[]>()
    const scan: CoTagScan = { concurrency: deps.coTagConcurrency, budget: new ManifestBudget(deps.coTagScanLimit), signal: input.signal }
    const first = await findCoTags(client, name, digest, tag, isIndex(mediaType) ? scan : { ...scan, indexes })
    await refuseIfReferenced(client, name, digest, indexes, scan)
    /** Throws SHARED_DIGEST without force; answers the first co-tag (or force) the caller may not delete. */
    const judge = (coTags: string[], late: string[]): GatewayError | undefined => {
      if (coTags.length > 0 && input.force !== true) {
        const meanwhile = late.length === 0 ? '' : ` (${late.join(', ')} since the check began)`
        throw new GatewayError('SHARED_DIGEST',
          `${name}:${tag} points at ${digest}, which is also tagged ${coTags.join(', ')}${meanwhile}; deleting it removes all of them. Delete with force=true to remove every one of these tags, or re-tag first.`,
          { extras: { digest, sharedWith: coTags } })
      }
      // Deleting pr-1 must never take latest with it: every tag that goes needs its own permission.
      return (dryRun ? check('delete', resource) : undefined) ??
        (coTags.length > 0 ? check('force', resource) : undefined) ??
        coTags.map(coTag => check('delete', { ...resource, tag: coTag })).find(found => found !== undefined)
    }
    const refusal = judge(first.coTags, [])
    found.removedTags = [tag, ...first.coTags]
    if (refusal !== undefined) decision = { allow: false, reason: refusal.detail }
    if (refusal !== undefined && !dryRun) throw refusal
    const result = {
      registry: client.name, name, tag, digest, mediaType, dryRun, deleted: !dryRun, removedTags: found.removedTags,
      allowed: refusal === undefined,
      ...(refusal === undefined ? {} : { reason: `${refusal.code}: ${refusal.detail}` })
    }
    if (manifest === undefined) {
      const record = await deps.audit.record({ ...attempt, ...found, decision, outcome: 'dry-run', durationMs: elapsed() })
      return { auditId: record.id, ...result }
    }
    // One DELETE of a digest at a time: the registry may accept two concurrent ones (both 202).
    const key = `${client.name}\u0000${name}\u0000${digest}`
    while (deletesInFlight.has(key)) await deletesInFlight.get(key)
    let finished!: () => void
    deletesInFlight.set(key, new Promise<void>(resolve => { finished = resolve }))
    try {
      // Looked at again as late as possible: a tag pushed onto this digest during the scan would go with it,
      // unseen and out of the audit record, so undo could not bring it back. (The registry has no conditional
      // DELETE: a tag pushed between this look and the DELETE is still lost; the README says so.)
      const late = await lateCoTags(client, name, digest, tag, first, deps.literalProtectedTags(client.name, name), scan)
      if (late.length > 0) {
        const coTags = [...first.coTags, ...late].sort()
        const lateRefusal = judge(coTags, late)
        if (lateRefusal !== undefined) {
          decision = { allow: false, reason: lateRefusal.detail }
          throw lateRefusal
        }
        found.removedTags = [tag, ...coTags]
      }
      pending = await deps.audit.record({ ...attempt, ...found, decision, outcome: 'pending', manifest: manifest.bytes })
      await client.deleteManifest(name, digest)
    } finally {
      deletesInFlight.delete(key)
      finished()
    }
    await settleQuietly(deps, pending, { outcome: 'deleted', upstreamStatus: 202, durationMs: elapsed() })
    return { auditId: pending.id, ...result, removedTags: found.removedTags }
  } catch (error) {
    if (!isGatewayError(error) || error.code === 'AUDIT_UNAVAILABLE') throw error
    if (pending === undefined) {
      await deps.audit.record({ ...attempt, ...found, removedTags: found?.removedTags ?? [], decision, ...errorFields(error), durationMs: elapsed() })
      throw error
    }
    return await settleFailedDelete(deps, client, pending, error, elapsed)
  }
}

function childDigests (bytes: Buffer, registry: string, what: string): unknown[] {
  try {
    // Anything that is not an index with a manifests list throws here: a registry sending that is not trusted.
    return (JSON.parse(bytes.toString('utf8')) as { manifests: Array<{ digest?: unknown }> }).manifests.map(child => child.digest)
  } catch {
    throw new GatewayError('UPSTREAM_ERROR', `registry "${registry}" sent ${what}, which is not a valid image index; refusing to decide on it.`)
  }
}

/**
 * A platform manifest that a tagged index or list still references must stay: deleting it would leave that
 * multi-platform image broken (distribution does not check). Not even force overrides this.
 */
async function refuseIfReferenced (client: RegistryClient, name: string, digest: string, indexes: Map<string, string[]>, scan: CoTagScan): Promise<void> {
  const referencing: Array<{ digest: string, tags: string[] }> = []
  scan.budget.spend(indexes.size, `which multi-platform images of ${name} reference ${digest}`)
  for (const [indexDigest, tags] of indexes) {
    const children = childDigests((await client.getManifest(name, indexDigest, 'pull,delete', scan.signal)).bytes, client.name, `${name}@${indexDigest}`)
    if (children.includes(digest)) referencing.push({ digest: indexDigest, tags: [...tags].sort() })
  }
  if (referencing.length === 0) return
  const tags = referencing.flatMap(index => index.tags)
  throw new GatewayError('REFERENCED_BY_INDEX',
    `${digest} is a platform image of the multi-platform image tagged ${tags.join(', ')}; deleting it would break ${tags.length === 1 ? 'that tag' : 'those tags'}. Delete the multi-platform tag instead.`,
    { extras: { digest, referencedBy: referencing } })
}

export async function settleQuietly (deps: Pick<DeleteImageDeps, 'audit' | 'onAuditLost'>, record: AuditRecord, changes: Parameters<AuditTrail['settle']>[1]): Promise<void> {
  try {
    await deps.audit.settle(record.id, changes)
  } catch (error) {
    // The registry already acted: answering with an error would make the caller retry a deletion that happened.
    deps.onAuditLost(error, record)
  }
}

/**
 * The DELETE failed after the write-ahead record. When its answer was lost (timeout, reset, 5xx) the registry
 * is asked whether the manifest is gone, so the record says what really happened.
 */
async function settleFailedDelete (deps: DeleteImageDeps, client: RegistryClient, pending: AuditRecord, error: GatewayError, elapsed: () => number): Promise<never> {
  const digest = pending.digest as string
  const gone = AMBIGUOUS.has(error.code) ? await manifestGone(client, pending.name, digest) : false
  if (gone === true) {
    await settleQuietly(deps, pending, { outcome: 'deleted', errorCode: error.code, errorDetail: `the registry's answer was lost (${error.detail}), but the manifest is gone`, durationMs: elapsed() })
  } else if (gone === false) {
    await settleQuietly(deps, pending, { ...errorFields(error), durationMs: elapsed() })
  }
  throw error
}
