/**
 * Issue 13: approvals over REST and GraphQL. A dry-run's plan is approved by a second person holding `approve`,
 * then executed by the requester; against a real distribution 2.8.2.
 */
import t from 'tap'
import { request } from 'undici'
import { openSqliteAuditStore } from '../../src/audit/index.js'
import { PlanBook } from '../../src/images/approvals.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { ADMIN_KEY, sha256Hex, startGateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const KEYS = { second: 'rdg_test-second-requester-long-enough-04', requester: 'rdg_test-requester-key-long-enough-0001', approver: 'rdg_test-approver-key-long-enough-0002', other: 'rdg_test-other-key-long-enough-00003' }

const gateway = await startGateway(t, {
  registries: { default: { url: registry.url, defaultMode: 'auto' } },
  policy: `
apiKeys:
  - { name: admin, sha256: ${sha256Hex(ADMIN_KEY)} }
  - { name: requester, sha256: ${sha256Hex(KEYS.requester)} }
  - { name: approver, sha256: ${sha256Hex(KEYS.approver)} }
  - { name: other, sha256: ${sha256Hex(KEYS.other)} }
  - { name: second, sha256: ${sha256Hex(KEYS.second)} }
roles:
  admin:
    - { actions: ["*"], repositories: ["**"] }
  gated:
    - { actions: [delete, approve], repositories: ["plans/**"], approval: required }
  approver:
    - { actions: [approve], repositories: ["plans/**"] }
  other:
    - { actions: [read], repositories: ["plans/**"] }
bindings:
  - { role: admin, subjects: ["apikey:admin"] }
  - { role: gated, subjects: ["apikey:requester", "apikey:second"] }
  - { role: approver, subjects: ["apikey:approver"] }
  - { role: other, subjects: ["apikey:other"] }
`
})

async function tagsOf (name: string): Promise<string[]> {
  const response = await request(`${registry.url}/v2/${name}/tags/list`)
  const body = await response.body.json() as { tags: string[] | null }
  return (body.tags ?? []).sort()
}

t.test('REST: dry-run, refused without approval, self-approval refused, a second person approves, then it runs once', async t => {
  const image = await pushImage(target, 'plans/app', ['a'], 'schema2')
  const dry = await gateway.rest('DELETE', '/images/plans/app/a?dryRun=true', { key: KEYS.requester })
  t.match(dry, { status: 200, body: { allowed: false, reason: /^APPROVAL_REQUIRED: apikey:requester may delete plans\/app:a in registry default only once someone else/ } })
  const planId = dry.body.planId as string

  t.match(await gateway.rest('POST', `/plans/${planId}/execute`, { key: KEYS.requester }), { status: 403, body: { code: 'APPROVAL_REQUIRED' } })
  t.match(await gateway.rest('POST', `/plans/${planId}/approve`, { key: KEYS.other }), { status: 403, body: { code: 'FORBIDDEN', detail: /apikey:other may not approve plans\/app:a/ } })
  t.match(await gateway.rest('POST', `/plans/${planId}/approve`, { key: KEYS.requester }), { status: 200, body: { planId, approvedBy: 'apikey:requester' } })
  t.match(await gateway.rest('POST', `/plans/${planId}/execute`, { key: KEYS.requester }), { status: 403, body: { code: 'FORBIDDEN', detail: /may not approve a deletion of their own/ } })
  t.same(await tagsOf('plans/app'), ['a'], 'nothing ran yet')

  const approved = await gateway.rest('POST', `/plans/${planId}/approve`, { key: KEYS.approver })
  t.match(approved, { status: 200, body: { planId, requester: 'apikey:requester', approvedBy: 'apikey:approver', expiresAt: /^\d{4}-\d\d-\d\dT/ } })
  t.match(await gateway.rest('POST', `/plans/${planId}/execute`, { key: KEYS.second }), { status: 403, body: { code: 'APPROVAL_REQUIRED' } },
    'someone else who may delete with approval cannot use the requester\'s')
  const run = await gateway.rest('POST', `/plans/${planId}/execute`, { key: KEYS.requester })
  t.match(run, { status: 200, body: { planId, deleted: true, digest: image.digest, removedTags: ['a'] } })
  t.same(await tagsOf('plans/app'), [])
  t.match(await gateway.rest('POST', `/plans/${planId}/execute`, { key: KEYS.requester }), { status: 403, body: { code: 'APPROVAL_REQUIRED' } }, 'the approval was used: it ran once')

  const audit = await gateway.rest('GET', '/audit?name=plans%2Fapp&outcome=deleted')
  t.match(audit.body.items, [{ subject: 'apikey:requester', approvedBy: 'apikey:approver', decision: { reason: /; approved by apikey:approver: apikey:approver may approve plans\/app:a/ } }], 'the record names both')
  const approvals = await gateway.rest('GET', '/audit?name=plans%2Fapp&action=approve')
  t.match(approvals.body.items, [
    { subject: 'apikey:approver', action: 'approve', outcome: 'approved', tag: 'a', removedTags: [], decision: { allow: true, reason: new RegExp(`approves ${planId} of apikey:requester$`) } },
    { subject: 'apikey:requester', action: 'approve', outcome: 'approved' },
    { subject: 'apikey:other', action: 'approve', outcome: 'denied', errorCode: 'FORBIDDEN', decision: { allow: false } }
  ], 'every approval is audited when it is given (the self-approval is refused later, at execution), and so is a refused one')
})

t.test('REST: unknown and malformed plan ids', async t => {
  t.match(await gateway.rest('POST', `/plans/plan_${'0'.repeat(40)}/approve`, { key: KEYS.approver }), { status: 404, body: { code: 'NOT_FOUND', field: 'id' } })
  t.match(await gateway.rest('POST', '/plans/nope/execute', { key: KEYS.requester }), { status: 400, body: { code: 'INVALID_REQUEST', field: 'id', rule: 'plan-id' } })
  t.match(await gateway.rest('POST', `/plans/plan_${'0'.repeat(40)}/approve`, { key: null }), { status: 401 })
})

t.test('GraphQL: approvePlan and executePlan; an approved plan whose tag moved is refused with PLAN_STALE', async t => {
  await pushImage(target, 'plans/gql', ['b'], 'schema2')
  const dry = await gateway.rest('DELETE', '/images/plans/gql/b?dryRun=true', { key: KEYS.requester })
  const planId = dry.body.planId as string
  const approve = await gateway.gql('mutation($id: String!) { approvePlan(id: $id) { planId requester approvedBy expiresAt } }', { id: planId }, { key: KEYS.approver })
  t.match(approve.body.data.approvePlan, { planId, requester: 'apikey:requester', approvedBy: 'apikey:approver' })
  await pushImage(target, 'plans/gql', ['b'], 'schema2')
  const stale = await gateway.gql('mutation($id: String!) { executePlan(id: $id) { deleted } }', { id: planId }, { key: KEYS.requester })
  t.match(stale.body.errors[0].extensions, { code: 'PLAN_STALE' })
  const fresh = (await gateway.rest('DELETE', '/images/plans/gql/b?dryRun=true', { key: KEYS.requester })).body.planId as string
  await gateway.gql('mutation($id: String!) { approvePlan(id: $id) { planId } }', { id: fresh }, { key: KEYS.approver })
  const run = await gateway.gql('mutation($id: String!) { executePlan(id: $id) { deleted action removedTags } }', { id: fresh }, { key: KEYS.requester })
  t.same(run.body.data.executePlan, { deleted: true, action: 'DELETED_DIGEST', removedTags: ['b'] })
})

t.test('the plan book forgets plans and approvals after their TTL, keeps a bounded number, and hands an approval out once', async t => {
  const store = openSqliteAuditStore(':memory:')
  t.teardown(() => store.close())
  const book = new PlanBook({ ttlMs: 1000, capacity: 1, shared: store.shared })
  const plan = { id: 'plan_a', registry: 'default', repository: 'x', tag: 'y', mode: 'auto' as const, force: false }
  await book.remember(plan, 'apikey:a', 0)
  t.same(await book.find('plan_a', 999), { target: plan, requester: 'apikey:a', expires: 1000 })
  t.equal(await book.find('plan_a', 1000), undefined)
  t.equal(await book.approve('plan_a', 'apikey:a', { subject: 'apikey:b', groups: [], kind: 'apikey' }, 0), 1000)
  t.equal(await book.takeApproval('plan_a', 'apikey:c', 999), undefined, 'only for the requester')
  const approval = await book.takeApproval('plan_a', 'apikey:a', 999)
  t.match(approval, { approver: { subject: 'apikey:b' }, expires: 1000 })
  t.equal(await book.takeApproval('plan_a', 'apikey:a', 999), undefined, 'taken once')
  await book.putBackApproval('plan_a', 'apikey:a', approval!, 500)
  t.equal(await book.takeApproval('plan_a', 'apikey:a', 1000), undefined, 'put back with its own expiry')
  await book.remember(plan, 'apikey:a', 0)
  await book.remember({ ...plan, id: 'plan_b' }, 'apikey:a', 1)
  t.equal(await book.find('plan_a', 2), undefined, 'bounded: the older plan went')
  await store.close()
  const down = await book.find('plan_b', 2).catch((error: unknown) => error)
  t.match(down, { code: 'AUDIT_UNAVAILABLE' }, 'a store that cannot answer is a 503, not a 500')
})
