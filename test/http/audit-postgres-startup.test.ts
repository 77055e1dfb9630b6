import t from 'tap'
import { freePort } from '../../testing/ports.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { startGateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(() => registry.stop())

t.test('issue 14: PostgreSQL down at start-up: the gateway starts, /readyz says why (no secret), retries with capped backoff and comes ready when PostgreSQL starts', async t => {
  const port = await freePort()
  const password = 's3cr3t-pw-in-the-url'
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`
  const gateway = await startGateway(t, {
    registries: { default: { url: registry.url } },
    config: { audit: { driver: 'postgres', url, connectRetry: { initialMs: 50, maxMs: 400 } } }
  })
  await pushImage({ url: registry.url }, 'pg/late', ['v1'], 'schema2')

  const down = await gateway.rest('GET', '/readyz', { key: null })
  t.equal(down.status, 503, 'started, not ready')
  const audit = down.body.checks.find((check: { name: string }) => check.name === 'audit')
  t.match(audit, { ok: false, detail: /^the audit trail is not writable: PostgreSQL refused the connection \(is it running and listening\?\) \(attempt \d+; retrying, the next in 1 s\); the gateway log has the details$/ })
  t.notMatch(JSON.stringify(down.body), new RegExp(`${password}|${port}|postgres://|127\\.0\\.0\\.1`), 'no password, URL or address')
  const refused = await gateway.rest('DELETE', '/images/pg/late/v1')
  t.equal(refused.status, 503)
  t.match(refused.body, { code: 'AUDIT_UNAVAILABLE' })
  t.notMatch(JSON.stringify(refused.body), new RegExp(password))

  // Let several retries fail first, so the waits have reached their cap.
  await new Promise(resolve => setTimeout(resolve, 1200))
  const postgres = await startPostgres({ port })
  t.teardown(() => postgres.stop())
  const started = Date.now()
  let status = 0
  while (status !== 200 && Date.now() - started < 5000) {
    await new Promise(resolve => setTimeout(resolve, 100))
    status = (await gateway.rest('GET', '/readyz', { key: null })).status
  }
  t.equal(status, 200, 'ready without a restart')
  // The cap (400 ms) plus the one-second readiness cache, with room for a slow machine.
  t.ok(Date.now() - started < 3000, `ready ${Date.now() - started} ms after PostgreSQL started: the waits were capped`)
  const deleted = await gateway.rest('DELETE', '/images/pg/late/v1')
  t.equal(deleted.status, 200, 'and deletions work, audited in PostgreSQL')
  const listed = await gateway.rest('GET', '/audit?name=pg/late&action=delete')
  t.same(listed.body.items.map((item: { outcome: string }) => item.outcome), ['deleted'])
})
