import Type, { type Static } from 'typebox'
import { CleanupRunSchema } from './run-shapes.js'

/**
 * The cleanup rule language, defined once: the REST body and the config's `retention.policies[]` are checked
 * against these, the TypeScript types derive from them, and openapi.yaml and the SDL are held to them in tests.
 * Each field is one of the anchors' (Harbor, zot, GitLab, gcr-cleaner, GAR, snok) in a single dialect: the README
 * has the table.
 */
const Pattern = (description: string): ReturnType<typeof Type.String> => Type.String({ minLength: 1, maxLength: 1000, description })

/** One way of matching a tag; every field given must match (AND). A list of them matches when any one does (OR). */
export const TagMatchSchema = Type.Object({
  glob: Type.Optional(Pattern('A tag glob as the policy writes them: * and ? (e.g. pr-*).')),
  regex: Type.Optional(Pattern('A regular expression in RE2 syntax, searched in the tag (anchor with ^ and $); run by a linear-time ' +
    'engine, so a pattern that needs backtracking (back-references, look-around) is refused.')),
  semver: Type.Optional(Pattern('A semver range (npm syntax, e.g. ">=1.2 <2"); tags that are not versions (a leading v is allowed) never match.'))
}, { additionalProperties: false })
export type TagMatch = Static<typeof TagMatchSchema>

/** A duration: whole numbers of weeks, days, hours, minutes and seconds, largest first (e.g. 14d, 1d12h, 90m). */
export const DURATION = /^(?=\d)(?:(\d{1,5})w)?(?:(\d{1,6})d)?(?:(\d{1,7})h)?(?:(\d{1,9})m)?(?:(\d{1,10})s)?$/
const Duration = (description: string): ReturnType<typeof Type.String> => Type.String({ pattern: DURATION.source, maxLength: 40, description })

export const CleanupRulesSchema = Type.Object({
  select: Type.Optional(Type.Array(TagMatchSchema, { maxItems: 100, description: 'Tags the cleanup may remove (any of these); absent means every tag.' })),
  exclude: Type.Optional(Type.Array(TagMatchSchema, { maxItems: 100, description: 'Tags taken out of the selection (any of these): never touched.' })),
  groupBy: Type.Optional(Type.Object({
    regex: Type.Optional(Pattern(
      'Groups tags by a capture of this RE2 pattern: the group named by `capture`, else the first group, else the whole match. ' +
      'Tags it does not match form one group of their own. Absent: one group per repository.'
    )),
    capture: Type.Optional(Type.String({ minLength: 1, maxLength: 100, description: 'The named group to group by.' }))
  }, { additionalProperties: false })),
  keep: Type.Optional(Type.Object({
    tags: Type.Optional(Type.Array(TagMatchSchema, { maxItems: 100, description: 'Always kept (any of these).' })),
    newest: Type.Optional(Type.Integer({
      minimum: 0,
      maximum: 100_000,
      description: 'The newest N selected tags of each group are kept (by the image config\'s created, an index\'s ' +
        'org.opencontainers.image.created annotation, else its first platform\'s config). Signature tags never count.'
    })),
    newerThan: Type.Optional(Duration('Tags created less than this long ago are kept.'))
  }, { additionalProperties: false })),
  deleteOlderThan: Type.Optional(Duration('Only tags created longer ago than this are removed; a tag whose age is unknown is then kept.')),
  referrers: Type.Optional(Type.Union([Type.Literal('delete'), Type.Literal('keep')], {
    description: 'Cosign tags (sha256-<hex>.sig, .att, .sbom) of a digest the cleanup deletes: removed with it (delete, the default) or kept.'
  })),
  orphanedReferrers: Type.Optional(Type.Boolean({
    description: 'Also remove cosign tags whose subject digest is already gone from the repository (default false).'
  }))
}, { additionalProperties: false })
export type CleanupRules = Static<typeof CleanupRulesSchema>

export const CleanupRequestSchema = Type.Object({
  registry: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  repositories: Type.Array(Type.String({ minLength: 1, maxLength: 255 }), {
    minItems: 1,
    maxItems: 100,
    description: 'Repository globs (* and ? within a segment, ** across /): matched against the catalog; a name without wildcards is used as is.'
  }),
  rules: CleanupRulesSchema
}, { additionalProperties: false })
export type CleanupRequest = Static<typeof CleanupRequestSchema>

/** A tagged multi-platform image that lists the digest: why `auto` untags rather than delete it. */
const IndexReferenceSchema = Type.Object({ digest: Type.String(), tags: Type.Array(Type.String()) })

export const PlanDecisionSchema = Type.Object({
  action: Type.String(),
  tag: Type.String(),
  allow: Type.Boolean(),
  reason: Type.String()
})

/**
 * The deletion plan of one tag, as the single-tag core makes it (mode auto): executing the cleanup later runs it by
 * its id, which the core re-makes and compares, so a tag that changed meanwhile is skipped as stale.
 */
export const CleanupDeletionPlanSchema = Type.Object({
  id: Type.String({ description: 'The plan id a single deletion would make for this tag at this point of the cleanup.' }),
  registry: Type.String(),
  repository: Type.String(),
  tag: Type.String(),
  digest: Type.String(),
  mediaType: Type.String(),
  mode: Type.Union([Type.Literal('auto'), Type.Literal('untag'), Type.Literal('digest')]),
  force: Type.Boolean(),
  action: Type.Union([Type.Literal('untagged'), Type.Literal('deleted-digest')]),
  strategy: Type.Union([Type.Literal('swap'), Type.Literal('native'), Type.Literal('digest')]),
  removedTags: Type.Array(Type.String()),
  sharedWith: Type.Array(Type.String(), { description: 'Other tags on the digest when this entry runs (earlier entries already ran).' }),
  referencedBy: Type.Array(IndexReferenceSchema),
  decisions: Type.Array(PlanDecisionSchema),
  hiddenTags: Type.Optional(Type.Integer({ minimum: 1, description: 'Tags these lists leave out because the caller may not read them.' }))
})
export type CleanupDeletionPlan = Static<typeof CleanupDeletionPlanSchema>

export const CleanupEntrySchema = Type.Object({
  repository: Type.String(),
  tag: Type.String(),
  digest: Type.String(),
  mediaType: Type.String(),
  created: Type.Optional(Type.String({ format: 'date-time', description: 'When the image was created, as the rules saw it.' })),
  outcome: Type.Union([Type.Literal('remove'), Type.Literal('keep'), Type.Literal('refuse')], {
    description: 'remove: the cleanup removes it; keep: a rule (or the policy\'s protection) keeps it; refuse: the rules would remove it, the policy does not let the caller.'
  }),
  rule: Type.String({ description: 'The rule that decided (a field path such as keep.newest, or protected), or for a refusal the rule that selected it.' }),
  reason: Type.String({ description: 'Why, in words; for a refusal, the policy\'s words.' }),
  sequence: Type.Optional(Type.Integer({ minimum: 1, description: 'Removals only: the order they run in; each plan assumes the ones before it ran.' })),
  plan: Type.Optional(CleanupDeletionPlanSchema)
})
export type CleanupEntry = Static<typeof CleanupEntrySchema>

export const CleanupTotalsSchema = Type.Object({
  repositories: Type.Integer({ minimum: 0 }),
  tags: Type.Integer({ minimum: 0, description: 'Tags judged (those the caller may read).' }),
  remove: Type.Integer({ minimum: 0 }),
  keep: Type.Integer({ minimum: 0 }),
  refuse: Type.Integer({ minimum: 0 }),
  deletedDigests: Type.Integer({ minimum: 0, description: 'Removals that delete their digest (the last tag on it).' }),
  untagged: Type.Integer({ minimum: 0, description: 'Removals that untag only their tag.' }),
  hiddenTags: Type.Integer({ minimum: 0, description: 'Tags of these repositories the caller may not read: never judged, never removed.' })
})
export type CleanupTotals = Static<typeof CleanupTotalsSchema>

export const CleanupPlanSchema = Type.Object({
  id: Type.String({ description: 'The cleanup\'s id: GET /cleanups/<id> shows it again.' }),
  state: Type.Union([Type.Literal('planned')], { description: 'planned: nothing was changed.' }),
  registry: Type.String(),
  repositories: Type.Array(Type.String(), { description: 'The repository patterns asked for.' }),
  policy: Type.Optional(Type.String({ description: 'The retention policy the rules come from, when named.' })),
  rules: CleanupRulesSchema,
  createdBy: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  entries: Type.Array(CleanupEntrySchema),
  totals: CleanupTotalsSchema,
  // Part 2's hook: GET /cleanups/<id> shows the run's state and counts once it ran.
  run: Type.Optional(CleanupRunSchema)
})
export type CleanupPlan = Static<typeof CleanupPlanSchema>
