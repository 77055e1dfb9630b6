import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import type { RegistryDirectory } from '../registry/directory.js'

const Check = Type.Object({ name: Type.String(), ok: Type.Boolean(), detail: Type.Optional(Type.String()) })

/** Liveness says the process answers; readiness says every configured registry answers its API root. */
export const healthRoutes = (registries: RegistryDirectory): FastifyPluginAsyncTypebox => async (app) => {
  app.get('/healthz', { config: { public: true }, schema: { response: { 200: Type.Object({ status: Type.Literal('ok') }) } } },
    async () => ({ status: 'ok' as const }))

  app.get('/readyz', {
    config: { public: true },
    schema: { response: { 200: Type.Object({ status: Type.String(), checks: Type.Array(Check) }), 503: Type.Object({ status: Type.String(), checks: Type.Array(Check) }) } }
  }, async (_request, reply) => {
    const checks = await Promise.all(registries.all().map(async (client) => {
      try {
        await client.ping()
        return { name: `registry:${client.name}`, ok: true }
      } catch (error) {
        // ping reports every failure as a catalogue error, whose message is its detail.
        return { name: `registry:${client.name}`, ok: false, detail: (error as Error).message }
      }
    }))
    const ready = checks.every(check => check.ok)
    return await reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks })
  })
}
