// The trail across restarts: pending records reconciled at start, a deletion the trail could not settle, restores after garbage collection.
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import pino from 'pino'
import t from 'tap'
import { buildApp } from '../../src/app.js'
import { openSqliteAuditStore } from '../../src/audit/index.js'
import type { AuditStore, NewAuditRecord } from '../../src/audit/types.js'
import { validateConfig } from '../../src/config/load.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest, type PushedImage } from '../../testing/seed.js'
import { callRestore, deleteInRegistry, headManifest, listAudit, TRANSPORTS, type Transport } from '../fixtures/audit.js'
import { assertRestored, POLICY, startAuditSetup } from '../fixtures/audit-setup.js'
import { ADMIN_KEY, ADMIN_POLICY, startGateway } from '../fixtures/gateway.js'

const { registry, target, auditPath, registries, gateway, deleteThroughGateway, auditRecord } = await startAuditSetup(t)

t.test('records left pending by a crash are reconciled at the next start', async t => {
  const name = 'pending/app'
  const store = openSqliteAuditStore(auditPath)
  t.teardown(async () => { await store.close() })
  const pendingDelete = (image: PushedImage, tag: string): NewAuditRecord => ({
    requestId: `crash-${tag}`,
    transport: 'rest',
    subject: 'apikey:admin',
    groups: [],
    action: 'delete',
    registry: 'default',
    name,
    tag,
    digest: image.digest,
    mediaType: image.mediaType,
    removedTags: [tag],
    decision: { allow: true, reason: 'simulated crash between the write-ahead record and the DELETE' },
    outcome: 'pending',
    manifest: image.manifest
  })

  // The gateway stopped after the write-ahead record, before its DELETE: the image is still there.
  const alive = await pushImage(target, name, ['alive'], 'oci')
  const aliveRecord = await store.append(pendingDelete(alive, 'alive'))
  // The gateway stopped after the registry accepted the DELETE, before recording it.
  const gone = await pushImage(target, name, ['gone'], 'docker-list')
  const goneRecord = await store.append(pendingDelete(gone, 'gone'))
  t.equal(await deleteInRegistry(registry.url, name, gone.digest), 202)

  // Restores cut short: one after its PUT, one before.
  const back = await pushImage(target, name, ['back'], 'schema2')
  const backDeletion = await deleteThroughGateway(t, name, 'back')
  const lost = await pushImage(target, name, ['lost'], 'oci-index')
  const lostDeletion = await deleteThroughGateway(t, name, 'lost')
  const restoreOf = async (deletionId: string, tag: string, image: PushedImage): Promise<string> => {
    const claim = await store.claimRestore(deletionId, {
      requestId: `crash-restore-${tag}`,
      transport: 'graphql',
      subject: 'apikey:admin',
      groups: [],
      action: 'restore',
      registry: 'default',
      name,
      tag,
      digest: image.digest,
      mediaType: image.mediaType,
      removedTags: [tag],
      decision: { allow: true, reason: 'simulated' },
      outcome: 'pending'
    })
    if (!claim.ok) throw new Error(`claim failed: ${claim.reason}`)
    return claim.restore.id
  }
  const backRestore = await restoreOf(backDeletion.auditId, 'back', back)
  await tagManifest(target, name, 'back', back.manifest, back.mediaType)
  const lostRestore = await restoreOf(lostDeletion.auditId, 'lost', lost)

  // Past the retention (90 days by default): pruned at the start, unless still pending.
  const ancient = { ...pendingDelete(alive, 'alive'), time: '2001-01-01T00:00:00.000Z' }
  const oldSettled = await store.append({ ...ancient, outcome: 'failed', requestId: 'ancient-settled' })
  const oldPending = await store.append({ ...ancient, requestId: 'ancient-pending' })

  t.same((await store.pending()).map(record => record.id), [aliveRecord.id, goneRecord.id, backRestore, lostRestore, oldPending.id], 'five records await reconciliation')
  const blocked = await callRestore(gateway, 'rest', lostDeletion.auditId)
  t.match(blocked.error, { code: 'ALREADY_RESTORED', restoredBy: lostRestore }, 'a restore in flight holds its claim')
  t.match(await auditRecord(name, aliveRecord.id), { outcome: 'pending', restorable: false })

  const restarted = await startGateway(t, { registries, policy: POLICY, auditPath })
  t.same(await store.pending(), [], 'nothing is left pending')

  t.equal(await store.get(oldSettled.id), undefined, 'an old settled record is pruned')
  t.match(await store.get(oldPending.id), { outcome: 'failed', requestId: 'ancient-pending' }, 'an old pending one is kept and reconciled')
  const note = /reconciled at start-up/
  t.match(await auditRecord(name, aliveRecord.id, restarted), { action: 'delete', outcome: 'failed', errorDetail: note, restorable: false })
  t.same(await headManifest(registry.url, name, 'alive'), { status: 200, digest: alive.digest }, 'the image the DELETE never reached is there')
  t.match(await auditRecord(name, goneRecord.id, restarted), { action: 'delete', outcome: 'deleted', errorDetail: note, restorable: true })
  t.match(await auditRecord(name, backRestore, restarted), { action: 'restore', outcome: 'restored', errorDetail: note, restoreOf: backDeletion.auditId })
  t.match(await auditRecord(name, backDeletion.auditId, restarted), { restoredBy: backRestore, restorable: false })
  t.match(await auditRecord(name, lostRestore, restarted), { action: 'restore', outcome: 'failed', errorDetail: note, restoreOf: lostDeletion.auditId })
  const released = await auditRecord(name, lostDeletion.auditId, restarted)
  t.equal(released?.restoredBy, undefined, 'the cut-short restore released its claim')
  t.equal(released?.restorable, true)

  for (const transport of TRANSPORTS) {
    const failedDeletion = await callRestore(restarted, transport, aliveRecord.id)
    t.match(failedDeletion.error, { code: 'NOT_RESTORABLE', outcome: 'failed' }, `${transport}: a deletion that did not happen cannot be restored`)
    const twice = await callRestore(restarted, transport, backDeletion.auditId)
    t.match(twice.error, { code: 'ALREADY_RESTORED', restoredBy: backRestore })
  }
  const goneBack = await callRestore(restarted, 'graphql', goneRecord.id)
  t.equal(goneBack.result?.digest, gone.digest, 'the reconciled deletion restores from its saved bytes')
  await assertRestored(t, registry.url, name, ['gone'], gone.digest)
  const lostBack = await callRestore(restarted, 'rest', lostDeletion.auditId)
  t.equal(lostBack.result?.digest, lost.digest)
  await assertRestored(t, registry.url, name, ['lost'], lost.digest)
  await assertRestored(t, registry.url, name, ['back'], back.digest)
})

t.test('a deletion the trail could not settle: the caller is told it happened, and the next start settles it', async t => {
  const dir = t.testdir({ 'policy.yaml': ADMIN_POLICY })
  const path = join(dir, 'lost.db')
  const store = openSqliteAuditStore(path)
  t.teardown(async () => { await store.close() })
  // A real store whose settling writes fail, as on a full disk: the write-ahead record lands, its outcome does not.
  const failing: AuditStore = { ...store, update: async (id, changes) => changes.outcome === 'deleted' ? await Promise.reject(new Error('disk full')) : await store.update(id, changes) }
  const logged: Array<Record<string, any>> = []
  const logger = pino({ level: 'error' }, { write: (line: string) => { logged.push(JSON.parse(line)) } })
  const config = validateConfig({ logLevel: 'error', registries: { default: { url: registry.url } }, policyFile: join(dir, 'policy.yaml'), audit: { path } }, 'test')
  const app = await buildApp(config, { auditStore: failing, logger })
  await app.auditHousekeeping
  const image = await pushImage(target, 'lost/app', ['v1'], 'oci')
  const reply = await app.inject({ method: 'DELETE', url: '/images/lost/app/v1', headers: { 'x-api-key': ADMIN_KEY } })
  await app.close()
  t.equal(reply.statusCode, 200, 'the registry acted, so the caller is not told to retry')
  const { auditId } = reply.json()
  t.match(reply.json(), { deleted: true, digest: image.digest })
  t.same(await headManifest(registry.url, 'lost/app', 'v1'), { status: 404 })
  t.match(await store.get(auditId), { outcome: 'pending', manifest: image.manifest }, 'the write-ahead record is left pending')
  t.match(logged.find(line => line.auditId === auditId), { level: 50, err: { message: 'disk full' }, msg: /reconciled at the next start/ })

  const restarted = await startGateway(t, { registries: { default: { url: registry.url } }, auditPath: path })
  t.match(await store.get(auditId), { outcome: 'deleted', errorDetail: /reconciled at start-up/ })
  const restored = await callRestore(restarted, 'rest', auditId)
  t.equal(restored.result?.digest, image.digest)
  await assertRestored(t, registry.url, 'lost/app', ['v1'], image.digest)
})

t.test('after garbage collection removed its blobs: 410 RESTORE_UNAVAILABLE, recorded; the trail survives restarts', async t => {
  const dir = t.testdir()
  const gcAuditPath = join(dir, 'gc-audit.db')
  const first = await startRegistry()
  let firstStopped = false
  t.teardown(async () => { if (!firstStopped) await first.stop() })
  const gcTarget = { url: first.url }
  const before = await startGateway(t, { registries: { default: { url: first.url } }, policy: POLICY, auditPath: gcAuditPath })

  const kept = await pushImage(gcTarget, 'gc/keep', ['v1'], 'schema2')
  const deletions: Record<Transport, { auditId: string }> = {} as never
  const images: Partial<Record<Transport, PushedImage>> = {}
  for (const transport of TRANSPORTS) {
    images[transport] = await pushImage(gcTarget, 'gc/app', [transport], 'schema2')
    const reply = await before.rest('DELETE', `/images/gc/app/${transport}`)
    t.equal(reply.status, 200)
    deletions[transport] = reply.body
  }
  t.match(await first.garbageCollect(), /blob eligible for deletion|Deleting blob/i, 'garbage collection removed blobs')
  await first.stop({ keepData: true })
  firstStopped = true
  const second = await startRegistry({ dataDir: first.dataDir })
  t.teardown(async () => {
    await second.stop()
    rmSync(first.dataDir, { recursive: true, force: true })
  })
  await before.app.close()
  const after = await startGateway(t, { registries: { default: { url: second.url } }, policy: POLICY, auditPath: gcAuditPath })
  t.same(await headManifest(second.url, 'gc/keep', 'v1'), { status: 200, digest: kept.digest }, 'the restarted registry kept its data')

  const trail = await listAudit(after, 'rest', { name: 'gc/app' })
  t.same(trail.items.map(item => [item.id, item.outcome, item.restorable]), [
    [deletions.graphql.auditId, 'deleted', true],
    [deletions.rest.auditId, 'deleted', true]
  ], 'the restarted gateway reads the deletions the first one recorded')

  for (const transport of TRANSPORTS) {
    const reply = await callRestore(after, transport, deletions[transport].auditId)
    t.equal(reply.status, transport === 'rest' ? 410 : 200)
    t.match(reply.error, { code: 'RESTORE_UNAVAILABLE', status: 410, upstreamStatus: 400, upstreamCode: 'MANIFEST_BLOB_UNKNOWN' })
    t.match(reply.error?.detail, /garbage collection/)
    t.same(await headManifest(second.url, 'gc/app', transport), { status: 404 }, 'nothing was put back')
    const restores = await listAudit(after, 'graphql', { name: 'gc/app', tag: transport, action: 'restore' })
    t.equal(restores.items.length, 1)
    t.match(restores.items[0], { outcome: 'failed', errorCode: 'RESTORE_UNAVAILABLE', upstreamStatus: 400, restoreOf: deletions[transport].auditId, transport })
  }
  t.not(images.rest?.digest, images.graphql?.digest)
})
