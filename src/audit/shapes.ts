import Type, { type Static } from 'typebox'

/**
 * The audit shapes, defined once: the TypeScript types derive from these, the REST routes answer with them, and
 * tests hold openapi.yaml and the GraphQL SDL to them (GraphQL spells `-` as `_` in enum values).
 */
export const AuditOutcomeSchema = Type.Union([
  Type.Literal('pending'), Type.Literal('deleted'), Type.Literal('dry-run'), Type.Literal('denied'), Type.Literal('rejected'),
  Type.Literal('not-found'), Type.Literal('failed'), Type.Literal('restored'), Type.Literal('approved')
])
export type AuditOutcome = Static<typeof AuditOutcomeSchema>

/** `approve`: a second person approving a plan that needs it (outcome `approved`, or `denied`). */
export const AuditActionSchema = Type.Union([
  Type.Literal('delete'), Type.Literal('dry-run'), Type.Literal('restore'), Type.Literal('read'), Type.Literal('approve')
])
export type AuditAction = Static<typeof AuditActionSchema>

export const AuditTransportSchema = Type.Union([
  Type.Literal('rest'), Type.Literal('graphql'), Type.Literal('slack'), Type.Literal('mattermost'), Type.Literal('schedule')
])
export type AuditTransport = Static<typeof AuditTransportSchema>

/** How a deletion was asked to remove a tag (`mode`), what it did (`action`) and how (`strategy`). */
export const DeleteModeSchema = Type.Union([Type.Literal('auto'), Type.Literal('untag'), Type.Literal('digest')])
export type DeleteMode = Static<typeof DeleteModeSchema>

export const DeleteActionSchema = Type.Union([Type.Literal('untagged'), Type.Literal('deleted-digest')])
export type DeleteAction = Static<typeof DeleteActionSchema>

export const DeleteStrategySchema = Type.Union([Type.Literal('swap'), Type.Literal('native'), Type.Literal('digest')])
export type DeleteStrategy = Static<typeof DeleteStrategySchema>

export const AuditDecisionSchema = Type.Object({ allow: Type.Boolean(), reason: Type.String() })

/** An audit record as the API shows it: never the manifest bytes, and whether it can still be undone. */
export const AuditEventSchema = Type.Object({
  id: Type.String(),
  time: Type.String({ format: 'date-time' }),
  requestId: Type.String(),
  clientRequestId: Type.Optional(Type.String({
    description: 'The caller\'s own X-Request-Id, when it sent a well-formed one (at most 128 of A-Z a-z 0-9 . _ : -).'
  })),
  transport: AuditTransportSchema,
  subject: Type.String(),
  groups: Type.Array(Type.String()),
  action: AuditActionSchema,
  registry: Type.String(),
  name: Type.String(),
  tag: Type.String(),
  digest: Type.Optional(Type.String()),
  mediaType: Type.Optional(Type.String()),
  removedTags: Type.Array(Type.String()),
  mode: Type.Optional(DeleteModeSchema),
  deleteAction: Type.Optional(DeleteActionSchema),
  strategy: Type.Optional(DeleteStrategySchema),
  decision: AuditDecisionSchema,
  outcome: AuditOutcomeSchema,
  upstreamStatus: Type.Optional(Type.Integer()),
  errorCode: Type.Optional(Type.String()),
  errorDetail: Type.Optional(Type.String()),
  durationMs: Type.Optional(Type.Integer()),
  restoredBy: Type.Optional(Type.String()),
  approvedBy: Type.Optional(Type.String({ description: 'A deletion that needed approval: who approved it (subject is who asked).' })),
  restoreOf: Type.Optional(Type.String()),
  cleanupId: Type.Optional(Type.String({ description: 'A deletion a cleanup run made: the cleanup\'s id.' })),
  restorable: Type.Boolean()
})
export type AuditEvent = Static<typeof AuditEventSchema>
