// Restores refused before anything changes: rights, credentials, unknown ids, records that are not completed deletions.
import t from 'tap'
import { pushImage } from '../../testing/seed.js'
import { callRestore, headManifest, listAudit, TRANSPORTS } from '../fixtures/audit.js'
import { assertRestored, KEYS, startAuditSetup } from '../fixtures/audit-setup.js'

const { registry, target, gateway, deleteThroughGateway, auditRecord } = await startAuditSetup(t)

t.test('a restore without the restore action: 403 and a denied restore record; nothing changes', async t => {
  for (const transport of TRANSPORTS) {
    const name = `restore/denied-${transport}`
    const image = await pushImage(target, name, ['v1'], 'schema2')
    const deletion = await deleteThroughGateway(t, name, 'v1')
    const denied = await callRestore(gateway, transport, deletion.auditId, { key: KEYS.deleter })
    t.equal(denied.status, transport === 'rest' ? 403 : 200)
    t.match(denied.error, { code: 'FORBIDDEN', status: 403, subject: 'apikey:deleter', action: 'restore', image: `${name}:v1`, registry: 'default' })
    t.match(denied.error?.detail, 'apikey:deleter may not restore')
    t.same(await headManifest(registry.url, name, 'v1'), { status: 404 }, 'not restored')

    const records = await listAudit(gateway, 'rest', { name, action: 'restore' })
    t.equal(records.items.length, 1)
    t.match(records.items[0], {
      action: 'restore',
      outcome: 'denied',
      errorCode: 'FORBIDDEN',
      subject: 'apikey:deleter',
      groups: ['ops'],
      transport,
      tag: 'v1',
      digest: image.digest,
      decision: { allow: false, reason: /may not restore/ }
    })
    const untouched = await auditRecord(name, deletion.auditId)
    t.equal(untouched?.restoredBy, undefined, 'a denied restore claims nothing')
    t.equal(untouched?.restorable, true)

    const allowed = await callRestore(gateway, transport, deletion.auditId)
    t.equal(allowed.status, 200, 'the deletion is still restorable by someone allowed to')
    await assertRestored(t, registry.url, name, ['v1'], image.digest)
  }
})

t.test('restore needs the restore action on every tag the deletion removed', async t => {
  const name = 'restore/partial-rights'
  const image = await pushImage(target, name, ['pr-1', 'rc-1'], 'schema2')
  const deletion = await deleteThroughGateway(t, name, 'pr-1', '?force=true')
  t.same(deletion.removedTags, ['pr-1', 'rc-1'])
  for (const transport of TRANSPORTS) {
    const denied = await callRestore(gateway, transport, deletion.auditId, { key: KEYS.restorer })
    t.match(denied.error, { code: 'FORBIDDEN', subject: 'apikey:restorer', action: 'restore', image: `${name}:rc-1` })
  }
  t.same(await headManifest(registry.url, name, 'pr-1'), { status: 404 }, 'not even the allowed tag came back')
  const denials = await listAudit(gateway, 'rest', { name, action: 'restore', outcome: 'denied' })
  t.equal(denials.items.length, 2, 'one denied record per attempt')

  const single = await pushImage(target, name, ['pr-2'], 'schema2')
  const alone = await deleteThroughGateway(t, name, 'pr-2')
  const allowed = await callRestore(gateway, 'graphql', alone.auditId, { key: KEYS.restorer })
  t.equal(allowed.error, undefined, 'restore on pr-* alone is allowed')
  await assertRestored(t, registry.url, name, ['pr-2'], single.digest)
  t.not(single.digest, image.digest)
})

t.test('no credentials: 401 and no record', async t => {
  const name = 'restore/anonymous'
  await pushImage(target, name, ['v1'], 'schema2')
  const deletion = await deleteThroughGateway(t, name, 'v1')
  for (const transport of TRANSPORTS) {
    const refused = await callRestore(gateway, transport, deletion.auditId, { key: null })
    t.equal(refused.status, 401)
    t.equal(refused.error?.code, 'UNAUTHENTICATED')
  }
  t.same((await listAudit(gateway, 'rest', { name, action: 'restore' })).items, [])
  t.match(await auditRecord(name, deletion.auditId), { restorable: true })
})

t.test('unknown ids: 404 NOT_FOUND', async t => {
  const ids = ['01ARZ3NDEKTSV4RRFFQ69G5FAV', 'not-an-audit-id', '01arz3ndektsv4rrffq69g5fav']
  for (const transport of TRANSPORTS) {
    for (const id of ids) {
      const reply = await callRestore(gateway, transport, id)
      t.equal(reply.status, transport === 'rest' ? 404 : 200, id)
      t.match(reply.error, { code: 'NOT_FOUND', status: 404, field: 'id' }, id)
      t.match(reply.error?.detail, 'GET /audit')
    }
  }
  const tooLong = await gateway.rest('POST', `/deletions/${'A'.repeat(65)}/restore`)
  t.equal(tooLong.status, 400, 'REST refuses an id longer than any audit id')
  t.equal(tooLong.body.code, 'INVALID_REQUEST')
  const badForce = await gateway.rest('POST', '/deletions/01ARZ3NDEKTSV4RRFFQ69G5FAV/restore?force=maybe')
  t.match(badForce.body, { status: 400, code: 'INVALID_REQUEST', field: 'force' })
  const unknownParameter = await gateway.rest('POST', '/deletions/01ARZ3NDEKTSV4RRFFQ69G5FAV/restore?forse=true')
  t.match(unknownParameter.body, { status: 400, code: 'INVALID_REQUEST', field: 'forse' })
})

t.test('a record that is not a completed deletion: 409 NOT_RESTORABLE', async t => {
  const name = 'restore/not-restorable'
  await pushImage(target, name, ['one', 'two'], 'schema2')
  const refusedDelete = await gateway.rest('DELETE', `/images/${name}/one`)
  t.equal(refusedDelete.body.code, 'SHARED_DIGEST')
  const missing = await gateway.rest('DELETE', `/images/${name}/absent`)
  t.equal(missing.body.code, 'NOT_FOUND')
  const dryRun = await gateway.rest('DELETE', `/images/${name}/one?dryRun=true&force=true`)
  t.equal(dryRun.status, 200)
  const rejected = (await listAudit(gateway, 'rest', { name, outcome: 'rejected' })).items[0]
  const notFound = (await listAudit(gateway, 'rest', { name, outcome: 'not-found' })).items[0]
  t.match(rejected, { action: 'delete', restorable: false })
  t.match(notFound, { action: 'delete', restorable: false })

  for (const transport of TRANSPORTS) {
    for (const [record, outcome] of [[rejected, 'rejected'], [notFound, 'not-found']] as const) {
      const reply = await callRestore(gateway, transport, record?.id)
      t.equal(reply.status, transport === 'rest' ? 409 : 200)
      t.match(reply.error, { code: 'NOT_RESTORABLE', status: 409, outcome }, `${transport}: a ${outcome} deletion`)
    }
    const ofDryRun = await callRestore(gateway, transport, dryRun.body.auditId)
    t.equal(ofDryRun.result, undefined, `${transport}: a dry-run record is not restorable`)
    t.match(ofDryRun.error, { code: 'NOT_RESTORABLE', status: 409 }, `${transport}: a dry-run id`)
  }
  const dryRunRecord = await auditRecord(name, dryRun.body.auditId)
  t.match(dryRunRecord, { action: 'dry-run', outcome: 'dry-run', restorable: false })
  t.equal(dryRunRecord?.restoredBy, undefined, 'nothing was claimed')
  t.same((await listAudit(gateway, 'rest', { name, action: 'restore', outcome: 'restored' })).items, [])
  t.same(await headManifest(registry.url, name, 'one'), { status: 200, digest: (await headManifest(registry.url, name, 'two')).digest }, 'nothing changed')
})
