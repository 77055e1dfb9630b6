import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { GatewayError, isGatewayError } from '../errors.js'

export const PROBLEM_TYPE_BASE = 'https://github.com/registry-delete-gateway/errors#'

export interface Problem {
  type: string
  title: string
  status: number
  detail: string
  code: string
  requestId: string
  [extra: string]: unknown
}

export function toProblem (error: GatewayError, requestId: string): Problem {
  return {
    type: `${PROBLEM_TYPE_BASE}${error.code.toLowerCase().replaceAll('_', '-')}`,
    title: error.title,
    status: error.status,
    detail: error.detail,
    code: error.code,
    requestId,
    ...error.extras,
    ...(error.retryAfter === undefined ? {} : { retryAfter: error.retryAfter })
  }
}

/** Fastify's own failures (schema validation, body parsing, unknown route) in catalogue terms. */
export function asGatewayError (error: FastifyError | GatewayError | Error): GatewayError {
  if (isGatewayError(error)) return error
  const fastifyError = error as FastifyError
  const [first] = fastifyError.validation ?? []
  if (first !== undefined) {
    const location = fastifyError.validationContext ?? 'request'
    const unknown = (first.params as { additionalProperty?: string }).additionalProperty
    const field = unknown ?? first.instancePath.slice(1).replaceAll('/', '.')
    const rule = unknown === undefined ? first.message ?? 'is invalid' : 'is not a known parameter'
    return new GatewayError('INVALID_REQUEST', `${location} ${field === '' ? '' : `parameter ${field} `}${rule}.`, {
      extras: { field: field === '' ? location : field, location, rule }
    })
  }
  const status = fastifyError.statusCode ?? 500
  if (status === 413) return new GatewayError('REQUEST_TOO_LARGE', `${fastifyError.message}; send a smaller body.`)
  if (status >= 400 && status < 500) {
    return new GatewayError('INVALID_REQUEST', fastifyError.message, { extras: { rule: fastifyError.code } })
  }
  return new GatewayError('INTERNAL_ERROR', 'the gateway failed unexpectedly; the request id identifies the failure in its logs.')
}

export function sendProblem (reply: FastifyReply, request: FastifyRequest, error: GatewayError): FastifyReply {
  for (const [name, value] of Object.entries(error.headers)) void reply.header(name, value)
  if (error.retryAfter !== undefined) void reply.header('retry-after', String(error.retryAfter))
  return reply.code(error.status).type('application/problem+json').send(toProblem(error, request.id))
}

/** The REST error handler: every failure as problem+json, unexpected ones logged with their internals. */
export function problemErrorHandler (error: Error, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const gatewayError = asGatewayError(error)
  if (gatewayError.code === 'INTERNAL_ERROR') request.log.error({ err: error }, 'request failed')
  return sendProblem(reply, request, gatewayError)
}

export function routeNotFound (request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return sendProblem(reply, request, new GatewayError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}; see /openapi.json for the API.`))
}

/** A URL Fastify cannot route at all (bad percent-encoding, …). */
export function badUrl (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  void sendProblem(reply, request, new GatewayError('INVALID_REQUEST', `${error.message}; encode the path properly.`, { extras: { rule: error.code } }))
}
