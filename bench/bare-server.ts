/**
 * The baseline for rejected requests: a bare Fastify app with one route that answers every DELETE /images/*
 * with a 400 problem JSON, no authentication, no hooks, no logging. Run as `node bare-server.js PORT`.
 */
import Fastify from 'fastify'

const port = Number(process.argv[2])
const app = Fastify({ logger: false })
app.delete('/images/*', async (request, reply) => {
  return await reply.code(400).type('application/problem+json').send({
    type: 'https://github.com/registry-delete-gateway/errors#invalid-reference',
    title: 'Invalid image reference',
    status: 400,
    detail: 'name "Bad_Name" is invalid',
    code: 'INVALID_REFERENCE',
    requestId: request.id
  })
})
app.get('/healthz', async () => ({ status: 'ok' }))
await app.listen({ host: '127.0.0.1', port })
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => { void app.close().then(() => process.exit(0)) })
}
