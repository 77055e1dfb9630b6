/**
 * Executing a cleanup plan: each removal runs through the single-tag core by its plan id (so it is authorized
 * again, audited write-ahead with the cleanup's id, and skipped as PLAN_STALE when the tag changed since the plan),
 * a few at a time. Removals that depend on each other stay in order: multi-platform images before the rest (a
 * child's plan assumes its index is gone), the tags of one digest in sequence (the last one deletes the digest),
 * and a signature only once its subject's deletion happened. The run's state and counts are kept in the audit
 * store, so a restart finds it, marks it interrupted, and the trail tells which tags were done. With replicas, the
 * store is also how the others see it: the owner's heartbeat (run-heartbeat.ts) lets any replica mark a dead
 * owner's run interrupted, and carries a cancel asked on another replica to the owner.
 */
import type { AuditRecord, CleanupRun, CleanupRunCounts, CleanupRunState } from '../audit/types.js'
import { GatewayError, invalidField, isGatewayError } from '../errors.js'
import { ScansPerCaller, SharedTagScans } from '../images/co-tags.js'
import { executePlan, type ImageServices, type RequestContext } from '../images/delete-image.js'
import { restoreDeletion } from '../images/restore-deletion.js'
import type { RestoreDeletionResult } from '../images/shapes.js'
import { isIndex } from '../registry/media-types.js'
import type { Identity } from '../policy/types.js'
import { LOST, startHeartbeat, type RunReplicaSettings } from './run-heartbeat.js'
import { referrerOf } from './rules.js'
import type { CleanupEntry, CleanupPlan } from './shapes.js'

/** The abort reason of a gateway that stops: its runs end interrupted, not cancelled. */
const SHUTDOWN = Symbol('shutdown')
/** How far behind a run's stored counts may be while it runs (other replicas follow a run through them). */
const COUNTS_WRITE_MS = 250

export type TagResult = 'done' | 'stale' | 'failed' | 'skipped'

/** What a run reports as it goes: one event per removal, then one when it ends. */
export type CleanupRunEvent =
  | {
    type: 'tag'
    cleanupId: string
    repository: string
    tag: string
    result: TagResult
    action?: string
    auditId?: string
    errorCode?: string
    detail?: string
    counts: CleanupRunCounts
  }
  | { type: 'end', cleanupId: string, state: CleanupRunState, counts: CleanupRunCounts }

export interface CleanupRunServices {
  images: ImageServices
  /** Removals executed at once (cleanups.runConcurrency). */
  concurrency: number
  /** Removals one run may make unless its request raises the cap (cleanups.maxDeletions). */
  maxDeletions: number
  runs: ActiveRuns
  now: () => number
  /** Heartbeat, staleness, and how a replica that does not run it waits for and follows a run. */
  replicas: RunReplicaSettings
}

interface Active {
  controller: AbortController
  listeners: Set<(event: CleanupRunEvent) => void>
  finished: Promise<CleanupRun>
}

/** The runs this process is executing: what cancel aborts and what the event stream listens to. */
export class ActiveRuns {
  readonly #active = new Map<string, Active>()
  #stopping = false

  /** Aborts the run; in-flight removals finish, the rest are skipped. False when this process is not running it. */
  cancel (cleanupId: string): boolean {
    const active = this.#active.get(cleanupId)
    if (active === undefined) return false
    active.controller.abort()
    return true
  }

  /** Undefined when the run is not in progress here (the store then has its final state). */
  subscribe (cleanupId: string, listener: (event: CleanupRunEvent) => void): (() => void) | undefined {
    const active = this.#active.get(cleanupId)
    if (active === undefined) return undefined
    active.listeners.add(listener)
    return () => { active.listeners.delete(listener) }
  }

  /** Settles when the run ends (for tests, the bench and shutdown). */
  finished (cleanupId: string): Promise<CleanupRun> | undefined {
    return this.#active.get(cleanupId)?.finished
  }

  /**
   * Waits for every run in progress, after stopping them (shutdown: in-flight removals finish, the runs end
   * interrupted). A run claimed after this (a scheduled time or a request already past its checks) is stopped as it
   * starts: it ends interrupted with every removal skipped, not left going on a gateway that is closing.
   */
  async stopAll (): Promise<void> {
    this.#stopping = true
    const runs = [...this.#active.values()]
    for (const run of runs) run.controller.abort(SHUTDOWN)
    await Promise.allSettled(runs.map(async run => await run.finished))
  }

  add (cleanupId: string, active: Active): void {
    if (this.#stopping) active.controller.abort(SHUTDOWN)
    this.#active.set(cleanupId, active)
  }

  remove (cleanupId: string): void { this.#active.delete(cleanupId) }
  emit (cleanupId: string, event: CleanupRunEvent): void {
    // Only a run in progress emits: its entry is there until after its last event.
    for (const listener of (this.#active.get(cleanupId) as Active).listeners) listener(event)
  }
}

/** The removals of a plan, in the order it made them. */
export function removalsOf (cleanup: CleanupPlan): CleanupEntry[] {
  return cleanup.entries
    .filter(entry => entry.outcome === 'remove' && entry.plan !== undefined)
    .sort((a, b) => (a.sequence as number) - (b.sequence as number))
}

/**
 * Whether the caller may run or cancel this cleanup: the one who planned it, or someone whose roles grant `admin`
 * on every tag it removes. Each removal is authorized again as the caller's own deletion either way.
 */
export function mayManage (services: Pick<CleanupRunServices, 'images'>, identity: Identity, cleanup: CleanupPlan): boolean {
  if (identity.subject === cleanup.createdBy) return true
  const authorize = services.images.authorizer()
  const removals = removalsOf(cleanup)
  return removals.length > 0 && removals.every(entry =>
    authorize(identity, 'admin', { registry: cleanup.registry, repository: entry.repository, tag: entry.tag }).allow)
}

export function notYours (identity: Identity, cleanup: CleanupPlan, verb: string): GatewayError {
  return new GatewayError('FORBIDDEN',
    `${identity.subject} may not ${verb} cleanup ${cleanup.id}: only the one who planned it (${cleanup.createdBy}) or a caller holding admin on every tag it removes may.`,
    { extras: { subject: identity.subject, action: 'admin' } })
}

function alreadyRun (cleanup: CleanupPlan, run: CleanupRun): GatewayError {
  const what = run.state === 'cancelled' && run.counts.done + run.counts.stale + run.counts.failed === 0 ? 'was cancelled' : `was run (${run.state})`
  return new GatewayError('CLEANUP_RUN_EXISTS',
    `cleanup ${cleanup.id} ${what} by ${run.startedBy} at ${run.startedAt}; a cleanup runs once. Plan it again (POST /cleanups) for a new run.`,
    { extras: { state: run.state } })
}

const noCounts = (): CleanupRunCounts => ({ done: 0, stale: 0, failed: 0, skipped: 0 })

export interface ExecuteCleanupInput {
  identity: Identity
  context: RequestContext
  cleanup: CleanupPlan
  /** Raises (or lowers) the cap on removals for this run. */
  maxDeletions?: number
}

/**
 * Starts the run and answers once it is recorded as running; the removals go on in the background (ActiveRuns
 * tracks them). Refused, with nothing executed, when the caller may not run it, when it removes more than the cap,
 * or when it ran (or was cancelled) before.
 */
export async function executeCleanup (services: CleanupRunServices, input: ExecuteCleanupInput): Promise<CleanupRun> {
  const { cleanup, identity } = input
  if (!mayManage(services, identity, cleanup)) throw notYours(identity, cleanup, 'execute')
  const removals = removalsOf(cleanup)
  const cap = input.maxDeletions ?? services.maxDeletions
  if (removals.length > cap) {
    throw invalidField('maxDeletions', `at least ${removals.length}`,
      `cleanup ${cleanup.id} removes ${removals.length} tags, more than maxDeletions (${cap}); nothing was executed. Review the plan, then execute with maxDeletions: ${removals.length} or more.`)
  }
  const run: CleanupRun = {
    cleanupId: cleanup.id,
    state: 'running',
    startedBy: identity.subject,
    startedAt: new Date(services.now()).toISOString(),
    maxDeletions: cap,
    counts: noCounts()
  }
  const claimedAt = services.now()
  await claim(services, cleanup, run)
  const controller = new AbortController()
  const active: Active = { controller, listeners: new Set(), finished: undefined as unknown as Promise<CleanupRun> }
  services.runs.add(cleanup.id, active)
  const heartbeat = startHeartbeat({
    store: services.images.audit.store, cleanupId: cleanup.id, settings: services.replicas, now: services.now, controller, claimedAt
  })
  active.finished = perform(services, input, removals, run, controller.signal).finally(async () => {
    await heartbeat.stop()
    services.runs.remove(cleanup.id)
  })
  // The outcome is in the store and the events; a failure of the store itself is logged by perform's caller paths.
  active.finished.catch(() => undefined)
  return { ...run, counts: { ...run.counts } }
}

async function claim (services: CleanupRunServices, cleanup: CleanupPlan, run: CleanupRun): Promise<void> {
  const store = services.images.audit.store
  const claimed = await guarded(async () => await store.claimCleanupRun(run))
  if (!claimed) throw alreadyRun(cleanup, await guarded(async () => await store.getCleanupRun(cleanup.id)) as CleanupRun)
}

/** The store's failures as the catalogue's: a run never goes ahead (or on) unrecorded. */
async function guarded<T> (work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (error) {
    throw new GatewayError('AUDIT_UNAVAILABLE',
      'the audit store cannot record the cleanup run, so nothing more is executed; check the audit database.', { cause: error })
  }
}

/** A run that has not ended: `cancelling` is a running run whose cancel is not through yet. */
export function isLive (run: Pick<CleanupRun, 'state'>): boolean {
  return run.state === 'running' || run.state === 'cancelling'
}

/**
 * Cancels a run, on whichever replica it goes on, or a cleanup not yet run (it then never runs). The cancel is
 * written to the store, so the run's owner sees it at its next heartbeat if it is another replica; this replica's
 * own run is stopped at once. A run elsewhere is waited for up to cleanups.cancelWaitMs: the answer is the
 * run as it ended, or, still stopping, `cancelling` (the HTTP route answers 202 then).
 */
export async function cancelCleanup (services: CleanupRunServices, input: { identity: Identity, cleanup: CleanupPlan }): Promise<CleanupRun> {
  const { cleanup, identity } = input
  if (!mayManage(services, identity, cleanup)) throw notYours(identity, cleanup, 'cancel')
  const store = services.images.audit.store
  if (services.runs.cancel(cleanup.id)) {
    const finished = services.runs.finished(cleanup.id) as Promise<CleanupRun>
    // This replica's own run stops at once; who asked is recorded when the store can (its run ends either way).
    await store.requestCleanupCancel(cleanup.id, identity.subject).catch(() => false)
    return await finished
  }
  if (await guarded(async () => await store.requestCleanupCancel(cleanup.id, identity.subject))) return await stopped(services, cleanup.id)
  const now = new Date(services.now()).toISOString()
  const run: CleanupRun = {
    cleanupId: cleanup.id, state: 'cancelled', startedBy: identity.subject, startedAt: now, finishedAt: now, maxDeletions: 0, counts: noCounts()
  }
  if (await guarded(async () => await store.claimCleanupRun(run))) return run
  const stored = await guarded(async () => await store.getCleanupRun(cleanup.id)) as CleanupRun
  if (isLive(stored)) {
    // Claimed, here or on another replica, between the cancel request (no run yet) and the claim above: the
    // cancel goes to that run rather than being lost.
    await guarded(async () => await store.requestCleanupCancel(cleanup.id, identity.subject))
    if (services.runs.cancel(cleanup.id)) return await (services.runs.finished(cleanup.id) as Promise<CleanupRun>)
    return await stopped(services, cleanup.id)
  }
  // Already run, cancelled, or interrupted: cancelling changes nothing, and says what it is.
  return stored
}

/** Reads another replica's run until it has ended or cancelWaitMs has passed (on the injected clock). */
async function stopped (services: CleanupRunServices, cleanupId: string): Promise<CleanupRun> {
  const deadline = services.now() + services.replicas.cancelWaitMs
  for (;;) {
    const run = await guarded(async () => await services.images.audit.store.getCleanupRun(cleanupId)) as CleanupRun
    if (!isLive(run) || services.now() >= deadline) return run
    await new Promise(resolve => setTimeout(resolve, services.replicas.pollMs))
  }
}

/** Removals that must run one after another (one digest of one repository), and the phase they belong to. */
interface Chain { phase: number, entries: CleanupEntry[] }

function chainsOf (removals: readonly CleanupEntry[]): Chain[][] {
  const chains = new Map<string, Chain>()
  for (const entry of removals) {
    // Indexes first; then single images; then signatures, whose removal waits for their subject's.
    const phase = isIndex(entry.mediaType) ? 0 : referrerOf(entry.tag) !== undefined && entry.rule === 'referrers' ? 2 : 1
    const key = `${phase} ${entry.repository} ${entry.digest}`
    let chain = chains.get(key)
    if (chain === undefined) {
      chain = { phase, entries: [] }
      chains.set(key, chain)
    }
    chain.entries.push(entry)
  }
  return [0, 1, 2].map(phase => [...chains.values()].filter(chain => chain.phase === phase))
}

async function perform (
  services: CleanupRunServices, input: ExecuteCleanupInput, removals: readonly CleanupEntry[], run: CleanupRun, signal: AbortSignal
): Promise<CleanupRun> {
  const { cleanup } = input
  const store = services.images.audit.store
  const deletedDigests = new Set<string>()
  const context: RequestContext = { ...input.context, cleanupId: cleanup.id }
  // The run's own concurrency bounds its co-tag scans; the per-caller limit is for requests, which a run would
  // otherwise trip over itself (and audit a refused attempt for every retry). One co-tag scan per repository serves
  // the whole run, kept up to date by each removal's late look, rather than one scan per removal (N² fetches).
  const images: ImageServices = { ...services.images, coTagScans: new ScansPerCaller(services.concurrency), sharedScans: new SharedTagScans() }
  let auditLost: unknown
  let persisting = Promise.resolve()
  let countsDue: ReturnType<typeof setTimeout> | undefined

  // Counts are written in order, one write at a time, and at most every COUNTS_WRITE_MS: a write per removal was a
  // synchronous commit per tag on SQLite. The audit trail, not these counts, is what a restart trusts; this
  // replica's subscribers get every tag event at once, other replicas see counts at most that much behind.
  const writeCounts = (): void => {
    countsDue = undefined
    const counts = { ...run.counts }
    persisting = persisting.then(async () => { await store.updateCleanupRun(cleanup.id, { state: 'running', counts }) }).catch(() => undefined)
  }

  const report = (entry: CleanupEntry, result: TagResult, details: Partial<Extract<CleanupRunEvent, { type: 'tag' }>> = {}): void => {
    run.counts[result]++
    const counts = { ...run.counts }
    services.runs.emit(cleanup.id, { type: 'tag', cleanupId: cleanup.id, repository: entry.repository, tag: entry.tag, result, ...details, counts })
    countsDue ??= setTimeout(writeCounts, COUNTS_WRITE_MS)
  }

  const execute = async (entry: CleanupEntry): Promise<void> => {
    if (signal.aborted || auditLost !== undefined) {
      report(entry, 'skipped')
      return
    }
    const subject = referrerOf(entry.tag)?.subject
    if (entry.rule === 'referrers' && subject !== undefined && !deletedDigests.has(`${entry.repository}@${subject}`)) {
      report(entry, 'stale', { detail: `its subject ${subject} was not deleted by this run, so the signature stays` })
      return
    }
    try {
      const result = await executePlan(images, { identity: input.identity, context, plan: entry.plan as NonNullable<CleanupEntry['plan']> })
      if (result.action === 'deleted-digest') deletedDigests.add(`${entry.repository}@${entry.digest}`)
      report(entry, 'done', { action: result.action, auditId: result.auditId })
    } catch (caught) {
      // executePlan rejects with catalogue errors only; anything else is treated as a trail that cannot be written.
      /* c8 ignore next */
      const error = isGatewayError(caught) ? caught : new GatewayError('AUDIT_UNAVAILABLE', 'the deletion failed unexpectedly', { cause: caught })
      if (error.code === 'AUDIT_UNAVAILABLE') {
        // Nothing more may run unrecorded: the rest are skipped and the run ends interrupted.
        auditLost ??= error
        report(entry, 'failed', { errorCode: error.code, detail: error.detail })
        return
      }
      report(entry, error.code === 'PLAN_STALE' ? 'stale' : 'failed', { errorCode: error.code, detail: error.detail })
    }
  }

  for (const chains of chainsOf(removals)) {
    await runChains(chains, services.concurrency, execute)
  }
  const stoppedHere = signal.aborted && (signal.reason === SHUTDOWN || signal.reason === LOST)
  run.state = auditLost !== undefined || stoppedHere ? 'interrupted' : signal.aborted ? 'cancelled' : 'done'
  run.finishedAt = new Date(services.now()).toISOString()
  // The final write below carries every count.
  clearTimeout(countsDue)
  await persisting
  const stored = await store.updateCleanupRun(cleanup.id, { state: run.state, finishedAt: run.finishedAt, counts: run.counts }).catch(() => undefined)
  // Another replica's verdict (interrupted, when this one's heartbeat looked dead) stands: the store says how it ended.
  if (stored !== undefined && stored !== run.state) run.state = stored
  services.runs.emit(cleanup.id, { type: 'end', cleanupId: cleanup.id, state: run.state, counts: { ...run.counts } })
  return { ...run, counts: { ...run.counts } }
}

/** Runs chains `limit` at a time, each chain's removals in order. */
async function runChains (chains: readonly Chain[], limit: number, execute: (entry: CleanupEntry) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < chains.length) {
      const chain = chains[next++] as Chain
      for (const entry of chain.entries) await execute(entry)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, chains.length) }, worker))
}

export interface RestoreCleanupItem {
  deletionId: string
  repository: string
  tag: string
  result: 'restored' | 'failed'
  restore?: RestoreDeletionResult
  errorCode?: string
  detail?: string
}

/**
 * Undoes a cleanup: every deletion its run made that is still restorable, newest first (a digest's last tag came
 * back before the untags that preceded it), each through the single restore use case, which authorizes it again.
 */
export async function restoreCleanup (
  services: Pick<CleanupRunServices, 'images'>, input: { identity: Identity, context: RequestContext, cleanup: CleanupPlan }
): Promise<RestoreCleanupItem[]> {
  const { cleanup, identity } = input
  if (!mayManage(services, identity, cleanup)) throw notYours(identity, cleanup, 'restore')
  const context: RequestContext = { ...input.context, cleanupId: cleanup.id }
  const deletions: AuditRecord[] = []
  let cursor: string | undefined
  do {
    const filter = { cleanupId: cleanup.id, action: 'delete' as const, outcome: 'deleted' as const }
    // A run of more than 200 deletions is read page by page (the tests' runs fit in one).
    /* c8 ignore next */
    const page = await services.images.audit.list(filter, { limit: 200, ...(cursor === undefined ? {} : { cursor }) }, () => true)
    deletions.push(...page.items.filter(item => item.restoredBy === undefined && item.manifestSaved) as unknown as AuditRecord[])
    cursor = page.nextCursor
  } while (cursor !== undefined)
  const results: RestoreCleanupItem[] = []
  for (const deletion of deletions) {
    const base = { deletionId: deletion.id, repository: deletion.name, tag: deletion.tag }
    try {
      results.push({ ...base, result: 'restored', restore: await restoreDeletion(services.images, { identity, context, deletionId: deletion.id }) })
    } catch (error) {
      // A trail that cannot be written stops the undo (restoreDeletion already released that claim).
      /* c8 ignore next */
      if (!isGatewayError(error) || error.code === 'AUDIT_UNAVAILABLE') throw error
      results.push({ ...base, result: 'failed', errorCode: error.code, detail: error.detail })
    }
  }
  return results
}
