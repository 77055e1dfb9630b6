/**
 * State several gateway replicas must agree on, kept in the audit store's database beside the trail: the
 * cross-replica lock, plans and approvals waiting for a click, and claims on pending records being reconciled
 * (PostgreSQL also keeps the rate-limit windows). SQLite implements the same contract for its one replica, so a
 * single test suite (test/fixtures/shared-state-contract.ts) keeps the two from drifting.
 */
import { GatewayError } from '../errors.js'
import type { KeyedLock } from '../registry/untag.js'
import { underLock, type HeldLock } from '../registry/lock-guard.js'

/** Something waiting for a later request (a button, an approval): single-use, with an expiry. */
export interface StoredPlan {
  /** Namespaces ids: `plan`, `approval`, `slack:delete`, … An id is unique within its kind. */
  kind: string
  id: string
  payload: unknown
  /** Who may take it (unless the taker passes no requester). */
  requester: string
  /** Epoch milliseconds; gone at and after this instant. */
  expiresMs: number
}

export type TakenPlan = StoredPlan | 'not-yours' | undefined

export interface RateWindow {
  /** Requests counted in the window, this one included. */
  count: number
  /** Milliseconds until the window ends. */
  ttlMs: number
}

export interface SharedState {
  /**
   * Runs `work` while holding `key` among every replica using this database. Rejects without running `work` when
   * the lock cannot be taken; once `work` runs, its own result or error is what comes back. `work` gets the held
   * lock, to confirm it still holds it before acting; its signal aborts once the lock is known lost.
   */
  exclusive: <T>(key: string, work: (held: HeldLock) => Promise<T>) => Promise<T>
  /**
   * As exclusive, but never waits: while another holder (on any replica) has `key`, answers `{ held: false }` at
   * once without running `work`. For work that must run on one replica at a time and is pointless to queue.
   */
  tryExclusive: <T>(key: string, work: (held: HeldLock) => Promise<T>) => Promise<Exclusively<T>>
  /** Stores (or replaces) a plan; keeps at most `capacity` unexpired plans of its kind, dropping the soonest to expire. */
  putPlan: (plan: StoredPlan, capacity: number, nowMs: number) => Promise<void>
  /** Reads without taking. */
  peekPlan: (kind: string, id: string, nowMs: number) => Promise<StoredPlan | undefined>
  /**
   * Removes and returns the plan in one statement, so among concurrent takers on any replicas exactly one gets it.
   * With `requester`, only that requester's plan is taken; someone else's answers 'not-yours' and stays.
   */
  takePlan: (kind: string, id: string, nowMs: number, requester?: string) => Promise<TakenPlan>
  /**
   * Claims the oldest `pending` audit record written before `olderThan` (ISO time), with an id after `after` (a
   * pass moves on past what it claimed), that no other owner holds a live claim on, for `leaseMs`: two replicas
   * reconciling at once never get the same record. Answers its id.
   */
  claimPending: (owner: string, olderThan: string, leaseMs: number, nowMs: number, after?: string) => Promise<string | undefined>
  /**
   * Records `id` under `kind` for `ttlMs` unless a live record is there, in one statement on the database's clock
   * (replicas' clocks may disagree): true when it recorded it, false when any replica had (a replayed request).
   * PostgreSQL only: SQLite's one replica remembers in memory.
   */
  rememberOnce?: (kind: string, id: string, ttlMs: number) => Promise<boolean>
  /** Counts one request against `key`'s window (PostgreSQL only: SQLite's one replica keeps windows in memory). */
  hit?: (key: string, windowMs: number) => Promise<RateWindow>
}

export type Exclusively<T> = { held: true, value: T } | { held: false }

/** The shared state could not be reached: the same refusal as an audit trail that cannot write. */
export function auditUnavailable (cause: unknown, what: string): GatewayError {
  return new GatewayError('AUDIT_UNAVAILABLE',
    `${what}, so the gateway will not act; nothing was changed in the registry. Check the audit database.`,
    { cause })
}

/**
 * The lock deletions, untags and restores hold per repository: first this process's own queue (so one replica
 * sends at most one waiter per key to the database), then the store's cross-replica lock. A lock that cannot be
 * taken (database down) is AUDIT_UNAVAILABLE and the work never starts.
 */
export class ReplicaLock implements KeyedLock {
  /** `onLost` hears of a lock lost while held (connection gone, release failed): the work may have raced another replica. */
  constructor (private readonly local: KeyedLock, private readonly shared: Pick<SharedState, 'exclusive'>,
    private readonly onLost: (key: string, cause: unknown) => void = () => {}) {}

  async run<T> (key: string, work: () => Promise<T>): Promise<T> {
    return await this.local.run(key, async () => {
      let held: HeldLock | undefined
      const reportLoss = (): void => { if (held !== undefined && held.signal.aborted) this.onLost(key, held.signal.reason) }
      try {
        const result = await this.shared.exclusive(key, async lock => {
          held = lock
          return await underLock(lock, work)
        })
        reportLoss()
        return result
      } catch (error) {
        if (held === undefined) throw auditUnavailable(error, 'the lock shared by the gateway replicas cannot be taken')
        reportLoss()
        throw error
      }
    })
  }
}
