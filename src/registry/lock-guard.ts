/**
 * The repository lock, seen from inside the work it guards. A lock held across replicas lives on a database
 * connection; if that connection dies mid-work the database frees the lock while the holder carries on. The
 * registry client asks here just before each destructive call (manifest DELETE or PUT, tag DELETE), so a holder
 * that lost its lock stops before it changes anything a new holder may be changing too.
 */
import { AsyncLocalStorage } from 'node:async_hooks'

export interface HeldLock {
  /** Aborted once the lock is known lost (its connection failed or ended, or releasing it failed). */
  readonly signal: AbortSignal
  /** Resolves if the lock is still held, rejects (a catalogue error) if not. */
  confirm: () => Promise<void>
}

/** A lock that cannot be lost (one process): what SQLite's single replica holds. */
export const localHeldLock: HeldLock = { signal: new AbortController().signal, confirm: async () => {} }

// Carried through the async calls of the work, so the registry client needs no lock argument on every path.
const current = new AsyncLocalStorage<HeldLock>()

export async function underLock<T> (held: HeldLock, work: () => Promise<T>): Promise<T> {
  return await current.run(held, work)
}

/** Before a destructive registry call: refuses if the repository lock around it was lost. */
export async function confirmLockHeld (): Promise<void> {
  await current.getStore()?.confirm()
}
