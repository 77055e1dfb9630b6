/**
 * Approvals over REST (and any edge without chat buttons): a dry-run's plan is remembered for a while with who made
 * it, a second person holding `approve` approves it by its id for that requester, and only the requester's
 * execution then runs with that approver. The delete use case decides whether the approval is needed and valid; this only carries it.
 * Kept in the audit store's database (issue 14), bounded, with a TTL: any replica finds a plan another made, and
 * an approval is taken by one execution only, whichever replica it reaches. A plan is worth minutes and is
 * re-checked before it runs.
 */
import { auditUnavailable, type SharedState } from '../audit/shared-state.js'
import { GatewayError, invalidField } from '../errors.js'
import type { Identity } from '../policy/types.js'
import { attemptFields, denial, errorFields, type RequestContext } from './attempt.js'
import { executePlan, type ImageServices } from './delete-image.js'
import { PLAN_ID, type DeletionPlan } from './plan.js'
import type { DeleteImageResult, PlanApproval } from './shapes.js'

type PlanTarget = Pick<DeletionPlan, 'id' | 'registry' | 'repository' | 'tag' | 'mode' | 'force'>

/** A store that cannot answer is the audit database being unusable: 503, never a 500. */
async function guarded<T> (work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (error) {
    throw auditUnavailable(error, 'the plans shared by the gateway replicas cannot be read or written')
  }
}

export class PlanBook {
  readonly #ttlMs: number
  readonly #capacity: number
  readonly #shared: SharedState

  constructor (options: { ttlMs: number, capacity: number, shared: SharedState }) {
    this.#ttlMs = options.ttlMs
    this.#capacity = options.capacity
    this.#shared = options.shared
  }

  /** The latest dry-run of a plan names its requester: an approval is for them. */
  async remember (plan: PlanTarget, requester: string, nowMs: number): Promise<void> {
    const { id, registry, repository, tag, mode, force } = plan
    const target: PlanTarget = { id, registry, repository, tag, mode, force }
    const stored = { kind: 'plan', id, payload: target, requester, expiresMs: nowMs + this.#ttlMs }
    await guarded(async () => { await this.#shared.putPlan(stored, this.#capacity, nowMs) })
  }

  async find (id: string, nowMs: number): Promise<{ target: PlanTarget, requester: string, expires: number } | undefined> {
    const stored = await guarded(async () => await this.#shared.peekPlan('plan', id, nowMs))
    return stored === undefined ? undefined : { target: stored.payload as PlanTarget, requester: stored.requester, expires: stored.expiresMs }
  }

  async approve (id: string, requester: string, approver: Identity, nowMs: number): Promise<number> {
    const expires = nowMs + this.#ttlMs
    await guarded(async () => { await this.#shared.putPlan({ kind: 'approval', id, payload: approver, requester, expiresMs: expires }, this.#capacity, nowMs) })
    return expires
  }

  /**
   * Takes this plan's approval for this requester, so that of two executions at once (a double click, two
   * replicas) only one runs with it. Nobody else can use the approval.
   */
  async takeApproval (id: string, requester: string, nowMs: number): Promise<{ approver: Identity, expires: number } | undefined> {
    const taken = await guarded(async () => await this.#shared.takePlan('approval', id, nowMs, requester))
    return typeof taken === 'object' ? { approver: taken.payload as Identity, expires: taken.expiresMs } : undefined
  }

  /** Puts back an approval whose execution did not delete, so the requester can try again while it lasts. */
  async putBackApproval (id: string, requester: string, approval: { approver: Identity, expires: number }, nowMs: number): Promise<void> {
    await guarded(async () => {
      await this.#shared.putPlan({ kind: 'approval', id, payload: approval.approver, requester, expiresMs: approval.expires }, this.#capacity, nowMs)
    })
  }
}

export type ApprovalDeps = ImageServices

export interface PlanInput {
  identity: Identity
  context: RequestContext
  planId: string
  nowMs?: number
}

async function knownPlan (deps: ApprovalDeps, planId: string, nowMs: number): Promise<{ target: PlanTarget, requester: string }> {
  if (!PLAN_ID.test(planId)) throw invalidField('id', 'plan-id', 'a plan id is plan_ and 40 hex digits, as a dry-run answers it.')
  const plan = await deps.plans.find(planId, nowMs)
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
  const { target: plan, requester } = await knownPlan(deps, input.planId, nowMs)
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
  const expires = await deps.plans.approve(plan.id, requester, input.identity, nowMs)
  return { planId: plan.id, requester, approvedBy: input.identity.subject, expiresAt: new Date(expires).toISOString() }
}

/**
 * Executes a remembered plan as the caller's deletion, with the plan's approver if there is one. The delete use
 * case refuses an approver who is the caller, and PLAN_STALE if the plan moved; the approval is spent only when
 * the deletion went through (taken first, put back otherwise).
 */
export async function executeApprovedPlan (deps: ApprovalDeps, input: PlanInput & { signal: AbortSignal }): Promise<DeleteImageResult> {
  const nowMs = input.nowMs ?? Date.now()
  const { target: plan } = await knownPlan(deps, input.planId, nowMs)
  const approval = await deps.plans.takeApproval(plan.id, input.identity.subject, nowMs)
  try {
    return await executePlan(deps, {
      identity: input.identity,
      context: input.context,
      plan,
      ...(approval === undefined ? {} : { approvedBy: approval.approver }),
      signal: input.signal
    })
  } catch (error) {
    if (approval !== undefined) await deps.plans.putBackApproval(plan.id, input.identity.subject, approval, nowMs)
    throw error
  }
}
