import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage } from 'node:http'
import { gunzipSync } from 'node:zlib'
import t from 'tap'
import { request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { MEDIA_TYPES, pushBlob, pushImage, tagManifest, type ImageKind } from '../../testing/seed.js'

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'

async function send (method: 'GET' | 'HEAD', url: string, headers: Record<string, string> = {}): Promise<{ status: number, headers: Record<string, unknown>, body: Buffer }> {
  const response = await request(url, { method, headers })
  return { status: response.statusCode, headers: response.headers, body: Buffer.from(await response.body.arrayBuffer()) }
}

function sha256 (bytes: Buffer): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex')
}

const reg = await startRegistry()
t.teardown(() => reg.stop())
const target = { url: reg.url }

const expectedTypes: Record<ImageKind, string> = {
  schema2: MEDIA_TYPES.dockerManifest,
  oci: MEDIA_TYPES.ociManifest,
  'oci-index': MEDIA_TYPES.ociIndex,
  'docker-list': MEDIA_TYPES.dockerList
}

for (const kind of Object.keys(expectedTypes) as ImageKind[]) {
  t.test(`${kind}: HEAD with the full Accept list answers the pushed digest and media type`, async t => {
    const name = `seed/${kind}`
    const image = await pushImage(target, name, ['v1', 'latest'], kind)
    t.equal(image.mediaType, expectedTypes[kind])
    t.equal(image.digest, sha256(image.manifest))
    t.same(image.tags, ['v1', 'latest'])
    for (const tag of image.tags) {
      const head = await send('HEAD', `${reg.url}/v2/${name}/manifests/${tag}`, { accept: ACCEPT })
      t.equal(head.status, 200)
      t.equal(head.headers['docker-content-digest'], image.digest)
      t.equal(head.headers['content-type'], image.mediaType)
    }
    const get = await send('GET', `${reg.url}/v2/${name}/manifests/v1`, { accept: ACCEPT })
    t.ok(get.body.equals(image.manifest), 'the registry serves the exact bytes pushed')
    for (const child of image.children) {
      const head = await send('HEAD', `${reg.url}/v2/${name}/manifests/${child.digest}`, { accept: ACCEPT })
      t.equal(head.headers['content-type'], child.mediaType)
    }
  })
}

t.test('an index or list has an amd64 and an arm64 child of the matching format', async t => {
  const oci = await pushImage(target, 'seed/platforms', ['oci'], 'oci-index')
  const docker = await pushImage(target, 'seed/platforms', ['docker'], 'docker-list')
  t.same(oci.children.map(child => [child.platform, child.mediaType]), [
    [{ os: 'linux', architecture: 'amd64' }, MEDIA_TYPES.ociManifest],
    [{ os: 'linux', architecture: 'arm64' }, MEDIA_TYPES.ociManifest]
  ])
  t.same(docker.children.map(child => child.mediaType), [MEDIA_TYPES.dockerManifest, MEDIA_TYPES.dockerManifest])
  const index = JSON.parse(oci.manifest.toString())
  t.same(index.manifests.map((entry: { digest: string }) => entry.digest), oci.children.map(child => child.digest))
  const single = await pushImage(target, 'seed/platforms', ['single'], 'oci')
  t.same(single.children, [])
})

t.test('every push makes blobs of its own, and the layer is a real gzipped tar', async t => {
  const first = await pushImage(target, 'seed/unique', ['a'], 'schema2')
  const second = await pushImage(target, 'seed/unique', ['b'], 'schema2')
  const blobs = (manifest: Buffer): string[] => {
    const parsed = JSON.parse(manifest.toString())
    return [parsed.config.digest, parsed.layers[0].digest]
  }
  const [config, layer] = blobs(first.manifest)
  t.notSame(blobs(first.manifest), blobs(second.manifest))
  t.not(blobs(first.manifest)[0], blobs(second.manifest)[0])
  t.not(blobs(first.manifest)[1], blobs(second.manifest)[1])
  const tar = gunzipSync((await send('GET', `${reg.url}/v2/seed/unique/blobs/${layer}`)).body)
  t.equal(tar.subarray(0, 8).toString(), 'seed.txt')
  t.equal(tar.subarray(257, 262).toString(), 'ustar')
  const configJson = JSON.parse((await send('GET', `${reg.url}/v2/seed/unique/blobs/${config}`)).body.toString())
  t.same(configJson.rootfs.diff_ids, [sha256(tar)], 'diff_id is the uncompressed tar digest')
})

t.test('no tags pushes the manifest by digest only', async t => {
  const image = await pushImage(target, 'seed/untagged', [], 'oci-index')
  const head = await send('HEAD', `${reg.url}/v2/seed/untagged/manifests/${image.digest}`, { accept: ACCEPT })
  t.equal(head.status, 200)
  // a repository that never had a tag has no tags directory, so 2.8.2 does not know the name at all
  const tags = await send('GET', `${reg.url}/v2/seed/untagged/tags/list`)
  t.equal(tags.status, 404)
  t.equal(JSON.parse(tags.body.toString()).errors[0].code, 'NAME_UNKNOWN')
})

t.test('tagManifest puts the same bytes under another tag', async t => {
  const image = await pushImage(target, 'seed/retag', ['v1'], 'docker-list')
  const digest = await tagManifest(target, 'seed/retag', 'stable', image.manifest, image.mediaType)
  t.equal(digest, image.digest)
  const head = await send('HEAD', `${reg.url}/v2/seed/retag/manifests/stable`, { accept: ACCEPT })
  t.equal(head.headers['docker-content-digest'], image.digest)
  const tags = JSON.parse((await send('GET', `${reg.url}/v2/seed/retag/tags/list`)).body.toString())
  t.same(tags.tags.sort(), ['stable', 'v1'])
})

t.test('pushBlob skips a blob the repository already has', async t => {
  const bytes = Buffer.from(`shared ${Date.now()} ${Math.random()}`)
  t.same(await pushBlob(target, 'seed/blob', bytes), { digest: sha256(bytes), uploaded: true })
  t.same(await pushBlob(target, 'seed/blob', bytes), { digest: sha256(bytes), uploaded: false })
})

t.test('Basic credentials open an htpasswd registry; without them the push fails clearly', async t => {
  const secured = await startRegistry({ htpasswd: { username: 'pusher', password: 'pw' } })
  t.teardown(() => secured.stop())
  const image = await pushImage({ url: secured.url, username: 'pusher', password: 'pw' }, 'seed/auth', ['v1'], 'oci')
  t.match(image.digest, /^sha256:[0-9a-f]{64}$/)
  await t.rejects(pushImage({ url: secured.url }, 'seed/auth', ['v2'], 'oci'), /^HEAD \/v2\/seed\/auth\/blobs\/sha256:[0-9a-f]{64} answered 401: \(no body\)$/)
})

t.test('a non-2xx with a body carries the body in the error', async t => {
  const readOnly = await startRegistry({ readOnly: true })
  t.teardown(() => readOnly.stop())
  await t.rejects(pushImage({ url: readOnly.url }, 'seed/ro', ['v1'], 'schema2'), /^POST \/v2\/seed\/ro\/blobs\/uploads\/ answered 405: Method not allowed$/)
})

t.test('a registry that reports another digest, or none, is refused', async t => {
  const seen: Array<string | undefined> = []
  let reported: string | undefined = 'sha256:' + '0'.repeat(64)
  const fake = createServer((req: IncomingMessage, res) => {
    seen.push(req.headers.authorization)
    req.resume()
    req.on('end', () => {
      res.writeHead(201, reported === undefined ? {} : { 'docker-content-digest': reported })
      res.end()
    })
  })
  await new Promise<void>(resolve => fake.listen(0, '127.0.0.1', resolve))
  t.teardown(() => fake.close())
  const url = `http://127.0.0.1:${(fake.address() as { port: number }).port}`
  const manifest = Buffer.from('{"schemaVersion":2}')
  await t.rejects(tagManifest({ url, username: 'nopass' }, 'seed/fake', 'v1', manifest, MEDIA_TYPES.ociManifest),
    new RegExp(`registry reported digest sha256:0{64}, the bytes hash to ${sha256(manifest)}`))
  reported = undefined
  await t.rejects(tagManifest({ url }, 'seed/fake', 'v1', manifest, MEDIA_TYPES.ociManifest), /registry reported digest undefined/)
  t.same(seen, [`Basic ${Buffer.from('nopass:').toString('base64')}`, undefined], 'a missing password is sent empty')
})
