/**
 * Following runs that another replica executes, through the store: one read every cleanups.pollMs per followed
 * run on this replica, however many streams follow it. A poll per stream let a caller holding many streams open
 * crowd the audit pool (and delay the heartbeats the running replica writes through the same database).
 */
import type { CleanupRun } from '../audit/types.js'
import { isLive } from './run-cleanup.js'

/** Each read of the run as stored; undefined when the store failed or no longer has it (following ends then). */
export type RunReading = CleanupRun | undefined

interface Followed {
  /** Each listener, with the number of the read it joined after. */
  listeners: Map<(reading: RunReading) => void, number>
  reads: number
  timer: NodeJS.Timeout | undefined
}

export class StoredRunFollowers {
  readonly #followed = new Map<string, Followed>()
  readonly #read: (cleanupId: string) => Promise<CleanupRun | undefined>
  readonly #pollMs: number

  constructor (read: (cleanupId: string) => Promise<CleanupRun | undefined>, pollMs: number) {
    this.#read = read
    this.#pollMs = pollMs
  }

  /**
   * Calls `listener` with every read of the run until it has ended (that read included) or could not be read
   * (undefined); the function returned stops following. The first read comes one interval from now, or with the next shared read.
   */
  follow (cleanupId: string, listener: (reading: RunReading) => void): () => void {
    let followed = this.#followed.get(cleanupId)
    if (followed === undefined) {
      followed = { listeners: new Map(), reads: 0, timer: undefined }
      this.#followed.set(cleanupId, followed)
      this.#schedule(cleanupId, followed)
    }
    followed.listeners.set(listener, followed.reads)
    const current = followed
    return () => {
      current.listeners.delete(listener)
      if (current.listeners.size === 0) this.#drop(cleanupId, current)
    }
  }

  /** How many runs this replica polls (for tests: one per run, however many follow it). */
  get polling (): number { return this.#followed.size }

  #schedule (cleanupId: string, followed: Followed): void {
    followed.timer = setTimeout(() => { void this.#poll(cleanupId, followed) }, this.#pollMs)
  }

  async #poll (cleanupId: string, followed: Followed): Promise<void> {
    const read = ++followed.reads
    const reading = await this.#read(cleanupId).catch(() => undefined)
    const last = reading === undefined || !isLive(reading)
    // Dropped before telling, so a listener that unsubscribes while told changes nothing here.
    if (last) this.#drop(cleanupId, followed)
    for (const [listener, joinedAfter] of [...followed.listeners]) {
      // A read sent before this listener joined may be older than what its stream already showed; an end is final.
      if (joinedAfter < read || last) listener(reading)
    }
    if (!last && followed.listeners.size > 0) this.#schedule(cleanupId, followed)
  }

  #drop (cleanupId: string, followed: Followed): void {
    clearTimeout(followed.timer)
    if (this.#followed.get(cleanupId) === followed) this.#followed.delete(cleanupId)
  }
}
