import { readFileSync } from 'node:fs'
import t from 'tap'
import { parse } from 'yaml'
import type { GraphQLObjectType } from 'graphql'
import { AuditActionSchema, AuditEventSchema, AuditOutcomeSchema } from '../../src/audit/shapes.js'
import { MeSchema } from '../../src/identity/who-am-i.js'
import { DeleteImageResultSchema, PlanApprovalSchema, RestoreResultSchema } from '../../src/images/shapes.js'
import { ActionPermissionSchema, ImageTagSchema, LabelSchema, PlatformSchema, RepositorySchema, TagActionsSchema, TagDetailSchema } from '../../src/images/browse-shapes.js'
import { CleanupNotificationEventSchema, DeliverySchema, NotificationEventSchema } from '../../src/notifications/shapes.js'
import { CleanupDeletionPlanSchema, CleanupEntrySchema, CleanupPlanSchema, CleanupRulesSchema, CleanupTotalsSchema, TagMatchSchema } from '../../src/cleanups/shapes.js'
import { CleanupRunCountsSchema, CleanupRunSchema, RestoreCleanupItemSchema, RestoreCleanupResultSchema } from '../../src/cleanups/run-shapes.js'
import { canonicalGraphQL, canonicalSchema, loadSdl, withoutFormats } from '../fixtures/shapes.js'

const components = parse(readFileSync(new URL('../../openapi.yaml', import.meta.url), 'utf8')).components.schemas as Record<string, Record<string, unknown>>
const sdl = loadSdl(readFileSync(new URL('../../schema/schema.graphql', import.meta.url), 'utf8'))

/** Each shape the API answers with, by its name in openapi.yaml and in the SDL. */
const SHAPES = [
  { name: 'DeleteImageResult', schema: DeleteImageResultSchema },
  { name: 'RestoreResult', schema: RestoreResultSchema },
  { name: 'PlanApproval', schema: PlanApprovalSchema },
  { name: 'Me', schema: MeSchema },
  { name: 'AuditEvent', schema: AuditEventSchema },
  { name: 'AuditOutcome', schema: AuditOutcomeSchema },
  { name: 'AuditAction', schema: AuditActionSchema },
  { name: 'Repository', schema: RepositorySchema },
  { name: 'ImageTag', schema: ImageTagSchema },
  { name: 'TagDetail', schema: TagDetailSchema },
  { name: 'TagActions', schema: TagActionsSchema },
  { name: 'ActionPermission', schema: ActionPermissionSchema },
  { name: 'Platform', schema: PlatformSchema },
  { name: 'Label', schema: LabelSchema },
  { name: 'CleanupPlan', schema: CleanupPlanSchema },
  { name: 'CleanupEntry', schema: CleanupEntrySchema },
  { name: 'CleanupDeletionPlan', schema: CleanupDeletionPlanSchema },
  { name: 'CleanupTotals', schema: CleanupTotalsSchema },
  { name: 'CleanupRules', schema: CleanupRulesSchema },
  { name: 'TagMatch', schema: TagMatchSchema },
  { name: 'CleanupRun', schema: CleanupRunSchema },
  { name: 'CleanupRunCounts', schema: CleanupRunCountsSchema },
  { name: 'RestoreCleanupItem', schema: RestoreCleanupItemSchema },
  { name: 'RestoreCleanupResult', schema: RestoreCleanupResultSchema }
]

t.test('the GraphQL inputs of planCleanup take the fields the REST body does', async t => {
  const input = (name: string): string[] => Object.keys((sdl.getType(name) as unknown as { getFields: () => Record<string, unknown> }).getFields()).sort()
  t.same(input('CleanupRulesInput'), Object.keys(CleanupRulesSchema.properties).sort())
  t.same(input('TagMatchInput'), Object.keys(TagMatchSchema.properties).sort())
  t.same(input('KeepInput'), Object.keys((CleanupRulesSchema.properties.keep as unknown as { properties: object }).properties).sort())
  t.same(input('GroupByInput'), Object.keys((CleanupRulesSchema.properties.groupBy as unknown as { properties: object }).properties).sort())
})

for (const { name, schema } of SHAPES) {
  t.test(`${name}: openapi.yaml and the SDL say what the code answers`, async t => {
    const expected = canonicalSchema(schema as unknown as Record<string, unknown>)
    t.same(canonicalSchema(components[name] as Record<string, unknown>, components), expected, 'openapi.yaml')
    t.same(canonicalGraphQL(sdl.getType(name) as GraphQLObjectType).schema, withoutFormats(expected), 'schema.graphql')
  })
}

/** Shapes only REST speaks (webhooks are not GraphQL): openapi.yaml alone is held to them. */
for (const { name, schema } of [
  { name: 'NotificationEvent', schema: NotificationEventSchema }, { name: 'CleanupNotificationEvent', schema: CleanupNotificationEventSchema }, { name: 'Delivery', schema: DeliverySchema }
]) {
  t.test(`${name}: openapi.yaml says what the code sends`, async t => {
    t.same(canonicalSchema(components[name] as Record<string, unknown>, components), canonicalSchema(schema as unknown as Record<string, unknown>))
  })
}

t.test('the comparison notices a missing field, an optional one made required, and a changed enum', async t => {
  const base = { type: 'object', required: ['a'], properties: { a: { type: 'string' }, b: { anyOf: [{ const: 'x' }, { const: 'y' }] } } }
  const same = canonicalSchema(base)
  t.notSame(canonicalSchema({ ...base, properties: { a: { type: 'string' } } }), same)
  t.notSame(canonicalSchema({ ...base, required: ['a', 'b'] }), same)
  t.notSame(canonicalSchema({ ...base, properties: { ...base.properties, b: { type: 'string', enum: ['x'] } } }), same)
  t.same(canonicalSchema({ ...base, properties: { ...base.properties, b: { type: 'string', enum: ['y', 'x'] } } }), same, 'enum order does not matter')
  const typed = loadSdl('type Query { x: X } enum E { dry_run deleted } type X { a: String!, b: E, c: [Int!]! }')
  t.same(canonicalGraphQL(typed.getType('X') as GraphQLObjectType).schema, {
    type: 'object',
    required: ['a', 'c'],
    properties: { a: { type: 'string' }, b: { type: 'string', enum: ['deleted', 'dry-run'] }, c: { type: 'array', items: { type: 'integer' } } }
  })
  t.same(withoutFormats([{ type: 'string', format: 'date-time' }]), [{ type: 'string' }])
})
