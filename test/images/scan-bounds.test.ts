/**
 * Finding 6 of issue 10: a co-tag scan never outlives its request. The first failure, or the caller going away,
 * stops it; one request fetches at most `coTagScanLimit` manifests; one caller runs at most
 * `limits.coTagScansPerCaller` scans at once (more get 429 at once). A real registry behind the fault proxy.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { Pool, request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest, type PushedImage } from '../../testing/seed.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js'
import { ADMIN_KEY, sha256Hex, startGateway, type Gateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const OTHER_KEY = 'rdg_test-other-key-that-is-long-enough-0002'
const TWO_KEYS = `
apiKeys:
  - { name: admin, sha256: ${sha256Hex(ADMIN_KEY)} }
  - { name: other, sha256: ${sha256Hex(OTHER_KEY)} }
roles:
  admin:
    - actions: ["*"]
      repositories: ["**"]
bindings:
  - role: admin
    subjects: ["apikey:admin", "apikey:other"]
`

/** `count` tags (`t-000`, …) on one image, plus `target` on an image of its own. */
async function wideRepository (name: string, count: number): Promise<PushedImage> {
  const wide = await pushImage(target, name, ['t-000'], 'oci')
  for (let batch = 1; batch < count; batch += 20) {
    const tags = Array.from({ length: Math.min(20, count - batch) }, (_, i) => `t-${String(batch + i).padStart(3, '0')}`)
    await Promise.all(tags.map(async tag => await tagManifest(target, name, tag, wide.manifest, wide.mediaType)))
  }
  return await pushImage(target, name, ['target'], 'schema2')
}

async function headStatus (name: string, reference: string): Promise<number> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode
}

async function proxied (t: Test, config: Record<string, unknown> = {}): Promise<{ proxy: FaultProxy, gateway: Gateway }> {
  const proxy = await startFaultProxy(registry.url)
  // Room for two held scans of 16 and the other caller's requests besides.
  const pool = new Pool(proxy.url, { connections: 64 })
  t.teardown(async () => { await pool.close(); await proxy.close() })
  const gateway = await startGateway(t, { registries: { default: { url: proxy.url } }, dispatcher: pool, policy: TWO_KEYS, coTagConcurrency: 16, config })
  return { proxy, gateway }
}

const coTagFetches = (proxy: FaultProxy, name: string): number =>
  proxy.requests.filter(entry => entry.method === 'GET' && entry.path.startsWith(`/v2/${name}/manifests/t-`)).length

t.test('the first failure stops the scan: the other workers start nothing more', async t => {
  const name = 'bounds/fail'
  const image = await wideRepository(name, 300)
  const { proxy, gateway } = await proxied(t)
  proxy.fault({ method: 'GET', path: ({ path }) => path.startsWith(`/v2/${name}/manifests/t-`), action: { kind: 'respond', status: 500 }, times: 1 })
  const reply = await gateway.rest('DELETE', `/images/${name}/target`)
  t.match(reply.body, { code: 'UPSTREAM_ERROR', upstreamStatus: 500 })
  await sleep(300)
  const fetched = coTagFetches(proxy, name)
  t.ok(fetched <= 40, `${fetched} of 300 co-tag manifests were asked for (at most the 16 in flight when the first failed, and their successors)`)
  t.equal(await headStatus(name, image.digest), 200, 'nothing deleted')
})

t.test('the caller going away stops the scan and deletes nothing', async t => {
  const name = 'bounds/gone'
  const image = await wideRepository(name, 300)
  const { proxy, gateway } = await proxied(t)
  let release = (): void => {}
  const held = new Promise<void>(resolve => { release = resolve })
  proxy.fault({ method: 'GET', path: ({ path }) => path.startsWith(`/v2/${name}/manifests/t-`), action: { kind: 'hold', release: held } })
  const address = await gateway.app.listen({ port: 0, host: '127.0.0.1' })
  const caller = new AbortController()
  const call = request(`${address}/images/${name}/target`, { method: 'DELETE', headers: { 'x-api-key': ADMIN_KEY }, signal: caller.signal })
  await proxy.waitFor(entry => entry.path.startsWith(`/v2/${name}/manifests/t-`))
  await sleep(100)
  caller.abort()
  await t.rejects(call, 'the caller hung up')
  await sleep(200)
  const atAbort = coTagFetches(proxy, name)
  release()
  await sleep(500)
  const fetched = coTagFetches(proxy, name)
  t.equal(fetched, atAbort, `no co-tag manifest was asked for after the caller left (${fetched} of 300 in all)`)
  t.ok(fetched <= 32, `only those in flight when it left (${fetched})`)
  t.equal(await headStatus(name, image.digest), 200, 'nothing deleted')
  t.notOk(proxy.requests.some(entry => entry.method === 'DELETE'), 'no DELETE reached the registry')
  const [record] = (await gateway.rest('GET', `/audit?name=${encodeURIComponent(name)}&tag=target&action=delete`)).body.items
  t.match(record, { outcome: 'failed', errorCode: 'REQUEST_ABORTED' }, 'the trail says the caller went away')
})

t.test('more tags than coTagScanLimit: UPSTREAM_ERROR naming the limit, before any co-tag is fetched', async t => {
  const name = 'bounds/cap'
  const image = await wideRepository(name, 30)
  const { proxy, gateway } = await proxied(t, { coTagScanLimit: 20 })
  for (const query of ['', '?dryRun=true', '?force=true']) {
    const reply = await gateway.rest('DELETE', `/images/${name}/target${query}`)
    t.equal(reply.status, 502, query)
    t.match(reply.body, { code: 'UPSTREAM_ERROR', coTagScanLimit: 20 })
    t.match(reply.body.detail, /needs more than 20 manifest fetches in one request.*Raise coTagScanLimit/)
  }
  t.equal(coTagFetches(proxy, name), 0, 'no co-tag manifest was fetched')
  t.equal(await headStatus(name, image.digest), 200, 'nothing deleted')
  const { gateway: roomy } = await proxied(t, { coTagScanLimit: 30 })
  t.equal((await roomy.rest('DELETE', `/images/${name}/target?dryRun=true`)).status, 200, 'within the limit the scan runs')
})

t.test('at most 2 scans in flight per caller: a third gets 429 with Retry-After; another caller is unaffected', async t => {
  const name = 'bounds/busy'
  await wideRepository(name, 20)
  const quiet = 'bounds/quiet'
  await pushImage(target, quiet, ['v1'], 'schema2')
  const { proxy, gateway } = await proxied(t)
  let release = (): void => {}
  const held = new Promise<void>(resolve => { release = resolve })
  proxy.fault({ method: 'GET', path: ({ path }) => path.startsWith(`/v2/${name}/manifests/t-`), action: { kind: 'hold', release: held } })
  const first = gateway.rest('DELETE', `/images/${name}/target?dryRun=true`)
  const second = gateway.rest('DELETE', `/images/${name}/target?dryRun=true`)
  await proxy.waitFor(() => proxy.requests.filter(entry => entry.path === `/v2/${name}/tags/list`).length === 2)
  const third = await gateway.rest('DELETE', `/images/${name}/target?dryRun=true`)
  t.equal(third.status, 429, 'the third scan of one caller is refused at once')
  t.match(third.body, { code: 'RATE_LIMITED', retryAfter: 1 })
  t.equal(third.headers['retry-after'], '1')
  t.match(third.body.detail, /limits\.coTagScansPerCaller/)
  const graphql = await gateway.gql('mutation { deleteImage(name: "bounds/busy", tag: "target", dryRun: true) { digest } }')
  t.equal(graphql.body.errors[0].extensions.code, 'RATE_LIMITED', 'GraphQL too')
  const other = await gateway.rest('DELETE', `/images/${quiet}/v1?dryRun=true`, { key: OTHER_KEY })
  t.equal(other.status, 200, 'another caller scans meanwhile')
  release()
  t.same([(await first).status, (await second).status], [200, 200], 'the two running scans finish')
  t.equal((await gateway.rest('DELETE', `/images/${name}/target?dryRun=true`)).status, 200, 'and their slots are free again')
})
