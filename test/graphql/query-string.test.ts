import t from 'tap'
import { ADMIN_KEY, startGateway } from '../fixtures/gateway.js'

// The query-string checks run before mercurius; without a query there is nothing to inspect and mercurius answers.
t.test('a GET with variables but no query is left to mercurius, which refuses it', async t => {
  const gateway = await startGateway(t, { registries: { default: { url: 'http://127.0.0.1:9' } } })
  const response = await gateway.app.inject({ method: 'GET', url: `/graphql?variables=${encodeURIComponent('{}')}`, headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(response.statusCode, 400)
  t.match(JSON.parse(response.body).errors[0], { message: 'Unknown query', extensions: { code: 'INVALID_REQUEST' } })
})
