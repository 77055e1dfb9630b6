import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { MeSchema, type WhoAmI } from '../identity/who-am-i.js'

export const meRoutes = (whoAmI: WhoAmI): FastifyPluginAsyncTypebox => async (app) => {
  app.get('/me', { schema: { response: { 200: MeSchema } } }, async (request) => whoAmI(request.identity))
}
