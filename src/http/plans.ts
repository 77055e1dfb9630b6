import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { approvePlan, executeApprovedPlan } from '../images/approvals.js'
import type { ImageServices } from '../images/delete-image.js'
import { DeleteImageResultSchema, PlanApprovalSchema } from '../images/shapes.js'
import { clientRequestId } from './client-request-id.js'

const PlanParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) })

/** `POST /plans/<id>/approve` by a second person, then `POST /plans/<id>/execute` by the requester. */
export const planRoutes = (deps: ImageServices): FastifyPluginAsyncTypebox => async (app) => {
  app.post('/plans/:id/approve', { schema: { params: PlanParams, response: { 200: PlanApprovalSchema } } }, async (request) => await approvePlan(deps, {
    identity: request.identity,
    context: { requestId: request.id, ...clientRequestId(request), transport: 'rest' },
    planId: request.params.id
  }))
  app.post('/plans/:id/execute', { schema: { params: PlanParams, response: { 200: DeleteImageResultSchema } } }, async (request) =>
    await executeApprovedPlan(deps, {
      identity: request.identity,
      context: { requestId: request.id, ...clientRequestId(request), transport: 'rest' },
      planId: request.params.id,
      signal: request.signal
    }))
}
