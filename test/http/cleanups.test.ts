/** POST /cleanups, GET /cleanups/<id>, POST /retention/<name>/plan and GraphQL planCleanup against a real registry. */
import t from 'tap'
import { fieldOf, planRetentionPolicy, type CleanupDeps } from '../../src/cleanups/cleanups.js'
import { REGEX_RULE, REPETITION_RULE } from '../../src/cleanups/rules.js'
import { rejection } from '../fixtures/rejection.js'
import { startRegistry } from '../../testing/registry-process.js'
import { daysBefore, pushCreated } from '../fixtures/cleanup-seed.js'
import { ADMIN_KEY, countingDispatcher, sha256Hex, startGateway, type Gateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const NAME = 'web/app'
const now = Date.now()
for (const [tag, days] of [['pr-1', 30], ['pr-2', 20], ['pr-3', 10]] as const) await pushCreated({ url: registry.url }, NAME, [tag], daysBefore(now, days))
await pushCreated({ url: registry.url }, NAME, ['main', 'latest'], daysBefore(now, 40))
const OTHER = 'api/svc'
await pushCreated({ url: registry.url }, OTHER, ['pr-9'], daysBefore(now, 30))

const KEYS = {
  ci: 'rdg_cleanup-test-ci-key-00000000000001',
  reader: 'rdg_cleanup-test-reader-key-000000002',
  auditor: 'rdg_cleanup-test-auditor-key-00000003',
  webAuditor: 'rdg_cleanup-test-web-auditor-key-000004',
  apiAuditor: 'rdg_cleanup-test-api-auditor-key-000005'
}
const POLICY = `
apiKeys:
  - { name: admin, sha256: ${sha256Hex(ADMIN_KEY)} }
  - { name: ci, sha256: ${sha256Hex(KEYS.ci)} }
  - { name: reader, sha256: ${sha256Hex(KEYS.reader)} }
  - { name: auditor, sha256: ${sha256Hex(KEYS.auditor)} }
  - { name: web-auditor, sha256: ${sha256Hex(KEYS.webAuditor)} }
  - { name: api-auditor, sha256: ${sha256Hex(KEYS.apiAuditor)} }
roles:
  admin: [{ actions: ["*"], repositories: ["**"] }]
  ci: [{ actions: [delete], repositories: ["web/**"], tags: ["pr-*"] }, { actions: [read], repositories: ["web/**"] }]
  reader: [{ actions: [read], repositories: ["**"] }]
  auditor: [{ actions: [audit, read], repositories: ["**"] }]
  web-auditor: [{ actions: [audit, read, admin], repositories: ["web/**"], tags: ["pr-*", "main"] }]
  api-auditor: [{ actions: [audit, read], repositories: ["api/**"] }]
bindings:
  - { role: admin, subjects: ["apikey:admin"] }
  - { role: ci, subjects: ["apikey:ci"] }
  - { role: reader, subjects: ["apikey:reader"] }
  - { role: auditor, subjects: ["apikey:auditor"] }
  - { role: web-auditor, subjects: ["apikey:web-auditor"] }
  - { role: api-auditor, subjects: ["apikey:api-auditor"] }
protectedTags:
  - { tags: ["latest"] }
`
const RETENTION = {
  policies: [
    { name: 'previews', repositories: [NAME], rules: { select: [{ glob: 'pr-*' }], keep: { newest: 1 } } },
    { name: 'old-previews', registry: 'default', repositories: ['web/*'], rules: { select: [{ glob: 'pr-*' }], deleteOlderThan: '15d' } }
  ]
}
const counted = countingDispatcher(t)
/** Holds tag listings while `held` is set: plans stay in flight for as long as a test needs. */
const gate: { held?: Promise<void>, waiting: number } = { waiting: 0 }
const gated = counted.dispatcher.compose(dispatch => (options, handler) => {
  if (gate.held === undefined || !options.path.includes('/tags/list')) return dispatch(options, handler)
  gate.waiting++
  void gate.held.then(() => dispatch(options, handler))
  return true
})
const gateway: Gateway = await startGateway(t, {
  registries: { default: { url: registry.url } },
  policy: POLICY,
  dispatcher: gated,
  config: { retention: RETENTION }
})
const RULES = { select: [{ glob: 'pr-*' }, { glob: 'main' }, { glob: 'latest' }], keep: { newest: 2 } }

async function tagsNow (): Promise<string[]> {
  const response = await fetch(`${registry.url}/v2/${NAME}/tags/list`)
  return ((await response.json()) as { tags: string[] }).tags.sort()
}

t.test('POST /cleanups plans and keeps; GET shows it to its maker and to auditors only; nothing is deleted', async t => {
  const reply = await gateway.rest('POST', '/cleanups', { body: { repositories: [NAME], rules: RULES } })
  t.equal(reply.status, 201)
  t.equal(reply.headers.location, `/cleanups/${reply.body.id as string}`)
  const plan = reply.body
  const outcomes = Object.fromEntries((plan.entries as Array<{ tag: string, outcome: string, rule: string }>).map(entry => [entry.tag, `${entry.outcome} ${entry.rule}`]))
  t.same(outcomes, { latest: 'keep protected', main: 'remove select[1]', 'pr-1': 'remove select[0]', 'pr-2': 'keep keep.newest', 'pr-3': 'keep keep.newest' })
  t.match(plan.entries.find((entry: { tag: string }) => entry.tag === 'main'), { plan: { action: 'untagged', sharedWith: ['latest'], mode: 'auto', strategy: 'swap' } })
  t.match(plan, { state: 'planned', registry: 'default', createdBy: 'apikey:admin', totals: { repositories: 1, tags: 5, remove: 2, keep: 3, refuse: 0, deletedDigests: 1, untagged: 1 } })
  t.same(await tagsNow(), ['latest', 'main', 'pr-1', 'pr-2', 'pr-3'], 'planning deletes nothing')

  const again = await gateway.rest('GET', `/cleanups/${plan.id as string}`)
  t.equal(again.status, 200)
  t.same(again.body, plan, 'the plan as it was made: the answer to POST is the JSON kept, with no field the schema leaves out')
  t.equal(reply.headers['content-type'], 'application/json; charset=utf-8')
  t.equal((await gateway.rest('GET', `/cleanups/${plan.id as string}`, { key: KEYS.auditor })).status, 200, 'an auditor may look')
  const stranger = await gateway.rest('GET', `/cleanups/${plan.id as string}`, { key: KEYS.ci })
  t.match(stranger, { status: 404, body: { code: 'NOT_FOUND' } }, 'anyone else is told it does not exist')
  t.match(await gateway.rest('GET', `/cleanups/cleanup_${'0'.repeat(32)}`), { status: 404, body: { code: 'NOT_FOUND' } })
})

t.test('someone else who may audit sees only the entries of the images they may audit, in REST and GraphQL', async t => {
  const made = await gateway.rest('POST', '/cleanups', { body: { repositories: [NAME, OTHER], rules: { select: [{ glob: 'pr-*' }, { glob: 'main' }] } } })
  t.match(made.body.totals, { repositories: 2, tags: 6, remove: 5, keep: 1, hiddenTags: 0 })
  const id = made.body.id as string
  const web = await gateway.rest('GET', `/cleanups/${id}`, { key: KEYS.webAuditor })
  t.equal(web.status, 200)
  t.same([...new Set(web.body.entries.map((entry: { repository: string }) => entry.repository))], [NAME], 'only web/app')
  t.match(web.body.totals, { repositories: 1, tags: 4, remove: 4, keep: 0, refuse: 0, untagged: 1, hiddenTags: 2 })
  t.match(web.body.entries.find((entry: { tag: string }) => entry.tag === 'main').plan, { action: 'untagged', sharedWith: [], hiddenTags: 1 }, 'latest is not named')
  const api = await gateway.rest('GET', `/cleanups/${id}`, { key: KEYS.apiAuditor })
  t.same(api.body.entries.map((entry: { repository: string, tag: string }) => `${entry.repository}:${entry.tag}`), [`${OTHER}:pr-9`])
  t.match(api.body.totals, { repositories: 1, tags: 1, remove: 1, keep: 0, deletedDigests: 1, hiddenTags: 5 })
  const query = 'query Show($id: String!) { cleanup(id: $id) { entries { repository tag } totals { tags hiddenTags } } }'
  const shown = await gateway.gql(query, { id }, { key: KEYS.apiAuditor })
  t.same(shown.body.data.cleanup, { entries: [{ repository: OTHER, tag: 'pr-9' }], totals: { tags: 1, hiddenTags: 5 } })
  t.same((await gateway.gql(query, { id }, { key: KEYS.auditor })).body.data.cleanup.totals, { tags: 6, hiddenTags: 0 }, 'an auditor of both sees all')
  // web-auditor holds admin on every web/app tag, yet part of the plan is hidden from it: it runs none of it.
  const run = await gateway.rest('POST', `/cleanups/${id}/execute`, { key: KEYS.webAuditor, body: {} })
  t.match(run, { status: 403, body: { code: 'FORBIDDEN', detail: /holds 2 entries whose images apikey:web-auditor may not audit/ } })
  const onlyWeb = await gateway.rest('POST', '/cleanups', { body: { repositories: [NAME], rules: { select: [{ glob: 'pr-*' }] } } })
  t.match(await gateway.rest('GET', `/cleanups/${onlyWeb.body.id as string}`, { key: KEYS.apiAuditor }), { status: 404, body: { code: 'NOT_FOUND' } },
    'a plan none of whose images the caller may audit does not exist for it')
  t.same(await tagsNow(), ['latest', 'main', 'pr-1', 'pr-2', 'pr-3'], 'nothing ran')
})

t.test('one caller plans at most cleanups.plansPerCaller cleanups at once; a further one is 429 at once', async t => {
  let release = (): void => {}
  gate.held = new Promise(resolve => { release = resolve })
  gate.waiting = 0
  const body = { repositories: [NAME], rules: { select: [{ glob: 'pr-*' }] } }
  const first = gateway.rest('POST', '/cleanups', { body })
  const second = gateway.rest('POST', '/cleanups', { body })
  while (gate.waiting < 2) await new Promise(resolve => setTimeout(resolve, 5))
  const third = await gateway.rest('POST', '/cleanups', { body })
  t.match(third, { status: 429, headers: { 'retry-after': '1' }, body: { code: 'RATE_LIMITED', detail: /apikey:admin already has 2 cleanups being planned.*cleanups\.plansPerCaller/ } })
  const named = await gateway.rest('POST', '/retention/previews/plan')
  t.equal(named.status, 429, 'a retention policy\'s plan counts too')
  gate.held = undefined
  release()
  t.same([(await first).status, (await second).status], [201, 201])
  t.equal((await gateway.rest('POST', '/cleanups', { body })).status, 201, 'once they end, the caller plans again')
})

t.test('a key that may delete only pr-* is refused main in the policy\'s words', async t => {
  const reply = await gateway.rest('POST', '/cleanups', { key: KEYS.ci, body: { registry: 'default', repositories: ['web/**'], rules: { select: [{ glob: 'main' }, { glob: 'pr-1' }] } } })
  t.equal(reply.status, 201)
  const main = reply.body.entries.find((entry: { tag: string }) => entry.tag === 'main')
  t.match(main, { outcome: 'refuse', rule: 'select[0]', reason: /^apikey:ci may not delete web\/app:main in registry default: no rule of roles \[ci\] allows delete on tag main/ })
  t.notOk('plan' in main)
  t.match(reply.body.totals, { refuse: 1, remove: 1 })
})

t.test('POST /retention/<name>/plan plans a configured policy; an unknown name is 404', async t => {
  const reply = await gateway.rest('POST', '/retention/previews/plan')
  t.equal(reply.status, 201)
  t.match(reply.body, { policy: 'previews', repositories: [NAME], rules: RETENTION.policies[0]?.rules, totals: { remove: 2, keep: 3 } })
  t.same((await gateway.rest('GET', `/cleanups/${reply.body.id as string}`)).body, reply.body, 'answered as kept')
  const old = await gateway.rest('POST', '/retention/old-previews/plan', { key: KEYS.ci })
  t.match(old, { status: 201, body: { policy: 'old-previews', registry: 'default', createdBy: 'apikey:ci', totals: { remove: 2, keep: 3 } } })
  const unknown = await gateway.rest('POST', '/retention/nightly/plan')
  t.match(unknown, { status: 404, body: { code: 'NOT_FOUND', detail: 'no retention policy is named "nightly"; ask an operator for the names configured.' } })
  const none = await rejection(planRetentionPolicy({ retention: [] } as unknown as CleanupDeps, { identity: { subject: 'apikey:x', groups: [], kind: 'apikey' }, context: { requestId: 'r', transport: 'rest' }, name: 'any', signal: AbortSignal.timeout(1000) }))
  t.notMatch(unknown.body.detail, /previews/, 'the configured names are not told')
  t.equal(none.detail, 'no retention policy is named "any"; ask an operator for the names configured.')
})

t.test('refusals: a read-only key, bad and catastrophic regexes, unknown fields, a bad id; none reaches the registry', async t => {
  const before = counted.requests.length
  const readOnly = await gateway.rest('POST', '/cleanups', { key: KEYS.reader, body: { repositories: [NAME], rules: {} } })
  t.match(readOnly, { status: 403, body: { code: 'FORBIDDEN', detail: /^apikey:reader may delete no tag anywhere/ } })
  const cases: Array<[object | undefined, string, string | RegExp]> = [
    [{ repositories: [NAME], rules: { select: [{ regex: '(' }] } }, 'rules.select[0].regex', REGEX_RULE],
    [{ repositories: [NAME], rules: { exclude: [{ regex: '^(a+)+\\1$' }] } }, 'rules.exclude[0].regex', REGEX_RULE],
    [{ repositories: [NAME], rules: { keep: { tags: [{ regex: '(?=(a+)+b)' }] } } }, 'rules.keep.tags[0].regex', REGEX_RULE],
    [{ repositories: [NAME], rules: { colour: 'red' } }, 'rules', 'no field colour'],
    [{ repositories: [NAME], rules: { select: [{ regex: '(?:[a-z]{0,1000}){1}'.repeat(49) }] } }, 'rules.select[0].regex', REPETITION_RULE],
    [{ repositories: [NAME], rules: { select: Array.from({ length: 100 }, () => ({ regex: '^a' })) } }, 'rules.select[20].regex', 'at most 20 regexes per cleanup'],
    [{ repositories: [], rules: {} }, 'repositories', /fewer than 1|at least 1|minItems|1 items/],
    [{ repositories: [NAME], rules: { deleteOlderThan: 'two weeks' } }, 'rules.deleteOlderThan', /pattern/],
    [{ repositories: [NAME], rules: { select: [{ semver: 'newest' }] } }, 'rules.select[0].semver', 'a semver range (npm syntax)'],
    [{ repositories: ['Bad_Name'], rules: {} }, 'repositories[0]', 'a repository name or glob'],
    [{ repositories: [NAME, ''], rules: {} }, 'repositories[1]', /fewer than 1|at least 1|minLength|1 char/],
    [undefined, 'body', /object/]
  ]
  for (const [body, field, rule] of cases) {
    const reply = await gateway.rest('POST', '/cleanups', body === undefined ? {} : { body })
    t.equal(reply.status, 400, JSON.stringify(body))
    t.match(reply.body, { code: 'INVALID_REQUEST', field, rule }, JSON.stringify(body))
  }
  t.equal(fieldOf('/rules/select/0/regex'), 'rules.select[0].regex')
  t.equal(fieldOf('/a~1b/c~0d/~01'), 'a/b.c~d.~1', 'JSON-pointer escapes are undone, ~1 before ~0')
  t.match(await gateway.rest('GET', '/cleanups/not-an-id'), { status: 400, body: { code: 'INVALID_REQUEST', field: 'id' } })
  t.equal(counted.requests.length, before, 'no registry request for any of them')
})

const PLAN_MUTATION = `mutation Plan($repositories: [String!]!, $rules: CleanupRulesInput!, $registry: String) {
  planCleanup(registry: $registry, repositories: $repositories, rules: $rules) {
    id state registry repositories policy createdBy createdAt
    rules { select { glob regex semver } exclude { glob } groupBy { regex capture } keep { tags { glob } newest newerThan } deleteOlderThan referrers orphanedReferrers }
    entries { repository tag digest mediaType created outcome rule reason sequence
      plan { id registry repository tag digest mediaType mode force action strategy removedTags sharedWith referencedBy { digest tags } decisions { action tag allow reason } hiddenTags } }
    totals { repositories tags remove keep refuse deletedDigests untagged hiddenTags }
  }
}`

t.test('GraphQL planCleanup, cleanup(id) and planRetention answer what REST does', async t => {
  const rules = { ...RULES, groupBy: null, referrers: 'delete', orphanedReferrers: null }
  const reply = await gateway.gql(PLAN_MUTATION, { repositories: [NAME], rules, registry: null })
  t.equal(reply.status, 200, JSON.stringify(reply.body.errors))
  const plan = reply.body.data.planCleanup
  t.match(plan, { state: 'planned', rules: { select: [{ glob: 'pr-*' }, { glob: 'main' }, { glob: 'latest' }], referrers: 'delete', groupBy: null }, totals: { remove: 2 } })
  t.match(plan.entries.find((entry: { tag: string }) => entry.tag === 'main'), { outcome: 'remove', plan: { mode: 'AUTO', action: 'UNTAGGED', strategy: 'SWAP' } })
  t.match(plan.entries.find((entry: { tag: string }) => entry.tag === 'pr-1'), { plan: { action: 'DELETED_DIGEST', strategy: 'DIGEST' } })
  t.equal(plan.entries.find((entry: { tag: string }) => entry.tag === 'latest').plan, null)

  const shown = await gateway.gql('query Show($id: String!) { cleanup(id: $id) { id totals { remove } entries { tag plan { action } } } }', { id: plan.id })
  t.match(shown.body.data.cleanup, { id: plan.id, totals: { remove: 2 } })
  t.ok(shown.body.data.cleanup.entries.some((entry: { plan: { action: string } | null }) => entry.plan?.action === 'DELETED_DIGEST'))

  const named = await gateway.gql('mutation { planRetention(name: "previews") { policy totals { remove } } }')
  t.same(named.body.data.planRetention, { policy: 'previews', totals: { remove: 2 } })
  const unknown = await gateway.gql('mutation { planRetention(name: "nightly") { id } }')
  t.match(unknown.body.errors, [{ extensions: { code: 'NOT_FOUND' } }])
  const bad = await gateway.gql(PLAN_MUTATION, { repositories: [NAME], rules: { select: [{ regex: '(a)\\1' }] } })
  t.match(bad.body.errors, [{ extensions: { code: 'INVALID_REQUEST', field: 'rules.select[0].regex', rule: REGEX_RULE } }])
})
