import { GatewayError } from '../errors.js'

export const REALM = 'registry-delete-gateway'

/**
 * A 401 with the RFC 6750 challenge. `error` is set only when a credential was presented, so a client sending
 * nothing is simply told to authenticate. The detail never repeats what was presented.
 */
export function unauthenticated (detail: string, error?: 'invalid_token' | 'invalid_request'): GatewayError {
  const challenge = error === undefined ? `Bearer realm="${REALM}"` : `Bearer realm="${REALM}", error="${error}"`
  return new GatewayError('UNAUTHENTICATED', detail, { headers: { 'WWW-Authenticate': challenge } })
}
