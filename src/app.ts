import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Config } from './config/schema.js'
import { mattermostRoutes, type MattermostDeps } from './chat/mattermost/routes.js'
import { slackRoutes, type SlackDeps } from './chat/slack/routes.js'
import { graphqlApi } from './graphql/index.js'
import { contractRoutes } from './http/contract.js'
import { healthRoutes } from './http/health.js'
import identityPlugin from './http/identity.js'
import lifecyclePlugin from './http/lifecycle.js'
import { metricsRoutes } from './http/metrics.js'
import { badUrl, problemErrorHandler, routeNotFound } from './http/problem.js'
import rateLimitPlugin from './http/rate-limit.js'
import { restApi } from './http/rest.js'
import { uiRoutes } from './http/ui.js'
import { createLogger } from './logging.js'
import { createMetrics, type GatewayMetrics } from './metrics.js'
import { createServices, type ServiceOverrides } from './services.js'
import type { RetentionScheduler } from './cleanups/schedule.js'

export interface AppDeps extends ServiceOverrides {
  /** Shares one set of metrics, e.g. with a separate metrics listener. */
  metrics?: GatewayMetrics
  /** A pino logger to share (the server's), or false for none; by default one at the configured level. */
  logger?: FastifyBaseLogger | false
  /** Replaces the Slack transport's clock or response_url poster. */
  slack?: Pick<SlackDeps, 'now' | 'post'>
  /** Replaces the Mattermost transport's clock. */
  mattermost?: Pick<MattermostDeps, 'now'>
  /** Replaces the clock of /readyz's one-second cache (tests). */
  readinessNow?: () => number
  /** Where the built web page is; dist/ui by default (tests build the page of their own sources elsewhere). */
  uiRoot?: string
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Settles when start-up pruning and reconciliation of pending audit records are done. */
    auditHousekeeping: Promise<void>
    /** Scheduled retention policies: runSlot runs one scheduled time now (tests, operators' scripts). */
    retentionScheduler: RetentionScheduler
  }
}

/** The composition root: the core's services, then one registration per concern. */
export async function buildApp (config: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  const app = Fastify({
    ...(deps.logger === false ? { logger: false } : { loggerInstance: deps.logger ?? createLogger(config.logLevel) }),
    // The caller's X-Request-Id is never the request id (it would go into audit records as the gateway's own):
    // the transports keep it apart as clientRequestId.
    requestIdHeader: false,
    genReqId: () => randomUUID(),
    ...(config.trustProxy.length === 0 ? {} : { trustProxy: config.trustProxy }),
    bodyLimit: config.limits.bodyBytes,
    frameworkErrors: badUrl,
    // GET /images/:name takes a repository name as one URL-encoded segment: up to 255 characters, more with %2F.
    // Past this length a segment would fall through to the /images/* route and be read as name/tag.
    routerOptions: { maxParamLength: 1024 },
    // Unknown query parameters are refused, not dropped: a mistyped `dryrun=true` must not become a real delete.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true } }
  }).withTypeProvider<TypeBoxTypeProvider>()
  const metrics = deps.metrics ?? createMetrics()
  const services = createServices(config, deps, metrics, app.log)
  app.decorate('auditHousekeeping', services.housekeeping.startup)
  app.decorate('retentionScheduler', services.retentionScheduler)
  app.addHook('onClose', services.close)
  app.setErrorHandler(problemErrorHandler)
  app.setNotFoundHandler(routeNotFound)

  await app.register(lifecyclePlugin, { metrics })
  await app.register(identityPlugin, {
    authenticate: async credentials => await services.authenticator.authenticate(credentials),
    failedAuth: { perWindow: config.limits.failedAuthPerWindow, windowMs: config.limits.windowMs }
  })
  const sharedWindows = services.auditStore.shared.hit
  await app.register(rateLimitPlugin, { limits: config.limits, ...(sharedWindows === undefined ? {} : { sharedWindows }) })
  await app.register(contractRoutes)
  if (config.metrics.enabled && config.metrics.port === undefined) await app.register(metricsRoutes(metrics, { public: config.metrics.public }))
  await app.register(healthRoutes(services.registries, services.auditStore, deps.readinessNow))
  await app.register(restApi(services))
  if (config.chat.slack !== undefined) {
    await app.register(slackRoutes({ images: services.images, settings: config.chat.slack, policy: services.policyStore, ...deps.slack }))
  }
  const { mattermost } = config.chat
  if (mattermost !== undefined) {
    await app.register(mattermostRoutes({ images: services.images, settings: mattermost, policy: services.policyStore, ...deps.mattermost }))
  }
  if (config.ui.enabled) await app.register(uiRoutes({ ui: config.ui, policy: services.policyStore, root: deps.uiRoot }))
  const graphql = {
    images: services.images,
    whoAmI: services.whoAmI,
    limits: config.graphql,
    browse: services.browse,
    cleanups: services.cleanups,
    cleanupRuns: services.cleanupRuns
  }
  await app.register(graphqlApi(graphql))
  return app
}
