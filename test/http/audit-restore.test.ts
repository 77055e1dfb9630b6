import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import pino from 'pino'
import t, { type Test } from 'tap'
import { buildApp } from '../../src/app.js'
import { openSqliteAuditStore } from '../../src/audit/index.js'
import type { AuditStore, NewAuditRecord } from '../../src/audit/types.js'
import { validateConfig } from '../../src/config/load.js'
import { startRegistry } from '../../src/demo/registry-process.js'
import { pushImage, tagManifest, type ImageKind, type PushedImage } from '../../src/demo/seed.js'
import { AUDIT_QUERY, callRestore, deleteInRegistry, headManifest, listAllAudit, listAudit, RESTORE_MUTATION, TRANSPORTS, type Transport } from '../fixtures/audit.js'
import { ADMIN_KEY, ADMIN_POLICY, sha256Hex, startGateway, type Gateway } from '../fixtures/gateway.js'

const KEYS = {
  admin: ADMIN_KEY,
  /** delete, force and audit everywhere, but no restore. */
  deleter: 'rdg_audit-restore-test-deleter-key-000001',
  /** restore and audit, but only on pr-* tags. */
  restorer: 'rdg_audit-restore-test-restorer-key-00002',
  /** audit only, and only on team-a/**. */
  teamAuditor: 'rdg_audit-restore-test-team-a-audit-0003'
} as const

const POLICY = `
apiKeys:
  - { name: admin, sha256: ${sha256Hex(KEYS.admin)} }
  - { name: deleter, sha256: ${sha256Hex(KEYS.deleter)}, groups: [ops] }
  - { name: restorer, sha256: ${sha256Hex(KEYS.restorer)} }
  - { name: team-auditor, sha256: ${sha256Hex(KEYS.teamAuditor)} }
roles:
  admin:
    - actions: ["*"]
      repositories: ["**"]
  deleter:
    - actions: [delete, force, audit]
      repositories: ["**"]
  pr-restorer:
    - actions: [restore, audit]
      repositories: ["**"]
      tags: ["pr-*"]
  team-a-auditor:
    - actions: [audit]
      repositories: ["team-a/**"]
bindings:
  - { role: admin, subjects: ["apikey:admin"] }
  - { role: deleter, subjects: ["keygroup:ops"] }
  - { role: pr-restorer, subjects: ["apikey:restorer"] }
  - { role: team-a-auditor, subjects: ["apikey:team-auditor"] }
`

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const auditDir = mkdtempSync(join(tmpdir(), 'rdg-audit-restore-'))
t.teardown(() => { rmSync(auditDir, { recursive: true, force: true }) })
const auditPath = join(auditDir, 'audit.db')
// `other` is the same registry under a second name, so the registry filter has two values to tell apart.
const registries = { default: { url: registry.url }, other: { url: registry.url } }
const gateway: Gateway = await startGateway(t, { registries, policy: POLICY, auditPath })

const KINDS: ImageKind[] = ['schema2', 'oci', 'oci-index', 'docker-list']

/** A deletion through the gateway (REST, admin); answers its audit id. */
async function deleteThroughGateway (t: Test, name: string, tag: string, query = ''): Promise<{ auditId: string, removedTags: string[] }> {
  const reply = await gateway.rest('DELETE', `/images/${name}/${tag}${query}`)
  t.equal(reply.status, 200, `deleted ${name}:${tag}`)
  t.equal(reply.body.deleted, true)
  return reply.body
}

/** The registry's own view: every tag answers 200 with the original digest. */
async function assertRestored (t: Test, registryUrl: string, name: string, tags: string[], digest: string): Promise<void> {
  for (const tag of tags) t.same(await headManifest(registryUrl, name, tag), { status: 200, digest }, `${name}:${tag} is back on ${digest.slice(0, 19)}`)
}

/** One record by id, read through the API (REST, admin). */
async function auditRecord (name: string, id: string, gw: Gateway = gateway): Promise<Record<string, any> | undefined> {
  const { items } = await listAllAudit(gw, 'rest', { name }, 200)
  return items.find(item => item.id === id)
}

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
      action: 'restore', outcome: 'denied', errorCode: 'FORBIDDEN', subject: 'apikey:deleter', groups: ['ops'], transport,
      tag: 'v1', digest: image.digest, decision: { allow: false, reason: /may not restore/ }
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

t.test('filters over both transports: subject, registry, name, tag, outcome, action, since, until', async t => {
  const name = 'filters/app'
  const otherName = 'filters/other'
  await pushImage(target, name, ['a1'], 'schema2')
  await pushImage(target, name, ['b1'], 'schema2')
  await pushImage(target, otherName, ['a1'], 'schema2')

  // Phase A
  const dry = await gateway.rest('DELETE', `/images/${name}/a1?dryRun=true`)
  t.equal(dry.status, 200)
  await sleep(5)
  const deletedOther = await deleteThroughGateway(t, name, 'a1', '?registry=other')
  await sleep(5)
  const boundary = new Date().toISOString()
  await sleep(5)
  // Phase B
  const byDeleter = await gateway.gql(`mutation { deleteImage(name: "${name}", tag: "b1") { auditId deleted } }`, {}, { key: KEYS.deleter })
  t.equal(byDeleter.body.data?.deleteImage.deleted, true)
  await sleep(5)
  t.equal((await gateway.rest('DELETE', `/images/${name}/nope`)).status, 404)
  await sleep(5)
  const restored = await callRestore(gateway, 'rest', deletedOther.auditId)
  t.equal(restored.result?.registry, 'other', 'a restore happens on the deletion\'s registry')
  await sleep(5)
  const denied = await callRestore(gateway, 'graphql', byDeleter.body.data.deleteImage.auditId, { key: KEYS.deleter })
  t.equal(denied.error?.code, 'FORBIDDEN')
  t.equal((await gateway.rest('DELETE', `/images/${otherName}/a1?dryRun=true`)).status, 200)

  const all = (await listAudit(gateway, 'rest', { name }, { limit: 200 })).items
  t.same(all.map(item => [item.action, item.outcome, item.tag, item.subject, item.registry, item.transport]), [
    ['restore', 'denied', 'b1', 'apikey:deleter', 'default', 'graphql'],
    ['restore', 'restored', 'a1', 'apikey:admin', 'other', 'rest'],
    ['delete', 'not-found', 'nope', 'apikey:admin', 'default', 'rest'],
    ['delete', 'deleted', 'b1', 'apikey:deleter', 'default', 'graphql'],
    ['delete', 'deleted', 'a1', 'apikey:admin', 'other', 'rest'],
    ['dry-run', 'dry-run', 'a1', 'apikey:admin', 'default', 'rest']
  ], 'every attempt on the name, newest first')
  const [deniedRestore, restore, notFound, deleterDelete, otherDelete, dryRun] = all.map(item => item.id as string)
  t.equal(dryRun, dry.body.auditId)
  t.equal(otherDelete, deletedOther.auditId)
  t.equal(restore, restored.result?.auditId)
  t.ok(all.every(item => item.name === name), 'the name filter keeps other repositories out')
  const b = all.find(item => item.id === deleterDelete)
  t.ok(b !== undefined && b.time > boundary, 'phase B is after the boundary')

  const cases: Array<[string, Record<string, string>, Array<string | undefined>]> = [
    ['subject', { subject: 'apikey:deleter' }, [deniedRestore, deleterDelete]],
    ['registry', { registry: 'other' }, [restore, otherDelete]],
    ['tag', { tag: 'a1' }, [restore, otherDelete, dryRun]],
    ['outcome deleted', { outcome: 'deleted' }, [deleterDelete, otherDelete]],
    ['outcome dry-run', { outcome: 'dry-run' }, [dryRun]],
    ['outcome not-found', { outcome: 'not-found' }, [notFound]],
    ['outcome denied', { outcome: 'denied' }, [deniedRestore]],
    ['outcome restored', { outcome: 'restored' }, [restore]],
    ['outcome pending', { outcome: 'pending' }, []],
    ['action delete', { action: 'delete' }, [notFound, deleterDelete, otherDelete]],
    ['action dry-run', { action: 'dry-run' }, [dryRun]],
    ['action restore', { action: 'restore' }, [deniedRestore, restore]],
    ['since (inclusive)', { since: boundary }, [deniedRestore, restore, notFound, deleterDelete]],
    ['until (exclusive)', { until: boundary }, [otherDelete, dryRun]],
    ['since and until', { since: boundary, until: all.find(item => item.id === restore)?.time }, [notFound, deleterDelete]],
    ['combined', { subject: 'apikey:admin', action: 'delete', since: boundary }, [notFound]],
    ['combined with registry and tag', { registry: 'other', tag: 'a1', action: 'delete' }, [otherDelete]],
    ['nothing matches', { subject: 'apikey:nobody' }, []]
  ]
  for (const transport of TRANSPORTS) {
    for (const [title, filter, expected] of cases) {
      const page = await listAudit(gateway, transport, { name, ...filter })
      t.equal(page.status, 200)
      t.same(page.items.map(item => item.id), expected, `${transport}: ${title}`)
      t.equal(page.next, undefined)
    }
    const other = await listAudit(gateway, transport, { name: otherName })
    t.same(other.items.map(item => [item.name, item.action]), [[otherName, 'dry-run']], `${transport}: name`)
    const bothNames = await listAudit(gateway, transport, { tag: 'a1', action: 'dry-run', since: all.at(-1)?.time })
    t.same(bothNames.items.map(item => item.name), [otherName, name], `${transport}: without a name filter both repositories show`)

    // since is inclusive and until exclusive at a record's exact time, whatever offset the time is written in.
    const at = all.find(item => item.id === deleterDelete)?.time as string
    const plusTwo = new Date(Date.parse(at) + 2 * 60 * 60 * 1000).toISOString().replace('Z', '+02:00')
    for (const written of [at, plusTwo]) {
      const since = await listAudit(gateway, transport, { name, since: written })
      t.ok(since.items.some(item => item.id === deleterDelete), `${transport}: since ${written} includes the record at that time`)
      const until = await listAudit(gateway, transport, { name, until: written })
      t.notOk(until.items.some(item => item.id === deleterDelete), `${transport}: until ${written} excludes it`)
      t.same([...until.items, ...since.items].map(item => item.id).sort(), all.map(item => item.id).sort(), 'adjacent windows cover everything once')
    }
  }

  // Both transports answer the same events, field for field.
  const rest = await listAudit(gateway, 'rest', { name })
  const graphql = await listAudit(gateway, 'graphql', { name })
  t.same(graphql.items, rest.items)
  t.match(graphql.edges?.[0]?.node, { action: 'restore', outcome: 'denied' })
  t.match((await listAudit(gateway, 'graphql', { name, action: 'dry-run' })).edges?.[0]?.node, { action: 'dry_run', outcome: 'dry_run' }, 'GraphQL enums use dry_run')
  t.match((await listAudit(gateway, 'graphql', { name, outcome: 'not-found' })).edges?.[0]?.node, { outcome: 'not_found' })
  t.equal(rest.items.find(item => item.id === otherDelete)?.manifest, undefined, 'the saved manifest bytes are never shown')
})

t.test('invalid filters and pages: 400 INVALID_REQUEST naming the field', async t => {
  const rest: Array<[string, string]> = [
    ['limit=0', 'limit'],
    ['limit=201', 'limit'],
    ['limit=two', 'limit'],
    ['cursor=garbage', 'cursor'],
    ['since=yesterday', 'since'],
    ['until=2024-13-45T00:00:00Z', 'until'],
    ['outcome=dry_run', 'outcome'],
    ['action=deleted', 'action'],
    ['subjekt=apikey:admin', 'subjekt']
  ]
  for (const [query, field] of rest) {
    const reply = await gateway.rest('GET', `/audit?${query}`)
    t.equal(reply.status, 400, query)
    t.match(reply.body, { code: 'INVALID_REQUEST', field }, query)
  }
  const graphql: Array<[Record<string, unknown>, string]> = [
    [{ first: 0 }, 'limit'],
    [{ first: 201 }, 'limit'],
    [{ after: 'garbage' }, 'cursor'],
    [{ filter: { since: 'yesterday' } }, 'since'],
    [{ filter: { until: 'not a time' } }, 'until']
  ]
  for (const [variables, field] of graphql) {
    const reply = await gateway.gql(`query ($filter: AuditFilter, $first: Int, $after: String) {
      auditEvents(filter: $filter, first: $first, after: $after) { edges { cursor } pageInfo { hasNextPage endCursor } } }`, variables)
    t.match(reply.body.errors?.[0]?.extensions, { code: 'INVALID_REQUEST', field }, JSON.stringify(variables))
    t.equal(reply.body.data, null)
  }
  const badEnum = await gateway.gql('{ auditEvents(filter: { outcome: dry-run }) { edges { cursor } } }')
  t.equal(badEnum.status, 400, 'a document GraphQL cannot parse is refused whole')
  t.equal(badEnum.body.errors?.[0]?.extensions?.code, 'INVALID_REQUEST')
  const unauthenticated = await gateway.rest('GET', '/audit', { key: null })
  t.equal(unauthenticated.status, 401)
})

t.test('pagination over both transports: limit/cursor and first/after with pageInfo', async t => {
  const name = 'pages/app'
  await pushImage(target, name, ['v1'], 'schema2')
  for (let i = 0; i < 7; i++) t.equal((await gateway.rest('DELETE', `/images/${name}/v1?dryRun=true`)).status, 200)
  const all = (await listAudit(gateway, 'rest', { name }, { limit: 200 })).items
  t.equal(all.length, 7)
  const ids = all.map(item => item.id as string)
  t.same(ids, [...ids].sort().reverse(), 'newest first')
  t.equal((await listAudit(gateway, 'rest', { name })).items.length, 7, 'the default page holds them all')
  const nulls = await gateway.gql(AUDIT_QUERY, { filter: { name, subject: null, outcome: null, action: null }, first: null, after: null })
  t.same(nulls.body.data.auditEvents.edges.map((edge: { node: { id: string } }) => edge.node.id), ids, 'GraphQL: explicit nulls mean no filter and the default page')
  t.same(nulls.body.data.auditEvents.pageInfo, { hasNextPage: false, endCursor: nulls.body.data.auditEvents.edges.at(-1).cursor }, 'endCursor is the last edge\'s cursor on the last page too')
  const nullFilter = await gateway.gql(AUDIT_QUERY, { filter: null, first: 1 })
  t.equal(nullFilter.body.data.auditEvents.edges.length, 1)
  t.equal(nullFilter.body.data.auditEvents.pageInfo.hasNextPage, true, 'a null filter is the whole trail')

  for (const transport of TRANSPORTS) {
    for (const [limit, sizes] of [[1, [1, 1, 1, 1, 1, 1, 1]], [2, [2, 2, 2, 1]], [3, [3, 3, 1]], [6, [6, 1]], [7, [7]], [8, [7]]] as const) {
      const { items, pages } = await listAllAudit(gateway, transport, { name }, limit)
      t.same(items.map(item => item.id), ids, `${transport} limit ${limit}: every record once, in order`)
      t.same(pages.map(page => page.items.length), sizes, `${transport} limit ${limit}: full pages until the last`)
      t.equal(pages.at(-1)?.next, undefined, 'the last page says there is no more')
      if (transport === 'graphql') {
        for (const page of pages.slice(0, -1)) {
          t.equal(page.pageInfo?.hasNextPage, true)
          t.equal(page.pageInfo?.endCursor, page.edges?.at(-1)?.cursor, 'endCursor is the last edge\'s cursor')
        }
        t.equal(pages.at(-1)?.pageInfo?.hasNextPage, false)
      }
    }
    // Any edge's cursor continues after that edge; REST and GraphQL cursors are interchangeable.
    const graphqlPage = await listAudit(gateway, 'graphql', { name }, { limit: 7 })
    const third = graphqlPage.edges?.[2]?.cursor as string
    const after = await listAudit(gateway, transport, { name }, { cursor: third, limit: 2 })
    t.same(after.items.map(item => item.id), ids.slice(3, 5), `${transport}: after the third edge`)
    const restPage = await listAudit(gateway, 'rest', { name }, { limit: 4 })
    const continued = await listAudit(gateway, transport, { name }, { cursor: restPage.next })
    t.same(continued.items.map(item => item.id), ids.slice(4), `${transport}: continues a REST page`)
    // Filters and pages combine: a page is filled with matching records only.
    const filtered = await listAllAudit(gateway, transport, { name, action: 'dry-run', since: all[5]?.time }, 2)
    t.same(filtered.items.map(item => item.id), ids.slice(0, 6))
  }
})

t.test('records of repositories the caller may not audit are hidden, without breaking pages', async t => {
  for (const team of ['team-a', 'team-b']) await pushImage(target, `${team}/app`, ['v1'], 'schema2')
  const mine: string[] = []
  for (let i = 0; i < 3; i++) {
    for (const team of ['team-a', 'team-b']) {
      const reply = await gateway.rest('DELETE', `/images/${team}/app/v1?dryRun=true`)
      if (team === 'team-a') mine.push(reply.body.auditId)
    }
  }
  mine.reverse()
  for (const transport of TRANSPORTS) {
    const seen = await listAudit(gateway, transport, {}, { key: KEYS.teamAuditor, limit: 200 })
    t.equal(seen.status, 200)
    t.same(seen.items.map(item => item.id), mine, `${transport}: only team-a records, out of the whole trail`)
    const paged = await listAllAudit(gateway, transport, {}, 1, KEYS.teamAuditor)
    t.same(paged.items.map(item => item.id), mine, `${transport}: one visible record per page`)
    t.same(paged.pages.map(page => page.items.length), [1, 1, 1], 'hidden records neither fill pages nor make empty ones')
    const asked = await listAudit(gateway, transport, { name: 'team-b/app' }, { key: KEYS.teamAuditor })
    t.same(asked.items, [], `${transport}: asking for a hidden name shows nothing`)
    t.equal(asked.next, undefined)
    const admin = await listAudit(gateway, transport, { name: 'team-b/app' })
    t.equal(admin.items.length, 3, 'an admin sees them')
  }
  const restore = await callRestore(gateway, 'rest', mine[0] as string, { key: KEYS.teamAuditor })
  t.equal(restore.error?.code, 'FORBIDDEN', 'an auditor may not restore, whatever the record')
})

t.test('records left pending by a crash are reconciled at the next start', async t => {
  const name = 'pending/app'
  const store = openSqliteAuditStore(auditPath)
  t.teardown(async () => { await store.close() })
  const pendingDelete = (image: PushedImage, tag: string): NewAuditRecord => ({
    requestId: `crash-${tag}`, transport: 'rest', subject: 'apikey:admin', groups: [], action: 'delete', registry: 'default',
    name, tag, digest: image.digest, mediaType: image.mediaType, removedTags: [tag],
    decision: { allow: true, reason: 'simulated crash between the write-ahead record and the DELETE' },
    outcome: 'pending', manifest: image.manifest
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
      requestId: `crash-restore-${tag}`, transport: 'graphql', subject: 'apikey:admin', groups: [], action: 'restore', registry: 'default',
      name, tag, digest: image.digest, mediaType: image.mediaType, removedTags: [tag], decision: { allow: true, reason: 'simulated' }, outcome: 'pending'
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
