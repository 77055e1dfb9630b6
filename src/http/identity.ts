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

function firstHeader (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

/**
 * Establishes the caller's identity once, at the root, so every route — /graphql included — sees the same
 * identity and none can be reached without one (fastify-plugin lifts the hook out of encapsulation).
 */
const identityPlugin: FastifyPluginAsync<IdentityOptions> = async (app, options) => {
  app.decorateRequest('identity', null as unknown as Identity)
  app.addHook('onRequest', async (request) => {
    if (request.routeOptions.config.public === true) return
    request.identity = await options.authenticate({
      authorization: firstHeader(request.headers.authorization),
      apiKey: firstHeader(request.headers['x-api-key'])
    })
  })
}

export default fp(identityPlugin, { name: 'identity', fastify: '5.x' })
