import Type, { type Static } from 'typebox'

/**
 * The results of the image use cases, defined once: the TypeScript types derive from these, the REST routes
 * answer with them, and tests hold openapi.yaml and the GraphQL SDL to them.
 */
export const DeleteImageResultSchema = Type.Object({
  auditId: Type.String({ description: 'The audit record of this attempt; for a deletion, the id to restore it with.' }),
  registry: Type.String(),
  name: Type.String(),
  tag: Type.String(),
  digest: Type.String({ description: 'The manifest digest deleted (or that would be).' }),
  mediaType: Type.String(),
  dryRun: Type.Boolean(),
  deleted: Type.Boolean({ description: 'True only when the registry accepted the DELETE.' }),
  removedTags: Type.Array(Type.String(), { description: 'Every tag that the deletion removes (or, in a dry-run, would remove): the tag asked for and its co-tags.' }),
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
