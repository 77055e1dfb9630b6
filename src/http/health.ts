import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { AuditStoreUnavailable } from '../audit/deferred-store.js'
import type { AuditStore } from '../audit/types.js'
import type { RegistryDirectory } from '../registry/directory.js'

const Check = Type.Object({ name: Type.String(), ok: Type.Boolean(), detail: Type.Optional(Type.String()) })
const Readiness = Type.Object({ status: Type.String(), checks: Type.Array(Check) })

interface ReadinessResult { ready: boolean, checks: Array<{ name: string, ok: boolean, detail?: string }> }

/** /readyz is public: without this, every anonymous call costs a registry request and a synced SQLite write. */
const READINESS_CACHE_MS = 1000

/** Liveness says the process answers; readiness says every configured registry answers and the audit trail is writable. */
export const healthRoutes = (registries: RegistryDirectory, auditStore: AuditStore, now: () => number = Date.now): FastifyPluginAsyncTypebox => async (app) => {
  app.get('/healthz', { config: { public: true }, schema: { response: { 200: Type.Object({ status: Type.Literal('ok') }) } } },
    async () => ({ status: 'ok' as const }))

  const probes: Array<[string, string, () => Promise<void>]> = [
    ...registries.all().map((client): [string, string, () => Promise<void>] =>
      [`registry:${client.name}`, 'the registry did not answer as expected', async () => { await client.ping() }]),
    ['audit', 'the audit trail is not writable', async () => { await auditStore.check() }]
  ]
  const check = async (): Promise<ReadinessResult> => {
    const checks = await Promise.all(probes.map(async ([name, failure, probe]) => {
      try {
        await probe()
        return { name, ok: true }
      } catch (error) {
        // The public answer says which check failed; how (addresses, paths, upstream messages) stays in the log.
        app.log.warn({ check: name, err: error }, 'readiness check failed')
        // A store that could not open says why in words made for this (AuditStoreUnavailable.publicDetail).
        const why = error instanceof AuditStoreUnavailable ? `: ${error.publicDetail}` : ''
        return { name, ok: false, detail: `${failure}${why}; the gateway log has the details` }
      }
    }))
    return { ready: checks.every(entry => entry.ok), checks }
  }
  let last: { at: number, result: ReadinessResult } | undefined
  let inFlight: Promise<ReadinessResult> | undefined
  // Callers within a second of the last check get its answer, and concurrent callers share one check.
  const readiness = async (): Promise<ReadinessResult> => {
    if (last !== undefined && now() - last.at < READINESS_CACHE_MS) return last.result
    inFlight ??= check().then(result => {
      last = { at: now(), result }
      return result
    }).finally(() => { inFlight = undefined })
    return await inFlight
  }

  app.get('/readyz', {
    config: { public: true },
    schema: { response: { 200: Readiness, 503: Readiness } }
  }, async (_request, reply) => {
    const { ready, checks } = await readiness()
    return await reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks })
  })
}
