import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import type { ConnectionOptions } from 'node:tls'
import type { FastifyBaseLogger } from 'fastify'
import type { Dispatcher } from 'undici'
import type { Config } from './config/schema.js'
import { ReplicaLock } from './audit/shared-state.js'
import { describePostgresError } from './audit/postgres-errors.js'
import type { DeferredStoreOptions } from './audit/deferred-store.js'
import { AuditTrail, deferredAuditStore, openPostgresAuditStore, openSqliteAuditStore, type AuditStore } from './audit/index.js'
import { createAuthenticator, type Authenticator } from './identity/index.js'
import type { GatewayMetrics, RegistryObserver } from './metrics.js'
import { ScansPerCaller } from './images/co-tags.js'
import { PagesInFlight, type BrowseDeps } from './images/browse.js'
import { BrowseCache } from './images/browse-cache.js'
import type { CleanupDeps } from './cleanups/cleanups.js'
import { CursorCodec } from './images/browse-cursor.js'
import type { ImageServices } from './images/delete-image.js'
import { PlanBook } from './images/approvals.js'
import { ActiveRuns, type CleanupRunServices } from './cleanups/run-cleanup.js'
import { startRetentionScheduler, type RetentionObserver, type RetentionScheduler } from './cleanups/schedule.js'
import { startAuditHousekeeping, type AuditHousekeeping } from './images/housekeeping.js'
import { whoAmI, type WhoAmI } from './identity/who-am-i.js'
import { decide, grantsAnywhere, literalProtectedTags, rolesOf, PolicyStore } from './policy/index.js'
import { RegistryClient } from './registry/client.js'
import { RegistryDirectory } from './registry/directory.js'
import { KeyedQueue, Untagger } from './registry/untag.js'
import { webhookRouter } from './notifications/events.js'
import { startDeliveryWorker, type DeliveryWorker } from './notifications/worker.js'
import type { OutboxRouter } from './audit/outbox.js'

/** Collaborators a caller of buildApp may supply instead of the ones the configuration names. */
export interface ServiceOverrides {
  /** Replaces every registry's connection pool (fault injection in tests). */
  dispatcher?: Dispatcher
  policyStore?: PolicyStore
  /** Replaces the audit store the configuration names (open it with `outboxRouter(config)` for webhooks). */
  auditStore?: AuditStore
  /** The clock scheduled retention policies read (tests bring a scheduled time close). */
  retentionNow?: () => number
  /** Hears how each scheduled time of a retention policy ended on this replica. */
  retentionObserver?: RetentionObserver
}

/** The transport-free core, wired once per app: what every edge (REST, GraphQL, health) is given. */
export interface GatewayServices {
  registries: RegistryDirectory
  policyStore: PolicyStore
  authenticator: Authenticator
  auditStore: AuditStore
  /** What the image use cases (delete, restore, audit listing) need. */
  images: ImageServices
  whoAmI: WhoAmI
  housekeeping: AuditHousekeeping
  /** What the read API's use cases (catalog, tags, one tag) need. */
  browse: BrowseDeps
  /** Cleanups by rule: plans kept in the audit store, named retention policies. */
  cleanups: CleanupDeps
  /** Running cleanup plans: the runs in progress in this process. */
  cleanupRuns: CleanupRunServices
  /** Retention policies with a schedule, run by themselves. */
  retentionScheduler: RetentionScheduler
  /** Stops timers and closes what the services opened themselves (not what the caller supplied). */
  close: () => Promise<void>
}

export function buildRegistries (config: Config, dispatcher?: Dispatcher, observer?: RegistryObserver): RegistryDirectory {
  const clients = Object.entries(config.registries).map(([name, registry]) => new RegistryClient({
    name,
    url: registry.url,
    credentials: registry.username === undefined || registry.password === undefined
      ? undefined
      : { username: registry.username, password: registry.password },
    connectTimeoutMs: registry.timeouts.connectMs,
    requestTimeoutMs: registry.timeouts.requestMs,
    connections: registry.connections,
    trustedRealmOrigins: registry.tokenRealmOrigins,
    tokenCacheSize: registry.tokenCacheSize,
    tls: {
      ...(registry.tls.caFile === undefined ? {} : { ca: readFileSync(registry.tls.caFile, 'utf8') }),
      insecure: registry.tls.insecure
    },
    dispatcher,
    observer,
    tagList: { maxPages: config.tagListMaxPages, maxBytes: config.tagListMaxBytes }
  }))
  return new RegistryDirectory(clients, config.defaultRegistry)
}

/** Which outbox rows the configured webhooks want of each record. */
export function outboxRouter (config: Pick<Config, 'notifications'>): OutboxRouter | undefined {
  return webhookRouter(config.notifications.webhooks)
}

/** audit.tls as node's TLS options; the files are read now, so a wrong path stops start-up as a registry's caFile does. */
export function postgresTlsOptions (tls: Config['audit']['tls']): ConnectionOptions | undefined {
  if (tls === undefined) return undefined
  const read = (path: string | undefined): string | undefined => path === undefined ? undefined : readFileSync(path, 'utf8')
  const options: ConnectionOptions = { rejectUnauthorized: tls.rejectUnauthorized }
  const ca = read(tls.caFile)
  const cert = read(tls.certFile)
  const key = read(tls.keyFile)
  if (ca !== undefined) options.ca = ca
  if (cert !== undefined) options.cert = cert
  if (key !== undefined) options.key = key
  if (tls.servername !== undefined) options.servername = tls.servername
  return options
}

/** The configured audit store: SQLite (the default), or PostgreSQL opened (and migrated) in the background. */
export function openAuditStore (audit: Config['audit'], outbox?: OutboxRouter, log?: FastifyBaseLogger): AuditStore {
  if (audit.driver !== 'postgres') return openSqliteAuditStore(audit.path, { listScanLimit: audit.listScanLimit, outbox })
  const tls = postgresTlsOptions(audit.tls)
  const deferred: DeferredStoreOptions = {
    retry: audit.connectRetry,
    poolSize: audit.poolSize,
    describe: describePostgresError,
    onOpenFailed: (error, attempt, retryInMs) => {
      log?.warn({ err: error, attempt, retryInMs }, 'the PostgreSQL audit store did not open; retrying')
    }
  }
  return deferredAuditStore(async () => await openPostgresAuditStore({
    outbox,
    // validateConfig refuses driver postgres without a URL.
    connectionString: audit.url as string,
    listScanLimit: audit.listScanLimit,
    poolSize: audit.poolSize,
    statementTimeoutMs: audit.statementTimeoutMs,
    lockWaitMs: audit.lockWaitMs,
    tls
  }), deferred)
}

/** A lock lost mid-work may have let two replicas change one repository at once: an operator must hear of it. */
export function lostLockReporter (metrics: Pick<GatewayMetrics, 'lockLost'>, log: FastifyBaseLogger) {
  return (key: string, cause: unknown): void => {
    metrics.lockLost()
    log.error({ err: cause, lock: key }, 'the repository lock shared by the replicas was lost while held: its work may have overlapped another replica\'s')
  }
}

export function createServices (config: Config, overrides: ServiceOverrides, metrics: GatewayMetrics, log: FastifyBaseLogger): GatewayServices {
  const registries = buildRegistries(config, overrides.dispatcher, metrics)
  const policyStore = overrides.policyStore ?? new PolicyStore({ logger: log })
  policyStore.on('reload', () => { metrics.policyReload(true) })
  policyStore.on('reloadFailed', () => { metrics.policyReload(false) })
  if (overrides.policyStore === undefined && config.policyFile !== undefined) policyStore.load(config.policyFile)
  if (policyStore.current() === undefined) log.warn('no policy loaded: every request will be denied (set POLICY_FILE or policyFile)')
  const authenticator = createAuthenticator(policyStore, { logger: log })
  const auditStore = overrides.auditStore ?? openAuditStore(config.audit, outboxRouter(config), log)
  const poolStats = auditStore.poolStats
  if (poolStats !== undefined) metrics.auditPool(poolStats)
  const { notifications } = config
  const deliveries: DeliveryWorker | undefined = notifications.webhooks.length === 0
    ? undefined
    : startDeliveryWorker({
      store: auditStore,
      webhooks: notifications.webhooks,
      logger: log,
      observer: metrics,
      pollMs: notifications.pollMs,
      concurrency: notifications.concurrency,
      retry: notifications.retry
    })
  metrics.watchOutbox(async () => await auditStore.countDeliveries())
  const audit = new AuditTrail(auditStore, log, record => {
    metrics.auditRecord(record)
    deliveries?.nudge()
  })
  // One lock for every tag-changing request of a repository: digest deletions and untags queue behind each other,
  // on this replica and (PostgreSQL) on every replica sharing the database.
  const locks = new ReplicaLock(new KeyedQueue(), auditStore.shared, lostLockReporter(metrics, log))
  const images: ImageServices = {
    registries,
    authorizer: () => {
      const policy = policyStore.current()
      return (identity, action, resource) => decide(policy, identity, action, resource)
    },
    mayAuditAnything: identity => grantsAnywhere(policyStore.current(), identity, 'audit'),
    audit,
    coTagConcurrency: config.coTagConcurrency,
    coTagScanLimit: config.coTagScanLimit,
    coTagScans: new ScansPerCaller(config.limits.coTagScansPerCaller),
    literalProtectedTags: (registry, repository) => literalProtectedTags(policyStore.current(), registry, repository),
    registrySettings: registry => config.registries[registry] as Config['registries'][string],
    locks,
    untagger: new Untagger({ lock: locks }),
    onAuditLost: (error, record) => {
      log.error({ err: error, auditId: record.id },
        'the registry acted but the audit trail could not record it; the record is reconciled at the next start or periodic pass')
    },
    plans: new PlanBook({ ttlMs: 600_000, capacity: 10_000, shared: auditStore.shared })
  }
  // One cache for the read API and cleanups: both read manifests and configs, immutable per digest.
  const browseCache = new BrowseCache({ entries: config.browse.cacheEntries, tagTtlMs: config.browse.tagTtlMs })
  const cleanupRuns: CleanupRunServices = {
    images,
    concurrency: config.cleanups.runConcurrency,
    maxDeletions: config.cleanups.maxDeletions,
    runs: new ActiveRuns(),
    now: Date.now,
    replicas: {
      heartbeatMs: config.cleanups.heartbeatMs,
      staleAfterMs: config.cleanups.staleAfterMs,
      cancelWaitMs: config.cleanups.cancelWaitMs,
      pollMs: config.cleanups.pollMs
    }
  }
  const cleanups: CleanupDeps = {
    registries,
    policy: () => policyStore.current(),
    cache: browseCache,
    concurrency: config.cleanups.concurrency,
    catalogPageSize: config.browse.catalogPageSize,
    maxTags: config.cleanups.maxTags,
    registrySettings: registry => config.registries[registry] as Config['registries'][string],
    now: Date.now,
    audit,
    retention: config.retention.policies,
    plansInFlight: new PagesInFlight(config.cleanups.plansPerCaller, 'cleanups being planned', 'cleanups.plansPerCaller'),
    mayAuditAnything: identity => grantsAnywhere(policyStore.current(), identity, 'audit')
  }
  const retentionScheduler = startRetentionScheduler({
    policies: config.retention.policies,
    runAs: config.retention.runAs,
    defaultRegistry: registries.defaultName,
    cleanups,
    runs: cleanupRuns,
    shared: auditStore.shared,
    outbox: auditStore,
    webhooks: notifications.webhooks,
    onPublished: () => { deliveries?.nudge() },
    now: overrides.retentionNow ?? Date.now,
    logger: log,
    ...(overrides.retentionObserver === undefined ? {} : { observer: overrides.retentionObserver })
  })
  const housekeeping = startAuditHousekeeping({
    audit,
    registries,
    retentionDays: config.audit.retentionDays,
    logger: log,
    reconcile: {
      owner: `${hostname()}/${process.pid}/${randomUUID()}`,
      locks,
      intervalMs: config.audit.reconcileIntervalMs,
      inFlightMs: config.audit.reconcileAfterMs,
      sharedAtStartup: config.audit.driver === 'postgres'
    },
    cleanupRuns: { staleAfterMs: config.cleanups.staleAfterMs, intervalMs: config.cleanups.heartbeatMs },
    onRunsInterrupted: retentionScheduler.reportInterrupted
  })
  return {
    registries,
    policyStore,
    authenticator,
    auditStore,
    images,
    whoAmI: whoAmI(identity => rolesOf(policyStore.current(), identity)),
    housekeeping,
    browse: {
      registries,
      policy: () => policyStore.current(),
      audit,
      cache: browseCache,
      concurrency: config.coTagConcurrency,
      catalogPageSize: config.browse.catalogPageSize,
      catalogPagesPerRequest: config.browse.catalogPagesPerRequest,
      pagesInFlight: new PagesInFlight(config.browse.pagesPerCaller),
      cursors: config.browse.cursorSecret === undefined ? new CursorCodec() : CursorCodec.fromSecret(config.browse.cursorSecret)
    },
    cleanups,
    cleanupRuns,
    retentionScheduler,
    close: async () => {
      // Before the store closes: in-flight removals finish and are settled, the runs end interrupted, and a
      // scheduled run reports how it ended.
      const runsStopped = cleanupRuns.runs.stopAll()
      await retentionScheduler.stop()
      await runsStopped
      await housekeeping.stop()
      await housekeeping.startup
      await deliveries?.stop()
      if (overrides.auditStore === undefined) await auditStore.close()
      authenticator.close()
      if (overrides.policyStore === undefined) policyStore.close()
      await registries.close()
    }
  }
}
