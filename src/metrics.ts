import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { AuditPoolStats, AuditRecord } from './audit/types.js'

/** What the registry client reports of each request it makes. */
export interface RegistryRequestEvent {
  registry: string
  operation: string
  /** The HTTP status, or `error` when no answer came (refused, reset, timed out). */
  status: number | 'error'
  seconds: number
}

export interface RegistryObserver {
  request: (event: RegistryRequestEvent) => void
  tokenLookup: (registry: string, hit: boolean) => void
}

export interface GatewayMetrics extends RegistryObserver {
  readonly registry: Registry
  httpRequest: (route: string, method: string, status: number, seconds: number) => void
  auditRecord: (record: AuditRecord) => void
  policyReload: (ok: boolean) => void
  /** A cross-replica repository lock lost while its work ran (its connection died, or releasing it failed). */
  lockLost: () => void
  /** Reports the audit store's connection pool at each scrape (PostgreSQL only). */
  auditPool: (stats: () => AuditPoolStats) => void
  /** A webhook attempt's result per endpoint: delivered, retried (another attempt scheduled) or failed (given up). */
  webhookAttempt: (endpoint: string, result: 'delivered' | 'retried' | 'failed') => void
  /** Where the outbox gauge reads its rows per endpoint and status when scraped (the audit store), at most every 15 s. */
  watchOutbox: (count: () => Promise<Array<{ endpoint: string, status: string, count: number }>>) => void
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/** How long one count of the outbox answers scrapes: /metrics may be public, and the count reads the whole outbox. */
export const OUTBOX_COUNT_TTL_MS = 15_000

type OutboxCounts = Array<{ endpoint: string, status: string, count: number }>

/** One Prometheus registry per app, so several gateways in one process (tests) never share counters. */
export function createMetrics (options: { now?: () => number } = {}): GatewayMetrics {
  const now = options.now ?? Date.now
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const http = new Histogram({
    name: 'gateway_http_request_duration_seconds',
    help: 'API requests by route, method and status',
    labelNames: ['route', 'method', 'status'],
    buckets: LATENCY_BUCKETS,
    registers: [registry]
  })
  const deletions = new Counter({
    name: 'gateway_deletions_total',
    help: 'Delete attempts by registry and outcome (deleted, denied, rejected, not-found, failed)',
    labelNames: ['registry', 'outcome'],
    registers: [registry]
  })
  const restores = new Counter({
    name: 'gateway_restores_total',
    help: 'Restore attempts by registry and outcome',
    labelNames: ['registry', 'outcome'],
    registers: [registry]
  })
  const upstream = new Histogram({
    name: 'gateway_registry_request_duration_seconds',
    help: 'Requests to registries by registry, operation and status',
    labelNames: ['registry', 'operation', 'status'],
    buckets: LATENCY_BUCKETS,
    registers: [registry]
  })
  const tokens = new Counter({
    name: 'gateway_registry_token_cache_total',
    help: 'Registry token cache lookups by result',
    labelNames: ['registry', 'result'],
    registers: [registry]
  })
  const webhooks = new Counter({
    name: 'gateway_webhook_attempts_total',
    help: 'Webhook delivery attempts by endpoint and result (delivered, retried, failed: given up)',
    labelNames: ['endpoint', 'result'],
    registers: [registry]
  })
  let countOutbox = async (): Promise<OutboxCounts> => []
  // One count (settled or in flight) serves every scrape for OUTBOX_COUNT_TTL_MS, so scrapes cannot multiply queries.
  let outboxCount: { at: number, rows: Promise<OutboxCounts> } | undefined
  const outboxRows = async (): Promise<OutboxCounts> => {
    if (outboxCount === undefined || now() - outboxCount.at >= OUTBOX_COUNT_TTL_MS) {
      // A store that cannot answer leaves the gauge empty rather than failing /metrics, and is asked again only later.
      outboxCount = { at: now(), rows: countOutbox().catch(() => []) }
    }
    return await outboxCount.rows
  }
  new Gauge({ // eslint-disable-line no-new -- registered with `registry`, which is what reads it
    name: 'gateway_webhook_outbox',
    help: 'Webhook deliveries in the outbox by endpoint and status (pending is the queue depth)',
    labelNames: ['endpoint', 'status'],
    registers: [registry],
    async collect () {
      this.reset()
      const rows = await outboxRows()
      for (const row of rows) this.set({ endpoint: row.endpoint, status: row.status }, row.count)
    }
  })
  const locksLost = new Counter({
    name: 'gateway_replica_locks_lost_total',
    help: 'Repository locks shared by the replicas that were lost while held (connection gone or COMMIT failed)',
    registers: [registry]
  })
  const reloads = new Counter({ name: 'gateway_policy_reloads_total', help: 'Policy reloads by result', labelNames: ['result'], registers: [registry] })
  // prom-client hashes the label set on every observe; a child per route, method and status is looked up once.
  const httpChildren = new Map<string, ReturnType<typeof http.labels>>()
  // Likewise per registry, operation and status: a page of tags observes a hundred registry requests.
  const upstreamChildren = new Map<string, ReturnType<typeof upstream.labels>>()
  return {
    registry,
    httpRequest (route, method, status, seconds) {
      const key = `${method} ${status} ${route}`
      let child = httpChildren.get(key)
      if (child === undefined) {
        child = http.labels({ route, method, status: String(status) })
        httpChildren.set(key, child)
      }
      child.observe(seconds)
    },
    request (event) {
      const key = `${event.status} ${event.operation}\u0000${event.registry}`
      let child = upstreamChildren.get(key)
      if (child === undefined) {
        child = upstream.labels({ registry: event.registry, operation: event.operation, status: String(event.status) })
        upstreamChildren.set(key, child)
      }
      child.observe(event.seconds)
    },
    tokenLookup (registryName, hit) {
      tokens.inc({ registry: registryName, result: hit ? 'hit' : 'miss' })
    },
    auditRecord (record) {
      // A pending record is counted once it settles, so each attempt counts once.
      if (record.outcome === 'pending') return
      if (record.action === 'delete') deletions.inc({ registry: record.registry, outcome: record.outcome })
      if (record.action === 'restore') restores.inc({ registry: record.registry, outcome: record.outcome })
    },
    lockLost () {
      locksLost.inc()
    },
    policyReload (ok) {
      reloads.inc({ result: ok ? 'ok' : 'failed' })
    },
    auditPool (stats) {
      // Read at scrape time rather than kept up to date: the pool already counts, and a scrape sees it as it is.
      const gauges: Array<[keyof AuditPoolStats, string, string]> = [
        ['total', 'gateway_audit_pool_connections', 'Connections the audit store holds to PostgreSQL, idle or in use'],
        ['idle', 'gateway_audit_pool_idle_connections', 'Audit store connections open and idle'],
        ['waiting', 'gateway_audit_pool_waiting_requests', 'Audit store calls waiting for a connection (every one in use)'],
        ['max', 'gateway_audit_pool_max_connections', 'The audit store pool size (audit.poolSize)']
      ]
      for (const [field, name, help] of gauges) {
        // A second store on this registry (an app rebuilt over shared metrics) replaces the first's gauges.
        registry.removeSingleMetric(name)
        // eslint-disable-next-line no-new -- registering it is the point; the registry keeps it
        new Gauge({ name, help, registers: [registry], collect () { this.set(stats()[field]) } })
      }
    },
    webhookAttempt (endpoint, result) {
      webhooks.inc({ endpoint, result })
    },
    watchOutbox (count) {
      countOutbox = count
      outboxCount = undefined
    }
  }
}
