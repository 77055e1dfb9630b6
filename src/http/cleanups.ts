import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import Type from 'typebox'
import { createCleanup, getCleanup, plannedBody, planRetentionPolicy, type CleanupDeps } from '../cleanups/cleanups.js'
import { CleanupPlanSchema, type CleanupPlan } from '../cleanups/shapes.js'
import { clientRequestId } from './client-request-id.js'

const CleanupParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) })
/**
 * A new plan is answered with the JSON it was just kept as, not serialized again: at 10,000 entries that second
 * pass costs as much as the storing. It holds only the fields CleanupPlanSchema documents.
 */
async function created (reply: FastifyReply, plan: CleanupPlan): Promise<FastifyReply> {
  return await reply.code(201).header('location', `/cleanups/${plan.id}`).type('application/json; charset=utf-8').send(plannedBody(plan))
}

const RetentionParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }) })

/**
 * `POST /cleanups` plans a cleanup (201, nothing changed), `GET /cleanups/<id>` shows it again, `POST
 * /retention/<name>/plan` plans a configured policy. The body is checked by the use case, not here, so every edge
 * refuses bad rules with the same field and rule.
 */
export const cleanupRoutes = (deps: CleanupDeps): FastifyPluginAsyncTypebox => async (app) => {
  app.post('/cleanups', { schema: { response: { 201: CleanupPlanSchema } } }, async (request, reply) => {
    const plan = await createCleanup(deps, {
      identity: request.identity,
      context: { requestId: request.id, ...clientRequestId(request), transport: 'rest' },
      body: request.body,
      signal: request.signal
    })
    return await created(reply, plan)
  })
  app.get('/cleanups/:id', { schema: { params: CleanupParams, response: { 200: CleanupPlanSchema } } }, async (request) =>
    await getCleanup(deps, { identity: request.identity, id: request.params.id }))
  app.post('/retention/:name/plan', { schema: { params: RetentionParams, response: { 201: CleanupPlanSchema } } }, async (request, reply) => {
    const plan = await planRetentionPolicy(deps, {
      identity: request.identity,
      context: { requestId: request.id, ...clientRequestId(request), transport: 'rest' },
      name: request.params.name,
      signal: request.signal
    })
    return await created(reply, plan)
  })
}
