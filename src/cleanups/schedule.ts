/**
 * Scheduled retention policies: a policy with a `schedule` (cron) is planned and run by itself, as the configured
 * service identity, through the same use cases a caller's cleanup goes through (plan, authorize per tag, audit,
 * cap, run). With several replicas each one keeps the timers, and at each scheduled time every replica tries:
 *
 * - the policy's lock in the shared store is taken without waiting (`tryExclusive`), so while one replica plans or
 *   runs the policy, the others pass; a replica that dies frees it with its connection;
 * - under that lock the scheduled time is claimed once (a marker in the shared plans table), so a replica whose
 *   timer fires after the first one finished does not run the same time again.
 *
 * `dryRunFirst` makes the first run of a policy, and the first after any change to its registry, repositories,
 * rules or identity, a plan only: it is kept (GET /cleanups/<id>) and reported, and the next scheduled time runs.
 * Every scheduled time ends in one webhook event: `cleanup.planned` (the dry run), `cleanup.finished` (the run's
 * state and counts) or `cleanup.failed` (why it could not plan or run).
 */
import { createHash } from 'node:crypto'
import { Cron } from 'croner'
import type { OutboxStore } from '../audit/outbox.js'
import type { SharedState } from '../audit/shared-state.js'
import type { CleanupRun } from '../audit/types.js'
import { isGatewayError } from '../errors.js'
import { cleanupEventMessages, type WebhookRoute } from '../notifications/events.js'
import type { CleanupNotificationEvent } from '../notifications/shapes.js'
import type { Identity } from '../policy/types.js'
import type { RequestContext } from '../images/attempt.js'
import { PagesInFlight } from '../images/browse.js'
import { planRetentionPolicy, type CleanupDeps, type RetentionPolicy } from './cleanups.js'
import { executeCleanup, type CleanupRunServices } from './run-cleanup.js'
import type { CleanupPlan } from './shapes.js'

/** A retention policy as configured, with the fields scheduling adds. */
export interface ScheduledPolicy extends RetentionPolicy {
  schedule?: string
  timezone: string
  dryRunFirst: boolean
  runAs?: string
  maxDeletions?: number
}

/** Why a schedule cannot be used (croner's own words), or undefined when it can. Five fields or a nickname only. */
export function scheduleProblem (schedule: string, timezone: string): string | undefined {
  try {
    cronOf(schedule, timezone).nextRun(new Date(0))
    return undefined
  } catch (error) {
    return (error as Error).message
  }
}

function cronOf (schedule: string, timezone: string): Cron {
  // Seconds are refused: a cleanup every few seconds would only pile plans up.
  return new Cron(schedule, { paused: true, timezone, mode: '5-part' })
}

/** The first scheduled time strictly after `afterMs`; undefined when the schedule has none left (a past date). */
export function nextSlot (schedule: string, timezone: string, afterMs: number): number | undefined {
  return cronOf(schedule, timezone).nextRun(new Date(afterMs))?.getTime()
}

/** What one replica's attempt at one scheduled time came to. */
export type SlotOutcome =
  | { outcome: 'busy' }
  | { outcome: 'taken' }
  | { outcome: 'planned', cleanupId: string }
  | { outcome: 'ran', cleanupId: string, run: CleanupRun }
  | { outcome: 'failed', errorCode: string, cleanupId?: string }

/** Hears each attempt's end (tests; a metric could). */
export type RetentionObserver = (policy: string, scheduledFor: string, outcome: SlotOutcome) => void

interface SchedulerLogger {
  info: (details: object, message: string) => void
  warn: (details: object, message: string) => void
  error: (details: object, message: string) => void
}

export interface RetentionSchedulerDeps {
  policies: readonly ScheduledPolicy[]
  /** retention.runAs: the service name policies without their own run as. */
  runAs: string
  /** The registry a policy naming none cleans (the configuration's default). */
  defaultRegistry: string
  cleanups: CleanupDeps
  runs: CleanupRunServices
  shared: Pick<SharedState, 'tryExclusive' | 'peekPlan' | 'putPlan' | 'takePlan'>
  outbox: Pick<OutboxStore, 'publish'>
  webhooks: readonly WebhookRoute[]
  /** Told after an event was written, so deliveries start at once. */
  onPublished: () => void
  now: () => number
  logger: SchedulerLogger
  observer?: RetentionObserver
}

export interface RetentionScheduler {
  /** Runs one scheduled time of a policy now, as its timer does (tests, and the timers themselves). */
  runSlot: (policyName: string, slotMs: number) => Promise<SlotOutcome>
  /** Stops the timers and waits for attempts under way (their runs are stopped by ActiveRuns.stopAll). */
  stop: () => Promise<void>
  /**
   * Reports the scheduled runs among `cleanupIds`, which this replica just marked interrupted because the replica
   * running them stopped (kill -9, a lost node): that replica could not send the time's `cleanup.finished`.
   */
  reportInterrupted: (cleanupIds: readonly string[]) => Promise<void>
}

/** The policy's latest scheduled work, as its LAST_KIND marker keeps it once planned. */
interface LastWork { cleanupId: string, slotMs: number, totals: CleanupPlan['totals'] }

/** Scheduled times are remembered this long: far longer than any replica's clock could lag behind another's. */
const SLOT_MEMORY_MS = 7 * 24 * 60 * 60 * 1000
const SLOT_KIND = 'retention-slot'
/** The policy's latest scheduled work: `{}` while it is being planned (until the lease ends), then `{cleanupId}`. */
const LAST_KIND = 'retention-last'
/** A replica that dies while planning holds the policy this long at most. */
const PLANNING_LEASE_MS = 30 * 60 * 1000
const DRY_RUN_KIND = 'retention-dry-run'
/** Markers kept per kind: a policy every minute for a week, times a few policies. */
const MARKER_CAPACITY = 100_000
/** setTimeout's longest delay; a later time is reached by waking and arming again. */
const MAX_TIMER_MS = 2_147_483_647

export function serviceIdentity (runAs: string): Identity {
  return { subject: `service:${runAs}`, groups: [], kind: 'service' }
}

/** What makes a policy "changed" for dryRunFirst: what it cleans, how, and as whom. */
export function policyFingerprint (policy: ScheduledPolicy, runAs: string): string {
  const { registry, repositories, rules } = policy
  return createHash('sha256').update(JSON.stringify({ registry, repositories, rules, runAs: policy.runAs ?? runAs })).digest('hex').slice(0, 32)
}

export function startRetentionScheduler (deps: RetentionSchedulerDeps): RetentionScheduler {
  const { logger, now } = deps
  const scheduled = deps.policies.filter(policy => policy.schedule !== undefined)
  const timers = new Map<string, NodeJS.Timeout>()
  /** Attempts under way in this process, one per policy at most. */
  const attempts = new Map<string, Promise<SlotOutcome>>()
  const stopping = new AbortController()

  const observe = (policy: string, slotMs: number, outcome: SlotOutcome): void => {
    try {
      deps.observer?.(policy, new Date(slotMs).toISOString(), outcome)
    } catch (error) {
      logger.warn({ err: error, policy }, 'the retention observer failed')
    }
  }

  const publish = async (policy: ScheduledPolicy, event: CleanupNotificationEvent): Promise<void> => {
    const messages = cleanupEventMessages(deps.webhooks, event)
    if (messages.length === 0) return
    try {
      await deps.outbox.publish({ registry: event.data.registry, name: policy.repositories[0] as string, tag: '' }, messages)
      deps.onPublished()
    } catch (error) {
      logger.error({ err: error, policy: policy.name, eventId: event.id }, 'a scheduled cleanup\'s report could not be written to the outbox')
    }
  }

  const eventOf = (
    policy: ScheduledPolicy, slotMs: number, type: CleanupNotificationEvent['type'], id: string, data: Partial<CleanupNotificationEvent['data']>
  ): CleanupNotificationEvent => ({
    id,
    type,
    timestamp: new Date(now()).toISOString(),
    data: {
      policy: policy.name,
      scheduledFor: new Date(slotMs).toISOString(),
      subject: serviceIdentity(policy.runAs ?? deps.runAs).subject,
      registry: policy.registry ?? deps.defaultRegistry,
      repositories: [...policy.repositories],
      dryRun: false,
      ...data
    }
  })

  const failed = async (policy: ScheduledPolicy, slotMs: number, error: unknown, cleanupId?: string): Promise<SlotOutcome> => {
    // Only catalogue errors reach here from the use cases; anything else is reported without its message.
    /* c8 ignore next */
    const { code, detail } = isGatewayError(error) ? error : { code: 'INTERNAL_ERROR', detail: 'the scheduled cleanup failed unexpectedly' }
    logger.warn({ policy: policy.name, scheduledFor: new Date(slotMs).toISOString(), errorCode: code, detail }, 'a scheduled cleanup did not run')
    // The id names neither the policy nor the time: the deliveries listing shows ids to auditors of one repository.
    const id = `evt_retention_${createHash('sha256').update(`${policy.name}\n${slotMs}`).digest('hex').slice(0, 32)}_failed`
    await publish(policy, eventOf(policy, slotMs, 'cleanup.failed', id, {
      errorCode: code, detail, ...(cleanupId === undefined ? {} : { cleanupId })
    }))
    return { outcome: 'failed', errorCode: code, ...(cleanupId === undefined ? {} : { cleanupId }) }
  }

  // Scheduled plans are made one at a time on a replica: policies sharing a service identity and a time would
  // otherwise meet its per-caller limit (429) and lose that time. Each plan already reads 16 manifests at once.
  const planner: CleanupDeps = { ...deps.cleanups, plansInFlight: new PagesInFlight(1, 'scheduled cleanups being planned', 'retention') }
  let planning: Promise<unknown> = Promise.resolve()
  const planInTurn = async (work: () => Promise<CleanupPlan>): Promise<CleanupPlan> => {
    const turn = planning.then(work)
    planning = turn.catch(() => undefined)
    return await turn
  }

  const perform = async (policy: ScheduledPolicy, slotMs: number): Promise<SlotOutcome> => {
    const identity = serviceIdentity(policy.runAs ?? deps.runAs)
    const context: RequestContext = { requestId: `retention-${policy.name}-${slotMs}`, transport: 'schedule' }
    const signal = stopping.signal
    let plan: CleanupPlan
    try {
      plan = await planInTurn(async () => await planRetentionPolicy(planner, { identity, context, signal, name: policy.name }))
    } catch (error) {
      // The next time need not wait for a planning lease that ran out on nothing.
      await deps.shared.takePlan(LAST_KIND, policy.name, now())
      return await failed(policy, slotMs, error)
    }
    // The time and totals too: a replica that marks this run interrupted (its own replica died) reports it from here.
    const payload: LastWork = { cleanupId: plan.id, slotMs, totals: plan.totals }
    const last = { kind: LAST_KIND, id: policy.name, payload, requester: identity.subject, expiresMs: now() + SLOT_MEMORY_MS }
    await deps.shared.putPlan(last, MARKER_CAPACITY, now())
    if (policy.dryRunFirst) {
      const fingerprint = `${policy.name}:${policyFingerprint(policy, deps.runAs)}`
      if (await deps.shared.peekPlan(DRY_RUN_KIND, fingerprint, now()) === undefined) {
        const marker = { kind: DRY_RUN_KIND, id: fingerprint, payload: { cleanupId: plan.id }, requester: identity.subject, expiresMs: Number.MAX_SAFE_INTEGER }
        await deps.shared.putPlan(marker, MARKER_CAPACITY, now())
        logger.info({ policy: policy.name, cleanupId: plan.id, totals: plan.totals }, 'a new or changed retention policy was planned only (dryRunFirst)')
        const data = { cleanupId: plan.id, dryRun: true, totals: plan.totals }
        await publish(policy, eventOf(policy, slotMs, 'cleanup.planned', `evt_cleanup_${plan.id}_planned`, data))
        return { outcome: 'planned', cleanupId: plan.id }
      }
    }
    let run: CleanupRun
    try {
      // A stopping gateway stops the run (ActiveRuns.stopAll), also one claimed while it was stopping: in-flight
      // removals finish and are audited, the run ends interrupted.
      await executeCleanup(deps.runs, { identity, context, cleanup: plan, ...(policy.maxDeletions === undefined ? {} : { maxDeletions: policy.maxDeletions }) })
      // A run with nothing to remove can end before this line (microtask order decides): its end is then in the store.
      /* c8 ignore next */
      run = await (deps.runs.runs.finished(plan.id) ?? deps.cleanups.audit.store.getCleanupRun(plan.id)) as CleanupRun
    } catch (error) {
      return await failed(policy, slotMs, error, plan.id)
    }
    logger.info({ policy: policy.name, cleanupId: plan.id, state: run.state, counts: run.counts }, 'a scheduled cleanup ran')
    await publish(policy, eventOf(policy, slotMs, 'cleanup.finished', `evt_cleanup_${plan.id}_finished`, {
      cleanupId: plan.id, totals: plan.totals, state: run.state, counts: run.counts
    }))
    return { outcome: 'ran', cleanupId: plan.id, run }
  }

  /**
   * Under the policy's lock, briefly: the time is taken unless another replica took it, or the policy's previous
   * run (or its planning, within its lease) is still going somewhere.
   */
  const claim = async (policy: ScheduledPolicy, slotMs: number): Promise<'claimed' | 'taken' | 'busy'> => {
    const slotId = `${policy.name}@${new Date(slotMs).toISOString()}`
    if (await deps.shared.peekPlan(SLOT_KIND, slotId, now()) !== undefined) return 'taken'
    const last = await deps.shared.peekPlan(LAST_KIND, policy.name, now())
    if (last !== undefined) {
      const { cleanupId } = last.payload as { cleanupId?: string }
      if (cleanupId === undefined || (await deps.cleanups.audit.store.getCleanupRun(cleanupId))?.state === 'running') return 'busy'
    }
    const subject = serviceIdentity(policy.runAs ?? deps.runAs).subject
    await deps.shared.putPlan({ kind: SLOT_KIND, id: slotId, payload: {}, requester: subject, expiresMs: slotMs + SLOT_MEMORY_MS }, MARKER_CAPACITY, now())
    const planningLease = { kind: LAST_KIND, id: policy.name, payload: {}, requester: subject, expiresMs: now() + PLANNING_LEASE_MS }
    await deps.shared.putPlan(planningLease, MARKER_CAPACITY, now())
    return 'claimed'
  }

  const attempt = async (policy: ScheduledPolicy, slotMs: number): Promise<SlotOutcome> => {
    let claimed: 'claimed' | 'taken' | 'busy'
    try {
      const tried = await deps.shared.tryExclusive(`retention:${policy.name}`, async () => await claim(policy, slotMs))
      claimed = tried.held ? tried.value : 'busy'
    } catch (error) {
      // The shared store is down: no replica can tell whether another ran this time, so none does.
      logger.error({ err: error, policy: policy.name, scheduledFor: new Date(slotMs).toISOString() },
        'a scheduled cleanup could not take its lock; this time is skipped')
      return { outcome: 'failed', errorCode: 'AUDIT_UNAVAILABLE' }
    }
    if (claimed !== 'claimed') return { outcome: claimed }
    try {
      return await perform(policy, slotMs)
    } catch (error) {
      // Only the store's own calls between the use cases get here (the dry-run marker, the last-run marker).
      return await failed(policy, slotMs, error)
    }
  }

  const runSlot = async (policyName: string, slotMs: number): Promise<SlotOutcome> => {
    const policy = scheduled.find(each => each.name === policyName)
    if (policy === undefined) throw new Error(`no scheduled retention policy ${policyName}`)
    if (attempts.has(policy.name)) {
      logger.warn({ policy: policy.name, scheduledFor: new Date(slotMs).toISOString() },
        'the previous scheduled run of this policy still goes here; this time is skipped')
      observe(policy.name, slotMs, { outcome: 'busy' })
      return { outcome: 'busy' }
    }
    const running = attempt(policy, slotMs).finally(() => { attempts.delete(policy.name) })
    attempts.set(policy.name, running)
    const outcome = await running
    observe(policy.name, slotMs, outcome)
    return outcome
  }

  const arm = (policy: ScheduledPolicy, afterMs: number): void => {
    const slotMs = nextSlot(policy.schedule as string, policy.timezone, afterMs)
    // A schedule naming only past dates (a year field is refused, so this is a 29 February that never comes) stops.
    /* c8 ignore next */
    if (slotMs === undefined) return
    const wake = (): void => {
      // Woken before its time (a delay longer than setTimeout's, or a clock set back): wait again for the same time.
      if (now() < slotMs) {
        timers.set(policy.name, setTimeout(wake, Math.min(slotMs - now(), MAX_TIMER_MS)).unref())
        return
      }
      arm(policy, slotMs)
      void runSlot(policy.name, slotMs)
    }
    timers.set(policy.name, setTimeout(wake, Math.min(Math.max(slotMs - now(), 0), MAX_TIMER_MS)).unref())
  }

  for (const policy of scheduled) arm(policy, now())
  if (scheduled.length > 0) logger.info({ policies: scheduled.map(policy => policy.name) }, 'scheduled retention policies armed')

  const reportInterrupted = async (cleanupIds: readonly string[]): Promise<void> => {
    for (const policy of scheduled) {
      try {
        // A planning lease ({}) or a marker from before times were kept ({cleanupId}) names no run to report.
        const last = (await deps.shared.peekPlan(LAST_KIND, policy.name, now()))?.payload as Partial<LastWork> | undefined
        if (last?.slotMs === undefined || !cleanupIds.includes(last.cleanupId as string)) continue
        const run = await deps.cleanups.audit.store.getCleanupRun(last.cleanupId as string) as CleanupRun
        // Run by someone else (a dry run's plan, or one over the cap, executed by hand later): not this time's run.
        if (run.startedBy !== serviceIdentity(policy.runAs ?? deps.runAs).subject) continue
        logger.warn({ policy: policy.name, cleanupId: run.cleanupId, counts: run.counts },
          'a scheduled cleanup\'s replica stopped mid-run; reported as it was marked')
        // The same event id as its own replica's report: if that replica was only slow and reports too, one is kept.
        await publish(policy, eventOf(policy, last.slotMs, 'cleanup.finished', `evt_cleanup_${run.cleanupId}_finished`, {
          cleanupId: run.cleanupId, totals: last.totals, state: run.state, counts: run.counts
        }))
      } catch (error) {
        logger.error({ err: error, policy: policy.name }, 'an interrupted scheduled cleanup could not be reported')
      }
    }
  }

  return {
    runSlot,
    reportInterrupted,
    async stop () {
      stopping.abort()
      for (const timer of timers.values()) clearTimeout(timer)
      await Promise.allSettled(attempts.values())
    }
  }
}
