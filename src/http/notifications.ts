import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { listDeliveries, type ListDeliveriesDeps } from '../notifications/deliveries.js'
import { DeliverySchema, DeliveryStatusSchema } from '../notifications/shapes.js'

export const DeliveriesQuery = Type.Object({
  status: Type.Optional(DeliveryStatusSchema),
  limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512 }))
}, { additionalProperties: false })

/** Where each webhook delivery stands: pending (with its next attempt), delivered, or failed. */
export const notificationRoutes = (deps: ListDeliveriesDeps): FastifyPluginAsyncTypebox => async (app) => {
  app.get('/notifications/deliveries', {
    schema: { querystring: DeliveriesQuery, response: { 200: Type.Object({ items: Type.Array(DeliverySchema), nextCursor: Type.Optional(Type.String()) }) } }
  }, async (request) => {
    const { status, limit, cursor } = request.query
    return await listDeliveries(deps, {
      identity: request.identity, limit, ...(status === undefined ? {} : { status }), ...(cursor === undefined ? {} : { cursor })
    })
  })
}
