/**
 * The cleanup use cases every edge calls: plan a cleanup from a request or a named retention policy, keep the plan
 * in the audit store, show it again by id. The request is checked here against its TypeBox shape, so REST,
 * GraphQL and the CLI refuse the same bad input with the same field and rule.
 */
import { Value } from 'typebox/value'
import type { AuditTrail } from '../audit/trail.js'
import { GatewayError, invalidField } from '../errors.js'
import { decide, grantsAnywhere } from '../policy/index.js'
import type { Identity } from '../policy/types.js'
import type { RequestContext } from '../images/attempt.js'
import type { PagesInFlight } from '../images/browse.js'
import { CLEANUP_ID, planCleanup, totalsOf, type CleanupServices } from './plan-cleanup.js'
import { CleanupRequestSchema, type CleanupDeletionPlan, type CleanupEntry, type CleanupPlan, type CleanupRequest, type CleanupRules } from './shapes.js'

export interface RetentionPolicy {
  name: string
  registry?: string
  repositories: readonly string[]
  rules: CleanupRules
}

export interface CleanupDeps extends CleanupServices {
  audit: AuditTrail
  /** Named policies from the configuration (`retention.policies[]`). */
  retention: readonly RetentionPolicy[]
  /** Whether the caller holds `audit` somewhere: such a caller may look at others' cleanup plans, entry by entry. */
  mayAuditAnything: (identity: Identity) => boolean
  /** Plans each caller has being made: planning reads every tag's manifest, so one caller may not start many at once. */
  plansInFlight: PagesInFlight
}

interface Caller {
  identity: Identity
  context: RequestContext
  /** The request's: a caller that goes away stops the reading. */
  signal: AbortSignal
}

/** JSON Pointer (/rules/select/0/regex) to the dotted path a 400 names (rules.select[0].regex). */
export function fieldOf (pointer: string): string {
  return pointer.split('/').slice(1).map(part => part.replaceAll('~1', '/').replaceAll('~0', '~')).reduce((path, part) => /^\d+$/.test(part) ? `${path}[${part}]` : path === '' ? part : `${path}.${part}`, '')
}

export function checkCleanupRequest (body: unknown): CleanupRequest {
  if (Value.Check(CleanupRequestSchema, body)) return body
  // TypeBox reports an unknown field twice: as the false schema it meets (keyword boolean), then by its name.
  const error = [...Value.Errors(CleanupRequestSchema, body)].find(each => each.keyword !== 'boolean')
  // Check failed, so TypeBox has an error to tell; should it ever report none, the body is still refused.
  /* c8 ignore next */
  if (error === undefined) throw invalidField('body', 'a cleanup request', 'body is not a cleanup request: {"registry"?, "repositories", "rules"}.')
  const unknown = error.keyword === 'additionalProperties' ? (error.params as { additionalProperties: string[] }).additionalProperties : []
  const field = fieldOf(error.instancePath) || 'body'
  const rule = unknown.length > 0 ? `no field ${unknown.join(', ')}` : error.message
  throw invalidField(field, rule, `${field}: ${rule}.`)
}

/** A caller who may delete nothing anywhere would get a plan that refuses every tag: refused at once instead. */
function checkMayDelete (deps: CleanupDeps, identity: Identity): void {
  if (grantsAnywhere(deps.policy(), identity, 'delete')) return
  throw new GatewayError('FORBIDDEN', `${identity.subject} may delete no tag anywhere, so a cleanup plan could only refuse every tag; ask for the delete action on the repositories to clean.`,
    { extras: { subject: identity.subject, action: 'delete' } })
}

async function plannedAndKept (deps: CleanupDeps, caller: Caller, request: CleanupRequest, named?: { policy: string, field: string }): Promise<CleanupPlan> {
  checkMayDelete(deps, caller.identity)
  const plan = await deps.plansInFlight.run(caller.identity.subject, async () => await planCleanup(deps, {
    identity: caller.identity,
    context: caller.context,
    ...(request.registry === undefined ? {} : { registry: request.registry }),
    repositories: request.repositories,
    rules: request.rules,
    ...(named === undefined ? {} : { policyName: named.policy, rulesField: named.field }),
    signal: caller.signal
  }))
  const { id, registry, createdBy, createdAt, state } = plan
  const body = JSON.stringify(plan)
  await deps.audit.saveCleanup({ id, registry, createdBy, createdAt, state, body })
  bodies.set(plan, body)
  return plan
}

/** The JSON each new plan was kept as: a plan of 10,000 entries is serialized once, for the store and the answer alike. */
const bodies = new WeakMap<CleanupPlan, string>()

/** The JSON of a plan createCleanup or planRetentionPolicy just answered, exactly as the store keeps it. */
export function plannedBody (plan: CleanupPlan): string {
  return bodies.get(plan) as string
}

/** `POST /cleanups`: plans the cleanup the body describes, keeps it, answers it. Nothing in the registry changes. */
export async function createCleanup (deps: CleanupDeps, input: Caller & { body: unknown }): Promise<CleanupPlan> {
  return await plannedAndKept(deps, input, checkCleanupRequest(input.body))
}

/** `POST /retention/<name>/plan`: the same for a policy of the configuration, planned as the caller. */
export async function planRetentionPolicy (deps: CleanupDeps, input: Caller & { name: string }): Promise<CleanupPlan> {
  const index = deps.retention.findIndex(policy => policy.name === input.name)
  const policy = deps.retention[index]
  if (policy === undefined) {
    // The configured names are not told: they say which repositories are cleaned and how, which a caller may not read.
    throw new GatewayError('NOT_FOUND', `no retention policy is named ${JSON.stringify(input.name.slice(0, 64))}; ask an operator for the names configured.`)
  }
  const request: CleanupRequest = {
    ...(policy.registry === undefined ? {} : { registry: policy.registry }), repositories: [...policy.repositories], rules: policy.rules
  }
  return await plannedAndKept(deps, input, request, { policy: policy.name, field: `retention.policies[${index}].rules` })
}

/**
 * A stored plan as someone other than its maker sees it: only the entries whose image the caller may audit, the
 * tags each plan names filtered the same way, the totals recounted; what is left out is counted in hiddenTags.
 */
function auditableView (deps: CleanupDeps, identity: Identity, plan: CleanupPlan): { plan: CleanupPlan, hidden: number } {
  const policy = deps.policy()
  const audits = (repository: string, tag: string): boolean => decide(policy, identity, 'audit', { registry: plan.registry, repository, tag }).allow
  const entries: CleanupEntry[] = []
  let hidden = 0
  for (const entry of plan.entries) {
    if (!audits(entry.repository, entry.tag)) {
      hidden++
      continue
    }
    entries.push(entry.plan === undefined ? entry : { ...entry, plan: auditablePlan(entry.plan, tag => audits(entry.repository, tag)) })
  }
  if (hidden === 0) return { plan, hidden }
  const repositories = new Set(entries.map(entry => entry.repository)).size
  return { plan: { ...plan, entries, totals: totalsOf(repositories, entries, plan.totals.hiddenTags + hidden) }, hidden }
}

function auditablePlan (plan: CleanupDeletionPlan, audits: (tag: string) => boolean): CleanupDeletionPlan {
  let hidden = 0
  const shown = (tags: readonly string[]): string[] => tags.filter(tag => audits(tag) || (hidden++, false))
  const visible = {
    ...plan,
    removedTags: shown(plan.removedTags),
    sharedWith: shown(plan.sharedWith),
    referencedBy: plan.referencedBy.map(index => ({ digest: index.digest, tags: shown(index.tags) })).filter(index => index.tags.length > 0)
  }
  return hidden === 0 ? visible : { ...visible, hiddenTags: (plan.hiddenTags ?? 0) + hidden }
}

async function visibleCleanup (deps: CleanupDeps, input: { identity: Identity, id: string }): Promise<{ plan: CleanupPlan, hidden: number }> {
  if (!CLEANUP_ID.test(input.id)) {
    throw invalidField('id', `matches ${CLEANUP_ID.source}`, `id must be a cleanup id as POST /cleanups answers it (${CLEANUP_ID.source}).`)
  }
  const stored = await deps.audit.getCleanup(input.id)
  const notFound = (): GatewayError => new GatewayError('NOT_FOUND', `no cleanup ${input.id} that ${input.identity.subject} may see.`)
  const mine = stored?.createdBy === input.identity.subject
  if (stored === undefined || (!mine && !deps.mayAuditAnything(input.identity))) throw notFound()
  const made = JSON.parse(stored.body) as CleanupPlan
  const view = mine ? { plan: made, hidden: 0 } : auditableView(deps, input.identity, made)
  // Someone else who may audit none of its images learns nothing of it, not even that it exists.
  if (view.plan.entries.length === 0 && made.entries.length > 0) throw notFound()
  // Part 2's hook: a plan that ran (or was cancelled) shows its run.
  const run = await deps.audit.store.getCleanupRun(made.id)
  return { plan: run === undefined ? view.plan : { ...view.plan, run }, hidden: view.hidden }
}

/**
 * `GET /cleanups/<id>`: the plan as it was made, for whoever made it; someone else who may audit sees the entries
 * whose images they may audit; anyone else is told it does not exist.
 */
export async function getCleanup (deps: CleanupDeps, input: { identity: Identity, id: string }): Promise<CleanupPlan> {
  return (await visibleCleanup(deps, input)).plan
}

/**
 * The plan a run, cancel, restore or event stream works on: the whole of it, so only its maker or someone who may
 * audit every entry gets it (the run's own checks come after); part of a plan is never run.
 */
export async function loadCleanupForRun (deps: CleanupDeps, input: { identity: Identity, id: string }): Promise<CleanupPlan> {
  const view = await visibleCleanup(deps, input)
  if (view.hidden > 0) {
    throw new GatewayError('FORBIDDEN',
      `${input.identity.subject} may not act on cleanup ${input.id}: it holds ${view.hidden} entries whose images ${input.identity.subject} may not audit; only its maker or someone who may audit all of it may.`,
      { extras: { subject: input.identity.subject, action: 'audit' } })
  }
  return view.plan
}
