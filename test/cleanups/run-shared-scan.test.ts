/**
 * A cleanup run scans each repository's co-tags once and keeps that view up to date, instead of scanning per removal
 * (N² manifest fetches). Against a real registry behind the fault proxy (which counts the requests and holds a
 * DELETE while someone else changes tags): a tag pushed onto a planned digest between plan and execute, or in the
 * middle of the run, is not deleted with it, nor is a digest a multi-platform image pushed (or a protected one moved)
 * meanwhile lists; a known tag moved onto a digest mid-run is recorded with the deletion that took it, and undo puts it back.
 */
import t, { type Test } from 'tap'
import { planCleanup, type CleanupServices } from '../../src/cleanups/plan-cleanup.js'
import { ActiveRuns, executeCleanup, restoreCleanup, type CleanupRunEvent, type CleanupRunServices } from '../../src/cleanups/run-cleanup.js'
import type { CleanupPlan, CleanupRules } from '../../src/cleanups/shapes.js'
import { BrowseCache } from '../../src/images/browse-cache.js'
import { SharedTagScans } from '../../src/images/co-tags.js'
import { deleteImage } from '../../src/images/delete-image.js'
import { sha256Digest } from '../../src/registry/client.js'
import { loadPolicy } from '../../src/policy/load.js'
import { startRegistry } from '../../testing/registry-process.js'
import { MEDIA_TYPES } from '../../testing/seed.js'
import { daysBefore, pushCreated, pushIndex, type Seeded } from '../fixtures/cleanup-seed.js'
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js'
import { directory, imageServices, memoryTrail, registryClient } from '../fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const NOW = Date.now()
const alice = { subject: 'user:alice', groups: [], kind: 'jwt' as const }
const context = { requestId: 'shared-scan-test', transport: 'rest' as const }
const policy = loadPolicy(`
roles:
  cleaner:
    - actions: [read, delete, restore, audit]
      repositories: ["shared/**"]
bindings:
  - { role: cleaner, subjects: ["user:alice"] }
`, 'shared-scan-test.yaml')
const checker = registryClient('check', registry.url)
t.teardown(async () => { await checker.close() })

interface Setup {
  proxy: FaultProxy
  plan: (repositories: string[], rules: CleanupRules) => Promise<CleanupPlan>
  run: CleanupRunServices
}

/** Plans and runs go through the fault proxy; one removal at a time, so the order of requests is the plan's. */
async function setup (t: Test, protectedTags: string[] = []): Promise<Setup> {
  const proxy = await startFaultProxy(registry.url)
  t.teardown(async () => { await proxy.close() })
  const registries = directory(t, { default: proxy.url })
  const { audit } = memoryTrail(t)
  const images = { ...imageServices(registries, audit), literalProtectedTags: () => protectedTags }
  const planning: CleanupServices = {
    registries,
    policy: () => policy,
    cache: new BrowseCache({ entries: 1000, tagTtlMs: 0 }),
    concurrency: 4,
    catalogPageSize: 100,
    maxTags: 1000,
    registrySettings: () => ({ untagStrategy: 'swap' }),
    now: () => NOW
  }
  return {
    proxy,
    plan: async (repositories, rules) => await planCleanup(planning, { identity: alice, context, repositories, rules }),
    run: { images, concurrency: 1, maxDeletions: 100, runs: new ActiveRuns(), now: Date.now, replicas: { heartbeatMs: 1000, staleAfterMs: 60_000, cancelWaitMs: 5000, pollMs: 10 } }
  }
}

async function seed (name: string, tags: readonly string[]): Promise<Map<string, Seeded>> {
  const images = new Map<string, Seeded>()
  for (const tag of tags) images.set(tag, await pushCreated(target, name, [tag], daysBefore(NOW, 30)))
  return images
}

async function tagsNow (name: string): Promise<string[]> {
  return (await checker.listTags(name)).sort()
}

/** Runs the cleanup; with `meanwhile`, the run's first DELETE is held until it has changed the registry. */
async function runHolding (
  setup: Setup, cleanup: CleanupPlan, meanwhile?: (deleting: string) => Promise<void>,
  hold: { method: string, path?: (request: { path: string }) => boolean } = { method: 'DELETE' }
): Promise<{ events: Array<Extract<CleanupRunEvent, { type: 'tag' }>>, started: number }> {
  const { proxy, run } = setup
  let release = (): void => {}
  const held = new Promise<void>(resolve => { release = resolve })
  if (meanwhile !== undefined) proxy.fault({ ...hold, action: { kind: 'hold', release: held }, times: 1 })
  const started = proxy.requests.length
  await executeCleanup(run, { identity: alice, context, cleanup })
  const events: Array<Extract<CleanupRunEvent, { type: 'tag' }>> = []
  run.runs.subscribe(cleanup.id, event => { if (event.type === 'tag') events.push(event) })
  if (meanwhile !== undefined) {
    const deleting = await proxy.waitFor(entry => entry.method === hold.method && entry.action === 'hold')
    await meanwhile(deleting.path.split('/manifests/')[1] as string)
    release()
  }
  await run.runs.finished(cleanup.id)
  return { events, started }
}

/** Pushes an OCI index under `tag` that lists `platform` (already in the repository) as its amd64 image. */
async function pushIndexOf (name: string, tag: string, platform: Seeded): Promise<string> {
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociIndex,
    manifests: [{ mediaType: platform.mediaType, digest: platform.digest, size: platform.bytes.length, platform: { os: 'linux', architecture: 'amd64' } }]
  }))
  await checker.putManifest(name, tag, bytes, MEDIA_TYPES.ociIndex)
  return sha256Digest(bytes)
}

/** A planned removal whose digest is not `deleting`, and that runs later: the one the test changes under the run. */
function laterRemoval (cleanup: CleanupPlan, deleting: string): { tag: string, digest: string } {
  const entry = cleanup.entries.find(each => each.outcome === 'remove' && each.digest !== deleting)
  return { tag: entry?.tag as string, digest: entry?.digest as string }
}

t.test('one scan per repository: the run resolves each tag once, not once per removal', async t => {
  const name = 'shared/count'
  const pr = Array.from({ length: 8 }, (_, index) => `pr-${index + 1}`)
  await seed(name, [...pr, 'main'])
  const s = await setup(t)
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  t.equal(cleanup.totals.deletedDigests, 8)
  const { events, started } = await runHolding(s, cleanup)
  t.same(events.map(event => event.result), Array(8).fill('done'))
  t.same(await tagsNow(name), ['main'])

  const made = s.proxy.requests.slice(started)
  const manifestGets = made.filter(entry => entry.method === 'GET' && entry.path.includes('/manifests/')).length
  const listings = made.filter(entry => entry.path.includes('/tags/list')).length
  // The scan: 9 tags once; then per removal its own tag. Per removal scans would have fetched 8 + 7 + … + 1 more.
  t.equal(manifestGets, 9 + 8, 'every tag once for the scan, then each removed tag once more before its DELETE')
  t.equal(listings, 1 + 8 * 2, 'the scan\'s listing, then per removal the late look and the check after the DELETE')
  t.equal(made.filter(entry => entry.method === 'DELETE').length, 8)
})

t.test('a tag pushed onto a planned digest between plan and execute stays, and so does the tag the plan removed', async t => {
  const name = 'shared/before'
  const images = await seed(name, ['pr-1', 'pr-2', 'main'])
  const s = await setup(t)
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  const pr1 = images.get('pr-1') as Seeded
  await checker.putManifest(name, 'promoted', pr1.bytes, pr1.mediaType)

  const { events } = await runHolding(s, cleanup)
  t.match(events.find(event => event.tag === 'pr-1'), { result: 'stale', errorCode: 'PLAN_STALE' })
  t.match(events.find(event => event.tag === 'pr-2'), { result: 'done', action: 'deleted-digest' })
  t.same(await tagsNow(name), ['main', 'pr-1', 'promoted'])
  t.equal((await checker.resolve(name, 'promoted')).digest, pr1.digest)
})

t.test('a new tag pushed onto a digest in the middle of the run is seen by the late look: that removal is stale, nothing lost', async t => {
  const name = 'shared/middle'
  const images = await seed(name, ['pr-1', 'pr-2', 'pr-3', 'pr-4', 'main'])
  const s = await setup(t)
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  let later = { tag: '', digest: '' }
  const { events } = await runHolding(s, cleanup, async (deleting) => {
    later = laterRemoval(cleanup, deleting)
    const image = images.get(later.tag) as Seeded
    await checker.putManifest(name, 'hotfix', image.bytes, image.mediaType)
  })
  t.equal(events.length, 4)
  t.match(events.find(event => event.tag === later.tag), { result: 'stale', errorCode: 'PLAN_STALE', detail: /would untag only it/ })
  t.equal(events.filter(event => event.result === 'done').length, 3)
  t.same(await tagsNow(name), ['hotfix', later.tag, 'main'].sort())
  t.equal((await checker.resolve(name, 'hotfix')).digest, later.digest)
})

t.test('a tag the run already knew, moved onto a digest mid-run, is recorded with the deletion that took it, and undo puts it back', async t => {
  const name = 'shared/moved'
  const images = await seed(name, ['pr-1', 'pr-2', 'pr-3', 'main'])
  const s = await setup(t)
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  let later = { tag: '', digest: '' }
  const { events } = await runHolding(s, cleanup, async (deleting) => {
    later = laterRemoval(cleanup, deleting)
    const image = images.get(later.tag) as Seeded
    // main was resolved by the run's scan; the listing still shows the same names, so the late look cannot tell.
    await checker.putManifest(name, 'main', image.bytes, image.mediaType)
  })
  t.ok(events.every(event => event.result === 'done'), 'every removal done')
  t.same(await tagsNow(name), [], 'main went with the digest it was moved onto')

  const audited = await s.run.images.audit.list({ cleanupId: cleanup.id }, { limit: 50 }, () => true)
  const took = audited.items.find(item => item.tag === later.tag)
  t.match(took, {
    outcome: 'deleted', digest: later.digest, removedTags: [later.tag, 'main'], errorCode: 'TAGS_VANISHED', errorDetail: /^main disappeared with this DELETE/
  })
  t.match(events.find(event => event.tag === later.tag), { result: 'done', action: 'deleted-digest' })

  const restored = await restoreCleanup(s.run, { identity: alice, context, cleanup })
  t.ok(restored.every(item => item.result === 'restored'))
  t.same(await tagsNow(name), ['main', 'pr-1', 'pr-2', 'pr-3'])
  t.equal((await checker.resolve(name, 'main')).digest, later.digest, 'main is back where it was moved to')
})

t.test('protected tags are asked again before every DELETE, even when the view knows them', async t => {
  const name = 'shared/protected'
  const images = await seed(name, ['pr-1', 'pr-2', 'release'])
  const s = await setup(t, ['release'])
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  let later = { tag: '', digest: '' }
  const { events } = await runHolding(s, cleanup, async (deleting) => {
    later = laterRemoval(cleanup, deleting)
    const image = images.get(later.tag) as Seeded
    await checker.putManifest(name, 'release', image.bytes, image.mediaType)
  })
  t.match(events.find(event => event.tag === later.tag), { result: 'stale', errorCode: 'PLAN_STALE', detail: /would untag only it/ })
  t.same(await tagsNow(name), [later.tag, 'release'].sort())
})

t.test('a multi-platform image\'s children are read once per run, and a scan that fails is made again by the next removal', async t => {
  const name = 'shared/fails'
  await seed(name, ['pr-1', 'pr-2', 'pr-3'])
  const multi = await pushIndex(target, name, ['multi'], { amd64: daysBefore(NOW, 30), arm64: daysBefore(NOW, 30) })
  const s = await setup(t)
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  // The first removal's scan listing fails; the second removal scans again and goes ahead.
  s.proxy.fault({ method: 'GET', path: /\/tags\/list/, action: { kind: 'respond', status: 500, body: '{"errors":[{"code":"UNKNOWN","message":"boom"}]}' }, times: 1 })
  const { events, started } = await runHolding(s, cleanup)
  t.same(events.map(event => event.result), ['failed', 'done', 'done'])
  t.same(await tagsNow(name), ['multi', events[0]?.tag as string].sort())
  const indexReads = s.proxy.requests.slice(started).filter(entry => entry.path.endsWith(`/manifests/${multi.digest}`))
  t.equal(indexReads.length, 1, 'the index\'s children read by the first removal that needed them, then remembered')
})

t.test('a listing after the DELETE that fails leaves the deletion done and recorded as planned', async t => {
  const name = 'shared/after'
  await seed(name, ['pr-1', 'main'])
  const s = await setup(t)
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  const { events } = await runHolding(s, cleanup, async () => {
    // The DELETE is held: the next tag listing is the check after it.
    s.proxy.fault({ method: 'GET', path: /\/tags\/list/, action: { kind: 'respond', status: 404, body: '{"errors":[{"code":"NAME_UNKNOWN","message":"gone"}]}' }, times: 1 })
  })
  t.match(events, [{ tag: 'pr-1', result: 'done', action: 'deleted-digest' }])
  const audited = await s.run.images.audit.list({ cleanupId: cleanup.id }, { limit: 50 }, () => true)
  t.match(audited.items, [{ tag: 'pr-1', outcome: 'deleted', removedTags: ['pr-1'] }])
  t.equal(audited.items[0]?.errorCode, undefined)
  t.same(await tagsNow(name), ['main'])
})

t.test('a tag that 404s during the scan, and a tag deleted by someone else mid-run, are forgotten, then learnt again when listed', async t => {
  const name = 'shared/churn'
  const images = await seed(name, ['pr-1', 'pr-2', 'ghost', 'old'])
  const s = await setup(t)
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  // The scan's GET of ghost answers 404 once, as for a tag deleted between the listing and the GET.
  s.proxy.fault({ method: 'GET', path: `/v2/${name}/manifests/ghost`, action: { kind: 'respond', status: 404, body: '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"gone"}]}' }, times: 1 })
  const { events } = await runHolding(s, cleanup, async () => {
    // Someone else deletes old while the run's first DELETE is held: the next late look no longer lists it.
    await checker.deleteManifest(name, (images.get('old') as Seeded).digest)
  })
  t.same(events.map(event => event.result), ['done', 'done'])
  t.same(await tagsNow(name), ['ghost'])
  const audited = await s.run.images.audit.list({ cleanupId: cleanup.id }, { limit: 50 }, () => true)
  t.ok(audited.items.every(item => item.errorCode === undefined && item.removedTags.length === 1), 'old went with its own digest, which someone else deleted: not recorded as this run\'s')
})

t.test('a tag deleted by someone else between two removals is forgotten when the next late look lists the tags', async t => {
  const name = 'shared/between'
  const images = await seed(name, ['pr-1', 'pr-2', 'old'])
  const s = await setup(t)
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  // Listings of the run: the scan's, then per removal one before and one after its DELETE; the 4th is the second
  // removal's late look, held while old goes.
  let listings = 0
  const fourth = ({ path }: { path: string }): boolean => path.endsWith('/tags/list') && ++listings === 4
  const { events } = await runHolding(s, cleanup, async () => {
    await checker.deleteManifest(name, (images.get('old') as Seeded).digest)
  }, { method: 'GET', path: fourth })
  t.same(events.map(event => event.result), ['done', 'done'])
  t.same(await tagsNow(name), [])
  const audited = await s.run.images.audit.list({ cleanupId: cleanup.id }, { limit: 50 }, () => true)
  t.ok(audited.items.every(item => item.errorCode === undefined && item.removedTags.length === 1), 'nothing recorded as vanished')
})

t.test('an index listing a planned digest, pushed between plan and execute, keeps that digest: the removal is stale', async t => {
  const name = 'shared/index-before'
  const images = await seed(name, ['pr-1', 'pr-2', 'main'])
  const s = await setup(t)
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  const pr1 = images.get('pr-1') as Seeded
  const multi = await pushIndexOf(name, 'multi', pr1)

  const { events } = await runHolding(s, cleanup)
  t.match(events.find(event => event.tag === 'pr-1'), { result: 'stale', errorCode: 'PLAN_STALE', detail: /would untag only it/ })
  t.match(events.find(event => event.tag === 'pr-2'), { result: 'done', action: 'deleted-digest' })
  t.same(await tagsNow(name), ['main', 'multi', 'pr-1'])
  t.equal((await checker.getManifest(name, pr1.digest)).digest, pr1.digest, 'the platform image is still there')
  t.equal((await checker.resolve(name, 'multi')).digest, multi, 'and the index still resolves')
})

t.test('an index listing a digest, pushed under a new tag in the middle of the run, is seen by the late look: that removal is stale', async t => {
  const name = 'shared/index-middle'
  // Two removals, so the index lists the digest of the very next one: no other late look learns it first.
  const images = await seed(name, ['pr-1', 'pr-2', 'main'])
  const s = await setup(t)
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  let later = { tag: '', digest: '' }
  let multi = ''
  const { events, started } = await runHolding(s, cleanup, async (deleting) => {
    later = laterRemoval(cleanup, deleting)
    multi = await pushIndexOf(name, 'multi', images.get(later.tag) as Seeded)
  })
  t.equal(events.length, 2)
  t.match(events.find(event => event.tag === later.tag), { result: 'stale', errorCode: 'PLAN_STALE', detail: /would untag only it/ })
  t.equal(events.filter(event => event.result === 'done').length, 1)
  t.same(await tagsNow(name), ['main', 'multi', later.tag].sort())
  t.equal((await checker.getManifest(name, later.digest)).digest, later.digest, 'the platform image is still there')
  t.equal((await checker.resolve(name, 'multi')).digest, multi, 'and the index still resolves')
  const made = s.proxy.requests.slice(started)
  t.equal(made.filter(entry => entry.path.endsWith(`/manifests/${multi}`)).length, 1, 'the new index\'s children read once in the run')
})

t.test('a protected index tag moved mid-run onto a new index listing a digest keeps that digest', async t => {
  const name = 'shared/index-moved'
  const images = await seed(name, ['pr-1', 'pr-2'])
  await pushIndex(target, name, ['release'], { amd64: daysBefore(NOW, 1), arm64: daysBefore(NOW, 1) })
  const s = await setup(t, ['release'])
  const cleanup = await s.plan([name], { select: [{ glob: 'pr-*' }] })
  let later = { tag: '', digest: '' }
  let moved = ''
  const { events } = await runHolding(s, cleanup, async (deleting) => {
    later = laterRemoval(cleanup, deleting)
    moved = await pushIndexOf(name, 'release', images.get(later.tag) as Seeded)
  })
  t.match(events.find(event => event.tag === later.tag), { result: 'stale', errorCode: 'PLAN_STALE' })
  t.same(await tagsNow(name), [later.tag, 'release'].sort())
  t.equal((await checker.getManifest(name, later.digest)).digest, later.digest)
  t.equal((await checker.resolve(name, 'release')).digest, moved)
})

t.test('a single deletion given a shared view: an index learnt by its late look refuses mode=digest, an index itself is not checked', async t => {
  const name = 'shared/index-direct'
  const images = await seed(name, ['pr-1'])
  const other = await pushIndex(target, name, ['idx'], { amd64: daysBefore(NOW, 1), arm64: daysBefore(NOW, 1) })
  const s = await setup(t)
  const deps = { ...s.run.images, sharedScans: new SharedTagScans() }
  const ask = { identity: alice, context, repository: name, mode: 'digest' as const }
  // A dry-run makes the view; the index pushed after it is unknown to it until the deletion's late look.
  t.match(await deleteImage(deps, { ...ask, tag: 'pr-1', dryRun: true }), { action: 'deleted-digest', allowed: true })
  const pr1 = images.get('pr-1') as Seeded
  const multi = await pushIndexOf(name, 'multi', pr1)
  await t.rejects(deleteImage(deps, { ...ask, tag: 'pr-1' }), { code: 'REFERENCED_BY_INDEX', extras: { referencedBy: [{ digest: multi, tags: ['multi'] }] } })
  const audited = await s.run.images.audit.list({}, { limit: 1 }, () => true)
  t.match(audited.items[0], { tag: 'pr-1', outcome: 'rejected', errorCode: 'REFERENCED_BY_INDEX', decision: { allow: false } })
  t.match(await deleteImage(deps, { ...ask, tag: 'idx' }), { action: 'deleted-digest', digest: other.digest })
  t.same(await tagsNow(name), ['multi', 'pr-1'])
  t.equal((await checker.resolve(name, 'multi')).digest, multi)
})
