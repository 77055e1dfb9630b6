import type { AuditTrail } from '../audit/trail.js'
import type { RegistryDirectory } from '../registry/directory.js'
import type { KeyedLock } from '../registry/untag.js'
import { reconcilePending } from './reconcile.js'

interface HousekeepingLogger {
  info: (details: object, message: string) => void
  warn: (details: object, message: string) => void
  error: (details: object, message: string) => void
}

export interface AuditHousekeeping {
  /** Settles when start-up pruning and reconciliation are done (never rejects: failures are logged). */
  startup: Promise<void>
  /** Stops the timers; resolves once a reconcile pass under way is over. */
  stop: () => Promise<void>
}

const PRUNE_INTERVAL_MS = 6 * 60 * 60 * 1000

/**
 * Prunes records past retention and settles records a stopped gateway left pending, at start and then every few
 * hours (pruning) or every `reconcile.intervalMs` (reconciliation, on every replica: each record is claimed by one).
 * It runs beside serving: a slow registry must not keep the gateway from starting.
 */
export interface HousekeepingDeps {
  audit: AuditTrail
  registries: RegistryDirectory
  retentionDays: number
  logger: HousekeepingLogger
  reconcile: {
    /** This replica's name in reconcile claims. */
    owner: string
    locks: KeyedLock
    intervalMs: number
    /** Records younger than this are left alone: in flight on some replica (periodic passes always). */
    inFlightMs: number
    /** The start-up pass leaves young records too: another replica may be running (PostgreSQL). */
    sharedAtStartup: boolean
  }
  /** Cleanup runs whose owner stopped beating: looked for every intervalMs, marked interrupted past staleAfterMs. */
  cleanupRuns: { staleAfterMs: number, intervalMs: number }
  /** Told which runs this replica marked interrupted (scheduled ones are reported for the replica that stopped). */
  onRunsInterrupted?: (cleanupIds: readonly string[]) => Promise<void>
}

export function startAuditHousekeeping (deps: HousekeepingDeps): AuditHousekeeping {
  const { audit, logger, retentionDays } = deps
  const prune = async (): Promise<void> => {
    const removed = await audit.store.prune(new Date(Date.now() - retentionDays * 24 * 60 * 60 * 1000))
    if (removed > 0) logger.info({ removed, retentionDays }, 'pruned old audit records')
  }
  const { owner, locks, intervalMs, inFlightMs, sharedAtStartup } = deps.reconcile
  const { staleAfterMs } = deps.cleanupRuns
  const reconcile = async (graceMs: number): Promise<void> => {
    const summary = await reconcilePending({ ...deps, owner, locks, inFlightMs: graceMs }, logger)
    if (summary.settled + summary.left > 0) logger.info(summary, 'reconciled pending audit records')
  }
  // Runs started from now on are this process's own, even while start-up housekeeping is still going.
  const bootedAt = new Date().toISOString()
  const startup = (async () => {
    await prune()
    await reconcile(sharedAtStartup ? inFlightMs : 0)
    // A run still `running` belonged to a gateway that stopped mid-run: its tags are each done (audited, the
    // pending record just reconciled) or untouched, and it is reported as interrupted, not resumed. In a store
    // shared by replicas only a run whose heartbeat is stale is: another may be some replica's, still going.
    const interrupted = sharedAtStartup ? await audit.store.interruptStaleCleanupRuns(staleAfterMs) : await audit.store.interruptCleanupRuns(bootedAt)
    if (interrupted.length > 0) {
      logger.warn({ cleanups: interrupted }, 'cleanup runs interrupted by a stop are marked interrupted')
      await deps.onRunsInterrupted?.(interrupted)
    }
  })().catch((error: unknown) => { logger.error({ err: error }, 'audit start-up housekeeping failed') })
  let sweeping: Promise<void> | undefined
  const sweep = (): void => {
    // One sweep at a time; a conditional UPDATE, so a run whose owner beat meanwhile is left alone.
    if (sweeping !== undefined) return
    sweeping = startup.then(async () => {
      const interrupted = await audit.store.interruptStaleCleanupRuns(staleAfterMs)
      if (interrupted.length > 0) {
        logger.warn({ cleanups: interrupted, staleAfterMs }, 'cleanup runs whose replica stopped beating are marked interrupted (kill -9, a lost node?)')
        await deps.onRunsInterrupted?.(interrupted)
      }
    }).catch((error: unknown) => { logger.error({ err: error }, 'marking stale cleanup runs interrupted failed') })
      .finally(() => { sweeping = undefined })
  }
  const sweeper = setInterval(sweep, deps.cleanupRuns.intervalMs)
  sweeper.unref()
  const timer = setInterval(() => { void prune().catch((error: unknown) => { logger.error({ err: error }, 'audit pruning failed') }) }, PRUNE_INTERVAL_MS)
  timer.unref()
  let running: Promise<void> | undefined
  const pass = (): void => {
    // One pass at a time: a slow registry must not pile passes up.
    if (running !== undefined) return
    running = startup.then(async () => { await reconcile(inFlightMs) })
      .catch((error: unknown) => { logger.error({ err: error }, 'reconciling pending audit records failed') })
      .finally(() => { running = undefined })
  }
  const reconciler = setInterval(pass, intervalMs)
  reconciler.unref()
  return {
    startup,
    async stop () {
      clearInterval(timer)
      clearInterval(reconciler)
      clearInterval(sweeper)
      await running
      await sweeping
    }
  }
}
