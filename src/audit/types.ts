import type { OutboxStore } from './outbox.js'
import type { SharedState } from './shared-state.js'
import type { AuditAction, AuditOutcome, AuditTransport, DeleteAction, DeleteMode, DeleteStrategy } from './shapes.js'
export type { AuditAction, AuditOutcome, AuditTransport, DeleteAction, DeleteMode, DeleteStrategy }

export interface AuditRecord {
  id: string
  /** ISO 8601, UTC. */
  time: string
  requestId: string
  /** The caller's own X-Request-Id (length- and charset-checked); requestId is always the gateway's. */
  clientRequestId?: string
  transport: AuditTransport
  subject: string
  groups: string[]
  action: AuditAction
  registry: string
  name: string
  tag: string
  digest?: string
  mediaType?: string
  removedTags: string[]
  /** Deletions and dry-runs: the mode asked, what the deletion does (untag or delete the digest) and how. */
  mode?: DeleteMode
  deleteAction?: DeleteAction
  strategy?: DeleteStrategy
  decision: { allow: boolean, reason: string }
  outcome: AuditOutcome
  upstreamStatus?: number
  errorCode?: string
  errorDetail?: string
  durationMs?: number
  /** Exact manifest bytes saved before a DELETE, for undo. */
  manifest?: Buffer
  /** On a deletion: the id of the restore that undid it. On a restore: the id of the deletion it undoes. */
  restoredBy?: string
  restoreOf?: string
  /** A deletion that needed approval: the approver's subject (the requester is `subject`). */
  approvedBy?: string
  /** A deletion a cleanup run made: the cleanup's id. */
  cleanupId?: string
}

export type NewAuditRecord = Omit<AuditRecord, 'id' | 'time'> & { time?: string }

/** A field given as `undefined` is left as it is, so a careless spread cannot wipe the saved manifest. */
export type AuditRecordChanges = Partial<Pick<AuditRecord,
  'outcome' | 'digest' | 'mediaType' | 'removedTags' | 'deleteAction' | 'strategy' | 'upstreamStatus' | 'errorCode' | 'errorDetail' | 'durationMs' |
  'manifest' | 'restoredBy'
>>

/** Every field narrows the result. `since` is inclusive and `until` exclusive, so adjacent windows never overlap. */
export interface AuditFilter {
  subject?: string
  registry?: string
  name?: string
  tag?: string
  outcome?: AuditOutcome
  action?: AuditAction
  since?: string
  until?: string
  cleanupId?: string
}

/** A record as a listing reads it: never the manifest bytes, only whether some were saved. */
export type AuditListItem = Omit<AuditRecord, 'manifest'> & { manifestSaved: boolean }
/** What decides whether a caller may see a record: the image it is about. */
export type AuditImageRef = Pick<AuditRecord, 'registry' | 'name' | 'tag'>

/**
 * `nextCursor` is there when more matching (and visible) records may exist: a page that reached the store's scan
 * limit ends early, possibly with fewer items than asked (even none), and the cursor continues the scan.
 */
export interface AuditPage {
  items: AuditListItem[]
  /** For each item, the cursor that continues after it (what GraphQL's edges carry). */
  cursors: string[]
  nextCursor?: string
}

export type ClaimRestoreResult =
  | { ok: true, deletion: AuditRecord, restore: AuditRecord }
  | { ok: false, reason: 'unknown' | 'not-a-deletion' | 'already-restored', deletion?: AuditRecord }

/** A cleanup plan as the store keeps it: a few columns to find it by, and the plan as one JSON document. */
export interface CleanupRecord {
  id: string
  registry: string
  createdBy: string
  createdAt: string
  state: string
  body: string
}

/** `cancelling` is how a `running` run with a cancel asked is shown; the store keeps it `running` until it stops. */
export type CleanupRunState = 'running' | 'cancelling' | 'cancelled' | 'interrupted' | 'done'

/** What a run did so far, tag by tag: every removal of the plan ends in exactly one of these (or none yet). */
export interface CleanupRunCounts {
  /** Removed, and audited with the cleanup id. */
  done: number
  /** Re-checked at execution and no longer the plan made: PLAN_STALE, nothing changed. */
  stale: number
  /** Refused or failed at execution (the error code is in its audit record). */
  failed: number
  /** Not attempted: the run was cancelled first. */
  skipped: number
}

/** One execution of a cleanup plan; its row is the claim that makes a second execute run nothing. */
export interface CleanupRun {
  cleanupId: string
  state: CleanupRunState
  startedBy: string
  startedAt: string
  finishedAt?: string
  maxDeletions: number
  counts: CleanupRunCounts
  /** A cancel asked through the store (from any replica); the replica running it stops at its next heartbeat. */
  cancelRequestedAt?: string
  cancelRequestedBy?: string
}

export type CleanupRunChanges = { state: CleanupRunState } & Partial<Pick<CleanupRun, 'finishedAt' | 'counts'>>

/** Besides the records, the outbox of webhook deliveries those records produce (see outbox.ts). */
export interface AuditStore extends OutboxStore {
  /** Durable when it resolves. */
  append (record: NewAuditRecord): Promise<AuditRecord>
  /** Rejects when no record has this id. */
  update (id: string, changes: AuditRecordChanges): Promise<AuditRecord>
  /**
   * `update`, only while the record is still `pending` (one atomic step): undefined, and nothing changed, when it
   * was settled meanwhile (by the request itself, or another replica's reconcile). Rejects when no record has this id.
   */
  settlePending (id: string, changes: AuditRecordChanges): Promise<AuditRecord | undefined>
  get (id: string): Promise<AuditRecord | undefined>
  /**
   * Newest first. `visible` filters out records the caller may not see. One call reads a bounded number of rows (the
   * store's scan limit), so a caller who sees little gets short pages with a cursor rather than a scan of the whole
   * trail. A malformed cursor, limit or time rejects with INVALID_REQUEST.
   */
  list (filter: AuditFilter, page: { limit: number, cursor?: string }, visible?: (record: AuditImageRef) => boolean): Promise<AuditPage>
  /** Records still `pending` (deletions and restores cut short), oldest first, for start-up reconciliation. */
  pending (): Promise<AuditRecord[]>
  /**
   * Atomically: the deletion must exist (else 'unknown'), have no restoredBy (else 'already-restored') and have
   * outcome 'deleted' (else 'not-a-deletion'); then append the restore record (action 'restore', outcome 'pending',
   * restoreOf = deletionId) and set the deletion's restoredBy to its id, in one transaction. Two concurrent claims:
   * exactly one wins.
   */
  claimRestore (deletionId: string, restore: NewAuditRecord): Promise<ClaimRestoreResult>
  /** Undo a claim whose PUT failed, so the deletion can be restored again later: clears restoredBy on the deletion (only if it still points at restoreId). */
  releaseRestore (deletionId: string, restoreId: string): Promise<void>
  /** Removes records older than `olderThan`, except `pending` ones, which still await reconciliation. */
  prune (olderThan: Date): Promise<number>
  /** What replicas share beside the trail: the lock, plans, reconcile claims (and rate limits on PostgreSQL). */
  readonly shared: SharedState
  /** Durable when it resolves; rejects when a cleanup with this id exists already. */
  saveCleanup (cleanup: CleanupRecord): Promise<void>
  getCleanup (id: string): Promise<CleanupRecord | undefined>
  /** Records a run unless the cleanup has one already: true when this call's run is the one recorded. */
  claimCleanupRun (run: CleanupRun): Promise<boolean>
  /**
   * Counts are always written; state and finish time only while the run is `running` (a final state stays final, so an
   * owner that was marked interrupted cannot overwrite it). Answers the state the run has now (undefined: no run).
   */
  updateCleanupRun (cleanupId: string, changes: CleanupRunChanges): Promise<CleanupRunState | undefined>
  getCleanupRun (cleanupId: string): Promise<CleanupRun | undefined>
  /**
   * At start-up: every run still `running` that started before `startedBefore` (this process's start) belonged to a
   * process that is gone; marks them interrupted, returns their ids. Runs this process started meanwhile stay.
   */
  interruptCleanupRuns (startedBefore?: string): Promise<string[]>
  /**
   * The owner's heartbeat, while the run is `running`: answers whether a cancel was asked, or undefined (nothing
   * written) when the run is no longer running (another replica marked it interrupted).
   */
  heartbeatCleanupRun (cleanupId: string): Promise<{ cancelRequested: boolean } | undefined>
  /** Asks a running run to stop (the first request's time and subject are kept): false when it is not running. */
  requestCleanupCancel (cleanupId: string, requestedBy: string): Promise<boolean>
  /**
   * Marks interrupted, in one conditional UPDATE, every `running` run whose heartbeat is older than `staleAfterMs`
   * (PostgreSQL: by the database's clock), so a run whose owner beats is never marked. Answers their ids.
   */
  interruptStaleCleanupRuns (staleAfterMs: number): Promise<string[]>
  /** Checks the store can write (for /readyz). */
  check (): Promise<void>
  close (): Promise<void>
  /** A store with a connection pool (PostgreSQL): its connections now, for /metrics. Zeros while it is not open. */
  poolStats?: () => AuditPoolStats
}

export interface AuditPoolStats {
  /** Open connections, idle or lent out. */
  total: number
  idle: number
  /** Calls waiting for a connection because every one is lent out. */
  waiting: number
  /** The pool's size (audit.poolSize). */
  max: number
}
