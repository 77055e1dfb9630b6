import type { MercuriusContext } from 'mercurius'
import { createCleanup, getCleanup, planRetentionPolicy, type CleanupDeps } from '../cleanups/cleanups.js'
import type { CleanupPlan } from '../cleanups/shapes.js'
import { clientRequestId } from '../http/client-request-id.js'
import type { RequestContext } from '../images/attempt.js'

/** GraphQL sends an omitted optional input field as null when a variable says so: the rules mean "absent". */
function withoutNulls (value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls)
  if (typeof value !== 'object' || value === null) return value
  return Object.fromEntries(Object.entries(value).filter(([, inner]) => inner !== null).map(([key, inner]) => [key, withoutNulls(inner)]))
}

/** The deletion enums (DeleteMode, DeleteAction, DeleteStrategy) are upper case in GraphQL, lower case in REST. */
const upper = (value: string): string => value.replaceAll('-', '_').toUpperCase()

function graphqlPlan (plan: CleanupPlan): CleanupPlan {
  return {
    ...plan,
    entries: plan.entries.map(entry => entry.plan === undefined
      ? entry
      : { ...entry, plan: { ...entry.plan, mode: upper(entry.plan.mode), action: upper(entry.plan.action), strategy: upper(entry.plan.strategy) } as never })
  }
}

function caller (ctx: MercuriusContext): { identity: MercuriusContext['identity'], context: RequestContext, signal: AbortSignal } {
  const request = ctx.reply.request
  return { identity: ctx.identity, context: { requestId: request.id, ...clientRequestId(request), transport: 'graphql' }, signal: request.signal }
}

/** The cleanup resolvers: the same use cases as the REST routes in src/http/cleanups.ts. */
export function cleanupResolvers (deps: CleanupDeps): { Query: Record<string, unknown>, Mutation: Record<string, unknown> } {
  return {
    Query: {
      cleanup: async (_root: unknown, args: { id: string }, ctx: MercuriusContext) =>
        graphqlPlan(await getCleanup(deps, { identity: ctx.identity, id: args.id }))
    },
    Mutation: {
      planCleanup: async (_root: unknown, args: Record<string, unknown>, ctx: MercuriusContext) =>
        graphqlPlan(await createCleanup(deps, { ...caller(ctx), body: withoutNulls({ ...args }) })),
      planRetention: async (_root: unknown, args: { name: string }, ctx: MercuriusContext) =>
        graphqlPlan(await planRetentionPolicy(deps, { ...caller(ctx), name: args.name }))
    }
  }
}
