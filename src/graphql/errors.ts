import type { FastifyInstance, FastifyReply } from 'fastify'
import { GraphQLError, type ExecutionResult } from 'graphql'
import { isGatewayError, type GatewayError } from '../errors.js'
import { asGatewayError } from '../http/problem.js'

/** The catalogue error as a GraphQL error: same code as REST in `extensions.code`, plus its safe extras. */
export function toGraphQLExtensions (error: GatewayError, requestId: string): Record<string, unknown> {
  return {
    code: error.code,
    status: error.status,
    requestId,
    ...error.extras,
    ...(error.retryAfter === undefined ? {} : { retryAfter: error.retryAfter })
  }
}

interface FormatterContext { reply?: { request: { id: string }, log: FastifyInstance['log'] }, app: FastifyInstance }

/**
 * Resolver failures keep GraphQL's 200 (the body carries them); unexpected failures are logged and reported
 * without their internals. GraphQL's own parse and validation errors pass through unchanged.
 */
export function graphqlErrorFormatter (
  execution: ExecutionResult & { errors: readonly GraphQLError[], statusCode?: number },
  context: FormatterContext
): { statusCode: number, response: ExecutionResult } {
  const requestId = context.reply?.request.id ?? ''
  const log = context.reply?.log ?? context.app.log
  const errors = execution.errors.map((error) => {
    const original = error.originalError
    if (original === undefined || original === null) return error.toJSON()
    if (!isGatewayError(original)) {
      if (Array.isArray((original as { errors?: unknown }).errors)) return error.toJSON()
      log.error({ err: original }, 'resolver failed')
    }
    const gatewayError = isGatewayError(original) ? original : asGatewayError(original)
    return new GraphQLError(gatewayError.detail, {
      path: error.path,
      nodes: error.nodes,
      extensions: toGraphQLExtensions(gatewayError, requestId)
    }).toJSON()
  })
  return {
    statusCode: execution.data === undefined || execution.data === null ? (execution.statusCode ?? 200) : 200,
    response: { data: execution.data ?? null, errors: errors as unknown as ExecutionResult['errors'] }
  }
}

/** Failures before GraphQL runs (authentication, …) answer in GraphQL's shape so GraphQL clients can read them. */
export function sendGraphQLError (reply: FastifyReply, requestId: string, error: GatewayError): FastifyReply {
  for (const [name, value] of Object.entries(error.headers)) void reply.header(name, value)
  return reply.code(error.status).type('application/json').send({
    data: null,
    errors: [{ message: error.detail, extensions: toGraphQLExtensions(error, requestId) }]
  })
}

interface GraphQLDocumentError { errors: Array<GraphQLError | Error> }

/** mercurius reports unparsable, invalid or too deep documents as one error carrying the individual errors. */
export function isGraphQLDocumentError (error: unknown): error is GraphQLDocumentError {
  const errors = (error as { errors?: unknown }).errors
  return Array.isArray(errors) && errors.every(inner => inner instanceof Error)
}

export function sendGraphQLDocumentError (reply: FastifyReply, requestId: string, error: GraphQLDocumentError): FastifyReply {
  // A document that does not parse or validate is the client's fault whatever mercurius labelled it.
  const status = 400
  return reply.code(status).type('application/json').send({
    data: null,
    errors: error.errors.map(inner => {
      const shown = inner instanceof GraphQLError ? inner.toJSON() : { message: inner.message }
      return { ...shown, extensions: { ...shown.extensions, code: 'INVALID_REQUEST', status, requestId } }
    })
  })
}
