import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import type { Config } from '../config/schema.js'
import { GatewayError } from '../errors.js'

/**
 * A budget per caller: per identity once known, per address before. Runs after identity (preHandler follows
 * onRequest), so a caller cannot get more by switching addresses.
 */
const rateLimitPlugin: FastifyPluginAsync<{ limits: Config['limits'] }> = async (app, { limits }) => {
  await app.register(rateLimit, {
    hook: 'preHandler',
    max: limits.requestsPerWindow,
    timeWindow: limits.windowMs,
    keyGenerator: request => request.identity === null ? `ip:${request.ip}` : request.identity.subject,
    allowList: request => request.routeOptions.config.public === true,
    errorResponseBuilder: (_request, context) => new GatewayError('RATE_LIMITED',
      `too many requests from this caller: at most ${context.max} per ${Math.round(limits.windowMs / 1000)} s; retry after ${Math.ceil(context.ttl / 1000)} s.`,
      { retryAfter: Math.ceil(context.ttl / 1000) })
  })
}

export default fp(rateLimitPlugin, { name: 'rate-limit', fastify: '5.x', dependencies: ['identity'] })
