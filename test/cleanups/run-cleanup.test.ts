/** Running cleanup plans against a real registry: the cap, concurrency in order, stale entries, cancel, undo. */
import t, { type Test } from 'tap'
import { planCleanup, type CleanupServices } from '../../src/cleanups/plan-cleanup.js'
import {
  ActiveRuns, cancelCleanup, executeCleanup, restoreCleanup, type CleanupRunEvent, type CleanupRunServices
} from '../../src/cleanups/run-cleanup.js'
import type { CleanupRun } from '../../src/audit/types.js'
import type { CleanupPlan, CleanupRules } from '../../src/cleanups/shapes.js'
import { BrowseCache } from '../../src/images/browse-cache.js'
import { decide } from '../../src/policy/index.js'
import { loadPolicy } from '../../src/policy/load.js'
import type { Identity } from '../../src/policy/types.js'
import { startRegistry } from '../../testing/registry-process.js'
import { daysBefore, pushCreated, pushIndex, pushReferrer, referrerTag } from '../fixtures/cleanup-seed.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { rejection } from '../fixtures/rejection.js'
import { directory, imageServices, memoryTrail, registryClient } from '../fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const NOW = Date.now()
const ago = (days: number): string => daysBefore(NOW, days)

const policy = loadPolicy(`
roles:
  planner:
    - actions: [read, delete, restore, audit]
      repositories: ["run/**"]
  boss:
    - actions: [read, delete, restore, audit, admin]
      repositories: ["run/**"]
  reader:
    - actions: [read]
      repositories: ["run/**"]
bindings:
  - { role: planner, subjects: ["user:alice", "user:bob"] }
  - { role: boss, subjects: ["user:boss"] }
  - { role: reader, subjects: ["user:reader"] }
`, 'run-test.yaml')
const who = (name: string): Identity => ({ subject: `user:${name}`, groups: [], kind: 'jwt' })
const alice = who('alice')
const context = { requestId: 'run-test', transport: 'rest' as const }

function setup (t: Test, overrides: Partial<CleanupRunServices> = {}, registryUrl = registry.url): {
  plan: (repositories: string[], rules: CleanupRules) => Promise<CleanupPlan>, run: CleanupRunServices
} {
  const registries = directory(t, { default: registryUrl })
  const { audit } = memoryTrail(t)
  const images = { ...imageServices(registries, audit), authorizer: () => (identity: Identity, action: Parameters<typeof decide>[2], resource: Parameters<typeof decide>[3]) => decide(policy, identity, action, resource) }
  const planning: CleanupServices = {
    registries,
    policy: () => policy,
    cache: new BrowseCache({ entries: 1000, tagTtlMs: 0 }),
    concurrency: 16,
    catalogPageSize: 100,
    maxTags: 1000,
    registrySettings: () => ({ untagStrategy: 'swap' }),
    now: () => NOW
  }
  return {
    plan: async (repositories, rules) => await planCleanup(planning, { identity: alice, context, repositories, rules }),
    run: {
      images, concurrency: 4, maxDeletions: 100, runs: new ActiveRuns(), now: Date.now, replicas: { heartbeatMs: 20, staleAfterMs: 60_000, cancelWaitMs: 5000, pollMs: 10 }, ...overrides
    }
  }
}

async function tagsNow (name: string): Promise<string[]> {
  const client = registryClient('check', registry.url)
  try {
    return (await client.listTags(name).catch(() => [])).sort()
  } finally {
    await client.close()
  }
}

function listen (run: CleanupRunServices, cleanupId: string): CleanupRunEvent[] {
  const events: CleanupRunEvent[] = []
  run.runs.subscribe(cleanupId, event => { events.push(event) })
  return events
}

t.test('the cap refuses a plan that removes more, nothing executed; raised, the run removes every tag, audited with the cleanup id', async t => {
  const name = 'run/capped'
  const shared = await pushCreated(target, name, ['pr-1', 'pr-2'], ago(30))
  for (const tag of ['pr-3', 'pr-4', 'pr-5']) await pushCreated(target, name, [tag], ago(30))
  await pushCreated(target, name, ['main'], ago(30))
  const { plan, run } = setup(t, { maxDeletions: 4 })
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  t.equal(cleanup.totals.remove, 5)

  const capped = await rejection(executeCleanup(run, { identity: alice, context, cleanup }))
  t.match(capped, { code: 'INVALID_REQUEST', status: 400, extras: { field: 'maxDeletions', rule: 'at least 5' }, detail: /removes 5 tags, more than maxDeletions \(4\); nothing was executed/ })
  t.equal(await run.images.audit.store.getCleanupRun(cleanup.id), undefined, 'no run recorded')
  const lowered = await rejection(executeCleanup({ ...run, maxDeletions: 100 }, { identity: alice, context, cleanup, maxDeletions: 2 }))
  t.match(lowered, { extras: { field: 'maxDeletions' } }, 'the request can lower it too')
  t.same(await tagsNow(name), ['main', 'pr-1', 'pr-2', 'pr-3', 'pr-4', 'pr-5'], 'untouched')

  const started = await executeCleanup(run, { identity: alice, context, cleanup, maxDeletions: 5 })
  t.match(started, { cleanupId: cleanup.id, state: 'running', startedBy: 'user:alice', maxDeletions: 5, counts: { done: 0 } })
  const events = listen(run, cleanup.id)
  const again = await rejection(executeCleanup(run, { identity: alice, context, cleanup, maxDeletions: 5 }))
  t.match(again, { code: 'CLEANUP_RUN_EXISTS', status: 409, extras: { state: 'running' } }, 'a second execute runs nothing')
  const finished = await run.runs.finished(cleanup.id)
  t.match(finished, { state: 'done', counts: { done: 5, stale: 0, failed: 0, skipped: 0 }, finishedAt: /^\d{4}-/ })
  t.same(await run.images.audit.store.getCleanupRun(cleanup.id), finished, 'the store has the final state')
  t.same(await tagsNow(name), ['main'])
  t.equal(events.length, 6, 'one event per tag, then the end')
  t.match(events.at(-1), { type: 'end', state: 'done', counts: { done: 5 } })
  const tagEvents = events.filter(event => event.type === 'tag')
  t.ok(tagEvents.findIndex(event => event.tag === 'pr-1') < tagEvents.findIndex(event => event.tag === 'pr-2'), 'one digest\'s tags in sequence')
  t.match(tagEvents.find(event => event.tag === 'pr-2'), { result: 'done', action: 'deleted-digest' })

  const audited = await run.images.audit.list({ cleanupId: cleanup.id }, { limit: 50 }, () => true)
  t.equal(audited.items.length, 5)
  t.ok(audited.items.every(item => item.outcome === 'deleted' && item.subject === 'user:alice' && item.cleanupId === cleanup.id), 'each deletion audited as the caller\'s, with the cleanup id')
  t.match(await rejection(executeCleanup(run, { identity: alice, context, cleanup, maxDeletions: 5 })), { code: 'CLEANUP_RUN_EXISTS', detail: /was run \(done\)/ })

  // Undo of the whole cleanup: newest first, so the digest comes back with pr-2 before pr-1 is put back beside it.
  const restored = await restoreCleanup(run, { identity: alice, context, cleanup })
  t.equal(restored.length, 5)
  t.ok(restored.every(item => item.result === 'restored'), 'every deletion restored')
  t.same(await tagsNow(name), ['main', 'pr-1', 'pr-2', 'pr-3', 'pr-4', 'pr-5'])
  const client = registryClient('check', registry.url)
  t.equal((await client.resolve(name, 'pr-1')).digest, shared.digest, 'the same manifest')
  await client.close()
  const twice = await restoreCleanup(run, { identity: alice, context, cleanup })
  t.same(twice, [], 'nothing left to restore')
})

t.test('refusals: another caller\'s cleanup, a low-privilege caller, execute after cancel; an admin holder may run it', async t => {
  const name = 'run/refusals'
  for (const tag of ['pr-1', 'pr-2']) await pushCreated(target, name, [tag], ago(30))
  const { plan, run } = setup(t)
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  t.match(await rejection(executeCleanup(run, { identity: who('bob'), context, cleanup })),
    { code: 'FORBIDDEN', detail: /user:bob may not execute cleanup cleanup_[0-9a-f]+: only the one who planned it \(user:alice\)/ })
  t.match(await rejection(executeCleanup(run, { identity: who('reader'), context, cleanup })), { code: 'FORBIDDEN' })
  t.match(await rejection(cancelCleanup(run, { identity: who('bob'), cleanup })), { code: 'FORBIDDEN', detail: /may not cancel/ })
  t.match(await rejection(restoreCleanup(run, { identity: who('bob'), context, cleanup })), { code: 'FORBIDDEN', detail: /may not restore/ })

  // A planner whose delete rights are gone by execution time: each removal is refused by the core, and audited.
  const readerPlan = { ...cleanup, id: 'cleanup_00000000000000000000000000000001', createdBy: 'user:reader' }
  await executeCleanup(run, { identity: who('reader'), context, cleanup: readerPlan })
  t.match(await run.runs.finished(readerPlan.id), { state: 'done', counts: { done: 0, failed: 2 } })
  t.same(await tagsNow(name), ['pr-1', 'pr-2'])
  const denied = await run.images.audit.list({ cleanupId: readerPlan.id }, { limit: 10 }, () => true)
  t.ok(denied.items.length === 2 && denied.items.every(item => item.outcome === 'denied'), 'refused per tag, audited')

  const cancelled = await cancelCleanup(run, { identity: alice, cleanup })
  t.match(cancelled, { state: 'cancelled', counts: { done: 0 } }, 'cancelled before it ran')
  t.match(await rejection(executeCleanup(run, { identity: alice, context, cleanup })), { code: 'CLEANUP_RUN_EXISTS', detail: /was cancelled/ })
  t.match(await cancelCleanup(run, { identity: alice, cleanup }), { state: 'cancelled' }, 'cancelling again says so')

  const bossPlan = { ...cleanup, id: 'cleanup_00000000000000000000000000000002' }
  await executeCleanup(run, { identity: who('boss'), context, cleanup: bossPlan })
  t.match(await run.runs.finished(bossPlan.id), { state: 'done', startedBy: 'user:boss', counts: { done: 2 } })
  t.same(await tagsNow(name), [])
})

t.test('stale entries are skipped and reported; a signature stays when its subject was not deleted', async t => {
  const name = 'run/stale'
  const old = await pushCreated(target, name, ['pr-1'], ago(30))
  await pushCreated(target, name, ['pr-2'], ago(30))
  await pushReferrer(target, name, old.digest, 'sig')
  await pushIndex(target, name, ['pr-9'], { amd64: ago(30), arm64: ago(31) })
  const { plan, run } = setup(t)
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  t.match(cleanup.entries.find(entry => entry.tag === referrerTag(old.digest, 'sig')), { outcome: 'remove', rule: 'referrers' })
  await pushCreated(target, name, ['pr-1'], ago(1))
  await executeCleanup(run, { identity: alice, context, cleanup })
  const events = listen(run, cleanup.id)
  t.match(await run.runs.finished(cleanup.id), { state: 'done', counts: { done: 2, stale: 2 } })
  t.match(events.find(event => event.type === 'tag' && event.tag === 'pr-9'), { result: 'done', action: 'deleted-digest' }, 'a multi-platform image, first')
  t.equal(events.find(event => event.type === 'tag')?.tag, 'pr-9', 'indexes run before the rest')
  t.match(events.find(event => event.type === 'tag' && event.tag === 'pr-1'), { result: 'stale', errorCode: 'PLAN_STALE' })
  t.match(events.find(event => event.type === 'tag' && event.tag === referrerTag(old.digest, 'sig')),
    { result: 'stale', detail: /its subject sha256:[0-9a-f]+ was not deleted by this run/ })
  t.same(await tagsNow(name), ['pr-1', referrerTag(old.digest, 'sig')].sort(), 'pr-1 moved on, so it and the signature stay')
})

t.test('cancel mid-run: the removal in flight finishes, the rest are skipped; every tag is done-and-audited or untouched', async t => {
  const name = 'run/cancel'
  const tags = Array.from({ length: 12 }, (_, i) => `pr-${String(i).padStart(2, '0')}`)
  for (const tag of tags) await pushCreated(target, name, [tag], ago(30))
  const { plan, run } = setup(t, { concurrency: 1 })
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  await executeCleanup(run, { identity: alice, context, cleanup })
  const events: CleanupRunEvent[] = []
  run.runs.subscribe(cleanup.id, event => {
    events.push(event)
    if (events.length === 2) void cancelCleanup(run, { identity: alice, cleanup })
  })
  const finished = await run.runs.finished(cleanup.id)
  t.equal(finished?.state, 'cancelled')
  const { done, skipped } = finished?.counts ?? { done: 0, skipped: 0 }
  t.ok(done >= 2 && done <= 3, `the in-flight removal finished (${done} done)`)
  t.equal(done + skipped, 12)
  const left = await tagsNow(name)
  const audited = await run.images.audit.list({ cleanupId: cleanup.id }, { limit: 50 }, () => true)
  t.same(audited.items.map(item => item.tag).sort(), tags.filter(tag => !left.includes(tag)), 'the tags gone are exactly the audited ones')
  t.ok(audited.items.every(item => item.outcome === 'deleted'))
  t.equal(left.length, skipped)
  t.match(await run.images.audit.store.getCleanupRun(cleanup.id), { state: 'cancelled', counts: { done, skipped } })
  t.match(events.at(-1), { type: 'end', state: 'cancelled' })
})

t.test('a trail that cannot be written: nothing starts; mid-run, the rest are skipped and the run ends interrupted', async t => {
  const name = 'run/lost'
  for (const tag of ['pr-1', 'pr-2', 'pr-3', 'pr-4']) await pushCreated(target, name, [tag], ago(30))
  const closed = setup(t)
  const plan = await closed.plan([name], { select: [{ glob: 'pr-*' }] })
  await closed.run.images.audit.store.close()
  t.match(await rejection(executeCleanup(closed.run, { identity: alice, context, cleanup: plan })), { code: 'AUDIT_UNAVAILABLE' }, 'no run without a store')

  const { run } = setup(t, { concurrency: 1 })
  await executeCleanup(run, { identity: alice, context, cleanup: plan })
  const events: CleanupRunEvent[] = []
  run.runs.subscribe(plan.id, event => {
    events.push(event)
    if (events.length === 1) void run.images.audit.store.close()
  })
  const finished = await run.runs.finished(plan.id)
  t.match(finished, { state: 'interrupted', counts: { done: 1, failed: 1, skipped: 2 } })
  t.match(events[1], { type: 'tag', result: 'failed', errorCode: 'AUDIT_UNAVAILABLE' })
  t.equal((await tagsNow(name)).length, 3, 'only the audited removal happened')
})

t.test('undo reports a deletion it cannot put back and restores the rest', async t => {
  const name = 'run/undo'
  for (const tag of ['pr-1', 'pr-2']) await pushCreated(target, name, [tag], ago(30))
  const { plan, run } = setup(t)
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  await executeCleanup(run, { identity: alice, context, cleanup })
  await run.runs.finished(cleanup.id)
  await pushCreated(target, name, ['pr-2'], ago(0))
  const results = await restoreCleanup(run, { identity: alice, context, cleanup })
  t.match(results.find(item => item.tag === 'pr-2'), { result: 'failed', errorCode: 'TAG_EXISTS' }, 'pr-2 points elsewhere now')
  t.match(results.find(item => item.tag === 'pr-1'), { result: 'restored' })
  const restores = await run.images.audit.list({ cleanupId: cleanup.id, action: 'restore' }, { limit: 10 }, () => true)
  t.ok(restores.items.length >= 1 && restores.items.every(item => item.cleanupId === cleanup.id), 'restores carry the cleanup id too')
})

t.test('a gateway that stops: in-flight removals finish, the rest are skipped, the run ends interrupted', async t => {
  const name = 'run/stop'
  for (const tag of ['pr-1', 'pr-2', 'pr-3']) await pushCreated(target, name, [tag], ago(30))
  const { plan, run } = setup(t, { concurrency: 1 })
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  await executeCleanup(run, { identity: alice, context, cleanup })
  const stopped = new Promise<void>(resolve => {
    run.runs.subscribe(cleanup.id, () => { void run.runs.stopAll().then(resolve) })
  })
  await stopped
  t.match(await run.images.audit.store.getCleanupRun(cleanup.id), { state: 'interrupted', counts: { done: 1, skipped: 2 } })
  t.equal(run.runs.finished(cleanup.id), undefined, 'no longer in progress')
  t.equal((await tagsNow(name)).length, 2, 'the one removal in flight finished; the others untouched')
})

/** Holds every DELETE the proxy receives from now on; the function returned lets them (and later ones) through. */
function holdDeletes (proxy: Awaited<ReturnType<typeof startFaultProxy>>): () => void {
  let release: () => void = () => {}
  const remove = proxy.fault({ method: 'DELETE', action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) } })
  return () => {
    remove()
    release()
  }
}

/**
 * The run's services over a store whose heartbeats are recorded, and answered as `mode` says: passed to the store,
 * failed, hung until `unhang`, or blind (never written, always "go on", as a beat that raced a verdict would be).
 */
function watchedBeats (run: CleanupRunServices): {
  services: CleanupRunServices, answers: unknown[], mode: { now: 'pass' | 'fail' | 'hang' | 'blind' }, unhang: () => void
} {
  const store = run.images.audit.store
  const answers: unknown[] = []
  const mode: { now: 'pass' | 'fail' | 'hang' | 'blind' } = { now: 'pass' }
  let unhang = (): void => {}
  const hung = new Promise<void>(resolve => { unhang = resolve })
  const watched = Object.assign(Object.create(store) as typeof store, {
    requestCleanupCancel: async (id: string, by: string) => {
      if (mode.now === 'fail') throw new Error('the database does not answer')
      return await store.requestCleanupCancel(id, by)
    },
    heartbeatCleanupRun: async (id: string) => {
      answers.push(mode.now)
      if (mode.now === 'fail') throw new Error('the database does not answer')
      if (mode.now === 'hang') await hung
      if (mode.now === 'blind') return { cancelRequested: false }
      const answer = await store.heartbeatCleanupRun(id)
      answers.push(answer)
      return answer
    }
  })
  const audit = Object.assign(Object.create(run.images.audit) as typeof run.images.audit, { store: watched })
  return { services: { ...run, images: { ...run.images, audit } }, answers, mode, unhang }
}

const until = async (what: () => boolean): Promise<void> => {
  while (!what()) await new Promise(resolve => setTimeout(resolve, 10))
}

t.test('the stored counts follow a run that waits (other replicas read them), and the end writes them all', async t => {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  const name = 'run/counts'
  for (const tag of ['pr-1', 'pr-2', 'pr-3']) await pushCreated(target, name, [tag], ago(30))
  const { plan, run } = setup(t, { concurrency: 1 }, proxy.url)
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  await executeCleanup(run, { identity: alice, context, cleanup })
  let release = (): void => {}
  // The first removal's event comes before the next removal starts: from then on its DELETE waits.
  run.runs.subscribe(cleanup.id, event => { if (event.type === 'tag' && event.counts.done === 1) release = holdDeletes(proxy) })
  let stored = await run.images.audit.store.getCleanupRun(cleanup.id)
  while (stored?.counts.done !== 1) {
    await new Promise(resolve => setTimeout(resolve, 20))
    stored = await run.images.audit.store.getCleanupRun(cleanup.id)
  }
  t.match(stored, { state: 'running', counts: { done: 1, skipped: 0 } }, 'the store has the first removal while the second is held')
  release()
  const finished = await run.runs.finished(cleanup.id)
  t.match(finished, { state: 'done', counts: { done: 3 } })
  t.same(await run.images.audit.store.getCleanupRun(cleanup.id), finished, 'and the end, with every count')
})

t.test('a run another replica marked interrupted stops at its owner\'s next heartbeat: the rest skipped, the verdict kept', async t => {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  const name = 'run/marked'
  for (const tag of ['pr-1', 'pr-2', 'pr-3']) await pushCreated(target, name, [tag], ago(30))
  const { plan, run } = setup(t, { concurrency: 1 }, proxy.url)
  const { services, answers } = watchedBeats(run)
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  const release = holdDeletes(proxy)
  await executeCleanup(services, { identity: alice, context, cleanup })
  const events = listen(run, cleanup.id)
  await proxy.waitFor(request => request.method === 'DELETE', 30_000)
  // What another replica's housekeeping does to a run whose heartbeat looked dead.
  t.same(await run.images.audit.store.interruptCleanupRuns(), [cleanup.id])
  await until(() => answers.includes(undefined))
  release()
  const finished = await run.runs.finished(cleanup.id)
  t.match(finished, { state: 'interrupted', counts: { done: 1, skipped: 2 } }, 'the removal in flight finished; nothing more was started')
  t.match(await run.images.audit.store.getCleanupRun(cleanup.id), { state: 'interrupted', counts: { done: 1, skipped: 2 } }, 'the final counts are written, the state kept')
  t.match(events.at(-1), { type: 'end', state: 'interrupted' })
  t.equal((await tagsNow(name)).length, 2)
})

t.test('an owner whose heartbeats fail or hang stops itself before any replica may judge it dead', async t => {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  const name = 'run/fenced'
  for (const tag of ['pr-1', 'pr-2']) await pushCreated(target, name, [tag], ago(30))
  let offset = 0
  let clockReads = 0
  const now = (): number => {
    clockReads++
    return Date.now() + offset
  }
  const { plan, run } = setup(t, { concurrency: 1, now, replicas: { heartbeatMs: 20, staleAfterMs: 1000, cancelWaitMs: 0, pollMs: 10 } }, proxy.url)
  const { services, answers, mode, unhang } = watchedBeats(run)
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  const release = holdDeletes(proxy)
  await executeCleanup(services, { identity: alice, context, cleanup })
  await proxy.waitFor(request => request.method === 'DELETE', 30_000)
  mode.now = 'fail'
  await until(() => answers.includes('fail'))
  mode.now = 'hang'
  await until(() => answers.includes('hang'))
  // The injected clock passes the bound less one beat since the last good one: the next tick (a beat still hangs,
  // so none is sent) trips the fence.
  offset = 1000
  const reads = clockReads
  await until(() => clockReads >= reads + 2)
  t.equal(answers.filter(answer => answer === 'hang').length, 1, 'a hung beat is not sent again')
  release()
  unhang()
  t.match(await run.runs.finished(cleanup.id), { state: 'interrupted', counts: { done: 1, skipped: 1 } })
  t.equal((await run.images.audit.store.getCleanupRun(cleanup.id))?.state, 'interrupted', 'and says so in the store')
  t.equal((await tagsNow(name)).length, 1)
})

t.test('a run marked interrupted between its last beat and its end: the store\'s verdict is the answer', async t => {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  const name = 'run/raced'
  await pushCreated(target, name, ['pr-1'], ago(30))
  const { plan, run } = setup(t, {}, proxy.url)
  const { services, mode } = watchedBeats(run)
  mode.now = 'blind'
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  const release = holdDeletes(proxy)
  await executeCleanup(services, { identity: alice, context, cleanup })
  await proxy.waitFor(request => request.method === 'DELETE', 30_000)
  t.same(await run.images.audit.store.interruptCleanupRuns(), [cleanup.id])
  release()
  t.match(await run.runs.finished(cleanup.id), { state: 'interrupted', counts: { done: 1 } }, 'its removals all done, yet interrupted, as every replica sees it')
  t.match(await run.images.audit.store.getCleanupRun(cleanup.id), { state: 'interrupted', counts: { done: 1 } })
})

t.test('a cancel asked through the store by another replica: it waits for the run to stop, or answers cancelling', async t => {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  const name = 'run/elsewhere'
  for (const tag of ['pr-1', 'pr-2', 'pr-3']) await pushCreated(target, name, [tag], ago(30))
  const { plan, run } = setup(t, { concurrency: 1 }, proxy.url)
  // Replica B: the same store, runs of its own.
  const other: CleanupRunServices = { ...run, runs: new ActiveRuns(), replicas: { ...run.replicas, cancelWaitMs: 0 } }
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  const release = holdDeletes(proxy)
  await executeCleanup(run, { identity: alice, context, cleanup })
  await proxy.waitFor(request => request.method === 'DELETE', 30_000)
  t.match(await rejection(cancelCleanup(other, { identity: who('bob'), cleanup })), { code: 'FORBIDDEN' }, 'B refuses a caller who may not manage it')
  t.notOk((await run.images.audit.store.getCleanupRun(cleanup.id))?.cancelRequestedAt, 'and records nothing')
  t.match(await cancelCleanup(other, { identity: alice, cleanup }), { state: 'cancelling', cancelRequestedBy: 'user:alice' }, 'no wait: still stopping')
  const waiting = cancelCleanup({ ...other, replicas: { ...run.replicas, cancelWaitMs: 60_000 } }, { identity: who('boss'), cleanup })
  await new Promise(resolve => setTimeout(resolve, 100))
  release()
  const answer = await waiting
  t.match(answer, { state: 'cancelled', cancelRequestedBy: 'user:alice' }, 'waited for the run to stop; the first cancel is the one recorded')
  t.equal(answer.counts.done + answer.counts.skipped, 3)
})

t.test('a cancel of this replica\'s own run stops it even when the store cannot record who asked', async t => {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  const name = 'run/unrecorded'
  for (const tag of ['pr-1', 'pr-2']) await pushCreated(target, name, [tag], ago(30))
  const { plan, run } = setup(t, { concurrency: 1 }, proxy.url)
  const { services, mode } = watchedBeats(run)
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  const release = holdDeletes(proxy)
  await executeCleanup(services, { identity: alice, context, cleanup })
  await proxy.waitFor(request => request.method === 'DELETE', 30_000)
  mode.now = 'fail'
  const cancelling = cancelCleanup(services, { identity: alice, cleanup })
  release()
  t.match(await cancelling, { state: 'cancelled', counts: { done: 1, skipped: 1 } })
  t.notOk((await run.images.audit.store.getCleanupRun(cleanup.id))?.cancelRequestedBy, 'nothing recorded of the request, yet the run stopped')
})

async function cancelRacingClaim (t: Test, name: string, sameReplica: boolean): Promise<CleanupRun> {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  for (const tag of ['pr-1', 'pr-2', 'pr-3']) await pushCreated(target, name, [tag], ago(30))
  const { plan, run } = setup(t, { concurrency: 1 }, proxy.url)
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  const release = holdDeletes(proxy)
  t.teardown(release)
  // A wrapper only to land the run's claim exactly in the gap between the cancel's two writes (no run to cancel
  // yet, then its own claim of a cancelled run), which no real timing can aim at.
  const store = run.images.audit.store
  let started: Promise<unknown> | undefined
  const racing = Object.assign(Object.create(store) as typeof store, {
    requestCleanupCancel: async (id: string, by: string) => {
      const recorded = await store.requestCleanupCancel(id, by)
      started ??= executeCleanup(run, { identity: alice, context, cleanup })
      await started
      return recorded
    }
  })
  const canceller: CleanupRunServices = {
    ...run,
    // No wait for another replica's run: only this replica's own is answered as it ended.
    ...(sameReplica ? { replicas: { ...run.replicas, cancelWaitMs: 0 } } : { runs: new ActiveRuns() }),
    images: { ...run.images, audit: Object.assign(Object.create(run.images.audit) as typeof run.images.audit, { store: racing }) }
  }
  const cancelling = cancelCleanup(canceller, { identity: alice, cleanup })
  // Released once a removal is in flight, so the cancel lands mid-run (on this replica it may land before any).
  await proxy.waitFor(request => request.method === 'DELETE', 5000).catch(() => undefined)
  release()
  const answer = await cancelling
  t.equal((await tagsNow(name)).length, 3 - answer.counts.done, 'every tag done or untouched')
  return answer
}

t.test('a cancel racing another replica\'s claim: the run claimed between the request and the cancel\'s own claim is cancelled', async t => {
  const answer = await cancelRacingClaim(t, 'run/claim-race', false)
  t.match(answer, { state: 'cancelled', cancelRequestedBy: 'user:alice' }, 'not `running`: the cancel reached the run the other replica claimed')
  t.ok(answer.counts.skipped >= 1 && answer.counts.done + answer.counts.skipped === 3, `the rest skipped (${answer.counts.done} done)`)
})

t.test('the same race on the replica that claimed it: stopped at once and answered as it ended', async t => {
  const answer = await cancelRacingClaim(t, 'run/claim-race-here', true)
  t.match(answer, { state: 'cancelled' }, 'cancelled, not `cancelling`, with no wait for another replica')
  t.equal(answer.counts.done + answer.counts.skipped, 3)
})

t.test('a run claimed while the gateway is stopping is stopped as it starts: interrupted, nothing removed', async t => {
  const name = 'run/late'
  for (const tag of ['pr-1', 'pr-2']) await pushCreated(target, name, [tag], ago(30))
  const { plan, run } = setup(t)
  const cleanup = await plan([name], { select: [{ glob: 'pr-*' }] })
  await run.runs.stopAll()
  t.match(await executeCleanup(run, { identity: alice, context, cleanup }), { state: 'running' }, 'claimed')
  t.match(await run.runs.finished(cleanup.id), { state: 'interrupted', counts: { done: 0, skipped: 2 } })
  t.match(await run.images.audit.store.getCleanupRun(cleanup.id), { state: 'interrupted', counts: { skipped: 2 } })
  t.same(await tagsNow(name), ['pr-1', 'pr-2'], 'every tag untouched')
})
