import { request, type Dispatcher } from 'undici'
import { GatewayError } from '../errors.js'
import { Lru } from '../lru.js'
import { readLimited } from './http-body.js'

export interface RegistryCredentials { username: string, password: string }

export interface TokenServiceOptions {
  registryName: string
  registryOrigin: string
  credentials?: RegistryCredentials
  /** Origins other than the registry's own whose token realms the gateway contacts (and sends its credentials to). */
  trustedRealmOrigins: readonly string[]
  dispatcher: Dispatcher
  timeoutMs: number
  now?: () => number
  /** Told of every cache lookup, for the hit/miss metric. */
  onLookup?: (hit: boolean) => void
  /** Most tokens kept; keys include the repository, so without a bound the cache grows with every repository touched. Default 10 000. */
  cacheSize?: number
}

interface CachedToken { token: string, renewAt: number }

/** Distribution's documented default when a token response has no expires_in. */
const DEFAULT_TOKEN_SECONDS = 60
export const DEFAULT_TOKEN_CACHE_SIZE = 10_000
const MAX_TOKEN_RESPONSE_BYTES = 64 * 1024

export function basicAuthorization (credentials: RegistryCredentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`
}

/** Renew before expiry so a token never runs out between HEAD and DELETE. */
function renewalDelayMs (expiresInSeconds: number): number {
  const margin = Math.max(5, expiresInSeconds * 0.1)
  return Math.max(1, expiresInSeconds - margin) * 1000
}

/**
 * Bearer tokens from a registry's token service, cached per realm, service, scope set and credential, and
 * fetched once even when many requests need the same token at the same moment.
 */
export class TokenService {
  private readonly cache: Lru<string, CachedToken>
  private readonly inFlight = new Map<string, Promise<string>>()
  private readonly now: () => number

  constructor (private readonly options: TokenServiceOptions) {
    this.now = options.now ?? Date.now
    this.cache = new Lru(options.cacheSize ?? DEFAULT_TOKEN_CACHE_SIZE)
  }

  /** Tokens held now (for tests and diagnostics). */
  get cachedTokens (): number {
    return this.cache.size
  }

  private key (realm: string, service: string | undefined, scopes: string[]): string {
    return JSON.stringify([realm, service, [...scopes].sort(), this.options.credentials?.username])
  }

  invalidate (realm: string, service: string | undefined, scopes: string[]): void {
    this.cache.delete(this.key(realm, service, scopes))
  }

  async token (realm: string, service: string | undefined, scopes: string[]): Promise<string> {
    const key = this.key(realm, service, scopes)
    const cached = this.cache.get(key)
    if (cached !== undefined) {
      if (cached.renewAt > this.now()) {
        this.options.onLookup?.(true)
        return cached.token
      }
      this.cache.delete(key)
    }
    const pending = this.inFlight.get(key)
    if (pending !== undefined) return await pending
    this.options.onLookup?.(false)
    const fetching = this.fetchToken(realm, service, scopes).then(({ token, expiresIn }) => {
      const now = this.now()
      // Expired tokens go before any live one is evicted for lack of room.
      this.cache.deleteWhere(entry => entry.renewAt <= now)
      this.cache.set(key, { token, renewAt: now + renewalDelayMs(expiresIn) })
      return token
    }).finally(() => this.inFlight.delete(key))
    this.inFlight.set(key, fetching)
    return await fetching
  }

  private realmUrl (realm: string): URL {
    try {
      const url = new URL(realm)
      if (url.protocol === 'http:' || url.protocol === 'https:') return url
    } catch {}
    throw this.failure(realm, 'its challenge named a token realm that is not an http(s) URL')
  }

  private failure (realm: string, why: string, cause?: unknown): GatewayError {
    return new GatewayError('UPSTREAM_AUTH_FAILED',
      `could not get a token for registry "${this.options.registryName}" from ${realm}: ${why}.`,
      { extras: { realm }, cause })
  }

  private isTrusted (url: URL): boolean {
    return url.origin === this.options.registryOrigin || this.options.trustedRealmOrigins.includes(url.origin)
  }

  private async fetchToken (realm: string, service: string | undefined, scopes: string[]): Promise<{ token: string, expiresIn: number }> {
    const url = this.realmUrl(realm)
    const realmName = url.origin + url.pathname
    // A registry names the realm, so contacting any realm it names would let a hostile registry make the gateway
    // fetch URLs of its choosing (blind SSRF), and hand its credentials to them.
    if (!this.isTrusted(url)) {
      throw this.failure(realmName,
        `the realm is on ${url.origin}, another origin than the registry's, and is not trusted, so the gateway did not contact it. ` +
        `If that token service is genuine, add "${url.origin}" to tokenRealmOrigins of registry "${this.options.registryName}" ` +
        '(for the default registry, REGISTRY_TOKEN_REALM_ORIGINS, comma-separated, also works)')
    }
    if (service !== undefined) url.searchParams.set('service', service)
    for (const scope of scopes) url.searchParams.append('scope', scope)
    const headers: Record<string, string> = { accept: 'application/json' }
    if (this.options.credentials !== undefined) headers.authorization = basicAuthorization(this.options.credentials)
    let response: Dispatcher.ResponseData
    try {
      response = await request(url, {
        method: 'GET',
        headers,
        dispatcher: this.options.dispatcher,
        headersTimeout: this.options.timeoutMs,
        bodyTimeout: this.options.timeoutMs
      })
    } catch (error) {
      throw this.failure(realmName, `the token service did not answer (${(error as { code?: string }).code ?? 'network error'})`, error)
    }
    const body = await readLimited(response.body, MAX_TOKEN_RESPONSE_BYTES).catch(() => undefined)
    if (response.statusCode !== 200) {
      throw this.failure(realmName, `the token service answered ${response.statusCode}`)
    }
    let parsed: { token?: unknown, access_token?: unknown, expires_in?: unknown }
    try {
      parsed = JSON.parse(body?.toString('utf8') ?? '')
    } catch {
      throw this.failure(realmName, 'the token service answered something that is not JSON')
    }
    const token = typeof parsed.token === 'string' && parsed.token !== '' ? parsed.token : parsed.access_token
    if (typeof token !== 'string' || token === '') throw this.failure(realmName, 'the token service answered without a token')
    const expiresIn = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : DEFAULT_TOKEN_SECONDS
    return { token, expiresIn }
  }
}
