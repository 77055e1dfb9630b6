/**
 * Faults between the gateway and a real registry: the registry down and back, silent, failing mid-DELETE,
 * rate limiting, its token service down, and answering garbage. A fault proxy on loopback sits in between where
 * the fault needs one (test/fixtures/fault-proxy.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { Pool, request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { startFaultProxy, WRONG_DIGEST, type FaultProxy } from '../fixtures/fault-proxy.js'
import { DELETE_MUTATION, startGateway, type Gateway, type Reply } from '../fixtures/gateway.js'
import { startTokenIssuer } from '../fixtures/token-issuer.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }

async function headStatus (url: string, name: string, reference: string): Promise<number> {
  const response = await request(`${url}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode
}

async function auditOf (gateway: Gateway, name: string, tag: string): Promise<any[]> {
  const reply = await gateway.rest('GET', `/audit?name=${encodeURIComponent(name)}&tag=${encodeURIComponent(tag)}&action=delete`)
  return reply.body.items
}

/** Polls until `check` holds, for at most `timeoutMs`; answers whether it did. */
async function eventually (check: () => boolean, timeoutMs = 3000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) return false
    await sleep(10)
  }
  return true
}

async function timed (work: () => Promise<Reply>): Promise<{ reply: Reply, ms: number }> {
  const started = performance.now()
  const reply = await work()
  return { reply, ms: performance.now() - started }
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number

async function proxied (t: Test, requestMs = 500): Promise<{ proxy: FaultProxy, pool: Pool, gateway: Gateway }> {
  const proxy = await startFaultProxy(registry.url)
  const pool = new Pool(proxy.url, { connections: 8 })
  t.teardown(async () => {
    await pool.close()
    await proxy.close()
  })
  const gateway = await startGateway(t, { registries: { default: { url: proxy.url, timeouts: { requestMs } } }, dispatcher: pool })
  return { proxy, pool, gateway }
}

const nothingInFlight = (pool: Pool): boolean => pool.stats.pending === 0 && pool.stats.running === 0 && pool.stats.queued === 0

t.test('registry not running: 503 UPSTREAM_UNAVAILABLE at once; restarted, it works again without restarting the gateway', async t => {
  const flaky = await startRegistry()
  const { dataDir, port, url } = flaky
  t.teardown(async () => { await flaky.stop() })
  await pushImage({ url }, 'down/app', ['before'], 'schema2')
  await pushImage({ url }, 'down/app', ['after'], 'oci')
  const gateway = await startGateway(t, { registries: { default: { url } } })
  t.equal((await gateway.rest('DELETE', '/images/down/app/before')).status, 200, 'works while the registry runs (and leaves a keep-alive connection)')

  await flaky.stop({ keepData: true })
  const times: number[] = []
  for (let i = 0; i < 15; i++) {
    const { reply, ms } = await timed(async () => await gateway.rest('DELETE', '/images/down/app/after'))
    times.push(ms)
    t.equal(reply.status, 503)
    t.equal(reply.body.code, 'UPSTREAM_UNAVAILABLE')
    t.match(reply.body.detail, /could not be reached .*ECONNREFUSED/)
  }
  const { reply: graphql, ms } = await timed(async () => await gateway.gql(DELETE_MUTATION, { name: 'down/app', tag: 'after' }))
  times.push(ms)
  t.equal(graphql.body.errors[0].extensions.code, 'UPSTREAM_UNAVAILABLE')
  // The strict 100 ms belongs to a benchmark; a loaded CI machine only gets a generous bound.
  t.ok(times.every(time => time < 1000), `every refusal answered within 1 s (median ${median(times).toFixed(1)} ms, max ${Math.max(...times).toFixed(1)} ms)`)
  t.comment(`refused connection → 503: median ${median(times).toFixed(1)} ms over ${times.length} requests`)
  const ready = await gateway.rest('GET', '/readyz', { key: null })
  t.equal(ready.status, 503, 'not ready while the registry is down')

  const restarted = await startRegistry({ dataDir, port })
  t.teardown(async () => { await restarted.stop() })
  // Readiness answers from a check at most a second old.
  await new Promise(resolve => setTimeout(resolve, 1100))
  t.equal((await gateway.rest('GET', '/readyz', { key: null })).status, 200, 'ready again')
  const done = await gateway.rest('DELETE', '/images/down/app/after')
  t.equal(done.status, 200)
  t.equal(done.body.deleted, true)
  t.equal(await headStatus(url, 'down/app', 'after'), 404)
  const failed = (await auditOf(gateway, 'down/app', 'after')).filter(item => item.outcome === 'failed')
  t.equal(failed.length, 16, 'every refused attempt is in the audit trail as failed')
  t.ok(failed.every(item => item.errorCode === 'UPSTREAM_UNAVAILABLE'))
})

t.test('registry accepts the connection and never answers: 504 UPSTREAM_TIMEOUT at the timeout; no socket or request left behind', async t => {
  const { proxy, pool, gateway } = await proxied(t, 400)
  proxy.fault({ path: /^\/v2\/silent\//, action: { kind: 'hang' } })
  const { reply, ms } = await timed(async () => await gateway.rest('DELETE', '/images/silent/app/v1'))
  t.equal(reply.status, 504)
  t.equal(reply.body.code, 'UPSTREAM_TIMEOUT')
  t.match(reply.body.detail, /within 400 ms/)
  // undici checks header timeouts on a coarse (about 1 s) timer, so a 400 ms timeout fires after 0.4-1.4 s.
  t.ok(ms >= 390 && ms < 3400, `answered at the configured timeout (${ms.toFixed(0)} ms for 400 ms)`)
  const graphql = await gateway.gql(DELETE_MUTATION, { name: 'silent/app', tag: 'v1', dryRun: true })
  t.equal(graphql.body.errors[0].extensions.code, 'UPSTREAM_TIMEOUT')
  t.ok(await eventually(() => proxy.hanging() === 0), 'the gateway closed every connection it gave up on')
  t.ok(nothingInFlight(pool), `no request pending or running in the pool: ${JSON.stringify(pool.stats)}`)
  const [record] = await auditOf(gateway, 'silent/app', 'v1')
  t.match(record, { outcome: 'failed', errorCode: 'UPSTREAM_TIMEOUT' }, 'nothing was written ahead: the registry never got the DELETE')

  // The same with the gateway's own pool: the proxy sees the gateway hang up.
  const ownPool = await startGateway(t, { registries: { default: { url: proxy.url, timeouts: { requestMs: 300 } } } })
  const own = await ownPool.rest('DELETE', '/images/silent/app/v2?dryRun=true')
  t.equal(own.status, 504)
  t.ok(await eventually(() => proxy.hanging() === 0), 'no hanging connection left at the proxy')
  proxy.clear()
  t.equal((await gateway.rest('DELETE', '/images/silent/app/v1')).status, 404, 'the same pool serves the next request normally')
})

t.test('the DELETE hangs: 504; the audit says failed when the registry never saw it and deleted when it did', async t => {
  const { proxy, pool, gateway } = await proxied(t, 400)
  const never = await pushImage(target, 'lost/app', ['never'], 'schema2')
  const did = await pushImage(target, 'lost/app', ['did'], 'oci-index')

  proxy.fault({ method: 'DELETE', path: `/v2/lost/app/manifests/${never.digest}`, action: { kind: 'hang' } })
  const unseen = await gateway.rest('DELETE', '/images/lost/app/never')
  t.equal(unseen.status, 504)
  t.equal(unseen.body.code, 'UPSTREAM_TIMEOUT')
  t.match((await auditOf(gateway, 'lost/app', 'never'))[0], { outcome: 'failed', errorCode: 'UPSTREAM_TIMEOUT', digest: never.digest })
  t.equal(await headStatus(registry.url, 'lost/app', 'never'), 200, 'the image is still there')

  proxy.fault({ method: 'DELETE', path: `/v2/lost/app/manifests/${did.digest}`, action: { kind: 'hang-after-forward' } })
  const lost = await gateway.rest('DELETE', '/images/lost/app/did')
  t.equal(lost.status, 504)
  const [record] = await auditOf(gateway, 'lost/app', 'did')
  t.match(record, { outcome: 'deleted', errorCode: 'UPSTREAM_TIMEOUT', digest: did.digest, restorable: true })
  t.match(record.errorDetail, /answer was lost .* the manifest is gone/)
  t.equal(await headStatus(registry.url, 'lost/app', did.digest), 404, 'the registry did delete it')
  t.ok(await eventually(() => proxy.hanging() === 0), 'no hanging connection left at the proxy')
  t.ok(nothingInFlight(pool), `no request pending or running in the pool: ${JSON.stringify(pool.stats)}`)
})

t.test('the DELETE answers 500 or 503, JSON or not: 502 UPSTREAM_ERROR, audit failed, image intact', async t => {
  const { proxy, gateway } = await proxied(t)
  const cases: Array<[string, number, Record<string, string>, string, RegExp | undefined]> = [
    ['html', 500, { 'content-type': 'text/html' }, '<html><body>Internal Server Error</body></html>', undefined],
    ['json', 500, { 'content-type': 'application/json' }, '{"errors":[{"code":"UNKNOWN","message":"storage driver exploded"}]}', /storage driver exploded/],
    ['empty', 503, {}, '', undefined],
    ['truncated-json', 500, { 'content-type': 'application/json' }, '{"errors":[{"code":', undefined]
  ]
  for (const [tag, status, headers, body, said] of cases) {
    const image = await pushImage(target, 'err/app', [tag], 'schema2')
    proxy.fault({ method: 'DELETE', path: `/v2/err/app/manifests/${image.digest}`, action: { kind: 'respond', status, headers, body }, times: 1 })
    const reply = await gateway.rest('DELETE', `/images/err/app/${tag}`)
    t.equal(reply.status, 502, tag)
    t.match(reply.body, { code: 'UPSTREAM_ERROR', upstreamStatus: status }, tag)
    if (said !== undefined) t.match(reply.body.detail, said, 'the registry\'s own message is passed on')
    t.match((await auditOf(gateway, 'err/app', tag))[0], { outcome: 'failed', errorCode: 'UPSTREAM_ERROR', upstreamStatus: status }, tag)
    t.equal(await headStatus(registry.url, 'err/app', tag), 200, `${tag}: the image is still there`)
  }
  const image = await pushImage(target, 'err/app', ['graphql'], 'oci')
  proxy.fault({ method: 'DELETE', path: `/v2/err/app/manifests/${image.digest}`, action: { kind: 'respond', status: 500, body: 'oops' }, times: 1 })
  const graphql = await gateway.gql(DELETE_MUTATION, { name: 'err/app', tag: 'graphql' })
  t.match(graphql.body.errors[0].extensions, { code: 'UPSTREAM_ERROR', upstreamStatus: 500 })
})

t.test('the connection drops mid-DELETE: 502 UPSTREAM_ERROR; the audit says failed, or deleted when the DELETE did happen', async t => {
  const { proxy, pool, gateway } = await proxied(t)
  const before = await pushImage(target, 'drop/app', ['before'], 'schema2')
  const after = await pushImage(target, 'drop/app', ['after'], 'docker-list')

  proxy.fault({ method: 'DELETE', path: `/v2/drop/app/manifests/${before.digest}`, action: { kind: 'drop' }, times: 1 })
  const unseen = await gateway.rest('DELETE', '/images/drop/app/before')
  t.match((await auditOf(gateway, 'drop/app', 'before'))[0], { outcome: 'failed', digest: before.digest })
  t.equal(await headStatus(registry.url, 'drop/app', 'before'), 200, 'the registry never saw the DELETE')
  t.equal(proxy.requests.filter(entry => entry.method === 'DELETE' && entry.path.includes(before.digest)).length, 1, 'the DELETE was sent once, not retried')

  proxy.fault({ method: 'DELETE', path: `/v2/drop/app/manifests/${after.digest}`, action: { kind: 'drop-after-forward' }, times: 1 })
  const lost = await gateway.rest('DELETE', '/images/drop/app/after')
  const [record] = await auditOf(gateway, 'drop/app', 'after')
  t.match(record, { outcome: 'deleted', digest: after.digest, restorable: true }, 'reconciled: the registry did delete it')
  t.match(record.errorDetail, /answer was lost/)
  t.equal(await headStatus(registry.url, 'drop/app', after.digest), 404)
  t.ok(nothingInFlight(pool), `no request pending or running in the pool: ${JSON.stringify(pool.stats)}`)

  // The issue asks for 502 UPSTREAM_ERROR here: the registry was reached and failed mid-answer.
  for (const [what, reply] of [['dropped before the registry saw it', unseen], ['dropped after the registry deleted', lost]] as const) {
    t.equal(reply.status, 502, `${what}: 502`)
    t.equal(reply.body.code, 'UPSTREAM_ERROR', `${what}: UPSTREAM_ERROR (got ${String(reply.body.code)})`)
  }
})

t.test('the answer is lost and the registry cannot tell yet: the record stays pending and the next start settles it', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'rdg-reconcile-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const auditPath = join(dir, 'audit.db')
  const happened = await pushImage(target, 'recon/app', ['happened'], 'schema2')
  const never = await pushImage(target, 'recon/app', ['never'], 'oci')

  await t.test('first gateway: both DELETE answers lost, the registry then unable to answer', async t => {
    const proxy = await startFaultProxy(registry.url)
    const pool = new Pool(proxy.url, { connections: 4 })
    t.teardown(async () => { await pool.close(); await proxy.close() })
    const gateway = await startGateway(t, { registries: { default: { url: proxy.url, timeouts: { requestMs: 500 } } }, dispatcher: pool, auditPath })
    proxy.fault({ method: 'DELETE', path: `/v2/recon/app/manifests/${happened.digest}`, action: { kind: 'drop-after-forward' }, times: 1 })
    proxy.fault({ method: 'DELETE', path: `/v2/recon/app/manifests/${never.digest}`, action: { kind: 'drop' }, times: 1 })
    proxy.fault({ method: 'HEAD', path: /^\/v2\/recon\/app\/manifests\/sha256:/, action: { kind: 'respond', status: 503, body: 'maintenance' } })
    for (const tag of ['happened', 'never']) {
      const reply = await gateway.rest('DELETE', `/images/recon/app/${tag}`)
      t.ok(reply.status >= 500, `${tag}: an error answer (${reply.status})`)
      t.match((await auditOf(gateway, 'recon/app', tag))[0], { outcome: 'pending' }, `${tag}: left pending`)
    }
  })

  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, auditPath })
  const [deleted] = await auditOf(gateway, 'recon/app', 'happened')
  t.match(deleted, { outcome: 'deleted', digest: happened.digest, errorDetail: /reconciled at start-up/ })
  const [failed] = await auditOf(gateway, 'recon/app', 'never')
  t.match(failed, { outcome: 'failed', digest: never.digest, errorDetail: /reconciled at start-up/ })
  t.equal(await headStatus(registry.url, 'recon/app', 'never'), 200)
  t.equal(await headStatus(registry.url, 'recon/app', happened.digest), 404)
})

t.test('429 with Retry-After: 429 RATE_LIMITED carrying it, on both transports', async t => {
  const { proxy, gateway } = await proxied(t)
  const image = await pushImage(target, 'limited/app', ['v1'], 'schema2')
  proxy.fault({ method: 'DELETE', path: /^\/v2\/limited\/app\/manifests\//, action: { kind: 'respond', status: 429, headers: { 'retry-after': '7', 'content-type': 'application/json' }, body: '{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}' }, times: 2 })
  const rest = await gateway.rest('DELETE', '/images/limited/app/v1')
  t.equal(rest.status, 429)
  t.equal(rest.headers['retry-after'], '7')
  t.match(rest.body, { code: 'RATE_LIMITED', retryAfter: 7, upstreamStatus: 429 })
  t.match((await auditOf(gateway, 'limited/app', 'v1'))[0], { outcome: 'failed', errorCode: 'RATE_LIMITED', upstreamStatus: 429 })
  const graphql = await gateway.gql(DELETE_MUTATION, { name: 'limited/app', tag: 'v1' })
  t.match(graphql.body.errors[0].extensions, { code: 'RATE_LIMITED', retryAfter: 7 })
  t.equal(await headStatus(registry.url, 'limited/app', image.digest), 200, 'nothing deleted')

  const at = new Date(Date.now() + 30_000).toUTCString()
  proxy.fault({ method: 'GET', path: '/v2/limited/app/manifests/v1', action: { kind: 'respond', status: 429, headers: { 'retry-after': at } }, times: 1 })
  const dated = await gateway.rest('DELETE', '/images/limited/app/v1')
  t.equal(dated.status, 429)
  const seconds = Number(dated.headers['retry-after'])
  t.ok(seconds >= 27 && seconds <= 31, `an HTTP-date Retry-After becomes seconds (${seconds})`)
  t.equal((await gateway.rest('DELETE', '/images/limited/app/v1')).status, 200, 'once the registry lets the gateway through, it deletes')
})

t.test('token endpoint down, failing or silent: 502 UPSTREAM_AUTH_FAILED naming the token realm', async t => {
  const issuer = await startTokenIssuer({ users: { gateway: 'token-password' } })
  t.teardown(async () => { await issuer.close() })
  const tokens = await startFaultProxy(new URL(issuer.realm).origin)
  let tokensClosed = false
  t.teardown(async () => { if (!tokensClosed) await tokens.close() })
  const realm = `${tokens.url}/token`
  const seeded = await startRegistry()
  for (const repository of ['tok/ok', 'tok/failing', 'tok/dropping', 'tok/silent', 'tok/down']) await pushImage({ url: seeded.url }, repository, ['v1'], 'schema2')
  await seeded.stop({ keepData: true })
  const secured = await startRegistry({ dataDir: seeded.dataDir, token: { realm, service: issuer.service, issuer: issuer.issuer, rootCertBundle: issuer.certPath } })
  t.teardown(async () => { await secured.stop() })
  const gateway = await startGateway(t, {
    registries: { default: { url: secured.url, username: 'gateway', password: 'token-password', tokenRealmOrigins: [tokens.url], timeouts: { requestMs: 400 } } }
  })

  t.equal((await gateway.rest('DELETE', '/images/tok/ok/v1?dryRun=true')).status, 200, 'works while the token service does')
  const expectRealm = (reply: Reply, what: string): void => {
    t.equal(reply.status, 502, what)
    t.match(reply.body, { code: 'UPSTREAM_AUTH_FAILED', realm }, what)
    t.ok(reply.body.detail.includes(realm), `${what}: the detail names the realm (${String(reply.body.detail)})`)
    t.notMatch(JSON.stringify(reply.body), /token-password/, `${what}: the password is never echoed`)
  }
  tokens.fault({ path: /^\/token\?.*tok%2Ffailing/, action: { kind: 'respond', status: 503, body: 'down for maintenance' } })
  expectRealm(await gateway.rest('DELETE', '/images/tok/failing/v1'), 'the token service answers 503')
  tokens.fault({ path: /^\/token\?.*tok%2Fdropping/, action: { kind: 'drop' } })
  expectRealm(await gateway.rest('DELETE', '/images/tok/dropping/v1'), 'the token service drops the connection')
  tokens.fault({ path: /^\/token\?.*tok%2Fsilent/, action: { kind: 'hang' } })
  const { reply: silent, ms } = await timed(async () => await gateway.rest('DELETE', '/images/tok/silent/v1'))
  expectRealm(silent, 'the token service never answers')
  t.ok(ms < 3000, `a silent token service is given up on at the timeout (${ms.toFixed(0)} ms)`)
  t.ok(await eventually(() => tokens.hanging() === 0), 'the token request was not left hanging')
  await tokens.close()
  tokensClosed = true
  const down = await gateway.rest('DELETE', '/images/tok/down/v1')
  expectRealm(down, 'the token service is not running')
  t.match(down.body.detail, /ECONNREFUSED/)
  const graphql = await gateway.gql(DELETE_MUTATION, { name: 'tok/down', tag: 'v1' })
  t.match(graphql.body.errors[0].extensions, { code: 'UPSTREAM_AUTH_FAILED', realm })
})

t.test('garbage from the registry: typed errors, bounded reads', async t => {
  const { proxy, pool, gateway } = await proxied(t, 5000)
  const image = await pushImage(target, 'junk/app', ['v1'], 'schema2')
  await pushImage(target, 'junk/other', ['v1'], 'oci')

  proxy.fault({ method: 'GET', path: '/v2/junk/app/manifests/v1', action: { kind: 'respond', status: 500, headers: { 'content-type': 'application/json' }, body: '{not json' }, times: 1 })
  t.match((await gateway.rest('DELETE', '/images/junk/app/v1')).body, { code: 'UPSTREAM_ERROR', upstreamStatus: 500 }, 'non-JSON error body')
  proxy.fault({ method: 'GET', path: '/v2/junk/app/manifests/v1', action: { kind: 'respond', status: 404, headers: { 'content-type': 'text/html' }, body: '<h1>404</h1>' }, times: 1 })
  t.match((await gateway.rest('DELETE', '/images/junk/app/v1')).body, { code: 'NOT_FOUND' }, 'HTML 404')
  proxy.fault({ method: 'GET', path: /^\/v2\/junk\/app\/tags\/list/, action: { kind: 'respond', status: 200, headers: { 'content-type': 'application/json' }, body: '<html>' }, times: 1 })
  const notJson = await gateway.rest('DELETE', '/images/junk/app/v1')
  t.match(notJson.body, { code: 'UPSTREAM_ERROR' }, 'a tag list that is not JSON')
  t.match(notJson.body.detail, /not JSON/)

  proxy.fault({ method: 'GET', path: '/v2/junk/app/manifests/v1', action: { kind: 'corrupt-digest' }, times: 1 })
  const mismatch = await gateway.rest('DELETE', '/images/junk/app/v1')
  t.equal(mismatch.status, 502)
  t.match(mismatch.body, { code: 'UPSTREAM_ERROR' })
  t.match(mismatch.body.detail, new RegExp(`does not match ${WRONG_DIGEST}`))
  t.notOk(proxy.requests.some(entry => entry.method === 'DELETE'), 'nothing was deleted on the strength of a digest that does not match')

  proxy.fault({ method: 'HEAD', path: '/v2/junk/app/manifests/v1', action: { kind: 'corrupt-digest', digest: 'sha256:not-hex' }, times: 1 })
  const fallback = await gateway.rest('DELETE', '/images/junk/app/v1?dryRun=true')
  t.equal(fallback.body.digest, image.digest, 'a malformed digest header is ignored: the bytes are hashed instead')

  const huge: Array<[string, string, number, number]> = [
    ['a huge manifest', '/v2/junk/app/manifests/v1', 256 * 1024 * 1024, 4 * 1024 * 1024],
    ['a huge tag list', '/v2/junk/app/tags/list', 1024 * 1024 * 1024, 32 * 1024 * 1024]
  ]
  for (const [what, path, bytes, limit] of huge) {
    const rule = proxy.fault({ method: 'GET', path, action: { kind: 'huge-body', bytes }, times: 1 })
    const started = performance.now()
    const reply = await gateway.rest('DELETE', '/images/junk/app/v1')
    t.equal(reply.status, 502, what)
    t.match(reply.body, { code: 'UPSTREAM_ERROR' }, what)
    t.match(reply.body.detail, new RegExp(`larger than ${limit} bytes`), what)
    const sent = proxy.requests.filter(entry => entry.action === 'huge-body').at(-1)?.bytesSent ?? 0
    t.ok(sent < limit + 16 * 1024 * 1024, `${what}: the gateway stopped reading after ${(sent / 1024 / 1024).toFixed(1)} MiB of ${bytes / 1024 / 1024} MiB (${(performance.now() - started).toFixed(0)} ms)`)
    rule()
  }
  const image2 = await pushImage(target, 'junk/app', ['v2'], 'oci')
  proxy.fault({ method: 'DELETE', path: `/v2/junk/app/manifests/${image2.digest}`, action: { kind: 'huge-body', status: 500, bytes: 256 * 1024 * 1024 }, times: 1 })
  const hugeError = await gateway.rest('DELETE', '/images/junk/app/v2')
  t.match(hugeError.body, { code: 'UPSTREAM_ERROR', upstreamStatus: 500 }, 'a huge error body')
  const errorSent = proxy.requests.filter(entry => entry.action === 'huge-body').at(-1)?.bytesSent ?? 0
  t.ok(errorSent < 16 * 1024 * 1024, `a huge error body is not read to the end (${(errorSent / 1024 / 1024).toFixed(1)} MiB sent)`)
  t.match((await auditOf(gateway, 'junk/app', 'v2'))[0], { outcome: 'failed', upstreamStatus: 500 })
  t.ok(await eventually(() => nothingInFlight(pool)), `no request pending or running in the pool: ${JSON.stringify(pool.stats)}`)
  t.equal((await gateway.rest('DELETE', '/images/junk/other/v1')).status, 200, 'afterwards the gateway works normally')
})

t.test('a tag list of 200,000 tags in one page: a typed answer, not a crash', async t => {
  const { proxy, gateway } = await proxied(t, 5000)
  await pushImage(target, 'wide/app', ['v1'], 'schema2')
  // Distribution answers every tag in one page unless asked for pages; 200k tags is a big but real repository.
  const page = Buffer.from(JSON.stringify({ name: 'wide/app', tags: ['v1', ...Array.from({ length: 200_000 }, (_, i) => `t-${i}`)] }))
  proxy.fault({ method: 'GET', path: /^\/v2\/wide\/app\/tags\/list/, action: { kind: 'respond', status: 200, headers: { 'content-type': 'application/json' }, body: page }, times: 1 })
  // Were the co-tags fetched, the "registry" would fail those at once, so the test stays short.
  proxy.fault({ method: 'GET', path: /^\/v2\/wide\/app\/manifests\/t-/, action: { kind: 'respond', status: 503 } })
  const reply = await gateway.rest('DELETE', '/images/wide/app/v1?dryRun=true')
  t.not(reply.status, 500, `not a 500 (${reply.status} ${String(reply.body.code)}: ${String(reply.body.detail).slice(0, 120)})`)
  // More tags than coTagScanLimit (50,000 by default): refused before a single co-tag is fetched.
  t.match(reply.body, { code: 'UPSTREAM_ERROR', coTagScanLimit: 50_000 }, 'refused by the scan limit, typed')
  t.notOk(proxy.requests.some(entry => entry.path.startsWith('/v2/wide/app/manifests/t-')), 'no co-tag was fetched')
})

t.test('a paginated tag list is bounded in total, not only per page: a looping or endless Link is refused', async t => {
  const { proxy, gateway } = await proxied(t, 5000)
  await pushImage(target, 'pages/app', ['v1'], 'schema2')
  // Every page is 2 MiB of tags (well under the per-page limit) and names itself as the next page.
  const page = Buffer.from(JSON.stringify({ name: 'pages/app', tags: Array.from({ length: 2 * 1024 * 1024 / 32 }, (_, i) => `tag-${String(i).padStart(24, '0')}`) }))
  const link = '</v2/pages/app/tags/list?last=t&n=100000>; rel="next"'
  proxy.fault({ method: 'GET', path: /^\/v2\/pages\/app\/tags\/list/, action: { kind: 'respond', status: 200, headers: { 'content-type': 'application/json', link }, body: page }, times: 40 })
  // After 40 pages (80 MiB) the "registry" says the repository is gone, which ends the walk there at the latest.
  proxy.fault({ method: 'GET', path: /^\/v2\/pages\/app\/tags\/list/, action: { kind: 'respond', status: 404, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"NAME_UNKNOWN"}]}' } })
  const reply = await gateway.rest('DELETE', '/images/pages/app/v1?dryRun=true')
  const pages = proxy.requests.filter(entry => entry.path.startsWith('/v2/pages/app/tags/list')).length
  t.not(reply.status, 500, `a typed answer (${reply.status} ${String(reply.body.code)})`)
  t.ok(pages <= 17, `the gateway stopped following the list within the 32 MiB it allows for one (${pages} pages of 2 MiB fetched)`)
  t.ok(proxy.requests.filter(entry => entry.path === '/v2/pages/app/tags/list?last=t&n=100000').length <= 1, 'a next page that repeats the one just read is a loop, not followed again')
})
