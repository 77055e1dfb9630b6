/**
 * The two proofs a Mattermost request can carry. A slash command carries the command's token, in the form body
 * and in `Authorization: Token …`; a button click carries nothing signed, so each button's context holds its
 * plan id and an HMAC of it made with a secret only the gateway knows.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { GatewayError } from '../../errors.js'

/** Hashing both sides first gives equal lengths, so the comparison takes the same time whatever was sent. */
function sameSecret (presented: string, expected: string): boolean {
  const digest = (value: string): Buffer => createHash('sha256').update(value).digest()
  return timingSafeEqual(digest(presented), digest(expected))
}

/** Throws UNAUTHENTICATED unless both the form's token and the Authorization header's are the command's token. */
export function verifyCommandToken (expected: string, formToken: unknown, authorization: unknown): void {
  const header = typeof authorization === 'string' ? /^Token (\S+)$/.exec(authorization)?.[1] : undefined
  // Both are checked every time (no short-circuit), so the answer's timing does not say which one was wrong.
  const formOk = sameSecret(typeof formToken === 'string' ? formToken : '', expected)
  const headerOk = sameSecret(header ?? '', expected)
  if (!formOk || !headerOk) {
    throw new GatewayError('UNAUTHENTICATED', 'the request does not carry the Mattermost slash command token (form field token and Authorization: Token).')
  }
}

/** What a button's context says: its action, the plan id, and who may press it. */
export interface ButtonFields {
  action: string
  id: string
  team: string
}

export function buttonMac (secret: string, fields: ButtonFields): string {
  // Length-prefixed, so no two different field lists share the text that is signed.
  const text = [fields.action, fields.id, fields.team].map(field => `${field.length}:${field}`).join('|')
  return createHmac('sha256', secret).update(`mattermost-button:${text}`).digest('base64url')
}

const MAC = /^[A-Za-z0-9_-]{43}$/

/** True when `mac` is the gateway's HMAC of the fields; constant-time over the fixed-length MAC. */
export function verifyButtonMac (secret: string, fields: ButtonFields, mac: unknown): boolean {
  if (typeof mac !== 'string' || !MAC.test(mac)) return false
  return timingSafeEqual(Buffer.from(buttonMac(secret, fields)), Buffer.from(mac))
}
