/**
 * A map that keeps at most `capacity` entries, forgetting the least recently used first. Caches and budgets keyed
 * by what callers or registries choose (addresses, repositories) would otherwise grow without end.
 */
export class Lru<K, V> {
  readonly #capacity: number
  // A Map iterates in insertion order, so re-inserting on use keeps the least recently used first.
  readonly #entries = new Map<K, V>()

  constructor (capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`an LRU needs a capacity of at least 1, got ${capacity}`)
    this.#capacity = capacity
  }

  get size (): number {
    return this.#entries.size
  }

  get (key: K): V | undefined {
    const value = this.#entries.get(key)
    if (value === undefined) return undefined
    this.#entries.delete(key)
    this.#entries.set(key, value)
    return value
  }

  set (key: K, value: V): void {
    this.#entries.delete(key)
    this.#entries.set(key, value)
    for (const oldest of this.#entries.keys()) {
      if (this.#entries.size <= this.#capacity) break
      this.#entries.delete(oldest)
    }
  }

  delete (key: K): void {
    this.#entries.delete(key)
  }

  /** Forgets every entry the predicate picks (e.g. the expired ones). */
  deleteWhere (stale: (value: V) => boolean): void {
    for (const [key, value] of this.#entries) {
      if (stale(value)) this.#entries.delete(key)
    }
  }
}
