import { readFileSync } from 'node:fs'
import t from 'tap'
import { ASYMMETRIC_ALGORITHMS, loadPolicy } from '../../src/policy/load.js'
import { PolicyError } from '../../src/policy/policy-error.js'

const example = readFileSync(new URL('fixtures/example.yaml', import.meta.url), 'utf8')
const HASH = 'a'.repeat(64)

t.test('the example policy loads with its defaults', async t => {
  const policy = loadPolicy(example, 'example.yaml')
  t.equal(policy.source, 'example.yaml')
  t.same(policy.apiKeys.map(key => [key.name, key.groups, key.digest.length]), [['ci-cleaner', ['ci'], 32], ['chat-bot', [], 32]])
  t.match(policy.jwt, {
    issuer: 'https://sso.example.com/',
    audience: 'registry-gateway',
    subjectClaim: 'sub',
    groupsClaim: 'groups',
    leewaySeconds: 30,
    algorithms: [...ASYMMETRIC_ALGORITHMS],
    maxLifetimeSeconds: 86400
  })
  t.equal(policy.jwt?.jwksUri.href, 'https://sso.example.com/.well-known/jwks.json')
  t.same([...policy.roles.keys()], ['preview-cleaner', 'auditor', 'admin'])
  t.match(policy.roles.get('preview-cleaner'), [{ role: 'preview-cleaner', path: 'roles.preview-cleaner[0]', actions: ['delete'] }])
  t.same(Object.fromEntries(policy.rolesBySubject), {
    'keygroup:ci': ['preview-cleaner', 'auditor'],
    'apikey:chat-bot': ['preview-cleaner'],
    'chatgroup:team-a-oncall': ['preview-cleaner'],
    'user:alice@example.com': ['admin', 'auditor']
  })
  t.same(Object.fromEntries(policy.chatGroups), { 'slack:T1/UCAROL': ['team-a-oncall'] })
  t.same(policy.protectedTags.map(entry => entry.path), ['protectedTags[0]', 'protectedTags[1]'])
  t.equal(policy.protectedTags[1]?.repositories, undefined, 'absent repositories mean all')
  t.ok(Object.isFrozen(policy) && Object.isFrozen(policy.apiKeys) && Object.isFrozen(policy.jwt) && Object.isFrozen(policy.roles.get('admin')))
})

t.test('optional settings are read', async t => {
  const policy = loadPolicy(`
apiKeys: [{ name: upper, sha256: "${'AB'.repeat(32)}", groups: [] }]
jwt:
  issuer: https://sso.example.com/
  audience: [a, b]
  jwksUri: http://127.0.0.1:8443/jwks
  subjectClaim: email
  groupsClaim: roles
  leewaySeconds: 0
  algorithms: [ES256, EdDSA]
  maxLifetimeSeconds: 3600
bindings:
  - role: x
    subjects: [group:ci, group:ci]
  - role: x
    subjects: [group:ci, keygroup:ci]
roles:
  x: [{ actions: [read], repositories: [a] }]
`, 'inline')
  t.same(policy.apiKeys[0]?.digest, Buffer.from('ab'.repeat(32), 'hex'), 'hex is case-insensitive')
  t.same(policy.apiKeys[0]?.groups, [], 'a key may list no groups')
  t.match(policy.jwt, { audience: ['a', 'b'], subjectClaim: 'email', groupsClaim: 'roles', leewaySeconds: 0, algorithms: ['ES256', 'EdDSA'], maxLifetimeSeconds: 3600 })
  t.same(policy.rolesBySubject.get('group:ci'), ['x'], 'a role is held once')
  t.same(policy.rolesBySubject.get('keygroup:ci'), ['x'], 'key groups are bound apart from IdP groups')
  t.equal(loadPolicy('jwt:\n  issuer: i\n  audience: a\n  jwksUri: http://localhost/jwks', 'x').jwt?.jwksUri.host, 'localhost')
  t.equal(loadPolicy('jwt:\n  issuer: i\n  audience: a\n  jwksUri: "http://[::1]:9/jwks"', 'x').jwt?.jwksUri.hostname, '[::1]')
  t.same(loadPolicy('protectedTags: [{ tags: [latest] }]', 'x').rolesBySubject.size, 0, 'sections may be left out')
  const merged = loadPolicy('chatUsers:\n  - { subjects: ["slack:T1/U1", "slack:T1/U2"], groups: [a, b] }\n  - { subjects: ["slack:T1/U1"], groups: [b, c] }', 'x')
  t.same(Object.fromEntries(merged.chatGroups), { 'slack:T1/U1': ['a', 'b', 'c'], 'slack:T1/U2': ['a', 'b'] }, 'entries for one chat user add up, each group once')
  const gated = loadPolicy('roles:\n  a: [{ actions: [delete], repositories: [x], approval: required }, { actions: [read], repositories: [x], approval: none }]', 'x')
  t.same(gated.roles.get('a')?.map(rule => rule.approval), ['required', undefined], 'approval: required, or none (the default)')
})

t.test('every problem names its path and the rule', async t => {
  const rule = (extra = '') => `roles:\n  admin:\n    - actions: ["*"]\n      repositories: ["**"]\n${extra}`
  const jwt = (extra: string) => `jwt:\n  issuer: https://sso/\n  audience: gw\n  jwksUri: https://sso/jwks\n${extra}`
  const cases: Array<[string, RegExp]> = [
    // YAML
    ['roles: [unclosed', /\(yaml\): .*at line 1/],
    ['roles: {}\nroles: {}', /\(yaml\): Map keys must be unique/],
    ['roles: *nothing', /\(yaml\): Unresolved alias/],
    ['roles: !custom {}', /\(yaml\): .*custom/],
    ['', /\(top level\): the policy is empty/],
    ['# only a comment', /\(top level\): the policy is empty/],
    ['- a list', /\(top level\): must be the policy \(a mapping\), not a list/],
    ['colour: red', /colour: unknown key; the policy has apiKeys, jwt, chatUsers, roles, bindings, protectedTags/],
    ['"my key": 1', /\["my key"\]: unknown key/],
    // apiKeys
    ['apiKeys: {}', /apiKeys: must be a list, not a mapping/],
    ['apiKeys: []', /apiKeys: must not be empty \(leave the key out instead\)/],
    ['apiKeys:', /apiKeys: must be a list, not nothing/],
    ['apiKeys: [ci]', /apiKeys\[0\]: must be an API key \(a mapping\), not a string/],
    [`apiKeys: [{ sha256: ${HASH} }]`, /apiKeys\[0\]\.name: is required/],
    ['apiKeys: [{ name: ci }]', /apiKeys\[0\]\.sha256: is required/],
    [`apiKeys: [{ name: -ci, sha256: ${HASH} }]`, /apiKeys\[0\]\.name: must be 1-64 letters, digits/],
    [`apiKeys: [{ name: "${'n'.repeat(65)}", sha256: ${HASH} }]`, /apiKeys\[0\]\.name: must be 1-64/],
    ['apiKeys: [{ name: ci, sha256: abc }]', /apiKeys\[0\]\.sha256: must be 64 hex digits: the sha256 of the key/],
    [`apiKeys: [{ name: ci, sha256: ${'g'.repeat(64)} }]`, /apiKeys\[0\]\.sha256: must be 64 hex digits/],
    [`apiKeys: [{ name: ci, sha256: ${'1'.repeat(64)} }]`, /apiKeys\[0\]\.sha256: must be a string, not a number; quote values such as 1\.0 or true/],
    [`apiKeys: [{ name: ci, sha256: ${HASH} }, { name: ci, sha256: ${'b'.repeat(64)} }]`, /apiKeys\[1\]\.name: duplicate API key name ci \(also apiKeys\[0\]\)/],
    [`apiKeys: [{ name: a, sha256: ${HASH} }, { name: b, sha256: ${'A'.repeat(64)} }]`, /apiKeys\[1\]\.sha256: is the same as apiKeys\[0\]'s; each key must be different/],
    [`apiKeys: [{ name: ci, sha256: ${HASH}, secret: x }]`, /apiKeys\[0\]\.secret: unknown key; an API key has name, sha256, groups/],
    [`apiKeys: [{ name: ci, sha256: ${HASH}, groups: ci }]`, /apiKeys\[0\]\.groups: must be a list, not a string/],
    [`apiKeys: [{ name: ci, sha256: ${HASH}, groups: [" "] }]`, /apiKeys\[0\]\.groups\[0\]: must not be empty/],
    [`apiKeys: [{ name: ci, sha256: ${HASH}, groups: [true] }]`, /apiKeys\[0\]\.groups\[0\]: must be a string, not a boolean/],
    // jwt
    ['jwt: https://sso/', /jwt: must be the jwt section \(a mapping\), not a string/],
    ['jwt: {}', /jwt\.issuer: is required[^]*jwt\.audience: is required[^]*jwt\.jwksUri: is required/],
    [jwt('  colour: red'), /jwt\.colour: unknown key; the jwt section has issuer, audience, jwksUri, subjectClaim, groupsClaim, leewaySeconds, algorithms, maxLifetimeSeconds/],
    [jwt('  subjectClaim: ""'), /jwt\.subjectClaim: must not be empty/],
    [jwt('  groupsClaim: [a]'), /jwt\.groupsClaim: must be a string, not a list/],
    [jwt('  leewaySeconds: -1'), /jwt\.leewaySeconds: must be a whole number of seconds from 0 to 600/],
    [jwt('  leewaySeconds: 1.5'), /jwt\.leewaySeconds: must be a whole number/],
    [jwt('  leewaySeconds: 601'), /jwt\.leewaySeconds: must be a whole number/],
    [jwt('  leewaySeconds: "30"'), /jwt\.leewaySeconds: must be a whole number/],
    [jwt('  maxLifetimeSeconds: 59'), /jwt\.maxLifetimeSeconds: must be a whole number of seconds from 60 to 31622400/],
    [jwt('  maxLifetimeSeconds: 31622401'), /jwt\.maxLifetimeSeconds: must be a whole number/],
    [jwt('  algorithms: [RS256, HS256]'), /jwt\.algorithms\[1\]: "HS256" is not allowed; only asymmetric algorithms are \(RS256, /],
    [jwt('  algorithms: [none]'), /jwt\.algorithms\[0\]: "none" is not allowed/],
    [jwt('  algorithms: []'), /jwt\.algorithms: must not be empty/],
    ['jwt:\n  issuer: i\n  audience: [a, ""]\n  jwksUri: https://sso/jwks', /jwt\.audience\[1\]: must not be empty/],
    ['jwt:\n  issuer: i\n  audience: 7\n  jwksUri: https://sso/jwks', /jwt\.audience: must be a string, not a number/],
    ['jwt:\n  issuer: i\n  audience: a\n  jwksUri: sso/jwks', /jwt\.jwksUri: must be an absolute URL/],
    ['jwt:\n  issuer: i\n  audience: a\n  jwksUri: http://sso.example.com/jwks', /jwt\.jwksUri: must be an https:\/\/ URL \(http:\/\/ only for 127\.0\.0\.1, localhost or \[::1\]\)/],
    ['jwt:\n  issuer: i\n  audience: a\n  jwksUri: ftp://127.0.0.1/jwks', /jwt\.jwksUri: must be an https:\/\/ URL/],
    ['jwt:\n  issuer: i\n  audience: a\n  jwksUri: [x]', /jwt\.jwksUri: must be a string, not a list/],
    // roles
    ['roles: [admin]', /roles: must be a mapping of role names to lists of rules, not a list/],
    ['roles:\n  "Bad Name": [{ actions: [read], repositories: [a] }]', /roles\["Bad Name"\]: role name must be 1-64 letters/],
    ['roles:\n  admin: {}', /roles\.admin: must be a list, not a mapping/],
    ['roles:\n  admin: []', /roles\.admin: must not be empty/],
    ['roles:\n  admin: [everything]', /roles\.admin\[0\]: must be a rule \(a mapping\), not a string/],
    [rule('      colour: red'), /roles\.admin\[0\]\.colour: unknown key; a rule has actions, repositories, tags, registries/],
    ['roles:\n  admin: [{ repositories: [a] }]', /roles\.admin\[0\]\.actions: is required/],
    ['roles:\n  admin: [{ actions: [read] }]', /roles\.admin\[0\]\.repositories: is required/],
    ['roles:\n  admin: [{ actions: [read, nuke], repositories: [a] }]', /roles\.admin\[0\]\.actions\[1\]: unknown action "nuke"; actions are read, delete, force, restore, audit, approve, admin, \*/],
    ['roles:\n  admin: [{ actions: [read], repositories: [a, "Team/**"] }]', /roles\.admin\[0\]\.repositories\[1\]: "Team\/\*\*": "T" is not allowed; a repository pattern may use/],
    ['roles:\n  admin: [{ actions: [read], repositories: ["team-**"] }]', /roles\.admin\[0\]\.repositories\[0\]: "team-\*\*": \*\* must be a whole path segment/],
    [rule('      tags: ["**"]'), /roles\.admin\[0\]\.tags\[0\]: "\*\*": \*\* only makes sense in repositories/],
    [rule('      tags: []'), /roles\.admin\[0\]\.tags: must not be empty/],
    [rule('      approval: always'), /roles\.admin\[0\]\.approval: must be required or none/],
    [rule('      registries: ["a b"]'), /roles\.admin\[0\]\.registries\[0\]: "a b": " " is not allowed; a registry pattern/],
    // bindings
    ['bindings: {}', /bindings: must be a list, not a mapping/],
    ['bindings: [admin]', /bindings\[0\]: must be a binding \(a mapping\), not a string/],
    [rule('bindings: [{ role: root, subjects: ["user:a"] }]'), /bindings\[0\]\.role: unknown role "root"; roles defines admin/],
    ['bindings: [{ role: root, subjects: ["user:a"] }]', /bindings\[0\]\.role: unknown role "root"; roles defines none/],
    [rule('bindings: [{ role: [admin], subjects: ["user:a"] }]'), /bindings\[0\]\.role: must be a string, not a list/],
    [rule('bindings: [{ role: admin }]'), /bindings\[0\]\.subjects: is required/],
    [rule('bindings: [{ role: admin, subjects: [alice] }]'), /bindings\[0\]\.subjects\[0\]: must be apikey:<name>, user:<subject claim value>, group:<identity provider group>, keygroup:<API key group>, chatgroup:<chat users group>, slack:<team id>\/<user id>, mattermost:<team id>\/<user id> or service:<retention.runAs>/],
    [rule('bindings: [{ role: admin, subjects: ["user:"] }]'), /bindings\[0\]\.subjects\[0\]: must be apikey:/],
    [rule('bindings: [{ role: admin, subjects: ["slack:U123"] }]'), /bindings\[0\]\.subjects\[0\]: a Slack subject must be slack:<team id>\/<user id>/],
    [rule('bindings: [{ role: admin, subjects: ["slack:t1/u1"] }]'), /a Slack subject must be/],
    [rule('bindings: [{ role: admin, subjects: ["mattermost:T1/U1"] }]'), /a Mattermost subject must be mattermost:<team id>\/<user id>/],
    [rule('bindings: [{ role: admin, subjects: ["apikey:has space"] }]'), /bindings\[0\]\.subjects\[0\]: the API key name must be 1-64/],
    [rule('bindings: [{ role: admin, subjects: ["user:a"], when: always }]'), /bindings\[0\]\.when: unknown key; a binding has role, subjects/],
    [rule('bindings: [{ role: admin, subjects: ["service:no spaces"] }]'), /bindings\[0\]\.subjects\[0\]: a service subject must be service:<name>/],
    // chatUsers
    ['chatUsers: {}', /chatUsers: must be a list, not a mapping/],
    ['chatUsers: [oncall]', /chatUsers\[0\]: must be a chat users entry \(a mapping\), not a string/],
    ['chatUsers: [{ subjects: ["user:bob"], groups: [a] }]', /chatUsers\[0\]\.subjects\[0\]: must be slack:<team id>\/<user id> or mattermost:<team id>\/<user id>/],
    ['chatUsers: [{ subjects: ["slack:U1"], groups: [a] }]', /chatUsers\[0\]\.subjects\[0\]: a Slack subject must be/],
    ['chatUsers: [{ subjects: ["slack:T1/U1"], groups: [""] }]', /chatUsers\[0\]\.groups\[0\]: must not be empty/],
    ['chatUsers: [{ subjects: ["slack:T1/U1"] }]', /chatUsers\[0\]\.groups: is required/],
    ['chatUsers: [{ subjects: ["slack:T1/U1"], groups: [a], roles: [admin] }]', /chatUsers\[0\]\.roles: unknown key; a chat users entry has subjects, groups/],
    // protectedTags
    ['protectedTags: [{ repositories: ["**"] }]', /protectedTags\[0\]\.tags: is required/],
    ['protectedTags: [latest]', /protectedTags\[0\]: must be a protected tags entry \(a mapping\), not a string/],
    ['protectedTags: [{ tags: ["la test"] }]', /protectedTags\[0\]\.tags\[0\]: "la test": " " is not allowed/],
    ['protectedTags: [{ tags: [latest], repositories: ["A"] }]', /protectedTags\[0\]\.repositories\[0\]: "A": "A" is not allowed/],
    ['protectedTags: [{ tags: [latest], registries: ["**"] }]', /protectedTags\[0\]\.registries\[0\]: "\*\*": \*\* only makes sense/],
    ['protectedTags: [{ tags: [latest], why: x }]', /protectedTags\[0\]\.why: unknown key; a protected tags entry has repositories, tags, registries/]
  ]
  for (const [text, expected] of cases) {
    t.throws(() => loadPolicy(text, 'policy.yaml'), expected, JSON.stringify(text))
  }
})

t.test('all problems are reported at once, on a PolicyError', async t => {
  const error = t.throws(() => loadPolicy('apiKeys: [{ name: ci, sha256: x }]\nroles:\n  admin: [{ actions: [nuke], repositories: [a] }]\nbindings: [{ role: root, subjects: [bob] }]', 'policy.yaml')) as PolicyError
  t.type(error, PolicyError)
  t.equal(error.name, 'PolicyError')
  t.equal(error.source, 'policy.yaml')
  t.same(error.problems.map(problem => problem.path), [
    'apiKeys[0].sha256', 'roles.admin[0].actions[0]', 'bindings[0].role', 'bindings[0].subjects[0]'
  ])
  t.match(error.message, /^invalid policy policy\.yaml:\n {2}apiKeys\[0\]\.sha256: must be 64 hex digits/)
})
