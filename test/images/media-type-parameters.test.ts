/**
 * Finding 12 of issue 10: media types are judged without their parameters and case-insensitively. A registry (or
 * a proxy in front of it) answering `application/vnd.oci.image.index.v1+json; charset=utf-8` must not switch off
 * the multi-platform check, and what the gateway stores and puts back is the bare type.
 */
import t from 'tap'
import { Pool, request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest } from '../../testing/seed.js'
import { essence, isIndex, MANIFEST_ACCEPT, OCI_INDEX } from '../../src/registry/media-types.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { startGateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const proxy = await startFaultProxy(registry.url)
const pool = new Pool(proxy.url, { connections: 8 })
t.teardown(async () => { await pool.close(); await proxy.close() })
const gateway = await startGateway(t, { registries: { default: { url: proxy.url } }, dispatcher: pool })

async function headStatus (name: string, reference: string): Promise<number> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode
}

t.test('essence drops parameters and case; isIndex judges the essence', async t => {
  t.equal(essence('Application/VND.OCI.Image.Index.v1+JSON ; charset=utf-8'), OCI_INDEX)
  t.equal(essence(''), '')
  t.ok(isIndex('application/vnd.docker.distribution.manifest.list.v2+json;q=1'))
  t.notOk(isIndex('application/vnd.oci.image.manifest.v1+json; charset=utf-8'))
})

const variants = [
  'application/vnd.oci.image.index.v1+json; charset=utf-8',
  'APPLICATION/VND.OCI.IMAGE.INDEX.V1+JSON',
  'application/vnd.oci.image.index.v1+json;profile="x"'
]
for (const [round, contentType] of variants.entries()) {
  t.test(`an index answered as "${contentType}" still protects its platform images`, async t => {
    const name = `params/app${round}`
    const multi = await pushImage(target, name, ['multi'], 'oci-index')
    const child = multi.children[0] as { digest: string, mediaType: string }
    const childBytes = await (await request(`${registry.url}/v2/${name}/manifests/${child.digest}`, { headers: { accept: child.mediaType } })).body.arrayBuffer()
    await tagManifest(target, name, 'amd64-only', Buffer.from(childBytes), child.mediaType)
    // Every manifest answer of this repository carries the odd Content-Type for an index.
    const remove = proxy.fault({
      path: ({ path }) => path.startsWith(`/v2/${name}/manifests/`) && !path.endsWith('amd64-only') && !path.endsWith(child.digest),
      action: { kind: 'set-headers', headers: { 'content-type': contentType } }
    })
    t.teardown(remove)
    const refused = await gateway.rest('DELETE', `/images/${name}/amd64-only`)
    t.equal(refused.status, 409, `refused (${String(refused.body.code)})`)
    t.match(refused.body, { code: 'REFERENCED_BY_INDEX', digest: child.digest, referencedBy: [{ digest: multi.digest, tags: ['multi'] }] })
    t.equal(await headStatus(name, child.digest), 200, 'the platform image is still there')

    const dryRun = await gateway.rest('DELETE', `/images/${name}/multi?dryRun=true`)
    t.equal(dryRun.body.mediaType, OCI_INDEX, 'the index itself is reported (and would be audited and restored) under its bare type')
  })
}
