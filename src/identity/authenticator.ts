import type { Identity, PolicySource } from '../policy/types.js'
import { findApiKey } from './api-key.js'
import { readCredentials, type CallerCredentials } from './credentials.js'
import { JwtVerifier, type JwksOptions, type KeySourceLogger } from './jwt.js'
import { unauthenticated } from './unauthenticated.js'

export interface AuthenticatorOptions extends JwksOptions {
  /** Told when the identity provider's keys cannot be fetched (an operator problem, not the caller's). */
  logger?: KeySourceLogger
}

export interface Authenticator {
  /** The caller's identity, or a GatewayError (UNAUTHENTICATED; IDENTITY_PROVIDER_UNAVAILABLE when tokens cannot be checked). */
  authenticate (credentials: CallerCredentials): Promise<Identity>
  close (): void
}

/**
 * Turns request credentials into an Identity, against the policy in effect at that moment: a key removed from
 * the policy stops working with the reload that removes it.
 */
export function createAuthenticator (policies: PolicySource, options: AuthenticatorOptions = {}): Authenticator {
  const tokens = new JwtVerifier(options, options.logger)
  return {
    async authenticate (credentials) {
      const presented = readCredentials(credentials)
      const policy = policies.current()
      if (policy === undefined) throw unauthenticated('no policy is loaded, so the gateway accepts no credentials yet', 'invalid_token')
      if (presented.kind === 'jwt') {
        if (policy.jwt === undefined) throw unauthenticated('tokens are not accepted here (the policy names no issuer); use an API key', 'invalid_token')
        return await tokens.verify(policy.jwt, presented.token)
      }
      const key = findApiKey(policy.apiKeys, presented.key)
      if (key === undefined) throw unauthenticated('unknown API key (never issued, or revoked)', 'invalid_token')
      return { subject: `apikey:${key.name}`, groups: [...key.groups], kind: 'apikey' }
    },
    close () {
      tokens.clear()
    }
  }
}
