import { Lru } from '../lru.js'

export interface FailedAuthBudgetOptions {
  /** Failed authentications one client address may make per window. */
  limit: number
  windowMs: number
  /** Addresses remembered at once; the least recently seen are forgotten first, so memory stays bounded. */
  addresses?: number
  now?: () => number
}

interface Window { failures: number, endsAt: number }

/** Enough for every client of a busy gateway; an attacker cycling through more addresses only forgets old ones. */
const DEFAULT_ADDRESSES = 100_000

/**
 * Counts failed authentications per client address in fixed windows. Without it anyone can guess keys or make
 * the gateway verify junk tokens as fast as the network allows, since per-identity limits need an identity.
 */
export class FailedAuthBudget {
  readonly #options: FailedAuthBudgetOptions
  readonly #windows: Lru<string, Window>
  readonly #now: () => number

  constructor (options: FailedAuthBudgetOptions) {
    this.#options = options
    this.#windows = new Lru(options.addresses ?? DEFAULT_ADDRESSES)
    this.#now = options.now ?? Date.now
  }

  /** Seconds the address must wait before its credentials are checked again, or undefined when it may try now. */
  blockedFor (address: string): number | undefined {
    const window = this.#current(address)
    if (window === undefined || window.failures < this.#options.limit) return undefined
    return Math.ceil((window.endsAt - this.#now()) / 1000)
  }

  recordFailure (address: string): void {
    const window = this.#current(address)
    if (window === undefined) this.#windows.set(address, { failures: 1, endsAt: this.#now() + this.#options.windowMs })
    else window.failures++
  }

  #current (address: string): Window | undefined {
    const window = this.#windows.get(address)
    if (window === undefined || window.endsAt > this.#now()) return window
    this.#windows.delete(address)
    return undefined
  }
}
