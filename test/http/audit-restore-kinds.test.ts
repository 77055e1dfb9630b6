// Restore of every manifest kind and of a forced deletion of a shared digest: the registry holds the original digest under every tag again.
import t from 'tap'
import { pushImage, type ImageKind } from '../../testing/seed.js'
import { callRestore, headManifest, TRANSPORTS } from '../fixtures/audit.js'
import { assertRestored, startAuditSetup } from '../fixtures/audit-setup.js'

const { registry, target, gateway, deleteThroughGateway, auditRecord } = await startAuditSetup(t)

const KINDS: ImageKind[] = ['schema2', 'oci', 'oci-index', 'docker-list']

for (const kind of KINDS) {
  t.test(`${kind}: delete then restore puts the original digest back under the tag`, async t => {
    const name = `restore/${kind}`
    for (const transport of TRANSPORTS) {
      const image = await pushImage(target, name, [transport], kind)
      const deletion = await deleteThroughGateway(t, name, transport)
      t.same(await headManifest(registry.url, name, transport), { status: 404 }, 'gone before the restore')

      const restored = await callRestore(gateway, transport, deletion.auditId)
      t.equal(restored.status, 200, transport)
      t.equal(restored.error, undefined)
      t.match(restored.result?.auditId, /^[0-9A-Z]{26}$/)
      t.not(restored.result?.auditId, deletion.auditId, 'the restore is a record of its own')
      t.same(restored.result, {
        auditId: restored.result?.auditId,
        deletionId: deletion.auditId,
        registry: 'default',
        name,
        digest: image.digest,
        mediaType: image.mediaType,
        restoredTags: [transport]
      })
      await assertRestored(t, registry.url, name, [transport], image.digest)
      for (const child of image.children) {
        t.same(await headManifest(registry.url, name, child.digest), { status: 200, digest: child.digest }, 'the child manifests are there')
      }

      const deletionRecord = await auditRecord(name, deletion.auditId)
      t.match(deletionRecord, { action: 'delete', outcome: 'deleted', digest: image.digest, restoredBy: restored.result?.auditId, restorable: false })
      const restoreRecord = await auditRecord(name, restored.result?.auditId)
      t.match(restoreRecord, {
        action: 'restore',
        outcome: 'restored',
        transport,
        subject: 'apikey:admin',
        registry: 'default',
        name,
        tag: transport,
        digest: image.digest,
        mediaType: image.mediaType,
        removedTags: [transport],
        restoreOf: deletion.auditId,
        upstreamStatus: 201,
        decision: { allow: true },
        restorable: false
      })
      t.type(restoreRecord?.durationMs, 'number')
      t.equal(restoreRecord?.errorCode, undefined)
    }
  })
}

t.test('a forced deletion of a shared digest: the restore brings every co-tag back', async t => {
  for (const transport of TRANSPORTS) {
    const name = 'restore/shared'
    const tags = [`${transport}-a`, `${transport}-b`, `${transport}-c`]
    const image = await pushImage(target, name, tags, 'oci-index')
    const deletion = await deleteThroughGateway(t, name, tags[1] as string, '?force=true')
    t.same([...deletion.removedTags].sort(), tags, 'the forced deletion removed all three')
    for (const tag of tags) t.same(await headManifest(registry.url, name, tag), { status: 404 })

    const restored = await callRestore(gateway, transport, deletion.auditId)
    t.equal(restored.status, 200)
    t.same(restored.result?.restoredTags, deletion.removedTags, 'every tag the deletion removed, in its order')
    t.equal(restored.result?.digest, image.digest)
    await assertRestored(t, registry.url, name, tags, image.digest)
    t.match(await auditRecord(name, restored.result?.auditId), { outcome: 'restored', removedTags: deletion.removedTags, tag: tags[1] })
  }
})
