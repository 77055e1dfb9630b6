import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Dispatcher } from 'undici'
import type { Config } from './config/schema.js'
import { AuditTrail, openSqliteAuditStore, type AuditStore } from './audit/index.js'
import { GatewayError } from './errors.js'
import { createLogger } from './logging.js'
import { createMetrics, type GatewayMetrics, type RegistryObserver } from './metrics.js'
import rateLimit from '@fastify/rate-limit'
import { registerContract } from './http/contract.js'
import { metricsRoutes } from './http/metrics.js'
import { registerGraphQL } from './graphql/index.js'
import { isGraphQLDocumentError, sendGraphQLDocumentError, sendGraphQLError } from './graphql/errors.js'
import identityPlugin from './http/identity.js'
import { auditRoutes } from './http/audit.js'
import { healthRoutes } from './http/health.js'
import { imageRoutes } from './http/images.js'
import { meRoutes } from './http/me.js'
import { asGatewayError, sendProblem } from './http/problem.js'
import type { DeleteImageDeps } from './images/delete-image.js'
import { startAuditHousekeeping } from './images/housekeeping.js'
import { whoAmI } from './identity/who-am-i.js'
import { createAuthenticator } from './auth/index.js'
import { decide, rolesOf, PolicyStore } from './policy/index.js'
import { RegistryClient } from './registry/client.js'
import { RegistryDirectory } from './registry/directory.js'

export interface AppDeps {
  /** Replaces every registry's connection pool (fault injection in tests). */
  dispatcher?: Dispatcher
  policyStore?: PolicyStore
  /** Replaces the SQLite audit store named in the configuration. */
  auditStore?: AuditStore
  /** Shares one set of metrics, e.g. with a separate metrics listener. */
  metrics?: GatewayMetrics
  /** A pino logger to share (the server's), or false for none; by default one at the configured level. */
  logger?: FastifyBaseLogger | false
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

declare module 'fastify' {
  interface FastifyInstance {
    /** Settles when start-up pruning and reconciliation of pending audit records are done. */
    auditHousekeeping: Promise<void>
    /** Every route the app serves, so the contract test can hold openapi.yaml to it. */
    registeredRoutes: ReadonlyArray<{ method: string, url: string }>
  }
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
    tls: {
      ...(registry.tls.caFile === undefined ? {} : { ca: readFileSync(registry.tls.caFile, 'utf8') }),
      insecure: registry.tls.insecure
    },
    dispatcher,
    observer
  }))
  return new RegistryDirectory(clients, config.defaultRegistry)
}

export async function buildApp (config: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  const app = Fastify({
    ...(deps.logger === false ? { logger: false } : { loggerInstance: deps.logger ?? createLogger(config.logLevel) }),
    requestIdHeader: false,
    genReqId: (request) => {
      const sent = request.headers['x-request-id']
      return typeof sent === 'string' && REQUEST_ID.test(sent) ? sent : randomUUID()
    },
    bodyLimit: config.limits.bodyBytes,
    frameworkErrors: (error, request, reply) => {
      void sendProblem(reply, request, new GatewayError('INVALID_REQUEST', `${error.message}; encode the path properly.`, { extras: { rule: error.code } }))
    },
    // Unknown query parameters are refused, not dropped: a mistyped `dryrun=true` must not become a real delete.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true } }
  }).withTypeProvider<TypeBoxTypeProvider>()
  const metrics = deps.metrics ?? createMetrics()

  const registeredRoutes: Array<{ method: string, url: string }> = []
  app.decorate('registeredRoutes', registeredRoutes)
  app.addHook('onRoute', (route) => {
    // The docs page and its assets are as public as the contract they show.
    if (route.url.startsWith('/docs')) route.config = { ...route.config, public: true }
    for (const method of [route.method].flat()) registeredRoutes.push({ method, url: route.url })
  })
  // Callback-style hooks: on the hot path of every request, an async hook's promise costs more than its work.
  app.addHook('onResponse', (request, reply, done) => {
    metrics.httpRequest(request.routeOptions.url ?? 'unmatched', request.method, reply.statusCode, reply.elapsedTime / 1000)
    done()
  })

  const registries = buildRegistries(config, deps.dispatcher, metrics)
  const policyStore = deps.policyStore ?? new PolicyStore({ logger: app.log })
  policyStore.on('reload', () => { metrics.policyReload(true) })
  policyStore.on('reloadFailed', () => { metrics.policyReload(false) })
  if (deps.policyStore === undefined && config.policyFile !== undefined) policyStore.load(config.policyFile)
  if (policyStore.current() === undefined) app.log.warn('no policy loaded: every request will be denied (set POLICY_FILE or policyFile)')
  const authenticator = createAuthenticator(policyStore, { logger: app.log })
  const auditStore = deps.auditStore ?? openSqliteAuditStore(config.audit.path)
  const audit = new AuditTrail(auditStore, app.log, metrics.auditRecord)
  const useCase: DeleteImageDeps = {
    registries,
    authorize: (identity, action, resource) => decide(policyStore.current(), identity, action, resource),
    authorizer: () => {
      const policy = policyStore.current()
      return (identity, action, resource) => decide(policy, identity, action, resource)
    },
    audit,
    coTagConcurrency: config.coTagConcurrency,
    onAuditLost: (error, record) => {
      app.log.error({ err: error, auditId: record.id }, 'the registry acted but the audit trail could not record it; the record is reconciled at the next start')
    }
  }
  const housekeeping = startAuditHousekeeping({ audit, registries, retentionDays: config.audit.retentionDays, logger: app.log })
  app.decorate('auditHousekeeping', housekeeping.startup)
  const me = whoAmI(identity => rolesOf(policyStore.current(), identity))

  // Keep-alive connections of requests still in flight at shutdown would hold the server open after they
  // finish; telling those clients to close lets shutdown complete as soon as the last answer is sent.
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.addHook('onSend', (request, reply, payload, done) => {
    void reply.header('x-request-id', request.id)
    if (closing) void reply.header('connection', 'close')
    done(null, payload)
  })
  app.setErrorHandler((error, request, reply) => {
    if (request.url.startsWith('/graphql') && isGraphQLDocumentError(error)) return sendGraphQLDocumentError(reply, request.id, error)
    const gatewayError = asGatewayError(error as Error)
    if (gatewayError.code === 'INTERNAL_ERROR') request.log.error({ err: error }, 'request failed')
    if (request.url.startsWith('/graphql')) return sendGraphQLError(reply, request.id, gatewayError)
    return sendProblem(reply, request, gatewayError)
  })
  app.setNotFoundHandler((request, reply) => sendProblem(reply, request,
    new GatewayError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}; see /openapi.json for the API.`)))

  await app.register(identityPlugin, { authenticate: async credentials => await authenticator.authenticate(credentials) })
  // After identity (preHandler runs after onRequest), so the limit is per caller, not per address.
  await app.register(rateLimit, {
    hook: 'preHandler',
    max: config.limits.requestsPerWindow,
    timeWindow: config.limits.windowMs,
    keyGenerator: request => request.identity === null ? `ip:${request.ip}` : request.identity.subject,
    allowList: request => request.routeOptions.config.public === true,
    errorResponseBuilder: (_request, context) => new GatewayError('RATE_LIMITED',
      `too many requests from this caller: at most ${context.max} per ${Math.round(config.limits.windowMs / 1000)} s; retry after ${Math.ceil(context.ttl / 1000)} s.`,
      { retryAfter: Math.ceil(context.ttl / 1000) })
  })
  await registerContract(app)
  if (config.metrics.enabled && config.metrics.port === undefined) await app.register(metricsRoutes(metrics))
  await app.register(healthRoutes(registries, auditStore))
  await app.register(imageRoutes(useCase))
  await app.register(meRoutes(me))
  await app.register(auditRoutes(useCase))
  await registerGraphQL(app, { deleteImage: useCase, whoAmI: me, limits: config.graphql })

  app.addHook('onClose', async () => {
    housekeeping.stop()
    await housekeeping.startup
    if (deps.auditStore === undefined) await auditStore.close()
    authenticator.close()
    if (deps.policyStore === undefined) policyStore.close()
    await registries.close()
  })
  return app
}
