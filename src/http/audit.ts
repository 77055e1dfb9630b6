import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { listAuditEvents, MAX_AUDIT_PAGE, DEFAULT_AUDIT_PAGE } from '../images/audit-events.js'
import type { DeleteImageDeps } from '../images/delete-image.js'
import { restoreDeletion } from '../images/restore-deletion.js'
import { clientRequestId } from './client-request-id.js'
import { RestoreResultSchema } from '../images/shapes.js'

const Outcome = Type.Union([
  Type.Literal('pending'), Type.Literal('deleted'), Type.Literal('dry-run'), Type.Literal('denied'), Type.Literal('rejected'),
  Type.Literal('not-found'), Type.Literal('failed'), Type.Literal('restored')
])
const AuditAction = Type.Union([Type.Literal('delete'), Type.Literal('dry-run'), Type.Literal('restore')])

export const AuditEventSchema = Type.Object({
  id: Type.String(),
  time: Type.String({ format: 'date-time' }),
  requestId: Type.String(),
  clientRequestId: Type.Optional(Type.String({ description: 'The caller\'s own X-Request-Id, when it sent a well-formed one (at most 128 of A-Z a-z 0-9 . _ : -).' })),
  transport: Type.Union([Type.Literal('rest'), Type.Literal('graphql'), Type.Literal('cli'), Type.Literal('startup')]),
  subject: Type.String(),
  groups: Type.Array(Type.String()),
  action: AuditAction,
  registry: Type.String(),
  name: Type.String(),
  tag: Type.String(),
  digest: Type.Optional(Type.String()),
  mediaType: Type.Optional(Type.String()),
  removedTags: Type.Array(Type.String()),
  decision: Type.Object({ allow: Type.Boolean(), reason: Type.String() }),
  outcome: Outcome,
  upstreamStatus: Type.Optional(Type.Integer()),
  errorCode: Type.Optional(Type.String()),
  errorDetail: Type.Optional(Type.String()),
  durationMs: Type.Optional(Type.Integer()),
  restoredBy: Type.Optional(Type.String()),
  restoreOf: Type.Optional(Type.String()),
  restorable: Type.Boolean()
})

export const AuditQuery = Type.Object({
  subject: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
  registry: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  tag: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  outcome: Type.Optional(Outcome),
  action: Type.Optional(AuditAction),
  since: Type.Optional(Type.String({ format: 'date-time' })),
  until: Type.Optional(Type.String({ format: 'date-time' })),
  limit: Type.Integer({ minimum: 1, maximum: MAX_AUDIT_PAGE, default: DEFAULT_AUDIT_PAGE }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512 }))
}, { additionalProperties: false })

/** The audit trail and undo: reading what happened, and putting a deletion back until garbage collection. */
export const auditRoutes = (deps: DeleteImageDeps): FastifyPluginAsyncTypebox => async (app) => {
  app.get('/audit', {
    schema: { querystring: AuditQuery, response: { 200: Type.Object({ items: Type.Array(AuditEventSchema), nextCursor: Type.Optional(Type.String()) }) } }
  }, async (request) => {
    const { limit, cursor, ...filter } = request.query
    return await listAuditEvents(deps, { identity: request.identity, filter, limit, ...(cursor === undefined ? {} : { cursor }) })
  })

  app.post('/deletions/:id/restore', {
    schema: {
      params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }),
      querystring: Type.Object({ force: Type.Boolean({ default: false, description: 'Move tags back even when they point at another manifest now.' }) }, { additionalProperties: false }),
      response: { 200: RestoreResultSchema }
    }
  }, async (request) => await restoreDeletion(deps, {
    identity: request.identity,
    context: { requestId: request.id, ...clientRequestId(request), transport: 'rest' },
    deletionId: request.params.id,
    force: request.query.force
  }))
}
