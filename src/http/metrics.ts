import type { FastifyPluginAsync } from 'fastify'
import type { GatewayMetrics } from '../metrics.js'

/** Prometheus text; public like health, since scrapers carry no gateway credentials and it holds no secrets. */
export const metricsRoutes = (metrics: GatewayMetrics): FastifyPluginAsync => async (app) => {
  app.get('/metrics', { config: { public: true } }, async (_request, reply) =>
    await reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()))
}
