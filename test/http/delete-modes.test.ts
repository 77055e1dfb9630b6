/**
 * Issue 11: the delete modes (untag, digest, auto) and plans, end to end against a real distribution 2.8.2 and
 * through both edges. Untag here is the swap; the native strategy has its own test with a fake registry.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import t from 'tap'
import { request } from 'undici'
import { startRegistry, type RegistryProcess } from '../../testing/registry-process.js'
import { pushImage, tagManifest } from '../../testing/seed.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { ADMIN_POLICY, countingDispatcher, sha256Hex, startGateway, type Gateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const counted = countingDispatcher(t)
const gateway: Gateway = await startGateway(t, { registries: { default: { url: registry.url, defaultMode: 'auto' } }, dispatcher: counted.dispatcher })

const MUTATION = `mutation Delete($name: String!, $tag: String!, $registry: String, $mode: DeleteMode, $dryRun: Boolean, $force: Boolean, $planId: String) {
  deleteImage(name: $name, tag: $tag, registry: $registry, mode: $mode, dryRun: $dryRun, force: $force, planId: $planId) {
    auditId registry name tag digest mediaType mode action strategy planId dryRun deleted removedTags sharedWith referencedBy { digest tags } allowed reason
  }
}`

async function gql (variables: Record<string, unknown>, on: Gateway = gateway, key?: string): Promise<{ data: any, error: any }> {
  const reply = await on.gql(MUTATION, variables, key === undefined ? {} : { key })
  return { data: reply.body.data?.deleteImage, error: reply.body.errors?.[0] }
}

/** The digest `name:reference` resolves to on the registry itself, or its status when it does not. */
async function digestOf (name: string, reference: string, on: RegistryProcess = registry): Promise<string | number> {
  const response = await request(`${on.url}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode === 200 ? String(response.headers['docker-content-digest']) : response.statusCode
}

async function tagsOf (name: string, on: RegistryProcess = registry): Promise<string[]> {
  const response = await request(`${on.url}/v2/${name}/tags/list`)
  const body = await response.body.json() as { tags: string[] | null }
  return (body.tags ?? []).sort()
}

async function skopeoRaw (name: string, digest: string): Promise<Buffer> {
  const { stdout } = await promisify(execFile)('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.url.replace('http://', '')}/${name}@${digest}`], { encoding: 'buffer' })
  return stdout
}

t.test('untag of a shared tag removes that tag only; every co-tag keeps its digest', async t => {
  const image = await pushImage(target, 'modes/shared', ['a', 'a-rc', 'b', 'latest'], 'schema2')
  const rest = await gateway.rest('DELETE', '/images/modes/shared/a?mode=untag')
  t.equal(rest.status, 200)
  t.match(rest.body, { mode: 'untag', action: 'untagged', strategy: 'swap', digest: image.digest, removedTags: ['a'], deleted: true, dryRun: false, allowed: true })
  t.match(rest.body.planId, /^plan_[0-9a-f]{40}$/)
  t.same(await tagsOf('modes/shared'), ['a-rc', 'b', 'latest'])

  const { data } = await gql({ name: 'modes/shared', tag: 'b', mode: 'UNTAG' })
  t.match(data, { mode: 'UNTAG', action: 'UNTAGGED', strategy: 'SWAP', digest: image.digest, removedTags: ['b'], sharedWith: [], referencedBy: [], deleted: true })
  t.same(await tagsOf('modes/shared'), ['a-rc', 'latest'])
  for (const tag of ['a-rc', 'latest']) t.equal(await digestOf('modes/shared', tag), image.digest, `${tag} keeps the digest`)
})

t.test('untag of a platform child keeps the multi-platform image intact and pullable', async t => {
  const index = await pushImage(target, 'modes/multi', ['release'], 'oci-index')
  const [amd64, arm64] = index.children as [typeof index.children[number], typeof index.children[number]]
  await tagManifest(target, 'modes/multi', 'release-amd64', await skopeoRaw('modes/multi', amd64.digest), amd64.mediaType)
  await tagManifest(target, 'modes/multi', 'release-arm64', await skopeoRaw('modes/multi', arm64.digest), arm64.mediaType)

  t.match((await gateway.rest('DELETE', '/images/modes/multi/release-amd64?mode=untag')).body, { action: 'untagged', digest: amd64.digest })
  t.match((await gql({ name: 'modes/multi', tag: 'release-arm64', mode: 'UNTAG' })).data, { action: 'UNTAGGED', digest: arm64.digest })
  t.same(await tagsOf('modes/multi'), ['release'])
  t.same(await skopeoRaw('modes/multi', index.digest), index.manifest, 'the index is intact')
  for (const child of index.children) {
    t.equal(JSON.parse((await skopeoRaw('modes/multi', child.digest)).toString('utf8')).mediaType, child.mediaType, `child ${child.platform.architecture} is still there`)
  }
})

t.test('untag of the last tag leaves the manifest fetchable by digest', async t => {
  const rest = await pushImage(target, 'modes/solo', ['only'], 'oci')
  t.match((await gateway.rest('DELETE', '/images/modes/solo/only?mode=untag')).body, { action: 'untagged', removedTags: ['only'] })
  const graphql = await pushImage(target, 'modes/solo-gql', ['only'], 'oci')
  t.match((await gql({ name: 'modes/solo-gql', tag: 'only', mode: 'UNTAG' })).data, { action: 'UNTAGGED' })
  for (const image of [rest, graphql]) {
    t.same(await tagsOf(image.name), [])
    t.equal(await digestOf(image.name, image.digest), image.digest, `${image.name}: still there by digest`)
  }
})

t.test('a registry with deletion disabled: the original goes back under the tag and the answer is 501', async t => {
  const locked = await startRegistry({ deleteEnabled: false })
  t.teardown(async () => { await locked.stop() })
  const on = await startGateway(t, { registries: { locked: { url: locked.url, defaultMode: 'untag' } } })
  const image = await pushImage({ url: locked.url }, 'modes/locked', ['rest', 'graphql', 'keep'], 'schema2')
  const rest = await on.rest('DELETE', '/images/modes/locked/rest')
  t.equal(rest.status, 501)
  t.match(rest.body, { code: 'DELETE_DISABLED', restored: true })
  t.match(rest.body.detail, /put back on/)
  const { data, error } = await gql({ name: 'modes/locked', tag: 'graphql' }, on)
  t.equal(data, undefined)
  t.match(error.extensions, { code: 'DELETE_DISABLED', status: 501, restored: true })
  for (const tag of ['rest', 'graphql', 'keep']) t.equal(await digestOf('modes/locked', tag, locked), image.digest, `${tag} points at the original`)
  const records = (await on.rest('GET', '/audit?name=modes/locked')).body.items
  t.equal(records.length, 2)
  for (const record of records) t.match(record, { outcome: 'failed', errorCode: 'DELETE_DISABLED', mode: 'untag', deleteAction: 'untagged', strategy: 'swap', restorable: false })
})

t.test('50 concurrent untags of 50 tags of one digest all succeed and leave the other tags', async t => {
  const tags = Array.from({ length: 60 }, (_, i) => `t${String(i).padStart(2, '0')}`)
  const image = await pushImage(target, 'modes/many', tags.slice(0, 1), 'schema2')
  for (const tag of tags.slice(1)) await tagManifest(target, 'modes/many', tag, image.manifest, image.mediaType)
  const gone = tags.slice(0, 50)
  const answers = await Promise.all(gone.map(async (tag, i) => i % 2 === 0
    ? (await gateway.rest('DELETE', `/images/modes/many/${tag}?mode=untag`)).body
    : (await gql({ name: 'modes/many', tag, mode: 'UNTAG' })).data))
  t.same(answers.map(answer => answer.removedTags), gone.map(tag => [tag]), 'every untag answered for its own tag')
  t.same(await tagsOf('modes/many'), tags.slice(50))
  for (const tag of tags.slice(50)) t.equal(await digestOf('modes/many', tag), image.digest)
})

t.test('auto deletes the digest when nothing else needs it, and untags otherwise', async t => {
  const sole = await pushImage(target, 'modes/auto', ['sole'], 'schema2')
  const shared = await pushImage(target, 'modes/auto', ['shared', 'shared-rc'], 'oci')
  const index = await pushImage(target, 'modes/auto', ['multi'], 'oci-index')
  const child = index.children[0] as typeof index.children[number]
  await tagManifest(target, 'modes/auto', 'multi-amd64', await skopeoRaw('modes/auto', child.digest), child.mediaType)
  const solo = await pushImage(target, 'modes/auto', ['solo-gql'], 'schema2')
  const sharedGql = await pushImage(target, 'modes/auto', ['pair-1', 'pair-2'], 'schema2')

  const dryRuns = []
  // One after the other: a caller runs at most two co-tag scans at once (limits.coTagScansPerCaller).
  for (const tag of ['sole', 'shared', 'multi-amd64']) dryRuns.push((await gateway.rest('DELETE', `/images/modes/auto/${tag}?dryRun=true`)).body)
  t.same(dryRuns.map(dry => [dry.mode, dry.action, dry.strategy]), [['auto', 'deleted-digest', 'digest'], ['auto', 'untagged', 'swap'], ['auto', 'untagged', 'swap']], 'a dry-run says what auto would do')
  t.equal(await digestOf('modes/auto', 'sole'), sole.digest, 'and does nothing')
  t.same(dryRuns.map(dry => [dry.sharedWith, dry.referencedBy]), [[[], []], [['shared-rc'], []], [[], [{ digest: index.digest, tags: ['multi'] }]]], 'and why')

  t.match((await gateway.rest('DELETE', '/images/modes/auto/sole')).body, { mode: 'auto', action: 'deleted-digest', strategy: 'digest', removedTags: ['sole'] })
  t.equal(await digestOf('modes/auto', sole.digest), 404, 'the only tag: the digest is deleted')
  t.match((await gateway.rest('DELETE', '/images/modes/auto/shared')).body, { action: 'untagged', removedTags: ['shared'] })
  t.equal(await digestOf('modes/auto', 'shared-rc'), shared.digest, 'a co-tag: only the tag goes, never SHARED_DIGEST')
  t.match((await gateway.rest('DELETE', '/images/modes/auto/multi-amd64?mode=auto')).body, { action: 'untagged', digest: child.digest })
  t.same(await skopeoRaw('modes/auto', index.digest), index.manifest, 'a child of a tagged index: untagged, never REFERENCED_BY_INDEX')
  t.equal(await digestOf('modes/auto', child.digest), child.digest)

  t.match((await gql({ name: 'modes/auto', tag: 'solo-gql' })).data, { mode: 'AUTO', action: 'DELETED_DIGEST', strategy: 'DIGEST' }, 'GraphQL: the default mode is the registry\'s')
  t.equal(await digestOf('modes/auto', solo.digest), 404)
  t.match((await gql({ name: 'modes/auto', tag: 'pair-1', mode: 'AUTO', force: true })).data, { mode: 'AUTO', action: 'UNTAGGED', removedTags: ['pair-1'] }, 'force means nothing to auto')
  t.equal(await digestOf('modes/auto', 'pair-2'), sharedGql.digest)
  t.match((await gql({ name: 'modes/auto', tag: 'pair-2', mode: null, planId: null })).data, { mode: 'AUTO', action: 'DELETED_DIGEST' }, 'explicit nulls are the defaults')
})

t.test('digest mode is the old guard: SHARED_DIGEST and REFERENCED_BY_INDEX point at mode=untag', async t => {
  await pushImage(target, 'modes/digest', ['d1', 'd2'], 'schema2')
  const refused = await gateway.rest('DELETE', '/images/modes/digest/d1?mode=digest')
  t.match(refused.body, { code: 'SHARED_DIGEST', sharedWith: ['d2'] })
  t.match(refused.body.detail, /mode=untag/)
  const index = await pushImage(target, 'modes/digest', ['m'], 'docker-list')
  const child = index.children[0] as typeof index.children[number]
  await tagManifest(target, 'modes/digest', 'm-child', await skopeoRaw('modes/digest', child.digest), child.mediaType)
  const { error } = await gql({ name: 'modes/digest', tag: 'm-child', mode: 'DIGEST' })
  t.match(error.extensions, { code: 'REFERENCED_BY_INDEX' })
  t.match(error.message, /mode=untag/)
})

t.test('undo of an untag puts the saved bytes back under the tag', async t => {
  const image = await pushImage(target, 'modes/undo', ['u-rest', 'u-gql', 'stays'], 'oci')
  const untagged = await gateway.rest('DELETE', '/images/modes/undo/u-rest?mode=untag')
  const restored = await gateway.rest('POST', `/deletions/${untagged.body.auditId as string}/restore`)
  t.equal(restored.status, 200)
  t.same(restored.body.restoredTags, ['u-rest'])
  t.equal(await digestOf('modes/undo', 'u-rest'), image.digest)

  const { data } = await gql({ name: 'modes/undo', tag: 'u-gql', mode: 'UNTAG' })
  const undo = await gateway.gql('mutation R($id: ID!) { restoreDeletion(id: $id) { restoredTags digest } }', { id: data.auditId })
  t.same(undo.body.data.restoreDeletion, { restoredTags: ['u-gql'], digest: image.digest })
  t.same(await tagsOf('modes/undo'), ['stays', 'u-gql', 'u-rest'])
  for (const tag of ['stays', 'u-gql', 'u-rest']) t.equal(await digestOf('modes/undo', tag), image.digest)

  const events = await gateway.gql('{ auditEvents(filter: { name: "modes/undo" }) { edges { node { action mode deleteAction strategy outcome } } } }')
  t.same(events.body.data.auditEvents.edges.map((edge: { node: unknown }) => edge.node), [
    { action: 'restore', mode: null, deleteAction: null, strategy: null, outcome: 'restored' },
    { action: 'delete', mode: 'UNTAG', deleteAction: 'UNTAGGED', strategy: 'SWAP', outcome: 'deleted' },
    { action: 'restore', mode: null, deleteAction: null, strategy: null, outcome: 'restored' },
    { action: 'delete', mode: 'UNTAG', deleteAction: 'UNTAGGED', strategy: 'SWAP', outcome: 'deleted' }
  ], 'the trail keeps mode, action and strategy')
})

t.test('a plan that no longer holds is refused with PLAN_STALE; one that holds is executed', async t => {
  const image = await pushImage(target, 'modes/stale', ['s'], 'schema2')
  const dry = await gateway.rest('DELETE', '/images/modes/stale/s?dryRun=true')
  t.match(dry.body, { action: 'deleted-digest', dryRun: true })
  t.equal((await gateway.rest('DELETE', '/images/modes/stale/s?dryRun=true')).body.planId, dry.body.planId, 'the same plan made twice has the same id')

  await tagManifest(target, 'modes/stale', 's-rc', image.manifest, image.mediaType)
  const cotagged = await gateway.rest('DELETE', `/images/modes/stale/s?planId=${dry.body.planId as string}`)
  t.equal(cotagged.status, 409)
  t.match(cotagged.body, { code: 'PLAN_STALE', planId: dry.body.planId, action: 'untagged', removedTags: ['s'] })
  t.not(cotagged.body.currentPlanId, dry.body.planId)

  const other = await pushImage(target, 'modes/stale', ['s'], 'oci')
  const gqlStale = await gql({ name: 'modes/stale', tag: 's', planId: cotagged.body.currentPlanId })
  t.match(gqlStale.error.extensions, { code: 'PLAN_STALE', digest: other.digest, action: 'deleted-digest' })
  t.match(gqlStale.error.message, new RegExp(`now points at ${other.digest}`))
  t.equal(await digestOf('modes/stale', 's'), other.digest, 'nothing was changed')
  t.equal(await digestOf('modes/stale', 's-rc'), image.digest)

  const fresh = await gql({ name: 'modes/stale', tag: 's', dryRun: true })
  const done = await gql({ name: 'modes/stale', tag: 's', planId: fresh.data.planId })
  t.match(done.data, { planId: fresh.data.planId, action: 'DELETED_DIGEST', deleted: true })
  const dryRest = await gateway.rest('DELETE', '/images/modes/stale/s-rc?dryRun=true')
  t.match((await gateway.rest('DELETE', `/images/modes/stale/s-rc?planId=${dryRest.body.planId as string}`)).body, { planId: dryRest.body.planId, deleted: true })
  const refusals = (await gateway.rest('GET', '/audit?name=modes/stale&outcome=rejected')).body.items
  t.equal(refusals.length, 2)
  for (const record of refusals) t.match(record, { errorCode: 'PLAN_STALE' })
})

t.test('a bad mode or plan id is a 400 naming the field, and nothing reaches the registry', async t => {
  const before = counted.requests.length
  const rest = await gateway.rest('DELETE', '/images/modes/any/v1?mode=everything')
  t.equal(rest.status, 400)
  t.match(rest.body, { code: 'INVALID_REQUEST', field: 'mode', rule: /allowed values/ })
  const restPlan = await gateway.rest('DELETE', '/images/modes/any/v1?planId=nope')
  t.match(restPlan.body, { code: 'INVALID_REQUEST', field: 'planId', rule: /pattern/ })
  const enumReply = await gateway.gql(MUTATION, { name: 'modes/any', tag: 'v1', mode: 'EVERYTHING' })
  t.equal(enumReply.status, 400)
  t.match(enumReply.body.errors[0], { message: /DeleteMode/, extensions: { code: 'INVALID_REQUEST' } })
  const { error } = await gql({ name: 'modes/any', tag: 'v1', planId: 'nope' })
  t.match(error.extensions, { code: 'INVALID_REQUEST', field: 'planId' })
  t.equal(counted.requests.length, before, 'no registry request')
})

t.test('untag needs only delete on the tag itself; a protected tag is still refused', async t => {
  const key = 'rdg_modes-test-cleaner-key-000000000001'
  const policy = `${ADMIN_POLICY}
  - role: cleaner
    subjects: ["apikey:cleaner"]
protectedTags:
  - repositories: ["**"]
    tags: ["pr-keep"]
`.replace('apiKeys:\n', `apiKeys:\n  - { name: cleaner, sha256: ${sha256Hex(key)} }\n`).replace('roles:\n', 'roles:\n  cleaner:\n    - actions: [delete]\n      repositories: ["modes/**"]\n      tags: ["pr-*"]\n')
  const on = await startGateway(t, { registries: { default: { url: registry.url, defaultMode: 'untag' } }, policy })
  const image = await pushImage(target, 'modes/policy', ['pr-1', 'pr-2', 'pr-keep', 'main'], 'schema2')
  const rest = await on.rest('DELETE', '/images/modes/policy/pr-1', { key })
  t.match(rest.body, { action: 'untagged', removedTags: ['pr-1'] }, 'no force, no right on pr-keep or main needed')
  t.match((await gql({ name: 'modes/policy', tag: 'pr-2' }, on, key)).data, { action: 'UNTAGGED' })
  const refused = await on.rest('DELETE', '/images/modes/policy/pr-keep', { key })
  t.equal(refused.status, 403)
  t.equal(refused.body.code, 'PROTECTED_TAG')
  t.match((await gql({ name: 'modes/policy', tag: 'pr-keep' }, on)).error.extensions, { code: 'PROTECTED_TAG' }, 'not even for the admin')
  t.same(await tagsOf('modes/policy'), ['main', 'pr-keep'])
  t.equal(await digestOf('modes/policy', 'main'), image.digest)
})
