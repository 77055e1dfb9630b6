/** Planning cleanups against a real registry: rules judged on seeded creation times, the core's auto plans, signatures. */
import t, { type Test } from 'tap'
import { Pool } from 'undici'
import { planCleanup, type CleanupServices, type PlanCleanupInput } from '../../src/cleanups/plan-cleanup.js'
import type { CleanupEntry, CleanupPlan, CleanupRules } from '../../src/cleanups/shapes.js'
import { BrowseCache } from '../../src/images/browse-cache.js'
import { deleteImage, executePlan } from '../../src/images/delete-image.js'
import { loadPolicy } from '../../src/policy/load.js'
import type { Identity } from '../../src/policy/types.js'
import { RegistryClient } from '../../src/registry/client.js'
import { RegistryDirectory } from '../../src/registry/directory.js'
import { startRegistry } from '../../testing/registry-process.js'
import { daysBefore, pushCreated, pushIndex, pushReferrer, pushSharingConfig, referrerTag } from '../fixtures/cleanup-seed.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { rejection } from '../fixtures/rejection.js'
import { directory, imageServices, memoryTrail } from '../fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const NOW = Date.now()
const ago = (days: number): string => daysBefore(NOW, days)

const policy = loadPolicy(`
roles:
  admin:
    - actions: ["*"]
      repositories: ["**"]
  ci:
    - actions: [read]
      repositories: ["clean/**"]
    - actions: [delete]
      repositories: ["clean/shared"]
      tags: ["pr-1", "pr-3"]
  narrow:
    - actions: [delete]
      repositories: ["clean/shared"]
      tags: ["pr-*"]
  careful:
    - actions: [delete]
      repositories: ["clean/shared"]
      approval: required
  platforms:
    - actions: [read, delete]
      repositories: ["clean/multi"]
      tags: ["*-amd64", "*-arm64"]
bindings:
  - { role: platforms, subjects: ["user:platforms"] }
  - { role: admin, subjects: ["user:admin"] }
  - { role: ci, subjects: ["user:ci"] }
  - { role: narrow, subjects: ["user:narrow"] }
  - { role: careful, subjects: ["user:careful"] }
protectedTags:
  - repositories: ["clean/**"]
    tags: ["latest"]
`, 'cleanup-test.yaml')
const who = (name: string): Identity => ({ subject: `user:${name}`, groups: [], kind: 'jwt' })
const admin = who('admin')
const context = { requestId: 'cleanup-test', transport: 'rest' as const }

function services (t: Test, url = registry.url, overrides: Partial<CleanupServices> = {}): CleanupServices {
  return {
    registries: directory(t, { default: url }),
    policy: () => policy,
    cache: new BrowseCache({ entries: 1000, tagTtlMs: 0 }),
    concurrency: 16,
    catalogPageSize: 1,
    maxTags: 1000,
    registrySettings: () => ({ untagStrategy: 'swap' }),
    now: () => NOW,
    ...overrides
  }
}

async function plan (t: Test, repositories: string[], rules: CleanupRules, extra: Partial<PlanCleanupInput> = {}, deps = services(t)): Promise<CleanupPlan> {
  return await planCleanup(deps, { identity: admin, context, repositories, rules, ...extra })
}

const byTag = (result: CleanupPlan): Record<string, CleanupEntry> => Object.fromEntries(result.entries.map(entry => [entry.tag, entry]))
const outcomes = (result: CleanupPlan): Record<string, string> => Object.fromEntries(result.entries.map(entry => [entry.tag, `${entry.outcome} ${entry.rule}`]))

/** Every tag the registry lists for `name`, sorted. */
async function tagsNow (name: string): Promise<string[]> {
  const client = new RegistryClient({ name: 'check', url: registry.url, connectTimeoutMs: 1000, requestTimeoutMs: 5000, connections: 1, trustedRealmOrigins: [] })
  try {
    return (await client.listTags(name).catch(() => [])).sort()
  } finally {
    await client.close()
  }
}

/** Runs a cleanup's removals through the single-tag core, in sequence, as part 2 will; answers each result's action. */
async function execute (t: Test, result: CleanupPlan): Promise<string[]> {
  const { audit } = memoryTrail(t)
  const deps = imageServices(directory(t, { default: registry.url }), audit)
  const removals = result.entries.filter(entry => entry.plan !== undefined).sort((a, b) => (a.sequence as number) - (b.sequence as number))
  const actions: string[] = []
  for (const entry of removals) {
    const done = await executePlan(deps, { identity: admin, context, plan: entry.plan as NonNullable<CleanupEntry['plan']> })
    actions.push(`${done.tag} ${done.action}`)
  }
  return actions
}

t.test('newest N per branch on seeded times, protected > keep > delete, an age limit', async t => {
  const name = 'clean/branches'
  const main3 = await pushCreated(target, name, ['main-3', 'latest'], ago(20))
  for (const [tag, days] of [['main-1', 40], ['main-2', 30], ['main-4', 10], ['dev-1', 50], ['dev-2', 2], ['v1.2.0', 100], ['v0.9.0', 200]] as const) {
    await pushCreated(target, name, [tag], ago(days))
  }
  await pushCreated(target, name, ['no-time-1'], undefined)
  await pushCreated(target, name, ['no-time-2'], 'yesterday')
  await pushEmptyIndex(name, 'no-time-3')
  const rules: CleanupRules = {
    groupBy: { regex: '^(?<branch>[a-z-]+)-\\d+$', capture: 'branch' },
    keep: { tags: [{ semver: '>=1' }], newest: 1 },
    deleteOlderThan: '25d'
  }
  const result = await plan(t, [name], rules)
  t.same(outcomes(result), {
    'dev-1': 'remove deleteOlderThan',
    'dev-2': 'keep keep.newest',
    latest: 'keep protected',
    'main-1': 'remove deleteOlderThan',
    'main-2': 'remove deleteOlderThan',
    'main-3': 'keep deleteOlderThan',
    'main-4': 'keep keep.newest',
    'no-time-1': 'keep keep.newest',
    'no-time-2': 'keep deleteOlderThan',
    'no-time-3': 'keep deleteOlderThan',
    'v0.9.0': 'remove deleteOlderThan',
    'v1.2.0': 'keep keep.tags[0]'
  })
  const entries = byTag(result)
  t.equal(entries.latest?.reason, 'user:admin may delete clean/branches:latest in registry default: the tag is protected by protectedTags[0]; nobody may delete it, admins included'.replace('may delete', 'may not delete'))
  t.equal(entries['main-1']?.created, ago(40), 'the config\'s created, as the rules saw it')
  t.notOk('created' in (entries['no-time-1'] as object), 'no time: none shown')
  t.notOk('created' in (entries['no-time-2'] as object), 'a time that is not one: none')
  t.notOk('created' in (entries['no-time-3'] as object), 'an index of no platform: none')
  t.equal(entries['main-3']?.digest, main3.digest)
  t.match(entries['main-1']?.plan, { action: 'deleted-digest', strategy: 'digest', mode: 'auto', removedTags: ['main-1'], sharedWith: [], referencedBy: [] })
  t.same(result.totals, { repositories: 1, tags: 12, remove: 4, keep: 8, refuse: 0, deletedDigests: 4, untagged: 0, hiddenTags: 0 })
  t.match(result, { id: /^cleanup_[0-9a-f]{32}$/, state: 'planned', registry: 'default', repositories: [name], createdBy: 'user:admin', rules })
  t.same(await tagsNow(name), ['dev-1', 'dev-2', 'latest', 'main-1', 'main-2', 'main-3', 'main-4', 'no-time-1', 'no-time-2', 'no-time-3', 'v0.9.0', 'v1.2.0'],
    'planning changed nothing')
})

t.test('shared digests: untag while another tag stays, delete with the last; the plans are the core\'s and run in sequence', async t => {
  const name = 'clean/shared'
  const pair = await pushCreated(target, name, ['pr-1', 'pr-2'], ago(30))
  await pushCreated(target, name, ['pr-3', 'release'], ago(30))
  const result = await plan(t, [name], { select: [{ glob: 'pr-*' }] }, { policyName: 'previews' })
  t.equal(result.policy, 'previews', 'a named policy is named')
  const entries = byTag(result)
  t.match(entries['pr-1'], { outcome: 'remove', rule: 'select[0]', plan: { action: 'untagged', strategy: 'swap', sharedWith: ['pr-2'], digest: pair.digest } })
  t.match(entries['pr-2'], { outcome: 'remove', sequence: (entries['pr-1']?.sequence as number) + 1, plan: { action: 'deleted-digest', sharedWith: [] } })
  t.match(entries['pr-3'], { outcome: 'remove', plan: { action: 'untagged', sharedWith: ['release'] } })
  t.match(entries.release, { outcome: 'keep', rule: 'select', reason: 'no select rule matches it' })
  t.same(entries['pr-1']?.plan?.decisions, [{ action: 'delete', tag: 'pr-1', allow: true, reason: 'user:admin may delete clean/shared:pr-1 in registry default: role admin allows it (roles.admin[0])' }])

  const { audit } = memoryTrail(t)
  const core = imageServices(directory(t, { default: registry.url }), audit)
  for (const tag of ['pr-1', 'pr-3']) {
    const dryRun = await deleteImage(core, { identity: admin, context, repository: name, tag, mode: 'auto', dryRun: true })
    t.equal(dryRun.planId, entries[tag]?.plan?.id, `${tag}: the single-tag core makes the same plan now`)
  }
  const done = await execute(t, result)
  t.same([...done].sort(), ['pr-1 untagged', 'pr-2 deleted-digest', 'pr-3 untagged'], 'each plan still holds when its turn comes')
  t.ok(done.indexOf('pr-1 untagged') < done.indexOf('pr-2 deleted-digest'), 'pr-2 deletes the digest once pr-1 is gone')
  t.same(await tagsNow(name), ['release'])
})

t.test('a tag the caller may not delete is refused in the policy\'s words and stays; tags it may not read are counted', async t => {
  const name = 'clean/shared'
  await pushCreated(target, name, ['pr-1', 'pr-2'], ago(30))
  await pushCreated(target, name, ['pr-3', 'latest'], ago(30))
  const result = await plan(t, [name], { select: [{ glob: 'pr-*' }] }, { identity: who('ci') })
  const entries = byTag(result)
  t.match(entries['pr-2'], { outcome: 'refuse', rule: 'select[0]', reason: /^user:ci may not delete clean\/shared:pr-2 in registry default: no rule of roles \[ci\] allows delete on tag pr-2/ })
  t.notOk('plan' in (entries['pr-2'] as object))
  t.match(entries['pr-1']?.plan, { action: 'untagged', sharedWith: ['pr-2'] }, 'pr-2 stays, so pr-1 is only untagged')
  t.match(entries['pr-3']?.plan, { action: 'untagged', sharedWith: ['latest'] })
  t.same(result.totals, { repositories: 1, tags: 5, remove: 2, keep: 2, refuse: 1, deletedDigests: 0, untagged: 2, hiddenTags: 0 })

  const narrow = await plan(t, [name], { select: [{ glob: 'pr-*' }] }, { identity: who('narrow') })
  t.same(Object.keys(byTag(narrow)).sort(), ['pr-1', 'pr-2', 'pr-3'], 'latest and release are not the caller\'s to see')
  t.match(byTag(narrow)['pr-3']?.plan, { action: 'untagged', sharedWith: [], hiddenTags: 1 }, 'a co-tag it may not read is counted, not named')
  t.equal(narrow.totals.hiddenTags, 2)

  const careful = await plan(t, [name], { select: [{ glob: 'pr-1' }] }, { identity: who('careful') })
  t.match(byTag(careful)['pr-1'], { outcome: 'refuse', reason: /once someone else approves: .*; a cleanup does not ask for approvals, so it leaves this tag$/ })
})

t.test('a multi-platform image and its platforms\' tags: never break the index, delete the index first', async t => {
  const name = 'clean/multi'
  const annotated = await pushIndex(target, name, ['multi-1'], { amd64: ago(60), arm64: ago(61) }, ago(5))
  const plain = await pushIndex(target, name, ['multi-2'], { amd64: ago(40), arm64: ago(1) })
  await tagChild(name, 'multi-2-amd64', plain.children.amd64)
  await tagChild(name, 'multi-1-arm64', annotated.children.arm64)

  const childrenOnly = await plan(t, [name], { select: [{ glob: '*-amd64' }, { glob: '*-arm64' }] })
  const entries = byTag(childrenOnly)
  t.match(entries['multi-2-amd64']?.plan, { action: 'untagged', referencedBy: [{ digest: plain.digest, tags: ['multi-2'] }] }, 'its index stays tagged')
  t.match(entries['multi-1-arm64']?.plan, { action: 'untagged', referencedBy: [{ digest: annotated.digest, tags: ['multi-1'] }] })
  t.equal(entries['multi-2-amd64']?.created, ago(40))
  const blind = byTag(await plan(t, [name], { select: [{ glob: '*-amd64' }] }, { identity: who('platforms') }))
  t.match(blind['multi-2-amd64']?.plan, { action: 'untagged', hiddenTags: 1 })
  t.same(blind['multi-2-amd64']?.plan?.referencedBy, [], 'an index whose tags are all hidden is not named')

  const all = await plan(t, [name], {})
  const planned = byTag(all)
  t.equal(planned['multi-1']?.created, ago(5), 'the index\'s annotation')
  t.equal(planned['multi-2']?.created, ago(40), 'else its first platform\'s config')
  const order = all.entries.filter(entry => entry.plan !== undefined).sort((a, b) => (a.sequence as number) - (b.sequence as number)).map(entry => `${entry.tag} ${entry.plan?.action as string}`)
  t.same(order.slice(0, 2).sort(), ['multi-1 deleted-digest', 'multi-2 deleted-digest'], 'indexes first')
  t.same(order.slice(2).sort(), ['multi-1-arm64 deleted-digest', 'multi-2-amd64 deleted-digest'], 'then their platforms, no longer referenced')
  t.same((await execute(t, all)).sort(), order.sort())
  t.same(await tagsNow(name), [])
})

async function pushEmptyIndex (name: string, tag: string): Promise<void> {
  const { tagManifest } = await import('../../testing/seed.js')
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }))
  await tagManifest(target, name, tag, index, 'application/vnd.oci.image.index.v1+json')
}

async function tagChild (name: string, tag: string, child: { bytes: Buffer, mediaType: string }): Promise<void> {
  const { tagManifest } = await import('../../testing/seed.js')
  await tagManifest(target, name, tag, child.bytes, child.mediaType)
}

t.test('signatures follow their image: removed with a deleted digest, kept with a kept one, orphans on request', async t => {
  const name = 'clean/signed'
  const old = await pushCreated(target, name, ['img-old'], ago(50))
  const recent = await pushCreated(target, name, ['img-new'], ago(1))
  const shared = await pushCreated(target, name, ['img-shared', 'stable'], ago(50))
  await pushReferrer(target, name, old.digest, 'sig')
  await pushReferrer(target, name, old.digest, 'att')
  await pushReferrer(target, name, recent.digest, 'sig')
  await pushReferrer(target, name, shared.digest, 'sbom')
  const orphan = `sha256:${'0'.repeat(64)}`
  await pushReferrer(target, name, orphan, 'sig')
  const untagged = await pushCreated(target, name, [], ago(90))
  await pushReferrer(target, name, untagged.digest, 'sig')

  const rules: CleanupRules = { select: [{ glob: 'img-*' }], deleteOlderThan: '7d', keep: { newest: 1 } }
  const result = await plan(t, [name], rules)
  t.same(outcomes(result), {
    'img-new': 'keep keep.newest',
    'img-old': 'remove deleteOlderThan',
    'img-shared': 'remove deleteOlderThan',
    stable: 'keep select',
    [referrerTag(old.digest, 'sig')]: 'remove referrers',
    [referrerTag(old.digest, 'att')]: 'remove referrers',
    [referrerTag(recent.digest, 'sig')]: 'keep referrers',
    [referrerTag(shared.digest, 'sbom')]: 'keep referrers',
    [referrerTag(orphan, 'sig')]: 'keep orphanedReferrers',
    [referrerTag(untagged.digest, 'sig')]: 'keep referrers'
  }, 'signatures never count for newest N: img-new is the newest image')
  const entries = byTag(result)
  t.match(entries[referrerTag(old.digest, 'sig')], { reason: `it is about ${old.digest}, which this cleanup deletes`, plan: { action: 'deleted-digest' } })
  t.ok((entries[referrerTag(old.digest, 'sig')]?.sequence as number) > (entries['img-old']?.sequence as number), 'after their image')
  t.match(entries[referrerTag(shared.digest, 'sbom')], { reason: `it is about ${shared.digest}, which stays in the repository` }, 'its image keeps a tag')

  const kept = await plan(t, [name], { ...rules, referrers: 'keep', orphanedReferrers: true })
  t.same(byTag(kept)[referrerTag(old.digest, 'sig')]?.outcome, 'keep')
  t.match(byTag(kept)[referrerTag(orphan, 'sig')], { outcome: 'remove', rule: 'orphanedReferrers', plan: { action: 'deleted-digest' } })

  t.same((await execute(t, result)).length, 4)
  t.same(await tagsNow(name), [
    referrerTag(shared.digest, 'sbom'), referrerTag(recent.digest, 'sig'), referrerTag(orphan, 'sig'), referrerTag(untagged.digest, 'sig'), 'img-new', 'stable'
  ].sort(), 'a signature of an untagged image that is still there stays too')
})

t.test('repositories by glob through the catalog; configs read once per digest and then from the cache', async t => {
  await pushCreated(target, 'clean/globbed-a', ['x-1', 'x-2'], ago(3))
  await pushCreated(target, 'clean/globbed-b', ['y-1'], ago(3))
  const [y2, y3] = await pushSharingConfig(target, 'clean/globbed-b', ['y-2', 'y-3'], ago(4))
  const proxy = await startFaultProxy(registry.url)
  const pool = new Pool(proxy.url, { connections: 4 })
  t.teardown(async () => { await pool.close(); await proxy.close() })
  const cache = new BrowseCache({ entries: 1000, tagTtlMs: 0 })
  const client = new RegistryClient({ name: 'default', url: proxy.url, connectTimeoutMs: 1000, requestTimeoutMs: 5000, connections: 4, trustedRealmOrigins: [], dispatcher: pool })
  const deps = services(t, proxy.url, { registries: new RegistryDirectory([client], 'default'), cache })
  t.teardown(async () => { await client.close() })
  const result = await plan(t, ['clean/globbed-*', 'clean/globbed-b'], { keep: { newest: 5 } }, {}, deps)
  t.same(result.entries.map(entry => `${entry.repository}:${entry.tag}`), ['clean/globbed-a:x-1', 'clean/globbed-a:x-2', 'clean/globbed-b:y-1', 'clean/globbed-b:y-2', 'clean/globbed-b:y-3'])
  t.equal(result.totals.repositories, 2)
  t.not(y2, y3, 'y-2 and y-3 are two manifests')
  t.equal(byTag(result)['y-3']?.created, ago(4))
  const blobs = (): number => proxy.requests.filter(entry => entry.path.includes('/blobs/')).length
  t.equal(blobs(), 3, 'one config per digest: x-1 and x-2 share a manifest, y-2 and y-3 only a config')
  t.ok(proxy.requests.filter(entry => entry.path.startsWith('/v2/_catalog')).length >= 3, 'the catalog was paged')
  await plan(t, ['clean/globbed-a'], { keep: { newest: 5 } }, {}, deps)
  t.equal(blobs(), 3, 'the second plan reads configs from the cache')

  proxy.fault({ method: 'GET', path: '/v2/clean/globbed-a/manifests/x-2', action: { kind: 'respond', status: 404, body: '{"errors":[{"code":"MANIFEST_UNKNOWN"}]}' } })
  const gone = await plan(t, ['clean/globbed-a'], {}, {}, deps)
  t.same(gone.entries.map(entry => entry.tag), ['x-1'], 'a tag deleted since the listing is left out')
})

t.test('refusals: bad rules and patterns, a repository the caller may not read, too many tags, a registry error', async t => {
  t.match(await rejection(plan(t, ['clean/shared'], { select: [{ regex: '^(a+)+\\1$' }] })), { code: 'INVALID_REQUEST', extras: { field: 'rules.select[0].regex' } })
  t.match(await rejection(plan(t, ['clean/shared'], { select: [{ regex: '(' }] }, { rulesField: 'retention.policies[0].rules' })),
    { extras: { field: 'retention.policies[0].rules.select[0].regex' } })
  t.match(await rejection(plan(t, ['Bad_Name'], {})), { code: 'INVALID_REQUEST', extras: { field: 'repositories[0]' } })
  t.match(await rejection(plan(t, ['clean/a', 'clean/**x'], {})), { code: 'INVALID_REQUEST', extras: { field: 'repositories[1]' } })
  t.match(await rejection(plan(t, ['other/app'], {}, { identity: who('ci') })), { code: 'FORBIDDEN', detail: /^user:ci may not read other\/app/ })
  const hidden = await plan(t, ['**'], {}, { identity: who('nobody') })
  t.same(hidden.entries, [], 'a pattern matches only what the caller may read')
  t.match(await rejection(plan(t, ['clean/branches'], {}, {}, services(t, registry.url, { maxTags: 3 }))), { code: 'INVALID_REQUEST', extras: { field: 'repositories', rule: 'at most 3 tags per cleanup (cleanups.maxTags)' } })
  t.match(await rejection(plan(t, ['clean/**'], {}, {}, services(t, registry.url, { maxRepositories: 2 }))), { code: 'INVALID_REQUEST', extras: { field: 'repositories' } })

  await pushReferrer(target, 'clean/faulty', `sha256:${'1'.repeat(64)}`, 'sig')
  const proxy = await startFaultProxy(registry.url)
  const pool = new Pool(proxy.url, { connections: 2 })
  t.teardown(async () => { await pool.close(); await proxy.close() })
  const client = new RegistryClient({ name: 'default', url: proxy.url, connectTimeoutMs: 1000, requestTimeoutMs: 5000, connections: 2, trustedRealmOrigins: [], dispatcher: pool })
  t.teardown(async () => { await client.close() })
  const faulty = services(t, proxy.url, { registries: new RegistryDirectory([client], 'default') })
  const unanswered = proxy.fault({ method: 'GET', path: /manifests\/sha256-1{64}\.sig$/, action: { kind: 'respond', status: 500 } })
  t.match(await rejection(plan(t, ['clean/faulty'], {}, {}, faulty)), { code: 'UPSTREAM_ERROR', detail: /answered 500/ }, 'a tag the registry cannot show stops the plan')
  unanswered()
  proxy.fault({ method: 'HEAD', path: /manifests\/sha256:1{64}$/, action: { kind: 'respond', status: 503 } })
  const refused = await rejection(plan(t, ['clean/faulty'], {}, {}, faulty))
  t.match(refused, { code: 'UPSTREAM_ERROR', detail: /answered 503/ }, 'a subject the registry cannot answer for is not called gone')
})
