/**
 * Finding 4 of issue 10: the co-tag guard never decides on part of a tag list. A real registry sits behind a fault
 * proxy that pages its tag list the way distribution 3.x, zot and Harbor do (2.8.2 itself sends every tag at
 * once); the co-tag `z-latest` is on the last page, past the page cap, so a guard that used the pages it got
 * would delete it with `z-target`.
 */
import t, { type Test } from 'tap'
import { Pool, request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest } from '../../testing/seed.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js'
import { startGateway, type Gateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }

const NAME = 'paged/app'
const image = await pushImage(target, NAME, ['z-target', 'z-latest'], 'schema2')
const filler = await pushImage(target, NAME, ['a-000'], 'oci')
// 120 other tags sort before the pair: with pages of 10 the pair is on page 13.
for (let i = 1; i < 120; i++) await tagManifest(target, NAME, `a-${String(i).padStart(3, '0')}`, filler.manifest, filler.mediaType)

async function headStatus (reference: string): Promise<number> {
  const response = await request(`${registry.url}/v2/${NAME}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode
}

const PAGINATE = { method: 'GET', path: /\/tags\/list/, action: { kind: 'paginate', pageSize: 10 } } as const

async function paged (t: Test, config: Record<string, unknown>): Promise<{ proxy: FaultProxy, gateway: Gateway }> {
  const proxy = await startFaultProxy(registry.url)
  const pool = new Pool(proxy.url, { connections: 8 })
  t.teardown(async () => { await pool.close(); await proxy.close() })
  proxy.fault(PAGINATE)
  const gateway = await startGateway(t, { registries: { default: { url: proxy.url } }, dispatcher: pool, config })
  return { proxy, gateway }
}

async function refusedAsIncomplete (t: Test, proxy: FaultProxy, gateway: Gateway, why: RegExp): Promise<void> {
  for (const query of ['', '?dryRun=true', '?force=true']) {
    const reply = await gateway.rest('DELETE', `/images/${NAME}/z-target${query}`)
    t.equal(reply.status, 502, `${query}: ${String(reply.body.code)}`)
    t.match(reply.body, { code: 'UPSTREAM_ERROR' })
    t.match(reply.body.detail, /did not give the whole tag list of paged\/app/)
    t.match(reply.body.detail, why)
  }
  t.notOk(proxy.requests.some(entry => entry.method === 'DELETE'), 'nothing was deleted')
  t.equal(await headStatus('z-latest'), 200, 'the co-tag on the last page survives')
  const [record] = (await gateway.rest('GET', `/audit?name=${encodeURIComponent(NAME)}&tag=z-target&action=delete`)).body.items
  t.match(record, { outcome: 'failed', errorCode: 'UPSTREAM_ERROR' }, 'and the trail says why')
}

t.test('paged through to the end, the co-tag on the last page is found', async t => {
  const { proxy, gateway } = await paged(t, {})
  const reply = await gateway.rest('DELETE', `/images/${NAME}/z-target`)
  t.match(reply.body, { code: 'SHARED_DIGEST', sharedWith: ['z-latest'], digest: image.digest })
  t.ok(proxy.requests.filter(entry => entry.path.includes('/tags/list')).length >= 13, 'every page was read')
})

t.test('a page cap reached before the end: UPSTREAM_ERROR naming tagListMaxPages, nothing deleted', async t => {
  const { proxy, gateway } = await paged(t, { tagListMaxPages: 3 })
  await refusedAsIncomplete(t, proxy, gateway, /after 3 pages; raise tagListMaxPages/)
})

t.test('a size cap reached before the end: UPSTREAM_ERROR naming tagListMaxBytes, nothing deleted', async t => {
  const { proxy, gateway } = await paged(t, { tagListMaxBytes: 1024 })
  await refusedAsIncomplete(t, proxy, gateway, /larger than 1024 bytes; raise tagListMaxBytes/)
})

t.test('a Link loop, a failing page, or a page that restarts the list: UPSTREAM_ERROR, nothing deleted', async t => {
  const { proxy, gateway } = await paged(t, {})
  const faults: Array<[string, Parameters<FaultProxy['fault']>[0]['action'], RegExp]> = [
    ['a loop', { kind: 'respond', status: 200, headers: { 'content-type': 'application/json', link: `</v2/${NAME}/tags/list>; rel="next"` }, body: '{"tags":[]}' }, /pages loop/],
    ['a failing page', { kind: 'respond', status: 500, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"UNKNOWN","message":"boom"}]}' }, /page 3 failed/],
    ['a 404 page', { kind: 'respond', status: 404, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"NAME_UNKNOWN"}]}' }, /page 3 failed/],
    ['a restart', { kind: 'respond', status: 200, headers: { 'content-type': 'application/json', link: `</v2/${NAME}/tags/list?n=10&last=zz>; rel="next"` }, body: '{"tags":["a-000"]}' }, /"a-000" came twice/]
  ]
  for (const [what, action, why] of faults) {
    // Page 3 misbehaves; pages 1, 2 and any later ones are paged by the proxy as before.
    proxy.clear()
    proxy.fault({ method: 'GET', path: `/v2/${NAME}/tags/list?n=10&last=a-019`, action })
    proxy.fault(PAGINATE)
    proxy.requests.length = 0
    await t.test(what, async t => { await refusedAsIncomplete(t, proxy, gateway, why) })
  }
})
