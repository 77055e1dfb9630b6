/**
 * An untag removes what was planned or nothing. An untag that `auto` chose read the manifest outside the
 * repository's lock (the co-tag scan runs there), so a tag pushed over before the swap is refused with PLAN_STALE
 * and the image pushed meanwhile keeps the tag. An explicit untag reads the tag under the lock, so a push while it
 * waits is what it reads: a confirmed plan (planId) no longer holds then. Against a real distribution 2.8.2; the
 * repository's lock is held from the test to open the window on cue.
 */
import t, { type Test } from 'tap'
import { request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest, type PushedImage } from '../../testing/seed.js'
import { deleteImage, type DeleteImageInput, type ImageServices } from '../../src/images/delete-image.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { repositoryLockKey } from '../../src/registry/untag.js'
import type { AuditStore } from '../../src/audit/index.js'
import { rejection } from '../fixtures/rejection.js'
import { directory, imageServices, memoryTrail } from '../fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const identity = { subject: 'apikey:admin', groups: [], kind: 'apikey' as const }
const context = { requestId: 'req-moved', transport: 'rest' as const }

async function digestOf (name: string, reference: string): Promise<string | number> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode === 200 ? String(response.headers['docker-content-digest']) : response.statusCode
}

function setup (t: Test): { deps: ImageServices, store: AuditStore } {
  const { store, audit } = memoryTrail(t)
  return { deps: imageServices(directory(t, { default: registry.url }), audit), store }
}

/**
 * Runs the deletion while the repository's lock is held; once its write-ahead record exists (the plan is made and
 * the untag waits for the lock), pushes `other` under the tag, then lets the untag go on.
 */
async function untagWhilePushed (deps: ImageServices, store: AuditStore, input: Omit<DeleteImageInput, 'identity' | 'context'>, other: () => Promise<PushedImage>): Promise<{ outcome: Promise<unknown>, other: PushedImage }> {
  let release = (): void => {}
  const held = deps.locks.run(repositoryLockKey('default', input.repository), async () => { await new Promise<void>(resolve => { release = resolve }) })
  const outcome = deleteImage(deps, { identity, context, ...input })
  outcome.catch(() => {})
  while ((await store.pending()).length === 0) await new Promise(resolve => setTimeout(resolve, 10))
  const pushed = await other()
  release()
  await held
  return { outcome, other: pushed }
}

t.test('an untag auto chose: a push under the tag while the untag waits for the lock makes it PLAN_STALE', async t => {
  const { deps, store } = setup(t)
  const image = await pushImage(target, 'moved/plain', ['v1', 'v1-rc'], 'schema2')
  const { outcome, other } = await untagWhilePushed(deps, store, { repository: 'moved/plain', tag: 'v1', mode: 'auto' },
    async () => await pushImage(target, 'moved/plain', ['v1'], 'oci'))
  const error = await rejection(outcome)
  t.match(error, { code: 'PLAN_STALE', status: 409, extras: { digest: other.digest, plannedDigest: image.digest } })
  t.match(error.detail, new RegExp(`moved/plain:v1 moved to ${other.digest} after the untag was planned for ${image.digest}; nothing was changed`))
  t.equal(await digestOf('moved/plain', 'v1'), other.digest, 'the image pushed meanwhile keeps the tag')
  t.equal(await digestOf('moved/plain', 'v1-rc'), image.digest)
  const [record] = (await store.list({ name: 'moved/plain' }, { limit: 10 })).items
  t.match(record, { outcome: 'rejected', errorCode: 'PLAN_STALE', mode: 'auto', deleteAction: 'untagged', strategy: 'swap', digest: image.digest })
  t.same(await store.pending(), [], 'the write-ahead record is settled')
})

t.test('an explicit untag of a confirmed plan (planId): a push while it waits for the lock is what it reads, so the plan no longer holds', async t => {
  const { deps, store } = setup(t)
  const image = await pushImage(target, 'moved/confirmed', ['v1'], 'schema2')
  const dry = await deleteImage(deps, { identity, context, repository: 'moved/confirmed', tag: 'v1', mode: 'untag', dryRun: true })
  t.equal(dry.digest, image.digest)
  // Another image's manifest, already in the repository, is tagged v1: the same push a CI job would make.
  const later = await pushImage(target, 'moved/confirmed', ['later'], 'oci')
  let release = (): void => {}
  const held = deps.locks.run(repositoryLockKey('default', 'moved/confirmed'), async () => { await new Promise<void>(resolve => { release = resolve }) })
  const outcome = deleteImage(deps, { identity, context, repository: 'moved/confirmed', tag: 'v1', mode: 'untag', planId: dry.planId })
  outcome.catch(() => {})
  await new Promise(resolve => setTimeout(resolve, 100))
  t.same(await store.pending(), [], 'the untag waits for the lock before it reads or records anything')
  await tagManifest(target, 'moved/confirmed', 'v1', later.manifest, later.mediaType)
  release()
  await held
  const error = await rejection(outcome)
  t.match(error, { code: 'PLAN_STALE', extras: { planId: dry.planId, digest: later.digest } })
  t.not(error.extras.currentPlanId, dry.planId, 'the plan made now is another plan')
  t.equal(await digestOf('moved/confirmed', 'v1'), later.digest, 'v1 stays on what was pushed')
  t.equal(await digestOf('moved/confirmed', 'later'), later.digest)
  const records = (await store.list({ name: 'moved/confirmed', action: 'delete' }, { limit: 10 })).items
  t.equal(records.length, 1)
  t.match(records[0], { outcome: 'rejected', errorCode: 'PLAN_STALE' })
  t.not(records[0]?.outcome, 'deleted')

  const fresh = await deleteImage(deps, { identity, context, repository: 'moved/confirmed', tag: 'v1', mode: 'untag', dryRun: true })
  t.match(await deleteImage(deps, { identity, context, repository: 'moved/confirmed', tag: 'v1', mode: 'untag', planId: fresh.planId }),
    { action: 'untagged', digest: later.digest, deleted: true }, 'a new plan for what the tag points at now runs')
  t.equal(await digestOf('moved/confirmed', 'v1'), 404)
  t.equal(await digestOf('moved/confirmed', 'later'), later.digest)
})
