import type { AuditRecord } from '../audit/types.js'
import type { OutboxMessage, OutboxRouter } from '../audit/outbox.js'
import type { CleanupNotificationEvent, ImageEventName, NotificationEvent, WebhookEventName } from './shapes.js'

/** Which event a record, as just written, is: a settled deletion, untag or restore, an approval, or a refused attempt. */
export function eventNameFor (record: AuditRecord): ImageEventName | undefined {
  if (record.action === 'approve' && record.outcome === 'approved') return 'approved'
  if (record.action !== 'delete' && record.action !== 'restore') return undefined
  if (record.outcome === 'denied' || record.outcome === 'rejected') return 'refused'
  if (record.action === 'delete' && record.outcome === 'deleted') return record.deleteAction === 'untagged' ? 'untagged' : 'deleted'
  if (record.action === 'restore' && record.outcome === 'restored') return 'restored'
  return undefined
}

/** The event of a record: its id and body never change, so every attempt signs the same bytes under the same id. */
export function toNotificationEvent (record: AuditRecord, name: ImageEventName): NotificationEvent {
  const optional = {
    approvedBy: record.approvedBy,
    digest: record.digest,
    mode: record.mode,
    deleteAction: record.deleteAction,
    strategy: record.strategy,
    restoreOf: record.restoreOf,
    errorCode: name === 'refused' ? record.errorCode : undefined
  }
  return {
    id: `evt_${record.id}`,
    type: `image.${name}`,
    timestamp: record.time,
    data: {
      auditId: record.id,
      transport: record.transport,
      subject: record.subject,
      registry: record.registry,
      name: record.name,
      tag: record.tag,
      removedTags: record.removedTags,
      reason: record.decision.reason,
      ...Object.fromEntries(Object.entries(optional).filter(([, value]) => value !== undefined))
    }
  }
}

export interface WebhookRoute {
  name: string
  events: readonly WebhookEventName[]
}

/** The outbox rows a record makes: one per webhook subscribed to its event, each carrying the same event. */
export function webhookRouter (webhooks: readonly WebhookRoute[]): OutboxRouter | undefined {
  if (webhooks.length === 0) return undefined
  return record => {
    const name = eventNameFor(record)
    if (name === undefined) return []
    const subscribed = webhooks.filter(webhook => webhook.events.includes(name))
    if (subscribed.length === 0) return []
    const event = toNotificationEvent(record, name)
    const body = JSON.stringify(event)
    return subscribed.map(webhook => ({ endpoint: webhook.name, eventId: event.id, eventType: event.type, body }))
  }
}

/** A cleanup event's outbox rows: one per webhook subscribed to its type. */
export function cleanupEventMessages (webhooks: readonly WebhookRoute[], event: CleanupNotificationEvent): OutboxMessage[] {
  const body = JSON.stringify(event)
  return webhooks.filter(webhook => webhook.events.includes(event.type))
    .map(webhook => ({ endpoint: webhook.name, eventId: event.id, eventType: event.type, body }))
}
