import { readFileSync } from 'node:fs'
import type { FastifyPluginAsync } from 'fastify'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { parse } from 'yaml'

const SPEC_URL = new URL('../../openapi.yaml', import.meta.url)

/** The REST contract as written (openapi.yaml is the source of truth), plus a browsable page at /docs. */
export const contractRoutes: FastifyPluginAsync = async (app) => {
  const yamlText = readFileSync(SPEC_URL, 'utf8')
  const document = parse(yamlText) as Record<string, unknown>
  app.get('/openapi.json', { config: { public: true } }, async () => document)
  app.get('/openapi.yaml', { config: { public: true } }, async (_request, reply) => await reply.type('application/yaml').send(yamlText))
  await app.register(swagger, { mode: 'static', specification: { document: document as never } })
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true })
}
