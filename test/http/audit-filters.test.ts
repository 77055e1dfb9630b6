// The audit trail's filters over both transports, and the 400s for bad filters and pages.
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { pushImage } from '../../testing/seed.js'
import { callRestore, listAudit, TRANSPORTS } from '../fixtures/audit.js'
import { KEYS, startAuditSetup } from '../fixtures/audit-setup.js'

const { target, gateway, deleteThroughGateway } = await startAuditSetup(t)

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
