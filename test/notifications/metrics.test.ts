import t from 'tap'
import { createMetrics, OUTBOX_COUNT_TTL_MS } from '../../src/metrics.js'

t.test('the outbox gauge reads the store when scraped; a store that cannot answer leaves it empty', async t => {
  let clock = 1_000_000
  const metrics = createMetrics({ now: () => clock })
  t.notMatch(await metrics.registry.metrics(), /gateway_webhook_outbox\{/, 'nothing watched yet: no series')
  let rows = [{ endpoint: 'ci', status: 'pending', count: 3 }, { endpoint: 'ci', status: 'failed', count: 1 }]
  metrics.watchOutbox(async () => rows)
  const first = await metrics.registry.metrics()
  t.match(first, /gateway_webhook_outbox\{endpoint="ci",status="pending"\} 3/)
  t.match(first, /gateway_webhook_outbox\{endpoint="ci",status="failed"\} 1/)
  rows = [{ endpoint: 'ci', status: 'delivered', count: 4 }]
  clock += OUTBOX_COUNT_TTL_MS
  t.notMatch(await metrics.registry.metrics(), /status="pending"/, 'a scrape after the cache expired starts afresh')
  metrics.watchOutbox(async () => { throw new Error('audit store is closed') })
  t.notMatch(await metrics.registry.metrics(), /gateway_webhook_outbox\{/, 'a failing store: no series, and /metrics still answers')
  metrics.webhookAttempt('ci', 'retried')
  t.match(await metrics.registry.metrics(), /gateway_webhook_attempts_total\{endpoint="ci",result="retried"\} 1/)
})

t.test('twenty scrapes, some at once, make one count of the outbox; the next comes 15 s later', async t => {
  let clock = 1_000_000
  const metrics = createMetrics({ now: () => clock })
  let queries = 0
  let count = 5
  metrics.watchOutbox(async () => {
    queries++
    await new Promise(resolve => setTimeout(resolve, 20))
    return [{ endpoint: 'ci', status: 'pending', count }]
  })
  const concurrent = await Promise.all(Array.from({ length: 10 }, async () => await metrics.registry.metrics()))
  for (const text of concurrent) t.match(text, /gateway_webhook_outbox\{endpoint="ci",status="pending"\} 5/)
  for (let scrape = 0; scrape < 10; scrape++) {
    clock += 1000
    t.match(await metrics.registry.metrics(), /status="pending"\} 5/)
  }
  t.equal(queries, 1, 'one count query for 20 scrapes')
  count = 6
  clock += OUTBOX_COUNT_TTL_MS - 10_000
  t.match(await metrics.registry.metrics(), /status="pending"\} 6/, 'counted again once 15 s passed')
  t.equal(queries, 2)

  metrics.watchOutbox(async () => { queries++; throw new Error('database unreachable') })
  await metrics.registry.metrics()
  await metrics.registry.metrics()
  t.equal(queries, 3, 'a failed count is not retried by every scrape either')
})

t.test('the default clock is the wall clock', async t => {
  const metrics = createMetrics()
  let queries = 0
  metrics.watchOutbox(async () => { queries++; return [] })
  await metrics.registry.metrics()
  await metrics.registry.metrics()
  t.equal(queries, 1)
})
