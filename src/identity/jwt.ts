import { createRemoteJWKSet, errors, jwtVerify, type JWTHeaderParameters, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { GatewayError } from '../errors.js'
import type { Identity, JwtSettings } from '../policy/types.js'
import { unauthenticated } from './unauthenticated.js'

export interface JwksOptions {
  /** How long one fetch of the JWKS may take; default 5000 ms. */
  jwksTimeoutMs?: number
  /** Least time between refetches that unknown key ids cause, so junk tokens cannot hammer the identity provider; default 30 000 ms. */
  jwksCooldownMs?: number
  /** How long fetched keys are used before they are fetched again; default 600 000 ms. */
  jwksCacheMaxAgeMs?: number
}

export interface KeySourceLogger {
  warn: (details: object, message: string) => void
}

type ErrorClass = abstract new (...args: never[]) => Error

/** Why jose refused a token, in words safe to show the caller; the token itself is never included. */
const REJECTIONS: ReadonlyArray<[ErrorClass, string]> = [
  [errors.JWTExpired, 'the token has expired'],
  [errors.JWSSignatureVerificationFailed, 'the token signature does not verify'],
  [errors.JOSEAlgNotAllowed, 'the token algorithm is not accepted; only asymmetric signatures are'],
  [errors.JWKSNoMatchingKey, "the key that signed the token (kid) is not one of the identity provider's keys"],
  [errors.JWKSMultipleMatchingKeys, 'the token does not say (kid) which of several keys signed it'],
  [errors.JWTInvalid, 'the token is malformed'],
  [errors.JWSInvalid, 'the token is malformed'],
  [errors.JOSENotSupported, 'the token uses a feature the gateway does not support']
]

const CLAIM_REJECTIONS: Readonly<Record<string, string>> = {
  iss: 'the token was issued by an issuer the gateway does not accept',
  aud: 'the token is meant for another audience',
  nbf: 'the token is not valid yet',
  exp: 'the token must carry an expiry (exp)'
}

function rejectionOf (error: unknown): string | undefined {
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === 'iat' && error.reason === 'missing') return 'the token must carry its issue time (iat), so that its lifetime can be checked'
    if (error.claim === 'iat' && error.reason === 'check_failed') return 'the token claims to be issued in the future (iat)'
    return CLAIM_REJECTIONS[error.claim] ?? `the token's ${error.claim} claim is invalid`
  }
  return REJECTIONS.find(([type]) => error instanceof type)?.[1]
}

function groupsFrom (value: unknown): string[] {
  if (typeof value === 'string') return [value]
  // Entries that are not strings cannot name a group; skipping them can only give fewer roles.
  if (Array.isArray(value)) return value.filter((group): group is string => typeof group === 'string')
  return []
}

/**
 * Token types the gateway accepts (RFC 8725 §3.11 explicit typing): none, plain JWT, or an OAuth access token
 * (RFC 9068). Compared case-insensitively, with the optional `application/` prefix (RFC 7515 §4.1.9), so that
 * other JWTs the identity provider signs (logout tokens, DPoP proofs, …) cannot stand in for an access token.
 */
const ACCEPTED_TYPES = new Set(['jwt', 'at+jwt'])

function acceptsType (header: JWTHeaderParameters): boolean {
  if (header.typ === undefined) return true
  return typeof header.typ === 'string' && ACCEPTED_TYPES.has(header.typ.toLowerCase().replace(/^application\//, ''))
}

/** jose has checked both claims are numbers (exp required, iat required by maxTokenAge). */
function checkLifetime (payload: JWTPayload, settings: JwtSettings): void {
  const lifetime = (payload.exp as number) - (payload.iat as number)
  if (lifetime > settings.maxLifetimeSeconds) {
    throw unauthenticated(
      `the token is valid for ${lifetime} s (exp - iat); the gateway accepts at most ${settings.maxLifetimeSeconds} s (jwt.maxLifetimeSeconds)`,
      'invalid_token'
    )
  }
}

function identityFrom (payload: JWTPayload, settings: JwtSettings): Identity {
  const subject = payload[settings.subjectClaim]
  if (typeof subject !== 'string' || subject === '') {
    throw unauthenticated(`the token has no ${settings.subjectClaim} claim naming its subject`, 'invalid_token')
  }
  return { subject: `user:${subject}`, groups: groupsFrom(payload[settings.groupsClaim]), kind: 'jwt' }
}

/** Verifies tokens against the identity provider the policy names, fetching its keys once per policy version. */
export class JwtVerifier {
  readonly #options: JwksOptions
  readonly #logger: KeySourceLogger | undefined
  // Keyed by the policy's settings object: a reload brings new settings, and with them a fresh key set.
  #keySets = new WeakMap<JwtSettings, JWTVerifyGetKey>()

  constructor (options: JwksOptions = {}, logger?: KeySourceLogger) {
    this.#options = options
    this.#logger = logger
  }

  async verify (settings: JwtSettings, token: string): Promise<Identity> {
    let payload: JWTPayload
    let protectedHeader: JWTHeaderParameters
    try {
      ({ payload, protectedHeader } = await jwtVerify(token, this.#keySet(settings), {
        issuer: settings.issuer,
        audience: typeof settings.audience === 'string' ? settings.audience : [...settings.audience],
        algorithms: [...settings.algorithms],
        clockTolerance: settings.leewaySeconds,
        // A token without expiry could never be taken back; without iat its lifetime is unknown, so it is
        // refused (fail closed). maxTokenAge makes iat required and refuses an iat in the future, which would
        // otherwise stretch the usable lifetime past the exp - iat check.
        requiredClaims: ['exp'],
        maxTokenAge: settings.maxLifetimeSeconds
      }))
    } catch (error) {
      const rejection = rejectionOf(error)
      if (rejection !== undefined) throw unauthenticated(rejection, 'invalid_token')
      this.#logger?.warn({ jwksUri: settings.jwksUri.href, error: (error as Error).message }, 'cannot fetch the JWKS')
      throw new GatewayError('IDENTITY_PROVIDER_UNAVAILABLE',
        "the gateway cannot fetch the identity provider's signing keys to check the token; try again later", { cause: error })
    }
    if (!acceptsType(protectedHeader)) {
      throw unauthenticated('the token type (typ header) is not accepted; only JWT or at+jwt access tokens are', 'invalid_token')
    }
    checkLifetime(payload, settings)
    return identityFrom(payload, settings)
  }

  clear (): void {
    this.#keySets = new WeakMap()
  }

  #keySet (settings: JwtSettings): JWTVerifyGetKey {
    let keySet = this.#keySets.get(settings)
    if (keySet === undefined) {
      keySet = createRemoteJWKSet(settings.jwksUri, {
        timeoutDuration: this.#options.jwksTimeoutMs,
        cooldownDuration: this.#options.jwksCooldownMs,
        cacheMaxAge: this.#options.jwksCacheMaxAgeMs
      })
      this.#keySets.set(settings, keySet)
    }
    return keySet
  }
}
