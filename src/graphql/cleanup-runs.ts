import type { MercuriusContext } from 'mercurius'
import { loadCleanupForRun, type CleanupDeps } from '../cleanups/cleanups.js'
import { cancelCleanup, executeCleanup, restoreCleanup, type CleanupRunServices } from '../cleanups/run-cleanup.js'
import { clientRequestId } from '../http/client-request-id.js'
import type { RequestContext } from '../images/attempt.js'

function context (ctx: MercuriusContext): RequestContext {
  const request = ctx.reply.request
  return { requestId: request.id, ...clientRequestId(request), transport: 'graphql' }
}

/** The run mutations: the same use cases as the REST routes in src/http/cleanup-runs.ts. */
export function cleanupRunResolvers (run: CleanupRunServices, cleanups: CleanupDeps): Record<string, unknown> {
  const load = async (ctx: MercuriusContext, id: string): ReturnType<typeof loadCleanupForRun> =>
    await loadCleanupForRun(cleanups, { identity: ctx.identity, id })
  return {
    executeCleanup: async (_root: unknown, args: { id: string, maxDeletions?: number | null }, ctx: MercuriusContext) =>
      await executeCleanup(run, {
        identity: ctx.identity,
        context: context(ctx),
        cleanup: await load(ctx, args.id),
        ...(args.maxDeletions === undefined || args.maxDeletions === null ? {} : { maxDeletions: args.maxDeletions })
      }),
    cancelCleanup: async (_root: unknown, args: { id: string }, ctx: MercuriusContext) =>
      await cancelCleanup(run, { identity: ctx.identity, cleanup: await load(ctx, args.id) }),
    restoreCleanup: async (_root: unknown, args: { id: string }, ctx: MercuriusContext) => {
      const cleanup = await load(ctx, args.id)
      return { cleanupId: cleanup.id, items: await restoreCleanup(run, { identity: ctx.identity, context: context(ctx), cleanup }) }
    }
  }
}
