/**
 * Finding 5 of issue 10: a tag pushed onto the digest while the co-tag guard scans is not deleted with it. Another
 * process (a plain Node child, as CI would be) puts the manifest under a new tag while the gateway's scan is held
 * at its first co-tag fetch by the fault proxy; the gateway must notice before its DELETE, every round.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { Pool, request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest, type PushedImage } from '../../testing/seed.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js'
import { ADMIN_POLICY, startGateway, type Gateway } from '../fixtures/gateway.js'

const run = promisify(execFile)
const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const NAME = 'late/app'
const filler = await pushImage(target, NAME, ['f-000'], 'oci')
for (let i = 1; i < 50; i++) await tagManifest(target, NAME, `f-${String(i).padStart(3, '0')}`, filler.manifest, filler.mediaType)
const elsewhere = await pushImage(target, NAME, ['latest'], 'schema2')

/** PUTs the manifest under `tag` from a separate process, the way a CI job promoting an image would. */
async function tagFromAnotherProcess (image: PushedImage, tag: string): Promise<void> {
  const script = `
    const response = await fetch(process.env.URL, { method: 'PUT', headers: { 'content-type': process.env.TYPE }, body: Buffer.from(process.env.BYTES, 'base64') })
    if (response.status !== 201) { console.error(response.status, await response.text()); process.exit(1) }`
  await run(process.execPath, ['--input-type=module', '-e', script], {
    env: { PATH: process.env.PATH, URL: `${registry.url}/v2/${NAME}/manifests/${tag}`, TYPE: image.mediaType, BYTES: image.manifest.toString('base64') }
  })
}

async function digestOf (tag: string): Promise<string | number> {
  const response = await request(`${registry.url}/v2/${NAME}/manifests/${tag}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode === 200 ? String(response.headers['docker-content-digest']) : response.statusCode
}

async function gatewayWithProxy (t: Test): Promise<{ proxy: FaultProxy, gateway: Gateway }> {
  const proxy = await startFaultProxy(registry.url)
  const pool = new Pool(proxy.url, { connections: 16 })
  t.teardown(async () => { await pool.close(); await proxy.close() })
  const policy = `${ADMIN_POLICY}protectedTags:\n  - tags: ["latest", "release-*"]\n`
  const gateway = await startGateway(t, { registries: { default: { url: proxy.url } }, dispatcher: pool, policy })
  return { proxy, gateway }
}

/**
 * Starts DELETE of `tag`, holds its scan at the first co-tag fetch, runs `meanwhile`, lets the scan go on, and
 * answers the gateway's reply.
 */
async function deleteWhile (proxy: FaultProxy, gateway: Gateway, url: string, meanwhile: () => Promise<void>): Promise<{ status: number, body: any }> {
  let release = (): void => {}
  const held = new Promise<void>(resolve => { release = resolve })
  const seen = proxy.requests.length
  proxy.fault({ method: 'GET', path: ({ path }) => path.startsWith(`/v2/${NAME}/manifests/f-`), action: { kind: 'hold', release: held }, times: 1 })
  const reply = gateway.rest('DELETE', url)
  await proxy.waitFor(entry => proxy.requests.indexOf(entry) >= seen && entry.action === 'hold')
  try {
    await meanwhile()
  } finally {
    release()
  }
  return await reply
}

t.test('20 rounds: a co-tag pushed by another process mid-scan survives, and the delete is refused', async t => {
  const { proxy, gateway } = await gatewayWithProxy(t)
  for (let round = 0; round < 20; round++) {
    const image = await pushImage(target, NAME, [`pr-${round}`], 'schema2')
    const reply = await deleteWhile(proxy, gateway, `/images/${NAME}/pr-${round}`, async () => { await tagFromAnotherProcess(image, `promoted-${round}`) })
    t.equal(reply.status, 409, `round ${round}: ${String(reply.body?.code)}`)
    t.match(reply.body, { code: 'SHARED_DIGEST', sharedWith: [`promoted-${round}`] })
    t.match(reply.body.detail, new RegExp(`promoted-${round} since the check began`))
    t.equal(await digestOf(`promoted-${round}`), image.digest, `round ${round}: the co-tag survives`)
    t.equal(await digestOf(`pr-${round}`), image.digest, `round ${round}: and so does the tag`)
  }
  t.notOk(proxy.requests.some(entry => entry.method === 'DELETE'), 'no DELETE reached the registry in any round')
  const records = (await gateway.rest('GET', `/audit?name=${encodeURIComponent(NAME)}&action=delete&limit=100`)).body.items
  t.equal(records.filter((record: any) => record.outcome === 'rejected' && record.errorCode === 'SHARED_DIGEST').length, 20, 'every refusal is in the trail')
})

t.test('a protected tag moved onto the digest mid-scan (listed before, elsewhere then) is re-checked: PROTECTED_TAG even with force', async t => {
  const { proxy, gateway } = await gatewayWithProxy(t)
  for (let round = 0; round < 5; round++) {
    const image = await pushImage(target, NAME, [`rc-${round}`], 'schema2')
    await tagManifest(target, NAME, 'latest', elsewhere.manifest, elsewhere.mediaType)
    const reply = await deleteWhile(proxy, gateway, `/images/${NAME}/rc-${round}?force=true`, async () => { await tagFromAnotherProcess(image, 'latest') })
    t.equal(reply.status, 403, `round ${round}: ${String(reply.body?.code)}`)
    t.match(reply.body, { code: 'PROTECTED_TAG', image: `${NAME}:latest` })
    t.equal(await digestOf('latest'), image.digest, `round ${round}: latest survives`)
  }
  const unforced = await pushImage(target, NAME, ['rc-plain'], 'schema2')
  await tagManifest(target, NAME, 'latest', elsewhere.manifest, elsewhere.mediaType)
  const reply = await deleteWhile(proxy, gateway, `/images/${NAME}/rc-plain`, async () => { await tagFromAnotherProcess(unforced, 'latest') })
  t.match(reply.body, { code: 'SHARED_DIGEST', sharedWith: ['latest'] }, 'without force: SHARED_DIGEST')
  t.equal(await digestOf('latest'), unforced.digest)
})

t.test('with force, a late co-tag the caller may delete goes too, and the record lists it so undo brings it back', async t => {
  const { proxy, gateway } = await gatewayWithProxy(t)
  const image = await pushImage(target, NAME, ['pr-forced'], 'schema2')
  const reply = await deleteWhile(proxy, gateway, `/images/${NAME}/pr-forced?force=true`, async () => { await tagFromAnotherProcess(image, 'pr-forced-too') })
  t.equal(reply.status, 200)
  t.same(reply.body.removedTags, ['pr-forced', 'pr-forced-too'])
  const restored = await gateway.rest('POST', `/deletions/${reply.body.auditId as string}/restore`)
  t.same(restored.body.restoredTags, ['pr-forced', 'pr-forced-too'], 'the restore puts back both')
  t.equal(await digestOf('pr-forced-too'), image.digest)
})
