import Type, { type Static } from 'typebox'

/**
 * The read API's results, defined once: the TypeScript types derive from these, the REST routes answer with them,
 * and tests hold openapi.yaml and the GraphQL SDL to them (GraphQL pages are connections of the same items).
 */
export const RepositorySchema = Type.Object({ name: Type.String() })
export type Repository = Static<typeof RepositorySchema>

export const RepositoryPageSchema = Type.Object({
  registry: Type.String(),
  items: Type.Array(RepositorySchema),
  nextCursor: Type.Optional(Type.String({ description: 'Present when more repositories may follow; pass it as cursor.' }))
})
export type RepositoryPage = Static<typeof RepositoryPageSchema>

export const ActionPermissionSchema = Type.Object({
  allowed: Type.Boolean(),
  approvalRequired: Type.Optional(Type.Boolean({ description: 'Allowed only once someone else approves the plan (a rule\'s `approval: required`).' })),
  reason: Type.Optional(Type.String({ description: 'The policy\'s reason: why it is denied, or why it needs an approval.' }))
})
export type ActionPermission = Static<typeof ActionPermissionSchema>

export const TagActionsSchema = Type.Object({
  delete: ActionPermissionSchema,
  force: ActionPermissionSchema,
  restore: ActionPermissionSchema
}, { description: 'What the policy lets the caller do with this tag; a deletion still checks co-tags and indexes when it runs.' })
export type TagActions = Static<typeof TagActionsSchema>

export const PlatformSchema = Type.Object({
  os: Type.String(),
  architecture: Type.String(),
  variant: Type.Optional(Type.String()),
  digest: Type.String({ description: 'The platform manifest.' })
})

export const LabelSchema = Type.Object({ name: Type.String(), value: Type.String() })

export const ImageTagSchema = Type.Object({
  tag: Type.String(),
  digest: Type.String(),
  mediaType: Type.String(),
  platforms: Type.Optional(Type.Array(PlatformSchema, { description: 'An index or manifest list: its platforms.' })),
  size: Type.Optional(Type.Number({ description: 'A single-platform image: the total size of its layers in bytes (may exceed a 32-bit int).' })),
  protected: Type.Boolean({ description: 'A protected-tags entry of the policy covers it: nobody may delete it.' }),
  coTags: Type.Array(Type.String(), { description: 'Other tags of this page on the same digest (a digest deletion removes them too).' }),
  actions: TagActionsSchema
})
export type ImageTag = Static<typeof ImageTagSchema>

export const ImageTagPageSchema = Type.Object({
  registry: Type.String(),
  name: Type.String(),
  items: Type.Array(ImageTagSchema),
  nextCursor: Type.Optional(Type.String({ description: 'Present when more tags follow; pass it as cursor.' }))
})
export type ImageTagPage = Static<typeof ImageTagPageSchema>

export const TagDetailSchema = Type.Object({
  registry: Type.String(),
  name: Type.String(),
  tag: Type.String(),
  digest: Type.String(),
  mediaType: Type.String(),
  platforms: Type.Optional(Type.Array(PlatformSchema, { description: 'An index or manifest list: its platforms.' })),
  size: Type.Optional(Type.Number({ description: 'A single-platform image: the total size of its layers in bytes (may exceed a 32-bit int).' })),
  created: Type.Optional(Type.String({ description: 'From the image config, as the image builder wrote it.' })),
  labels: Type.Optional(Type.Array(LabelSchema, { description: 'From the image config.' })),
  protected: Type.Boolean(),
  actions: TagActionsSchema
})
export type TagDetail = Static<typeof TagDetailSchema>
