// Pages of the audit trail over both transports, and the records a caller may not audit left out of them.
import t from 'tap'
import { pushImage } from '../../testing/seed.js'
import { AUDIT_QUERY, callRestore, listAllAudit, listAudit, TRANSPORTS } from '../fixtures/audit.js'
import { KEYS, startAuditSetup } from '../fixtures/audit-setup.js'

const { target, gateway } = await startAuditSetup(t)

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
