/**
 * Issue 15, scheduled retention policies against the real registry: a policy with a cron `schedule` plans and runs
 * by itself as the service identity, a dry run first when `dryRunFirst`, each scheduled time once, and reports to
 * the webhooks. Two replicas on one real PostgreSQL fire at the same time and the policy runs once.
 */
import Database from 'better-sqlite3'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pino, { type Logger } from 'pino'
import t, { type Test } from 'tap'
import { Value } from 'typebox/value'
import { nextSlot, policyFingerprint, scheduleProblem, type ScheduledPolicy, type SlotOutcome } from '../../src/cleanups/schedule.js'
import { validateConfig } from '../../src/config/load.js'
import { CleanupNotificationEventSchema } from '../../src/notifications/shapes.js'
import { slackMessage } from '../../src/notifications/slack-format.js'
import { openSqliteAuditStore, type AuditStore } from '../../src/audit/index.js'
import { outboxRouter } from '../../src/services.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { startGateway, type GatewayOptions } from '../fixtures/gateway.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { config, events, MINUTE, POLICY, retention, SECRET, tagsOf as tagsOfIn, type Event } from '../fixtures/schedule.js'
import { startReceiver, type Receiver } from '../fixtures/webhook-receiver.js'

const registry = await startRegistry()
t.teardown(() => registry.stop())

const tagsOf = async (name: string): Promise<string[]> => await tagsOfIn(registry.url, name)

t.test('the schedule grammar: five fields or a nickname, a real time zone', async t => {
  t.equal(scheduleProblem('30 3 * * *', 'UTC'), undefined)
  t.equal(scheduleProblem('@daily', 'Europe/Berlin'), undefined)
  t.match(scheduleProblem('* * * * * *', 'UTC'), /5 parts/, 'seconds are refused')
  t.match(scheduleProblem('61 * * * *', 'UTC'), /minute/)
  t.match(scheduleProblem('0 3 * * *', 'Mars/Olympus'), /timezone/i)
  const at = Date.parse('2026-12-02T08:52:10Z')
  t.equal(new Date(nextSlot('*/5 * * * *', 'UTC', at) as number).toISOString(), '2026-12-02T08:55:00.000Z')
  t.equal(new Date(nextSlot('0 3 * * *', 'Europe/Berlin', at) as number).toISOString(), '2026-12-03T02:00:00.000Z', '03:00 in Berlin is 02:00 UTC in winter')
  t.equal(nextSlot('*/5 * * * *', 'UTC', Date.parse('2026-12-02T08:55:00Z')), Date.parse('2026-12-02T09:00:00Z'), 'strictly after')
})

t.test('configuration refuses a bad schedule or time zone at start, naming the field', async t => {
  const base = { registries: { default: { url: registry.url } } }
  const policy = { name: 'p', repositories: ['a'], rules: {} }
  t.throws(() => validateConfig({ ...base, retention: { policies: [{ ...policy, schedule: '* * * * * *' }] } }, 'test'), /retention\.policies\[0\]\.schedule: .*5 parts/)
  t.throws(() => validateConfig({ ...base, retention: { policies: [{ ...policy, schedule: '@daily', timezone: 'Nowhere/Else' }] } }, 'test'), /retention\.policies\[0\]\.schedule: .*timezone/i)
  t.throws(() => validateConfig({ ...base, retention: { runAs: 'no spaces', policies: [] } }, 'test'), /runAs/)
  const valid = validateConfig({ ...base, retention: { policies: [{ ...policy, schedule: '@hourly' }] } }, 'test')
  t.match(valid.retention, { runAs: 'retention', policies: [{ schedule: '@hourly', timezone: 'UTC', dryRunFirst: false }] })
})

t.test('a change to what a policy cleans, how or as whom is a new policy for dryRunFirst', async t => {
  const policy: ScheduledPolicy = { name: 'p', repositories: ['a'], rules: { select: [{ glob: 'pr-*' }] }, timezone: 'UTC', dryRunFirst: true, schedule: '@daily' }
  const same = policyFingerprint({ ...policy, schedule: '@hourly', timezone: 'Europe/Berlin', maxDeletions: 5 }, 'retention')
  t.equal(same, policyFingerprint(policy, 'retention'), 'when it runs and its cap are not what it cleans')
  t.not(policyFingerprint({ ...policy, repositories: ['b'] }, 'retention'), same)
  t.not(policyFingerprint({ ...policy, rules: { select: [{ glob: 'pr-1*' }] } }, 'retention'), same)
  t.not(policyFingerprint({ ...policy, registry: 'other' }, 'retention'), same)
  t.not(policyFingerprint(policy, 'janitor'), same)
  t.not(policyFingerprint({ ...policy, runAs: 'janitor' }, 'retention'), same)
})

t.test('the Slack format of each cleanup event', async t => {
  const base = { id: 'e', timestamp: '2026-12-02T00:00:00.000Z' }
  const data = { policy: 'p<x>', scheduledFor: '2026-12-02T00:00:00.000Z', subject: 'service:retention', registry: 'default', repositories: ['a/*'], dryRun: false }
  const totals = { repositories: 1, tags: 3, remove: 2, keep: 1, refuse: 0, deletedDigests: 1, untagged: 1, hiddenTags: 0 }
  t.match(slackMessage({ ...base, type: 'cleanup.planned', data: { ...data, dryRun: true, cleanupId: 'c1', totals } }).text, /p&lt;x&gt;.*planned a dry run\. would remove 2, keep 1, refuse 0 of 3 tags; cleanup c1/)
  t.match(slackMessage({ ...base, type: 'cleanup.finished', data: { ...data, state: 'done', counts: { done: 2, stale: 0, failed: 0, skipped: 0 } } }).text, /ran: done\. done 2, stale 0/)
  t.match(slackMessage({ ...base, type: 'cleanup.finished', data: { ...data, counts: { done: 0, stale: 0, failed: 0, skipped: 0 } } }).text, /ran: done/)
  t.match(slackMessage({ ...base, type: 'cleanup.failed', data: { ...data, errorCode: 'FORBIDDEN', detail: 'no' } }).text, /did not run\. FORBIDDEN: no/)
  t.match(slackMessage({ ...base, type: 'cleanup.failed', data }).text, /did not run\. error: $/)
})

t.test('dry run first, then the next scheduled time runs as the service identity, each time once, reported signed', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  await pushImage({ url: registry.url }, 'sched/app', ['pr-1', 'pr-2', 'keep-me'], 'oci')
  await pushImage({ url: registry.url }, 'sched/app', ['latest'], 'schema2')
  const gateway = await startGateway(t, {
    registries: { default: { url: registry.url, defaultMode: 'auto' } },
    policy: POLICY,
    config: config(receiver, [retention('nightly', 'sched/app', { dryRunFirst: true, rules: { select: [{ glob: 'pr-*' }, { glob: 'keep-*' }] } })])
  })
  const scheduler = gateway.app.retentionScheduler
  const first = Date.parse('2026-12-02T03:00:00Z')

  const planned = await scheduler.runSlot('nightly', first)
  t.match(planned, { outcome: 'planned' })
  t.same(await tagsOf('sched/app'), ['keep-me', 'latest', 'pr-1', 'pr-2'], 'a dry run changes nothing')
  const [dry] = await events(receiver, 1)
  t.match(dry, {
    type: 'cleanup.planned',
    data: { policy: 'nightly', scheduledFor: '2026-12-02T03:00:00.000Z', subject: 'service:retention', registry: 'default', repositories: ['sched/app'], dryRun: true, totals: { remove: 2, keep: 2, tags: 4 } }
  })
  t.ok(Value.Check(CleanupNotificationEventSchema, dry), 'the documented shape')
  const kept = await gateway.rest('GET', `/cleanups/${(planned as { cleanupId: string }).cleanupId}`)
  t.match(kept.body, { createdBy: 'service:retention', policy: 'nightly', totals: { remove: 2 } }, 'the dry run\'s plan can be reviewed')
  t.match(kept.body.entries.find((entry: { tag: string }) => entry.tag === 'keep-me'), { outcome: 'keep', rule: 'protected' })

  t.same(await scheduler.runSlot('nightly', first), { outcome: 'taken' }, 'the same time again does nothing')

  const ran = await scheduler.runSlot('nightly', first + 5 * MINUTE)
  t.match(ran, { outcome: 'ran', run: { state: 'done', counts: { done: 2, failed: 0 } } })
  t.same(await tagsOf('sched/app'), ['keep-me', 'latest'], 'the unchanged policy runs at its next time')
  const finished = (await events(receiver, 2))[1] as Event
  t.match(finished, { type: 'cleanup.finished', data: { dryRun: false, state: 'done', counts: { done: 2 }, cleanupId: (ran as { cleanupId: string }).cleanupId } })
  t.equal(finished.id, `evt_cleanup_${(ran as { cleanupId: string }).cleanupId}_finished`)
  const audit = await gateway.rest('GET', `/audit?cleanupId=${(ran as { cleanupId: string }).cleanupId}&outcome=deleted`)
  t.equal(audit.body.items.length, 2)
  t.ok(audit.body.items.every((item: { subject: string, transport: string }) => item.subject === 'service:retention' && item.transport === 'schedule'),
    'audited as the service identity, transport schedule')
  const deliveries = await gateway.rest('GET', '/notifications/deliveries')
  t.ok(deliveries.body.items.some((item: { eventType: string }) => item.eventType === 'cleanup.finished'), 'the report is listed with the deliveries')
})

t.test('what a scheduled run refuses: an identity that may delete nothing, a plan over its cap, a registry that fails', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  await pushImage({ url: registry.url }, 'sched/capped', ['pr-1', 'pr-2', 'pr-3'], 'oci')
  const gateway = await startGateway(t, {
    registries: { default: { url: registry.url, defaultMode: 'auto' } },
    policy: POLICY,
    config: config(receiver, [
      retention('readonly', 'sched/capped', { runAs: 'readonly' }),
      retention('capped', 'sched/capped', { maxDeletions: 2 }),
      retention('elsewhere', 'sched/capped', { registry: 'down' })
    ], { registries: { default: { url: registry.url, defaultMode: 'auto' }, down: { url: 'http://127.0.0.1:9', timeouts: { connectMs: 200, requestMs: 500 } } } })
  })
  const scheduler = gateway.app.retentionScheduler
  const at = Date.parse('2026-12-02T04:00:00Z')

  t.match(await scheduler.runSlot('readonly', at), { outcome: 'failed', errorCode: 'FORBIDDEN' })
  t.match(await scheduler.runSlot('readonly', at + 5 * MINUTE), { outcome: 'failed', errorCode: 'FORBIDDEN' }, 'a failed plan holds up no later time')
  t.match((await events(receiver, 1))[0], { type: 'cleanup.failed', data: { subject: 'service:readonly', errorCode: 'FORBIDDEN', detail: /may delete no tag/ } })

  const capped = await scheduler.runSlot('capped', at)
  t.match(capped, { outcome: 'failed', errorCode: 'INVALID_REQUEST' })
  t.ok((capped as { cleanupId?: string }).cleanupId, 'the plan over the cap is kept to review')
  t.match((await events(receiver, 3)).find(event => event.data.errorCode === 'INVALID_REQUEST'),
    { type: 'cleanup.failed', data: { detail: /more than maxDeletions \(2\)/, cleanupId: (capped as { cleanupId?: string }).cleanupId } })
  t.same(await tagsOf('sched/capped'), ['pr-1', 'pr-2', 'pr-3'], 'nothing removed over the cap')

  t.match(await scheduler.runSlot('elsewhere', at), { outcome: 'failed', errorCode: /^UPSTREAM_/ })
  await t.rejects(scheduler.runSlot('nope', at), /no scheduled retention policy nope/)
})

t.test('policies sharing a service identity and a time all run: scheduled plans take turns, none is refused 429', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const names = ['one', 'two', 'three', 'four']
  for (const name of names) await pushImage({ url: registry.url }, `sched/${name}`, ['pr-1'], 'oci')
  const gateway = await startGateway(t, {
    registries: { default: { url: registry.url, defaultMode: 'auto' } },
    policy: POLICY,
    config: config(receiver, names.map(name => retention(name, `sched/${name}`))),
    // An observer that fails is logged, never a crash.
    retentionObserver: () => { throw new Error('observer bug') }
  })
  const at = Date.parse('2026-12-02T03:30:00Z')
  const outcomes = await Promise.all(names.map(async name => await gateway.app.retentionScheduler.runSlot(name, at)))
  t.same(outcomes.map(outcome => outcome.outcome), ['ran', 'ran', 'ran', 'ran'])
  for (const name of names) t.same(await tagsOf(`sched/${name}`), [])
})

t.test('a policy still running here skips its next time; once the gateway closed nothing runs', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  await pushImage({ url: registry.url }, 'sched/slow', ['pr-1', 'pr-2'], 'oci')
  const outcomes: SlotOutcome[] = []
  const gateway = await startGateway(t, {
    registries: { default: { url: registry.url, defaultMode: 'auto' } },
    policy: POLICY,
    // A webhook that takes no cleanup events: the scheduled runs report to nobody.
    config: { ...config(receiver, [retention('slow', 'sched/slow')]), notifications: { webhooks: [{ name: 'images', url: receiver.url, secret: SECRET, events: ['deleted'] }] } },
    retentionObserver: (_policy, _at, outcome) => { outcomes.push(outcome) }
  })
  const scheduler = gateway.app.retentionScheduler
  const at = Date.parse('2026-12-02T05:00:00Z')
  const first = scheduler.runSlot('slow', at)
  // Synchronously after the first started: it cannot have ended.
  t.same(await scheduler.runSlot('slow', at + 5 * MINUTE), { outcome: 'busy' })
  t.match(await first, { outcome: 'ran' })
  t.same(outcomes.map(outcome => outcome.outcome), ['busy', 'ran'], 'the observer hears both')
  t.notOk(receiver.received.some(received => received.body.includes('"cleanup.')), 'no cleanup event for a webhook that did not subscribe')
  await gateway.app.close()
  t.same(await scheduler.runSlot('slow', at + 10 * MINUTE), { outcome: 'failed', errorCode: 'AUDIT_UNAVAILABLE' }, 'after the store closed nothing runs')
})

t.test('the timer: the next scheduled time comes and the policy runs by itself', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  await pushImage({ url: registry.url }, 'sched/timer', ['pr-1', 'latest'], 'oci')
  // The gateway's clock is put a little before a time the schedule names, so the real timer fires soon.
  const offset = Math.ceil(Date.now() / (5 * MINUTE)) * 5 * MINUTE + 5 * MINUTE - 5000 - Date.now()
  const outcomes: Array<{ at: string, outcome: SlotOutcome }> = []
  await startGateway(t, {
    registries: { default: { url: registry.url, defaultMode: 'auto' } },
    policy: POLICY,
    config: config(receiver, [retention('timer', 'sched/timer', { schedule: '*/5 * * * *' })]),
    retentionNow: () => Date.now() + offset,
    retentionObserver: (_policy, at, outcome) => { outcomes.push({ at, outcome }) }
  })
  const [event] = await events(receiver, 1)
  t.match(event, { type: 'cleanup.finished', data: { policy: 'timer', state: 'done', counts: { done: 1 } } })
  t.equal(new Date(event!.data.scheduledFor).getTime() % (5 * MINUTE), 0, 'for a time the schedule names')
  t.same(await tagsOf('sched/timer'), ['latest'], 'pr-1 untagged, its co-tag kept')
  t.match(outcomes, [{ outcome: { outcome: 'ran' } }])
})

t.test('a gateway that stops mid-run stops its scheduled run: removals in flight finish, the rest are skipped, reported', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  // Three images: three digest deletions, one at a time.
  for (const tag of ['pr-1', 'pr-2', 'pr-3']) await pushImage({ url: registry.url }, 'sched/stopped', [tag], 'oci')
  // The gateway's store, kept open after the gateway closed, to read what the next process would deliver.
  const dir = mkdtempSync(join(tmpdir(), 'rdg-schedule-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const settings = config(receiver, [retention('stopped', 'sched/stopped')], { cleanups: { runConcurrency: 1 } })
  const store = openSqliteAuditStore(join(dir, 'audit.db'), { outbox: outboxRouter({ notifications: settings.notifications } as never) })
  t.teardown(() => store.close())
  const gateway = await startGateway(t, { registries: { default: { url: proxy.url, defaultMode: 'auto' } }, policy: POLICY, config: settings, auditStore: store })
  // The registry holds the run's first DELETE until the gateway is closing.
  let release = (): void => {}
  proxy.fault({ method: 'DELETE', action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) }, times: 1 })
  const running = gateway.app.retentionScheduler.runSlot('stopped', Date.parse('2026-12-02T07:00:00Z'))
  await proxy.waitFor(each => each.method === 'DELETE', 60_000)
  const closing = gateway.app.close()
  release()
  await closing
  const outcome = await running
  t.match(outcome, { outcome: 'ran', run: { state: 'interrupted', counts: { done: 1, skipped: 2 } } }, 'the held removal finished, the others never started')
  const db = new Database(join(dir, 'audit.db'), { readonly: true })
  t.teardown(() => db.close())
  const report = db.prepare("SELECT body FROM audit_outbox WHERE event_type = 'cleanup.finished'").get() as { body: string } | undefined
  t.match(JSON.parse(report?.body ?? '{}'), { type: 'cleanup.finished', data: { state: 'interrupted', counts: { done: 1, skipped: 2 } } },
    'the report is in the outbox, delivered or for the next process to deliver')
})

/**
 * A real SQLite trail whose outbox routes to a webhook receiver, kept open by the test (so a fault wrapper can sit
 * on it), and a logger whose lines the test reads.
 */
async function loggedTrail (t: Test): Promise<{ dir: string, receiver: Receiver, real: AuditStore, lines: string[], logger: Logger }> {
  const dir = mkdtempSync(join(tmpdir(), 'rdg-schedule-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const notifications = config(receiver, []).notifications as Record<string, unknown>
  const real = openSqliteAuditStore(join(dir, 'audit.db'), { outbox: outboxRouter({ notifications } as never) })
  t.teardown(() => real.close())
  const lines: string[] = []
  const sink = new Writable({ write (chunk: Buffer, _encoding, done) { lines.push(chunk.toString('utf8')); done() } })
  return { dir, receiver, real, lines, logger: pino({ level: 'info' }, sink) }
}

t.test('a report the outbox cannot take is logged, and the run stands', async t => {
  const { receiver, real, lines, logger } = await loggedTrail(t)
  // A fault only here: an outbox failing exactly when the report is written, after the run, is not something a
  // real store can be made to do on cue.
  const store = {
    ...real,
    publish: async () => { throw new Error('outbox unavailable') },
    shared: {
      ...real.shared,
      putPlan: async (...args: Parameters<typeof real.shared.putPlan>) => {
        if (args[0].kind === 'retention-dry-run') throw new Error('store unavailable')
        await real.shared.putPlan(...args)
      }
    }
  }
  await pushImage({ url: registry.url }, 'sched/unreported', ['pr-1'], 'oci')
  const gateway = await startGateway(t, {
    registries: { default: { url: registry.url, defaultMode: 'auto' } },
    policy: POLICY,
    config: config(receiver, [retention('unreported', 'sched/unreported'), retention('unmarked', 'sched/unreported', { dryRunFirst: true })]),
    auditStore: store,
    logger
  })
  t.match(await gateway.app.retentionScheduler.runSlot('unreported', Date.parse('2026-12-02T08:00:00Z')), { outcome: 'ran', run: { state: 'done' } })
  t.same(await tagsOf('sched/unreported'), [])
  t.ok(lines.some(line => line.includes('could not be written to the outbox') && line.includes('unreported')), 'an operator hears of it')
  t.match(await gateway.app.retentionScheduler.runSlot('unmarked', Date.parse('2026-12-02T08:00:00Z')), { outcome: 'failed', errorCode: 'INTERNAL_ERROR' },
    'a store failing between the use cases fails the time, reported as such')
})

t.test('a clock set back before the scheduled time: the timer waits again and runs the time once', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  await pushImage({ url: registry.url }, 'sched/clock', ['pr-1'], 'oci')
  let offset = Math.ceil(Date.now() / (5 * MINUTE)) * 5 * MINUTE + 5 * MINUTE - 6000 - Date.now()
  const outcomes: Array<{ at: string, outcome: SlotOutcome }> = []
  await startGateway(t, {
    registries: { default: { url: registry.url, defaultMode: 'auto' } },
    policy: POLICY,
    config: config(receiver, [retention('clock', 'sched/clock', { schedule: '*/5 * * * *' })]),
    retentionNow: () => Date.now() + offset,
    retentionObserver: (_policy, at, outcome) => { outcomes.push({ at, outcome }) }
  })
  // Before the timer fires, the clock goes back a second: at the timer, the scheduled time has not come yet.
  offset -= 1000
  const [event] = await events(receiver, 1)
  t.match(event, { type: 'cleanup.finished', data: { policy: 'clock', counts: { done: 1 } } })
  t.equal(outcomes.length, 1, 'run once')
  t.equal(Date.parse(outcomes[0]!.at) % (5 * MINUTE), 0)
})

/**
 * Two gateways on one SQLite trail, as a replica killed mid-run and the one that starts next: a webhook receiver,
 * a proxy that holds the next DELETE on cue, `tags` pushed to `repository`, and the options both gateways start with.
 */
interface SharedTrail {
  options: GatewayOptions
  auditPath: string
  proxy: Awaited<ReturnType<typeof startFaultProxy>>
  receiver: Receiver
  /** Holds the next DELETE; the function returned lets it through. */
  holdNextDelete: () => () => void
}

async function sharedTrail (t: Test, repository: string, tags: string[], policy: Record<string, unknown>): Promise<SharedTrail> {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  for (const tag of tags) await pushImage({ url: registry.url }, repository, [tag], 'oci')
  const dir = mkdtempSync(join(tmpdir(), 'rdg-schedule-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const auditPath = join(dir, 'audit.db')
  const settings = config(receiver, [policy], { cleanups: { runConcurrency: 1 } })
  const holdNextDelete = (): () => void => {
    let release = (): void => {}
    proxy.fault({ method: 'DELETE', action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) }, times: 1 })
    return () => { release() }
  }
  return { options: { registries: { default: { url: proxy.url, defaultMode: 'auto' } }, policy: POLICY, config: settings, auditPath }, auditPath, proxy, receiver, holdNextDelete }
}

t.test('a scheduled run whose replica stops mid-run: the replica that marks it interrupted reports the time, once', async t => {
  const { options, auditPath, proxy, holdNextDelete, receiver } = await sharedTrail(t, 'sched/orphaned', ['pr-1', 'pr-2', 'pr-3'], retention('orphaned', 'sched/orphaned'))
  const first = await startGateway(t, options)
  const release = holdNextDelete()
  const slot = Date.parse('2026-12-02T09:00:00Z')
  const running = first.app.retentionScheduler.runSlot('orphaned', slot)
  await proxy.waitFor(each => each.method === 'DELETE', 60_000)
  // The first gateway's run cannot end while its DELETE is held: to a gateway starting on the same trail it is a
  // run some stopped process left, as after kill -9 (SQLite: one host, so a start marks every earlier run).
  await startGateway(t, options)
  const [report] = await events(receiver, 1)
  t.match(report, {
    type: 'cleanup.finished',
    data: { policy: 'orphaned', scheduledFor: '2026-12-02T09:00:00.000Z', subject: 'service:retention', state: 'interrupted', totals: { remove: 3 } }
  }, 'reported by the gateway that marked it')
  t.ok(Value.Check(CleanupNotificationEventSchema, report), 'in the documented shape')
  release()
  const outcome = await running
  t.match(outcome, { outcome: 'ran', run: { state: 'interrupted' } }, 'the first gateway finds its run marked and stops')
  t.equal(report?.data.cleanupId, (outcome as { cleanupId: string }).cleanupId)
  const db = new Database(auditPath, { readonly: true })
  t.teardown(() => db.close())
  const written = db.prepare("SELECT COUNT(*) AS n FROM audit_outbox WHERE event_type = 'cleanup.finished'").get() as { n: number }
  t.equal(written.n, 1, 'its own report, made as it stopped, is the same event: one in the outbox')
})

t.test('reporting interrupted runs: only a scheduled policy\'s latest run is reported; a store that fails is logged', async t => {
  const { dir, receiver, real, lines, logger } = await loggedTrail(t)
  // A fault only here: the shared store failing just when an interrupted run is looked up cannot be made on cue.
  let failing = false
  const store = {
    ...real,
    shared: {
      ...real.shared,
      peekPlan: async (...args: Parameters<typeof real.shared.peekPlan>) => {
        if (failing) throw new Error('store unavailable')
        return await real.shared.peekPlan(...args)
      }
    }
  }
  const gateway = await startGateway(t, {
    registries: { default: { url: registry.url, defaultMode: 'auto' } },
    policy: POLICY,
    config: config(receiver, [retention('never-ran', 'sched/none'), retention('leased', 'sched/none'), retention('old-marker', 'sched/none')]),
    auditStore: store,
    logger
  })
  const marker = (id: string, payload: object): Parameters<typeof real.shared.putPlan>[0] =>
    ({ kind: 'retention-last', id, payload, requester: 'service:retention', expiresMs: Date.now() + MINUTE })
  // A policy being planned holds a lease without a run; a marker written before times were kept names only the run.
  await real.shared.putPlan(marker('leased', {}), 100, Date.now())
  await real.shared.putPlan(marker('old-marker', { cleanupId: 'cleanup_old' }), 100, Date.now())
  await gateway.app.retentionScheduler.reportInterrupted(['cleanup_old', 'cleanup_other'])
  failing = true
  await gateway.app.retentionScheduler.reportInterrupted(['cleanup_old'])
  t.equal(lines.filter(line => line.includes('an interrupted scheduled cleanup could not be reported')).length, 3, 'each policy\'s failure logged')
  const db = new Database(join(dir, 'audit.db'), { readonly: true })
  t.teardown(() => db.close())
  t.equal((db.prepare('SELECT COUNT(*) AS n FROM audit_outbox').get() as { n: number }).n, 0, 'nothing reported: no policy\'s latest run was among them')
})

t.test('a dry run\'s plan executed by hand, whose gateway stops mid-run, is not reported as the policy\'s scheduled run', async t => {
  const { options, auditPath, proxy, holdNextDelete } = await sharedTrail(t, 'sched/by-hand', ['pr-1', 'pr-2'], retention('by-hand', 'sched/by-hand', { dryRunFirst: true }))
  const first = await startGateway(t, options)
  const planned = await first.app.retentionScheduler.runSlot('by-hand', Date.parse('2026-12-02T10:00:00Z'))
  t.match(planned, { outcome: 'planned' })
  const release = holdNextDelete()
  const cleanupId = (planned as { cleanupId: string }).cleanupId
  t.match(await first.rest('POST', `/cleanups/${cleanupId}/execute`), { status: 202, body: { startedBy: 'apikey:admin' } }, 'an admin runs the dry run\'s plan')
  await proxy.waitFor(each => each.method === 'DELETE', 60_000)
  // As above: a gateway starting on the same trail marks the first one's run interrupted (and has told the scheduler).
  await startGateway(t, options)
  release()
  const db = new Database(auditPath, { readonly: true })
  t.teardown(() => db.close())
  t.equal((db.prepare('SELECT state FROM cleanup_runs WHERE cleanup_id = ?').get(cleanupId) as { state: string }).state, 'interrupted', 'marked')
  const written = db.prepare('SELECT event_type FROM audit_outbox ORDER BY event_type').all() as Array<{ event_type: string }>
  t.same(written.map(row => row.event_type), ['cleanup.planned'], 'only the dry run\'s report: the admin\'s run is not the policy\'s')
})
