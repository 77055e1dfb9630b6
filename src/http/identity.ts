import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { Identity } from '../policy/types.js'

declare module 'fastify' {
  interface FastifyRequest {
    identity: Identity
  }
  interface FastifyContextConfig {
    /** Reachable without credentials (health, contract). */
    public?: boolean
  }
}

export interface IdentityOptions {
  authenticate: (credentials: { authorization?: string, apiKey?: string }) => Promise<Identity>
}

/**
 * Establishes the caller's identity once, at the root, so every route — /graphql included — sees the same
 * identity and none can be reached without one (fastify-plugin lifts the hook out of encapsulation).
 */
const identityPlugin: FastifyPluginAsync<IdentityOptions> = async (app, options) => {
  app.decorateRequest('identity', null as unknown as Identity)
  app.addHook('onRequest', async (request) => {
    if (request.routeOptions.config.public === true) return
    // Node joins a repeated custom header into one string, so x-api-key is never an array here.
    request.identity = await options.authenticate({
      authorization: request.headers.authorization,
      apiKey: request.headers['x-api-key'] as string | undefined
    })
  })
}

export default fp(identityPlugin, { name: 'identity', fastify: '5.x' })
