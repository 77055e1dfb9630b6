/** Running a cleanup over REST and GraphQL against a real registry: execute, events, cancel, restore and the refusals. */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { openSqliteAuditStore } from '../../src/audit/index.js'
import { planCleanup } from '../../src/cleanups/plan-cleanup.js'
import type { CleanupPlan, CleanupRules } from '../../src/cleanups/shapes.js'
import { BrowseCache } from '../../src/images/browse-cache.js'
import { loadPolicy } from '../../src/policy/load.js'
import { startRegistry } from '../../testing/registry-process.js'
import { daysBefore, pushCreated } from '../fixtures/cleanup-seed.js'
import { contractProblems } from '../fixtures/contract.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { sha256Hex, startGateway, type Gateway } from '../fixtures/gateway.js'
import { directory, registryClient } from '../fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const ago = (days: number): string => daysBefore(Date.now(), days)

const KEYS = {
  alice: 'rdg_cleanup-runs-alice-key-long-enough-0001',
  bob: 'rdg_cleanup-runs-bob-key-long-enough-00002',
  auditor: 'rdg_cleanup-runs-auditor-key-long-enough-3',
  reader: 'rdg_cleanup-runs-reader-key-long-enough-04',
  boss: 'rdg_cleanup-runs-boss-key-long-enough-00005'
}
const POLICY = `
apiKeys:
${Object.entries(KEYS).map(([name, key]) => `  - { name: ${name}, sha256: ${sha256Hex(key)} }`).join('\n')}
roles:
  planner:
    - actions: [read, delete, restore]
      repositories: ["http/**"]
  auditor:
    - actions: [read, audit]
      repositories: ["http/**"]
  reader:
    - actions: [read]
      repositories: ["http/**"]
  boss:
    - actions: ["*"]
      repositories: ["http/**"]
bindings:
  - { role: planner, subjects: ["apikey:alice", "apikey:bob"] }
  - { role: auditor, subjects: ["apikey:auditor"] }
  - { role: reader, subjects: ["apikey:reader"] }
  - { role: boss, subjects: ["apikey:boss"] }
`
const policy = loadPolicy(POLICY, 'policy.yaml')

const dir = mkdtempSync(join(tmpdir(), 'rdg-cleanup-runs-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
const auditPath = join(dir, 'audit.db')
const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, policy: POLICY, auditPath })
const store = openSqliteAuditStore(auditPath)
t.teardown(async () => { await store.close() })

/** Plans as `planner` and keeps the plan where POST /cleanups keeps it. */
async function planned (t: Test, repositories: string[], rules: CleanupRules, planner = 'alice'): Promise<CleanupPlan> {
  const plan = await planCleanup({
    registries: directory(t, { default: registry.url }),
    policy: () => policy,
    cache: new BrowseCache({ entries: 100, tagTtlMs: 0 }),
    concurrency: 4,
    catalogPageSize: 100,
    maxTags: 1000,
    registrySettings: () => ({ untagStrategy: 'swap' }),
    now: Date.now
  }, { identity: { subject: `apikey:${planner}`, groups: [], kind: 'apikey' }, context: { requestId: 'plan', transport: 'rest' }, repositories, rules })
  await store.saveCleanup({ id: plan.id, registry: plan.registry, createdBy: plan.createdBy, createdAt: plan.createdAt, state: plan.state, body: JSON.stringify(plan) })
  return plan
}

async function post (gw: Gateway, url: string, key: string, body?: object): Promise<{ status: number, body: any }> {
  const response = await gw.app.inject({ method: 'POST', url, headers: { 'x-api-key': key }, ...(body === undefined ? {} : { payload: body }) })
  const parsed = response.json()
  const problems = contractProblems('POST', url, response.statusCode, response.headers['content-type'] as string | undefined, parsed)
  if (problems.length > 0) throw new Error(`response breaks openapi.yaml:\n${problems.join('\n')}`)
  return { status: response.statusCode, body: parsed }
}

/** The event stream, read to its end: the run's events as [event, data] pairs. */
async function events (gw: Gateway, id: string, key = KEYS.alice): Promise<{ status: number, type: string, events: Array<[string, any]> }> {
  const response = await gw.app.inject({ method: 'GET', url: `/cleanups/${id}/events`, headers: { 'x-api-key': key } })
  const parsed = response.body.split('\n\n').filter(block => block.startsWith('event: ')).map(block => {
    const [event, data] = block.split('\n') as [string, string]
    return [event.slice('event: '.length), JSON.parse(data.slice('data: '.length))] as [string, any]
  })
  return { status: response.statusCode, type: String(response.headers['content-type']), events: parsed }
}

async function tagsNow (name: string): Promise<string[]> {
  const client = registryClient('check', registry.url)
  try {
    return (await client.listTags(name).catch(() => [])).sort()
  } finally {
    await client.close()
  }
}

t.test('execute: capped (400, nothing run), raised (202), followed by events, audited by cleanup id, once; then undone whole', async t => {
  const name = 'http/run'
  const tags = ['pr-1', 'pr-2', 'pr-3']
  for (const tag of tags) await pushCreated(target, name, [tag], ago(30))
  const plan = await planned(t, [name], { select: [{ glob: 'pr-*' }] })

  const notYet = await events(gateway, plan.id)
  t.match(notYet, { status: 200, type: /^text\/event-stream/, events: [['state', { cleanupId: plan.id, state: 'planned' }]] }, 'not run: its state, and the stream ends')

  const capped = await post(gateway, `/cleanups/${plan.id}/execute`, KEYS.alice, { maxDeletions: 2 })
  t.match(capped, { status: 400, body: { code: 'INVALID_REQUEST', field: 'maxDeletions' } })
  t.same(await tagsNow(name), tags, 'nothing executed')
  const bad = await post(gateway, `/cleanups/${plan.id}/execute`, KEYS.alice, { maxDeletions: 0 })
  t.match(bad, { status: 400, body: { code: 'INVALID_REQUEST' } }, 'a cap below 1 is bad input')

  const started = await post(gateway, `/cleanups/${plan.id}/execute`, KEYS.alice, { maxDeletions: 3 })
  t.match(started, { status: 202, body: { cleanupId: plan.id, state: 'running', startedBy: 'apikey:alice', maxDeletions: 3 } })
  const stream = await events(gateway, plan.id)
  t.equal(stream.events[0]?.[0], 'state')
  t.match(stream.events.at(-1), ['end', { state: 'done', counts: { done: 3, stale: 0, failed: 0, skipped: 0 } }], 'the stream ends with the run')
  t.same(await tagsNow(name), [])
  const again = await post(gateway, `/cleanups/${plan.id}/execute`, KEYS.alice)
  t.match(again, { status: 409, body: { code: 'CLEANUP_RUN_EXISTS' } })
  t.match(await events(gateway, plan.id), { events: [['state', { state: 'done' }], ['end', { state: 'done', counts: { done: 3 } }]] }, 'a finished run: state and end at once')
  t.match(await gateway.rest('GET', `/cleanups/${plan.id}`, { key: KEYS.alice }), { status: 200, body: { id: plan.id, state: 'planned', run: { state: 'done', counts: { done: 3 } } } },
    'the plan shows its run')

  const audit = await gateway.rest('GET', `/audit?cleanupId=${plan.id}`, { key: KEYS.auditor })
  t.equal(audit.status, 200)
  t.equal(audit.body.items.length, 3)
  t.ok(audit.body.items.every((item: any) => item.cleanupId === plan.id && item.outcome === 'deleted' && item.subject === 'apikey:alice'))
  t.match(await gateway.rest('GET', '/audit?cleanupId=nope', { key: KEYS.auditor }), { status: 400 }, 'a malformed cleanup id is bad input')

  const restored = await post(gateway, `/cleanups/${plan.id}/restore`, KEYS.alice)
  t.equal(restored.status, 200)
  t.equal(restored.body.items.length, 3)
  t.ok(restored.body.items.every((item: any) => item.result === 'restored' && item.restore.restoredTags.length === 1))
  t.same(await tagsNow(name), tags)
})

t.test('refusals: another caller\'s cleanup, a low-privilege key, execute after cancel; an admin holder may', async t => {
  const name = 'http/refusals'
  for (const tag of ['pr-1', 'pr-2']) await pushCreated(target, name, [tag], ago(30))
  const plan = await planned(t, [name], { select: [{ glob: 'pr-*' }] })

  t.match(await post(gateway, `/cleanups/${plan.id}/execute`, KEYS.bob), { status: 404, body: { code: 'NOT_FOUND' } }, 'another planner does not see it')
  t.match(await post(gateway, `/cleanups/${plan.id}/execute`, KEYS.reader), { status: 404 }, 'nor does a read-only key')
  t.match(await post(gateway, `/cleanups/${plan.id}/execute`, KEYS.auditor), { status: 403, body: { code: 'FORBIDDEN', detail: /only the one who planned it/ } },
    'an auditor sees it but may not run it')
  t.match(await gateway.rest('DELETE', `/cleanups/${plan.id}`, { key: KEYS.auditor }), { status: 403 })
  t.match(await post(gateway, `/cleanups/${plan.id}/restore`, KEYS.auditor), { status: 403 })
  t.match(await post(gateway, '/cleanups/cleanup_nope/execute', KEYS.alice), { status: 400, body: { field: 'id' } })
  t.same(await tagsNow(name), ['pr-1', 'pr-2'])

  const cancelled = await gateway.rest('DELETE', `/cleanups/${plan.id}`, { key: KEYS.alice })
  t.match(cancelled, { status: 200, body: { cleanupId: plan.id, state: 'cancelled' } })
  t.match(await post(gateway, `/cleanups/${plan.id}/execute`, KEYS.alice), { status: 409, body: { code: 'CLEANUP_RUN_EXISTS', detail: /was cancelled/ } })
  t.match(await events(gateway, plan.id), { events: [['state', { state: 'cancelled' }], ['end', { state: 'cancelled' }]] })

  const second = await planned(t, [name], { select: [{ glob: 'pr-*' }] })
  const run = await gateway.gql('mutation($id: String!) { executeCleanup(id: $id, maxDeletions: 5) { cleanupId state startedBy maxDeletions counts { done } } }',
    { id: second.id }, { key: KEYS.boss })
  t.match(run.body, { data: { executeCleanup: { cleanupId: second.id, state: 'running', startedBy: 'apikey:boss', maxDeletions: 5 } } }, 'admin on every tag: may run another\'s cleanup')
  t.match(await events(gateway, second.id, KEYS.boss), { events: [['state', {}], ['tag', {}], ['tag', {}], ['end', { state: 'done', counts: { done: 2 } }]] })
  const undo = await gateway.gql('mutation($id: String!) { restoreCleanup(id: $id) { cleanupId items { tag result restore { restoredTags } } } }', { id: second.id }, { key: KEYS.boss })
  t.equal(undo.body.data.restoreCleanup.items.length, 2)
  t.same(await tagsNow(name), ['pr-1', 'pr-2'])
  const cancelAgain = await gateway.gql('mutation($id: String!) { cancelCleanup(id: $id) { state counts { done } } }', { id: second.id }, { key: KEYS.boss })
  t.same(cancelAgain.body.data.cancelCleanup, { state: 'done', counts: { done: 2 } }, 'cancelling a finished run says how it ended')
  const refused = await gateway.gql('mutation($id: String!) { executeCleanup(id: $id) { state } }', { id: second.id }, { key: KEYS.alice })
  t.match(refused.body.errors, [{ extensions: { code: 'CLEANUP_RUN_EXISTS' } }])
})

t.test('a run a stopped gateway left running is marked interrupted at the next start', async t => {
  const cleanupId = 'cleanup_0000000000000000000000000000000f'
  const counts = { done: 1, stale: 0, failed: 0, skipped: 0 }
  t.equal(await store.claimCleanupRun({ cleanupId, state: 'running', startedBy: 'apikey:alice', startedAt: new Date().toISOString(), maxDeletions: 100, counts }), true)
  await startGateway(t, { registries: { default: { url: registry.url } }, policy: POLICY, auditPath })
  t.match(await store.getCleanupRun(cleanupId), { state: 'interrupted', finishedAt: /^\d{4}-/, counts })
})

t.test('two gateways on one trail: a run on one is cancelled (200, or 202 cancelling) and followed through the other', async t => {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  const shared = join(dir, 'replicas.db')
  const replica = async (cancelWaitMs: number): Promise<Gateway> => await startGateway(t, {
    registries: { default: { url: proxy.url } },
    policy: POLICY,
    auditPath: shared,
    config: { cleanups: { runConcurrency: 1, heartbeatMs: 20, staleAfterMs: 60_000, cancelWaitMs, pollMs: 20 } }
  })
  // A answers a cancel of another replica's run at once; B waits for it to stop.
  const [a, b] = [await replica(0), await replica(60_000)]
  const trail = openSqliteAuditStore(shared)
  t.teardown(async () => { await trail.close() })
  const hold = (): (() => void) => {
    let release: () => void = () => {}
    const remove = proxy.fault({ method: 'DELETE', action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) } })
    return () => { remove(); release() }
  }
  const deletes = (): number => proxy.requests.filter(request => request.method === 'DELETE').length
  const until = async (what: () => Promise<boolean> | boolean): Promise<void> => {
    while (!await what()) await new Promise(resolve => setTimeout(resolve, 10))
  }

  const name = 'http/replicas'
  for (const tag of ['pr-1', 'pr-2', 'pr-3']) await pushCreated(target, name, [tag], ago(30))
  const plan = await planned(t, [name], { select: [{ glob: 'pr-*' }] })
  await trail.saveCleanup({ id: plan.id, registry: plan.registry, createdBy: plan.createdBy, createdAt: plan.createdAt, state: plan.state, body: JSON.stringify(plan) })
  let release = hold()
  let before = deletes()
  t.equal((await post(a, `/cleanups/${plan.id}/execute`, KEYS.alice)).status, 202)
  await until(() => deletes() > before)
  const following = events(b, plan.id)
  t.match(await b.rest('DELETE', `/cleanups/${plan.id}`, { key: KEYS.auditor }), { status: 403 }, 'a caller who may not manage it cannot cancel it on another replica')
  t.notOk((await trail.getCleanupRun(plan.id))?.cancelRequestedAt, 'and nothing is recorded')
  const cancelling = b.rest('DELETE', `/cleanups/${plan.id}`, { key: KEYS.alice })
  await until(async () => (await trail.getCleanupRun(plan.id))?.state === 'cancelling')
  release()
  const cancelled = await cancelling
  t.match(cancelled, { status: 200, body: { state: 'cancelled', cancelRequestedBy: 'apikey:alice' } }, 'B waited for A\'s run to stop')
  const stream = await following
  t.match(stream.events[0], ['state', { state: 'running' }])
  t.match(stream.events.at(-1), ['end', { state: 'cancelled', counts: cancelled.body.counts }], 'B\'s stream, read from the store, ends with the run')
  t.ok(stream.events.slice(1, -1).every(([event]) => event === 'progress'))

  const second = await planned(t, [name], { select: [{ glob: 'pr-*' }] })
  await trail.saveCleanup({ id: second.id, registry: second.registry, createdBy: second.createdBy, createdAt: second.createdAt, state: second.state, body: JSON.stringify(second) })
  release = hold()
  before = deletes()
  t.equal((await post(b, `/cleanups/${second.id}/execute`, KEYS.alice)).status, 202)
  await until(() => deletes() > before)
  const accepted = await a.rest('DELETE', `/cleanups/${second.id}`, { key: KEYS.alice })
  t.match(accepted, { status: 202, body: { state: 'cancelling', cancelRequestedBy: 'apikey:alice' } }, 'not stopped in time: accepted')
  const graphql = await a.gql('mutation($id: String!) { cancelCleanup(id: $id) { state cancelRequestedBy } }', { id: second.id }, { key: KEYS.alice })
  t.same(graphql.body.data.cancelCleanup, { state: 'cancelling', cancelRequestedBy: 'apikey:alice' }, 'GraphQL says the same')
  const followed = events(a, second.id)
  release()
  t.match((await followed).events.at(-1), ['end', { state: 'cancelled' }], 'A\'s stream of B\'s run ends with it')
  t.match(await a.rest('GET', `/cleanups/${second.id}`, { key: KEYS.alice }), { body: { run: { state: 'cancelled', cancelRequestedBy: 'apikey:alice' } } })
})

t.test('a gateway closing with event streams open ends them, so shutdown is not held up: its run ends interrupted', async t => {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  const shared = join(dir, 'closing.db')
  const open = async (): Promise<Gateway> => await startGateway(t, {
    registries: { default: { url: proxy.url } }, policy: POLICY, auditPath: shared, config: { cleanups: { runConcurrency: 1, pollMs: 20 } }
  })
  const [owner, other] = [await open(), await open()]
  const trail = openSqliteAuditStore(shared)
  t.teardown(async () => { await trail.close() })
  const name = 'http/closing'
  for (const tag of ['pr-1', 'pr-2', 'pr-3']) await pushCreated(target, name, [tag], ago(30))
  const plan = await planned(t, [name], { select: [{ glob: 'pr-*' }] })
  await trail.saveCleanup({ id: plan.id, registry: plan.registry, createdBy: plan.createdBy, createdAt: plan.createdAt, state: plan.state, body: JSON.stringify(plan) })
  let release = (): void => {}
  proxy.fault({ method: 'DELETE', action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) }, times: 1 })
  t.equal((await post(owner, `/cleanups/${plan.id}/execute`, KEYS.alice)).status, 202)
  await proxy.waitFor(request => request.method === 'DELETE', 30_000)
  // Real sockets: inject has no server to close. Each stream is open (its headers came) before the close.
  const watch = async (gateway: Gateway): Promise<{ text: Promise<string> }> => {
    const address = await gateway.app.listen({ host: '127.0.0.1', port: 0 })
    const response = await request(`${address}/cleanups/${plan.id}/events`, { headers: { 'x-api-key': KEYS.alice } })
    return { text: response.body.text() }
  }
  const [local, followed] = [await watch(owner), await watch(other)]
  await other.app.close()
  t.match(await followed.text, /^event: state\n/, 'the stream following the run from the store ended as its replica closed')
  const closing = owner.app.close()
  release()
  await closing
  t.match(await local.text, /^event: state\n/, 'the run\'s own stream ended too')
  t.match(await trail.getCleanupRun(plan.id), { state: 'interrupted', counts: { done: 1, skipped: 2 } }, 'the held removal finished, the rest skipped')
})
