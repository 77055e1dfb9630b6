import Type, { type Static } from 'typebox'
import { AuditTransportSchema, DeleteActionSchema, DeleteModeSchema, DeleteStrategySchema } from '../audit/shapes.js'
import { CleanupRunCountsSchema, CleanupRunStateSchema } from '../cleanups/run-shapes.js'
import { CleanupTotalsSchema } from '../cleanups/shapes.js'

/**
 * What a webhook receives, defined once: the delivery worker sends it, and tests hold openapi.yaml
 * (components.schemas.NotificationEvent) and the README to it.
 */
export const NotificationEventTypeSchema = Type.Union([
  Type.Literal('image.deleted'), Type.Literal('image.untagged'), Type.Literal('image.restored'), Type.Literal('image.refused'), Type.Literal('image.approved')
])
export type NotificationEventType = Static<typeof NotificationEventTypeSchema>

/** What a scheduled retention policy reports: its dry run's plan, its run's end, or why it could not run. */
export const CleanupEventTypeSchema = Type.Union([Type.Literal('cleanup.planned'), Type.Literal('cleanup.finished'), Type.Literal('cleanup.failed')])
export type CleanupEventType = Static<typeof CleanupEventTypeSchema>

/**
 * The names a webhook subscribes with (`events` in its configuration): the image event types without `image.`,
 * and the cleanup event types whole.
 */
export const WebhookEventNameSchema = Type.Union([
  Type.Literal('deleted'), Type.Literal('untagged'), Type.Literal('restored'), Type.Literal('refused'), Type.Literal('approved'),
  Type.Literal('cleanup.planned'), Type.Literal('cleanup.finished'), Type.Literal('cleanup.failed')
])
export type WebhookEventName = Static<typeof WebhookEventNameSchema>
export type ImageEventName = Exclude<WebhookEventName, CleanupEventType>

export const NotificationEventSchema = Type.Object({
  id: Type.String({ description: 'Stable per event: also the webhook-id header. Receivers dedupe on it (delivery is at least once).' }),
  type: NotificationEventTypeSchema,
  timestamp: Type.String({ format: 'date-time', description: 'When it happened (the audit record\'s time).' }),
  data: Type.Object({
    auditId: Type.String({ description: 'The audit record: GET /audit, and for a deletion the id to restore it with.' }),
    transport: AuditTransportSchema,
    subject: Type.String({ description: 'Who asked.' }),
    approvedBy: Type.Optional(Type.String()),
    registry: Type.String(),
    name: Type.String(),
    tag: Type.String(),
    digest: Type.Optional(Type.String()),
    removedTags: Type.Array(Type.String()),
    mode: Type.Optional(DeleteModeSchema),
    deleteAction: Type.Optional(DeleteActionSchema),
    strategy: Type.Optional(DeleteStrategySchema),
    restoreOf: Type.Optional(Type.String({ description: 'A restore: the deletion it undid.' })),
    reason: Type.String({ description: 'The policy\'s reason; for a refusal, why.' }),
    errorCode: Type.Optional(Type.String({ description: 'A refusal: its catalogue code.' }))
  })
})
export type NotificationEvent = Static<typeof NotificationEventSchema>

export const CleanupNotificationEventSchema = Type.Object({
  id: Type.String({ description: 'Stable per event: also the webhook-id header. Receivers dedupe on it (delivery is at least once).' }),
  type: CleanupEventTypeSchema,
  timestamp: Type.String({ format: 'date-time', description: 'When it happened.' }),
  data: Type.Object({
    policy: Type.String({ description: 'The retention policy (retention.policies[].name).' }),
    scheduledFor: Type.String({ format: 'date-time', description: 'The time of the schedule this run is for.' }),
    subject: Type.String({ description: 'The service identity it ran as.' }),
    registry: Type.String(),
    repositories: Type.Array(Type.String(), { description: 'The repository patterns of the policy.' }),
    cleanupId: Type.Optional(Type.String({ description: 'The plan: GET /cleanups/<id>; its deletions carry it in the audit trail.' })),
    dryRun: Type.Boolean({ description: 'Planned only: the first run of a new or changed policy with dryRunFirst.' }),
    totals: Type.Optional(CleanupTotalsSchema),
    state: Type.Optional(CleanupRunStateSchema),
    counts: Type.Optional(CleanupRunCountsSchema),
    errorCode: Type.Optional(Type.String({ description: 'cleanup.failed: the catalogue code of what stopped it.' })),
    detail: Type.Optional(Type.String({ description: 'cleanup.failed: why, in words.' }))
  })
})
export type CleanupNotificationEvent = Static<typeof CleanupNotificationEventSchema>

export const DeliveryStatusSchema = Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')])

/** One event's delivery to one endpoint, as GET /notifications/deliveries lists it (never the body or the URL). */
export const DeliverySchema = Type.Object({
  eventId: Type.String(),
  endpoint: Type.String({ description: 'The webhook\'s configured name.' }),
  eventType: Type.String(),
  registry: Type.String(),
  name: Type.String(),
  tag: Type.String(),
  status: DeliveryStatusSchema,
  attempts: Type.Integer(),
  createdAt: Type.String({ format: 'date-time' }),
  nextAttemptAt: Type.Optional(Type.String({ format: 'date-time' })),
  lastAttemptAt: Type.Optional(Type.String({ format: 'date-time' })),
  lastStatus: Type.Optional(Type.Integer({ description: 'The HTTP status of the last answer.' })),
  lastError: Type.Optional(Type.String()),
  finishedAt: Type.Optional(Type.String({ format: 'date-time' }))
})
