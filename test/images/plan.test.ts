import t from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest } from '../../testing/seed.js'
import { deleteImage, executePlan } from '../../src/images/delete-image.js'
import { makePlan, PLAN_ID, type DeleteMode, type PlanContent } from '../../src/images/plan.js'
import { rejection } from '../fixtures/rejection.js'
import { closedPort, directory, imageServices, memoryTrail } from '../fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const identity = { subject: 'apikey:admin', groups: [], kind: 'apikey' as const }
const context = { requestId: 'req-plan', transport: 'rest' as const }

const CONTENT: PlanContent = {
  registry: 'default',
  repository: 'team/app',
  tag: 'pr-1',
  digest: `sha256:${'a'.repeat(64)}`,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  mode: 'auto',
  force: false,
  action: 'untagged',
  strategy: 'swap',
  removedTags: ['pr-1'],
  sharedWith: ['pr-1-rc'],
  referencedBy: [{ digest: `sha256:${'b'.repeat(64)}`, tags: ['release', 'latest'] }]
}

t.test('a plan is a plain value whose id says what it does, not who was allowed', async t => {
  const plan = makePlan(CONTENT, [{ action: 'delete', tag: 'pr-1', allow: true, reason: 'r' }])
  t.match(plan.id, PLAN_ID)
  t.same(JSON.parse(JSON.stringify(plan)), plan, 'serializable as it is')
  t.equal(makePlan({ ...CONTENT, sharedWith: ['pr-1-rc'], referencedBy: [{ ...CONTENT.referencedBy[0] as PlanContent['referencedBy'][number], tags: ['latest', 'release'] }] }).id, plan.id, 'order of tags does not matter')
  const changed: Array<Partial<PlanContent>> = [{ digest: `sha256:${'c'.repeat(64)}` }, { action: 'deleted-digest' }, { strategy: 'native' }, { mode: 'untag' }, { force: true }, { removedTags: ['pr-1', 'pr-1-rc'] }, { sharedWith: [] }, { referencedBy: [] }, { tag: 'pr-2' }]
  for (const change of changed) t.not(makePlan({ ...CONTENT, ...change }).id, plan.id, `a different ${Object.keys(change)[0] as string} is a different plan`)
})

t.test('executePlan runs a plan made earlier only while it holds', async t => {
  const { store, audit } = memoryTrail(t)
  const deps = imageServices(directory(t, { default: registry.url }), audit)
  const image = await pushImage(target, 'plan/app', ['v1'], 'schema2')
  const dry = await deleteImage(deps, { identity, context, repository: 'plan/app', tag: 'v1', dryRun: true })
  const plan = { id: dry.planId, registry: dry.registry, repository: dry.name, tag: dry.tag, mode: dry.mode, force: false }
  await tagManifest(target, 'plan/app', 'v1-rc', image.manifest, image.mediaType)
  const stale = await rejection(executePlan(deps, { identity, context, plan }))
  t.match(stale, { code: 'PLAN_STALE', status: 409, extras: { planId: dry.planId, action: 'untagged' } })
  t.match((await store.list({ outcome: 'rejected' }, { limit: 1 })).items[0], { errorCode: 'PLAN_STALE', mode: 'auto', deleteAction: 'untagged' })

  const fresh = await deleteImage(deps, { identity, context, repository: 'plan/app', tag: 'v1', dryRun: true })
  const done = await executePlan(deps, { identity, context, plan: { ...plan, id: fresh.planId }, signal: new AbortController().signal })
  t.match(done, { planId: fresh.planId, action: 'untagged', deleted: true, removedTags: ['v1'] })
})

t.test('the use case itself refuses an unknown mode or a malformed plan id, before any registry request or record', async t => {
  const { store, audit } = memoryTrail(t)
  // Nothing listens there: a registry request would fail UPSTREAM_UNAVAILABLE, not INVALID_REQUEST.
  const deps = imageServices(directory(t, { default: `http://127.0.0.1:${await closedPort()}` }), audit)
  const base = { identity, context, repository: 'plan/app', tag: 'v1' }
  for (const mode of ['everything', 'UNTAG', 7, null] as unknown as DeleteMode[]) {
    const error = await rejection(deleteImage(deps, { ...base, mode }))
    t.match(error, { code: 'INVALID_REQUEST', status: 400, extras: { field: 'mode', rule: 'auto|untag|digest' } }, `mode ${String(mode)}`)
    t.match(error.detail, /^mode must be one of auto, untag, digest \(got "/)
  }
  for (const planId of ['nope', `plan_${'A'.repeat(40)}`, 42] as unknown as string[]) {
    const error = await rejection(deleteImage(deps, { ...base, mode: 'untag', planId }))
    t.match(error, { code: 'INVALID_REQUEST', status: 400, extras: { field: 'planId', rule: `matches ${PLAN_ID.source}` } }, `planId ${String(planId)}`)
  }
  const plan = { id: 'nope', registry: 'default', repository: 'plan/app', tag: 'v1', mode: 'untag' as const, force: false }
  t.match(await rejection(executePlan(deps, { identity, context, plan })), { code: 'INVALID_REQUEST', extras: { field: 'planId' } }, 'executePlan too')
  t.match(await rejection(executePlan(deps, { identity, context, plan: { ...plan, id: `plan_${'0'.repeat(40)}`, mode: 'all' as DeleteMode } })), { extras: { field: 'mode' } })
  t.same((await store.list({}, { limit: 10 })).items, [], 'a bad input is not an attempt: nothing recorded')
  t.match(await rejection(deleteImage(deps, { ...base, mode: 'untag', planId: `plan_${'0'.repeat(40)}` })), { code: 'UPSTREAM_UNAVAILABLE' }, 'valid options do reach the registry')
})
