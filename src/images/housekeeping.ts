import type { AuditTrail } from '../audit/trail.js'
import type { RegistryDirectory } from '../registry/directory.js'
import { reconcilePending } from './reconcile.js'

interface HousekeepingLogger {
  info: (details: object, message: string) => void
  warn: (details: object, message: string) => void
  error: (details: object, message: string) => void
}

export interface AuditHousekeeping {
  /** Settles when start-up pruning and reconciliation are done (never rejects: failures are logged). */
  startup: Promise<void>
  stop: () => void
}

const PRUNE_INTERVAL_MS = 6 * 60 * 60 * 1000

/**
 * Prunes records past retention and settles records a stopped gateway left pending, at start and then every few
 * hours. It runs beside serving: a slow registry must not keep the gateway from starting.
 */
export interface HousekeepingDeps {
  audit: AuditTrail
  registries: RegistryDirectory
  retentionDays: number
  logger: HousekeepingLogger
}

export function startAuditHousekeeping (deps: HousekeepingDeps): AuditHousekeeping {
  const { audit, logger, retentionDays } = deps
  const prune = async (): Promise<void> => {
    const removed = await audit.store.prune(new Date(Date.now() - retentionDays * 24 * 60 * 60 * 1000))
    if (removed > 0) logger.info({ removed, retentionDays }, 'pruned old audit records')
  }
  const startup = (async () => {
    await prune()
    const summary = await reconcilePending(deps, logger)
    if (summary.settled + summary.left > 0) logger.info(summary, 'reconciled pending audit records')
    // A run still `running` belonged to a gateway that stopped mid-run: its tags are each done (audited, the
    // pending record just reconciled) or untouched, and it is reported as interrupted, not resumed.
    const interrupted = await audit.store.interruptCleanupRuns()
    if (interrupted.length > 0) logger.warn({ cleanups: interrupted }, 'cleanup runs interrupted by a stop are marked interrupted')
  })().catch((error: unknown) => { logger.error({ err: error }, 'audit start-up housekeeping failed') })
  const timer = setInterval(() => { void prune().catch((error: unknown) => { logger.error({ err: error }, 'audit pruning failed') }) }, PRUNE_INTERVAL_MS)
  timer.unref()
  return { startup, stop: () => { clearInterval(timer) } }
}
