import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { AuditActionSchema, AuditEventSchema, AuditOutcomeSchema } from '../audit/shapes.js'
import { listAuditEvents, MAX_AUDIT_PAGE, DEFAULT_AUDIT_PAGE } from '../images/audit-events.js'
import type { ImageServices } from '../images/delete-image.js'
import { restoreDeletion } from '../images/restore-deletion.js'
import { clientRequestId } from './client-request-id.js'
import { RestoreResultSchema } from '../images/shapes.js'

export const AuditQuery = Type.Object({
  subject: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
  registry: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  tag: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  outcome: Type.Optional(AuditOutcomeSchema),
  action: Type.Optional(AuditActionSchema),
  since: Type.Optional(Type.String({ format: 'date-time' })),
  until: Type.Optional(Type.String({ format: 'date-time' })),
  cleanupId: Type.Optional(Type.String({ pattern: '^cleanup_[0-9a-f]{32}$', description: 'Only the deletions of this cleanup\'s run.' })),
  limit: Type.Integer({ minimum: 1, maximum: MAX_AUDIT_PAGE, default: DEFAULT_AUDIT_PAGE }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512 }))
}, { additionalProperties: false })

/** The audit trail and undo: reading what happened, and putting a deletion back until garbage collection. */
export const auditRoutes = (deps: ImageServices): FastifyPluginAsyncTypebox => async (app) => {
  app.get('/audit', {
    schema: { querystring: AuditQuery, response: { 200: Type.Object({ items: Type.Array(AuditEventSchema), nextCursor: Type.Optional(Type.String()) }) } }
  }, async (request) => {
    const { limit, cursor, ...filter } = request.query
    return await listAuditEvents(deps, { identity: request.identity, filter, limit, ...(cursor === undefined ? {} : { cursor }) })
  })

  app.post('/deletions/:id/restore', {
    schema: {
      params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }),
      querystring: Type.Object({
        force: Type.Boolean({ default: false, description: 'Move tags back even when they point at another manifest now.' })
      }, { additionalProperties: false }),
      response: { 200: RestoreResultSchema }
    }
  }, async (request) => await restoreDeletion(deps, {
    identity: request.identity,
    context: { requestId: request.id, ...clientRequestId(request), transport: 'rest' },
    deletionId: request.params.id,
    force: request.query.force
  }))
}
