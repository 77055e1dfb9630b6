import t from 'tap'
import { createMetrics } from '../../src/metrics.js'

t.test('the outbox gauge reads the store at each scrape; a store that cannot answer leaves it empty', async t => {
  const metrics = createMetrics()
  t.notMatch(await metrics.registry.metrics(), /gateway_webhook_outbox\{/, 'nothing watched yet: no series')
  let rows = [{ endpoint: 'ci', status: 'pending', count: 3 }, { endpoint: 'ci', status: 'failed', count: 1 }]
  metrics.watchOutbox(async () => rows)
  const first = await metrics.registry.metrics()
  t.match(first, /gateway_webhook_outbox\{endpoint="ci",status="pending"\} 3/)
  t.match(first, /gateway_webhook_outbox\{endpoint="ci",status="failed"\} 1/)
  rows = [{ endpoint: 'ci', status: 'delivered', count: 4 }]
  t.notMatch(await metrics.registry.metrics(), /status="pending"/, 'each scrape starts afresh')
  metrics.watchOutbox(async () => { throw new Error('audit store is closed') })
  t.notMatch(await metrics.registry.metrics(), /gateway_webhook_outbox\{/, 'a failing store: no series, and /metrics still answers')
  metrics.webhookAttempt('ci', 'retried')
  t.match(await metrics.registry.metrics(), /gateway_webhook_attempts_total\{endpoint="ci",result="retried"\} 1/)
})
