import { createHash } from 'node:crypto'
import t, { type Test } from 'tap'
import { MockAgent } from 'undici'
import { findCoTags, forEachLimited, ManifestBudget, ScansPerCaller } from '../../src/images/co-tags.js'
import { RegistryClient } from '../../src/registry/client.js'
import { PlanBook } from '../../src/images/approvals.js'

// A tag that disappears or fails between the listing and its HEAD: timing a real registry cannot be made to show.
const ORIGIN = 'http://127.0.0.1:5998'
const SAME = '{"schemaVersion":2}'
const D = `sha256:${createHash('sha256').update(SAME).digest('hex')}`

const scan = (): { concurrency: number, budget: ManifestBudget } => ({ concurrency: 2, budget: new ManifestBudget(100) })

function client (t: Test): { mock: MockAgent, registry: RegistryClient } {
  const mock = new MockAgent()
  mock.disableNetConnect()
  const registry = new RegistryClient({ name: 'mocked', url: ORIGIN, connectTimeoutMs: 100, requestTimeoutMs: 1000, connections: 2, trustedRealmOrigins: [], dispatcher: mock })
  t.teardown(async () => { await registry.close(); await mock.close() })
  return { mock, registry }
}

t.test('a tag deleted since the listing is skipped; the others are compared by digest', async t => {
  const { mock, registry } = client(t)
  const pool = mock.get(ORIGIN)
  pool.intercept({ path: '/v2/app/tags/list', method: 'GET' }).reply(200, { tags: ['mine', 'gone', 'same', 'other'] })
  pool.intercept({ path: '/v2/app/manifests/gone', method: 'GET' }).reply(404, '')
  pool.intercept({ path: '/v2/app/manifests/same', method: 'GET' }).reply(200, SAME)
  pool.intercept({ path: '/v2/app/manifests/other', method: 'GET' }).reply(200, '{"other":true}')
  t.same((await findCoTags(registry, 'app', D, 'mine', scan())).coTags, ['same'])
})

t.test('any other failure while checking co-tags stops the deletion', async t => {
  const { mock, registry } = client(t)
  const pool = mock.get(ORIGIN)
  pool.intercept({ path: '/v2/app/tags/list', method: 'GET' }).reply(200, { tags: ['mine', 'broken'] })
  pool.intercept({ path: '/v2/app/manifests/broken', method: 'GET' }).reply(500, '')
  await t.rejects(findCoTags(registry, 'app', D, 'mine', scan()), { code: 'UPSTREAM_ERROR' })
})

t.test('bounded concurrency never exceeds its limit and visits everything once', async t => {
  let inFlight = 0
  let peak = 0
  const seen: number[] = []
  await forEachLimited(Array.from({ length: 50 }, (_, index) => index), 4, async (item) => {
    inFlight++
    peak = Math.max(peak, inFlight)
    await new Promise(resolve => setImmediate(resolve))
    seen.push(item)
    inFlight--
  })
  t.equal(peak, 4)
  t.same(seen.sort((a, b) => a - b), Array.from({ length: 50 }, (_, index) => index))
  await forEachLimited([], 4, async () => { t.fail('nothing to do') })
})

t.test('a signal already aborted starts nothing; one aborted later stops the rest', async t => {
  const gone = new AbortController()
  gone.abort(new Error('gone'))
  let started = 0
  await t.rejects(forEachLimited([1, 2, 3], 2, async () => { started++ }, gone.signal), { message: 'gone' })
  t.equal(started, 0)
  const leaving = new AbortController()
  await t.rejects(forEachLimited(Array.from({ length: 100 }, (_, index) => index), 2, async (item, signal) => {
    started++
    if (item === 3) leaving.abort(new Error('left'))
    await new Promise(resolve => setImmediate(resolve))
    if (item === 3) t.ok(signal.aborted, 'the work in flight is told through its signal')
  }, leaving.signal), { message: 'left' })
  t.ok(started <= 5, `nothing started after the abort (${started})`)
})

t.test('indexes are collected by digest; an index that is not JSON refuses the deletion', async t => {
  const { deleteImage } = await import('../../src/images/delete-image.js')
  const { KeyedQueue, Untagger } = await import('../../src/registry/untag.js')
  const { RegistryDirectory } = await import('../../src/registry/directory.js')
  const { AuditTrail } = await import('../../src/audit/trail.js')
  const { openSqliteAuditStore } = await import('../../src/audit/sqlite-store.js')
  const { mock, registry } = client(t)
  const pool = mock.get(ORIGIN)
  const garbage = Buffer.from('not json')
  const garbageDigest = `sha256:${(await import('node:crypto')).createHash('sha256').update(garbage).digest('hex')}`
  const child = Buffer.from('{"schemaVersion":2}')
  pool.intercept({ path: '/v2/app/manifests/child', method: 'GET' }).reply(200, child, { headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } })
  pool.intercept({ path: '/v2/app/tags/list', method: 'GET' }).reply(200, { tags: ['child', 'broken-index'] })
  pool.intercept({ path: '/v2/app/manifests/broken-index', method: 'GET' }).reply(200, garbage, { headers: { 'content-type': 'application/vnd.oci.image.index.v1+json' } })
  pool.intercept({ path: `/v2/app/manifests/${garbageDigest}`, method: 'GET' }).reply(200, garbage)
  const store = openSqliteAuditStore(':memory:')
  t.teardown(async () => { await store.close() })
  const deps = {
    registries: new RegistryDirectory([registry], 'mocked'),
    authorizer: () => () => ({ allow: true as const, reason: 'test', roles: [] }),
    audit: new AuditTrail(store, { info () {} }),
    registrySettings: () => ({ untagStrategy: 'swap' as const, defaultMode: 'digest' as const }),
    locks: new KeyedQueue(),
    untagger: new Untagger(),
    mayAuditAnything: () => true,
    coTagConcurrency: 2,
    coTagScanLimit: 100,
    coTagScans: new ScansPerCaller(2),
    plans: new PlanBook({ ttlMs: 600_000, capacity: 100, shared: store.shared }),
    literalProtectedTags: () => [],
    onAuditLost: () => {}
  }
  await t.rejects(deleteImage(deps, { identity: { subject: 'apikey:t', groups: [], kind: 'apikey' }, context: { requestId: 'r', transport: 'rest' }, repository: 'app', tag: 'child' }),
    { code: 'UPSTREAM_ERROR', message: /not a valid image index/ })
  const [record] = (await store.list({}, { limit: 1 })).items
  t.match(record, { outcome: 'failed', errorCode: 'UPSTREAM_ERROR' }, 'and the attempt is in the trail')
})
