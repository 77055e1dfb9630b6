/**
 * Approvals over REST (and any edge without chat buttons): a dry-run's plan is remembered for a while with who made
 * it, a second person holding `approve` approves it by its id for that requester, and only the requester's
 * execution then runs with that approver. The delete use case decides whether the approval is needed and valid; this only carries it.
 * In memory, bounded, with a TTL, like chat plans: a plan is worth minutes and is re-checked before it runs.
 */
import { GatewayError, invalidField } from '../errors.js'
import { Lru } from '../lru.js'
import type { Identity } from '../policy/types.js'
import { attemptFields, denial, errorFields, type RequestContext } from './attempt.js'
import { executePlan, type ImageServices } from './delete-image.js'
import { PLAN_ID, type DeletionPlan } from './plan.js'
import type { DeleteImageResult, PlanApproval } from './shapes.js'

type PlanTarget = Pick<DeletionPlan, 'id' | 'registry' | 'repository' | 'tag' | 'mode' | 'force'>

export class PlanBook {
  readonly #ttlMs: number
  readonly #plans: Lru<string, { target: PlanTarget, requester: string, expires: number }>
  readonly #approvals: Lru<string, { approver: Identity, requester: string, expires: number }>

  constructor (options: { ttlMs: number, capacity: number }) {
    this.#ttlMs = options.ttlMs
    this.#plans = new Lru(options.capacity)
    this.#approvals = new Lru(options.capacity)
  }

  /** The latest dry-run of a plan names its requester: an approval is for them. */
  remember (plan: PlanTarget, requester: string, nowMs: number): void {
    const { id, registry, repository, tag, mode, force } = plan
    this.#plans.set(id, { target: { id, registry, repository, tag, mode, force }, requester, expires: nowMs + this.#ttlMs })
  }

  find (id: string, nowMs: number): { target: PlanTarget, requester: string } | undefined {
    const entry = this.#plans.get(id)
    return entry === undefined || entry.expires <= nowMs ? undefined : entry
  }

  approve (id: string, requester: string, approver: Identity, nowMs: number): number {
    const expires = nowMs + this.#ttlMs
    this.#approvals.set(id, { approver, requester, expires })
    return expires
  }

  /** The approver of this plan for this requester; nobody else can use the approval. */
  approver (id: string, requester: string, nowMs: number): Identity | undefined {
    const entry = this.#approvals.get(id)
    return entry === undefined || entry.expires <= nowMs || entry.requester !== requester ? undefined : entry.approver
  }

  /** An approval is used once: the deletion it allowed happened. */
  used (id: string): void {
    this.#approvals.delete(id)
  }
}

export type ApprovalDeps = ImageServices

export interface PlanInput {
  identity: Identity
  context: RequestContext
  planId: string
  nowMs?: number
}

function knownPlan (deps: ApprovalDeps, planId: string, nowMs: number): { target: PlanTarget, requester: string } {
  if (!PLAN_ID.test(planId)) throw invalidField('id', 'plan-id', 'a plan id is plan_ and 40 hex digits, as a dry-run answers it.')
  const plan = deps.plans.find(planId, nowMs)
  if (plan === undefined) {
    throw new GatewayError('NOT_FOUND', `no dry-run made plan ${planId} in the last minutes; make a dry-run and approve the planId it answers.`, {
      extras: { field: 'id' }
    })
  }
  return plan
}

/**
 * Records that `identity` approves the plan; refused unless they hold `approve` on the image. Audited either way, at
 * approval time (action `approve`, subject the approver, the requester and plan in the reason): an approval is an
 * act of its own, and webhooks announce it (`image.approved`) before anything runs.
 */
export async function approvePlan (deps: ApprovalDeps, input: PlanInput): Promise<PlanApproval> {
  const nowMs = input.nowMs ?? Date.now()
  const { target: plan, requester } = knownPlan(deps, input.planId, nowMs)
  const resource = { registry: plan.registry, repository: plan.repository, tag: plan.tag }
  const decision = deps.authorizer()(input.identity, 'approve', resource)
  const record = {
    ...attemptFields(input.identity, input.context, 'approve', { registry: plan.registry, name: plan.repository, tag: plan.tag }),
    removedTags: [],
    mode: plan.mode
  }
  const refused = denial(input.identity, 'approve', resource, decision)
  if (refused !== undefined) {
    await deps.audit.record({ ...record, decision: { allow: false, reason: refused.detail }, ...errorFields(refused) })
    throw refused
  }
  await deps.audit.record({ ...record, decision: { allow: true, reason: `${decision.reason}; approves ${plan.id} of ${requester}` }, outcome: 'approved' })
  const expires = deps.plans.approve(plan.id, requester, input.identity, nowMs)
  return { planId: plan.id, requester, approvedBy: input.identity.subject, expiresAt: new Date(expires).toISOString() }
}

/**
 * Executes a remembered plan as the caller's deletion, with the plan's approver if there is one. The delete use
 * case refuses an approver who is the caller, and PLAN_STALE if the plan moved; the approval is spent only when
 * the deletion went through.
 */
export async function executeApprovedPlan (deps: ApprovalDeps, input: PlanInput & { signal: AbortSignal }): Promise<DeleteImageResult> {
  const nowMs = input.nowMs ?? Date.now()
  const { target: plan } = knownPlan(deps, input.planId, nowMs)
  const approvedBy = deps.plans.approver(plan.id, input.identity.subject, nowMs)
  const result = await executePlan(deps, {
    identity: input.identity,
    context: input.context,
    plan,
    ...(approvedBy === undefined ? {} : { approvedBy }),
    signal: input.signal
  })
  deps.plans.used(plan.id)
  return result
}
