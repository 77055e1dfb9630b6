import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import type { AuditStore } from '../audit/types.js'
import type { RegistryDirectory } from '../registry/directory.js'

const Check = Type.Object({ name: Type.String(), ok: Type.Boolean(), detail: Type.Optional(Type.String()) })

/** Liveness says the process answers; readiness says every configured registry answers and the audit trail is writable. */
export const healthRoutes = (registries: RegistryDirectory, auditStore: AuditStore): FastifyPluginAsyncTypebox => async (app) => {
  app.get('/healthz', { config: { public: true }, schema: { response: { 200: Type.Object({ status: Type.Literal('ok') }) } } },
    async () => ({ status: 'ok' as const }))

  app.get('/readyz', {
    config: { public: true },
    schema: { response: { 200: Type.Object({ status: Type.String(), checks: Type.Array(Check) }), 503: Type.Object({ status: Type.String(), checks: Type.Array(Check) }) } }
  }, async (_request, reply) => {
    const probes: Array<[string, () => Promise<void>]> = [
      ...registries.all().map((client): [string, () => Promise<void>] => [`registry:${client.name}`, async () => { await client.ping() }]),
      ['audit', async () => { await auditStore.check() }]
    ]
    const checks = await Promise.all(probes.map(async ([name, probe]) => {
      try {
        await probe()
        return { name, ok: true }
      } catch (error) {
        return { name, ok: false, detail: (error as Error).message }
      }
    }))
    const ready = checks.every(check => check.ok)
    return await reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks })
  })
}
