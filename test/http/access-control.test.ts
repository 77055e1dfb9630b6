import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { decide } from '../../src/policy/decide.js'
import { loadPolicy } from '../../src/policy/load.js'
import { PolicyError } from '../../src/policy/policy-error.js'
import type { Identity } from '../../src/policy/types.js'
import { callDelete, callMe, eventually, headStatus, replaceFile, TRANSPORTS, type Outcome, type Transport } from '../fixtures/access.js'
import { countingDispatcher, sha256Hex, startGateway } from '../fixtures/gateway.js'

const KEYS = {
  cleaner: 'rdg_access-test-cleaner-key-000000000001',
  releaser: 'rdg_access-test-releaser-key-00000000002',
  reader: 'rdg_access-test-reader-key-000000000003',
  admin: 'rdg_access-test-admin-key-0000000000004',
  nobody: 'rdg_access-test-nobody-key-000000000005'
} as const
type KeyName = keyof typeof KEYS

const POLICY = `
apiKeys:
  - { name: cleaner, sha256: ${sha256Hex(KEYS.cleaner)}, groups: [ci] }
  - { name: releaser, sha256: ${sha256Hex(KEYS.releaser)} }
  - { name: reader, sha256: ${sha256Hex(KEYS.reader)} }
  - { name: admin, sha256: ${sha256Hex(KEYS.admin)} }
  - { name: nobody, sha256: ${sha256Hex(KEYS.nobody)} }
roles:
  preview-cleaner:
    - actions: [delete]
      repositories: ["team-a/**"]
      tags: ["pr-*"]
  releaser:
    - actions: [delete, force]
      repositories: ["team-a/**"]
      tags: ["pr-*", "rc-*"]
  reader:
    - actions: [read]
      repositories: ["**"]
  admin:
    - actions: ["*"]
      repositories: ["**"]
bindings:
  - { role: preview-cleaner, subjects: ["keygroup:ci"] }
  - { role: releaser, subjects: ["apikey:releaser"] }
  - { role: reader, subjects: ["apikey:reader"] }
  - { role: admin, subjects: ["apikey:admin"] }
protectedTags:
  - repositories: ["**"]
    tags: ["latest", "v*.*.*"]
  - repositories: ["team-a/frozen/**"]
    tags: ["*"]
`

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const counted = countingDispatcher(t)
const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, dispatcher: counted.dispatcher, policy: POLICY })

/** REST sends keys as `Authorization: Bearer`, GraphQL as `X-API-Key`, so both ways are exercised everywhere. */
function credentials (transport: Transport, key: string): Record<string, string> {
  return transport === 'rest' ? { authorization: `Bearer ${key}` } : { 'x-api-key': key }
}

/** What the registry saw from the gateway since `mark`. */
function upstreamSince (mark: number): Array<{ method: string, path: string }> {
  return counted.requests.slice(mark)
}

type Expected =
  | { deleted: string[] }
  | { denied: 'FORBIDDEN' | 'PROTECTED_TAG', subject: string, action: string, tag: string, why: string, resolvedFirst?: boolean }
  | { shared: string[] }
  | { dryRun: true, allowed: boolean, removed: string[], reason?: (name: string) => string }

interface Case {
  title: string
  key: KeyName
  /** Each transport gets its own copy: `<repository>-rest`, `<repository>-graphql`. */
  repository: string
  tag: string
  /** Other tags pushed on the same digest. */
  coTags?: string[]
  dryRun?: boolean
  force?: boolean
  expected: Expected
}

const noRole = (subject: string): string => `subject ${subject} has no role`
const PROTECTED_0 = 'the tag is protected by protectedTags[0]; nobody may delete it, admins included'

const cases: Case[] = [
  { title: 'allowed: a rule covers repository and tag', key: 'cleaner', repository: 'team-a/app', tag: 'pr-1', expected: { deleted: ['pr-1'] } },
  { title: 'allowed: ** crosses path segments', key: 'cleaner', repository: 'team-a/nested/deep/app', tag: 'pr-2', expected: { deleted: ['pr-2'] } },
  {
    title: 'forbidden by repository: a name prefix is not a parent',
    key: 'cleaner',
    repository: 'team-ab/app',
    tag: 'pr-1',
    expected: { denied: 'FORBIDDEN', subject: 'apikey:cleaner', action: 'delete', tag: 'pr-1', why: 'no rule of roles [preview-cleaner] allows delete on repository {name}' }
  },
  {
    title: 'forbidden by repository',
    key: 'cleaner',
    repository: 'team-b/app',
    tag: 'pr-1',
    expected: { denied: 'FORBIDDEN', subject: 'apikey:cleaner', action: 'delete', tag: 'pr-1', why: 'no rule of roles [preview-cleaner] allows delete on repository {name}' }
  },
  {
    title: 'forbidden by tag',
    key: 'cleaner',
    repository: 'team-a/by-tag',
    tag: 'prod',
    expected: { denied: 'FORBIDDEN', subject: 'apikey:cleaner', action: 'delete', tag: 'prod', why: 'no rule of roles [preview-cleaner] allows delete on tag prod of {name}' }
  },
  {
    title: 'forbidden action: read only',
    key: 'reader',
    repository: 'team-a/read-only',
    tag: 'pr-1',
    expected: { denied: 'FORBIDDEN', subject: 'apikey:reader', action: 'delete', tag: 'pr-1', why: 'no rule of roles [reader] allows delete' }
  },
  {
    title: 'a key bound to no role',
    key: 'nobody',
    repository: 'team-a/no-role',
    tag: 'pr-1',
    expected: { denied: 'FORBIDDEN', subject: 'apikey:nobody', action: 'delete', tag: 'pr-1', why: noRole('apikey:nobody') }
  },
  {
    title: 'protected tag, even for an admin',
    key: 'admin',
    repository: 'team-a/protected',
    tag: 'latest',
    expected: { denied: 'PROTECTED_TAG', subject: 'apikey:admin', action: 'delete', tag: 'latest', why: PROTECTED_0 }
  },
  {
    title: 'protected by a tag glob, even for an admin',
    key: 'admin',
    repository: 'team-a/semver',
    tag: 'v1.2.3',
    expected: { denied: 'PROTECTED_TAG', subject: 'apikey:admin', action: 'delete', tag: 'v1.2.3', why: PROTECTED_0 }
  },
  {
    title: 'protected by a repository entry',
    key: 'admin',
    repository: 'team-a/frozen/app',
    tag: 'pr-1',
    expected: { denied: 'PROTECTED_TAG', subject: 'apikey:admin', action: 'delete', tag: 'pr-1', why: 'the tag is protected by protectedTags[1]; nobody may delete it, admins included' }
  },
  {
    title: 'forced delete refused: a co-tag is protected',
    key: 'admin',
    repository: 'team-a/force-protected',
    tag: 'pr-4',
    coTags: ['latest'],
    force: true,
    expected: { denied: 'PROTECTED_TAG', subject: 'apikey:admin', action: 'delete', tag: 'latest', why: PROTECTED_0, resolvedFirst: true }
  },
  {
    title: "forced delete refused: a co-tag is outside the caller's rules",
    key: 'releaser',
    repository: 'team-a/force-outside',
    tag: 'pr-5',
    coTags: ['stable'],
    force: true,
    expected: { denied: 'FORBIDDEN', subject: 'apikey:releaser', action: 'delete', tag: 'stable', why: 'no rule of roles [releaser] allows delete on tag stable of {name}', resolvedFirst: true }
  },
  {
    title: 'forced delete refused: no force action',
    key: 'cleaner',
    repository: 'team-a/force-missing',
    tag: 'pr-6',
    coTags: ['pr-7'],
    force: true,
    expected: { denied: 'FORBIDDEN', subject: 'apikey:cleaner', action: 'force', tag: 'pr-6', why: 'no rule of roles [preview-cleaner] allows force', resolvedFirst: true }
  },
  { title: 'forced delete allowed: force on the tag, delete on every co-tag', key: 'releaser', repository: 'team-a/force-ok', tag: 'rc-1', coTags: ['pr-8'], force: true, expected: { deleted: ['rc-1', 'pr-8'] } },
  { title: 'shared digest without force: 409 once the tag itself is authorized', key: 'releaser', repository: 'team-a/shared', tag: 'pr-9', coTags: ['rc-2'], expected: { shared: ['rc-2'] } },
  {
    title: 'shared digest, tag itself forbidden: 403, decided before any registry call',
    key: 'cleaner',
    repository: 'team-b/shared',
    tag: 'pr-1',
    coTags: ['pr-2'],
    expected: { denied: 'FORBIDDEN', subject: 'apikey:cleaner', action: 'delete', tag: 'pr-1', why: 'no rule of roles [preview-cleaner] allows delete on repository {name}' }
  },
  { title: 'dry-run allowed', key: 'cleaner', repository: 'team-a/dry-ok', tag: 'pr-1', dryRun: true, expected: { dryRun: true, allowed: true, removed: ['pr-1'] } },
  {
    title: 'dry-run with read only: 200, allowed false, with the reason',
    key: 'reader',
    repository: 'team-a/dry-read',
    tag: 'pr-1',
    dryRun: true,
    expected: { dryRun: true, allowed: false, removed: ['pr-1'], reason: name => `FORBIDDEN: apikey:reader may not delete ${name}:pr-1 in registry default: no rule of roles [reader] allows delete` }
  },
  {
    title: 'dry-run of a protected tag',
    key: 'admin',
    repository: 'team-a/dry-protected',
    tag: 'latest',
    dryRun: true,
    expected: { dryRun: true, allowed: false, removed: ['latest'], reason: name => `PROTECTED_TAG: apikey:admin may not delete ${name}:latest in registry default: ${PROTECTED_0}` }
  },
  {
    title: 'dry-run of a forced delete whose co-tag is protected',
    key: 'admin',
    repository: 'team-a/dry-force',
    tag: 'pr-1',
    coTags: ['v2.0.0'],
    dryRun: true,
    force: true,
    expected: { dryRun: true, allowed: false, removed: ['pr-1', 'v2.0.0'], reason: name => `PROTECTED_TAG: apikey:admin may not delete ${name}:v2.0.0 in registry default: ${PROTECTED_0}` }
  },
  {
    title: 'dry-run without read: 403 for read, decided before any registry call',
    key: 'nobody',
    repository: 'team-a/dry-none',
    tag: 'pr-1',
    dryRun: true,
    expected: { denied: 'FORBIDDEN', subject: 'apikey:nobody', action: 'read', tag: 'pr-1', why: noRole('apikey:nobody') }
  }
]

function checkDenial (t: Test, transport: Transport, outcome: Outcome, name: string, expected: Extract<Expected, { denied: string }>): void {
  const image = `${name}:${expected.tag}`
  const detail = `${expected.subject} may not ${expected.action} ${image} in registry default: ${expected.why.replace('{name}', name)}`
  if (transport === 'rest') {
    t.equal(outcome.status, 403, 'REST: 403')
    t.equal(outcome.headers['content-type'], 'application/problem+json; charset=utf-8')
    t.equal(outcome.body.title, expected.denied === 'FORBIDDEN' ? 'Forbidden' : 'Protected tag')
  } else {
    t.equal(outcome.status, 200, 'GraphQL: 200, the error in the body')
    t.equal(outcome.body.data, null)
  }
  t.match(outcome.error, { code: expected.denied, status: 403, subject: expected.subject, action: expected.action, image, registry: 'default', requestId: String })
  t.equal(outcome.error?.detail, detail, 'the reason names subject, action, image and the rule or protectedTags entry')
}

for (const testCase of cases) {
  t.test(testCase.title, async t => {
    for (const transport of TRANSPORTS) {
      const name = `${testCase.repository}-${transport}`
      const tags = [testCase.tag, ...testCase.coTags ?? []]
      const image = await pushImage(target, name, tags, 'schema2')
      const mark = counted.requests.length
      const call = { name, tag: testCase.tag, ...(testCase.dryRun === undefined ? {} : { dryRun: testCase.dryRun }), ...(testCase.force === undefined ? {} : { force: testCase.force }) }
      const outcome = await callDelete(gateway.app, transport, call, credentials(transport, KEYS[testCase.key]))
      const upstream = upstreamSince(mark)
      const deletes = upstream.filter(request => request.method === 'DELETE')
      const expected = testCase.expected
      let removed: string[] = []

      if ('deleted' in expected) {
        t.equal(outcome.status, 200, `${transport}: 200`)
        t.match(outcome.result, {
          registry: 'default', name, tag: testCase.tag, digest: image.digest, mediaType: image.mediaType, dryRun: false, deleted: true, allowed: true
        }, `${transport}: the result`)
        t.same(outcome.result?.removedTags, expected.deleted, `${transport}: every tag removed, the one asked for first`)
        t.notOk(outcome.result?.reason, `${transport}: no reason when allowed`)
        t.same(deletes, [{ method: 'DELETE', path: `/v2/${name}/manifests/${image.digest}` }], `${transport}: exactly one DELETE, by digest`)
        removed = expected.deleted
      } else if ('denied' in expected) {
        checkDenial(t, transport, outcome, name, expected)
        if (expected.resolvedFirst === true) {
          t.ok(upstream.length > 0, `${transport}: decided after resolving the co-tags`)
          t.same(deletes, [], `${transport}: no DELETE reached the registry`)
        } else {
          t.same(upstream, [], `${transport}: decided before resolve; the registry saw nothing`)
        }
      } else if ('shared' in expected) {
        t.equal(outcome.status, transport === 'rest' ? 409 : 200)
        t.match(outcome.error, { code: 'SHARED_DIGEST', status: 409, digest: image.digest, sharedWith: expected.shared })
        t.same(deletes, [], `${transport}: no DELETE`)
      } else {
        t.equal(outcome.status, 200, `${transport}: a dry-run answers 200`)
        t.match(outcome.result, {
          registry: 'default', name, tag: testCase.tag, digest: image.digest, mediaType: image.mediaType, dryRun: true, deleted: false, allowed: expected.allowed
        }, `${transport}: the dry-run result`)
        t.same(outcome.result?.removedTags, expected.removed, `${transport}: the tags the real call would remove`)
        if (expected.reason === undefined) t.notOk(outcome.result?.reason, `${transport}: no reason when allowed`)
        else t.equal(outcome.result?.reason, expected.reason(name), `${transport}: the reason, its code first`)
        t.same(deletes, [], `${transport}: a dry-run never deletes`)
      }

      for (const tag of tags) {
        t.equal(await headStatus(registry.url, name, tag), removed.includes(tag) ? 404 : 200, `${transport}: ${name}:${tag} ${removed.includes(tag) ? 'is gone' : 'is still there'}`)
      }
    }
  })
}

t.test('missing, wrong and malformed credentials: 401 and no registry call', async t => {
  const name = 'team-a/authn'
  await pushImage(target, name, ['pr-1'], 'schema2')
  const noCredentials = 'no credentials: send "Authorization: Bearer <API key or token>" or "X-API-Key: <API key>"'
  const unknown = 'unknown API key (never issued, or revoked)'
  const challenge = 'Bearer realm="registry-delete-gateway"'
  const invalidToken = `${challenge}, error="invalid_token"`
  const invalidRequest = `${challenge}, error="invalid_request"`
  const cases: Array<[string, Record<string, string>, string, string]> = [
    ['missing', {}, noCredentials, challenge],
    ['empty X-API-Key', { 'x-api-key': ' ' }, noCredentials, challenge],
    ['wrong key in X-API-Key', { 'x-api-key': 'rdg_never-issued-key' }, unknown, invalidToken],
    ['wrong key as Bearer', { authorization: 'Bearer rdg_never-issued-key' }, unknown, invalidToken],
    ['a valid key with one character changed', { 'x-api-key': `${KEYS.admin.slice(0, -1)}5` }, unknown, invalidToken],
    ['Basic instead of Bearer', { authorization: `Basic ${Buffer.from(`admin:${KEYS.admin}`).toString('base64')}` }, 'the Authorization header must be "Bearer <API key or token>"', invalidRequest],
    ['both headers', { authorization: `Bearer ${KEYS.admin}`, 'x-api-key': KEYS.admin }, 'send one credential: either Authorization or X-API-Key, not both', invalidRequest]
  ]
  const mark = counted.requests.length
  for (const transport of TRANSPORTS) {
    for (const [title, headers, detail, wwwAuthenticate] of cases) {
      const label = `${transport}, ${title}`
      const outcome = await callDelete(gateway.app, transport, { name, tag: 'pr-1' }, headers)
      t.equal(outcome.status, 401, label)
      t.equal(outcome.headers['www-authenticate'], wwwAuthenticate, label)
      t.match(outcome.error, { code: 'UNAUTHENTICATED', status: 401, detail }, label)
      if (transport === 'graphql') t.equal(outcome.body.data, null, label)
      t.notOk(JSON.stringify(outcome.body).includes('rdg_'), `${label}: no key is echoed`)
    }
  }
  t.same(upstreamSince(mark), [], 'the registry saw nothing')
  t.equal(await headStatus(registry.url, name, 'pr-1'), 200, 'the tag is still there')
})

t.test('me: subject, groups and roles over both transports and both headers', async t => {
  const expected: Record<KeyName, { subject: string, groups: string[], roles: string[] }> = {
    cleaner: { subject: 'apikey:cleaner', groups: ['ci'], roles: ['preview-cleaner'] },
    releaser: { subject: 'apikey:releaser', groups: [], roles: ['releaser'] },
    reader: { subject: 'apikey:reader', groups: [], roles: ['reader'] },
    admin: { subject: 'apikey:admin', groups: [], roles: ['admin'] },
    nobody: { subject: 'apikey:nobody', groups: [], roles: [] }
  }
  for (const transport of TRANSPORTS) {
    for (const [key, me] of Object.entries(expected) as Array<[KeyName, typeof expected[KeyName]]>) {
      for (const headers of [{ authorization: `Bearer ${KEYS[key]}` }, { 'x-api-key': KEYS[key] }] as Array<Record<string, string>>) {
        const outcome = await callMe(gateway.app, transport, headers)
        t.equal(outcome.status, 200, `${transport} ${key}`)
        t.same(outcome.result, me, `${transport} ${key} via ${Object.keys(headers)[0] as string}`)
      }
    }
    const anonymous = await callMe(gateway.app, transport, {})
    t.equal(anonymous.status, 401, `${transport}: me needs credentials`)
    t.equal(anonymous.error?.code, 'UNAUTHENTICATED')
  }
})

t.test('hot reload: a good file takes effect, keys are revoked, a bad file changes nothing', async t => {
  const keys = {
    retiring: 'rdg_hot-reload-retiring-key-00000000001',
    staying: 'rdg_hot-reload-staying-key-000000000002',
    fresh: 'rdg_hot-reload-fresh-key-00000000000003',
    late: 'rdg_hot-reload-late-key-000000000000004'
  }
  const policy = (names: Array<keyof typeof keys>, stayingActions: string, extra = ''): string => `
apiKeys:
${names.map(name => `  - { name: ${name}, sha256: ${sha256Hex(keys[name])} }`).join('\n')}
roles:
  staying: [{ actions: [${stayingActions}], repositories: ["hot/**"] }]
  others: [{ actions: [read], repositories: ["**"] }]
bindings:
  - { role: staying, subjects: ["apikey:staying"] }
  - { role: others, subjects: [${names.filter(name => name !== 'staying').map(name => `"apikey:${name}"`).join(', ')}] }
${extra}`
  const hotCounted = countingDispatcher(t)
  const hot = await startGateway(t, { registries: { default: { url: registry.url } }, dispatcher: hotCounted.dispatcher, policy: policy(['retiring', 'staying'], 'read') })
  const status = async (key: string, transport: Transport = 'rest'): Promise<number> => (await callMe(hot.app, transport, { 'x-api-key': key })).status

  await pushImage(target, 'hot/app', ['pr-3'], 'schema2')
  await pushImage(target, 'hot/app', ['pr-4'], 'schema2')
  t.equal(await status(keys.retiring), 200, 'before: the retiring key works')
  t.equal(await status(keys.fresh), 401, 'before: the fresh key is unknown')
  const before = await callDelete(hot.app, 'rest', { name: 'hot/app', tag: 'pr-3' }, { 'x-api-key': keys.staying })
  t.equal(before.status, 403, 'before: staying may only read')
  t.equal(before.error?.detail, 'apikey:staying may not delete hot/app:pr-3 in registry default: no rule of roles [staying] allows delete')

  replaceFile(hot.policyFile, policy(['staying', 'fresh'], 'read, delete'))
  t.ok(await eventually(async () => await status(keys.fresh) === 200), 'the new key works once the file is replaced')
  for (const transport of TRANSPORTS) {
    for (const headers of [{ 'x-api-key': keys.retiring }, { authorization: `Bearer ${keys.retiring}` }] as Array<Record<string, string>>) {
      const mark = hotCounted.requests.length
      const revoked = await callDelete(hot.app, transport, { name: 'hot/app', tag: 'pr-3' }, headers)
      t.equal(revoked.status, 401, `${transport}: the removed key is revoked`)
      t.match(revoked.error, { code: 'UNAUTHENTICATED', detail: 'unknown API key (never issued, or revoked)' })
      t.same(hotCounted.requests.slice(mark), [], `${transport}: no registry call for a revoked key`)
    }
  }
  t.equal(await headStatus(registry.url, 'hot/app', 'pr-3'), 200)
  const after = await callDelete(hot.app, 'graphql', { name: 'hot/app', tag: 'pr-3' }, { 'x-api-key': keys.staying })
  t.equal(after.result?.deleted, true, 'the new rules apply: staying may delete now')
  t.equal(await headStatus(registry.url, 'hot/app', 'pr-3'), 404)
  t.same((await callMe(hot.app, 'graphql', { 'x-api-key': keys.fresh })).result, { subject: 'apikey:fresh', groups: [], roles: ['others'] })

  // Each bad file would admit the late key and take delete away from staying, were it (even partly) applied.
  const bad = [
    ['YAML that does not parse', `${policy(['staying', 'fresh', 'late'], 'read')}\n  - [unclosed`],
    ['an unknown action', policy(['staying', 'fresh', 'late'], 'read, destroy')],
    ['an empty file', '']
  ]
  for (const [title, text] of bad as Array<[string, string]>) {
    t.throws(() => loadPolicy(text, 'bad.yaml'), PolicyError, `${title}: the file really is bad`)
    replaceFile(hot.policyFile, text)
    // Four debounce periods: the store has read the file by then.
    await sleep(800)
    t.equal(await status(keys.late), 401, `${title}: the key it adds is not admitted`)
    t.equal(await status(keys.fresh, 'graphql'), 200, `${title}: the previous keys still work`)
    t.equal(await status(keys.retiring), 401, `${title}: the revoked key stays revoked`)
    const dry = await callDelete(hot.app, 'rest', { name: 'hot/app', tag: 'pr-4', dryRun: true }, { authorization: `Bearer ${keys.staying}` })
    t.equal(dry.result?.allowed, true, `${title}: the previous rules still let staying delete`)
  }
  replaceFile(hot.policyFile, policy(['staying', 'fresh', 'late'], 'read, delete'))
  t.ok(await eventually(async () => await status(keys.late) === 200), 'after bad files, a good one is still picked up')
  t.equal(await headStatus(registry.url, 'hot/app', 'pr-4'), 200, 'dry-runs deleted nothing')
})

t.test('policy.example.yaml loads and means what its comments say', async t => {
  const text = readFileSync(new URL('../../policy.example.yaml', import.meta.url), 'utf8')
  const policy = loadPolicy(text, 'policy.example.yaml')
  t.same(policy.apiKeys.map(key => [key.name, key.groups]), [['ci-cleaner', ['ci']], ['chat-bot', []], ['release-bot', []]])
  t.same([...policy.roles.keys()], ['preview-cleaner', 'release-manager', 'auditor', 'admin'])
  t.equal(policy.jwt?.issuer, 'https://sso.example.com/')
  t.same(policy.jwt?.algorithms, ['RS256', 'ES256'])
  t.equal(policy.protectedTags.length, 2)

  const ciCleaner: Identity = { subject: 'apikey:ci-cleaner', groups: ['ci'], kind: 'apikey' }
  const releaseBot: Identity = { subject: 'apikey:release-bot', groups: [], kind: 'apikey' }
  const alice: Identity = { subject: 'user:alice@example.com', groups: [], kind: 'jwt' }
  const releaseManager: Identity = { subject: 'user:bob', groups: ['release-managers'], kind: 'jwt' }
  const at = (repository: string, tag: string, registryName = 'default'): { registry: string, repository: string, tag: string } => ({ registry: registryName, repository, tag })
  const verdict = (identity: Identity, action: 'read' | 'delete' | 'force', resource: ReturnType<typeof at>): string => {
    const decision = decide(policy, identity, action, resource)
    return decision.allow ? 'allow' : decision.code as string
  }
  t.equal(verdict(ciCleaner, 'delete', at('team-a/app', 'pr-1')), 'allow', 'group ci cleans previews')
  t.equal(verdict(ciCleaner, 'delete', at('team-a/x/app', 'preview-7')), 'allow', '** crosses /')
  t.equal(verdict(ciCleaner, 'delete', at('team-a/app', 'pr-1', 'mirror')), 'PROTECTED_TAG', 'the mirror is protected')
  t.equal(verdict(ciCleaner, 'delete', at('team-a', 'pr-1')), 'FORBIDDEN', 'team-a/** does not cover team-a itself')
  t.equal(verdict(ciCleaner, 'delete', at('team-b/app', 'pr-1')), 'FORBIDDEN')
  t.equal(verdict(ciCleaner, 'read', at('team-b/app', 'v1')), 'allow', 'the auditor role reads everything')
  t.equal(verdict(releaseBot, 'force', at('team-b/app', 'rc-1')), 'allow')
  t.equal(verdict(releaseManager, 'delete', at('team-a/app', 'rc-2')), 'allow', 'a JWT group binding')
  t.equal(verdict(releaseBot, 'delete', at('team-b/app', 'stable')), 'PROTECTED_TAG')
  t.equal(verdict(alice, 'delete', at('any/thing', 'v1.2.3')), 'PROTECTED_TAG', 'admins included')
  t.equal(verdict(alice, 'delete', at('any/thing', 'nightly')), 'allow')
  t.equal(verdict(alice, 'read', at('any/thing', 'latest')), 'allow', 'protected tags can still be read')

  // The example stays an example of a strict file: a typo in it would be refused.
  t.throws(() => loadPolicy(text.replace('groupsClaim:', 'groupClaim:'), 'typo.yaml'), PolicyError)
})
