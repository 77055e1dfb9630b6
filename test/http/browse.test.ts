import { createHash } from 'node:crypto'
import t, { type Test } from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { startGateway } from '../fixtures/gateway.js'
import { BROWSE_POLICY, KEYS, pushLabelledImage } from '../fixtures/browse.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
// Every upstream request goes through the proxy, which counts them and can garble answers.
const proxy = await startFaultProxy(registry.url)
t.teardown(async () => { await proxy.close() })
const gateway = await startGateway(t, {
  registries: { default: { url: proxy.url } },
  policy: BROWSE_POLICY,
  config: { browse: { catalogPageSize: 2, catalogPagesPerRequest: 3, pagesPerCaller: 1 } }
})

const shared = await pushImage(target, 'browse/app', ['v1', 'v2'], 'schema2')
const latest = await pushImage(target, 'browse/app', ['latest'], 'schema2')
const multi = await pushImage(target, 'browse/app', ['multi'], 'oci-index')
const preview = await pushImage(target, 'browse/app', ['pr-1'], 'oci')
const labelled = await pushLabelledImage(target, 'browse/labelled', 'v1.0.0', { 'org.opencontainers.image.source': 'https://example.com/app', team: 'a' })
for (const name of ['browse/other', 'browse/third', 'secret/app', 'zzz/last', 'zzz/more']) await pushImage(target, name, ['v1'], 'schema2')
const ALL = ['browse/app', 'browse/labelled', 'browse/other', 'browse/third', 'secret/app', 'zzz/last', 'zzz/more']

const upstream = (pattern: RegExp): number => proxy.requests.filter(request => pattern.test(request.path)).length
const get = async (url: string, key: string | null = KEYS.admin): ReturnType<typeof gateway.rest> => await gateway.rest('GET', url, { key })

async function allRepositories (t: Test, query: string, key: string): Promise<{ names: string[], pages: number }> {
  const names: string[] = []
  let cursor: string | undefined
  let pages = 0
  do {
    const reply = await get(`/repositories?${query}${cursor === undefined ? '' : `&cursor=${cursor}`}`, key)
    t.equal(reply.status, 200)
    names.push(...reply.body.items.map((item: { name: string }) => item.name))
    cursor = reply.body.nextCursor
    pages++
  } while (cursor !== undefined && pages < 20)
  return { names, pages }
}

t.test('the catalog, several upstream pages per request, at most catalogPagesPerRequest of them', async t => {
  const before = upstream(/^\/v2\/_catalog/)
  const first = await get('/repositories?limit=100')
  t.equal(upstream(/^\/v2\/_catalog/) - before, 3, 'three catalog requests of two names each, then a cursor')
  t.same(first.body.items.map((item: { name: string }) => item.name), ALL.slice(0, 6))
  t.type(first.body.nextCursor, 'string', 'the page ends early, with a cursor')
  t.equal(first.body.registry, 'default')
  const all = await allRepositories(t, 'limit=100', KEYS.admin)
  t.same(all.names, ALL, 'every repository once, in order, across pages')
  const small = await allRepositories(t, 'limit=4', KEYS.admin)
  t.same(small.names, ALL)
  t.equal(small.pages, 2, 'a cursor in the middle of an upstream page continues there')
})

t.test('the catalog shows only repositories the caller may read, and a prefix narrows it', async t => {
  t.same((await allRepositories(t, 'limit=100', KEYS.reader)).names, ALL.filter(name => name.startsWith('browse/')))
  t.same((await allRepositories(t, 'limit=100', KEYS.stable)).names, ['browse/app'])
  const cut = await get('/repositories?limit=100', KEYS.reader)
  t.type(cut.body.nextCursor, 'string', 'the catalog requests ran out after zzz/last, which the reader may not see')
  const opened = Buffer.from(cut.body.nextCursor as string, 'base64url').toString('latin1')
  t.notMatch(opened, /zzz|secret/, 'the cursor does not show where it stopped')
  const tampered = `${(cut.body.nextCursor as string).slice(0, -2)}${(cut.body.nextCursor as string).endsWith('AA') ? 'BB' : 'AA'}`
  t.equal((await get(`/repositories?limit=100&cursor=${tampered}`, KEYS.reader)).body.field, 'cursor', 'a sealed cursor changed in any byte is refused')
  t.same((await allRepositories(t, 'limit=100&prefix=browse/', KEYS.admin)).names, ALL.filter(name => name.startsWith('browse/')))
  const before = upstream(/^\/v2\/_catalog/)
  t.same((await allRepositories(t, 'limit=100&prefix=secret', KEYS.admin)).names, ['secret/app'])
  t.ok(proxy.requests.filter(request => request.path.startsWith('/v2/_catalog')).slice(before).every(request => request.path.includes('last=secre')),
    'starts just before the prefix')
  t.same((await allRepositories(t, 'limit=100&prefix=s', KEYS.admin)).names, ['secret/app'], 'a one-character prefix starts at the beginning')
  t.same((await allRepositories(t, 'limit=100&prefix=nothing', KEYS.admin)).names, [])
  const exact = await get('/repositories?prefix=zzz&limit=2')
  t.same(exact.body, { registry: 'default', items: [{ name: 'zzz/last' }, { name: 'zzz/more' }] }, 'a page that ends with the catalog has no cursor')
  const secret = await get('/repositories?prefix=secret&limit=1')
  t.same(secret.body, { registry: 'default', items: [{ name: 'secret/app' }] }, 'a full page whose next name is past the prefix has no cursor')
  const beforeBrowse = upstream(/^\/v2\/_catalog/)
  const browse = await allRepositories(t, 'limit=4&prefix=browse/', KEYS.admin)
  t.same(browse.names, ALL.filter(name => name.startsWith('browse/')))
  t.equal(browse.pages, 2)
  t.equal(upstream(/^\/v2\/_catalog/) - beforeBrowse, 3, 'a page continued past the prefix stops at the first name beyond it, not at the request bound')
})

t.test('refusals: no identity, no read anywhere, bad input, forged cursors; none reaches the registry', async t => {
  const before = proxy.requests.length
  t.equal((await get('/repositories', null)).status, 401)
  const denied = await gateway.rest('GET', '/repositories', { key: KEYS.nobody, headers: { 'x-request-id': 'client-42' } })
  t.equal(denied.status, 403)
  t.match(denied.body, { code: 'FORBIDDEN', action: 'read', registry: 'default', subject: 'apikey:nobody' })
  t.match(denied.body.detail, /apikey:nobody may not read the catalog of registry default: subject apikey:nobody has no role/)
  const refusals: Array<[string, string]> = [
    ['/repositories?limit=0', 'limit'],
    ['/repositories?limit=101', 'limit'],
    ['/repositories?prefix=Team', 'prefix'],
    ['/repositories?unknown=1', 'unknown'],
    ['/repositories?cursor=forged', 'cursor'],
    [`/repositories?cursor=${Buffer.from(JSON.stringify(['catalog', 'default', '', 'Not A Name'])).toString('base64url')}`, 'cursor'],
    ['/repositories?registry=elsewhere', 'registry']
  ]
  for (const [url, field] of refusals) {
    const reply = await get(url)
    t.equal(reply.status, 400, url)
    t.equal(reply.body.field, field, url)
    t.type(reply.body.rule, 'string', url)
  }
  const prefixed = await get('/repositories?prefix=browse/&limit=1')
  const reused = await get(`/repositories?prefix=zzz&cursor=${prefixed.body.nextCursor as string}`)
  t.equal(reused.status, 400, 'a cursor of another listing is refused')
  t.equal(reused.body.field, 'cursor')
  t.equal(proxy.requests.length - before, 1, 'only the page that handed out the cursor asked the registry')
  const audit = await get('/audit?action=read&outcome=denied')
  t.match(audit.body.items, [{ subject: 'apikey:nobody', action: 'read', outcome: 'denied', name: '', tag: '', errorCode: 'FORBIDDEN', clientRequestId: 'client-42' }],
    'the denial is audited')
})

t.test('a catalog page the gateway cannot trust is refused whole', async t => {
  const answers: Array<[string, Record<string, string>, string]> = [
    ['not json', {}, 'not JSON'],
    ['{"repositories":[1]}', {}, 'not a list of repository names'],
    ['null', {}, 'not a list of repository names'],
    ['{"repositories":["a"]}', { link: '<http://[oops>; rel="next"' }, 'not its catalog'],
    ['{"repositories":["Bad_Name"]}', {}, 'not a repository name'],
    ['{"repositories":["a"]}', { link: '<http://elsewhere.example/v2/_catalog?last=a>; rel="next"' }, 'not its catalog'],
    ['{"repositories":["a"]}', { link: '</v2/_catalog?last=a; rel="next"' }, 'cannot read'],
    ['{"repositories":[]}', { link: '</v2/_catalog?last=a&n=2>; rel="next"' }, 'nothing new']
  ]
  for (const [body, headers, why] of answers) {
    const remove = proxy.fault({ path: /^\/v2\/_catalog/, action: { kind: 'respond', status: 200, headers: { 'content-type': 'application/json', ...headers }, body } })
    const reply = await get('/repositories')
    remove()
    t.equal(reply.status, 502, why)
    t.equal(reply.body.code, 'UPSTREAM_ERROR', why)
    t.match(reply.body.detail, why)
  }
  const remove = proxy.fault({ path: /^\/v2\/_catalog/, action: { kind: 'respond', status: 500, body: '' } })
  const failed = await get('/repositories')
  remove()
  t.equal(failed.status, 502)
  const removeCatalog = proxy.fault({ path: /^\/v2\/_catalog/, action: { kind: 'respond', status: 404, body: '404 page not found' } })
  const noCatalog = await get('/repositories')
  removeCatalog()
  t.match(noCatalog.body, { status: 502, code: 'UPSTREAM_ERROR', upstreamStatus: 404, detail: /does not serve a catalog/ }, 'a registry without a catalog is not a missing repository')
})

t.test('a page of tags: digests, co-tags, platforms, size, protected, and what the caller may do', async t => {
  const reply = await get('/images/browse%2Fapp?limit=100', KEYS.cleaner)
  t.equal(reply.status, 200)
  t.same(reply.body.items.map((item: { tag: string }) => item.tag), ['latest', 'multi', 'pr-1', 'v1', 'v2'])
  const byTag = Object.fromEntries(reply.body.items.map((item: { tag: string }) => [item.tag, item]))
  t.match(byTag.v1, { digest: shared.digest, mediaType: shared.mediaType, coTags: ['v2'], protected: false })
  t.type(byTag.v1.size, 'number')
  t.same(byTag.v2.coTags, ['v1'])
  t.match(byTag.latest, { digest: latest.digest, protected: true, coTags: [] })
  t.match(byTag.latest.actions.delete, { allowed: false, reason: /protected/ })
  t.same(byTag.multi.platforms, multi.children.map(child => ({ ...child.platform, digest: child.digest })))
  t.equal(byTag.multi.size, undefined)
  t.match(byTag['pr-1'], { digest: preview.digest, actions: { delete: { allowed: true } } })
  t.equal(byTag['pr-1'].actions.delete.reason, undefined)
  t.match(byTag['pr-1'].actions.force, { allowed: false, reason: /no rule of roles \[reader, cleaner\] allows force/ })
  t.match(byTag.v1.actions.delete, { allowed: false, reason: /on tag v1 of browse\/app/ })
  const admin = await get('/images/browse%2Fapp?limit=100')
  t.same(admin.body.items.find((item: { tag: string }) => item.tag === 'v1').actions, { delete: { allowed: true }, force: { allowed: true }, restore: { allowed: true } })
})

t.test('tags a page at a time; co-tags are those within the page; tags the caller may not read are left out', async t => {
  const first = await get('/images/browse%2Fapp?limit=4')
  t.same(first.body.items.map((item: { tag: string }) => item.tag), ['latest', 'multi', 'pr-1', 'v1'])
  t.same(first.body.items[3].coTags, [], 'v2 is on the next page')
  const second = await get(`/images/browse%2Fapp?limit=4&cursor=${first.body.nextCursor as string}`)
  t.same(second.body.items.map((item: { tag: string }) => item.tag), ['v2'])
  t.equal(second.body.nextCursor, undefined)
  const stable = await get('/images/browse%2Fapp', KEYS.stable)
  t.same(stable.body.items.map((item: { tag: string }) => item.tag), ['v1', 'v2'])
  const other = await get(`/images/browse%2Fother?cursor=${first.body.nextCursor as string}`)
  t.equal(other.status, 400, 'a cursor of another repository is refused')
})

t.test('a warm page asks the registry for the tag list only; manifests are cached by digest', async t => {
  const before = proxy.requests.length
  const reply = await get('/images/browse%2Fapp?limit=100', KEYS.reader)
  t.equal(reply.status, 200)
  t.same(proxy.requests.slice(before).map(request => request.path), ['/v2/browse/app/tags/list'])
})

t.test('one tag in detail: size of the layers, created and labels from the config', async t => {
  const before = proxy.requests.length
  const reply = await get('/images/browse/labelled/v1.0.0', KEYS.reader)
  t.equal(reply.status, 200)
  t.same(reply.body, {
    registry: 'default',
    name: 'browse/labelled',
    tag: 'v1.0.0',
    digest: labelled.digest,
    mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
    size: labelled.layersSize,
    created: labelled.created,
    labels: [{ name: 'org.opencontainers.image.source', value: 'https://example.com/app' }, { name: 'team', value: 'a' }],
    protected: false,
    actions: {
      delete: { allowed: false, reason: 'apikey:reader may not delete browse/labelled:v1.0.0 in registry default: no rule of roles [reader] allows delete' },
      force: { allowed: false, reason: 'apikey:reader may not force browse/labelled:v1.0.0 in registry default: no rule of roles [reader] allows force' },
      restore: { allowed: false, reason: 'apikey:reader may not restore browse/labelled:v1.0.0 in registry default: no rule of roles [reader] allows restore' }
    }
  })
  t.same(proxy.requests.slice(before).map(request => request.method), ['GET', 'GET'], 'the manifest by tag, then the config')
  const again = await get('/images/browse%2Flabelled/v1.0.0', KEYS.reader)
  t.same(again.body, reply.body)
  t.same(proxy.requests.slice(before + 2).map(request => `${request.method} ${request.path}`), ['GET /v2/browse/labelled/manifests/v1.0.0'],
    'the tag is resolved again; the config comes from the cache')
  const index = await get('/images/browse/app/multi')
  t.same(index.body.platforms.map((platform: { architecture: string }) => platform.architecture), ['amd64', 'arm64'])
  t.equal(index.body.size, undefined)
  t.equal(index.body.labels, undefined)
})

t.test('tag refusals: read denied (audited), bad input before any upstream call, unknown tags and repositories', async t => {
  const before = proxy.requests.length
  const denied = await get('/images/secret/app/v1', KEYS.reader)
  t.equal(denied.status, 403)
  t.match(denied.body, { code: 'FORBIDDEN', action: 'read', repository: 'secret/app', tag: 'v1' })
  t.match(denied.body.detail, /apikey:reader may not read secret\/app:v1 in registry default: no rule of roles \[reader\] allows read on repository secret\/app/)
  const deniedList = await get('/images/secret%2Fapp', KEYS.reader)
  t.equal(deniedList.status, 403)
  t.match(deniedList.body.detail, /may not read secret\/app in registry default: no rule of roles \[reader\] allows read on repository secret\/app/)
  t.equal((await get('/images/browse%2Fapp/latest', KEYS.stable)).status, 403, 'a tag outside the caller\'s tags')
  t.equal((await get('/images/browse%2Fapp', null)).status, 401)
  for (const [url, field] of [['/images/Bad_Name', 'name'], ['/images/browse%2Fapp/-bad', 'tag'], ['/images/browse%2Fapp?limit=1000', 'limit'], ['/images/app/v1?limit=1', 'limit']]) {
    const reply = await get(url as string)
    t.equal(reply.status, 400, url)
    t.equal(reply.body.field, field, url)
  }
  t.equal(proxy.requests.length - before, 0, 'nothing reached the registry')
  const audit = await get('/audit?action=read&name=secret/app')
  t.same(audit.body.items.map((item: { tag: string }) => item.tag).sort(), ['', 'v1'])
  t.equal((await get('/images/browse%2Fmissing')).body.code, 'NOT_FOUND')
  const longest = `${'a'.repeat(127)}/${'b'.repeat(127)}`
  t.equal((await get(`/images/${encodeURIComponent(longest)}`)).body.code, 'NOT_FOUND', 'a 255-character name, %2F and all, is one segment')
  t.match((await get(`/images/${'a'.repeat(256)}`)).body, { status: 400, field: 'name' })
  t.equal((await get('/images/browse/app/missing')).status, 404)
})

t.test('manifests and configs the registry garbles are refused, not shown', async t => {
  await pushImage(target, 'browse/garbled', ['one'], 'schema2')
  const remove = proxy.fault({ method: 'GET', path: '/v2/browse/garbled/manifests/one', action: { kind: 'corrupt-digest' } })
  const page = await get('/images/browse%2Fgarbled')
  remove()
  t.equal(page.status, 502)
  t.match(page.body.detail, /does not match/)
  const config = await pushLabelledImage(target, 'browse/garbled', 'two', {})
  t.ok(config.digest)
  const removeBlob = proxy.fault({ method: 'GET', path: /^\/v2\/browse\/garbled\/blobs\//, action: { kind: 'respond', status: 200, body: '{"created":"forged"}' } })
  const detail = await get('/images/browse/garbled/two')
  removeBlob()
  t.equal(detail.status, 502)
  t.match(detail.body.detail, /do not hash to that digest/)
  const missing = proxy.fault({ method: 'GET', path: /^\/v2\/browse\/garbled\/blobs\//, action: { kind: 'respond', status: 404, body: '' } })
  t.equal((await get('/images/browse/garbled/two')).status, 404)
  missing()
  t.equal((await get('/images/browse/garbled/two')).body.created, config.created, 'answers again once the registry does')
})

t.test('a tag gone between listing and fetching is left out; a manifest kind without config or layers shows digest and type', async t => {
  const odd = Buffer.from('{"schemaVersion":1,"name":"browse/odd","tag":"x","fsLayers":[]}')
  const digest = `sha256:${createHash('sha256').update(odd).digest('hex')}`
  const schema1 = 'application/vnd.docker.distribution.manifest.v1+prettyjws'
  const removers = [
    proxy.fault({ path: '/v2/browse/odd/tags/list', action: { kind: 'respond', status: 200, headers: { 'content-type': 'application/json' }, body: '{"tags":["x","ghost"]}' } }),
    proxy.fault({ path: '/v2/browse/odd/manifests/ghost', action: { kind: 'respond', status: 404, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"MANIFEST_UNKNOWN"}]}' } }),
    proxy.fault({ method: 'GET', path: '/v2/browse/odd/manifests/x', action: { kind: 'respond', status: 200, headers: { 'content-type': schema1 }, body: odd } })
  ]
  t.teardown(() => { for (const remove of removers) remove() })
  const page = await get('/images/browse%2Fodd')
  t.same(page.body.items.map((item: { tag: string, digest: string, mediaType: string, size?: number }) => [item.tag, item.digest, item.mediaType, item.size]), [['x', digest, schema1, undefined]])
  const detail = await get('/images/browse/odd/x')
  t.match(detail.body, { tag: 'x', digest, mediaType: schema1 })
  t.equal(detail.body.size, undefined)
  t.equal(detail.body.created, undefined)
})

t.test('pages in flight per caller are bounded: one more is 429 at once, other callers go on', async t => {
  let release!: () => void
  const held = new Promise<void>(resolve => { release = resolve })
  const seen = proxy.requests.length
  proxy.fault({ method: 'GET', path: '/v2/browse/app/tags/list', action: { kind: 'hold', release: held }, times: 1 })
  const slow = get('/images/browse%2Fapp', KEYS.reader)
  await proxy.waitFor(entry => proxy.requests.indexOf(entry) >= seen && entry.action === 'hold')
  for (const url of ['/images/browse%2Fother', '/repositories']) {
    const refused = await get(url, KEYS.reader)
    t.equal(refused.status, 429, url)
    t.match(refused.body, { code: 'RATE_LIMITED', retryAfter: 1, detail: /apikey:reader already has 1 pages .*browse.pagesPerCaller/ }, url)
    t.equal(refused.headers['retry-after'], '1')
  }
  t.equal((await get('/images/browse%2Fother', KEYS.cleaner)).status, 200, 'another caller is not held up')
  release()
  t.equal((await slow).status, 200)
  t.equal((await get('/images/browse%2Fother', KEYS.reader)).status, 200, 'the slot is given back')
})

t.test('two gateways with one browse.cursorSecret continue each other\'s catalog pages (replicas behind a load balancer)', async t => {
  const secret = 'browse-cursor-secret-shared-by-replicas-0001'
  const config = { browse: { catalogPageSize: 2, catalogPagesPerRequest: 1, cursorSecret: secret } }
  const [one, two] = [
    await startGateway(t, { registries: { default: { url: registry.url } }, policy: BROWSE_POLICY, config }),
    await startGateway(t, { registries: { default: { url: registry.url } }, policy: BROWSE_POLICY, config })
  ]
  const { names: everything } = await allRepositories(t, 'limit=100', KEYS.admin)
  const first = await one.rest('GET', '/repositories?limit=100', { key: KEYS.admin })
  t.same(first.body.items.map((item: { name: string }) => item.name), everything.slice(0, 2))
  const next = await two.rest('GET', `/repositories?limit=100&cursor=${first.body.nextCursor as string}`, { key: KEYS.admin })
  t.equal(next.status, 200)
  t.same(next.body.items.map((item: { name: string }) => item.name), everything.slice(2, 4), 'the other replica continues where the first stopped')
  const stranger = await gateway.rest('GET', `/repositories?limit=100&cursor=${first.body.nextCursor as string}`, { key: KEYS.admin })
  t.match(stranger, { status: 400, body: { code: 'INVALID_REQUEST', field: 'cursor' } }, 'a gateway without the secret refuses it')
})
