import { readFileSync } from 'node:fs'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import mercurius, { type IResolvers, type MercuriusContext } from 'mercurius'
import { getOperationAST, Location, parse } from 'graphql'
import { GatewayError, invalidField } from '../errors.js'
import type { AuditFilter } from '../audit/types.js'
import { listAuditEvents } from '../images/audit-events.js'
import { approvePlan, executeApprovedPlan } from '../images/approvals.js'
import { deleteImage, type ImageServices, type RequestContext } from '../images/delete-image.js'
import type { DeleteImageResult } from '../images/shapes.js'
import { PLAN_ID, type DeleteMode } from '../images/plan.js'
import { restoreDeletion } from '../images/restore-deletion.js'
import type { WhoAmI } from '../identity/who-am-i.js'
import type { Identity } from '../policy/types.js'
import type { Config } from '../config/schema.js'
import { asGatewayError } from '../http/problem.js'
import { clientRequestId } from '../http/client-request-id.js'
import { graphqlErrorFormatter, isGraphQLDocumentError, sendGraphQLDocumentError, sendGraphQLError } from './errors.js'
import { validationRules } from './limits.js'
import { browseResolvers } from './browse.js'
import { cleanupResolvers } from './cleanups.js'
import type { CleanupDeps } from '../cleanups/cleanups.js'
import { cleanupRunResolvers } from './cleanup-runs.js'
import type { CleanupRunServices } from '../cleanups/run-cleanup.js'
import type { BrowseDeps } from '../images/browse.js'

/** A bound on parsing work per document: a token is cheap, unbounded documents are not. */
const MAX_TOKENS = 4000
const schema = readFileSync(new URL('../../schema/schema.graphql', import.meta.url), 'utf8')

declare module 'mercurius' {
  interface MercuriusContext {
    identity: Identity
  }
}

interface DeleteImageArgs {
  name: string
  tag: string
  registry?: string | null
  mode?: string | null
  dryRun?: boolean | null
  force?: boolean | null
  planId?: string | null
}
interface AuditEventsArgs { filter?: Record<string, string | null> | null, first?: number | null, after?: string | null }

export interface GraphQLOptions {
  images: ImageServices
  whoAmI: WhoAmI
  limits: Config['graphql']
  /** The read API (repositories, image, tag). */
  browse: BrowseDeps
  cleanups: CleanupDeps
  /** Running cleanup plans (executeCleanup, cancelCleanup, restoreCleanup). */
  cleanupRuns: CleanupRunServices
}

/** GraphQL enum values cannot contain '-', so `dry-run` travels as `dry_run`. */
const fromEnum = (value: string): string => value.replaceAll('_', '-')
const toEnum = (value: string): string => value.replaceAll('-', '_')
/** The deletion enums (DeleteMode, DeleteAction, DeleteStrategy) are upper case in GraphQL, lower case in REST. */
const toUpperEnum = (value: string): string => toEnum(value).toUpperCase()
const upperEnums = <T extends object>(value: T, keys: ReadonlyArray<keyof T>): T =>
  ({ ...value, ...Object.fromEntries(keys.filter(key => typeof value[key] === 'string').map(key => [key, toUpperEnum(value[key] as string)])) })
const deleteResult = (result: DeleteImageResult): DeleteImageResult => upperEnums(result, ['mode', 'action', 'strategy'])

function auditFilter (filter: AuditEventsArgs['filter']): AuditFilter {
  const entries = Object.entries(filter ?? {}).filter((entry): entry is [string, string] => entry[1] !== null)
  return Object.fromEntries(entries.map(([key, value]) => [key, key === 'outcome' || key === 'action' ? fromEnum(value) : value]))
}

/** The same rule the REST query string enforces with its schema: a malformed id is bad input, never a lookup. */
function checkedPlanId (planId: string): string {
  if (!PLAN_ID.test(planId)) throw invalidField('planId', `matches ${PLAN_ID.source}`, `planId must be a plan id as a dry-run answers it (${PLAN_ID.source}).`)
  return planId
}

function context (context: MercuriusContext): RequestContext {
  return { requestId: context.reply.request.id, ...clientRequestId(context.reply.request), transport: 'graphql' }
}

/**
 * GET and HEAD carry the document in the query string. Only queries may run that way: a mutation there could be
 * triggered by a link or a prefetch, and Fastify answers HEAD by running the GET route. mercurius also crashes
 * (500) on variables that are not an object and on an operationName that names no operation.
 */
function checkQueryString ({ query, variables, operationName }: Record<string, unknown>): void {
  if (typeof variables === 'string') {
    let parsed: unknown
    try { parsed = JSON.parse(variables) } catch { parsed = undefined }
    if (parsed !== undefined && parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw invalidField('variables', 'JSON object', 'variables must be a JSON object.')
    }
  }
  if (typeof query !== 'string') return
  let document
  try { document = parse(query, { maxTokens: MAX_TOKENS }) } catch { return }
  const operation = getOperationAST(document, typeof operationName === 'string' ? operationName : undefined)
  if (operation === null || operation === undefined) {
    throw invalidField('operationName', 'names an operation',
      'operationName must name one operation of the document (or be left out when it has only one).')
  }
  if (operation.operation !== 'query') {
    throw new GatewayError('METHOD_NOT_ALLOWED', `a ${operation.operation} runs only over POST; send the document in a POST body.`, {
      headers: { allow: 'POST' },
      extras: { field: 'query', rule: 'mutations only over POST' }
    })
  }
}

/**
 * `/graphql` as an encapsulated plugin: its resolvers call the same use cases as REST, and it owns what is
 * GraphQL's alone — errors in GraphQL's shape, the method rules, the document limits.
 */
export const graphqlApi = (options: GraphQLOptions): FastifyPluginAsync => async (app) => {
  const browse = browseResolvers(options.browse)
  const cleanups = cleanupResolvers(options.cleanups)
  const resolvers: IResolvers = {
    Image: browse.Image,
    Query: {
      ...browse.Query,
      ...cleanups.Query,
      me: (_root: unknown, _args: unknown, ctx: MercuriusContext) => options.whoAmI(ctx.identity),
      auditEvents: async (_root: unknown, args: AuditEventsArgs, ctx: MercuriusContext) => {
        const page = await listAuditEvents(options.images, {
          identity: ctx.identity,
          filter: auditFilter(args.filter),
          limit: args.first ?? undefined,
          ...(args.after === undefined || args.after === null ? {} : { cursor: args.after })
        })
        return {
          edges: page.items.map((item, index) => ({
            cursor: page.cursors[index],
            node: upperEnums({ ...item, action: toEnum(item.action), outcome: toEnum(item.outcome) }, ['mode', 'deleteAction', 'strategy'])
          })),
          // Relay's endCursor is the last edge's cursor, whether or not more pages follow; a page the scan limit cut
          // short continues from where the scan stopped, which can be past its last edge.
          pageInfo: { hasNextPage: page.nextCursor !== undefined, endCursor: page.nextCursor ?? page.cursors.at(-1) ?? null }
        }
      }
    },
    Mutation: {
      ...cleanups.Mutation,
      ...cleanupRunResolvers(options.cleanupRuns, options.cleanups),
      deleteImage: async (_root: unknown, args: DeleteImageArgs, ctx: MercuriusContext) => deleteResult(await deleteImage(options.images, {
        identity: ctx.identity,
        context: context(ctx),
        repository: args.name,
        tag: args.tag,
        registry: args.registry ?? undefined,
        // null (an explicit null variable) means the default, as an absent argument does.
        ...(args.mode === undefined || args.mode === null ? {} : { mode: args.mode.toLowerCase() as DeleteMode }),
        dryRun: args.dryRun ?? false,
        force: args.force ?? false,
        ...(args.planId === undefined || args.planId === null ? {} : { planId: checkedPlanId(args.planId) }),
        signal: ctx.reply.request.signal
      })),
      approvePlan: async (_root: unknown, args: { id: string }, ctx: MercuriusContext) =>
        await approvePlan(options.images, { identity: ctx.identity, context: context(ctx), planId: args.id }),
      executePlan: async (_root: unknown, args: { id: string }, ctx: MercuriusContext) => deleteResult(await executeApprovedPlan(options.images, {
        identity: ctx.identity, context: context(ctx), planId: args.id, signal: ctx.reply.request.signal
      })),
      restoreDeletion: async (_root: unknown, args: { id: string, force?: boolean | null }, ctx: MercuriusContext) => await restoreDeletion(options.images, {
        identity: ctx.identity,
        context: context(ctx),
        deletionId: args.id,
        force: args.force ?? false
      })
    }
  }
  // Failures before any resolver runs (authentication, rate limits, malformed documents) answer in GraphQL's shape.
  app.setErrorHandler((error, request, reply) => {
    if (isGraphQLDocumentError(error)) return sendGraphQLDocumentError(reply, request.id, error)
    const gatewayError = asGatewayError(error as Error)
    if (gatewayError.code === 'INTERNAL_ERROR') request.log.error({ err: error }, 'request failed')
    return sendGraphQLError(reply, request.id, gatewayError)
  })
  app.addHook('preHandler', async (request) => {
    if (request.method !== 'POST') checkQueryString(request.query as Record<string, unknown>)
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
    graphql: { parseOptions: { maxTokens: MAX_TOKENS } },
    context: (request: FastifyRequest) => ({ identity: request.identity }),
    errorFormatter: graphqlErrorFormatter as never,
    // Failures before execution (malformed documents, limits) go to this plugin's error handler above.
    errorHandler: false
  })
  // mercurius takes a query that is not GraphQL but is JSON for a ready-made AST; only parsed documents may run.
  app.graphql.addHook('preValidation', async (_schema, document, context) => {
    if ((document as { loc?: unknown } | null)?.loc instanceof Location) return
    let message = 'the query is not a GraphQL document.'
    const request = context.reply.request
    const query = (request.body as { query?: unknown } | undefined)?.query ?? (request.query as { query?: unknown }).query
    try { parse(String(query)) } catch (error) { message = (error as Error).message }
    throw invalidField('query', 'GraphQL document', message)
  })
}
