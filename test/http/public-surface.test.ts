import { createServer, type Server } from 'node:http'
import Fastify from 'fastify'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { GatewayError } from '../../src/errors.js'
import identityPlugin from '../../src/http/identity.js'
import { problemErrorHandler } from '../../src/http/problem.js'
import { ADMIN_KEY, startGateway } from '../fixtures/gateway.js'

// What an anonymous caller can make the gateway do: failed logins, readiness checks and metrics.

/** A registry stand-in that answers /v2/ and counts the requests that reach it. */
async function countingRegistry (t: Test): Promise<{ url: string, pings: () => number }> {
  let pings = 0
  const server: Server = createServer((_request, response) => {
    pings++
    response.setHeader('docker-distribution-api-version', 'registry/2.0')
    response.end('{}')
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, pings: () => pings }
}

t.test('failed authentications are budgeted per client address, before credentials are checked', async t => {
  let checked = 0
  const app = Fastify()
  app.setErrorHandler(problemErrorHandler)
  await app.register(identityPlugin, {
    failedAuth: { perWindow: 3, windowMs: 1000 },
    authenticate: async credentials => {
      checked++
      if (credentials.apiKey === 'good') return { subject: 'apikey:good', groups: [], kind: 'apikey' }
      if (credentials.apiKey === 'idp-down') throw new GatewayError('IDENTITY_PROVIDER_UNAVAILABLE', 'down')
      throw new GatewayError('UNAUTHENTICATED', 'unknown API key')
    }
  })
  app.get('/me', async request => request.identity)
  app.get('/open', { config: { public: true } }, async () => 'open')
  t.teardown(async () => { await app.close() })
  const call = async (key: string, remoteAddress = '192.0.2.1'): Promise<{ statusCode: number, headers: Record<string, unknown>, code?: string }> => {
    const response = await app.inject({ method: 'GET', url: '/me', headers: { 'x-api-key': key }, remoteAddress })
    return { statusCode: response.statusCode, headers: response.headers, code: response.json().code }
  }
  t.equal((await call('idp-down')).statusCode, 503, 'an unavailable identity provider is not the caller\'s failure')
  for (let attempt = 1; attempt <= 3; attempt++) t.equal((await call('guess')).statusCode, 401, `failure ${attempt}`)
  t.equal(checked, 4)
  const blocked = await call('guess')
  t.match(blocked, { statusCode: 429, code: 'RATE_LIMITED' })
  t.ok(Number(blocked.headers['retry-after']) >= 1, 'Retry-After says when')
  t.equal((await call('good')).statusCode, 429, 'even a valid key from that address waits: its credentials are not checked')
  t.equal(checked, 4, 'no credential was checked while over budget')
  t.equal((await app.inject({ method: 'GET', url: '/open', remoteAddress: '192.0.2.1' })).statusCode, 200, 'public routes stay open')
  t.equal((await call('good', '192.0.2.2')).statusCode, 200, 'other addresses are not affected')
  t.equal((await call('guess', '192.0.2.2')).statusCode, 401)
  await new Promise(resolve => setTimeout(resolve, 1100))
  t.equal((await call('good')).statusCode, 200, 'a new window')
})

t.test('the gateway wires the budget (limits.failedAuthPerWindow) into REST and GraphQL', async t => {
  const registry = await countingRegistry(t)
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, config: { limits: { failedAuthPerWindow: 2 } } })
  t.equal((await gateway.rest('GET', '/me', { key: 'rdg_wrong' })).status, 401)
  t.equal((await gateway.gql('{ me { subject } }', {}, { key: null })).status, 401)
  const rest = await gateway.rest('GET', '/me', { key: 'rdg_wrong' })
  t.match(rest, { status: 429, body: { code: 'RATE_LIMITED', detail: /at most 2 per 60 s/ } })
  t.equal((await gateway.gql('{ me { subject } }', {}, { key: 'rdg_wrong' })).status, 429)
})

t.test('/readyz: one check per second at most, shared by concurrent callers; failures say little', async t => {
  const registry = await countingRegistry(t)
  const logged: string[] = []
  const logger = pino({ level: 'warn' }, { write: (line: string) => { logged.push(line) } })
  let clock = 1_000_000
  const gateway = await startGateway(t, { registries: { default: { url: registry.url }, down: { url: 'http://127.0.0.1:9' } }, logger, readinessNow: () => clock })
  const answers = await Promise.all(Array.from({ length: 50 }, async () => await gateway.rest('GET', '/readyz', { key: null })))
  t.equal(registry.pings(), 1, '50 concurrent calls, one registry request')
  t.ok(answers.every(answer => answer.status === 503))
  clock += 999
  for (let i = 0; i < 20; i++) await gateway.rest('GET', '/readyz', { key: null })
  t.equal(registry.pings(), 1, 'calls within the second get the cached answer')
  const down = answers[0]?.body.checks.find((check: { name: string }) => check.name === 'registry:down')
  t.same(down, { name: 'registry:down', ok: false, detail: 'the registry did not answer as expected; the gateway log has the details' })
  t.notMatch(JSON.stringify(answers[0]?.body), /127\.0\.0\.1|ECONNREFUSED/, 'no addresses or upstream errors in the public answer')
  t.match(logged.join(''), /"check":"registry:down".*ECONNREFUSED/, 'the details are in the log')
  clock += 1
  await gateway.rest('GET', '/readyz', { key: null })
  t.equal(registry.pings(), 2, 'checked again once the second is over')
})

t.test('/metrics on the API port needs credentials unless metrics.public', async t => {
  const registry = await countingRegistry(t)
  const closed = await startGateway(t, { registries: { default: { url: registry.url } } })
  t.equal((await closed.app.inject({ method: 'GET', url: '/metrics' })).statusCode, 401)
  const authorized = await closed.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${ADMIN_KEY}` } })
  t.equal(authorized.statusCode, 200, 'a scraper can send an API key as a bearer token')
  t.match(authorized.body, /gateway_http_request_duration_seconds/)
  const open = await startGateway(t, { registries: { default: { url: registry.url } }, config: { metrics: { public: true } } })
  t.equal((await open.app.inject({ method: 'GET', url: '/metrics' })).statusCode, 200, 'metrics.public: true')
})

t.test('behind a trusted load balancer (trustProxy) each client has its own failed-authentication budget; others cannot pick theirs', async t => {
  const registry = await countingRegistry(t)
  const config = { limits: { failedAuthPerWindow: 2 } }
  const behind = await startGateway(t, { registries: { default: { url: registry.url } }, config: { ...config, trustProxy: ['127.0.0.1/32'] } })
  const from = (address: string, key: string): ReturnType<typeof behind.rest> => behind.rest('GET', '/me', { key, headers: { 'x-forwarded-for': address } })
  t.equal((await from('10.0.0.1', 'rdg_wrong')).status, 401)
  t.equal((await from('10.0.0.1', 'rdg_wrong')).status, 401)
  t.equal((await from('10.0.0.1', ADMIN_KEY)).status, 429, 'the guessing client is out of budget')
  t.equal((await from('10.0.0.2', ADMIN_KEY)).status, 200, 'another client behind the same balancer is not')

  const direct = await startGateway(t, { registries: { default: { url: registry.url } }, config })
  const claim = (address: string, key: string): ReturnType<typeof direct.rest> => direct.rest('GET', '/me', { key, headers: { 'x-forwarded-for': address } })
  t.equal((await claim('10.0.0.1', 'rdg_wrong')).status, 401)
  t.equal((await claim('10.0.0.2', 'rdg_wrong')).status, 401)
  t.equal((await claim('10.0.0.3', ADMIN_KEY)).status, 429, 'without trustProxy a made-up X-Forwarded-For buys no fresh budget')
})
