import pg from 'pg'
import t from 'tap'
import { request } from 'undici'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { createMetrics } from '../../src/metrics.js'
import { POSTGRES_APPLICATION_NAME } from '../../src/audit/postgres-store.js'
import { startPostgres, type PostgresProcess } from '../../testing/postgres-process.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { ADMIN_KEY, startGateway, type Gateway } from '../fixtures/gateway.js'

const POOL_SIZE = 3
const registry = await startRegistry()
t.teardown(() => registry.stop())

async function tagStatus (name: string, tag: string): Promise<number> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${tag}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode
}

type PoolGauges = Record<'total' | 'idle' | 'waiting' | 'max', number>

async function poolGauges (gateway: Gateway): Promise<PoolGauges> {
  const response = await gateway.app.inject({ method: 'GET', url: '/metrics', headers: { 'x-api-key': ADMIN_KEY } })
  const value = (name: string): number => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(response.body)?.[1] ?? NaN)
  return {
    total: value('gateway_audit_pool_connections'),
    idle: value('gateway_audit_pool_idle_connections'),
    waiting: value('gateway_audit_pool_waiting_requests'),
    max: value('gateway_audit_pool_max_connections')
  }
}

/** The gateway's connections as PostgreSQL counts them (over the Unix socket, so this client is not one of them). */
async function serverSideConnections (postgres: PostgresProcess, database: string): Promise<number> {
  const admin = new pg.Client({ host: postgres.dataDir, port: postgres.port, user: 'postgres', database: 'postgres' })
  await admin.connect()
  try {
    const { rows } = await admin.query<{ count: number }>('SELECT count(*)::int AS count FROM pg_stat_activity WHERE application_name = $1 AND datname = $2',
      [POSTGRES_APPLICATION_NAME, database])
    return rows[0]?.count as number
  } finally {
    await admin.end()
  }
}

async function untilReady (gateway: Gateway): Promise<number> {
  const started = Date.now()
  let status = 0
  while (status !== 200 && Date.now() - started < 10_000) {
    await new Promise(resolve => setTimeout(resolve, 100))
    status = (await gateway.rest('GET', '/readyz', { key: null })).status
  }
  return status
}

/**
 * `count` requests, `concurrency` at a time (over several repositories: the gateway runs one deletion per repository
 * at a time), sampling the pool gauges as they run; answers the statuses seen and the largest sample. */
async function burst (gateway: Gateway, count: number, concurrency: number, url: (index: number) => string): Promise<{ statuses: Map<number, number>, peak: PoolGauges }> {
  const statuses = new Map<number, number>()
  const peak: PoolGauges = { total: 0, idle: 0, waiting: 0, max: 0 }
  let next = 0
  const state = { done: false }
  const sampler = (async () => {
    while (!state.done) {
      const gauges = await poolGauges(gateway)
      for (const key of Object.keys(peak) as Array<keyof PoolGauges>) peak[key] = Math.max(peak[key], gauges[key])
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  })()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      const { status } = await gateway.rest('DELETE', url(next++))
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
    }
  }))
  state.done = true
  await sampler
  return { statuses, peak }
}

function gatewayOn (url: string, extra: Record<string, unknown> = {}): Parameters<typeof startGateway>[1] {
  return {
    registries: { default: { url: registry.url } },
    config: {
      audit: { driver: 'postgres', url, poolSize: POOL_SIZE, connectRetry: { initialMs: 50, maxMs: 200 }, ...extra },
      limits: { requestsPerWindow: 100_000, coTagScansPerCaller: 100 }
    }
  }
}

t.test('issue 14: /metrics reports the PostgreSQL pool: connections, idle, waiting and its size', async t => {
  const postgres = await startPostgres()
  t.teardown(() => postgres.stop())
  const url = await postgres.createDatabase('pool_gauges')
  const gateway = await startGateway(t, gatewayOn(url))
  t.equal(await untilReady(gateway), 200)
  await pushImage({ url: registry.url }, 'pool/app', ['v1'], 'schema2')
  t.equal((await gateway.rest('DELETE', '/images/pool/app/v1')).status, 200)
  const gauges = await poolGauges(gateway)
  t.equal(gauges.max, POOL_SIZE)
  t.ok(gauges.total >= 1 && gauges.total <= POOL_SIZE, `connections open: ${gauges.total}`)
  t.equal(gauges.idle, gauges.total, 'all idle between requests')
  t.equal(gauges.waiting, 0)
  t.equal(gauges.total, await serverSideConnections(postgres, 'pool_gauges'), 'the gauge agrees with pg_stat_activity')

  const sqlite = await startGateway(t, { registries: { default: { url: registry.url } } })
  const text = (await sqlite.app.inject({ method: 'GET', url: '/metrics', headers: { 'x-api-key': ADMIN_KEY } })).body
  t.notMatch(text, /gateway_audit_pool/, 'SQLite has no pool to report')
})

t.test('issue 14: the pool gauges read zeros until the store opens; a second store on shared metrics replaces the first', async t => {
  const metrics = createMetrics()
  metrics.auditPool(() => ({ total: 1, idle: 1, waiting: 0, max: 1 }))
  metrics.auditPool(() => ({ total: 0, idle: 0, waiting: 0, max: 7 }))
  t.match(await metrics.registry.metrics(), /^gateway_audit_pool_max_connections 7$/m)
  const nowhere = await startGateway(t, gatewayOn('postgres://postgres@127.0.0.1:1/none'))
  t.same(await poolGauges(nowhere), { total: 0, idle: 0, waiting: 0, max: POOL_SIZE })
})

t.test('issue 14: 1,000 requests failing while PostgreSQL is down leak no connection: the pool stays within its size, and after recovery PostgreSQL sees at most the pool', async t => {
  const first = await startPostgres()
  let postgres = first
  t.teardown(() => postgres.stop())
  const url = await first.createDatabase('pool_leak')
  const gateway = await startGateway(t, gatewayOn(url))
  t.equal(await untilReady(gateway), 200)
  await pushImage({ url: registry.url }, 'pool/down-0', ['v1'], 'schema2')

  await first.stop({ keepData: true })
  // Past the one-second readiness cache.
  await new Promise(resolve => setTimeout(resolve, 1100))
  const unready = await gateway.rest('GET', '/readyz', { key: null })
  t.match(unready.body.checks.find((check: { name: string }) => check.name === 'audit'),
    { ok: false, detail: /^the audit trail is not writable: PostgreSQL (refused the connection|closed the connection)/ }, '/readyz says why while running, too')
  const { statuses, peak } = await burst(gateway, 1000, 25, index => `/images/pool/down-${index % 25}/v1`)
  t.same([...statuses], [[503, 1000]], 'every request refused with 503 (AUDIT_UNAVAILABLE), none deleted')
  t.ok(peak.total <= POOL_SIZE, `the pool never held more than its size (peak ${peak.total})`)
  const after = await poolGauges(gateway)
  t.equal(after.waiting, 0, 'nobody left waiting for a connection')
  t.equal(await tagStatus('pool/down-0', 'v1'), 200, 'the image asked for 40 times is still there')

  postgres = await startPostgres({ restart: { dataDir: first.dataDir, port: first.port } })
  t.equal(await untilReady(gateway), 200, 'ready again without a restart')
  const recovered = await burst(gateway, 30, 10, index => `/images/pool/none-${index}/v1`)
  t.same([...recovered.statuses], [[404, 30]], 'requests work again (an unknown image: 404, audited)')
  const seen = await serverSideConnections(postgres, 'pool_leak')
  t.ok(seen >= 1 && seen <= POOL_SIZE, `pg_stat_activity shows ${seen} gateway connections (pool size ${POOL_SIZE})`)
  t.equal((await poolGauges(gateway)).total, seen)
})

t.test('issue 14: requests failing on the statement timeout (a table locked by someone else) leak no connection either', async t => {
  const postgres = await startPostgres()
  t.teardown(() => postgres.stop())
  const url = await postgres.createDatabase('pool_timeout')
  const gateway = await startGateway(t, gatewayOn(url, { statementTimeoutMs: 100 }))
  t.equal(await untilReady(gateway), 200)
  await pushImage({ url: registry.url }, 'pool/locked-0', ['v1'], 'schema2')
  const locker = new pg.Client({ connectionString: url })
  await locker.connect()
  t.teardown(() => locker.end())
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE audit_records IN ACCESS EXCLUSIVE MODE')

  const { statuses, peak } = await burst(gateway, 200, 20, index => `/images/pool/locked-${index % 20}/v1`)
  t.same([...statuses], [[503, 200]], 'every request cancelled by the statement timeout: 503, nothing deleted')
  t.ok(peak.total <= POOL_SIZE, `peak ${peak.total} connections`)
  t.ok(peak.waiting > 0, 'requests did queue for the pool meanwhile')
  await locker.query('ROLLBACK')

  t.equal(await tagStatus('pool/locked-0', 'v1'), 200, 'nothing deleted while the trail could not record it')
  t.equal((await gateway.rest('DELETE', '/images/pool/locked-0/v1')).status, 200, 'the lock gone, the deletion goes through')
  const seen = await serverSideConnections(postgres, 'pool_timeout')
  t.ok(seen >= 1 && seen <= POOL_SIZE, `pg_stat_activity shows ${seen} gateway connections`)
  t.same(await poolGauges(gateway), { total: seen, idle: seen, waiting: 0, max: POOL_SIZE })
})
