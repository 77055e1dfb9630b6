/**
 * Following a run another replica executes (GET /cleanups/<id>/events on a replica not running it): one read of the
 * store per interval for the run on this replica, however many streams follow it. The other replica is played by
 * writing the run's row as its owner does (claim, counts, end) into a real SQLite trail; no registry is involved.
 * The store is wrapped only to count its reads and to fail on cue, which a real store cannot be made to do.
 */
import Fastify from 'fastify'
import t, { type Test } from 'tap'
import type { AuditStore, CleanupRun } from '../../src/audit/types.js'
import { ActiveRuns, type CleanupRunServices } from '../../src/cleanups/run-cleanup.js'
import { StoredRunFollowers } from '../../src/cleanups/run-followers.js'
import type { CleanupPlan } from '../../src/cleanups/shapes.js'
import { cleanupRunRoutes } from '../../src/http/cleanup-runs.js'
import type { Identity } from '../../src/policy/types.js'
import { directory, imageServices, memoryTrail } from '../fixtures/use-case.js'

const POLL_MS = 20
const alice: Identity = { subject: 'user:alice', groups: [], kind: 'jwt' }

interface Replica {
  app: ReturnType<typeof Fastify>
  store: AuditStore
  followers: StoredRunFollowers
  /** Reads of the run by the streams themselves (each reads it once as it opens). */
  streamReads: () => number
  /** Reads by the shared poller. */
  polls: () => number
  failReads: () => void
  runs: ActiveRuns
}

/** The replica that follows: the routes over a trail whose reads are counted and can be made to fail. */
async function follower (t: Test, loaded: Promise<void> = Promise.resolve(), onLoad = (): void => {}): Promise<Replica> {
  const { store, audit } = memoryTrail(t)
  let reads = 0
  let polls = 0
  let failing = false
  const counted = Object.assign(Object.create(store) as AuditStore, {
    getCleanupRun: async (id: string) => {
      reads++
      if (failing) throw new Error('the database does not answer')
      return await store.getCleanupRun(id)
    }
  })
  const trail = Object.assign(Object.create(audit) as typeof audit, { store: counted })
  const run: CleanupRunServices = {
    images: imageServices(directory(t, { default: 'http://127.0.0.1:9' }), trail),
    concurrency: 1,
    maxDeletions: 100,
    runs: new ActiveRuns(),
    now: Date.now,
    replicas: { heartbeatMs: 20, staleAfterMs: 60_000, cancelWaitMs: 0, pollMs: POLL_MS }
  }
  const followers = new StoredRunFollowers(async id => { polls++; return await counted.getCleanupRun(id) }, POLL_MS)
  const app = Fastify()
  app.decorateRequest('identity', null as unknown as Identity)
  app.addHook('onRequest', async request => { request.identity = alice })
  await app.register(cleanupRunRoutes({ run, load: async (_identity, id) => { onLoad(); await loaded; return { id } as CleanupPlan }, heartbeatMs: 60_000, followers }))
  t.teardown(async () => { await app.close() })
  return { app, store, followers, streamReads: () => reads - polls, polls: () => polls, failReads: () => { failing = true }, runs: run.runs }
}

/** What the running replica writes when it claims a run. */
async function claimed (store: AuditStore, id: string): Promise<CleanupRun> {
  const run: CleanupRun = {
    cleanupId: id, state: 'running', startedBy: alice.subject, startedAt: new Date().toISOString(), maxDeletions: 100, counts: { done: 0, stale: 0, failed: 0, skipped: 0 }
  }
  t.ok(await store.claimCleanupRun(run), `claimed ${id}`)
  return run
}

async function stream (replica: Replica, id: string): Promise<Array<[string, any]>> {
  const response = await replica.app.inject({ method: 'GET', url: `/cleanups/${id}/events` })
  const body: string = response.body
  return body.split('\n\n').filter(block => block.startsWith('event: ')).map(block => {
    const [event, data] = block.split('\n') as [string, string]
    return [event.slice('event: '.length), JSON.parse(data.slice('data: '.length))]
  })
}

const until = async (what: () => boolean): Promise<void> => {
  while (!what()) await new Promise(resolve => setTimeout(resolve, 5))
}

t.test('five streams on one run share one poller: each sees the progress and the end', async t => {
  const replica = await follower(t)
  await claimed(replica.store, 'cleanup_five')
  const streams = Array.from({ length: 5 }, async () => await stream(replica, 'cleanup_five'))
  await until(() => replica.streamReads() === 5 && replica.polls() >= 2)
  t.equal(replica.followers.polling, 1, 'five streams, one poller')
  await replica.store.updateCleanupRun('cleanup_five', { state: 'running', counts: { done: 1, stale: 0, failed: 0, skipped: 0 } })
  const progressed = replica.polls()
  await until(() => replica.polls() >= progressed + 2)
  await replica.store.updateCleanupRun('cleanup_five', { state: 'done', finishedAt: new Date().toISOString(), counts: { done: 2, stale: 0, failed: 0, skipped: 0 } })
  for (const events of await Promise.all(streams)) {
    t.match(events[0], ['state', { state: 'running' }])
    t.match(events.filter(([event]) => event === 'progress'), [['progress', { state: 'running', counts: { done: 1 } }]], 'the change, once')
    t.match(events.at(-1), ['end', { state: 'done', counts: { done: 2 } }])
  }
  t.equal(replica.streamReads(), 5, 'no stream polled on its own: one read each as it opened')
  t.equal(replica.followers.polling, 0, 'the run ended: no poller left')
})

t.test('a store that fails while followed ends every stream without an end event (the client reconnects)', async t => {
  const replica = await follower(t)
  await claimed(replica.store, 'cleanup_failing')
  const streams = [stream(replica, 'cleanup_failing'), stream(replica, 'cleanup_failing')]
  await until(() => replica.streamReads() === 2)
  replica.failReads()
  for (const events of await Promise.all(streams)) {
    t.same(events.map(([event]) => event), ['state'], 'the stored state, then the stream ends')
  }
})

t.test('the shared poller: one per run, stopped when its last follower leaves or the run ends, fresh for a new follower', async t => {
  const { store } = memoryTrail(t)
  let reads = 0
  const followers = new StoredRunFollowers(async id => { reads++; return await store.getCleanupRun(id) }, POLL_MS)
  await claimed(store, 'cleanup_a')
  await claimed(store, 'cleanup_b')
  const seenA: Array<CleanupRun | undefined> = []
  const stopA1 = followers.follow('cleanup_a', run => { seenA.push(run) })
  const stopA2 = followers.follow('cleanup_a', () => {})
  const stopB = followers.follow('cleanup_b', () => {})
  t.equal(followers.polling, 2, 'two runs, two pollers, for three followers')
  await until(() => seenA.length >= 2)
  stopA1()
  stopA2()
  stopB()
  t.equal(followers.polling, 0, 'no follower left, no poller')
  const after = reads
  await new Promise(resolve => setTimeout(resolve, POLL_MS * 5))
  t.ok(reads <= after + 2, `at most the reads already under way finish (${reads - after})`)

  const seenAgain: Array<CleanupRun | undefined> = []
  followers.follow('cleanup_a', run => { seenAgain.push(run) })
  await until(() => seenAgain.length >= 1)
  await store.updateCleanupRun('cleanup_a', { state: 'interrupted', finishedAt: new Date().toISOString(), counts: { done: 0, stale: 0, failed: 0, skipped: 3 } })
  await until(() => seenAgain.at(-1)?.state === 'interrupted')
  t.equal(followers.polling, 0, 'the run ended: its poller stopped without anyone leaving')
  t.match(seenAgain.at(-1), { state: 'interrupted', counts: { skipped: 3 } })
  const missing: Array<CleanupRun | undefined> = []
  followers.follow('cleanup_never', run => { missing.push(run) })
  await until(() => missing.length === 1)
  t.same(missing, [undefined], 'a run the store does not have ends the following')
  t.equal(followers.polling, 0)
})

t.test('a follower joining while a read is under way is not told that read (older than its own), only later ones and the end', async t => {
  const { store } = memoryTrail(t)
  await claimed(store, 'cleanup_joining')
  let reading = 0
  let open = (): void => {}
  const followers = new StoredRunFollowers(async id => {
    reading++
    // The first read waits until the test lets it go, so the second follower joins while it is under way.
    if (reading === 1) await new Promise<void>(resolve => { open = resolve })
    return await store.getCleanupRun(id)
  }, POLL_MS)
  const early: Array<CleanupRun | undefined> = []
  const late: Array<CleanupRun | undefined> = []
  const stopEarly = followers.follow('cleanup_joining', run => { early.push(run) })
  await until(() => reading === 1)
  const stopLate = followers.follow('cleanup_joining', run => { late.push(run) })
  open()
  await until(() => early.length >= 2)
  t.equal(late.length, early.length - 1, 'the late one missed only the read sent before it joined')
  stopEarly()
  stopLate()
  await claimed(store, 'cleanup_ending')
  let pending = 0
  let finish = (): void => {}
  const ending = new StoredRunFollowers(async id => {
    pending++
    await new Promise<void>(resolve => { finish = resolve })
    return await store.getCleanupRun(id)
  }, POLL_MS)
  const first: Array<CleanupRun | undefined> = []
  const second: Array<CleanupRun | undefined> = []
  ending.follow('cleanup_ending', run => { first.push(run) })
  await until(() => pending === 1)
  ending.follow('cleanup_ending', run => { second.push(run) })
  await store.updateCleanupRun('cleanup_ending', { state: 'done', finishedAt: new Date().toISOString(), counts: { done: 1, stale: 0, failed: 0, skipped: 0 } })
  finish()
  await until(() => second.length === 1)
  t.match([first, second], [[{ state: 'done' }], [{ state: 'done' }]], 'the end reaches a follower that joined mid-read too')
})

t.test('a stream asked for before the gateway began to close, and answered after, ends at once instead of holding the close', async t => {
  let load = (): void => {}
  let handling = 0
  const replica = await follower(t, new Promise<void>(resolve => { load = resolve }), () => { handling++ })
  await claimed(replica.store, 'cleanup_closing')
  await claimed(replica.store, 'cleanup_closing_here')
  // A run this replica executes, as ActiveRuns holds one (it never ends here: no registry is involved).
  const listeners = new Set<(event: unknown) => void>()
  replica.runs.add('cleanup_closing_here', { controller: new AbortController(), listeners, finished: new Promise(() => {}) })
  const asked = [stream(replica, 'cleanup_closing'), stream(replica, 'cleanup_closing_here')]
  // Both in the handler (reading the plan) when the close begins.
  await until(() => handling === 2)
  await replica.app.close()
  load()
  for (const events of await Promise.all(asked)) t.same(events.map(([event]) => event), ['state'], 'its state, then the end of the stream, though the run goes on')
  t.equal(replica.followers.polling, 0, 'nothing left following another replica\'s run')
  t.equal(listeners.size, 0, 'nor listening to this replica\'s')
})
