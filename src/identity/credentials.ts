import { unauthenticated } from './unauthenticated.js'

/** The raw header values, as a transport received them. */
export interface CallerCredentials {
  /** The `Authorization` header. */
  authorization?: string
  /** The `X-API-Key` header. */
  apiKey?: string
}

export type Presented =
  | { kind: 'apikey', key: string }
  | { kind: 'jwt', token: string }

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/
/** Far above any real key or token; bounds the work an anonymous caller can cause. */
const MAX_LENGTH = 8192

function present (value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value
}

/** Which credential was presented, and how to check it. Throws UNAUTHENTICATED when none or an unusable one. */
export function readCredentials (credentials: CallerCredentials): Presented {
  const authorization = present(credentials.authorization)
  const apiKey = present(credentials.apiKey)
  if (authorization === undefined && apiKey === undefined) {
    throw unauthenticated('no credentials: send "Authorization: Bearer <API key or token>" or "X-API-Key: <API key>"')
  }
  if (authorization !== undefined && apiKey !== undefined) {
    throw unauthenticated('send one credential: either Authorization or X-API-Key, not both', 'invalid_request')
  }
  const value = (authorization ?? apiKey) as string
  if (value.length > MAX_LENGTH) throw unauthenticated(`the credential is longer than ${MAX_LENGTH} characters`, 'invalid_request')
  if (apiKey !== undefined) return { kind: 'apikey', key: apiKey }
  const bearer = BEARER.exec(value)
  if (bearer === null) {
    throw unauthenticated('the Authorization header must be "Bearer <API key or token>"', 'invalid_request')
  }
  const secret = bearer[1] as string
  // Three base64url parts is a JWT's shape; an API key never has dots.
  return JWT_SHAPE.test(secret) ? { kind: 'jwt', token: secret } : { kind: 'apikey', key: secret }
}
