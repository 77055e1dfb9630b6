import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { FailedAuthBudget } from '../identity/failed-auth-budget.js'
import { GatewayError, isGatewayError } from '../errors.js'
import type { Identity } from '../policy/types.js'

declare module 'fastify' {
  interface FastifyRequest {
    identity: Identity
  }
  interface FastifyContextConfig {
    /** Reachable without credentials (health, contract). */
    public?: boolean
    /**
     * Authenticated by a request signature the route's own plugin checks (chat), not by an API key or token: the
     * plugin must set request.identity before the handler, or refuse.
     */
    signed?: boolean
  }
}

export interface IdentityOptions {
  authenticate: (credentials: { authorization?: string, apiKey?: string }) => Promise<Identity>
  /** Failed authentications allowed per client address (request.ip, so Fastify's trustProxy applies) per window. */
  failedAuth: { perWindow: number, windowMs: number }
}

/**
 * Establishes the caller's identity once, at the root, so every route — /graphql included — sees the same
 * identity and none can be reached without one (fastify-plugin lifts the hook out of encapsulation).
 */
const identityPlugin: FastifyPluginAsync<IdentityOptions> = async (app, options) => {
  app.decorateRequest('identity', null as unknown as Identity)
  const { perWindow, windowMs } = options.failedAuth
  const failures = new FailedAuthBudget({ limit: perWindow, windowMs })
  app.addHook('onRequest', async (request) => {
    // Signed routes (chat) are not budgeted per address: Slack's and Mattermost's requests come from a few shared
    // addresses, so anyone's misconfigured app there would lock the real one out, while guessing an HMAC key or a
    // long token over the network is hopeless and each check costs one HMAC.
    if (request.routeOptions.config.public === true || request.routeOptions.config.signed === true) return
    // Checked before the credentials, so an address over its budget costs no hashing or token verification;
    // a valid caller sharing that address waits too, which is the price of not doing the work.
    const wait = failures.blockedFor(request.ip)
    if (wait !== undefined) {
      throw new GatewayError('RATE_LIMITED',
        `too many failed authentication attempts from this address: at most ${perWindow} per ${Math.round(windowMs / 1000)} s; retry after ${wait} s.`,
        { retryAfter: wait })
    }
    try {
      // Node joins a repeated custom header into one string, so x-api-key is never an array here.
      request.identity = await options.authenticate({
        authorization: request.headers.authorization,
        apiKey: request.headers['x-api-key'] as string | undefined
      })
    } catch (error) {
      if (isGatewayError(error) && error.code === 'UNAUTHENTICATED') failures.recordFailure(request.ip)
      throw error
    }
  })
}

export default fp(identityPlugin, { name: 'identity', fastify: '5.x' })
