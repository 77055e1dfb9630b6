import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import type { WhoAmI } from '../identity/who-am-i.js'

export const MeResponse = Type.Object({
  subject: Type.String(),
  groups: Type.Array(Type.String()),
  roles: Type.Array(Type.String())
})

export const meRoutes = (whoAmI: WhoAmI): FastifyPluginAsyncTypebox => async (app) => {
  app.get('/me', { schema: { response: { 200: MeResponse } } }, async (request) => whoAmI(request.identity))
}
