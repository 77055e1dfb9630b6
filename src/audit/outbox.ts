/** The notification outbox as both audit stores keep it: rows written in the transaction of the record they announce. */
import { invalidRequest } from './listing.js'
import type { AuditImageRef, AuditRecord } from './types.js'

/** One event for one endpoint, as the notification routing makes it from a record. */
export interface OutboxMessage {
  endpoint: string
  /** Stable per event (the webhook-id): the same for every attempt and every endpoint. */
  eventId: string
  eventType: string
  /** The exact bytes every attempt sends and signs. */
  body: string
}

/** Which messages a record, as just written, produces; nothing for most (pending, dry-runs, reads). */
export type OutboxRouter = (record: AuditRecord) => OutboxMessage[]

export type DeliveryStatus = 'pending' | 'delivered' | 'failed'

export interface Delivery extends AuditImageRef {
  eventId: string
  endpoint: string
  eventType: string
  status: DeliveryStatus
  attempts: number
  createdAt: string
  /** While pending: not before this time (a claimed row's lease ends then too). */
  nextAttemptAt?: string
  lastAttemptAt?: string
  lastStatus?: number
  lastError?: string
  finishedAt?: string
}

export interface ClaimedDelivery extends Delivery {
  body: string
}

/** What an attempt came to: delivered, or not, with the time of the next attempt (none: stop now). */
export type DeliveryOutcome =
  | { delivered: true, status: number }
  | { delivered: false, status?: number, error: string, retryAt?: Date }

export interface DeliveryPage {
  items: Delivery[]
  nextCursor?: string
}

export interface OutboxStore {
  /**
   * Takes up to `limit` pending rows that are due, oldest due first, and leases them for `leaseMs` (their next
   * attempt moves that far ahead, so a process that dies mid-delivery leaves them to the next one). Concurrent
   * claims, from this store or another on the same database, never take the same row.
   */
  claimDeliveries: (limit: number, leaseMs: number) => Promise<ClaimedDelivery[]>
  /**
   * Records an attempt's outcome on a pending row and answers its status now. A retry later than 24 hours after
   * the row was written is not scheduled: the row is failed instead. `claimed` is the row's `attempts` as the claim
   * returned it: every claim counts one more, so a different count means the lease ran out and another claim took
   * the row; then nothing is recorded and the answer is 'superseded' (that claim's outcome is the one that counts).
   */
  finishDelivery: (eventId: string, endpoint: string, outcome: DeliveryOutcome, claimed?: number) => Promise<DeliveryStatus | 'superseded'>
  /** Newest first; a page reads at most the store's scan limit of rows, and `visible` hides the rest. */
  listDeliveries: (
    filter: { status?: DeliveryStatus }, page: { limit: number, cursor?: string }, visible?: (image: AuditImageRef) => boolean
  ) => Promise<DeliveryPage>
  countDeliveries: () => Promise<Array<{ endpoint: string, status: DeliveryStatus, count: number }>>
  /**
   * Writes messages that announce no audit record (a scheduled cleanup's report), filed under `image` for the
   * listing's visibility. Once per event and endpoint: publishing an event again changes nothing.
   */
  publish: (image: AuditImageRef, messages: readonly OutboxMessage[]) => Promise<void>
}

/** After this, a delivery that keeps failing is given up: Standard Webhooks' usual window, and a day of outage. */
export const OUTBOX_GIVE_UP_MS = 24 * 60 * 60 * 1000

export function encodeDeliveryCursor (seq: number): string {
  return Buffer.from(`d${seq}`, 'utf8').toString('base64url')
}

export function decodeDeliveryCursor (cursor: string): number {
  const match = /^d(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'))
  if (match === null) throw invalidRequest('cursor', 'cursor is not one this gateway handed out: start again without it')
  return Number(match[1])
}

/** The column values of a new outbox row for `record`. */
export function outboxRows (router: OutboxRouter | undefined, record: AuditRecord, now: Date): Array<Record<string, string>> {
  if (router === undefined) return []
  return messageRows(record, router(record), now)
}

/** The column values of new outbox rows for messages filed under `image`. */
export function messageRows (image: AuditImageRef, messages: readonly OutboxMessage[], now: Date): Array<Record<string, string>> {
  const time = now.toISOString()
  const { registry, name, tag } = image
  return messages.map(message => ({
    event_id: message.eventId,
    endpoint: message.endpoint,
    event_type: message.eventType,
    body: message.body,
    registry,
    name,
    tag,
    created_at: time,
    next_attempt_at: time
  }))
}

/** The status an outcome leaves a row in, given when the row was written. */
export function settledStatus (outcome: DeliveryOutcome, createdAt: string): DeliveryStatus {
  if (outcome.delivered) return 'delivered'
  if (outcome.retryAt === undefined || outcome.retryAt.getTime() > Date.parse(createdAt) + OUTBOX_GIVE_UP_MS) return 'failed'
  return 'pending'
}

export interface DeliveryRow {
  seq: number | string
  event_id: string
  endpoint: string
  event_type: string
  registry: string
  name: string
  tag: string
  body: string
  status: DeliveryStatus
  attempts: number
  created_at: string
  next_attempt_at: string
  last_attempt_at: string | null
  last_status: number | null
  last_error: string | null
  finished_at: string | null
}

export function toDelivery (row: DeliveryRow): Delivery {
  const delivery: Delivery = {
    eventId: row.event_id,
    endpoint: row.endpoint,
    eventType: row.event_type,
    registry: row.registry,
    name: row.name,
    tag: row.tag,
    status: row.status,
    attempts: row.attempts,
    createdAt: row.created_at
  }
  if (row.status === 'pending') delivery.nextAttemptAt = row.next_attempt_at
  if (row.last_attempt_at !== null) delivery.lastAttemptAt = row.last_attempt_at
  if (row.last_status !== null) delivery.lastStatus = row.last_status
  if (row.last_error !== null) delivery.lastError = row.last_error
  if (row.finished_at !== null) delivery.finishedAt = row.finished_at
  return delivery
}

export function toClaimed (row: DeliveryRow): ClaimedDelivery {
  return { ...toDelivery(row), body: row.body }
}

/**
 * Picks a page out of a scanned window (newest first, `window` rows asked): a full window, or one with more visible
 * rows than fit, ends with a cursor that continues after the last row consumed.
 */
export function deliveryPage (rows: DeliveryRow[], limit: number, window: number, visible?: (image: AuditImageRef) => boolean): DeliveryPage {
  const items: Delivery[] = []
  for (const [index, row] of rows.entries()) {
    if (visible !== undefined && !visible(row)) continue
    // A visible row past the page: the page ends at the row before it (it exists: limit is at least 1).
    if (items.length === limit) return { items, nextCursor: encodeDeliveryCursor(Number((rows[index - 1] as DeliveryRow).seq)) }
    items.push(toDelivery(row))
  }
  const last = rows.at(-1)
  if (rows.length === window && last !== undefined) return { items, nextCursor: encodeDeliveryCursor(Number(last.seq)) }
  return { items }
}
