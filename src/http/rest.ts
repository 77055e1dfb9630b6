import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { GatewayServices } from '../services.js'
import { auditRoutes } from './audit.js'
import { browseRoutes } from './browse.js'
import { cleanupRoutes } from './cleanups.js'
import { cleanupRunRoutes } from './cleanup-runs.js'
import { loadCleanupForRun } from '../cleanups/cleanups.js'
import type { CleanupPlan } from '../cleanups/shapes.js'
import type { Identity } from '../policy/types.js'
import { imageRoutes } from './images.js'
import { meRoutes } from './me.js'
import { notificationRoutes } from './notifications.js'
import { planRoutes } from './plans.js'

/** The REST API proper: each route translates a request into a use case call and its result into JSON. */
export const restApi = (services: GatewayServices): FastifyPluginAsyncTypebox => async (app) => {
  await app.register(imageRoutes(services.images))
  await app.register(meRoutes(services.whoAmI))
  await app.register(auditRoutes(services.images))
  await app.register(browseRoutes(services.browse))
  await app.register(planRoutes(services.images))
  await app.register(cleanupRoutes(services.cleanups))
  const load = async (identity: Identity, id: string): Promise<CleanupPlan> => await loadCleanupForRun(services.cleanups, { identity, id })
  await app.register(cleanupRunRoutes({ run: services.cleanupRuns, load }))
  const { authorizer, mayAuditAnything } = services.images
  await app.register(notificationRoutes({ store: services.auditStore, authorizer, mayAuditAnything }))
}
