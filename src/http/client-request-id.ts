import type { FastifyRequest } from 'fastify'

/** What a caller's X-Request-Id may be to be kept at all; anything else is dropped, never cleaned up. */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * The caller's own X-Request-Id, for correlating with its logs. Never the request id: the audit trail and the logs
 * key on the gateway's id, which a caller cannot choose, forge or make collide.
 */
export function clientRequestId (request: FastifyRequest): { clientRequestId?: string } {
  const sent = request.headers['x-request-id']
  return typeof sent === 'string' && CLIENT_REQUEST_ID.test(sent) ? { clientRequestId: sent } : {}
}
