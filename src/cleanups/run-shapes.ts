import Type, { type Static } from 'typebox'
import { RestoreResultSchema } from '../images/shapes.js'

/**
 * The shapes of a cleanup's run, defined once: REST answers with these, and openapi.yaml and the SDL are held to
 * them in test/contract/shapes.test.ts.
 */
export const CleanupRunStateSchema = Type.Union([
  Type.Literal('running'), Type.Literal('cancelling'), Type.Literal('cancelled'), Type.Literal('interrupted'), Type.Literal('done')
], {
  description: 'running; cancelling (a cancel was asked and the run has not stopped yet: in-flight removals finish, the rest are skipped); cancelled (in-flight removals finished, the rest skipped); interrupted (the gateway running it stopped mid-run, or stopped beating and another replica marked it: every tag is done and audited, or untouched); done.'
})

export const CleanupRunCountsSchema = Type.Object({
  done: Type.Integer({ minimum: 0, description: 'Removed, audited with the cleanup id.' }),
  stale: Type.Integer({ minimum: 0, description: 'Skipped: the tag changed since the plan (PLAN_STALE), or a signature\'s subject stayed.' }),
  failed: Type.Integer({ minimum: 0, description: 'Refused or failed at execution; the audit record says why.' }),
  skipped: Type.Integer({ minimum: 0, description: 'Not attempted: the run was cancelled first.' })
})

export const CleanupRunSchema = Type.Object({
  cleanupId: Type.String(),
  state: CleanupRunStateSchema,
  startedBy: Type.String(),
  startedAt: Type.String({ format: 'date-time' }),
  finishedAt: Type.Optional(Type.String({ format: 'date-time' })),
  maxDeletions: Type.Integer({ minimum: 0 }),
  counts: CleanupRunCountsSchema,
  cancelRequestedAt: Type.Optional(Type.String({ format: 'date-time', description: 'When a cancel was first asked of the running run (on any replica).' })),
  cancelRequestedBy: Type.Optional(Type.String({ description: 'Who asked it.' }))
})
export type CleanupRunShape = Static<typeof CleanupRunSchema>

export const ExecuteCleanupBodySchema = Type.Object({
  maxDeletions: Type.Optional(Type.Integer({
    minimum: 1,
    maximum: 1_000_000,
    description: 'The most tags this run may remove (cleanups.maxDeletions, 100, unless given): a plan that removes more is refused whole.'
  }))
}, { additionalProperties: false })

export const RestoreCleanupItemSchema = Type.Object({
  deletionId: Type.String(),
  repository: Type.String(),
  tag: Type.String(),
  result: Type.Union([Type.Literal('restored'), Type.Literal('failed')]),
  restore: Type.Optional(RestoreResultSchema),
  errorCode: Type.Optional(Type.String()),
  detail: Type.Optional(Type.String())
})

export const RestoreCleanupResultSchema = Type.Object({
  cleanupId: Type.String(),
  items: Type.Array(RestoreCleanupItemSchema, { description: 'Each restorable deletion of the run, newest first.' })
})
