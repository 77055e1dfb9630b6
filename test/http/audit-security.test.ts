import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { openSqliteAuditStore } from '../../src/audit/index.js'
import type { NewAuditRecord } from '../../src/audit/types.js'
import { callRestore, TRANSPORTS } from '../fixtures/audit.js'
import { ADMIN_KEY, sha256Hex, startGateway } from '../fixtures/gateway.js'

// Attacks on the audit trail and undo, made by callers the policy gives little or nothing. No registry is
// needed: every refusal here happens before the gateway would contact one.
const KEYS = {
  /** delete on elsewhere/** only: no audit, no restore. */
  outsider: 'rdg_audit-security-test-outsider-key-0001',
  /** bound to no role at all. */
  roleless: 'rdg_audit-security-test-roleless-key-0002',
  /** audit only, on team-a/**. */
  teamAuditor: 'rdg_audit-security-test-team-a-audit-003'
} as const

const POLICY = `
apiKeys:
  - { name: admin, sha256: ${sha256Hex(ADMIN_KEY)} }
  - { name: outsider, sha256: ${sha256Hex(KEYS.outsider)} }
  - { name: roleless, sha256: ${sha256Hex(KEYS.roleless)} }
  - { name: team-auditor, sha256: ${sha256Hex(KEYS.teamAuditor)} }
roles:
  admin:
    - actions: ["*"]
      repositories: ["**"]
  elsewhere:
    - actions: [delete]
      repositories: ["elsewhere/**"]
  team-a-auditor:
    - actions: [audit]
      repositories: ["team-a/**"]
bindings:
  - { role: admin, subjects: ["apikey:admin"] }
  - { role: elsewhere, subjects: ["apikey:outsider"] }
  - { role: team-a-auditor, subjects: ["apikey:team-auditor"] }
`

const dir = mkdtempSync(join(tmpdir(), 'rdg-audit-security-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
const auditPath = join(dir, 'audit.db')
const gateway = await startGateway(t, { registries: { default: { url: 'http://127.0.0.1:9' } }, policy: POLICY, auditPath })
const store = openSqliteAuditStore(auditPath)
t.teardown(async () => { await store.close() })

function deletion (name: string, tag: string, overrides: Partial<NewAuditRecord> = {}): NewAuditRecord {
  return {
    requestId: 'seed',
    transport: 'rest',
    subject: 'apikey:admin',
    groups: [],
    action: 'delete',
    registry: 'default',
    name,
    tag,
    digest: `sha256:${'c'.repeat(64)}`,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    removedTags: [tag],
    decision: { allow: true, reason: 'seeded' },
    outcome: 'deleted',
    manifest: Buffer.from('{"schemaVersion":2}'),
    ...overrides
  }
}

/** The answer with what necessarily differs between two ids (the request id, the id itself) blanked out. */
function comparable (body: unknown, id: string): unknown {
  return JSON.parse(JSON.stringify(body).replaceAll(id, '<id>').replace(/"requestId":"[^"]*"/g, '"requestId":"<request>"'))
}

t.test('finding 10: a caller who may neither audit nor restore the image gets the unknown-id 404 for a real deletion', async t => {
  const secret = await store.append(deletion('secret/payroll', 'v7', { removedTags: ['v7', 'prod'] }))
  const unknown = '01ARZ3NDEKTSV4RRFFQ69G5FAV'
  for (const transport of TRANSPORTS) {
    for (const key of [KEYS.outsider, KEYS.roleless, KEYS.teamAuditor]) {
      const real = await callRestore(gateway, transport, secret.id, { key })
      const fake = await callRestore(gateway, transport, unknown, { key })
      t.equal(real.status, fake.status, `${transport}: same status`)
      t.match(real.error, { code: 'NOT_FOUND', status: 404 })
      t.same(comparable(real.body, secret.id), comparable(fake.body, unknown), `${transport}: same body`)
      t.notMatch(JSON.stringify(real.body), /secret|payroll|v7|prod/, 'nothing about the deletion shows')
    }
  }
  t.same((await store.list({ action: 'restore' }, { limit: 10 })).items, [], 'probing leaves no record to grow the trail with')
  const admin = await callRestore(gateway, 'rest', secret.id)
  t.not(admin.error?.code, 'NOT_FOUND', 'a caller who may restore still finds it')
})

t.test('finding 1: a caller no rule lets audit is refused at once, over both transports', async t => {
  for (const key of [KEYS.outsider, KEYS.roleless]) {
    const rest = await gateway.rest('GET', '/audit?limit=1', { key })
    t.equal(rest.status, 403)
    t.match(rest.body, { code: 'FORBIDDEN', action: 'audit', detail: /may not audit anything/ })
    const graphql = await gateway.gql('{ auditEvents(first: 1) { edges { cursor } } }', {}, { key })
    t.match(graphql.body.errors?.[0]?.extensions, { code: 'FORBIDDEN', status: 403, action: 'audit' })
  }
  const auditor = await gateway.rest('GET', '/audit?limit=1', { key: KEYS.teamAuditor })
  t.equal(auditor.status, 200, 'audit on some repositories is enough to ask')
})

t.test('finding 1: one GraphQL document asks for auditEvents once, and fields count after fragments are expanded', async t => {
  const twice = await gateway.gql('{ a: auditEvents(first: 1) { edges { cursor } } b: auditEvents(first: 1) { edges { cursor } } }')
  t.equal(twice.status, 400)
  t.match(twice.body.errors?.[0], { message: /auditEvents 2 times.*maxAuditEventsPerDocument/, extensions: { code: 'INVALID_REQUEST' } })
  const viaFragment = await gateway.gql('query { ...A ...B } fragment A on Query { auditEvents(first: 1) { edges { cursor } } } fragment B on Query { x: auditEvents(first: 1) { edges { cursor } } }')
  t.match(viaFragment.body.errors?.[0], { message: /auditEvents 2 times/ }, 'fragments do not hide a second one')
  const once = await gateway.gql('{ ...A } fragment A on Query { auditEvents(first: 1) { edges { cursor } } }')
  t.equal(once.status, 200)
  t.equal(once.body.errors, undefined)

  // 60 aliases of one fragment: 63 fields written, 240 run (the default cap is 200).
  const aliases = Array.from({ length: 60 }, (_, index) => `m${index}: me { ...Who }`).join(' ')
  const wide = await gateway.gql(`{ ${aliases} } fragment Who on Me { subject groups roles }`)
  t.equal(wide.status, 400)
  t.match(wide.body.errors?.[0], { message: /more than 200 fields once fragments are expanded/ })
  const cyclic = await gateway.gql('{ me { ...A } } fragment A on Me { subject ...B } fragment B on Me { roles ...A }')
  t.equal(cyclic.status, 400, 'a cycle is refused by graphql\'s own rule, and counting terminates')
})

t.test('finding 9: the audit record keeps the gateway\'s request id; the caller\'s goes to clientRequestId, if well-formed', async t => {
  const forged = (await store.list({}, { limit: 1 })).items[0]?.requestId ?? 'some-earlier-id'
  const sent: Array<[string, string | undefined]> = [
    [forged, forged],
    ['trace:abc.123_x-y', 'trace:abc.123_x-y'],
    ['x'.repeat(128), 'x'.repeat(128)],
    ['x'.repeat(129), undefined],
    ['spaces are dropped', undefined],
    ['quote"and<tags>', undefined]
  ]
  for (const [header, kept] of sent) {
    const reply = await gateway.app.inject({ method: 'DELETE', url: '/images/nowhere/app/v1', headers: { 'x-api-key': KEYS.roleless, 'x-request-id': header } })
    t.equal(reply.statusCode, 403)
    const requestId = reply.headers['x-request-id'] as string
    t.match(requestId, /^[0-9a-f-]{36}$/, 'the gateway\'s id, echoed')
    t.not(requestId, header)
    const [record] = (await gateway.rest('GET', '/audit?name=nowhere/app&limit=1')).body.items
    t.equal(record.requestId, requestId, 'the record carries the gateway\'s id')
    t.equal(record.clientRequestId, kept, `clientRequestId for ${JSON.stringify(header.slice(0, 20))}`)
  }
  const graphql = await gateway.app.inject({ method: 'POST', url: '/graphql', headers: { 'x-api-key': KEYS.roleless, 'x-request-id': 'gql-trace-1' }, payload: { query: 'mutation { deleteImage(name: "nowhere/app", tag: "v2") { digest } }' } })
  t.equal(graphql.json().errors[0].extensions.code, 'FORBIDDEN')
  const events = await gateway.gql('{ auditEvents(filter: { name: "nowhere/app", tag: "v2" }) { edges { node { requestId clientRequestId } } } }')
  t.same(events.body.data.auditEvents.edges[0].node, { requestId: graphql.headers['x-request-id'], clientRequestId: 'gql-trace-1' })
})

t.test('finding 9: a restore records the caller\'s id beside the gateway\'s too', async t => {
  const earlier = await store.append(deletion('trace/app', 'v1'))
  const reply = await gateway.app.inject({ method: 'POST', url: `/deletions/${earlier.id}/restore`, headers: { 'x-api-key': ADMIN_KEY, 'x-request-id': 'restore-trace-1' } })
  t.not(reply.statusCode, 200, 'the registry is unreachable: the restore fails, but it was attempted')
  const restores = (await store.list({ action: 'restore', name: 'trace/app' }, { limit: 10 })).items
  t.equal(restores.length, 1, 'the attempt is recorded')
  t.match(restores[0], { requestId: reply.headers['x-request-id'], clientRequestId: 'restore-trace-1' })
})
