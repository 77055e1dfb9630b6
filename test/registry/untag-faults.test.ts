import { createHash } from 'node:crypto'
import t, { type Test } from 'tap'
import { MockAgent } from 'undici'
import { RegistryClient, type Manifest } from '../../src/registry/client.js'
import { EMPTY_DESCRIPTOR, KeyedQueue, PLACEHOLDER_ANNOTATION, placeholderManifest, Untagger } from '../../src/registry/untag.js'
import { rejection } from '../fixtures/rejection.js'

// What a real registry cannot be made to do on cue: a DELETE that answers 500 or 429 or drops the connection,
// a tag moved by someone else mid-swap, a registry that cannot say what the tag points at, odd upload answers.
const ORIGIN = 'http://127.0.0.1:5997'
const MANIFEST_TYPE = 'application/vnd.docker.distribution.manifest.v2+json'
const bytes = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}')
const original: Manifest = { digest: sha256(bytes), mediaType: MANIFEST_TYPE, size: bytes.length, bytes }
const OTHER = `sha256:${'e'.repeat(64)}`
const BLOB = `/v2/app/blobs/${EMPTY_DESCRIPTOR.digest}`
const isDigestPath = (path: string): boolean => path.startsWith('/v2/app/manifests/sha256:')

function sha256 (data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}

interface Setup { pool: ReturnType<MockAgent['get']>, client: RegistryClient, placeholder: () => string, puts: Array<{ body: string, type: unknown }> }

function setup (t: Test, client?: (mock: MockAgent) => RegistryClient): Setup {
  const mock = new MockAgent()
  mock.disableNetConnect()
  const registry = client?.(mock) ?? new RegistryClient({ name: 'mocked', url: ORIGIN, connectTimeoutMs: 100, requestTimeoutMs: 1000, connections: 2, trustedRealmOrigins: [], dispatcher: mock })
  t.teardown(async () => { await registry.close(); await mock.close() })
  const pool = mock.get(ORIGIN)
  const puts: Setup['puts'] = []
  let placeholder = ''
  pool.intercept({ path: BLOB, method: 'HEAD' }).reply(200, '')
  // The look under the lock right before the placeholder PUT: the tag is still on the original.
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(200, '', { headers: { 'docker-content-digest': original.digest } })
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'PUT' }).reply(options => {
    placeholder = sha256(String(options.body))
    puts.push({ body: String(options.body), type: (options.headers as Record<string, string>)['content-type'] })
    return { statusCode: 201, data: '' }
  })
  return { pool, client: registry, placeholder: () => placeholder, puts }
}

const request = { repository: 'app', tag: 'v1', original }

t.test('a DELETE that answers 500 but unlinked the placeholder: asked again, the tag is gone, so the untag is done', async t => {
  const { pool, client } = setup(t)
  pool.intercept({ path: isDigestPath, method: 'DELETE' }).reply(500, { errors: [{ code: 'UNKNOWN', message: 'invalid checksum digest format' }] })
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(404, '')
  const result = await new Untagger().untag(client, 'swap', request)
  t.match(result, { strategy: 'swap', requests: 5, recheckedAfter: 'UPSTREAM_ERROR' })
})

t.test('a DELETE that answers 500 and did nothing: the original goes back under the tag, with its own media type', async t => {
  const { pool, client, placeholder, puts } = setup(t)
  pool.intercept({ path: isDigestPath, method: 'DELETE' }).reply(500, '')
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(() => ({ statusCode: 200, data: '', responseOptions: { headers: { 'docker-content-digest': placeholder() } } }))
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'PUT' }).reply(options => {
    puts.push({ body: String(options.body), type: (options.headers as Record<string, string>)['content-type'] })
    return { statusCode: 201, data: '' }
  })
  const error = await rejection(new Untagger().untag(client, 'swap', request))
  t.match(error, { code: 'UPSTREAM_ERROR', extras: { restored: true, upstreamStatus: 500 } })
  t.match(error.detail, /answered 500 to delete.*put back on sha256:/)
  t.equal(error.extras.placeholderDigest, placeholder())
  t.equal(puts.length, 2)
  t.match(JSON.parse(puts[0]?.body as string), { config: EMPTY_DESCRIPTOR, layers: [], annotations: { [PLACEHOLDER_ANNOTATION]: String } })
  t.same(puts[1], { body: bytes.toString(), type: MANIFEST_TYPE }, 'the exact bytes, as the type they were')
})

t.test('a tag moved by someone else during the swap is left alone; a Retry-After survives', async t => {
  const { pool, client, puts } = setup(t)
  pool.intercept({ path: isDigestPath, method: 'DELETE' }).reply(429, '', { headers: { 'retry-after': '7' } })
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(200, '', { headers: { 'docker-content-digest': OTHER } })
  const error = await rejection(new Untagger().untag(client, 'swap', request))
  t.match(error, { code: 'RATE_LIMITED', retryAfter: 7, extras: { restored: false, tagDigest: OTHER } })
  t.match(error.detail, /someone else/)
  t.equal(puts.length, 1, 'nothing was put back over their push')
})

t.test('when the registry cannot say what the tag points at, the original is put back anyway', async t => {
  const { pool, client, puts } = setup(t)
  pool.intercept({ path: isDigestPath, method: 'DELETE' }).replyWithError(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(503, '')
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'PUT' }).reply(503, '')
  const error = await rejection(new Untagger().untag(client, 'swap', request))
  t.match(error, { code: 'UPSTREAM_ERROR', extras: { restored: false } })
  t.match(error.detail, /putting sha256:\w+ back under the tag failed too \(registry "mocked" answered 503.*may point at the placeholder sha256:\w+\. sha256:\w+ is still in the registry, untagged: tag it again/)
  t.equal(puts.length, 1)
})

t.test('an unexpected failure is still recovered from, and reported as an internal error', async t => {
  class Broken extends RegistryClient {
    override async deleteManifest (): Promise<void> { throw new TypeError('a bug') }
  }
  const { pool, client, puts } = setup(t, mock => new Broken({ name: 'mocked', url: ORIGIN, connectTimeoutMs: 100, requestTimeoutMs: 1000, connections: 2, trustedRealmOrigins: [], dispatcher: mock }))
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(500, '')
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'PUT' }).reply(201, '')
  const error = await rejection(new Untagger().untag(client, 'swap', request))
  t.match(error, { code: 'INTERNAL_ERROR', status: 500, extras: { restored: true } })
  t.match(error.detail, /a bug/)
  t.equal(puts.length, 1)
})

t.test('a failed blob check or upload stops the swap before the tag is touched', async t => {
  const cases: Array<{ name: string, arrange: (pool: Setup['pool']) => void, code: string, detail: RegExp }> = [
    { name: 'blob HEAD 500', arrange: pool => { pool.intercept({ path: BLOB, method: 'HEAD' }).reply(500, '') }, code: 'UPSTREAM_ERROR', detail: /answered 500 to check blob/ },
    {
      name: 'upload refused',
      arrange: pool => {
        pool.intercept({ path: BLOB, method: 'HEAD' }).reply(404, '')
        pool.intercept({ path: '/v2/app/blobs/uploads/', method: 'POST' }).reply(403, '')
      },
      code: 'UPSTREAM_AUTH_FAILED',
      detail: /^Untag by swap needs push/
    },
    {
      name: 'no Location',
      arrange: pool => {
        pool.intercept({ path: BLOB, method: 'HEAD' }).reply(404, '')
        pool.intercept({ path: '/v2/app/blobs/uploads/', method: 'POST' }).reply(202, '')
      },
      code: 'UPSTREAM_ERROR',
      detail: /without a Location on its own origin \(got none\)/
    },
    {
      name: 'Location elsewhere',
      arrange: pool => {
        pool.intercept({ path: BLOB, method: 'HEAD' }).reply(404, '')
        pool.intercept({ path: '/v2/app/blobs/uploads/', method: 'POST' }).reply(202, '', { headers: { location: 'https://elsewhere.example/upload/1' } })
      },
      code: 'UPSTREAM_ERROR',
      detail: /got https:\/\/elsewhere\.example\)/
    },
    {
      name: 'upload PUT refused',
      arrange: pool => {
        pool.intercept({ path: BLOB, method: 'HEAD' }).reply(404, '')
        pool.intercept({ path: '/v2/app/blobs/uploads/', method: 'POST' }).reply(202, '', { headers: { location: '/v2/app/blobs/uploads/u1?_state=s' } })
        pool.intercept({ path: `/v2/app/blobs/uploads/u1?_state=s&digest=${encodeURIComponent(EMPTY_DESCRIPTOR.digest)}`, method: 'PUT' }).reply(400, { errors: [{ code: 'DIGEST_INVALID' }] })
      },
      code: 'UPSTREAM_ERROR',
      detail: /answered 400 to upload blob/
    }
  ]
  for (const { name, arrange, code, detail } of cases) {
    const mock = new MockAgent()
    mock.disableNetConnect()
    const client = new RegistryClient({ name: 'mocked', url: ORIGIN, connectTimeoutMs: 100, requestTimeoutMs: 1000, connections: 2, trustedRealmOrigins: [], dispatcher: mock })
    arrange(mock.get(ORIGIN))
    const error = await rejection(new Untagger().untag(client, 'swap', request))
    t.equal(error.code, code, name)
    t.match(error.detail, detail, name)
    t.same(mock.pendingInterceptors(), [], `${name}: every answer used, and no manifest PUT asked for`)
    await client.close()
    await mock.close()
  }
})

t.test('placeholders are unique per call', async t => {
  t.not(sha256(placeholderManifest()), sha256(placeholderManifest()))
  t.same(JSON.parse(placeholderManifest('n').toString()).annotations, { [PLACEHOLDER_ANNOTATION]: 'n' })
})

t.test('the keyed queue runs one at a time per key, survives a failure and forgets idle keys', async t => {
  const queue = new KeyedQueue()
  const order: string[] = []
  const failing = queue.run('k', async () => { order.push('fail'); throw new Error('no') })
  const next = queue.run('k', async () => { order.push('next'); return 1 })
  const other = queue.run('other', async () => { order.push('other'); return 2 })
  t.equal(queue.size, 2)
  await t.rejects(failing, /no/)
  t.equal(await next, 1)
  t.equal(await other, 2)
  t.same(order, ['fail', 'other', 'next'])
  t.equal(queue.size, 0)
})
