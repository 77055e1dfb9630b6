import { execFile } from 'node:child_process'
import { createServer, type IncomingMessage } from 'node:http'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { startRegistry, type RegistryProcess } from '../../testing/registry-process.js'
import { pushBlob, pushImage, tagManifest } from '../../testing/seed.js'
import type { RegistryObserver } from '../../src/metrics.js'
import { RegistryClient, type Manifest } from '../../src/registry/client.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { EMPTY_BLOB, EMPTY_DESCRIPTOR, KeyedQueue, Untagger } from '../../src/registry/untag.js'
import { rejection } from '../fixtures/rejection.js'
import { startTokenIssuer } from '../fixtures/token-issuer.js'

// Against a real distribution 2.8.2: the swap (placeholder PUT, DELETE by digest) must take exactly one tag.

interface Counted { client: RegistryClient, requests: () => number }

function connect (t: Test, url: string, options: { credentials?: { username: string, password: string }, trusted?: string[] } = {}): Counted {
  let requests = 0
  const observer: RegistryObserver = { request: () => { requests++ }, tokenLookup: () => {} }
  const settings = { name: 'default', url, connectTimeoutMs: 2000, requestTimeoutMs: 10_000, connections: 8, trustedRealmOrigins: options.trusted ?? [], observer }
  const client = new RegistryClient(options.credentials === undefined ? settings : { ...settings, credentials: options.credentials })
  t.teardown(async () => { await client.close() })
  return { client, requests: () => requests }
}

async function digestOf (registry: RegistryProcess, name: string, reference: string): Promise<string | undefined> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode === 200 ? response.headers['docker-content-digest'] as string : undefined
}

async function tagsOf (registry: RegistryProcess, name: string): Promise<string[]> {
  const response = await request(`${registry.url}/v2/${name}/tags/list`)
  const body = await response.body.json() as { tags: string[] | null }
  return (body.tags ?? []).sort()
}

async function skopeoRaw (registry: RegistryProcess, name: string, digest: string): Promise<Buffer> {
  const { stdout } = await promisify(execFile)('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.url.replace('http://', '')}/${name}@${digest}`], { encoding: 'buffer' })
  return stdout
}

async function started (t: Test, options: Parameters<typeof startRegistry>[0] = {}): Promise<RegistryProcess> {
  const registry = await startRegistry(options)
  t.teardown(async () => { await registry.stop() })
  return registry
}

t.test('swap: untag of a shared tag keeps every co-tag on its digest, in 2 requests once the blob is known', async t => {
  const registry = await started(t)
  const image = await pushImage({ url: registry.url }, 'app', ['pr-3', 'pr-3-rc', 'latest', 'pr-4'], 'schema2')
  const { client, requests } = connect(t, registry.url)
  const untagger = new Untagger()

  const original = await client.getManifest('app', 'pr-3')
  const before = requests()
  const first = await untagger.untag(client, 'swap', { repository: 'app', tag: 'pr-3', original })
  t.match(first, { strategy: 'swap', requests: 6 }, 'blob HEAD (404), upload POST + PUT, tag HEAD, placeholder PUT, DELETE')
  t.equal(requests() - before, first.requests, 'the count is what the registry saw')
  t.equal(await digestOf(registry, 'app', 'pr-3'), undefined)
  t.same(await tagsOf(registry, 'app'), ['latest', 'pr-3-rc', 'pr-4'])
  for (const tag of ['latest', 'pr-3-rc', 'pr-4']) t.equal(await digestOf(registry, 'app', tag), image.digest, `${tag} keeps its digest`)
  t.equal(await digestOf(registry, 'app', first.placeholderDigest as string), undefined, 'the placeholder is gone')
  t.equal(await digestOf(registry, 'app', image.digest), image.digest, 'the original manifest stays')

  const steady = requests()
  const second = await untagger.untag(client, 'swap', { repository: 'app', tag: 'pr-4', original: await client.getManifest('app', 'pr-4') })
  t.match(second, { strategy: 'swap', requests: 3 }, 'steady state: tag HEAD, placeholder PUT and DELETE')
  t.equal(requests() - steady, 4, 'with the GET of the bytes to restore: 4 requests')
  t.not(second.placeholderDigest, first.placeholderDigest, 'every placeholder is unique')
  t.same(await tagsOf(registry, 'app'), ['latest', 'pr-3-rc'])
})

t.test('swap: untag of a multi-platform tag and of a platform child leaves the index and its children intact', async t => {
  const registry = await started(t)
  const index = await pushImage({ url: registry.url }, 'multi', ['release', 'stable'], 'oci-index')
  const child = index.children[0] as typeof index.children[number]
  const childBytes = await skopeoRaw(registry, 'multi', child.digest)
  await tagManifest({ url: registry.url }, 'multi', 'release-amd64', childBytes, child.mediaType)
  const { client } = connect(t, registry.url)
  const untagger = new Untagger()
  for (const tag of ['release', 'release-amd64']) {
    await untagger.untag(client, 'swap', { repository: 'multi', tag, original: await client.getManifest('multi', tag) })
  }
  t.same(await tagsOf(registry, 'multi'), ['stable'])
  t.equal(await digestOf(registry, 'multi', 'stable'), index.digest)
  t.same(await skopeoRaw(registry, 'multi', index.digest), index.manifest, 'the index is intact')
  for (const platform of index.children) {
    const raw = await skopeoRaw(registry, 'multi', platform.digest)
    t.equal(JSON.parse(raw.toString('utf8')).mediaType, platform.mediaType, `child ${platform.platform.architecture} is still there`)
  }
})

t.test('swap: untag of the last tag leaves the manifest fetchable by digest', async t => {
  const registry = await started(t)
  const image = await pushImage({ url: registry.url }, 'solo', ['only'], 'oci')
  const { client } = connect(t, registry.url)
  await new Untagger().untag(client, 'swap', { repository: 'solo', tag: 'only', original: await client.getManifest('solo', 'only') })
  t.same(await tagsOf(registry, 'solo'), [])
  const kept = await client.getManifest('solo', image.digest)
  t.same(kept.bytes, image.manifest)
})

t.test('swap on a registry with deletion disabled: the original goes back under the tag, 501 DELETE_DISABLED', async t => {
  const registry = await started(t, { deleteEnabled: false })
  const image = await pushImage({ url: registry.url }, 'app', ['v1', 'v1-rc'], 'schema2')
  const { client } = connect(t, registry.url)
  const error = await rejection(new Untagger().untag(client, 'swap', { repository: 'app', tag: 'v1', original: await client.getManifest('app', 'v1') }))
  t.match(error, { code: 'DELETE_DISABLED', status: 501, extras: { restored: true, upstreamStatus: 405, reason: 'delete-disabled' } })
  t.match(error.detail, /storage\.delete\.enabled.*put back on sha256:/)
  t.equal(await digestOf(registry, 'app', 'v1'), image.digest, 'the tag is on the original, not the placeholder')
  t.same(await tagsOf(registry, 'app'), ['v1', 'v1-rc'])
})

t.test('50 concurrent untags of 50 tags of one digest all succeed and leave the other tags', async t => {
  const registry = await started(t)
  const tags = Array.from({ length: 52 }, (_, index) => `t-${index}`)
  const image = await pushImage({ url: registry.url }, 'many', tags, 'oci')
  const { client } = connect(t, registry.url)
  const original = await client.getManifest('many', 't-0')
  const lock = new KeyedQueue()
  const untagger = new Untagger({ lock })
  const results = await Promise.allSettled(tags.slice(0, 50).map(async tag => await untagger.untag(client, 'swap', { repository: 'many', tag, original })))
  t.same(results.filter(result => result.status === 'rejected'), [], 'every untag succeeded')
  t.same(await tagsOf(registry, 'many'), ['t-50', 't-51'])
  for (const tag of tags) t.equal(await digestOf(registry, 'many', tag), tag === 't-50' || tag === 't-51' ? image.digest : undefined, `${tag} resolves as it should`)
  t.equal(lock.size, 0, 'the lock forgets idle repositories')
})

t.test('the remembered blob: forgotten when the registry lost it, and only so many repositories remembered', async t => {
  const registry = await started(t)
  for (const name of ['a', 'b']) await pushImage({ url: registry.url }, name, ['x', 'y', 'z'], 'oci')
  const { client } = connect(t, registry.url)
  const untagger = new Untagger({ blobCacheSize: 1 })
  const untag = async (repository: string, tag: string): Promise<number> =>
    (await untagger.untag(client, 'swap', { repository, tag, original: await client.getManifest(repository, tag) })).requests

  t.equal(await untag('a', 'x'), 6, 'a: the blob is uploaded')
  // What garbage collection does once no placeholder references the blob.
  const unlinked = await request(`${registry.url}/v2/a/blobs/${EMPTY_DESCRIPTOR.digest}`, { method: 'DELETE' })
  await unlinked.body.dump()
  t.equal(unlinked.statusCode, 202)
  t.equal(await untag('a', 'y'), 7, 'a: the PUT is refused for the missing blob, which is checked, uploaded again, and the PUT repeated')
  t.equal(await untag('b', 'x'), 6, 'b: blobs belong to a repository, so b gets its own')
  t.equal(await untag('a', 'z'), 4, 'a was forgotten to make room for b: checked again')
  t.same(await tagsOf(registry, 'a'), [])
  t.same(await tagsOf(registry, 'b'), ['y', 'z'])
})

t.test('native on distribution 2.8.2: DELETE by tag is refused with 400, the tag stays, and the error says to use swap', async t => {
  const registry = await started(t)
  const image = await pushImage({ url: registry.url }, 'app', ['v1'], 'oci')
  const { client } = connect(t, registry.url)
  const original = await client.getManifest('app', 'v1')
  const error = await rejection(new Untagger().untag(client, 'native', { repository: 'app', tag: 'v1', original }))
  t.match(error, { code: 'UPSTREAM_ERROR', extras: { upstreamStatus: 400, upstreamCode: 'DIGEST_INVALID' } })
  t.match(error.detail, /untagStrategy: swap/)
  t.equal(await digestOf(registry, 'app', 'v1'), image.digest)
})

t.test('native: the tag is looked at under the lock, then exactly one DELETE by tag', async t => {
  // No packaged registry here untags with DELETE by tag (distribution 2.8.2 answers 400), so this small
  // in-test server plays a registry that does, as distribution 3.x and zot do.
  const seen: Array<{ method: string, url: string }> = []
  let answer: { status: number, body: string } = { status: 202, body: '' }
  let tagDigest = `sha256:${'0'.repeat(64)}`
  const server = createServer((req: IncomingMessage, res) => {
    seen.push({ method: req.method as string, url: req.url as string })
    if (req.method === 'HEAD') return res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': tagDigest }).end()
    res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) })
  const { client } = connect(t, `http://127.0.0.1:${(server.address() as { port: number }).port}`)
  const original: Manifest = { digest: `sha256:${'0'.repeat(64)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 2, bytes: Buffer.from('{}') }
  const untagger = new Untagger()

  t.same(await untagger.untag(client, 'native', { repository: 'team/app', tag: 'pr-3', original }), { strategy: 'native', requests: 2 })
  t.same(seen, [{ method: 'HEAD', url: '/v2/team/app/manifests/pr-3' }, { method: 'DELETE', url: '/v2/team/app/manifests/pr-3' }])

  answer = { status: 405, body: '{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}' }
  t.match(await rejection(untagger.untag(client, 'native', { repository: 'team/app', tag: 'pr-3', original })), { code: 'DELETE_DISABLED', status: 501 })
  t.equal(seen.length, 4, 'never probed, never retried')

  tagDigest = `sha256:${'1'.repeat(64)}`
  const moved = await rejection(untagger.untag(client, 'native', { repository: 'team/app', tag: 'pr-3', original }))
  t.match(moved, { code: 'PLAN_STALE', status: 409, extras: { digest: tagDigest, plannedDigest: original.digest } })
  t.match(moved.detail, new RegExp(`team/app:pr-3 moved to ${tagDigest}.*nothing was changed`))
  t.same(seen.slice(4), [{ method: 'HEAD', url: '/v2/team/app/manifests/pr-3' }], 'a tag pushed since the plan is never deleted')
})

t.test('swap: a tag pushed since the untag was planned is refused with PLAN_STALE before the placeholder PUT', async t => {
  const registry = await started(t)
  const first = await pushImage({ url: registry.url }, 'moved', ['m', 'm-rc'], 'schema2')
  const { client, requests } = connect(t, registry.url)
  const original = await client.getManifest('moved', 'm')
  const second = await pushImage({ url: registry.url }, 'moved', ['m'], 'oci')
  const before = requests()
  const error = await rejection(new Untagger().untag(client, 'swap', { repository: 'moved', tag: 'm', original }))
  t.match(error, { code: 'PLAN_STALE', status: 409, extras: { digest: second.digest, plannedDigest: first.digest } })
  t.match(error.detail, new RegExp(`moved:m moved to ${second.digest} after the untag was planned for ${first.digest}; nothing was changed`))
  t.equal(requests() - before, 4, 'blob HEAD (404), upload POST + PUT, tag HEAD: no manifest PUT or DELETE')
  t.equal(await digestOf(registry, 'moved', 'm'), second.digest, 'the new push keeps the tag')
  t.equal(await digestOf(registry, 'moved', 'm-rc'), first.digest)
})

t.test('token auth: the swap asks for one pull,push,delete token; without push it is UPSTREAM_AUTH_FAILED saying so', async t => {
  const issuer = await startTokenIssuer({
    users: { gateway: 'token-password', puller: 'puller-password' },
    grant: (user, _repository, asked) => user === 'gateway' ? asked : asked.filter(action => action !== 'push')
  })
  t.teardown(async () => { await issuer.close() })
  const seeded = await startRegistry()
  const images = {
    fresh: await pushImage({ url: seeded.url }, 'fresh', ['a', 'b'], 'oci'),
    known: await pushImage({ url: seeded.url }, 'known', ['a', 'b'], 'oci')
  }
  await pushBlob({ url: seeded.url }, 'known', EMPTY_BLOB)
  await seeded.stop({ keepData: true })
  const registry = await started(t, { dataDir: seeded.dataDir, token: { realm: issuer.realm, service: issuer.service, issuer: issuer.issuer, rootCertBundle: issuer.certPath } })
  const trusted = [new URL(issuer.realm).origin]

  const puller = connect(t, registry.url, { credentials: { username: 'puller', password: 'puller-password' }, trusted }).client
  const untagger = new Untagger()
  for (const name of ['fresh', 'known'] as const) {
    const original = await puller.getManifest(name, 'a')
    const error = await rejection(untagger.untag(puller, 'swap', { repository: name, tag: 'a', original }))
    t.equal(error.code, 'UPSTREAM_AUTH_FAILED', `${name}: refused`)
    t.match(error.detail, /^Untag by swap needs push/, `${name}: the detail says untag needs push`)
    t.notMatch(error.detail, /puller-password/)
    const response = await request(`${registry.url}/v2/${name}/tags/list`)
    t.equal(response.statusCode, 401, 'the registry itself needs a token to list')
    await response.body.dump()
  }
  t.equal((await puller.resolve('known', 'a', 'pull')).digest, images.known.digest, 'the refused PUT left the tag on its image')

  const gateway = connect(t, registry.url, { credentials: { username: 'gateway', password: 'token-password' }, trusted }).client
  issuer.requests.length = 0
  await untagger.untag(gateway, 'swap', { repository: 'fresh', tag: 'a', original: await gateway.getManifest('fresh', 'a', 'pull,push,delete') })
  t.same(issuer.requests.map(request => request.scope), [['repository:fresh:pull,push,delete']], 'one token for the whole swap')
  t.equal((await gateway.resolve('fresh', 'b', 'pull,push,delete')).digest, images.fresh.digest)
  await t.rejects(gateway.resolve('fresh', 'a', 'pull,push,delete'), { code: 'NOT_FOUND' })
})
