/**
 * What a chat button stands for, kept server-side: the button carries only an opaque, random, single-use id.
 * In memory, bounded, with a TTL: a plan lives minutes and is worthless after a restart (the user runs the command
 * again and gets a fresh plan), and the registry is re-checked before anything runs, so losing one costs a retype,
 * never a wrong deletion. One gateway process per Slack app is assumed; several replicas need a shared store.
 */
import { randomBytes } from 'node:crypto'
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
  // Insertion order is expiry order (one TTL for all), so the oldest and the expired are at the front.
  readonly #entries = new Map<string, { pending: Pending, expires: number }>()

  constructor (options: { ttlMs: number, capacity: number }) {
    this.#ttlMs = options.ttlMs
    this.#capacity = options.capacity
  }

  get size (): number {
    return this.#entries.size
  }

  /** Stores it and returns the id to put in the button. */
  put (pending: Pending, nowMs: number): string {
    this.#sweep(nowMs)
    for (const oldest of this.#entries.keys()) {
      if (this.#entries.size < this.#capacity) break
      this.#entries.delete(oldest)
    }
    const id = `cp_${randomBytes(24).toString('base64url')}`
    this.#entries.set(id, { pending, expires: nowMs + this.#ttlMs })
    return id
  }

  /**
   * Removes and returns the entry when `subject` may use it: taking is what makes it single-use, and it happens
   * synchronously, so two clicks racing each other cannot both get it. Someone else's click leaves it in place.
   */
  take<K extends Pending['kind']> (id: unknown, kind: K, subject: string, nowMs: number): TakeResult<Extract<Pending, { kind: K }>> {
    this.#sweep(nowMs)
    const entry = typeof id === 'string' && ID.test(id) ? this.#entries.get(id) : undefined
    if (entry === undefined || entry.pending.kind !== kind || entry.expires <= nowMs) return { refused: 'unknown' }
    if (kind !== 'approval' && entry.pending.requester !== subject) return { refused: 'not-yours' }
    this.#entries.delete(id as string)
    return { found: entry.pending as Extract<Pending, { kind: K }>, expires: entry.expires }
  }

  /**
   * Puts back what `take` removed, under the same id and expiry: for a click refused for who clicked (an approver
   * without `approve`), which must not use up the button for everyone else. Out of expiry order then, which only
   * delays its sweep; `take` checks the expiry itself.
   */
  putBack (id: string, pending: Pending, expires: number): void {
    this.#entries.set(id, { pending, expires })
  }

  #sweep (nowMs: number): void {
    for (const [id, entry] of this.#entries) {
      if (entry.expires > nowMs) break
      this.#entries.delete(id)
    }
  }
}
