/**
 * Deleting one tag: resolve (the digest the tag points at) → plan (what goes: untag or the digest, with the co-tag
 * guard for digest and auto) → authorize the plan (RBAC on every tag it removes) → write ahead (the audit record and
 * the manifest bytes, before the registry is touched) → execute (after re-checking the plan still holds) → settle.
 */
import type { AuditRecord } from '../audit/types.js'
import type { AuditTrail } from '../audit/trail.js'
import { GatewayError, invalidField, isGatewayError } from '../errors.js'
import type { Action, Decision, Identity, Resource } from '../policy/types.js'
import type { Manifest, RegistryClient } from '../registry/client.js'
import type { RegistryDirectory } from '../registry/directory.js'
import { parseImageRef } from '../registry/reference.js'
import { isIndex } from '../registry/media-types.js'
import { repositoryLockKey, type KeyedLock, type Untagger, type UntagStrategy } from '../registry/untag.js'
import { AMBIGUOUS, attemptFields, denial, errorFields, manifestGone, settleQuietly, untagOutcome, type Authorize, type RequestContext } from './attempt.js'
import {
  findCoTags, lateCoTags, ManifestBudget, type CoTagFindings, type CoTagScan, type RepositoryTags, type ScansPerCaller, type SharedTagScans
} from './co-tags.js'
import { makePlan, PLAN_ID, type DeleteMode, type DeletionPlan, type PlanContent, type PlanDecision } from './plan.js'
import type { PlanBook } from './approvals.js'
import type { DeleteImageResult } from './shapes.js'

export type { Authorize, RequestContext }

/** What the image use cases (delete, restore, audit listing) are given by the app, once. */
export interface ImageServices {
  registries: RegistryDirectory
  /** An Authorize bound to the policy in force now: called once per request, so one request is judged by one policy. */
  authorizer: () => Authorize
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
  /** Per registry: how one tag is removed, and the mode of a request that names none. */
  registrySettings: (registry: string) => { untagStrategy: UntagStrategy, defaultMode: DeleteMode }
  /** Tag-changing work in one repository, one at a time (the untagger holds the same lock). */
  locks: KeyedLock
  untagger: Untagger
  /** Told when the registry acted but the audit trail could not record it (reconciled at the next start or periodic pass). */
  onAuditLost: (error: unknown, record: AuditRecord) => void
  /** Dry-runs' plans and their approvals, for executing a plan by its id later (POST /plans/<id>/…). */
  plans: PlanBook
  /** A cleanup run's: one co-tag scan per repository shared by its removals, instead of one per removal. */
  sharedScans?: SharedTagScans
}

export interface DeleteImageInput {
  identity: Identity
  context: RequestContext
  /** The repository (the distribution spec's `<name>`), as the caller wrote it: validated here. */
  repository: string
  tag: string
  registry?: string
  /** The registry's defaultMode when absent. */
  mode?: DeleteMode
  dryRun?: boolean
  force?: boolean
  /** A plan made earlier (a dry-run's planId): refused with PLAN_STALE unless the plan made now is that one. */
  planId?: string
  /** Who approved this deletion, when a rule the caller relies on requires approval: checked here, not by the edge. */
  approvedBy?: Identity
  /** The request's abort signal: a caller that goes away stops the co-tag scan. */
  signal?: AbortSignal
}

/** The scan a plan was made from, kept for the late look right before a digest DELETE; `tags` when it is a run's shared view. */
interface PlanScan { scan: CoTagScan, first: CoTagFindings, tags?: RepositoryTags }

/** One request's attempt, as its audit records see it; `pending` is set once the write-ahead record exists. */
interface Run {
  deps: ImageServices
  client: RegistryClient
  input: DeleteImageInput
  authorize: Authorize
  attempt: ReturnType<typeof attemptFields> & { mode: DeleteMode, approvedBy?: string }
  decision: { allow: boolean, reason: string }
  elapsed: () => number
  pending?: AuditRecord
  /** The approver and the policy's reason, once an approval was needed and given. */
  approval?: string
  /** Whether the caller may read a tag of this repository: answers and refusals name no other tag. */
  readable: (tag: string) => boolean
  /** What the attempt found so far, for the record of a refusal. */
  found?: Pick<AuditRecord, 'digest' | 'mediaType' | 'removedTags' | 'deleteAction' | 'strategy'>
}

/** The tags the caller may read, and how many others there are: a co-tag it may not read is counted, not named. */
function visibleTags (run: Pick<Run, 'readable'>, tags: readonly string[]): { shown: string[], hidden: string[] } {
  const shown: string[] = []
  const hidden: string[] = []
  for (const tag of tags) (run.readable(tag) ? shown : hidden).push(tag)
  return { shown, hidden }
}

function hiddenCount (hidden: readonly string[]): { hiddenTags?: number } {
  return hidden.length === 0 ? {} : { hiddenTags: new Set(hidden).size }
}

function tagList (tags: { shown: string[], hidden: string[] }): string {
  const others = tags.hidden.length === 0 ? [] : [`${new Set(tags.hidden).size} more you may not read`]
  return [...tags.shown, ...others].join(', ')
}

function sharedDigest (
  run: Pick<Run, 'readable'>, plan: Pick<DeletionPlan, 'repository' | 'tag' | 'digest'>, allCoTags: string[], allLate: string[]
): GatewayError {
  const tags = visibleTags(run, allCoTags)
  const coTags = tagList(tags)
  const late = visibleTags(run, allLate).shown
  const meanwhile = late.length === 0 ? '' : ` (${late.join(', ')} since the check began)`
  return new GatewayError('SHARED_DIGEST',
    `${plan.repository}:${plan.tag} points at ${plan.digest}, which is also tagged ${coTags}${meanwhile}; deleting it removes all of them. Delete with mode=untag to remove only this tag, with force=true to remove every one of these tags, or re-tag first.`,
    { extras: { digest: plan.digest, sharedWith: tags.shown, ...hiddenCount(tags.hidden) } })
}

function referencedByIndex (run: Pick<Run, 'readable'>, digest: string, referencing: DeletionPlan['referencedBy']): GatewayError {
  const all = referencing.flatMap(index => index.tags)
  const tags = visibleTags(run, all)
  return new GatewayError('REFERENCED_BY_INDEX',
    `${digest} is a platform image of the multi-platform image tagged ${tagList(tags)}; deleting it would break ${all.length === 1 ? 'that tag' : 'those tags'}. Delete the multi-platform tag instead, or remove only this tag with mode=untag.`,
    { extras: { digest, referencedBy: visibleIndexes(run, referencing), ...hiddenCount(tags.hidden) } })
}

function visibleIndexes (run: Pick<Run, 'readable'>, referencing: DeletionPlan['referencedBy']): DeletionPlan['referencedBy'] {
  return referencing.map(index => ({ ...index, tags: visibleTags(run, index.tags).shown }))
}

function planStale (run: Pick<Run, 'readable'>, plan: DeletionPlan, expected: string): GatewayError {
  const removed = visibleTags(run, plan.removedTags)
  return new GatewayError('PLAN_STALE',
    `plan ${expected} no longer holds: ${plan.repository}:${plan.tag} now points at ${plan.digest} and removing it would ${plan.action === 'untagged' ? 'untag only it' : `delete that digest with ${tagList(removed)}`}, which is plan ${plan.id}. Nothing was changed; make a new dry-run and confirm that plan.`,
    {
      extras: { planId: expected, currentPlanId: plan.id, digest: plan.digest, action: plan.action, removedTags: removed.shown, ...hiddenCount(removed.hidden) }
    })
}

function childDigests (bytes: Buffer, registry: string, what: string): unknown[] {
  try {
    // Anything that is not an index with a manifests list throws here: a registry sending that is not trusted.
    return (JSON.parse(bytes.toString('utf8')) as { manifests: Array<{ digest?: unknown }> }).manifests.map(child => child.digest)
  } catch {
    throw new GatewayError('UPSTREAM_ERROR', `registry "${registry}" sent ${what}, which is not a valid image index; refusing to decide on it.`)
  }
}

/** The tagged indexes and lists that reference `digest`: deleting it would leave those multi-platform images broken. */
async function referencingIndexes (
  client: RegistryClient, repository: string, digest: string, indexes: Map<string, string[]>, scan: CoTagScan, known = new Map<string, unknown[]>(),
  fetches = indexes.size
): Promise<DeletionPlan['referencedBy']> {
  const referencing: DeletionPlan['referencedBy'] = []
  scan.budget.spend(fetches, `which multi-platform images of ${repository} reference ${digest}`)
  for (const [indexDigest, tags] of indexes) {
    let children = known.get(indexDigest)
    if (children === undefined) {
      const index = await client.getManifest(repository, indexDigest, 'pull,delete', scan.signal)
      children = childDigests(index.bytes, client.name, `${repository}@${indexDigest}`)
      known.set(indexDigest, children)
    }
    if (children.includes(digest)) referencing.push({ digest: indexDigest, tags: [...tags].sort() })
  }
  return referencing
}

/**
 * The late look's index check with a run's shared view, which resolves a tag once: an index tag pushed (or a protected
 * one moved) since the scan is known only from the late look, and one listing the digest would break with it, as a
 * single deletion's own scan would have found. Children read earlier in the run are neither fetched nor counted again.
 */
async function lateReferences (
  client: RegistryClient, plan: Pick<DeletionPlan, 'repository' | 'tag' | 'digest'>, tags: RepositoryTags, scan: CoTagScan
): Promise<DeletionPlan['referencedBy']> {
  const indexes = new Map<string, string[]>()
  tags.findings(plan.digest, plan.tag, indexes)
  const unread = [...indexes.keys()].filter(index => !tags.children.has(index)).length
  return await referencingIndexes(client, plan.repository, plan.digest, indexes, scan, tags.children, unread)
}

/**
 * What removing the tag does, found without changing anything. `untag` needs no scan: it touches no other tag.
 * `digest` and `auto` list the co-tags and the indexes that reference the digest; `digest` refuses when deleting
 * would take them along (co-tags unless forced; index children always), `auto` untags instead.
 */
type Resolved = Pick<PlanContent, 'repository' | 'tag' | 'digest' | 'mediaType'>
type Planned = { content: PlanContent, scan?: PlanScan }
type PlanBase = Pick<PlanContent, 'registry' | 'repository' | 'tag' | 'digest' | 'mediaType' | 'mode'>

function untagContent (run: Run, base: PlanBase, sharedWith: string[], referencedBy: DeletionPlan['referencedBy']): PlanContent {
  const strategy = run.deps.registrySettings(run.client.name).untagStrategy
  return { ...base, force: false, action: 'untagged', strategy, removedTags: [base.tag], sharedWith, referencedBy }
}

async function planAfterScan (run: Run, base: PlanBase): Promise<Planned> {
  const { deps, client, input } = run
  const { mode } = base
  const indexes = new Map<string, string[]>()
  const scan: CoTagScan = { concurrency: deps.coTagConcurrency, budget: new ManifestBudget(deps.coTagScanLimit), signal: input.signal }
  const scanned = isIndex(base.mediaType) ? scan : { ...scan, indexes }
  const { first, tags } = deps.sharedScans === undefined
    ? { first: await findCoTags(client, base.repository, base.digest, base.tag, scanned), tags: undefined }
    : await deps.sharedScans.findCoTags(client, base, scanned)
  const referencedBy = await referencingIndexes(client, base.repository, base.digest, indexes, scan, tags?.children)
  const force = mode === 'digest' && input.force === true
  if (mode === 'digest' && referencedBy.length > 0) throw referencedByIndex(run, base.digest, referencedBy)
  if (mode === 'digest' && first.coTags.length > 0 && !force) throw sharedDigest(run, base, first.coTags, [])
  if (mode === 'auto' && (first.coTags.length > 0 || referencedBy.length > 0)) {
    return { content: untagContent(run, base, first.coTags, referencedBy), scan: { scan, first, ...(tags === undefined ? {} : { tags }) } }
  }
  return {
    content: {
      ...base, force, action: 'deleted-digest', strategy: 'digest', removedTags: [base.tag, ...first.coTags], sharedWith: first.coTags, referencedBy
    },
    scan: { scan, first, ...(tags === undefined ? {} : { tags }) }
  }
}

/** One planner per mode: a mode added to DeleteMode does not compile until it says how it plans. */
const PLANNERS: Record<DeleteMode, (run: Run, base: PlanBase) => Promise<Planned>> = {
  auto: planAfterScan,
  untag: async (run, base) => ({ content: untagContent(run, base, [], []) }),
  digest: planAfterScan
}

async function planDeletion (run: Run, found: Resolved): Promise<Planned> {
  const { mode } = run.attempt
  return await PLANNERS[mode](run, { ...found, registry: run.client.name, mode })
}

/**
 * The core's own check of the options the edges validate too: the use case is called by more than the REST and
 * GraphQL edges (executePlan, tests, future adapters), and a bad mode or plan id must never reach the registry.
 */
function checkOptions (input: DeleteImageInput): void {
  const mode: unknown = input.mode
  if (mode !== undefined && (typeof mode !== 'string' || !Object.hasOwn(PLANNERS, mode))) {
    const modes = Object.keys(PLANNERS)
    throw invalidField('mode', modes.join('|'), `mode must be one of ${modes.join(', ')} (got ${JSON.stringify(String(mode).slice(0, 40))}).`)
  }
  const planId: unknown = input.planId
  if (planId !== undefined && (typeof planId !== 'string' || !PLAN_ID.test(planId))) {
    throw invalidField('planId', `matches ${PLAN_ID.source}`, `planId must be a plan id as a dry-run answers it (${PLAN_ID.source}).`)
  }
}

/**
 * The policy questions a plan raises: a dry-run (entered with `read`) asks whether the real call may `delete`;
 * deleting a digest other tags share needs `force` and `delete` on every one of them, so deleting pr-1 never takes
 * latest along unless the caller may delete latest too. An untag removes one tag and needs nothing more.
 */
function authorizePlan (run: Run, plan: PlanContent, dryRun: boolean): { decisions: PlanDecision[], refusal?: GatewayError } {
  const resource: Resource = { registry: plan.registry, repository: plan.repository, tag: plan.tag }
  const questions: Array<[Action, Resource]> = [
    ...(dryRun ? [['delete', resource] as [Action, Resource]] : []),
    ...(plan.action === 'deleted-digest' && plan.sharedWith.length > 0
      ? [['force', resource] as [Action, Resource], ...plan.sharedWith.map(coTag => ['delete', { ...resource, tag: coTag }] as [Action, Resource])]
      : [])
  ]
  let refusal: GatewayError | undefined
  const decisions = questions.map(([action, target]) => {
    const decision = run.authorize(run.input.identity, action, target)
    refusal ??= denial(run.input.identity, action, target, decision) ?? approvalRefusal(run, decision, target, dryRun)
    return { action, tag: target.tag, allow: decision.allow, reason: decision.reason }
  })
  return { decisions, ...(refusal === undefined ? {} : { refusal }) }
}

function auditFields (plan: DeletionPlan): Pick<AuditRecord, 'digest' | 'mediaType' | 'removedTags' | 'deleteAction' | 'strategy'> {
  return { digest: plan.digest, mediaType: plan.mediaType, removedTags: plan.removedTags, deleteAction: plan.action, strategy: plan.strategy }
}

function resultOf (
  run: Pick<Run, 'readable'>, plan: DeletionPlan, dryRun: boolean, refusal?: GatewayError,
  taken: Pick<DeletionPlan, 'removedTags' | 'sharedWith'> = plan
): Omit<DeleteImageResult, 'auditId'> {
  const removed = visibleTags(run, taken.removedTags)
  const shared = visibleTags(run, taken.sharedWith)
  const indexTags = visibleTags(run, plan.referencedBy.flatMap(index => index.tags))
  return {
    registry: plan.registry,
    name: plan.repository,
    tag: plan.tag,
    digest: plan.digest,
    mediaType: plan.mediaType,
    mode: plan.mode,
    action: plan.action,
    strategy: plan.strategy,
    planId: plan.id,
    dryRun,
    deleted: !dryRun,
    removedTags: removed.shown,
    sharedWith: shared.shown,
    referencedBy: visibleIndexes(run, plan.referencedBy),
    ...hiddenCount([...removed.hidden, ...shared.hidden, ...indexTags.hidden]),
    allowed: refusal === undefined,
    ...(refusal === undefined ? {} : { reason: `${refusal.code}: ${refusal.detail}` })
  }
}

/**
 * Removes one tag the safe way, as a pipeline whose middle is a value: resolve the tag, plan what removing it
 * does (`mode`: untag only it, delete its digest, or `auto`: delete the digest when nothing else needs it, else
 * untag), authorize the plan, write the exact manifest bytes ahead to the audit trail, execute, settle the record.
 * Every attempt that passes validation is recorded, allowed or not. A dry-run needs only `read`; it stops after
 * the plan and reports, in `allowed` and `reason`, whether the caller's real call would pass authorization.
 */
export async function deleteImage (deps: ImageServices, input: DeleteImageInput): Promise<DeleteImageResult> {
  const scanSlot = { release: (): void => {} }
  // The caller's co-tag scan slot is given back however the attempt ends.
  return await attemptDeletion(deps, input, scanSlot).finally(() => { scanSlot.release() })
}

/**
 * Executes a plan made earlier (chat confirmations, the web page's preview, bulk cleanups): the plan is made
 * again, authorized again, and executed only if it is still the same plan, else PLAN_STALE and nothing changes.
 */
export interface ExecutePlanInput {
  identity: Identity
  context: RequestContext
  /** What names the plan; the rest is found again. */
  plan: Pick<DeletionPlan, 'id' | 'registry' | 'repository' | 'tag' | 'mode' | 'force'>
  signal?: AbortSignal
  approvedBy?: Identity
}

export async function executePlan (deps: ImageServices, input: ExecutePlanInput): Promise<DeleteImageResult> {
  const { plan } = input
  return await deleteImage(deps, {
    identity: input.identity,
    context: input.context,
    registry: plan.registry,
    repository: plan.repository,
    tag: plan.tag,
    mode: plan.mode,
    force: plan.force,
    planId: plan.id,
    ...(input.signal === undefined ? {} : { signal: input.signal }),
    ...(input.approvedBy === undefined ? {} : { approvedBy: input.approvedBy })
  })
}

function approvalNeeded (identity: Identity, resource: Resource): GatewayError {
  const image = `${resource.repository}:${resource.tag}`
  return new GatewayError('APPROVAL_REQUIRED',
    `${identity.subject} may delete ${image} in registry ${resource.registry} only once someone else holding approve on it approves; ask for approval (in chat: Request approval).`,
    { extras: { subject: identity.subject, image, registry: resource.registry } })
}

/**
 * What rules requiring approval allow (the tag, or a co-tag a forced deletion removes) runs only with an approver
 * who is someone else and holds `approve` on that tag; a dry-run reports that approval is needed. The approver is
 * kept on the run, so the audited decision names them. Undefined when it may run.
 */
function approvalRefusal (run: Run, decision: Decision, resource: Resource, dryRun: boolean): GatewayError | undefined {
  if (decision.approval !== 'required') return undefined
  const { identity, approvedBy } = run.input
  const image = `${resource.repository}:${resource.tag}`
  if (dryRun || approvedBy === undefined) return approvalNeeded(identity, resource)
  if (approvedBy.subject === identity.subject) {
    return new GatewayError('FORBIDDEN', `${identity.subject} may not approve a deletion of their own: another person must approve ${image}.`,
      { extras: { subject: identity.subject, action: 'approve', image, registry: resource.registry } })
  }
  const approval = run.authorize(approvedBy, 'approve', resource)
  const refused = denial(approvedBy, 'approve', resource, approval)
  if (refused === undefined && run.approval === undefined) {
    run.approval = `${approvedBy.subject}: ${approval.reason}`
    run.attempt.approvedBy = approvedBy.subject
  }
  return refused
}

async function attemptDeletion (deps: ImageServices, input: DeleteImageInput, scanSlot: { release: () => void }): Promise<DeleteImageResult> {
  checkOptions(input)
  const { repository, tag } = parseImageRef(input.repository, input.tag)
  const client = deps.registries.get(input.registry)
  const dryRun = input.dryRun === true
  const started = performance.now()
  const resource = { registry: client.name, repository, tag }
  const mode = input.mode ?? deps.registrySettings(client.name).defaultMode
  const authorize = deps.authorizer()
  const run: Run = {
    deps,
    client,
    input,
    authorize,
    attempt: { ...attemptFields(input.identity, input.context, dryRun ? 'dry-run' : 'delete', { registry: client.name, name: repository, tag }), mode },
    decision: { allow: false, reason: 'not yet authorized' },
    elapsed: () => Math.round(performance.now() - started),
    readable: tag => tag === input.tag || authorize(input.identity, 'read', { ...resource, tag }).allow
  }
  try {
    const entryAction = dryRun ? 'read' : 'delete'
    const entry = run.authorize(input.identity, entryAction, resource)
    run.decision = { allow: entry.allow, reason: entry.reason }
    const refusedEntry = denial(input.identity, entryAction, resource, entry) ?? (dryRun ? undefined : approvalRefusal(run, entry, resource, false))
    if (refusedEntry !== undefined) throw refusedEntry
    // An untag checks no co-tags, so it takes no scan slot: many untags of one caller may run at once.
    if (mode !== 'untag') scanSlot.release = deps.coTagScans.acquire(input.identity.subject)

    // An explicit untag reads the tag under the repository's lock and keeps it to the end: what it read is what it
    // removes, with no second look (3 registry requests for a swap, 1 more for the bytes; native 1 + 1).
    const readUnderLock = mode === 'untag' && !dryRun
    return readUnderLock
      ? await deps.locks.run(repositoryLockKey(client.name, repository), async () => await resolveAndRun(run, readUnderLock))
      : await resolveAndRun(run, readUnderLock)
  } catch (error) {
    if (!isGatewayError(error) || error.code === 'AUDIT_UNAVAILABLE') throw error
    if (run.pending === undefined) {
      const refused = { ...run.found, removedTags: run.found?.removedTags ?? [], decision: run.decision, ...errorFields(error), durationMs: run.elapsed() }
      await deps.audit.record({ ...run.attempt, ...refused })
      throw error
    }
    return await settleFailure(run, run.pending, error)
  }
}

/** Resolves the tag, plans what removing it does, authorizes the plan, then answers the dry-run or executes it. */
async function resolveAndRun (run: Run, readUnderLock: boolean): Promise<DeleteImageResult> {
  const { deps, client, input } = run
  const { name: repository, tag } = run.attempt
  const dryRun = input.dryRun === true
  // A real deletion reads the manifest bytes now, in the same request that resolves the digest, to save them.
  const manifest = dryRun ? undefined : await client.getManifest(repository, tag)
  const { digest, mediaType } = manifest ?? await client.resolve(repository, tag)
  run.found = { digest, mediaType, removedTags: [] }
  const planned = await planDeletion(run, { repository, tag, digest, mediaType })
  const { decisions, refusal } = authorizePlan(run, planned.content, dryRun)
  const plan = makePlan(planned.content, decisions)
  run.found = auditFields(plan)
  if (refusal !== undefined) run.decision = { allow: false, reason: refusal.detail }
  else if (run.approval !== undefined) run.decision = { allow: true, reason: `${run.decision.reason}; approved by ${run.approval}` }
  if (refusal !== undefined && !dryRun) throw refusal
  if (input.planId !== undefined && input.planId !== plan.id) throw planStale(run, plan, input.planId)
  if (manifest === undefined) {
    await deps.plans.remember(plan, input.identity.subject, Date.now())
    const record = await deps.audit.record({ ...run.attempt, ...run.found, decision: run.decision, outcome: 'dry-run', durationMs: run.elapsed() })
    return { auditId: record.id, ...resultOf(run, plan, true, refusal) }
  }
  return plan.action === 'untagged'
    ? await untag(run, plan, manifest, readUnderLock, planned.scan?.tags)
    : await deleteDigest(run, plan, manifest, planned.scan as PlanScan)
}

/** Removes only the plan's tag, with the registry's strategy; the saved bytes let undo put it back. */
async function untag (run: Run, plan: DeletionPlan, manifest: Manifest, readUnderLock = false, tags?: RepositoryTags): Promise<DeleteImageResult> {
  const { deps, client } = run
  const pending = await deps.audit.record({ ...run.attempt, ...auditFields(plan), decision: run.decision, outcome: 'pending', manifest: manifest.bytes })
  run.pending = pending
  const request = { repository: plan.repository, tag: plan.tag, original: manifest, readUnderLock }
  const done = await deps.untagger.untag(client, plan.strategy as UntagStrategy, request)
  tags?.gone(plan.tag)
  await settleQuietly(deps, pending, {
    outcome: 'deleted',
    upstreamStatus: 202,
    durationMs: run.elapsed(),
    ...(done.recheckedAfter === undefined
      ? {}
      : { errorCode: done.recheckedAfter, errorDetail: 'a request of the swap failed, but the registry, asked again, shows the tag gone' })
  })
  return { auditId: pending.id, ...resultOf(run, plan, false) }
}

/**
 * Deletes the plan's digest. Co-tags are looked at again right before the DELETE, under the repository's lock: a
 * tag pushed onto this digest during the scan would go with it, unseen and out of the audit record, so undo could
 * not bring it back. `digest` refuses then as it would have at first; `auto` untags instead, unless the caller
 * confirmed this very plan (planId), which then no longer holds. (The registry has no conditional DELETE: a tag
 * pushed between this look and the DELETE is still lost; the README says so.)
 */
async function deleteDigest (run: Run, plan: DeletionPlan, manifest: Manifest, planScan: PlanScan): Promise<DeleteImageResult> {
  const { deps, client } = run
  const { repository, tag, digest } = plan
  let removedTags = plan.removedTags
  let sharedWith = plan.sharedWith
  let vanished: string[] = []
  const untagInstead = await deps.locks.run(repositoryLockKey(client.name, repository), async () => {
    const protectedTags = deps.literalProtectedTags(client.name, repository)
    const looked = planScan.tags === undefined
      ? { late: await lateCoTags(client, repository, digest, tag, planScan.first, protectedTags, planScan.scan), listed: undefined }
      : await planScan.tags.late(client, repository, digest, tag, planScan.first, protectedTags, planScan.scan)
    const { late } = looked
    // An index is not checked for indexes listing it, at plan time either.
    const lateIndexes = planScan.tags === undefined || isIndex(plan.mediaType) ? [] : await lateReferences(client, plan, planScan.tags, planScan.scan)
    if ((late.length > 0 || lateIndexes.length > 0) && plan.mode === 'auto') {
      const { id: _id, decisions, ...content } = plan
      const strategy = deps.registrySettings(client.name).untagStrategy
      const untagPlan = makePlan({
        ...content,
        action: 'untagged',
        strategy,
        removedTags: [tag],
        sharedWith: [...plan.sharedWith, ...late].sort(),
        referencedBy: [...plan.referencedBy, ...lateIndexes]
      }, decisions)
      if (run.input.planId !== undefined) throw planStale(run, untagPlan, run.input.planId)
      return untagPlan
    }
    if (lateIndexes.length > 0) {
      const refusal = referencedByIndex(run, digest, lateIndexes)
      run.decision = { allow: false, reason: refusal.detail }
      throw refusal
    }
    if (late.length > 0) {
      const coTags = [...plan.sharedWith, ...late].sort()
      const lateRefusal = plan.force
        ? authorizePlan(run, { ...plan, sharedWith: coTags }, false).refusal
        : sharedDigest(run, plan, coTags, late)
      if (lateRefusal !== undefined) {
        run.decision = { allow: false, reason: lateRefusal.detail }
        throw lateRefusal
      }
      removedTags = [tag, ...coTags]
      sharedWith = coTags
    }
    const writeAhead = { ...auditFields(plan), removedTags, decision: run.decision, outcome: 'pending' as const, manifest: manifest.bytes }
    run.pending = await deps.audit.record({ ...run.attempt, ...writeAhead })
    await client.deleteManifest(repository, digest)
    if (looked.listed !== undefined) vanished = await vanishedWith(client, plan, planScan.tags as RepositoryTags, looked.listed, removedTags)
    return undefined
  })
  if (untagInstead !== undefined) return await untag(run, untagInstead, manifest, false, planScan.tags)
  const settled = vanished.length === 0
    ? { outcome: 'deleted' as const, upstreamStatus: 202, durationMs: run.elapsed() }
    : {
        outcome: 'deleted' as const,
        upstreamStatus: 202,
        durationMs: run.elapsed(),
        removedTags: [...removedTags, ...vanished],
        errorCode: 'TAGS_VANISHED',
        errorDetail: `${vanished.join(', ')} disappeared with this DELETE: moved onto ${digest} after the run last resolved them, they went with it; restoring this deletion puts them back`
      }
  await settleQuietly(deps, run.pending as AuditRecord, settled)
  return { auditId: (run.pending as AuditRecord).id, ...resultOf(run, plan, false, undefined, { removedTags: settled.removedTags ?? removedTags, sharedWith }) }
}

/**
 * After a run's digest DELETE, still under the lock: the tags the late look listed that are gone now and were not
 * meant to go. A run resolves each tag once, so a tag it knew that someone moved onto this digest afterwards went
 * with it unseen; the registry has no conditional DELETE to prevent that, so it is found here and recorded with the
 * deletion, which undo then restores. A tag whose last known digest is gone too went with someone else's deletion
 * of that digest, not with this one, and is not recorded (an untag by someone else in the same instant cannot be
 * told apart, and would be). The shared view forgets what the digest took.
 */
async function vanishedWith (
  client: RegistryClient, plan: Pick<DeletionPlan, 'repository' | 'digest'>, tags: RepositoryTags, before: readonly string[], removedTags: readonly string[]
): Promise<string[]> {
  const after = new Set(await listedAfter(client, plan.repository, before))
  const meant = new Set(removedTags)
  const vanished: string[] = []
  for (const tag of before.filter(name => !meant.has(name) && !after.has(name))) {
    const last = tags.digestOf(tag)
    tags.gone(tag)
    // Unknown to the view (it answered 404 to the late look, before this DELETE) or on a digest gone too: not this DELETE's doing.
    /* c8 ignore next */
    if (last === undefined || await manifestGone(client, plan.repository, last) === true) continue
    vanished.push(tag)
  }
  tags.deleted(plan.digest)
  for (const tag of removedTags) tags.gone(tag)
  return vanished.sort()
}

async function listedAfter (client: RegistryClient, repository: string, before: readonly string[]): Promise<readonly string[]> {
  try {
    return await client.listTags(repository)
  } catch {
    // The DELETE is done and recorded as such; a listing that fails now only means this check cannot be made.
    return before
  }
}

/**
 * The registry request failed after the write-ahead record. When its answer was lost (timeout, reset, 5xx), the
 * registry is asked what happened, so the record says what really did: for a digest deletion whether the manifest
 * is gone, for an untag whether the tag is (a native DELETE by tag may have acted; a swap already asked, and put
 * the original back when it could). When the registry cannot tell now either, the record stays pending for
 * start-up reconciliation.
 */
async function settleFailure (run: Run, pending: AuditRecord, error: GatewayError): Promise<never> {
  const outcome = AMBIGUOUS.has(error.code) ? await lostAnswerOutcome(run.client, pending) : { happened: false }
  if (outcome?.happened === true) {
    const detail = `the registry's answer was lost (${error.detail}), but the ${pending.deleteAction === 'untagged' ? 'tag' : 'manifest'} is gone`
    await settleQuietly(run.deps, pending, { outcome: 'deleted', errorCode: error.code, errorDetail: detail, durationMs: run.elapsed() })
  } else if (outcome !== undefined) {
    const failure = errorFields(error)
    await settleQuietly(run.deps, pending, { ...failure, errorDetail: `${failure.errorDetail as string}${outcome.detail ?? ''}`, durationMs: run.elapsed() })
  }
  throw error
}

async function lostAnswerOutcome (client: RegistryClient, pending: AuditRecord): Promise<{ happened: boolean, detail?: string } | undefined> {
  if (pending.deleteAction === 'untagged') return await untagOutcome(client, pending)
  const gone = await manifestGone(client, pending.name, pending.digest as string)
  return gone === undefined ? undefined : { happened: gone }
}
