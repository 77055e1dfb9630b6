/**
 * Issue 11, the paths a registry has to misbehave for: a co-tag pushed while auto scans (auto then untags rather
 * than delete the new tag with the digest), and a swap whose DELETE answer is lost although the registry acted.
 */
import t, { type Test } from 'tap'
import { Pool, request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushBlob, pushImage, tagManifest, type PushedImage } from '../../testing/seed.js'
import { EMPTY_BLOB } from '../../src/registry/untag.js'
import { planId } from '../../src/images/plan.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js'
import { startGateway, type Gateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }

async function digestOf (name: string, reference: string): Promise<string | number> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode === 200 ? String(response.headers['docker-content-digest']) : response.statusCode
}

async function gatewayWithProxy (t: Test): Promise<{ proxy: FaultProxy, gateway: Gateway }> {
  const proxy = await startFaultProxy(registry.url)
  const pool = new Pool(proxy.url, { connections: 8 })
  t.teardown(async () => { await pool.close(); await proxy.close() })
  const gateway = await startGateway(t, { registries: { default: { url: proxy.url, defaultMode: 'auto' } }, dispatcher: pool })
  return { proxy, gateway }
}

/** The registry's upload Location names its own origin, not the proxy's, and the gateway rightly refuses to follow it. */
async function withEmptyBlob (name: string): Promise<void> {
  await pushBlob(target, name, EMPTY_BLOB)
}

/** Starts DELETE `url`, holds its scan at the first co-tag fetch, pushes `tag`'s manifest under `late`, lets it go on. */
async function deleteWhileTagged (proxy: FaultProxy, gateway: Gateway, url: string, image: PushedImage, late: string): Promise<{ status: number, body: any }> {
  let release = (): void => {}
  const held = new Promise<void>(resolve => { release = resolve })
  const seen = proxy.requests.length
  proxy.fault({ method: 'GET', path: ({ path }) => path.startsWith(`/v2/${image.name}/manifests/f-`), action: { kind: 'hold', release: held }, times: 1 })
  const reply = gateway.rest('DELETE', url)
  await proxy.waitFor(entry => proxy.requests.indexOf(entry) >= seen && entry.action === 'hold')
  await tagManifest(target, image.name, late, image.manifest, image.mediaType)
  release()
  return await reply
}

t.test('auto: a co-tag pushed during the scan turns the digest deletion into an untag, and the new tag stays', async t => {
  const { proxy, gateway } = await gatewayWithProxy(t)
  const filler = await pushImage(target, 'auto-late/app', ['f-1'], 'oci')
  await tagManifest(target, 'auto-late/app', 'f-2', filler.manifest, filler.mediaType)
  const image = await pushImage(target, 'auto-late/app', ['x'], 'schema2')
  await withEmptyBlob('auto-late/app')
  const plain = await deleteWhileTagged(proxy, gateway, '/images/auto-late/app/x', image, 'x-late')
  t.equal(plain.status, 200)
  t.match(plain.body, { mode: 'auto', action: 'untagged', strategy: 'swap', removedTags: ['x'] })
  const { status, body } = plain
  t.equal(await digestOf('auto-late/app', 'x'), 404, 'x is gone')
  t.equal(await digestOf('auto-late/app', 'x-late'), image.digest, 'x-late keeps the digest')
  const [record] = (await gateway.rest('GET', '/audit?tag=x')).body.items
  t.match(record, { outcome: 'deleted', mode: 'auto', deleteAction: 'untagged', strategy: 'swap', removedTags: ['x'] })
  t.equal(status, 200)
  const untagPlan = planId({ registry: 'default', repository: 'auto-late/app', tag: 'x', digest: image.digest, mediaType: image.mediaType, mode: 'auto', force: false, action: 'untagged', strategy: 'swap', removedTags: ['x'], sharedWith: ['x-late'], referencedBy: [] })
  t.equal(body.planId, untagPlan, 'the plan executed is the untag, under its own id')
})

t.test('auto with a confirmed plan: a co-tag pushed during the scan makes it PLAN_STALE, and nothing changes', async t => {
  const { proxy, gateway } = await gatewayWithProxy(t)
  const filler = await pushImage(target, 'auto-late/confirmed', ['f-1'], 'oci')
  await tagManifest(target, 'auto-late/confirmed', 'f-2', filler.manifest, filler.mediaType)
  const image = await pushImage(target, 'auto-late/confirmed', ['z'], 'schema2')
  const dry = await gateway.rest('DELETE', '/images/auto-late/confirmed/z?dryRun=true')
  t.equal(dry.body.action, 'deleted-digest')
  const stale = await deleteWhileTagged(proxy, gateway, `/images/auto-late/confirmed/z?planId=${dry.body.planId as string}`, image, 'z-late')
  t.equal(stale.status, 409)
  t.match(stale.body, { code: 'PLAN_STALE', planId: dry.body.planId, action: 'untagged', removedTags: ['z'] })
  t.equal(await digestOf('auto-late/confirmed', 'z'), image.digest, 'z is still there')
  t.equal(await digestOf('auto-late/confirmed', 'z-late'), image.digest)
})

t.test('swap: the DELETE of the placeholder acted but its answer was lost; the registry, asked again, shows the tag gone', async t => {
  const { proxy, gateway } = await gatewayWithProxy(t)
  const image = await pushImage(target, 'lost-answer/app', ['gone', 'kept'], 'schema2')
  await withEmptyBlob('lost-answer/app')
  proxy.fault({ method: 'DELETE', path: /^\/v2\/lost-answer\/app\/manifests\/sha256:/, action: { kind: 'drop-after-forward' }, times: 1 })
  const { status, body } = await gateway.rest('DELETE', '/images/lost-answer/app/gone?mode=untag')
  t.equal(status, 200)
  t.match(body, { action: 'untagged', deleted: true })
  t.equal(await digestOf('lost-answer/app', 'gone'), 404)
  t.equal(await digestOf('lost-answer/app', 'kept'), image.digest)
  const [record] = (await gateway.rest('GET', '/audit?tag=gone')).body.items
  t.match(record, { outcome: 'deleted', errorCode: /^UPSTREAM_/, errorDetail: /asked again, shows the tag gone/ })
})
