import { readFileSync } from 'node:fs'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import mercurius, { type IResolvers, type MercuriusContext } from 'mercurius'
import { getOperationAST, Location, parse } from 'graphql'
import { GatewayError } from '../errors.js'
import { encodeAuditCursor } from '../audit/cursor.js'
import type { AuditFilter } from '../audit/types.js'
import { listAuditEvents } from '../images/audit-events.js'
import { deleteImage, type DeleteImageDeps } from '../images/delete-image.js'
import { restoreDeletion } from '../images/restore-deletion.js'
import type { WhoAmI } from '../identity/who-am-i.js'
import type { Identity } from '../policy/types.js'
import type { Config } from '../config/schema.js'
import { graphqlErrorFormatter } from './errors.js'
import { validationRules } from './limits.js'

const schema = readFileSync(new URL('../../schema/schema.graphql', import.meta.url), 'utf8')

declare module 'mercurius' {
  interface MercuriusContext {
    identity: Identity
  }
}

interface DeleteImageArgs { name: string, tag: string, registry?: string | null, dryRun?: boolean | null, force?: boolean | null }
interface AuditEventsArgs { filter?: Record<string, string | null> | null, first?: number | null, after?: string | null }

export interface GraphQLOptions {
  deleteImage: DeleteImageDeps
  whoAmI: WhoAmI
  limits: Config['graphql']
}

/** GraphQL enum values cannot contain '-', so `dry-run` travels as `dry_run`. */
const fromEnum = (value: string): string => value.replaceAll('_', '-')
const toEnum = (value: string): string => value.replaceAll('-', '_')

function auditFilter (filter: AuditEventsArgs['filter']): AuditFilter {
  const entries = Object.entries(filter ?? {}).filter((entry): entry is [string, string] => entry[1] !== null)
  return Object.fromEntries(entries.map(([key, value]) => [key, key === 'outcome' || key === 'action' ? fromEnum(value) : value]))
}

function context (context: MercuriusContext): { requestId: string, transport: 'graphql' } {
  return { requestId: context.reply.request.id, transport: 'graphql' }
}

export async function registerGraphQL (app: FastifyInstance, options: GraphQLOptions): Promise<void> {
  const resolvers: IResolvers = {
    Query: {
      me: (_root: unknown, _args: unknown, ctx: MercuriusContext) => options.whoAmI(ctx.identity),
      auditEvents: async (_root: unknown, args: AuditEventsArgs, ctx: MercuriusContext) => {
        const page = await listAuditEvents(options.deleteImage, {
          identity: ctx.identity,
          filter: auditFilter(args.filter),
          limit: args.first ?? undefined,
          ...(args.after === undefined || args.after === null ? {} : { cursor: args.after })
        })
        return {
          edges: page.items.map(item => ({ cursor: encodeAuditCursor(item.id), node: { ...item, action: toEnum(item.action), outcome: toEnum(item.outcome) } })),
          // Relay's endCursor is the last edge's cursor, whether or not more pages follow.
          pageInfo: { hasNextPage: page.nextCursor !== undefined, endCursor: page.items.length === 0 ? null : encodeAuditCursor((page.items.at(-1) as { id: string }).id) }
        }
      }
    },
    Mutation: {
      deleteImage: async (_root: unknown, args: DeleteImageArgs, ctx: MercuriusContext) => await deleteImage(options.deleteImage, {
        identity: ctx.identity,
        context: context(ctx),
        name: args.name,
        tag: args.tag,
        registry: args.registry ?? undefined,
        dryRun: args.dryRun ?? false,
        force: args.force ?? false
      }),
      restoreDeletion: async (_root: unknown, args: { id: string, force?: boolean | null }, ctx: MercuriusContext) => await restoreDeletion(options.deleteImage, {
        identity: ctx.identity,
        context: context(ctx),
        deletionId: args.id,
        force: args.force ?? false
      })
    }
  }
  // mercurius crashes (500) on a GET whose variables are not an object or whose operationName names no operation.
  app.addHook('preHandler', async (request) => {
    if (request.method !== 'GET' || request.routeOptions.url !== '/graphql') return
    const { query, variables, operationName } = request.query as Record<string, unknown>
    if (typeof variables === 'string') {
      let parsed: unknown
      try { parsed = JSON.parse(variables) } catch { return }
      if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) throw new GatewayError('INVALID_REQUEST', 'variables must be a JSON object.', { extras: { field: 'variables', rule: 'JSON object' } })
    }
    if (typeof query === 'string') {
      let document
      try { document = parse(query) } catch { return }
      if (getOperationAST(document, typeof operationName === 'string' ? operationName : undefined) === null) {
        throw new GatewayError('INVALID_REQUEST', 'operationName must name one operation of the document (or be left out when it has only one).', { extras: { field: 'operationName', rule: 'names an operation' } })
      }
    }
  })
  await app.register(mercurius, {
    schema,
    resolvers,
    graphiql: options.limits.graphiql,
    path: '/graphql',
    queryDepth: options.limits.maxDepth,
    validationRules: validationRules(options.limits),
    // One operation per request: batches would multiply every limit by their length.
    allowBatchedQueries: false,
    // Parsed documents and their validation errors are cached by source: hostile sources would fill the cache.
    cache: false,
    graphql: { parseOptions: { maxTokens: 4000 } },
    context: (request: FastifyRequest) => ({ identity: request.identity }),
    errorFormatter: graphqlErrorFormatter as never,
    // Failures before execution (authentication, malformed documents) go to the app's one error handler.
    errorHandler: false
  })
  // mercurius takes a query that is not GraphQL but is JSON for a ready-made AST; only parsed documents may run.
  app.graphql.addHook('preValidation', async (_schema, document, context) => {
    if ((document as { loc?: unknown } | null)?.loc instanceof Location) return
    let message = 'the query is not a GraphQL document.'
    try { parse(String((context.reply.request.body as { query?: unknown } | undefined)?.query ?? (context.reply.request.query as { query?: unknown }).query)) } catch (error) { message = (error as Error).message }
    throw new GatewayError('INVALID_REQUEST', message, { extras: { field: 'query', rule: 'GraphQL document' } })
  })
}
