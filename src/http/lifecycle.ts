import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { GatewayMetrics } from '../metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Every route the app serves, so the contract test can hold openapi.yaml to it. */
    registeredRoutes: ReadonlyArray<{ method: string, url: string }>
  }
}

/**
 * What every request gets whatever its transport: the request id echoed back, its metrics, and, once shutdown
 * has begun, `Connection: close` — keep-alive connections of requests in flight would otherwise hold the server
 * open after they finish.
 */
const lifecyclePlugin: FastifyPluginAsync<{ metrics: GatewayMetrics }> = async (app, { metrics }) => {
  const registeredRoutes: Array<{ method: string, url: string }> = []
  app.decorate('registeredRoutes', registeredRoutes)
  app.addHook('onRoute', (route) => {
    // The docs page and its assets are as public as the contract they show.
    if (route.url.startsWith('/docs')) route.config = { ...route.config, public: true }
    for (const method of [route.method].flat()) registeredRoutes.push({ method, url: route.url })
  })
  // Callback-style hooks: on the hot path of every request, an async hook's promise costs more than its work.
  app.addHook('onResponse', (request, reply, done) => {
    metrics.httpRequest(request.routeOptions.url ?? 'unmatched', request.method, reply.statusCode, reply.elapsedTime / 1000)
    done()
  })
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.addHook('onSend', (request, reply, payload, done) => {
    void reply.header('x-request-id', request.id)
    if (closing) void reply.header('connection', 'close')
    done(null, payload)
  })
}

export default fp(lifecyclePlugin, { name: 'lifecycle', fastify: '5.x' })
