/**
 * Slack's request signing (https://api.slack.com/authentication/verifying-requests-from-slack): `v0=` and the
 * hex HMAC-SHA256, keyed with the app's signing secret, of `v0:<X-Slack-Request-Timestamp>:<raw body>`. The raw
 * bytes are hashed, never a re-serialized parse, so no parser quirk can make two bodies share a signature.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import type { SharedState } from '../../audit/shared-state.js'
import { GatewayError } from '../../errors.js'

/** Slack's window: a request stamped further than this from now, either way, is refused. */
export const SIGNATURE_WINDOW_SECONDS = 300

const TIMESTAMP = /^\d{1,12}$/
const SIGNATURE = /^v0=[0-9a-f]{64}$/

export function slackSignature (secret: string, timestamp: string, rawBody: Buffer | string): string {
  const hmac = createHmac('sha256', secret)
  hmac.update(`v0:${timestamp}:`)
  hmac.update(rawBody)
  return `v0=${hmac.digest('hex')}`
}

function refused (why: string): GatewayError {
  // One message for every failure but the clock: telling a forger which part was wrong helps only the forger.
  return new GatewayError('UNAUTHENTICATED', `the request is not signed by Slack: ${why}.`)
}

export interface SignedRequest {
  timestamp: string | string[] | undefined
  signature: string | string[] | undefined
  rawBody: Buffer
}

/**
 * Throws UNAUTHENTICATED unless the request carries a valid, fresh signature. The comparison is constant-time
 * over fixed-length values (the header's shape is checked first, so lengths always match).
 */
export function verifySlackSignature (secret: string, request: SignedRequest, nowMs: number): void {
  const { timestamp, signature } = request
  if (typeof timestamp !== 'string' || !TIMESTAMP.test(timestamp)) throw refused('X-Slack-Request-Timestamp is missing or not a number of seconds')
  if (Math.abs(Math.floor(nowMs / 1000) - Number(timestamp)) > SIGNATURE_WINDOW_SECONDS) {
    throw refused(`X-Slack-Request-Timestamp is more than ${SIGNATURE_WINDOW_SECONDS / 60} minutes from the gateway's clock`)
  }
  if (typeof signature !== 'string' || !SIGNATURE.test(signature)) throw refused('X-Slack-Signature is missing or malformed')
  const expected = Buffer.from(slackSignature(secret, timestamp, request.rawBody))
  if (!timingSafeEqual(expected, Buffer.from(signature))) throw refused('the signature does not match')
}

/**
 * Signatures seen within the window, so a captured request cannot be sent again. An entry outlives the window by
 * its own width (a timestamp may be up to a window ahead), after which the clock check refuses the request
 * anyway. Bounded: when full of live entries it refuses new requests rather than forget one that could replay.
 */
export class ReplayGuard {
  readonly #capacity: number
  // Insertion order is expiry order (every entry lives the same time), so expired entries are at the front.
  readonly #seen = new Map<string, number>()

  constructor (capacity: number) {
    this.#capacity = capacity
  }

  /** Records the signature; throws if it was seen within the window or there is no room to remember it. */
  remember (signature: string, nowMs: number): void {
    for (const [seen, expires] of this.#seen) {
      if (expires > nowMs) break
      this.#seen.delete(seen)
    }
    if (this.#seen.has(signature)) throw replayed()
    if (this.#seen.size >= this.#capacity) {
      throw new GatewayError('RATE_LIMITED', 'too many Slack requests within the signature window; retry in a minute.', { retryAfter: 60 })
    }
    this.#seen.set(signature, nowMs + REPLAY_MEMORY_MS)
  }

  /** Drops a signature remembered for a request that was then refused before anything was done. */
  forget (signature: string): void {
    this.#seen.delete(signature)
  }
}

/** A signature is remembered for the window's width past its own stamp's furthest reach. */
const REPLAY_MEMORY_MS = 2 * SIGNATURE_WINDOW_SECONDS * 1000

const replayed = (): GatewayError => refused('this signed request was already received (a replay)')

/**
 * Accepts each signed request once: this replica's guard first (no round trip for a replay sent here again), then,
 * with replicas on one PostgreSQL, the shared store in one statement on the database's clock, so a request replayed
 * to another replica is refused there as well. Kept there as a hash: the store needs only to tell signatures apart.
 * Fails closed: a store that cannot answer refuses the request, and this replica forgets it, so the same request
 * sent again once the store answers is not taken for a replay.
 */
export async function acceptOnce (guard: ReplayGuard, shared: Pick<SharedState, 'rememberOnce'>, signature: string, nowMs: number): Promise<void> {
  guard.remember(signature, nowMs)
  if (shared.rememberOnce === undefined) return
  let fresh: boolean
  try {
    fresh = await shared.rememberOnce('slack-signature', createHash('sha256').update(signature).digest('hex'), REPLAY_MEMORY_MS)
  } catch (error) {
    guard.forget(signature)
    throw new GatewayError('AUDIT_UNAVAILABLE',
      'the shared store cannot tell whether this Slack request was already received, so it is refused; retry shortly.', { cause: error })
  }
  if (!fresh) throw replayed()
}
