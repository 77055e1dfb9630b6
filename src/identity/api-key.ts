import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { ApiKey } from '../policy/types.js'

export const API_KEY_PREFIX = 'rdg_'

/** 256 random bits; the prefix lets secret scanners and people recognise a gateway key. */
export function generateApiKey (): string {
  return API_KEY_PREFIX + randomBytes(32).toString('base64url')
}

/** What the policy stores instead of the key. */
export function sha256Hex (key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex')
}

/**
 * The configured key whose hash matches. Every configured hash is compared, each in constant time, so the time
 * taken tells an attacker neither which key came close nor where the match was.
 */
export function findApiKey (keys: readonly ApiKey[], presented: string): ApiKey | undefined {
  const digest = createHash('sha256').update(presented, 'utf8').digest()
  let found: ApiKey | undefined
  for (const key of keys) {
    if (timingSafeEqual(key.digest, digest)) found = key
  }
  return found
}
