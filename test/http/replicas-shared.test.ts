/**
 * Issue 14: three gateways (apps) on one PostgreSQL database share what a caller could otherwise multiply by
 * spreading requests over replicas: the rate-limit budget, plans and approvals (an approved plan executed on two
 * replicas at once runs once), and the repository lock.
 */
import t, { type Test } from 'tap'
import { freePort } from '../../testing/ports.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { ADMIN_KEY, sha256Hex, startGateway, type Gateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(() => registry.stop())
const postgres = await startPostgres()
t.teardown(() => postgres.stop())

const KEYS = { requester: 'rdg_test-requester-key-long-enough-0001', approver: 'rdg_test-approver-key-long-enough-0002' }
const POLICY = `
apiKeys:
  - { name: admin, sha256: ${sha256Hex(ADMIN_KEY)} }
  - { name: requester, sha256: ${sha256Hex(KEYS.requester)} }
  - { name: approver, sha256: ${sha256Hex(KEYS.approver)} }
roles:
  admin:
    - { actions: ["*"], repositories: ["**"] }
  gated:
    - { actions: [read, delete], repositories: ["replicas/**"], approval: required }
  approver:
    - { actions: [approve], repositories: ["replicas/**"] }
bindings:
  - { role: admin, subjects: ["apikey:admin"] }
  - { role: gated, subjects: ["apikey:requester"] }
  - { role: approver, subjects: ["apikey:approver"] }
`

async function replicas (t: Test, count: number, url: string, config: Record<string, unknown> = {}): Promise<Gateway[]> {
  const gateways: Gateway[] = []
  for (let i = 0; i < count; i++) {
    gateways.push(await startGateway(t, { registries: { default: { url: registry.url, defaultMode: 'auto' } }, policy: POLICY, config: { audit: { driver: 'postgres', url }, ...config } }))
  }
  return gateways
}

t.test('three replicas on one database share one budget per caller', async t => {
  const gateways = await replicas(t, 3, await postgres.createDatabase('budget'), { limits: { requestsPerWindow: 5, windowMs: 60_000 } })
  const statuses: number[] = []
  for (let i = 0; i < 12; i++) statuses.push((await gateways[i % 3]!.rest('GET', '/me')).status)
  t.same(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429, 429, 429], 'five in all, not five per replica')
  const refused = await gateways[2]!.rest('GET', '/me')
  t.match(refused, { status: 429, body: { code: 'RATE_LIMITED' } })
  t.ok(Number(refused.headers['retry-after']) > 0 && Number(refused.headers['retry-after']) <= 60, 'Retry-After from the shared window')
  t.equal((await gateways[0]!.rest('GET', '/me', { key: KEYS.approver })).status, 200, 'another caller has a budget of its own')
})

t.test('database down: each replica counts in memory instead of failing or letting everything through', async t => {
  const [gateway] = await replicas(t, 1, `postgres://postgres@127.0.0.1:${await freePort()}/gone`, { limits: { requestsPerWindow: 3, windowMs: 60_000 } })
  const statuses: number[] = []
  for (let i = 0; i < 5; i++) statuses.push((await gateway!.rest('GET', '/me')).status)
  t.same(statuses, [200, 200, 200, 429, 429])
})

t.test('a plan made on one replica is approved on another and runs once when executed on two at the same time', async t => {
  const gateways = await replicas(t, 3, await postgres.createDatabase('plans'))
  const image = await pushImage({ url: registry.url }, 'replicas/app', ['a'], 'schema2')
  const dry = await gateways[0]!.rest('DELETE', '/images/replicas/app/a?dryRun=true', { key: KEYS.requester })
  const planId = dry.body.planId as string
  t.match(dry.body, { allowed: false, reason: /^APPROVAL_REQUIRED/ })
  t.match(await gateways[1]!.rest('POST', `/plans/${planId}/approve`, { key: KEYS.approver }), { status: 200, body: { requester: 'apikey:requester' } })
  const runs = await Promise.all([gateways[1]!, gateways[2]!].map(async gateway => await gateway.rest('POST', `/plans/${planId}/execute`, { key: KEYS.requester })))
  t.equal(runs.filter(run => run.status === 200).length, 1, 'one ran with the approval')
  t.match(runs.find(run => run.status === 200)?.body, { deleted: true, digest: image.digest })
  // The other found the approval taken (403), or, if it started only after the first had finished, the tag gone (404).
  t.match(runs.find(run => run.status !== 200)?.body, { code: /^(APPROVAL_REQUIRED|NOT_FOUND)$/ })
  const deleted = await gateways[0]!.rest('GET', '/audit?name=replicas/app&outcome=deleted')
  t.equal(deleted.body.items.length, 1, 'one deletion in the shared trail')
})
