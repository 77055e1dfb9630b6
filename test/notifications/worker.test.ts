import t, { type Test } from 'tap'
import { Webhook } from 'standardwebhooks'
import { Value } from 'typebox/value'
import { openSqliteAuditStore, type AuditRecord, type AuditStore, type NewAuditRecord } from '../../src/audit/index.js'
import type { WebhookConfig } from '../../src/config/schema.js'
import { eventNameFor, toNotificationEvent, webhookRouter } from '../../src/notifications/events.js'
import { NotificationEventSchema } from '../../src/notifications/shapes.js'
import { retryDelayMs, startDeliveryWorker, type DeliveryWorkerOptions } from '../../src/notifications/worker.js'
import { attempt } from '../fixtures/audit-store-contract.js'
import { startReceiver } from '../fixtures/webhook-receiver.js'

const SECRET = `whsec_${Buffer.from('a test secret of 32 bytes exactly').toString('base64')}`
const FORGED = `whsec_${Buffer.from('not the secret, also 32 bytes!!!').toString('base64')}`

interface Logged { level: 'info' | 'warn', details: Record<string, unknown>, message: string }

function hook (url: string, overrides: Partial<WebhookConfig> = {}): WebhookConfig {
  return { name: 'std', url, secret: SECRET, events: ['deleted', 'untagged', 'restored', 'refused'], format: 'standard', timeoutMs: 2000, ...overrides }
}

/** A store routed to `webhooks` (plus `extra` names the worker does not know) and a worker delivering it. */
function setup (t: Test, webhooks: WebhookConfig[], options: Partial<DeliveryWorkerOptions> & { extra?: string[], store?: AuditStore } = {}) {
  const router = webhookRouter([...webhooks, ...(options.extra ?? []).map(name => ({ name, events: ['deleted' as const] }))])
  const store = options.store ?? openSqliteAuditStore(':memory:', { outbox: router })
  const logs: Logged[] = []
  const attempts: string[] = []
  const worker = startDeliveryWorker({
    store,
    webhooks,
    logger: {
      info: (details, message) => { logs.push({ level: 'info', details: details as Record<string, unknown>, message }) },
      warn: (details, message) => { logs.push({ level: 'warn', details: details as Record<string, unknown>, message }) }
    },
    observer: { webhookAttempt: (endpoint, result) => { attempts.push(`${endpoint}:${result}`) } },
    pollMs: 20,
    concurrency: 4,
    retry: { firstDelayMs: 50, maxDelayMs: 200 },
    ...options
  })
  t.teardown(async () => { await worker.stop(); await store.close() })
  return { store, worker, logs, attempts }
}

async function until<T> (what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

async function deletion (store: AuditStore, overrides: Partial<NewAuditRecord> = {}): Promise<AuditRecord> {
  const pending = await store.append(attempt({ digest: `sha256:${'d'.repeat(64)}`, mode: 'digest', ...overrides }))
  return await store.update(pending.id, { outcome: 'deleted', deleteAction: 'deleted-digest', strategy: 'digest' })
}

async function statusOf (store: AuditStore, endpoint = 'std'): Promise<string | undefined> {
  return (await store.listDeliveries({}, { limit: 10 })).items.find(item => item.endpoint === endpoint)?.status
}

t.test('a deletion becomes one signed event: the standardwebhooks package verifies it, a forged secret does not', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const { store, attempts, logs } = setup(t, [hook(receiver.url)])
  const record = await deletion(store)
  const received = await receiver.nth(1)
  const verified = new Webhook(SECRET).verify(received.body, received.headers as Record<string, string>)
  t.ok(Value.Check(NotificationEventSchema, verified), 'the event has the documented shape')
  t.match(verified, {
    id: `evt_${record.id}`,
    type: 'image.deleted',
    timestamp: record.time,
    data: { auditId: record.id, subject: 'alice', registry: 'main', name: 'team/app', tag: 'v1', digest: `sha256:${'d'.repeat(64)}`, deleteAction: 'deleted-digest' }
  })
  t.equal(received.headers['webhook-id'], `evt_${record.id}`)
  t.equal(received.headers['content-type'], 'application/json')
  t.throws(() => new Webhook(FORGED).verify(received.body, received.headers as Record<string, string>), /No matching signature/, 'another secret fails')
  t.throws(() => new Webhook(SECRET).verify(received.body.replace('alice', 'mallory'), received.headers as Record<string, string>), /No matching signature/,
    'a changed body fails')
  await until('delivered', async () => await statusOf(store) === 'delivered')
  t.same(attempts, ['std:delivered'])
  t.match(logs, [{ level: 'info', message: 'webhook delivered', details: { endpoint: 'std', eventId: `evt_${record.id}`, attempts: 1 } }])
  t.notOk(JSON.stringify(logs).includes(SECRET.slice(6, 20)) || JSON.stringify(logs).includes(receiver.url), 'neither the secret nor the URL is logged')
  t.equal(receiver.received.length, 1, 'one event')
})

t.test('failures are retried with backoff under the same id until one is delivered; each attempt is signed anew', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  receiver.answer = 503
  const { store, attempts } = setup(t, [hook(receiver.url)])
  const record = await deletion(store)
  await receiver.nth(2)
  receiver.answer = 200
  await until('delivered', async () => await statusOf(store) === 'delivered')
  t.same(attempts.slice(0, 2), ['std:retried', 'std:retried'])
  t.equal(attempts.at(-1), 'std:delivered')
  t.same(new Set(receiver.received.map(received => received.headers['webhook-id'])), new Set([`evt_${record.id}`]), 'one id for every attempt')
  for (const received of receiver.received) t.ok(new Webhook(SECRET).verify(received.body, received.headers as Record<string, string>))
  const [delivery] = (await store.listDeliveries({}, { limit: 1 })).items
  t.match(delivery, { status: 'delivered', attempts: receiver.received.length, lastStatus: 200 })
})

t.test('an endpoint that is down, then up, gets the event after a retry', async t => {
  const receiver = await startReceiver({ up: false })
  t.teardown(() => receiver.down())
  const { store, logs } = setup(t, [hook(receiver.url)])
  await deletion(store)
  const failed = await until('a failed attempt', async () => (await store.listDeliveries({}, { limit: 1 })).items.find(item => item.attempts >= 1 && item.lastError !== undefined))
  t.match(failed, { status: 'pending', lastError: 'no answer: ECONNREFUSED' })
  t.match(logs.find(log => log.level === 'warn'), { message: 'webhook attempt failed; retrying later', details: { result: 'retried', error: 'no answer: ECONNREFUSED' } })
  await receiver.up()
  await until('delivered', async () => await statusOf(store) === 'delivered')
  t.equal(receiver.received.length, 1)
})

t.test('410 Gone stops at once; an endpoint that hangs times out and is retried; a removed webhook fails its rows', async t => {
  const gone = await startReceiver()
  const slow = await startReceiver()
  t.teardown(async () => { await gone.down(); await slow.down() })
  gone.answer = 410
  slow.answer = 'hang'
  const { store, attempts } = setup(t, [hook(gone.url, { name: 'gone' }), hook(slow.url, { name: 'slow', timeoutMs: 150 })], { extra: ['removed'] })
  await deletion(store)
  await until('gone failed', async () => await statusOf(store, 'gone') === 'failed')
  await until('removed failed', async () => await statusOf(store, 'removed') === 'failed')
  const items = (await store.listDeliveries({}, { limit: 10 })).items
  t.match(items.find(item => item.endpoint === 'gone'), { lastStatus: 410, lastError: 'the endpoint answered 410 Gone: not retried', attempts: 1 })
  t.match(items.find(item => item.endpoint === 'removed'), { lastError: 'no webhook named removed is configured any more' })
  const timedOut = await until('a timed-out attempt', async () => (await store.listDeliveries({}, { limit: 10 })).items.find(item => item.endpoint === 'slow' && item.lastError !== undefined))
  t.match(timedOut, { status: 'pending', lastError: 'no answer: TimeoutError' })
  slow.answer = 204
  await until('slow delivered', async () => await statusOf(store, 'slow') === 'delivered')
  t.ok(attempts.includes('gone:failed') && attempts.includes('slow:retried') && attempts.includes('slow:delivered'), attempts.join(' '))
  t.equal(gone.received.length, 1, '410 is never retried')
})

t.test('slack format: {text, blocks} to the incoming webhook, unsigned, what callers named escaped', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const { store } = setup(t, [hook(receiver.url, { name: 'slack', format: 'slack', secret: undefined })])
  const record = await deletion(store, { tag: 'v<1>', removedTags: ['v<1>', 'latest'], approvedBy: 'bob' })
  const denied = await store.append(attempt({ outcome: 'denied', decision: { allow: false, reason: 'no rule lets alice delete' } }))
  await receiver.nth(2)
  t.equal(receiver.received[0]?.headers['webhook-signature'], undefined)
  t.equal(receiver.received[0]?.headers['content-type'], 'application/json')
  const [first, second] = receiver.received.map(received => JSON.parse(received.body) as { text: string, blocks: Array<{ type: string, text: { text: string } }> })
  t.equal(first?.text, `main/team/app:v&lt;1&gt; deleted by alice (approved by bob). tags removed: v&lt;1&gt;, latest; digest sha256:${'d'.repeat(64)}; audit ${record.id}`)
  t.match(first?.blocks, [{ type: 'section', text: { type: 'mrkdwn', text: /^\*main\/team\/app:v&lt;1&gt; deleted by alice/ } }])
  t.equal(second?.text, `A deletion of main/team/app:v1 by alice was refused. reason: no rule lets alice delete; audit ${denied.id}`)
})

t.test('an event the slack formatter cannot read is given up with the reason, not claimed again forever', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const webhooks = [hook(receiver.url, { name: 'slack', format: 'slack', secret: undefined }), hook(receiver.url)]
  const real = openSqliteAuditStore(':memory:', { outbox: webhookRouter(webhooks) })
  let claims = 0
  // A row whose body no longer parses (written by another version, or damaged): only the slack endpoint parses it.
  const store: AuditStore = {
    ...real,
    claimDeliveries: async (limit, leaseMs) => (await real.claimDeliveries(limit, leaseMs)).map(row => {
      if (row.endpoint === 'slack') claims++
      return { ...row, body: '{"type": "image.deleted", "data": trunc' }
    })
  }
  const { attempts, logs } = setup(t, webhooks, { store })
  await deletion(real)
  await until('slack failed', async () => await statusOf(real, 'slack') === 'failed')
  await until('std delivered', async () => await statusOf(real, 'std') === 'delivered')
  t.match((await real.listDeliveries({}, { limit: 10 })).items.find(item => item.endpoint === 'slack'),
    { status: 'failed', attempts: 1, lastError: 'the event could not be formatted for this endpoint (SyntaxError): not retried' })
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(claims, 1, 'claimed once, not again')
  t.ok(attempts.includes('slack:failed'), attempts.join(' '))
  t.notMatch(JSON.stringify(logs), /trunc/, 'the body is not logged')
  t.equal(receiver.received.length, 1, 'only the standard endpoint got a post')
})

t.test('an attempt that outlived its lease records nothing: the claim that took the row over finishes it', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  const webhooks = [hook(receiver.url)]
  let clock = Date.parse('2026-01-01T00:00:00Z')
  const inner = openSqliteAuditStore(':memory:', { outbox: webhookRouter(webhooks), now: () => new Date(clock) })
  let takenOver: Awaited<ReturnType<AuditStore['claimDeliveries']>> = []
  // Right after the worker's claim, its lease runs out and another replica claims the row (attempt 2).
  const store: AuditStore = {
    ...inner,
    claimDeliveries: async (limit, leaseMs) => {
      const rows = await inner.claimDeliveries(limit, leaseMs)
      if (rows.length > 0) {
        clock += leaseMs + 1
        takenOver = await inner.claimDeliveries(10, leaseMs)
      }
      return rows
    }
  }
  const { attempts, logs } = setup(t, webhooks, { store })
  await deletion(inner)
  const late = await until('the late finish', () => logs.find(log => log.message === 'a webhook attempt outlived its lease; another claim records the row'))
  t.match(late.details, { endpoint: 'std', attempts: 1, delivered: true })
  t.match(takenOver, [{ endpoint: 'std', attempts: 2 }])
  t.match((await inner.listDeliveries({}, { limit: 1 })).items[0], { status: 'pending', attempts: 2, lastStatus: undefined }, 'attempt 1 recorded nothing')
  t.same(attempts, [], 'nor counted')
  t.equal(await inner.finishDelivery(takenOver[0]?.eventId as string, 'std', { delivered: true, status: 204 }, 2), 'delivered')
  t.equal(receiver.received.length, 1)
})

t.test('the events records make: deleted, untagged, restored, refused; nothing for the rest', async t => {
  const base = { id: '01HX0000000000000000000000', time: '2024-05-01T00:00:00.000Z', ...attempt() } as AuditRecord
  t.equal(eventNameFor({ ...base, outcome: 'deleted' }), 'deleted')
  t.equal(eventNameFor({ ...base, outcome: 'deleted', deleteAction: 'untagged' }), 'untagged')
  t.equal(eventNameFor({ ...base, action: 'restore', outcome: 'restored' }), 'restored')
  t.equal(eventNameFor({ ...base, outcome: 'denied' }), 'refused')
  t.equal(eventNameFor({ ...base, action: 'restore', outcome: 'rejected' }), 'refused')
  t.equal(eventNameFor({ ...base, action: 'approve', outcome: 'approved' }), 'approved')
  t.equal(eventNameFor({ ...base, action: 'approve', outcome: 'denied' }), undefined, 'a refused approval is audited, not announced')
  t.equal(eventNameFor({ ...base, outcome: 'pending' }), undefined)
  t.equal(eventNameFor({ ...base, outcome: 'failed' }), undefined)
  t.equal(eventNameFor({ ...base, action: 'restore', outcome: 'failed' }), undefined)
  t.equal(eventNameFor({ ...base, action: 'dry-run', outcome: 'dry-run' }), undefined)
  t.equal(eventNameFor({ ...base, action: 'read', outcome: 'denied' }), undefined, 'a refused read is not a refused deletion')
  const refused = toNotificationEvent({ ...base, outcome: 'rejected', errorCode: 'SHARED_DIGEST' }, 'refused')
  t.equal(refused.data.errorCode, 'SHARED_DIGEST')
  t.equal(toNotificationEvent({ ...base, outcome: 'failed', errorCode: 'UPSTREAM_ERROR' }, 'deleted').data.errorCode, undefined, 'only a refusal carries a code')
  t.same(webhookRouter([{ name: 'a', events: ['restored'] }])?.({ ...base, outcome: 'deleted' }), [], 'no webhook wants it: no rows')
  t.equal(webhookRouter([]), undefined, 'no webhooks: no router')
})

t.test('the retry schedule doubles from the first delay, is capped, and jitters down by at most half', async t => {
  const retry = { firstDelayMs: 5000, maxDelayMs: 3_600_000 }
  t.equal(retryDelayMs(1, retry, () => 0), 2500)
  t.equal(retryDelayMs(1, retry, () => 0.999999), 5000)
  t.equal(retryDelayMs(4, retry, () => 0.999999), 40_000)
  t.equal(retryDelayMs(20, retry, () => 0), 1_800_000, 'capped at maxDelayMs')
  t.equal(retryDelayMs(1000, retry, () => 0), 1_800_000, 'no overflow however many attempts')
})

t.test('a store that fails is logged and tried again; stopping aborts an attempt in flight and leaves its row leased', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  receiver.answer = 'hang'
  const inner = openSqliteAuditStore(':memory:', { outbox: webhookRouter([hook(receiver.url)]) })
  let failClaims = 2
  let failFinish = 1
  const store: AuditStore = Object.assign(Object.create(inner) as AuditStore, {
    claimDeliveries: async (limit: number, leaseMs: number) => {
      if (failClaims-- > 0) throw new Error('database is locked')
      return await inner.claimDeliveries(limit, leaseMs)
    },
    finishDelivery: async (...args: Parameters<AuditStore['finishDelivery']>) => {
      if (failFinish-- > 0) throw new Error('disk I/O error')
      return await inner.finishDelivery(...args)
    }
  })
  const receiverHook = hook(receiver.url, { timeoutMs: 100 })
  const { logs, worker } = setup(t, [receiverHook], { store })
  await deletion(inner)
  await until('two claims failed', () => logs.filter(log => log.message.startsWith('could not read the webhook outbox')).length === 2)
  await until('a finish failed', () => logs.find(log => log.message === 'could not record a webhook attempt; it is retried when its lease ends'))
  const [row] = (await inner.listDeliveries({}, { limit: 1 })).items
  t.match(row, { status: 'pending', attempts: 1 }, 'the unrecorded attempt left the row leased')
  t.equal(receiver.received.length, 1)
  await worker.stop()
  await worker.stop()
  t.equal((await inner.listDeliveries({}, { limit: 1 })).items[0]?.status, 'pending')
  await inner.close()
})

t.test('stopping while an attempt hangs returns at once and records nothing for it', async t => {
  const receiver = await startReceiver()
  t.teardown(() => receiver.down())
  receiver.answer = 'hang'
  const { store, worker, attempts } = setup(t, [hook(receiver.url, { timeoutMs: 30_000 })])
  await deletion(store)
  await receiver.nth(1)
  const began = Date.now()
  await worker.stop()
  t.ok(Date.now() - began < 2000, 'stop did not wait for the timeout')
  t.match((await store.listDeliveries({}, { limit: 1 })).items[0], { status: 'pending', attempts: 1 })
  t.notOk('lastError' in ((await store.listDeliveries({}, { limit: 1 })).items[0] as object))
  t.same(attempts, [])
})
