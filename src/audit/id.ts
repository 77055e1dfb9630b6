import { randomBytes } from 'node:crypto'

/** Audit ids look like ULIDs: 10 characters of time, so they sort by the millisecond, then 16 random ones. */
export const AUDIT_ID = /^[0-9A-HJKMNP-TV-Z]{26}$/

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'

/**
 * Every id draws a fresh 80-bit random part from the CSPRNG, also within one millisecond: a monotonic
 * factory's "previous + 1" would let anyone who sees one id name its neighbours. Ids made in the same
 * millisecond therefore sort in no particular order.
 */
export function newAuditId (timeMs: number): string {
  let time = ''
  let rest = Math.max(0, Math.floor(timeMs))
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[rest % 32] + time
    rest = Math.floor(rest / 32)
  }
  let random = ''
  let bits = 0
  let value = 0
  for (const byte of randomBytes(10)) {
    value = (value << 8) | byte
    bits += 8
    while (bits >= 5) {
      bits -= 5
      random += CROCKFORD[(value >> bits) & 31]
    }
    value &= (1 << bits) - 1
  }
  return time + random
}
