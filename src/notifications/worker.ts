import { EventEmitter, once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent, request } from 'undici'
import type { ClaimedDelivery, DeliveryOutcome, DeliveryStatus, OutboxStore } from '../audit/outbox.js'
import type { WebhookConfig } from '../config/schema.js'
import type { NotificationEvent } from './shapes.js'
import { webhookHeaders } from './sign.js'
import { slackMessage } from './slack-format.js'

export interface DeliveryLogger {
  info: (details: object, message: string) => void
  warn: (details: object, message: string) => void
}

export interface DeliveryObserver {
  /** Each attempt's result per endpoint: delivered, retried (another attempt scheduled) or failed (given up). */
  webhookAttempt: (endpoint: string, result: 'delivered' | 'retried' | 'failed') => void
}

export interface DeliveryWorkerOptions {
  store: OutboxStore
  webhooks: readonly WebhookConfig[]
  logger: DeliveryLogger
  observer?: DeliveryObserver
  pollMs: number
  concurrency: number
  retry: { firstDelayMs: number, maxDelayMs: number }
  now?: () => Date
  /** 0 ≤ x < 1; the jitter's source. */
  random?: () => number
}

export interface DeliveryWorker {
  /** Look for due deliveries now (a record was just written) rather than at the next poll. */
  nudge: () => void
  /** Stops claiming, aborts attempts in flight (their rows are claimed again once the lease ends) and waits for them. */
  stop: () => Promise<void>
}

/** The delay before attempt `attempts + 1`: doubling from firstDelayMs, capped, then jittered down by up to half. */
export function retryDelayMs (attempts: number, retry: DeliveryWorkerOptions['retry'], random: () => number): number {
  const base = Math.min(retry.maxDelayMs, retry.firstDelayMs * 2 ** Math.min(attempts - 1, 30))
  return Math.round(base / 2 + (base / 2) * random())
}

/**
 * Delivers the outbox: claims due rows, posts each to its endpoint and records the outcome. Runs beside the API,
 * never in a request: an endpoint that hangs costs one slot of `concurrency` for at most its timeout.
 */
export function startDeliveryWorker (options: DeliveryWorkerOptions): DeliveryWorker {
  const now = options.now ?? (() => new Date())
  const random = options.random ?? Math.random
  const webhooks = new Map(options.webhooks.map(webhook => [webhook.name, webhook]))
  // A claim outlives every attempt it covers; a process killed mid-attempt leaves its rows to the next claim after it.
  const leaseMs = Math.max(0, ...options.webhooks.map(webhook => webhook.timeoutMs)) + 5000
  const dispatcher = new Agent({ connections: 4 })
  const controller = new AbortController()
  const { signal } = controller
  const wake = new EventEmitter()
  const inFlight = new Set<Promise<void>>()

  async function attempt (row: ClaimedDelivery, webhook: WebhookConfig): Promise<DeliveryOutcome> {
    let body: string
    try {
      body = webhook.format === 'slack' ? JSON.stringify(slackMessage(JSON.parse(row.body) as NotificationEvent)) : row.body
    } catch (error) {
      // No attempt could ever send it: given up now, rather than left leased and claimed again forever. The error's
      // name only, since a JSON.parse message quotes the body.
      return { delivered: false, error: `the event could not be formatted for this endpoint (${(error as Error).name}): not retried` }
    }
    const headers = webhook.format === 'slack' ? { 'content-type': 'application/json' } : webhookHeaders(webhook.secret as string, row.eventId, now(), body)
    try {
      const response = await request(webhook.url, {
        method: 'POST',
        headers,
        body,
        dispatcher,
        // The signal bounds the whole attempt; undici's own timeouts only back it up.
        signal: AbortSignal.any([signal, AbortSignal.timeout(webhook.timeoutMs)]),
        headersTimeout: webhook.timeoutMs + 1000,
        bodyTimeout: webhook.timeoutMs + 1000
      })
      await response.body.dump()
      const status = response.statusCode
      if (status >= 200 && status < 300) return { delivered: true, status }
      // 410 Gone: Standard Webhooks' "stop sending", and what Slack answers for a removed incoming webhook.
      if (status === 410) return { delivered: false, status, error: 'the endpoint answered 410 Gone: not retried' }
      return { delivered: false, status, error: `the endpoint answered ${status}`, retryAt: retryAt(row.attempts) }
    } catch (error) {
      // The message only: undici's errors carry no URL, and the URL (which may hold a token) is never recorded.
      // A system error's code (ECONNREFUSED), else the error's name (TimeoutError; a DOMException's code is a number).
      const code = (error as { code?: unknown }).code
      const reason = typeof code === 'string' ? code : (error as Error).name
      return { delivered: false, error: `no answer: ${reason}`, retryAt: retryAt(row.attempts) }
    }
  }

  function retryAt (attempts: number): Date {
    return new Date(now().getTime() + retryDelayMs(attempts, options.retry, random))
  }

  async function deliver (row: ClaimedDelivery): Promise<void> {
    const webhook = webhooks.get(row.endpoint)
    const outcome: DeliveryOutcome = webhook === undefined
      ? { delivered: false, error: `no webhook named ${row.endpoint} is configured any more` }
      : await attempt(row, webhook)
    // Stopping: leave the row leased; the next process claims it when the lease ends.
    if (signal.aborted) return
    let status: DeliveryStatus | 'superseded'
    try {
      status = await options.store.finishDelivery(row.eventId, row.endpoint, outcome, row.attempts)
    } catch (error) {
      options.logger.warn({ err: error, endpoint: row.endpoint, eventId: row.eventId }, 'could not record a webhook attempt; it is retried when its lease ends')
      return
    }
    if (status === 'superseded') {
      // The lease ran out mid-attempt and another claim owns the row: its outcome is recorded, not this one. The
      // endpoint may have had the event twice; receivers de-duplicate on webhook-id.
      options.logger.warn({ endpoint: row.endpoint, eventId: row.eventId, attempts: row.attempts, delivered: outcome.delivered },
        'a webhook attempt outlived its lease; another claim records the row')
      return
    }
    const result = status === 'pending' ? 'retried' : status
    options.observer?.webhookAttempt(row.endpoint, result)
    const details = { endpoint: row.endpoint, eventId: row.eventId, attempts: row.attempts, status: outcome.status, result }
    if (outcome.delivered) options.logger.info(details, 'webhook delivered')
    else options.logger.warn({ ...details, error: outcome.error }, result === 'failed' ? 'webhook given up' : 'webhook attempt failed; retrying later')
  }

  /** Until the poll interval passes, a nudge comes, an attempt finishes (a slot is free) or the worker stops. */
  async function pause (): Promise<void> {
    const local = new AbortController()
    const both = AbortSignal.any([signal, local.signal])
    await Promise.race([
      sleep(options.pollMs, undefined, { signal: both }),
      once(wake, 'nudge', { signal: both }),
      ...inFlight
    ]).catch(() => undefined)
    local.abort()
  }

  async function run (): Promise<void> {
    while (!signal.aborted) {
      const room = options.concurrency - inFlight.size
      if (room > 0) {
        try {
          for (const row of await options.store.claimDeliveries(room, leaseMs)) {
            const delivery: Promise<void> = deliver(row).finally(() => inFlight.delete(delivery))
            inFlight.add(delivery)
          }
        } catch (error) {
          if (!signal.aborted) options.logger.warn({ err: error }, 'could not read the webhook outbox; trying again at the next poll')
        }
      }
      await pause()
    }
    await Promise.all(inFlight)
  }

  // Settles once the loop has ended and the connections are closed, however many times stop() is called.
  const finished = run().then(async () => { await dispatcher.close() })
  return {
    nudge: () => { wake.emit('nudge') },
    async stop () {
      controller.abort()
      await finished
    }
  }
}
