/**
 * The owning replica's side of a run shared through the store. Every `intervalMs` it writes the run's heartbeat,
 * which answers whether a cancel was asked (from any replica) and whether the run is still its own: a run another
 * replica marked interrupted (its heartbeat looked dead) stops at once, so two verdicts never coexist with work
 * going on. Stopping means what a cancel means: removals in flight finish (done and audited), the rest are skipped.
 */
import type { AuditStore } from '../audit/types.js'

/** The abort reason of a run that is no longer this replica's to drive: it ends interrupted. */
export const LOST = Symbol('lost')

export interface RunReplicaSettings {
  /** How often the owner writes the heartbeat and reads a cancel asked elsewhere (cleanups.heartbeatMs). */
  heartbeatMs: number
  /** A heartbeat older than this marks the run interrupted on any replica (cleanups.staleAfterMs, at least 3 beats). */
  staleAfterMs: number
  /** How long a cancel of another replica's run waits for it to stop before answering 202 cancelling. */
  cancelWaitMs: number
  /** How often a replica that does not run it reads the run for DELETE and the event stream. */
  pollMs: number
}

export interface HeartbeatDeps {
  store: Pick<AuditStore, 'heartbeatCleanupRun'>
  cleanupId: string
  settings: Pick<RunReplicaSettings, 'heartbeatMs' | 'staleAfterMs'>
  now: () => number
  controller: AbortController
  /** When the claim (which wrote the first heartbeat) was sent. */
  claimedAt: number
}

/**
 * Beats until stopped. A beat that fails or hangs is not retried faster: once no beat has succeeded for
 * staleAfterMs less one interval (measured from when the last good one was sent, which is no later than the time
 * the store wrote), the run stops itself, before any other replica may judge it dead.
 */
export function startHeartbeat (deps: HeartbeatDeps): { stop: () => Promise<void> } {
  const { store, cleanupId, settings, now, controller } = deps
  let lastGood = deps.claimedAt
  let beating: Promise<void> | undefined
  const tick = (): void => {
    if (now() - lastGood >= settings.staleAfterMs - settings.heartbeatMs) controller.abort(LOST)
    if (beating !== undefined) return
    const sent = now()
    beating = store.heartbeatCleanupRun(cleanupId).then(answer => {
      if (answer === undefined) {
        controller.abort(LOST)
        return
      }
      lastGood = sent
      if (answer.cancelRequested) controller.abort()
    }, () => undefined).finally(() => { beating = undefined })
  }
  const timer = setInterval(tick, settings.heartbeatMs)
  return {
    async stop () {
      clearInterval(timer)
      await beating
    }
  }
}
