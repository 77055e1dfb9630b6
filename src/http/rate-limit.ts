import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import rateLimit, { type FastifyRateLimitStore, type FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { RateWindow } from '../audit/shared-state.js'
import type { Config } from '../config/schema.js'
import { GatewayError } from '../errors.js'
import { Lru } from '../lru.js'

export interface RateLimitOptions {
  limits: Config['limits']
  /**
   * Counts a request in a window every replica shares (PostgreSQL: one UPSERT per request). Absent (SQLite, one
   * replica), the windows live in this process.
   */
  sharedWindows?: (key: string, windowMs: number) => Promise<RateWindow>
}

/**
 * A store for @fastify/rate-limit over the shared windows. While the database cannot answer, each replica counts
 * in memory instead: a caller gets at most one budget per replica during the outage (and every request that must
 * audit is refused with 503 anyway), rather than no limit at all or a 500 for every request.
 */
export function sharedWindowStore (sharedWindows: NonNullable<RateLimitOptions['sharedWindows']>, fallbackCapacity: number): FastifyRateLimitStoreCtor {
  const local = new Lru<string, { count: number, ends: number }>(fallbackCapacity)
  const countLocally = (key: string, windowMs: number): RateWindow => {
    const now = Date.now()
    const window = local.get(key)
    const current = window === undefined || window.ends <= now ? { count: 1, ends: now + windowMs } : { count: window.count + 1, ends: window.ends }
    local.set(key, current)
    return { count: current.count, ttlMs: current.ends - now }
  }
  return class SharedWindowStore implements FastifyRateLimitStore {
    incr (key: string, callback: (error: Error | null, result?: { current: number, ttl: number }) => void, timeWindow: number): void {
      sharedWindows(key, timeWindow)
        .catch(() => countLocally(key, timeWindow))
        .then(window => { callback(null, { current: window.count, ttl: window.ttlMs }) }, callback)
    }

    // Every route shares the one budget, and the window length comes with each call.
    child (): FastifyRateLimitStore {
      return this
    }
  }
}

/**
 * A budget per caller: per identity once known, per address before. Runs after identity (preHandler follows
 * onRequest), so a caller cannot get more by switching addresses, nor (with PostgreSQL) by switching replicas.
 */
const rateLimitPlugin: FastifyPluginAsync<RateLimitOptions> = async (app, { limits, sharedWindows }) => {
  await app.register(rateLimit, {
    hook: 'preHandler',
    max: limits.requestsPerWindow,
    timeWindow: limits.windowMs,
    ...(sharedWindows === undefined ? {} : { store: sharedWindowStore(sharedWindows, 5000) }),
    keyGenerator: request => request.identity === null ? `ip:${request.ip}` : request.identity.subject,
    allowList: request => request.routeOptions.config.public === true,
    errorResponseBuilder: (_request, context) => new GatewayError('RATE_LIMITED',
      `too many requests from this caller: at most ${context.max} per ${Math.round(limits.windowMs / 1000)} s; retry after ${Math.ceil(context.ttl / 1000)} s.`,
      { retryAfter: Math.ceil(context.ttl / 1000) })
  })
}

export default fp(rateLimitPlugin, { name: 'rate-limit', fastify: '5.x', dependencies: ['identity'] })
