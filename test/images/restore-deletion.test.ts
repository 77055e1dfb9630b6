import { sha256Digest } from '../../src/registry/client.js'
import t, { type Test } from 'tap'
import type { AuditRecord } from '../../src/audit/types.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { restoreDeletion, type RestoreDeletionDeps } from '../../src/images/restore-deletion.js'
import type { Decision } from '../../src/policy/types.js'
import type { RegistryDirectory } from '../../src/registry/directory.js'
import { deleteImage } from '../../src/images/delete-image.js'
import { KeyedQueue, repositoryLockKey } from '../../src/registry/untag.js'
import { deleteInRegistry, headManifest } from '../fixtures/audit.js'
import { closedPort, deletionRecord, directory, imageServices, memoryTrail } from '../fixtures/use-case.js'
import { rejection } from '../fixtures/rejection.js'

// Failures the end-to-end tests cannot easily provoke: records whose bytes do not match their digest, bytes the
// registry refuses for another reason than garbage collection, a read-only or unreachable registry, a registry
// dropped from the configuration, a trail that cannot be written.
const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const identity = { subject: 'apikey:admin', groups: [], kind: 'apikey' as const }
const allowAll = (): Decision => ({ allow: true, reason: 'test allows everything', roles: ['admin'] })

function setup (t: Test, registries: RegistryDirectory): { deps: RestoreDeletionDeps, store: ReturnType<typeof memoryTrail>['store'], lost: unknown[] } {
  const { store, audit } = memoryTrail(t)
  const lost: unknown[] = []
  return { deps: { registries, authorizer: () => allowAll, audit, onAuditLost: error => { lost.push(error) }, locks: new KeyedQueue() }, store, lost }
}

const context = { requestId: 'req-1', transport: 'rest' as const }

/** After a refused restore: one failed restore record with the code, and the deletion free to be restored again. */
async function assertReleased (t: Test, store: ReturnType<typeof memoryTrail>['store'], deletion: AuditRecord, code: string, outcome = 'failed'): Promise<void> {
  const restores = (await store.list({ action: 'restore' }, { limit: 10 })).items
  t.equal(restores.length, 1)
  t.match(restores[0], { outcome, errorCode: code, restoreOf: deletion.id, requestId: 'req-1' })
  t.type(restores[0]?.durationMs, 'number')
  t.equal((await store.get(deletion.id))?.restoredBy, undefined, 'claim released')
}

t.test('saved bytes that do not hash to the recorded digest: NOT_RESTORABLE before any PUT, claim released', async t => {
  const { deps, store } = setup(t, directory(t, { default: registry.url }))
  const image = await pushImage(target, 'restore-unit/mismatch', ['v1'], 'schema2')
  const other = await pushImage(target, 'restore-unit/mismatch', ['v2'], 'schema2')
  t.equal(await deleteInRegistry(registry.url, image.name, image.digest), 202)
  const deletion = await store.append(deletionRecord('default', { ...image, manifest: other.manifest }, ['v1']))
  const error = await rejection(restoreDeletion(deps, { identity, context, deletionId: deletion.id }))
  t.equal(error.code, 'NOT_RESTORABLE')
  t.match(error.detail, image.digest)
  await assertReleased(t, store, deletion, 'NOT_RESTORABLE', 'rejected')
})

t.test('bytes the registry refuses for another reason: the registry\'s error, not RESTORE_UNAVAILABLE', async t => {
  const { deps, store } = setup(t, directory(t, { default: registry.url }))
  const image = await pushImage(target, 'restore-unit/invalid', ['v1'], 'schema2')
  t.equal(await deleteInRegistry(registry.url, image.name, image.digest), 202)
  const garbage = Buffer.from('this is not a manifest')
  const deletion = await store.append(deletionRecord('default', { ...image, manifest: garbage, digest: sha256Digest(garbage) }, ['v1']))
  const error = await rejection(restoreDeletion(deps, { identity, context, deletionId: deletion.id }))
  t.equal(error.code, 'UPSTREAM_ERROR')
  t.match(error.extras, { upstreamStatus: 400 })
  t.not(error.extras.upstreamCode, 'MANIFEST_BLOB_UNKNOWN')
  await assertReleased(t, store, deletion, 'UPSTREAM_ERROR')
  t.same(await headManifest(registry.url, image.name, 'v1'), { status: 404 })
})

t.test('a read-only registry refuses the PUT: DELETE_DISABLED (read-only), claim released', async t => {
  const seeded = await startRegistry()
  const image = await pushImage({ url: seeded.url }, 'restore-unit/read-only', ['v1'], 'schema2')
  t.equal(await deleteInRegistry(seeded.url, image.name, image.digest), 202)
  await seeded.stop({ keepData: true })
  const readOnly = await startRegistry({ dataDir: seeded.dataDir, readOnly: true })
  t.teardown(async () => { await readOnly.stop() })
  const { deps, store } = setup(t, directory(t, { default: readOnly.url }))
  const deletion = await store.append(deletionRecord('default', image, ['v1']))
  const error = await rejection(restoreDeletion(deps, { identity, context, deletionId: deletion.id }))
  t.equal(error.code, 'DELETE_DISABLED')
  t.match(error.extras, { upstreamStatus: 405, reason: 'read-only' })
  await assertReleased(t, store, deletion, 'DELETE_DISABLED')
})

t.test('an unreachable registry: UPSTREAM_UNAVAILABLE before any PUT, claim released; it works once the registry answers', async t => {
  const image = await pushImage(target, 'restore-unit/unreachable', ['v1'], 'oci')
  t.equal(await deleteInRegistry(registry.url, image.name, image.digest), 202)
  const down = setup(t, directory(t, { default: `http://127.0.0.1:${await closedPort()}` }))
  const deletion = await down.store.append(deletionRecord('default', image, ['v1']))
  const error = await rejection(restoreDeletion(down.deps, { identity, context, deletionId: deletion.id }))
  t.equal(error.code, 'UPSTREAM_UNAVAILABLE')
  await assertReleased(t, down.store, deletion, 'UPSTREAM_UNAVAILABLE')

  const up = { ...down.deps, registries: directory(t, { default: registry.url }) }
  const result = await restoreDeletion(up, { identity, context: { requestId: 'req-2', transport: 'graphql' }, deletionId: deletion.id })
  t.same(result, { auditId: result.auditId, deletionId: deletion.id, registry: 'default', name: image.name, digest: image.digest, mediaType: image.mediaType, restoredTags: ['v1'] })
  t.match(await down.store.get(result.auditId), { outcome: 'restored', transport: 'graphql', upstreamStatus: 201 })
  t.same(await headManifest(registry.url, image.name, 'v1'), { status: 200, digest: image.digest })
})

t.test('a deletion on a registry no longer configured: refused before anything is claimed', async t => {
  const { deps, store } = setup(t, directory(t, { default: registry.url }))
  const image = await pushImage(target, 'restore-unit/retired', ['v1'], 'schema2')
  const deletion = await store.append(deletionRecord('retired', image, ['v1']))
  const error = await rejection(restoreDeletion(deps, { identity, context, deletionId: deletion.id }))
  t.equal(error.code, 'UNKNOWN_REGISTRY')
  t.match(error.detail, 'retired')
  t.equal((await store.get(deletion.id))?.restoredBy, undefined)
  t.same((await store.list({ action: 'restore' }, { limit: 10 })).items, [])
})

t.test('a trail that cannot be used: AUDIT_UNAVAILABLE and the registry is not touched', async t => {
  const { deps, store } = setup(t, directory(t, { default: registry.url }))
  const image = await pushImage(target, 'restore-unit/no-trail', ['v1'], 'schema2')
  t.equal(await deleteInRegistry(registry.url, image.name, image.digest), 202)
  const deletion = await store.append(deletionRecord('default', image, ['v1']))
  await store.close()
  const error = await rejection(restoreDeletion(deps, { identity, context, deletionId: deletion.id }))
  t.equal(error.code, 'AUDIT_UNAVAILABLE')
  t.same(await headManifest(registry.url, image.name, 'v1'), { status: 404 })
})

t.test('a PROTECTED_TAG decision is recorded as denied with its code', async t => {
  const { deps, store } = setup(t, directory(t, { default: registry.url }))
  const image = await pushImage(target, 'restore-unit/protected', ['v1', 'latest'], 'schema2')
  t.equal(await deleteInRegistry(registry.url, image.name, image.digest), 202)
  const deletion = await store.append(deletionRecord('default', image, ['v1', 'latest']))
  const authorize = (_identity: unknown, _action: unknown, resource: { tag: string }): Decision => resource.tag === 'latest'
    ? { allow: false, code: 'PROTECTED_TAG', reason: 'latest is protected', roles: ['admin'] }
    : allowAll()
  const error = await rejection(restoreDeletion({ ...deps, authorizer: () => authorize }, { identity, context, deletionId: deletion.id }))
  t.equal(error.code, 'PROTECTED_TAG')
  t.match(error.extras, { image: `${image.name}:latest`, action: 'restore' })
  const [denied] = (await store.list({ action: 'restore' }, { limit: 10 })).items
  t.match(denied, { outcome: 'denied', errorCode: 'PROTECTED_TAG', decision: { allow: false, reason: 'latest is protected' } })
  t.same(await headManifest(registry.url, image.name, 'v1'), { status: 404 })
})

t.test('force moves a re-pushed tag back only for a caller who holds force on it', async t => {
  const { deps, store } = setup(t, directory(t, { default: registry.url }))
  const image = await pushImage(target, 'restore-unit/forced', ['v1'], 'schema2')
  t.equal(await deleteInRegistry(registry.url, image.name, image.digest), 202)
  const replacement = await pushImage(target, 'restore-unit/forced', ['v1'], 'oci')
  const deletion = await store.append(deletionRecord('default', image, ['v1']))
  const noForce = (_identity: unknown, action: string): Decision => action === 'force'
    ? { allow: false, code: 'FORBIDDEN', reason: 'no rule allows force', roles: ['restorer'] }
    : allowAll()
  const error = await rejection(restoreDeletion({ ...deps, authorizer: () => noForce }, { identity, context, deletionId: deletion.id, force: true }))
  t.match(error, { code: 'FORBIDDEN', extras: { action: 'force', image: `${image.name}:v1`, roles: ['restorer'] } })
  t.same(await headManifest(registry.url, image.name, 'v1'), { status: 200, digest: replacement.digest }, 'the new image keeps its tag')
  t.equal((await store.get(deletion.id))?.restoredBy, undefined, 'the claim is released')
  t.match((await store.list({ action: 'restore' }, { limit: 10 })).items, [{ outcome: 'denied', errorCode: 'FORBIDDEN' }], 'one record for the attempt')
  const restored = await restoreDeletion(deps, { identity, context, deletionId: deletion.id, force: true })
  t.same(restored.restoredTags, ['v1'])
  t.same(await headManifest(registry.url, image.name, 'v1'), { status: 200, digest: image.digest })
})

t.test('a restore takes the repository lock deletions and untags hold: a held lock delays its check and PUTs', async t => {
  const { deps, store } = setup(t, directory(t, { default: registry.url }))
  const image = await pushImage(target, 'restore-unit/locked', ['v1'], 'schema2')
  t.equal(await deleteInRegistry(registry.url, image.name, image.digest), 202)
  const deletion = await store.append(deletionRecord('default', image, ['v1']))
  let release = (): void => {}
  const held = deps.locks.run(repositoryLockKey('default', image.name), async () => { await new Promise<void>(resolve => { release = resolve }) })
  let settled = false
  const restoring = restoreDeletion(deps, { identity, context, deletionId: deletion.id }).finally(() => { settled = true })
  while ((await store.pending()).length === 0) await new Promise(resolve => setTimeout(resolve, 10))
  await new Promise(resolve => setTimeout(resolve, 200))
  t.notOk(settled, 'the restore waits for the lock')
  t.same(await headManifest(registry.url, image.name, 'v1'), { status: 404 }, 'nothing was put back while the lock was held')
  release()
  await held
  t.same((await restoring).restoredTags, ['v1'])
  t.same(await headManifest(registry.url, image.name, 'v1'), { status: 200, digest: image.digest })
  t.equal((deps.locks as KeyedQueue).size, 0, 'the lock is given back')
})

t.test('restores and untags of one repository run at once through the shared lock: every one succeeds, no 500', async t => {
  const { store, audit } = memoryTrail(t)
  const deps = imageServices(directory(t, { default: registry.url }), audit, { untagStrategy: 'swap', defaultMode: 'untag' })
  const name = 'restore-unit/busy'
  const gone = await pushImage(target, name, ['r0', 'r1', 'r2', 'r3', 'r4', 'r5'], 'schema2')
  const kept = await pushImage(target, name, ['u0', 'u1', 'u2', 'u3', 'u4', 'u5', 'stays'], 'oci')
  t.equal(await deleteInRegistry(registry.url, name, gone.digest), 202)
  const deletions = await Promise.all(['r0', 'r1', 'r2', 'r3', 'r4', 'r5'].map(async tag => await store.append(deletionRecord('default', gone, [tag]))))
  const results = await Promise.allSettled([
    ...deletions.map(async deletion => await restoreDeletion(deps, { identity, context, deletionId: deletion.id })),
    ...['u0', 'u1', 'u2', 'u3', 'u4', 'u5'].map(async tag => await deleteImage(deps, { identity, context, repository: name, tag }))
  ])
  t.same(results.filter(result => result.status === 'rejected'), [], 'no failure')
  for (const tag of ['r0', 'r1', 'r2', 'r3', 'r4', 'r5']) t.same(await headManifest(registry.url, name, tag), { status: 200, digest: gone.digest }, `${tag} restored`)
  for (const tag of ['u0', 'u1', 'u2', 'u3', 'u4', 'u5']) t.same(await headManifest(registry.url, name, tag), { status: 404 }, `${tag} untagged`)
  t.same(await headManifest(registry.url, name, 'stays'), { status: 200, digest: kept.digest })
})
