/**
 * Issues 14 and 15: a scheduled retention policy with two replicas on one real PostgreSQL database runs once per
 * scheduled time, whether the replicas' timers fire together or a time is run on both by hand.
 */
import t, { type Test } from 'tap'
import type { SlotOutcome } from '../../src/cleanups/schedule.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { startGateway, type Gateway } from '../fixtures/gateway.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { config, events, MINUTE, POLICY, retention, tagsOf as tagsOfIn } from '../fixtures/schedule.js'
import { startReceiver, type Receiver } from '../fixtures/webhook-receiver.js'

const registry = await startRegistry()
t.teardown(() => registry.stop())

const tagsOf = async (name: string): Promise<string[]> => await tagsOfIn(registry.url, name)

async function replicas (
  t: Test, url: string, receiver: Receiver, policy: Record<string, unknown>, offset: number, outcomes: Array<{ replica: number, outcome: SlotOutcome }>
): Promise<[Gateway, Gateway]> {
  const gateways: Gateway[] = []
  for (const replica of [0, 1]) {
    gateways.push(await startGateway(t, {
      registries: { default: { url: registry.url, defaultMode: 'auto' } },
      policy: POLICY,
      config: config(receiver, [retention('shared', 'sched/replicas', policy)], { audit: { driver: 'postgres', url } }),
      retentionNow: () => Date.now() + offset,
      retentionObserver: (_policy, _at, outcome) => { outcomes.push({ replica, outcome }) }
    }))
  }
  return gateways as [Gateway, Gateway]
}

const postgres = await startPostgres()
t.teardown(() => postgres.stop())

t.test('issue 14 + 15: two replicas on one PostgreSQL attempt the same scheduled time; one plans or runs it, the other passes', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  await pushImage({ url: registry.url }, 'sched/replicas', ['pr-1', 'pr-2'], 'oci')
  await pushImage({ url: registry.url }, 'sched/replicas', ['main'], 'schema2')
  const [a, b] = await replicas(t, await postgres.createDatabase('schedule_manual'), receiver, { dryRunFirst: true }, 0, [])
  const at = Date.parse('2026-12-02T06:00:00Z')

  const both = await Promise.all([a.app.retentionScheduler.runSlot('shared', at), b.app.retentionScheduler.runSlot('shared', at)])
  t.equal(both.filter(each => each.outcome === 'planned').length, 1, 'one replica made the dry run')
  t.ok(both.every(each => ['planned', 'busy', 'taken'].includes(each.outcome)), 'the other passed: busy (still planning) or taken (already done)')
  t.same(await tagsOf('sched/replicas'), ['main', 'pr-1', 'pr-2'])

  const next = await Promise.all([b.app.retentionScheduler.runSlot('shared', at + 5 * MINUTE), a.app.retentionScheduler.runSlot('shared', at + 5 * MINUTE)])
  t.equal(next.filter(each => each.outcome === 'ran').length, 1, 'one replica ran the next time: the dry run is known to both')
  t.ok(next.every(each => ['ran', 'busy', 'taken'].includes(each.outcome)))
  t.same(await tagsOf('sched/replicas'), ['main'])
  const reported = await events(receiver, 2)
  t.same(reported.map(event => event.type), ['cleanup.planned', 'cleanup.finished'], 'one report per time, not one per replica')
  t.same(await b.app.retentionScheduler.runSlot('shared', at + 5 * MINUTE), { outcome: 'taken' }, 'a late timer finds the time done')
})

t.test('a scheduled policy runs once with two replicas: both timers fire at the same time', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  await pushImage({ url: registry.url }, 'sched/replicas', ['pr-3'], 'oci')
  const outcomes: Array<{ replica: number, outcome: SlotOutcome }> = []
  // The replicas' clock is put before a time the schedule names, so both real timers fire soon, together; far
  // enough before it that both have started (and armed for that time) on a busy machine.
  const offset = Math.ceil(Date.now() / (5 * MINUTE)) * 5 * MINUTE + 5 * MINUTE - 20_000 - Date.now()
  const [a] = await replicas(t, await postgres.createDatabase('schedule_timers'), receiver, { schedule: '*/5 * * * *' }, offset, outcomes)
  const [finished] = await events(receiver, 1)
  t.match(finished, { type: 'cleanup.finished', data: { policy: 'shared', counts: { done: 1 } } })
  while (outcomes.length < 2) await new Promise(resolve => setTimeout(resolve, 20))
  t.same(outcomes.map(each => each.outcome.outcome).sort(), outcomes.some(each => each.outcome.outcome === 'busy') ? ['busy', 'ran'] : ['ran', 'taken'],
    'both timers fired; one ran, the other found it busy or done')
  t.not(outcomes[0]!.replica, outcomes[1]!.replica, 'one outcome from each replica')
  t.same(await tagsOf('sched/replicas'), ['main'])
  const deleted = await a.rest('GET', '/audit?outcome=deleted&name=sched/replicas')
  t.equal(deleted.body.items.length, 1, 'pr-3 removed once, by one replica')
  t.equal((await events(receiver, 1)).length, 1, 'one report')
})

t.test('a run still going on one replica makes the next time pass on the other; the policy lock is not held by a run', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const proxy = await startFaultProxy(registry.url)
  t.teardown(() => proxy.close())
  for (const tag of ['pr-1', 'pr-2']) await pushImage({ url: registry.url }, 'sched/overlap', [tag], 'oci')
  const url = await postgres.createDatabase('schedule_overlap')
  // One connection in the lock pool: a run that held the policy's lock would leave none for its own deletions.
  const settings = (replica: number): Record<string, unknown> => ({
    ...config(receiver, [retention('overlap', 'sched/overlap')], { audit: { driver: 'postgres', url, poolSize: 1 }, cleanups: { runConcurrency: 1 } }),
    registries: { default: { url: replica === 0 ? proxy.url : registry.url, defaultMode: 'auto' } }
  })
  const a = await startGateway(t, { registries: { default: { url: proxy.url } }, policy: POLICY, config: settings(0) })
  const b = await startGateway(t, { registries: { default: { url: registry.url } }, policy: POLICY, config: settings(1) })
  let release = (): void => {}
  proxy.fault({ method: 'DELETE', action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) }, times: 1 })
  const at = Date.parse('2026-12-02T09:00:00Z')
  const first = a.app.retentionScheduler.runSlot('overlap', at)
  await proxy.waitFor(each => each.method === 'DELETE', 60_000)
  t.same(await b.app.retentionScheduler.runSlot('overlap', at + 5 * MINUTE), { outcome: 'busy' }, 'the previous run is still going on replica A')
  release()
  t.match(await first, { outcome: 'ran', run: { state: 'done', counts: { done: 2 } } }, 'with one lock connection the run deleted its tags')
  t.same(await tagsOf('sched/overlap'), [])
  t.match(await b.app.retentionScheduler.runSlot('overlap', at + 10 * MINUTE), { outcome: 'ran', run: { counts: { done: 0 } } }, 'once it ended, the next time runs')
})
