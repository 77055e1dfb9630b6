import { PassThrough } from 'node:stream'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import type { CleanupRun } from '../audit/types.js'
import { cancelCleanup, executeCleanup, isLive, restoreCleanup, type CleanupRunEvent, type CleanupRunServices } from '../cleanups/run-cleanup.js'
import { CleanupRunSchema, ExecuteCleanupBodySchema, RestoreCleanupResultSchema } from '../cleanups/run-shapes.js'
import { StoredRunFollowers } from '../cleanups/run-followers.js'
import type { CleanupPlan } from '../cleanups/shapes.js'
import type { Identity } from '../policy/types.js'
import { clientRequestId } from './client-request-id.js'

const CleanupParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) })

export interface CleanupRunRouteDeps {
  run: CleanupRunServices
  /** The stored plan as the caller may see it (NOT_FOUND otherwise): the same look-up GET /cleanups/<id> makes. */
  load: (identity: Identity, id: string) => Promise<CleanupPlan>
  /** How often the event stream sends a comment line, so proxies keep an idle stream open. */
  heartbeatMs?: number
  /** Polls the store for runs other replicas execute, one read per run however many streams follow it. */
  followers?: StoredRunFollowers
}

function sse (stream: PassThrough, event: string, data: unknown): void {
  stream.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
}

/**
 * Running a planned cleanup: `POST /cleanups/<id>/execute` (202, the run goes on in the background), `DELETE
 * /cleanups/<id>` cancels it, `GET /cleanups/<id>/events` streams its progress (Server-Sent Events), `POST
 * /cleanups/<id>/restore` undoes what it deleted.
 */
export const cleanupRunRoutes = (deps: CleanupRunRouteDeps): FastifyPluginAsyncTypebox => async (app) => {
  const heartbeatMs = deps.heartbeatMs ?? 15_000
  const followers = deps.followers ?? new StoredRunFollowers(async id => await deps.run.images.audit.store.getCleanupRun(id), deps.run.replicas.pollMs)

  app.post('/cleanups/:id/execute', {
    schema: { params: CleanupParams, body: ExecuteCleanupBodySchema, response: { 202: CleanupRunSchema } },
    // The body is optional: none means the configured cap.
    preValidation: async (request) => { request.body ??= {} }
  }, async (request, reply) => {
    const cleanup = await deps.load(request.identity, request.params.id)
    const run = await executeCleanup(deps.run, {
      identity: request.identity,
      context: { requestId: request.id, ...clientRequestId(request), transport: 'rest' },
      cleanup,
      ...(request.body.maxDeletions === undefined ? {} : { maxDeletions: request.body.maxDeletions })
    })
    return await reply.code(202).header('location', `/cleanups/${cleanup.id}/events`).send(run)
  })

  app.delete('/cleanups/:id', { schema: { params: CleanupParams, response: { 200: CleanupRunSchema, 202: CleanupRunSchema } } }, async (request, reply) => {
    const cleanup = await deps.load(request.identity, request.params.id)
    const run = await cancelCleanup(deps.run, { identity: request.identity, cleanup })
    // Another replica's run that did not stop within cleanups.cancelWaitMs: accepted, it stops at that replica's next beat.
    return await reply.code(run.state === 'cancelling' ? 202 : 200).send(run)
  })

  app.post('/cleanups/:id/restore', { schema: { params: CleanupParams, response: { 200: RestoreCleanupResultSchema } } }, async (request) => {
    const cleanup = await deps.load(request.identity, request.params.id)
    const items = await restoreCleanup(deps.run, {
      identity: request.identity,
      context: { requestId: request.id, ...clientRequestId(request), transport: 'rest' },
      cleanup
    })
    return { cleanupId: cleanup.id, items }
  })

  // A closing server waits for its open responses, and an event stream stays open as long as its run: ended here
  // first, or shutdown (which stops the runs only after the server has closed) would wait for every watched run.
  // Clients reconnect to a replica still up.
  const open = new Set<PassThrough>()
  let closing = false
  app.addHook('preClose', async () => {
    closing = true
    for (const stream of open) stream.end()
  })

  app.get('/cleanups/:id/events', { schema: { params: CleanupParams } }, async (request, reply) => {
    const cleanup = await deps.load(request.identity, request.params.id)
    const stream = new PassThrough()
    open.add(stream)
    reply.raw.on('close', () => { open.delete(stream) })
    const events: CleanupRunEvent[] = []
    let wake: (() => void) | undefined
    // Listening before the store is read: an event between the two is queued, not lost.
    const unsubscribe = deps.run.runs.subscribe(cleanup.id, event => {
      events.push(event)
      wake?.()
    })
    const stored = await deps.run.images.audit.store.getCleanupRun(cleanup.id)
    const state = stored ?? { cleanupId: cleanup.id, state: 'planned' as const }
    void reply.header('content-type', 'text/event-stream; charset=utf-8').header('cache-control', 'no-store').send(stream)
    sse(stream, 'state', state)
    if (closing) {
      // Asked before the gateway began to close, answered after: the state, and the stream ends at once.
      unsubscribe?.()
      stream.end()
      return await reply
    }
    if (unsubscribe === undefined) {
      // Not running here: a planned cleanup or a finished run is told at once; another replica's run is followed.
      if (stored === undefined || !isLive(stored)) {
        if (stored !== undefined) sse(stream, 'end', endOf(stored))
        stream.end()
      } else {
        follow(stream, reply.raw, stored, heartbeatMs, followers)
      }
      return await reply
    }
    const heartbeat = setInterval(() => { stream.write(': heartbeat\n\n') }, heartbeatMs)
    const stop = (): void => {
      clearInterval(heartbeat)
      unsubscribe()
      wake?.()
    }
    reply.raw.on('close', stop)
    void (async () => {
      for (;;) {
        const event = events.shift()
        if (event === undefined) {
          // The gateway is closing (preClose ended the stream) or the client hung up mid-run (inject-based tests
          // cannot hang up half-way).
          /* c8 ignore next */
          if (stream.writableEnded || reply.raw.destroyed) break
          await new Promise<void>(resolve => { wake = resolve })
          continue
        }
        sse(stream, event.type, event)
        if (event.type === 'end') break
      }
      stop()
      stream.end()
    })()
    return await reply
  })
}

type Socket = { destroyed: boolean, on: (event: 'close', listener: () => void) => unknown }

/**
 * Another replica's run, read from the store every cleanups.pollMs (one read per run on this replica, however many
 * streams follow it): a `progress` event (state and counts) whenever they change, then `end`. The store keeps
 * counts, not tags, so this stream has no per-tag events. A run whose owner died ends once some replica marks it
 * interrupted (cleanups.staleAfterMs).
 */
function follow (stream: PassThrough, socket: Socket, first: CleanupRun, heartbeatMs: number, followers: StoredRunFollowers): void {
  const heartbeat = setInterval(() => { stream.write(': heartbeat\n\n') }, heartbeatMs)
  let last = JSON.stringify([first.state, first.counts])
  const unfollow = followers.follow(first.cleanupId, now => {
    // A store that fails mid-stream ends it: the client's EventSource reconnects and reads the state again.
    if (now === undefined) {
      stop()
      return
    }
    const seen = JSON.stringify([now.state, now.counts])
    if (seen !== last) {
      last = seen
      if (isLive(now)) sse(stream, 'progress', { type: 'progress', cleanupId: now.cleanupId, state: now.state, counts: now.counts })
    }
    if (!isLive(now)) {
      sse(stream, 'end', endOf(now))
      stop()
    }
  })
  function stop (): void {
    clearInterval(heartbeat)
    unfollow()
    stream.end()
  }
  socket.on('close', stop)
}

function endOf (run: CleanupRun): CleanupRunEvent {
  return { type: 'end', cleanupId: run.cleanupId, state: run.state, counts: run.counts }
}
