import type { FastifyPluginAsync } from 'fastify'
import type { GatewayMetrics } from '../metrics.js'

/**
 * Prometheus text. On its own listener (metrics.port) it is public, since that port is meant for the operator's
 * network and scrapers; on the API port it needs credentials unless metrics.public says otherwise, because route
 * names, registry names and traffic shape tell an outsider more than they should.
 */
export const metricsRoutes = (metrics: GatewayMetrics, options: { public: boolean } = { public: true }): FastifyPluginAsync => async (app) => {
  app.get('/metrics', { config: { public: options.public } }, async (_request, reply) =>
    await reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()))
}
