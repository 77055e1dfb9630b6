// Restores that meet an earlier restore or a moved tag: 409s that change nothing, and force=true.
import t from 'tap'
import { pushImage } from '../../testing/seed.js'
import { callRestore, headManifest, listAudit, RESTORE_MUTATION, TRANSPORTS } from '../fixtures/audit.js'
import { assertRestored, startAuditSetup } from '../fixtures/audit-setup.js'

const { registry, target, gateway, deleteThroughGateway, auditRecord } = await startAuditSetup(t)

t.test('restoring twice: 409 ALREADY_RESTORED naming the restore, and nothing changes', async t => {
  const name = 'restore/twice'
  const image = await pushImage(target, name, ['v1'], 'schema2')
  const deletion = await deleteThroughGateway(t, name, 'v1')
  const first = await callRestore(gateway, 'rest', deletion.auditId)
  t.equal(first.status, 200)
  for (const transport of TRANSPORTS) {
    const again = await callRestore(gateway, transport, deletion.auditId)
    t.equal(again.status, transport === 'rest' ? 409 : 200)
    t.equal(again.result, undefined)
    t.match(again.error, { code: 'ALREADY_RESTORED', status: 409, restoredBy: first.result?.auditId })
    t.match(again.error?.detail, first.result?.auditId)
  }
  await assertRestored(t, registry.url, name, ['v1'], image.digest)
  const restores = await listAudit(gateway, 'rest', { name, action: 'restore', outcome: 'restored' })
  t.same(restores.items.map(item => item.id), [first.result?.auditId], 'one restore happened')
  t.match(await auditRecord(name, deletion.auditId), { restoredBy: first.result?.auditId, restorable: false })
})

t.test('two restores at once: exactly one wins', async t => {
  const name = 'restore/race'
  const image = await pushImage(target, name, ['v1'], 'oci')
  const deletion = await deleteThroughGateway(t, name, 'v1')
  const results = await Promise.all(TRANSPORTS.map(async transport => await callRestore(gateway, transport, deletion.auditId)))
  const won = results.filter(result => result.result !== undefined)
  const lost = results.filter(result => result.error !== undefined)
  t.equal(won.length, 1, 'one restore')
  t.equal(lost.length, 1, 'one refusal')
  t.equal(lost[0]?.error?.code, 'ALREADY_RESTORED')
  t.equal(lost[0]?.error?.restoredBy, won[0]?.result?.auditId)
  await assertRestored(t, registry.url, name, ['v1'], image.digest)
})

t.test('a tag re-pushed meanwhile: 409 TAG_EXISTS and no tag moves, then force=true moves it back', async t => {
  for (const transport of TRANSPORTS) {
    const name = `restore/moved-${transport}`
    const original = await pushImage(target, name, ['keep', 'moved'], 'schema2')
    const deletion = await deleteThroughGateway(t, name, 'keep', '?force=true')
    t.same(deletion.removedTags, ['keep', 'moved'])
    const replacement = await pushImage(target, name, ['moved'], 'schema2')

    const refused = await callRestore(gateway, transport, deletion.auditId)
    t.equal(refused.status, transport === 'rest' ? 409 : 200)
    t.match(refused.error, { code: 'TAG_EXISTS', status: 409, tags: ['moved'] })
    t.match(refused.error?.detail, `${name}:moved`)
    t.match(refused.error?.detail, /force=true/)
    t.same(await headManifest(registry.url, name, 'moved'), { status: 200, digest: replacement.digest }, 'the re-pushed tag is untouched')
    t.same(await headManifest(registry.url, name, 'keep'), { status: 404 }, 'no tag was put back before the check')

    const failed = await listAudit(gateway, 'rest', { name, action: 'restore' })
    t.equal(failed.items.length, 1, 'the refused restore is in the trail')
    t.match(failed.items[0], { outcome: 'rejected', errorCode: 'TAG_EXISTS', restoreOf: deletion.auditId, transport, decision: { allow: true } })
    t.match(await auditRecord(name, deletion.auditId), { restorable: true }, 'the claim was released')
    t.equal((await auditRecord(name, deletion.auditId))?.restoredBy, undefined)

    const forced = await callRestore(gateway, transport, deletion.auditId, { force: true })
    t.equal(forced.status, 200)
    t.same(forced.result?.restoredTags, ['keep', 'moved'])
    await assertRestored(t, registry.url, name, ['keep', 'moved'], original.digest)
    t.same(await headManifest(registry.url, name, replacement.digest), { status: 200, digest: replacement.digest }, 'the replacement stays, by digest')
    const after = await listAudit(gateway, 'rest', { name, action: 'restore' })
    t.same(after.items.map(item => item.outcome), ['restored', 'rejected'], 'both attempts, newest first')
  }
})

t.test('several tags re-pushed: TAG_EXISTS names them all; an explicit null force means false', async t => {
  const name = 'restore/moved-both'
  const original = await pushImage(target, name, ['x', 'y', 'z'], 'oci')
  const deletion = await deleteThroughGateway(t, name, 'x', '?force=true')
  const replacement = await pushImage(target, name, ['y', 'z'], 'oci')
  const refused = await callRestore(gateway, 'rest', deletion.auditId)
  t.match(refused.body, { code: 'TAG_EXISTS', tags: ['y', 'z'] })
  t.match(refused.body.detail, `${name}:y, ${name}:z now point at another manifest; restoring would move them back`)
  const nullForce = await gateway.gql(RESTORE_MUTATION, { id: deletion.auditId, force: null })
  t.match(nullForce.body.errors?.[0]?.extensions, { code: 'TAG_EXISTS', tags: ['y', 'z'] })
  t.same(await headManifest(registry.url, name, 'x'), { status: 404 })
  for (const tag of ['y', 'z']) t.same(await headManifest(registry.url, name, tag), { status: 200, digest: replacement.digest })
  const forced = await callRestore(gateway, 'graphql', deletion.auditId, { force: true })
  t.same(forced.result?.restoredTags, ['x', 'y', 'z'])
  await assertRestored(t, registry.url, name, ['x', 'y', 'z'], original.digest)
})
