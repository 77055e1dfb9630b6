/**
 * A map that keeps at most `capacity` entries, forgetting the least recently used first. Caches and budgets keyed
 * by what callers or registries choose (addresses, repositories) would otherwise grow without end.
 */
export class Lru<K, V> {
  readonly #capacity: number
  // A Map iterates in insertion order, so re-inserting on use keeps the least recently used first.
  readonly #entries = new Map<K, V>()
  /**
   * Where the last eviction stopped. A fresh iterator per eviction would step over every deleted slot at the front
   * of the Map's table, which V8 keeps until it rehashes: about 6 µs a set once 10,000 entries are full, on a path
   * a cold page of 100 tags takes 200 times. Live iterators skip deleted entries and reach those appended later,
   * and everything before this one was evicted through it, so its next entry is always the least recently used.
   */
  #evictions: Iterator<K> | undefined

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
    while (this.#entries.size > this.#capacity) {
      let oldest = this.#evictions?.next()
      // A finished iterator stays finished: start a new one rather than evict nothing.
      if (oldest === undefined || oldest.done === true) {
        this.#evictions = this.#entries.keys()
        oldest = this.#evictions.next()
      }
      this.#entries.delete(oldest.value as K)
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
