import { createHash } from 'node:crypto'
import t, { type Test } from 'tap'
import { MockAgent } from 'undici'
import { nextLink, RegistryClient, type TagListLimits } from '../../src/registry/client.js'
import { parseRetryAfter } from '../../src/registry/errors.js'
import { DOCKER_MANIFEST, MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import type { RegistryObserver, RegistryRequestEvent } from '../../src/metrics.js'
import { rejection } from '../fixtures/rejection.js'

// Faults a real distribution registry cannot be made to show: missing or wrong digest headers, pagination,
// 429s, garbage bodies, broken token services.
const ORIGIN = 'http://127.0.0.1:5999'
const manifest = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}')
const digest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`

function setup (t: Test, options: { credentials?: { username: string, password: string }, trusted?: string[], observer?: RegistryObserver, tagList?: TagListLimits } = {}): { mock: MockAgent, pool: ReturnType<MockAgent['get']>, client: RegistryClient } {
  const mock = new MockAgent()
  mock.disableNetConnect()
  const client = new RegistryClient({
    name: 'mocked',
    url: ORIGIN,
    credentials: options.credentials,
    connectTimeoutMs: 100,
    requestTimeoutMs: 1000,
    connections: 2,
    trustedRealmOrigins: options.trusted ?? [],
    dispatcher: mock,
    ...(options.observer === undefined ? {} : { observer: options.observer }),
    ...(options.tagList === undefined ? {} : { tagList: options.tagList })
  })
  t.teardown(async () => { await client.close(); await mock.close() })
  return { mock, pool: mock.get(ORIGIN), client }
}

t.test('no Docker-Content-Digest: GET with the same Accept and hash the raw bytes', async t => {
  const { pool, client } = setup(t)
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } }).reply(200, '', { headers: { 'content-type': DOCKER_MANIFEST } })
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'GET', headers: { accept: MANIFEST_ACCEPT } }).reply(200, manifest, { headers: { 'content-type': DOCKER_MANIFEST } })
  t.same(await client.resolve('app', 'v1'), { digest, mediaType: DOCKER_MANIFEST, size: manifest.length })
})

t.test('a HEAD without content type or length still resolves', async t => {
  const { pool, client } = setup(t)
  pool.intercept({ path: '/v2/app/manifests/bare', method: 'HEAD' }).reply(200, '', { headers: { 'docker-content-digest': digest } })
  const resolved = await client.resolve('app', 'bare')
  t.equal(resolved.digest, digest)
  t.equal(resolved.mediaType, '')
})

t.test('a digest header that does not match the bytes is refused', async t => {
  const { pool, client } = setup(t)
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'GET' }).reply(200, manifest, { headers: { 'docker-content-digest': `sha256:${'0'.repeat(64)}` } })
  const error = await rejection(client.getManifest('app', 'v1'))
  t.equal(error.code, 'UPSTREAM_ERROR')
  t.match(error.detail, /does not match/)
  pool.intercept({ path: `/v2/app/manifests/sha256:${'1'.repeat(64)}`, method: 'GET' }).reply(200, manifest)
  t.equal((await rejection(client.getManifest('app', `sha256:${'1'.repeat(64)}`))).code, 'UPSTREAM_ERROR', 'bytes must hash to the digest asked for')
  pool.intercept({ path: '/v2/app/manifests/v2', method: 'GET' }).reply(200, manifest, { headers: { 'content-type': DOCKER_MANIFEST } })
  t.equal((await client.getManifest('app', 'v2')).digest, digest, 'without a header the hash is the digest')
})

t.test('a huge manifest is cut off, not buffered', async t => {
  const { pool, client } = setup(t)
  pool.intercept({ path: '/v2/app/manifests/big', method: 'GET' }).reply(200, Buffer.alloc(5 * 1024 * 1024, 0x20))
  t.match((await rejection(client.getManifest('app', 'big'))).detail, /larger than 4194304 bytes/)
})

t.test('tag lists follow Link rel=next across pages', async t => {
  const { pool, client } = setup(t)
  pool.intercept({ path: '/v2/app/tags/list', method: 'GET' }).reply(200, { name: 'app', tags: ['a', 'b'] }, { headers: { link: '</v2/app/tags/list?last=b&n=2>; rel="next"' } })
  pool.intercept({ path: '/v2/app/tags/list?last=b&n=2', method: 'GET' }).reply(200, { name: 'app', tags: ['c'] }, { headers: { link: `<${ORIGIN}/v2/app/tags/list?last=c&n=2>; rel=next` } })
  pool.intercept({ path: '/v2/app/tags/list?last=c&n=2', method: 'GET' }).reply(200, { name: 'app', tags: ['d'] }, { headers: { link: '<https://other.example/x>; rel="prev"' } })
  t.same(await client.listTags('app'), ['a', 'b', 'c', 'd'], 'relative and absolute next links on the same origin; a prev link ends nothing early')
  pool.intercept({ path: '/v2/empty/tags/list', method: 'GET' }).reply(200, { name: 'empty', tags: null })
  t.same(await client.listTags('empty'), [])
  pool.intercept({ path: '/v2/junk/tags/list', method: 'GET' }).reply(200, '<html>')
  t.match((await rejection(client.listTags('junk'))).detail, /not JSON/)
})

t.test('a tag list that cannot be completed is refused, never returned in part (issue 10, finding 4)', async t => {
  const reply = (path: string, status: number, body: unknown, link?: string): void => {
    const { pool } = shared
    pool.intercept({ path, method: 'GET' }).reply(status, body as object, link === undefined ? {} : { headers: { link } })
  }
  const shared = setup(t, { tagList: { maxPages: 3, maxBytes: 1024 } })
  const { client } = shared
  const refused = async (repository: string, why: RegExp, message: string): Promise<void> => {
    const error = await rejection(client.listTags(repository))
    t.equal(error.code, 'UPSTREAM_ERROR', message)
    t.match(error.detail, /did not give the whole tag list/, message)
    t.match(error.detail, why, message)
  }
  const next = (repository: string, last: string): string => `</v2/${repository}/tags/list?last=${last}>; rel="next"`
  for (let page = 0; page < 3; page++) reply(`/v2/long/tags/list${page === 0 ? '' : `?last=${page}`}`, 200, { tags: [`t${page}`] }, next('long', String(page + 1)))
  await refused('long', /after 3 pages; raise tagListMaxPages/, 'more pages than the cap')

  reply('/v2/big/tags/list', 200, { tags: ['a'.repeat(600)] }, next('big', 'a'))
  reply('/v2/big/tags/list?last=a', 200, { tags: ['b'.repeat(600)] })
  await refused('big', /larger than 1024 bytes; raise tagListMaxBytes/, 'more bytes than the cap, counted over all pages')

  reply('/v2/loop/tags/list', 200, { tags: ['a'] }, next('loop', 'a'))
  reply('/v2/loop/tags/list?last=a', 200, { tags: ['b'] }, '</v2/loop/tags/list>; rel="next"')
  await refused('loop', /pages loop/, 'a Link back to a page already read')

  reply('/v2/restart/tags/list', 200, { tags: ['a', 'b'] }, next('restart', 'b'))
  reply('/v2/restart/tags/list?last=b', 200, { tags: ['a'] })
  await refused('restart', /"a" came twice/, 'a page that repeats tags of an earlier one')

  for (const status of [404, 500, 429]) {
    reply(`/v2/broken${status}/tags/list`, 200, { tags: ['a'] }, next(`broken${status}`, 'a'))
    reply(`/v2/broken${status}/tags/list?last=a`, status, { errors: [{ code: 'NAME_UNKNOWN' }] })
    const error = await rejection(client.listTags(`broken${status}`))
    t.match(error, { code: 'UPSTREAM_ERROR', extras: { upstreamStatus: status } }, `a later page answering ${status}`)
    t.match(error.detail, /page 2 failed/)
  }
  reply('/v2/gone/tags/list', 404, { errors: [{ code: 'NAME_UNKNOWN' }] })
  t.equal((await rejection(client.listTags('gone'))).code, 'NOT_FOUND', 'the first page still speaks for the repository')

  reply('/v2/elsewhere/tags/list', 200, { tags: ['a'] }, '</v2/other/tags/list?last=a>; rel="next"')
  await refused('elsewhere', /is not this repository's tag list/, 'a next page in another repository')
  reply('/v2/away/tags/list', 200, { tags: ['a'] }, '<https://evil.example/v2/away/tags/list?last=a>; rel="next"')
  await refused('away', /is not this repository's tag list/, 'a next page on another origin')
  reply('/v2/broken-url/tags/list', 200, { tags: ['a'] }, '<http://[::1/v2/broken-url/tags/list>; rel="next"')
  await refused('broken-url', /is not this repository's tag list/, 'a next page URL that does not parse')
  reply('/v2/unreadable/tags/list', 200, { tags: ['a'] }, '/v2/unreadable/tags/list?last=a; rel="next"')
  await refused('unreadable', /announces a next page the gateway cannot read/, 'a Link without <…> still announces more')

  for (const [what, body] of [['JSON null', 'null'], ['tags missing', '{}'], ['tags not a list', '{"tags":"a"}'], ['a tag that is not a string', '{"tags":["a",7]}']]) {
    reply('/v2/odd/tags/list', 200, body)
    t.match((await rejection(client.listTags('odd'))).detail, /not a list of tag names/, what as string)
  }
})

t.test('a tag list whose body breaks off mid-page is a typed transport error', async t => {
  const { createServer } = await import('node:http')
  const server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' })
    response.write('{"tags":["a"')
    setTimeout(() => response.socket?.destroy(), 20)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const client = new RegistryClient({ name: 'cut', url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, connectTimeoutMs: 1000, requestTimeoutMs: 1000, connections: 1, trustedRealmOrigins: [] })
  t.teardown(async () => { await client.close() })
  t.equal((await rejection(client.listTags('app'))).code, 'UPSTREAM_ERROR')
})

t.test('Link parsing', async t => {
  t.equal(nextLink(undefined), undefined)
  t.equal(nextLink('<https://other/x?a=1>; rel="prev", </v2/a/tags/list?last=z>; rel=next'), '/v2/a/tags/list?last=z')
  t.equal(nextLink('garbage'), undefined)
})

t.test('429 carries Retry-After; 5xx and garbage bodies are UPSTREAM_ERROR', async t => {
  const { pool, client } = setup(t)
  pool.intercept({ path: `/v2/app/manifests/${digest}`, method: 'DELETE' }).reply(429, { errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] }, { headers: { 'retry-after': '7' } })
  const limited = await rejection(client.deleteManifest('app', digest))
  t.match(limited, { code: 'RATE_LIMITED', status: 429, retryAfter: 7 })
  pool.intercept({ path: `/v2/app/manifests/${digest}`, method: 'DELETE' }).reply(500, 'not json at all')
  t.match(await rejection(client.deleteManifest('app', digest)), { code: 'UPSTREAM_ERROR', extras: { upstreamStatus: 500 } })
  pool.intercept({ path: `/v2/app/manifests/${digest}`, method: 'DELETE' }).reply(400, { errors: [{ code: 'DIGEST_INVALID', message: 'provided digest did not match uploaded content' }] })
  const invalid = await rejection(client.deleteManifest('app', digest))
  t.match(invalid, { code: 'UPSTREAM_ERROR', extras: { upstreamStatus: 400, upstreamCode: 'DIGEST_INVALID' } })
  t.match(invalid.detail, /provided digest did not match/)
  pool.intercept({ path: `/v2/app/manifests/${digest}`, method: 'DELETE' }).reply(403, { errors: 'not a list' })
  t.match(await rejection(client.deleteManifest('app', digest)), { code: 'UPSTREAM_AUTH_FAILED' })
  pool.intercept({ path: '/v2/app/manifests/x', method: 'PUT' }).reply(201, '', { headers: {} })
  t.equal(await client.putManifest('app', 'x', manifest, DOCKER_MANIFEST), digest, 'a PUT without digest header answers the bytes\' digest')
  pool.intercept({ path: '/v2/app/manifests/y', method: 'PUT' }).reply(400, { errors: [{ code: 'MANIFEST_BLOB_UNKNOWN' }] })
  t.match(await rejection(client.putManifest('app', 'y', manifest, DOCKER_MANIFEST)), { extras: { upstreamCode: 'MANIFEST_BLOB_UNKNOWN' } })
})

t.test('Retry-After as seconds, HTTP date or garbage', async t => {
  t.equal(parseRetryAfter('12'), 12)
  t.equal(parseRetryAfter(undefined), 1)
  t.equal(parseRetryAfter('soon'), 1)
  t.equal(parseRetryAfter(new Date(10_000).toUTCString(), 0), 10)
  t.equal(parseRetryAfter(new Date(0).toUTCString(), 5000), 0)
})

t.test('ping accepts 200 and 401, maps anything else', async t => {
  const { pool, client } = setup(t)
  pool.intercept({ path: '/v2/', method: 'GET' }).reply(401, '')
  await client.ping()
  pool.intercept({ path: '/v2/', method: 'GET' }).reply(503, '')
  t.match(await rejection(client.ping()), { code: 'UPSTREAM_ERROR', extras: { upstreamStatus: 503 } })
})

t.test('token service faults name the realm', async t => {
  const challenge = (realm: string): Record<string, string> => ({ 'www-authenticate': `Bearer realm="${realm}",service="reg",scope="repository:app:pull"` })
  const cases: Array<[string, (mock: MockAgent) => void, RegExp]> = [
    ['ftp://127.0.0.1/token', () => {}, /not an http\(s\) URL/],
    [`${ORIGIN}/down`, (mock) => { mock.get(ORIGIN).intercept({ path: /^\/down/, method: 'GET' }).replyWithError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' })) }, /did not answer \(ECONNREFUSED\)/],
    [`${ORIGIN}/junk`, (mock) => { mock.get(ORIGIN).intercept({ path: /^\/junk/, method: 'GET' }).reply(200, 'junk') }, /not JSON/],
    [`${ORIGIN}/empty`, (mock) => { mock.get(ORIGIN).intercept({ path: /^\/empty/, method: 'GET' }).reply(200, { token: '' }) }, /without a token/],
    [`${ORIGIN}/refuse`, (mock) => { mock.get(ORIGIN).intercept({ path: /^\/refuse/, method: 'GET' }).reply(401, {}) }, /answered 401/]
  ]
  for (const [realm, arrange, expected] of cases) {
    const { mock, pool, client } = setup(t, { credentials: { username: 'u', password: 'secret-password' } })
    pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(401, '', { headers: challenge(realm) })
    arrange(mock)
    const error = await rejection(client.resolve('app', 'v1'))
    t.equal(error.code, 'UPSTREAM_AUTH_FAILED', realm)
    t.match(error.detail, expected, realm)
    t.notMatch(error.detail, /secret-password/)
  }
})

t.test('tokens: access_token accepted, cached until shortly before expires_in, shared by concurrent requests', async t => {
  const lookups: boolean[] = []
  const requests: RegistryRequestEvent[] = []
  const observer = { tokenLookup: (_registry: string, hit: boolean) => { lookups.push(hit) }, request: (event: RegistryRequestEvent) => { requests.push(event) } }
  const { pool, client } = setup(t, { credentials: { username: 'u', password: 'p' }, observer })
  const realm = `${ORIGIN}/token`
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(401, '', { headers: { 'www-authenticate': `Bearer realm="${realm}",service="reg"` } })
  let fetched = 0
  pool.intercept({ path: (path: string) => { const url = new URL(path, ORIGIN); return url.pathname === '/token' && url.searchParams.get('service') === 'reg' && url.searchParams.get('scope') === 'repository:app:pull,delete' }, method: 'GET', headers: { authorization: `Basic ${Buffer.from('u:p').toString('base64')}` } })
    .reply(() => { fetched++; return { statusCode: 200, data: { access_token: 'tok-1', expires_in: 3600 } } }).persist()
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD', headers: { authorization: 'Bearer tok-1' } })
    .reply(200, '', { headers: { 'docker-content-digest': digest, 'content-type': DOCKER_MANIFEST, 'content-length': '10' } }).times(3)
  t.same(await client.resolve('app', 'v1'), { digest, mediaType: DOCKER_MANIFEST, size: 10 })
  await Promise.all([client.resolve('app', 'v1'), client.resolve('app', 'v1')])
  t.equal(fetched, 1, 'one token for all three requests')
  t.same(lookups, [false, true, true], 'one miss, then hits')
  t.same(requests.map(event => `${event.operation} ${event.status}`), ['resolve 401', 'resolve 200', 'resolve 200', 'resolve 200'], 'every registry request is observed')
  t.ok(requests.every(event => event.registry === 'mocked' && event.seconds >= 0))
})

t.test('an unsupported scheme, or a second Basic refusal, fails clearly', async t => {
  const { pool, client } = setup(t, { credentials: { username: 'u', password: 'p' } })
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(401, '', { headers: { 'www-authenticate': 'Negotiate' } })
  t.match((await rejection(client.resolve('app', 'v1'))).detail, /does not support/)
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(401, '', { headers: { 'www-authenticate': 'Basic realm="r"' } }).times(2)
  t.match((await rejection(client.resolve('app', 'v1'))).detail, /rejected the gateway's credentials/)
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD', headers: { authorization: `Basic ${Buffer.from('u:p').toString('base64')}` } }).reply(401, '', { headers: { 'www-authenticate': 'Basic realm="r"' } })
  t.match((await rejection(client.resolve('app', 'v1'))).detail, /rejected the configured username and password/, 'known Basic scheme refused again')
})

t.test('anonymous tokens, challenges without service, default expiry, concurrent first requests', async t => {
  let now = 1_000_000
  const mock = new MockAgent()
  mock.disableNetConnect()
  t.teardown(async () => { await mock.close() })
  const { TokenService } = await import('../../src/registry/auth.js')
  const tokens = new TokenService({ registryName: 'r', registryOrigin: ORIGIN, trustedRealmOrigins: [], dispatcher: mock, timeoutMs: 1000, now: () => now })
  let issued = 0
  mock.get(ORIGIN).intercept({ path: (path: string) => path.startsWith('/anon?scope='), method: 'GET' })
    .reply(() => { issued++; return { statusCode: 200, data: { token: `t${issued}` } } }).persist()
  const realm = `${ORIGIN}/anon`
  t.same(await Promise.all([tokens.token(realm, undefined, ['repository:a:pull']), tokens.token(realm, undefined, ['repository:a:pull'])]), ['t1', 't1'], 'one fetch for two concurrent callers')
  now += 53_000
  t.equal(await tokens.token(realm, undefined, ['repository:a:pull']), 't1', 'still fresh before the 60 s default minus the margin')
  now += 2000
  t.equal(await tokens.token(realm, undefined, ['repository:a:pull']), 't2', 'renewed before it expires')
  tokens.invalidate(realm, undefined, ['repository:a:pull'])
  t.equal(await tokens.token(realm, undefined, ['repository:a:pull']), 't3', 'invalidated tokens are fetched again')
})

t.test('token service answers: non-URL realm, error without code, oversized body', async t => {
  const cases: Array<[string, (mock: MockAgent) => void, RegExp]> = [
    ['not a url', () => {}, /not an http\(s\) URL/],
    [`${ORIGIN}/plain`, (mock) => { mock.get(ORIGIN).intercept({ path: /^\/plain/, method: 'GET' }).replyWithError(new Error('plain')) }, /did not answer \(network error\)/],
    [`${ORIGIN}/huge`, (mock) => { mock.get(ORIGIN).intercept({ path: /^\/huge/, method: 'GET' }).reply(200, Buffer.alloc(70_000, 0x20)) }, /not JSON/]
  ]
  for (const [realm, arrange, expected] of cases) {
    const { mock, pool, client } = setup(t)
    pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(401, '', { headers: { 'www-authenticate': `Bearer realm="${realm}"` } })
    arrange(mock)
    t.match((await rejection(client.resolve('app', 'v1'))).detail, expected, realm)
  }
})

t.test('error mapping details: repeated headers, 405 without Allow, 403 codes, transport errors without a code', async t => {
  const { pool, client } = setup(t)
  pool.intercept({ path: `/v2/app/manifests/${digest}`, method: 'DELETE' }).reply(405, 'Method not allowed')
  const readOnly = await rejection(client.deleteManifest('app', digest))
  t.match(readOnly, { code: 'DELETE_DISABLED', extras: { reason: 'read-only' } })
  t.match(readOnly.detail, /Allow: unknown/)
  pool.intercept({ path: `/v2/app/manifests/${digest}`, method: 'DELETE' }).reply(405, 'Method not allowed', { headers: { allow: ['GET, HEAD', 'OPTIONS'] } })
  t.match((await rejection(client.deleteManifest('app', digest))).detail, /Allow: GET, HEAD\)/, 'the first of repeated headers')
  pool.intercept({ path: `/v2/app/manifests/${digest}`, method: 'DELETE' }).reply(403, { errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] })
  t.match((await rejection(client.deleteManifest('app', digest))).detail, /\(403 DENIED\)/)
  pool.intercept({ path: '/v2/gone/tags/list', method: 'GET' }).reply(404, { errors: [{ code: 'NAME_UNKNOWN' }] })
  const unknown = await rejection(client.listTags('gone'))
  t.match(unknown, { code: 'NOT_FOUND', extras: { upstreamCode: 'NAME_UNKNOWN' } })
  t.match(unknown.detail, /^gone on registry "mocked" does not exist/)
  pool.intercept({ path: `/v2/app/manifests/${digest}`, method: 'HEAD' }).replyWithError(new Error('no code'))
  const failed = await rejection(client.resolve('app', digest))
  t.match(failed, { code: 'UPSTREAM_UNAVAILABLE' })
  t.match(failed.detail, /^registry "mocked" could not be reached for resolve\. /)
})

t.test('challenge headers: absent, repeated, absent on the retry', async t => {
  const { pool, client } = setup(t, { credentials: { username: 'u', password: 'p' } })
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'HEAD' }).reply(401, '')
  t.match((await rejection(client.resolve('app', 'v1'))).detail, /does not support/, 'a 401 without a challenge')
  pool.intercept({ path: '/v2/app/manifests/v2', method: 'HEAD' }).reply(401, '', { headers: { 'www-authenticate': ['Negotiate', 'Basic realm="r"'] } })
  pool.intercept({ path: '/v2/app/manifests/v2', method: 'HEAD' }).reply(401, '')
  t.match((await rejection(client.resolve('app', 'v2'))).detail, /rejected the gateway's credentials/, 'Basic picked from repeated headers; the retry\'s 401 has no challenge')
})

t.test('GET manifest failures and missing content types', async t => {
  const { pool, client } = setup(t)
  pool.intercept({ path: '/v2/app/manifests/v1', method: 'GET' }).reply(404, { errors: [{ code: 'MANIFEST_UNKNOWN' }] })
  t.match(await rejection(client.getManifest('app', 'v1')), { code: 'NOT_FOUND' })
  pool.intercept({ path: '/v2/app/manifests/v2', method: 'GET' }).reply(200, manifest)
  t.same((await client.getManifest('app', 'v2')).mediaType, '')
})

t.test('TLS options reach the pool (insecure skips verification only when asked)', async t => {
  const insecure = new RegistryClient({ name: 'tls', url: 'https://127.0.0.1:1', connectTimeoutMs: 100, requestTimeoutMs: 100, connections: 1, trustedRealmOrigins: [], tls: { insecure: true } })
  t.teardown(async () => { await insecure.close() })
  t.match(await rejection(insecure.ping()), { code: 'UPSTREAM_UNAVAILABLE' }, 'nothing listens there')
})

t.test('the token cache is bounded and forgets expired tokens', async t => {
  let now = 1_000_000
  const mock = new MockAgent()
  mock.disableNetConnect()
  t.teardown(async () => { await mock.close() })
  const { TokenService } = await import('../../src/registry/auth.js')
  const tokens = new TokenService({ registryName: 'r', registryOrigin: ORIGIN, trustedRealmOrigins: [], dispatcher: mock, timeoutMs: 1000, now: () => now, cacheSize: 2 })
  const issued: string[] = []
  mock.get(ORIGIN).intercept({ path: (path: string) => path.startsWith('/anon?scope='), method: 'GET' })
    .reply(({ path }) => {
      const scope = new URL(path, ORIGIN).searchParams.get('scope') as string
      issued.push(scope)
      return { statusCode: 200, data: { token: `t${issued.length}`, expires_in: scope.includes(':short:') ? 10 : 3600 } }
    }).persist()
  const realm = `${ORIGIN}/anon`
  const scope = (repository: string): string[] => [`repository:${repository}:pull`]
  await tokens.token(realm, undefined, scope('a'))
  await tokens.token(realm, undefined, scope('b'))
  await tokens.token(realm, undefined, scope('a'))
  t.equal(issued.length, 2, 'a is still cached')
  await tokens.token(realm, undefined, scope('c'))
  t.equal(tokens.cachedTokens, 2, 'never more than the configured size')
  await tokens.token(realm, undefined, scope('a'))
  t.equal(issued.length, 3, 'a, used more recently than b, survived')
  await tokens.token(realm, undefined, scope('b'))
  t.equal(issued.length, 4, 'b, the least recently used, was evicted')

  const fresh = new TokenService({ registryName: 'r', registryOrigin: ORIGIN, trustedRealmOrigins: [], dispatcher: mock, timeoutMs: 1000, now: () => now })
  await fresh.token(realm, undefined, ['repository:short:pull'])
  await fresh.token(realm, undefined, scope('long'))
  now += 60_000
  t.equal(fresh.cachedTokens, 2)
  await fresh.token(realm, undefined, scope('other'))
  t.equal(fresh.cachedTokens, 2, 'the expired token was dropped when another was stored')
  await fresh.token(realm, undefined, ['repository:short:pull'])
  t.equal(issued.at(-1), 'repository:short:pull', 'an expired token is fetched again')
  t.equal(fresh.cachedTokens, 3)
})
