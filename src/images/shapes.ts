import Type, { type Static } from 'typebox'
import { DeleteActionSchema, DeleteModeSchema, DeleteStrategySchema } from '../audit/shapes.js'

/**
 * The results of the image use cases, defined once: the TypeScript types derive from these, the REST routes
 * answer with them, and tests hold openapi.yaml and the GraphQL SDL to them.
 */
/** A tagged multi-platform image that lists the digest: why `auto` untags rather than delete it. */
export const IndexReferenceSchema = Type.Object({ digest: Type.String(), tags: Type.Array(Type.String()) })

export const DeleteImageResultSchema = Type.Object({
  auditId: Type.String({ description: 'The audit record of this attempt; for a deletion, the id to restore it with.' }),
  registry: Type.String(),
  name: Type.String(),
  tag: Type.String(),
  digest: Type.String({ description: 'The manifest digest the tag points at: deleted, or left untagged by an untag.' }),
  mediaType: Type.String(),
  mode: { ...DeleteModeSchema, description: 'The mode asked for (or the registry\'s defaultMode).' },
  action: {
    ...DeleteActionSchema,
    description: 'What the deletion does (or, in a dry-run, would do): untag only this tag, or delete the digest with every tag on it.'
  },
  strategy: { ...DeleteStrategySchema, description: 'How: swap or native for an untag, digest for a digest deletion.' },
  planId: Type.String({ description: 'The id of the plan executed (or, in a dry-run, made): pass it as planId to execute exactly this plan later.' }),
  dryRun: Type.Boolean(),
  deleted: Type.Boolean({ description: 'True only when the registry accepted the deletion.' }),
  removedTags: Type.Array(Type.String(), {
    description: 'Every tag that the deletion removes (or, in a dry-run, would remove): the tag asked for, and for a digest deletion its co-tags.'
  }),
  sharedWith: Type.Array(Type.String(), { description: 'Other tags on the digest, as the plan found them; empty for mode=untag, which does not look.' }),
  referencedBy: Type.Array(IndexReferenceSchema, {
    description: 'Tagged multi-platform images that list the digest; empty for mode=untag, which does not look.'
  }),
  hiddenTags: Type.Optional(Type.Integer({
    minimum: 1,
    description: 'How many tags these lists leave out because the caller may not read them (counted, never named).'
  })),
  allowed: Type.Boolean({ description: 'Whether authorization lets the real call through; a dry-run needs only read, so it can be false there.' }),
  reason: Type.Optional(Type.String({ description: 'Dry-runs only: why the real call would be refused, error code first.' }))
})
export type DeleteImageResult = Static<typeof DeleteImageResultSchema>

export const RestoreResultSchema = Type.Object({
  auditId: Type.String({ description: 'The audit record of the restore.' }),
  deletionId: Type.String(),
  registry: Type.String(),
  name: Type.String(),
  digest: Type.String(),
  mediaType: Type.String(),
  restoredTags: Type.Array(Type.String())
})
export type RestoreDeletionResult = Static<typeof RestoreResultSchema>

/** A second person's approval of a plan, kept until it is executed or expires. */
export const PlanApprovalSchema = Type.Object({
  planId: Type.String(),
  requester: Type.String({ description: 'Whose dry-run made the plan: only their execution uses this approval.' }),
  approvedBy: Type.String({ description: 'The approver\'s subject.' }),
  expiresAt: Type.String({ format: 'date-time', description: 'When the approval (and the plan) stop being usable.' })
})
export type PlanApproval = Static<typeof PlanApprovalSchema>
