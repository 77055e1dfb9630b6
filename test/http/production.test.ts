import { readFileSync } from 'node:fs'
import { Writable } from 'node:stream'
import t from 'tap'
import { parse } from 'yaml'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { createLogger } from '../../src/logging.js'
import { ADMIN_KEY, ADMIN_POLICY, sha256Hex, startGateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })

const OTHER_KEY = 'rdg_second-key-for-rate-limits-000000000002'
const TWO_KEYS = `${ADMIN_POLICY}  - role: admin\n    subjects: ["apikey:other"]\n`.replace('roles:', `  - name: other\n    sha256: ${sha256Hex(OTHER_KEY)}\nroles:`)

t.test('rate limits are per caller identity, with Retry-After; health is exempt', async t => {
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, policy: TWO_KEYS, config: { limits: { requestsPerWindow: 3, windowMs: 60_000 } } })
  for (let i = 0; i < 3; i++) t.equal((await gateway.rest('GET', '/me')).status, 200)
  const limited = await gateway.rest('GET', '/me')
  t.equal(limited.status, 429)
  t.match(limited.body, { code: 'RATE_LIMITED', retryAfter: Number })
  t.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After header')
  const graphql = await gateway.gql('{ me { subject } }')
  t.equal(graphql.status, 429)
  t.equal(graphql.body.errors[0].extensions.code, 'RATE_LIMITED', 'GraphQL shares the same budget')
  t.equal((await gateway.rest('GET', '/me', { key: OTHER_KEY })).status, 200, 'another caller is not affected')
  for (let i = 0; i < 5; i++) t.equal((await gateway.rest('GET', '/healthz', { key: null })).status, 200)
})

t.test('GraphQL limits: depth, width, batches, introspection switch', async t => {
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, config: { graphql: { maxDepth: 3, maxFields: 5, introspection: false } } })
  const deep = await gateway.gql('{ auditEvents { edges { node { decision { allow } } } } }')
  t.equal(deep.status, 400)
  t.match(deep.body.errors[0], { message: /exceeds the query depth limit of 3/, extensions: { code: 'INVALID_REQUEST' } })
  const wide = await gateway.gql(`{ ${Array.from({ length: 6 }, (_, i) => `m${i}: me { subject }`).join(' ')} }`)
  t.equal(wide.status, 400)
  t.match(wide.body.errors[0], { message: /more than 5 fields/, extensions: { code: 'INVALID_REQUEST' } })
  const introspection = await gateway.gql('{ __type(name: "Me") { name } }')
  t.equal(introspection.status, 400)
  t.match(introspection.body.errors[0].message, /introspection/i)
  const batch = await gateway.app.inject({ method: 'POST', url: '/graphql', headers: { 'x-api-key': ADMIN_KEY }, payload: [{ query: '{ me { subject } }' }, { query: '{ me { subject } }' }] })
  t.equal(batch.statusCode, 400, 'batched operations are refused')
  const notJson = await gateway.app.inject({ method: 'GET', url: `/graphql?query=${encodeURIComponent('{ me { subject } }')}&variables=not-json`, headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(notJson.statusCode, 400, 'variables that are not JSON are a client error')
  const fine = await gateway.gql('{ me { subject groups } }')
  t.equal(fine.body.data.me.subject, 'apikey:admin')
})

t.test('bodies over the limit: 413 REQUEST_TOO_LARGE', async t => {
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, config: { limits: { bodyBytes: 2048 } } })
  const response = await gateway.app.inject({ method: 'POST', url: '/graphql', headers: { 'x-api-key': ADMIN_KEY }, payload: { query: `{ me { subject } } #${'x'.repeat(4096)}` } })
  t.equal(response.statusCode, 413)
  t.equal(response.json().errors[0].extensions.code, 'REQUEST_TOO_LARGE')
})

t.test('metrics: requests, deletions by outcome, registry calls, token cache, policy reloads', async t => {
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } } })
  await pushImage({ url: registry.url }, 'metrics/app', ['v1'], 'schema2')
  t.equal((await gateway.rest('DELETE', '/images/metrics/app/v1')).status, 200)
  t.equal((await gateway.rest('DELETE', '/images/metrics/app/v1')).status, 404)
  const response = await gateway.app.inject({ method: 'GET', url: '/metrics', headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(response.statusCode, 200)
  t.match(response.headers['content-type'], /^text\/plain/)
  const text = response.body
  t.match(text, /gateway_deletions_total\{registry="default",outcome="deleted"\} 1/)
  t.match(text, /gateway_deletions_total\{registry="default",outcome="not-found"\} 1/)
  t.match(text, /gateway_http_request_duration_seconds_count\{route="\/images\/\*",method="DELETE",status="200"\} 1/)
  t.match(text, /gateway_registry_request_duration_seconds_count\{registry="default",operation="delete",status="202"\} 1/)
  t.match(text, /gateway_registry_request_duration_seconds_count\{registry="default",operation="get manifest",status="404"\} 1/)
  t.match(text, /process_resident_memory_bytes/)
})

t.test('the contract is served as JSON and YAML, and /docs shows it, without credentials', async t => {
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } } })
  const yamlText = readFileSync(new URL('../../openapi.yaml', import.meta.url), 'utf8')
  const json = await gateway.rest('GET', '/openapi.json', { key: null })
  t.same(json.body, parse(yamlText))
  const yaml = await gateway.app.inject({ method: 'GET', url: '/openapi.yaml' })
  t.equal(yaml.body, yamlText)
  t.match(yaml.headers['content-type'], /application\/yaml/)
  const docs = await gateway.app.inject({ method: 'GET', url: '/docs' })
  t.equal(docs.statusCode, 200)
  t.match(docs.body, /swagger-ui/i)
  const asset = await gateway.app.inject({ method: 'GET', url: '/docs/static/swagger-ui-bundle.js' })
  t.equal(asset.statusCode, 200, 'its assets are served locally, no CDN')
})

t.test('logs: one JSON line per request with its id, and no secret of any kind', async t => {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _encoding, done) { lines.push(chunk.toString()); done() } })
  const password = 'registry-password-never-logged'
  const basic = await startRegistry({ htpasswd: { username: 'gateway', password } })
  t.teardown(async () => { await basic.stop() })
  const gateway = await startGateway(t, { registries: { default: { url: basic.url, username: 'gateway', password } }, logger: createLogger('info', sink) })
  const first = await gateway.rest('GET', '/me', { headers: { 'x-request-id': 'log-test-1', cookie: 'session=cookie-secret-value' } })
  await gateway.rest('GET', '/me', { key: null, headers: { authorization: `Bearer ${ADMIN_KEY}` } })
  await gateway.rest('GET', '/me', { key: 'rdg_wrong-key-also-secret' })
  await gateway.rest('DELETE', '/images/app/v1?dryRun=true')
  await gateway.gql('{ me { subject } }')
  const all = lines.join('')
  t.ok(lines.length > 5)
  for (const line of lines) t.doesNotThrow(() => JSON.parse(line), 'every line is JSON')
  t.ok(all.includes(`"reqId":"${String(first.headers['x-request-id'])}"`), 'the request id is on the request\'s lines')
  t.equal(lines.filter(line => line.includes('"msg":"request completed"')).length, 5, 'one completion line per request')
  for (const secret of [ADMIN_KEY, password, 'cookie-secret-value', 'rdg_wrong-key-also-secret', Buffer.from(`gateway:${password}`).toString('base64')]) {
    t.notOk(all.includes(secret), `no ${secret.slice(0, 12)}… in the logs`)
  }
})
