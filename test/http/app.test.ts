import t from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { ADMIN_KEY, startGateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const gateway = await startGateway(t, { registries: { default: { url: registry.url }, down: { url: 'http://127.0.0.1:9' } } })

t.test('health needs no credentials; readiness names the registry that fails', async t => {
  t.same((await gateway.rest('GET', '/healthz', { key: null })).body, { status: 'ok' })
  const ready = await gateway.rest('GET', '/readyz', { key: null })
  t.equal(ready.status, 503)
  t.equal(ready.body.status, 'not ready')
  t.same(ready.body.checks[0], { name: 'registry:default', ok: true })
  t.same(ready.body.checks[1], { name: 'registry:down', ok: false, detail: 'the registry did not answer as expected; the gateway log has the details' })
  t.same(ready.body.checks[2], { name: 'audit', ok: true })
})

t.test('no or bad credentials: 401 with a Bearer challenge, as problem+json or GraphQL error', async t => {
  for (const key of [null, 'rdg_wrong-key']) {
    const rest = await gateway.rest('DELETE', '/images/app/v1', { key })
    t.equal(rest.status, 401)
    t.equal(rest.headers['content-type'], 'application/problem+json; charset=utf-8')
    t.match(rest.headers['www-authenticate'], /^Bearer realm="registry-delete-gateway"/)
    t.match(rest.body, { code: 'UNAUTHENTICATED', status: 401 })
    const graphql = await gateway.gql('{ me { subject } }', {}, { key })
    t.equal(graphql.status, 401)
    t.match(graphql.headers['www-authenticate'], /^Bearer/)
    t.same(graphql.body.data, null)
    t.match(graphql.body.errors[0].extensions, { code: 'UNAUTHENTICATED', status: 401 })
  }
  t.notMatch(JSON.stringify((await gateway.rest('GET', '/me', { key: 'rdg_secret-looking' })).body), /secret-looking/, 'the key is never echoed')
})

t.test('me: the same answer over REST and GraphQL', async t => {
  const rest = await gateway.rest('GET', '/me')
  t.same(rest.body, { subject: 'apikey:admin', groups: [], roles: ['admin'] })
  const graphql = await gateway.gql('{ me { subject groups roles } }')
  t.same(graphql.body.data.me, rest.body)
  const bearer = await gateway.rest('GET', '/me', { key: null, headers: { authorization: `Bearer ${ADMIN_KEY}` } })
  t.equal(bearer.body.subject, 'apikey:admin', 'an API key also works as a bearer token')
})

t.test('request ids: always the gateway\'s own, whatever X-Request-Id the caller sends', async t => {
  const kept = await gateway.rest('DELETE', '/images/NOPE/v1', { headers: { 'x-request-id': 'trace-123' } })
  t.match(kept.body.requestId, /^[0-9a-f-]{36}$/)
  t.equal(kept.headers['x-request-id'], kept.body.requestId)
  const replaced = await gateway.rest('DELETE', '/images/NOPE/v1', { headers: { 'x-request-id': 'bad id\twith spaces' } })
  t.match(replaced.body.requestId, /^[0-9a-f-]{36}$/)
})

t.test('unknown routes and bad bodies are problems, never 500s', async t => {
  const unknown = await gateway.rest('GET', '/nowhere')
  t.equal(unknown.status, 404)
  t.match(unknown.body, { code: 'NOT_FOUND', detail: /no route GET \/nowhere/ })
  const badJson = await gateway.app.inject({ method: 'POST', url: '/graphql', headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' }, payload: '{"query": ' })
  t.equal(badJson.statusCode, 400)
  t.match(badJson.json().errors[0].extensions, { code: 'INVALID_REQUEST' })
  const badQuery = await gateway.gql('mutation { deleteImage(name: 1) { digest } }')
  t.equal(badQuery.status, 400, 'GraphQL validation errors keep their 400')
  t.match(badQuery.body.errors[0].message, /String/)
})

t.test('the registry query parameter picks a configured registry', async t => {
  await pushImage({ url: registry.url }, 'picked/app', ['v1'], 'oci')
  const down = await gateway.rest('DELETE', '/images/picked/app/v1?registry=down')
  t.match(down.body, { code: 'UPSTREAM_UNAVAILABLE', status: 503 })
  const picked = await gateway.rest('DELETE', '/images/picked/app/v1?registry=default')
  t.match(picked.body, { registry: 'default', deleted: true })
})

t.test('an unexpected failure is a 500 INTERNAL_ERROR that reveals nothing, on both transports', async t => {
  const { buildApp } = await import('../../src/app.js')
  const { validateConfig } = await import('../../src/config/load.js')
  const { PolicyStore } = await import('../../src/policy/index.js')
  const broken = new PolicyStore()
  const logged: string[] = []
  const { pino } = await import('pino')
  const logger = pino({ level: 'error' }, { write: (line: string) => { logged.push(line) } })
  const app = await buildApp(validateConfig({ registries: { default: { url: registry.url } }, audit: { path: ':memory:' } }, 'test'), { policyStore: broken, logger })
  t.teardown(async () => { await app.close() })
  broken.current = () => { throw new Error('policy backend password=hunter2 exploded') }
  const rest = await app.inject({ method: 'GET', url: '/me', headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(rest.statusCode, 500)
  t.match(rest.json(), { code: 'INTERNAL_ERROR', detail: /request id/ })
  t.notMatch(rest.body, /hunter2/)
  const graphql = await app.inject({ method: 'POST', url: '/graphql', headers: { 'x-api-key': ADMIN_KEY }, payload: { query: '{ me { subject } }' } })
  t.equal(graphql.statusCode, 500)
  t.equal(graphql.json().errors[0].extensions.code, 'INTERNAL_ERROR')
  t.equal(logged.length, 2, 'each failure is logged for the operator')
  t.match(logged[0], /exploded/)
})

t.test('registries: a CA file is read at start-up; a missing one stops the start', async t => {
  const { buildRegistries } = await import('../../src/services.js')
  const { validateConfig } = await import('../../src/config/load.js')
  const { writeFileSync, mkdtempSync } = await import('node:fs')
  const { join } = await import('node:path')
  const { tmpdir } = await import('node:os')
  const caFile = join(mkdtempSync(join(tmpdir(), 'rdg-ca-')), 'ca.pem')
  writeFileSync(caFile, '-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n')
  const directory = buildRegistries(validateConfig({ defaultRegistry: 'secure', registries: { secure: { url: 'https://127.0.0.1:1', tls: { caFile } } } }, 'test'))
  t.same(directory.names, ['secure'])
  await directory.close()
  t.throws(() => buildRegistries(validateConfig({ defaultRegistry: 'secure', registries: { secure: { url: 'https://127.0.0.1:1', tls: { caFile: `${caFile}.missing` } } } }, 'test')), /ENOENT/)
})

t.test('a registry rate limit reaches the caller with Retry-After, on both transports', async t => {
  const { MockAgent } = await import('undici')
  const mock = new MockAgent()
  mock.disableNetConnect()
  t.teardown(async () => { await mock.close() })
  mock.get('http://127.0.0.1:5997').intercept({ path: '/v2/busy/manifests/v1', method: 'GET' })
    .reply(429, '', { headers: { 'retry-after': '7' } }).times(2)
  const limited = await startGateway(t, { registries: { default: { url: 'http://127.0.0.1:5997' } }, dispatcher: mock })
  const rest = await limited.rest('DELETE', '/images/busy/v1')
  t.equal(rest.status, 429)
  t.equal(rest.headers['retry-after'], '7')
  t.match(rest.body, { code: 'RATE_LIMITED', retryAfter: 7 })
  const graphql = await limited.gql('mutation { deleteImage(name: "busy", tag: "v1") { digest } }')
  t.match(graphql.body.errors[0].extensions, { code: 'RATE_LIMITED', retryAfter: 7, status: 429 })
})
