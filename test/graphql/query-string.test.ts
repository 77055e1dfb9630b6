import t from 'tap'
import { closedPort } from '../fixtures/use-case.js'
import { ADMIN_KEY, startGateway } from '../fixtures/gateway.js'

// The fuzz test reaches this only with some seeds; coverage must not depend on the seed.
t.test('a GET whose query does not parse is left to GraphQL\'s own syntax error, not a 500', async t => {
  const gateway = await startGateway(t, { registries: { default: { url: `http://127.0.0.1:${await closedPort()}` } } })
  const response = await gateway.app.inject({ method: 'GET', url: `/graphql?query=${encodeURIComponent('{ me { subject ')}`, headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(response.statusCode, 400)
  t.match(response.json().errors[0].message, /Syntax Error/)
})

t.test('a GET without a query is left to GraphQL too', async t => {
  const gateway = await startGateway(t, { registries: { default: { url: `http://127.0.0.1:${await closedPort()}` } } })
  const response = await gateway.app.inject({ method: 'GET', url: '/graphql', headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(response.statusCode, 400)
})

// The query-string checks run before mercurius; without a query there is nothing to inspect and mercurius answers.
t.test('a GET with variables but no query is left to mercurius, which refuses it', async t => {
  const gateway = await startGateway(t, { registries: { default: { url: `http://127.0.0.1:${await closedPort()}` } } })
  const response = await gateway.app.inject({ method: 'GET', url: `/graphql?variables=${encodeURIComponent('{}')}`, headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(response.statusCode, 400)
  t.match(JSON.parse(response.body).errors[0], { message: 'Unknown query', extensions: { code: 'INVALID_REQUEST' } })
})
