/**
 * What a chat button stands for, kept server-side: the button carries only an opaque, random, single-use id.
 * Kept in the audit store's database (issue 14), bounded, with a TTL: the click may reach any replica, and taking
 * is one DELETE … RETURNING, so a double click reaching two replicas runs once. A plan lives minutes, and the
 * registry is re-checked before anything runs, so losing one costs a retype, never a wrong deletion.
 */
import { randomBytes } from 'node:crypto'
import { auditUnavailable, type SharedState } from '../audit/shared-state.js'
import type { DeleteMode } from '../images/plan.js'

export interface PendingPlan {
  kind: 'delete'
  /** The use case's plan id (a hash of what the plan does): executePlan refuses with PLAN_STALE if it moved. */
  planId: string
  registry: string
  repository: string
  tag: string
  mode: DeleteMode
  digest: string
  /** Who asked; only they may press the button. */
  requester: string
  /** The policy lets the requester delete only with someone else's approval: the button asks for it instead. */
  approval: boolean
}

/** A plan waiting for a second person: anyone may press Approve; the use case decides whether they may approve. */
export interface PendingApproval extends Omit<PendingPlan, 'kind'> {
  kind: 'approval'
  /** The requester's identity, as established when they asked: the deletion runs as theirs. */
  groups: string[]
}

export interface PendingUndo {
  kind: 'undo'
  /** The audit id of the deletion to restore. */
  deletionId: string
  registry: string
  repository: string
  tag: string
  requester: string
}

export type Pending = PendingPlan | PendingApproval | PendingUndo

export type TakeResult<T> = { found: T, expires: number } | { refused: 'unknown' | 'not-yours' }

const ID = /^cp_[A-Za-z0-9_-]{32}$/

export class ChatPlans {
  readonly #ttlMs: number
  readonly #capacity: number
  readonly #shared: SharedState
  /** Which chat these are (`slack`, `mattermost`): kinds are `<namespace>:<kind>`, bounded each. */
  readonly #namespace: string

  constructor (options: { ttlMs: number, capacity: number, shared: SharedState, namespace: string }) {
    this.#ttlMs = options.ttlMs
    this.#capacity = options.capacity
    this.#shared = options.shared
    this.#namespace = options.namespace
  }

  /** Stores it and returns the id to put in the button. */
  async put (pending: Pending, nowMs: number): Promise<string> {
    const id = `cp_${randomBytes(24).toString('base64url')}`
    await this.putBack(id, pending, nowMs + this.#ttlMs)
    return id
  }

  /**
   * Removes and returns the entry when `subject` may use it: taking is what makes it single-use, in one statement,
   * so two clicks racing each other (on any replicas) cannot both get it. Someone else's click leaves it in place;
   * an approval request is anyone's to take (the use case judges the approver).
   */
  async take<K extends Pending['kind']> (id: unknown, kind: K, subject: string, nowMs: number): Promise<TakeResult<Extract<Pending, { kind: K }>>> {
    if (typeof id !== 'string' || !ID.test(id)) return { refused: 'unknown' }
    let taken
    try {
      taken = await this.#shared.takePlan(`${this.#namespace}:${kind}`, id, nowMs, kind === 'approval' ? undefined : subject)
    } catch (error) {
      throw auditUnavailable(error, 'the plans shared by the gateway replicas cannot be read')
    }
    if (taken === undefined) return { refused: 'unknown' }
    if (taken === 'not-yours') return { refused: 'not-yours' }
    return { found: taken.payload as Extract<Pending, { kind: K }>, expires: taken.expiresMs }
  }

  /**
   * Puts back what `take` removed, under the same id and expiry: for a click refused for who clicked (an approver
   * without `approve`), which must not use up the button for everyone else.
   */
  async putBack (id: string, pending: Pending, expires: number): Promise<void> {
    try {
      await this.#shared.putPlan({ kind: `${this.#namespace}:${pending.kind}`, id, payload: pending, requester: pending.requester, expiresMs: expires },
        this.#capacity, expires - this.#ttlMs)
    } catch (error) {
      throw auditUnavailable(error, 'the plans shared by the gateway replicas cannot be written')
    }
  }
}
