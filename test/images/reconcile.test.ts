import t from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest } from '../../testing/seed.js'
import { reconcilePending } from '../../src/images/reconcile.js'
import { restoreDeletion } from '../../src/images/restore-deletion.js'
import { KeyedQueue } from '../../src/registry/untag.js'
import { deleteInRegistry, headManifest } from '../fixtures/audit.js'
import { claimRestore, closedPort, deletionRecord, directory, memoryTrail, restoreRequest } from '../fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const nowhere = `http://127.0.0.1:${await closedPort()}`
const NOTE = /reconciled at start-up/

t.test('a registry no longer configured: the records stay pending, with a warning, until a gateway that knows it starts', async t => {
  const { store, audit, logger } = memoryTrail(t)
  const image = await pushImage(target, 'reconcile/retired', ['v1', 'v2'], 'schema2')
  const pendingDelete = await store.append(deletionRecord('retired', image, ['v1'], 'pending'))
  const deletion = await store.append(deletionRecord('retired', image, ['v2']))
  const pendingRestore = await claimRestore(store, deletion)

  const summary = await reconcilePending({ registries: directory(t, { default: registry.url }), audit }, logger)
  t.same(summary, { settled: 0, left: 2 })
  t.same((await store.pending()).map(record => record.id), [pendingDelete.id, pendingRestore.id], 'both still pending')
  t.equal((await store.get(deletion.id))?.restoredBy, pendingRestore.id, 'the restore keeps its claim')
  t.same(logger.warnings.map(warning => warning.details), [
    { auditId: pendingDelete.id, registry: 'retired' },
    { auditId: pendingRestore.id, registry: 'retired' }
  ])
  t.match(logger.warnings[0]?.message, /left for a later pass/)

  // A later start whose configuration names the registry again settles them: the image is still there, so the
  // DELETE never happened, and v2 points at the digest, so the restore did.
  const later = await reconcilePending({ registries: directory(t, { default: registry.url, retired: registry.url }), audit }, logger)
  t.same(later, { settled: 2, left: 0 })
  t.match(await store.get(pendingDelete.id), { outcome: 'failed', errorDetail: NOTE })
  t.match(await store.get(pendingRestore.id), { outcome: 'restored', errorDetail: NOTE })
  t.equal((await store.get(deletion.id))?.restoredBy, pendingRestore.id)
  t.equal(logger.warnings.length, 2, 'no new warning')
})

t.test('an unreachable registry: the records stay pending and keep their claims', async t => {
  const { store, audit, logger } = memoryTrail(t)
  const image = await pushImage(target, 'reconcile/unreachable', ['v1'], 'oci')
  t.equal(await deleteInRegistry(registry.url, image.name, image.digest), 202)
  const pendingDelete = await store.append(deletionRecord('flaky', image, ['v1'], 'pending'))
  const deletion = await store.append(deletionRecord('flaky', image, ['v1']))
  const pendingRestore = await claimRestore(store, deletion)

  const down = await reconcilePending({ registries: directory(t, { default: registry.url, flaky: nowhere }), audit }, logger)
  t.same(down, { settled: 0, left: 2 })
  t.same((await store.pending()).map(record => record.id).sort(), [pendingDelete.id, pendingRestore.id].sort(), 'both (ids of one millisecond sort in no particular order)')
  t.equal((await store.get(deletion.id))?.restoredBy, pendingRestore.id, 'an unknown answer releases nothing')
  t.same(logger.warnings.map(warning => warning.details.registry), ['flaky', 'flaky'])

  // Back online: the DELETE happened (the digest is gone), the restore did not (the tag is missing).
  const up = await reconcilePending({ registries: directory(t, { default: registry.url, flaky: registry.url }), audit }, logger)
  t.same(up, { settled: 2, left: 0 })
  t.match(await store.get(pendingDelete.id), { outcome: 'deleted', errorDetail: NOTE })
  t.match(await store.get(pendingRestore.id), { outcome: 'failed', errorDetail: NOTE })
  t.equal((await store.get(deletion.id))?.restoredBy, undefined, 'the failed restore released its claim')
})

t.test('pending deletions: digest gone → deleted, digest still there → failed; settled records are left alone', async t => {
  const { store, audit, logger } = memoryTrail(t)
  const registries = directory(t, { default: registry.url })
  const gone = await pushImage(target, 'reconcile/deletions', ['gone'], 'oci-index')
  const alive = await pushImage(target, 'reconcile/deletions', ['alive'], 'docker-list')
  t.equal(await deleteInRegistry(registry.url, gone.name, gone.digest), 202)
  const neverPushed = { ...alive, name: 'reconcile/never-existed' }
  const settledBefore = await store.append({ ...deletionRecord('default', alive, ['alive']), outcome: 'rejected', errorCode: 'SHARED_DIGEST' })
  const goneRecord = await store.append(deletionRecord('default', gone, ['gone'], 'pending'))
  const aliveRecord = await store.append(deletionRecord('default', alive, ['alive'], 'pending'))
  const missingRepository = await store.append(deletionRecord('default', neverPushed, ['alive'], 'pending'))

  t.same(await reconcilePending({ registries, audit }, logger), { settled: 3, left: 0 })
  t.match(await store.get(goneRecord.id), { outcome: 'deleted', errorDetail: NOTE, manifest: gone.manifest })
  t.match(await store.get(aliveRecord.id), { outcome: 'failed', errorDetail: NOTE })
  t.match(await store.get(missingRepository.id), { outcome: 'deleted' }, 'a repository that is gone means the manifest is gone')
  t.same(await store.get(settledBefore.id), settledBefore, 'a settled record is not touched')
  t.same(await store.pending(), [])
  t.same(logger.warnings, [])
  t.same(await headManifest(registry.url, alive.name, 'alive'), { status: 200, digest: alive.digest }, 'reconciliation changes nothing in the registry')
  t.same(await reconcilePending({ registries, audit }, logger), { settled: 0, left: 0 }, 'a second run finds nothing')
})

t.test('a pending restore whose tags do not all point at the digest: failed, and the deletion can be restored again', async t => {
  const { store, audit, logger } = memoryTrail(t)
  const registries = directory(t, { default: registry.url })
  const name = 'reconcile/restores'

  // Cut short after the first of two PUTs: one tag back, one missing.
  const partial = await pushImage(target, name, ['p1', 'p2'], 'schema2')
  t.equal(await deleteInRegistry(registry.url, name, partial.digest), 202)
  const partialDeletion = await store.append(deletionRecord('default', partial, ['p1', 'p2']))
  const partialRestore = await claimRestore(store, partialDeletion)
  await tagManifest(target, name, 'p1', partial.manifest, partial.mediaType)

  // A tag that points at another manifest (pushed by someone else meanwhile).
  const moved = await pushImage(target, name, ['m1'], 'oci')
  t.equal(await deleteInRegistry(registry.url, name, moved.digest), 202)
  const movedDeletion = await store.append(deletionRecord('default', moved, ['m1']))
  const movedRestore = await claimRestore(store, movedDeletion)
  const replacement = await pushImage(target, name, ['m1'], 'oci')

  // Every tag back: the restore happened.
  const whole = await pushImage(target, name, ['w1', 'w2'], 'oci-index')
  t.equal(await deleteInRegistry(registry.url, name, whole.digest), 202)
  const wholeDeletion = await store.append(deletionRecord('default', whole, ['w1', 'w2']))
  const wholeRestore = await claimRestore(store, wholeDeletion)
  for (const tag of ['w1', 'w2']) await tagManifest(target, name, tag, whole.manifest, whole.mediaType)

  t.same(await reconcilePending({ registries, audit }, logger), { settled: 3, left: 0 })
  for (const [restore, deletion] of [[partialRestore, partialDeletion], [movedRestore, movedDeletion]] as const) {
    t.match(await store.get(restore.id), { action: 'restore', outcome: 'failed', errorDetail: NOTE, restoreOf: deletion.id })
    t.equal((await store.get(deletion.id))?.restoredBy, undefined, `${deletion.tag}: claim released`)
  }
  t.match(await store.get(wholeRestore.id), { outcome: 'restored', errorDetail: NOTE })
  t.equal((await store.get(wholeDeletion.id))?.restoredBy, wholeRestore.id, 'a restore that happened keeps its claim')
  t.match(await store.claimRestore(wholeDeletion.id, restoreRequest(wholeDeletion)), { ok: false, reason: 'already-restored' })
  t.same(await headManifest(registry.url, name, 'm1'), { status: 200, digest: replacement.digest }, 'the replacement is left as it is')

  // The released deletions can be restored again through the use case.
  const deps = { registries, audit, authorizer: () => () => ({ allow: true as const, reason: 'test', roles: [] }), onAuditLost: () => {}, locks: new KeyedQueue() }
  const input = { identity: { subject: 'apikey:admin', groups: [], kind: 'apikey' as const }, context: { requestId: 'again', transport: 'rest' as const } }
  const partialAgain = await restoreDeletion(deps, { ...input, deletionId: partialDeletion.id })
  t.same(partialAgain.restoredTags, ['p1', 'p2'])
  for (const tag of ['p1', 'p2']) t.same(await headManifest(registry.url, name, tag), { status: 200, digest: partial.digest })
  await t.rejects(restoreDeletion(deps, { ...input, deletionId: movedDeletion.id }), { code: 'TAG_EXISTS', extras: { tags: ['m1'] } }, 'the moved tag is still guarded')
  await restoreDeletion(deps, { ...input, deletionId: movedDeletion.id, force: true })
  t.same(await headManifest(registry.url, name, 'm1'), { status: 200, digest: moved.digest })
  await t.rejects(restoreDeletion(deps, { ...input, deletionId: wholeDeletion.id }), { code: 'ALREADY_RESTORED', extras: { restoredBy: wholeRestore.id } })
})

t.test('a failed restore releases only its own claim', async t => {
  const { store, audit, logger } = memoryTrail(t)
  const image = await pushImage(target, 'reconcile/claims', ['v1'], 'schema2')
  t.equal(await deleteInRegistry(registry.url, image.name, image.digest), 202)
  const deletion = await store.append(deletionRecord('default', image, ['v1']))
  const stale = await claimRestore(store, deletion)
  // Another restore took the deletion over (e.g. an operator fixed the record by hand).
  await store.update(deletion.id, { restoredBy: '01ARZ3NDEKTSV4RRFFQ69G5FAV' })
  t.same(await reconcilePending({ registries: directory(t, { default: registry.url }), audit }, logger), { settled: 1, left: 0 })
  t.match(await store.get(stale.id), { outcome: 'failed' })
  t.equal((await store.get(deletion.id))?.restoredBy, '01ARZ3NDEKTSV4RRFFQ69G5FAV')
})

t.test('pending untags: settled by whether the tag still resolves, not by the digest, which an untag keeps', async t => {
  const { store, audit, logger } = memoryTrail(t)
  const image = await pushImage(target, 'reconcile/untag', ['done', 'not-done', 'moved', 'keep'], 'schema2')
  const other = await pushImage(target, 'reconcile/untag', ['moved'], 'oci')
  const untag = (tag: string, strategy: 'swap' | 'native' = 'swap'): ReturnType<typeof deletionRecord> =>
    ({ ...deletionRecord('default', image, [tag], 'pending'), mode: 'untag', deleteAction: 'untagged', strategy })
  // `done` is removed the way the swap does it, by hand.
  const { placeholderManifest, EMPTY_BLOB } = await import('../../src/registry/untag.js')
  const { pushBlob } = await import('../../testing/seed.js')
  await pushBlob(target, 'reconcile/untag', EMPTY_BLOB)
  const placeholder = placeholderManifest()
  const placeholderDigest = await tagManifest(target, 'reconcile/untag', 'done', placeholder, 'application/vnd.oci.image.manifest.v1+json')
  t.equal(await deleteInRegistry(registry.url, 'reconcile/untag', placeholderDigest), 202)
  const done = await store.append(untag('done'))
  const notDone = await store.append(untag('not-done', 'native'))
  const moved = await store.append(untag('moved'))

  const summary = await reconcilePending({ registries: directory(t, { default: registry.url }), audit }, logger)
  t.same(summary, { settled: 3, left: 0 })
  t.match(await store.get(done.id), { outcome: 'deleted', errorDetail: NOTE, deleteAction: 'untagged' })
  t.match(await store.get(notDone.id), { outcome: 'failed', errorDetail: NOTE })
  t.match(await store.get(moved.id), { outcome: 'failed', errorDetail: new RegExp(`moved points at ${other.digest} now`) })
  t.equal((await headManifest(registry.url, image.name, image.digest)).status, 200, 'the untagged manifest is still there, and did not count')
})

t.test('a pending swap stopped on its placeholder: the untag is finished by deleting the placeholder, the digest stays', async t => {
  const { store, audit, logger } = memoryTrail(t)
  const image = await pushImage(target, 'reconcile/stuck', ['stuck', 'kept'], 'schema2')
  const { placeholderManifest, EMPTY_BLOB } = await import('../../src/registry/untag.js')
  const { pushBlob } = await import('../../testing/seed.js')
  await pushBlob(target, 'reconcile/stuck', EMPTY_BLOB)
  // The swap's PUT landed and the gateway died before its DELETE: the tag names an empty image.
  const placeholderDigest = await tagManifest(target, 'reconcile/stuck', 'stuck', placeholderManifest(), 'application/vnd.oci.image.manifest.v1+json')
  const record = await store.append({ ...deletionRecord('default', image, ['stuck'], 'pending'), mode: 'untag', deleteAction: 'untagged', strategy: 'swap' })

  t.same(await reconcilePending({ registries: directory(t, { default: registry.url }), audit }, logger), { settled: 1, left: 0 })
  t.match(await store.get(record.id), { outcome: 'deleted', errorDetail: new RegExp(`left on the untag's placeholder ${placeholderDigest}, which was deleted`) })
  t.equal((await headManifest(registry.url, 'reconcile/stuck', 'stuck')).status, 404, 'the tag is gone')
  t.equal((await headManifest(registry.url, 'reconcile/stuck', placeholderDigest)).status, 404, 'and so is the placeholder')
  t.equal((await headManifest(registry.url, 'reconcile/stuck', 'kept')).status, 200, 'the co-tag and its digest stay')
  t.equal((await headManifest(registry.url, 'reconcile/stuck', image.digest)).status, 200)
})

t.test('placeholders are recognised by their shape alone; anything else is not one', async t => {
  const { isPlaceholder, placeholderManifest } = await import('../../src/registry/untag.js')
  t.ok(isPlaceholder(placeholderManifest()))
  const without = JSON.parse(placeholderManifest().toString()) as Record<string, unknown>
  t.notOk(isPlaceholder(Buffer.from(JSON.stringify({ ...without, annotations: {} }))), 'no nonce annotation')
  t.notOk(isPlaceholder(Buffer.from(JSON.stringify({ ...without, layers: [{}] }))), 'layers')
  t.notOk(isPlaceholder(Buffer.from(JSON.stringify({ ...without, config: { digest: 'sha256:0' } }))), 'another config')
  t.notOk(isPlaceholder(Buffer.from(JSON.stringify({ ...without, config: undefined }))), 'no config')
  t.notOk(isPlaceholder(Buffer.from(JSON.stringify({ ...without, layers: 'none' }))), 'layers not a list')
  t.notOk(isPlaceholder(Buffer.from('null')))
  t.notOk(isPlaceholder(Buffer.from('not json')))
})

t.test('a pending untag on a registry that cannot answer now stays pending', async t => {
  const { store, audit, logger } = memoryTrail(t)
  const image = await pushImage(target, 'reconcile/untag-down', ['v1'], 'schema2')
  const record = await store.append({ ...deletionRecord('flaky', image, ['v1'], 'pending'), mode: 'auto', deleteAction: 'untagged', strategy: 'swap' })
  t.same(await reconcilePending({ registries: directory(t, { default: registry.url, flaky: nowhere }), audit }, logger), { settled: 0, left: 1 })
  t.equal((await store.get(record.id))?.outcome, 'pending')
})

t.test('a record its own request settles while it is being judged keeps the request\'s answer: the conflict is logged', async t => {
  const { store, audit, logger } = memoryTrail(t)
  const image = await pushImage(target, 'reconcile/in-flight', ['v1'], 'schema2')
  const record = await store.append(deletionRecord('default', image, ['v1'], 'pending'))
  let reads = 0
  // The second read is the one under the lock: right after it, the request (whose lock was lost) records its answer.
  const racing = Object.assign(Object.create(audit) as typeof audit, {
    get: async (id: string) => {
      const read = await audit.get(id)
      if (++reads === 2) await store.update(id, { outcome: 'deleted', upstreamStatus: 202 })
      return read
    }
  })
  t.same(await reconcilePending({ registries: directory(t, { default: registry.url }), audit: racing }, logger), { settled: 0, left: 1 })
  t.match(await store.get(record.id), { outcome: 'deleted', upstreamStatus: 202 }, 'the image is still there, yet the request\'s answer stays')
  t.same(logger.warnings.map(warning => warning.details), [{ auditId: record.id, registry: 'default' }])
  t.match(logger.warnings[0]?.message, /settled by its own request/)
})
