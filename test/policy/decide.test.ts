import { readFileSync } from 'node:fs'
import t from 'tap'
import { decide, literalProtectedTags, repositoryDecider, rolesOf, subjectsOf } from '../../src/policy/decide.js'
import { loadPolicy } from '../../src/policy/load.js'
import type { Action, Decision, Identity } from '../../src/policy/types.js'

const policy = loadPolicy(readFileSync(new URL('fixtures/example.yaml', import.meta.url), 'utf8'), 'example.yaml')

const ciCleaner: Identity = { subject: 'apikey:ci-cleaner', groups: ['ci'], kind: 'apikey' }
const chatBot: Identity = { subject: 'apikey:chat-bot', groups: [], kind: 'apikey' }
const alice: Identity = { subject: 'user:alice@example.com', groups: [], kind: 'jwt' }
const bob: Identity = { subject: 'user:bob', groups: ['dev', 'qa'], kind: 'jwt' }
const stranger: Identity = { subject: 'apikey:stranger', groups: [], kind: 'apikey' }

t.test('subjects and roles', async t => {
  t.same(subjectsOf(ciCleaner), ['apikey:ci-cleaner', 'keygroup:ci'], 'an API key\'s groups are key groups')
  t.same(subjectsOf(bob), ['user:bob', 'group:dev', 'group:qa'], 'a token\'s groups are identity provider groups')
  t.same(rolesOf(policy, { subject: 'user:mallory', groups: ['ci'], kind: 'jwt' }), [], 'an IdP group named like a key group gets none of its roles')
  t.same(rolesOf(policy, ciCleaner), ['preview-cleaner', 'auditor'], 'through the group')
  t.same(rolesOf(policy, chatBot), ['preview-cleaner'], 'bound directly')
  t.same(rolesOf(policy, { ...chatBot, groups: ['ci'] }), ['preview-cleaner', 'auditor'], 'each role once')
  t.same(rolesOf(policy, stranger), [])
  t.same(rolesOf(undefined, alice), [], 'no policy, no roles')
})

t.test('decisions', async t => {
  const cases: Array<[string, Identity, Action, string, Decision]> = [
    // name, identity, action, registry/repository:tag, expected
    ['allowed by a group binding', ciCleaner, 'delete', 'default/team-a/app:pr-12', {
      allow: true,
      reason: 'apikey:ci-cleaner may delete team-a/app:pr-12 in registry default: role preview-cleaner allows it (roles.preview-cleaner[0])',
      roles: ['preview-cleaner', 'auditor']
    }],
    ['allowed by a direct binding, deep repository', chatBot, 'delete', 'default/team-a/web/api:preview-3', {
      allow: true,
      reason: 'apikey:chat-bot may delete team-a/web/api:preview-3 in registry default: role preview-cleaner allows it (roles.preview-cleaner[0])',
      roles: ['preview-cleaner']
    }],
    ['read (dry-run) is granted by delete', chatBot, 'read', 'default/team-a/app:pr-1', {
      allow: true,
      reason: 'apikey:chat-bot may read team-a/app:pr-1 in registry default: role preview-cleaner allows it (roles.preview-cleaner[0])',
      roles: ['preview-cleaner']
    }],
    ['read is also granted by read', ciCleaner, 'read', 'mirror/team-b/app:v1', {
      allow: true,
      reason: 'apikey:ci-cleaner may read team-b/app:v1 in registry mirror: role auditor allows it (roles.auditor[0])',
      roles: ['preview-cleaner', 'auditor']
    }],
    ['* grants everything', alice, 'restore', 'default/x:y', {
      allow: true,
      reason: 'user:alice@example.com may restore x:y in registry default: role admin allows it (roles.admin[0])',
      roles: ['admin', 'auditor']
    }],
    ['forbidden by repository', ciCleaner, 'delete', 'default/team-b/app:pr-1', {
      allow: false,
      code: 'FORBIDDEN',
      reason: 'apikey:ci-cleaner may not delete team-b/app:pr-1 in registry default: no rule of roles [preview-cleaner, auditor] allows delete on repository team-b/app',
      roles: ['preview-cleaner', 'auditor']
    }],
    ['** needs something below it', chatBot, 'delete', 'default/team-a:pr-1', {
      allow: false,
      code: 'FORBIDDEN',
      reason: 'apikey:chat-bot may not delete team-a:pr-1 in registry default: no rule of roles [preview-cleaner] allows delete on repository team-a',
      roles: ['preview-cleaner']
    }],
    ['forbidden by tag', chatBot, 'delete', 'default/team-a/app:v1', {
      allow: false,
      code: 'FORBIDDEN',
      reason: 'apikey:chat-bot may not delete team-a/app:v1 in registry default: no rule of roles [preview-cleaner] allows delete on tag v1 of team-a/app',
      roles: ['preview-cleaner']
    }],
    ['forbidden by registry', chatBot, 'delete', 'staging/team-a/app:pr-1', {
      allow: false,
      code: 'FORBIDDEN',
      reason: 'apikey:chat-bot may not delete team-a/app:pr-1 in registry staging: no rule of roles [preview-cleaner] allows delete on registry staging',
      roles: ['preview-cleaner']
    }],
    ['forbidden by action', chatBot, 'force', 'default/team-a/app:pr-1', {
      allow: false,
      code: 'FORBIDDEN',
      reason: 'apikey:chat-bot may not force team-a/app:pr-1 in registry default: no rule of roles [preview-cleaner] allows force',
      roles: ['preview-cleaner']
    }],
    ['audit is not implied by delete', chatBot, 'audit', 'default/team-a/app:pr-1', {
      allow: false,
      code: 'FORBIDDEN',
      reason: 'apikey:chat-bot may not audit team-a/app:pr-1 in registry default: no rule of roles [preview-cleaner] allows audit',
      roles: ['preview-cleaner']
    }],
    ['a protected tag refuses an admin', alice, 'delete', 'default/team-a/app:v1.2.3', {
      allow: false,
      code: 'PROTECTED_TAG',
      reason: 'user:alice@example.com may not delete team-a/app:v1.2.3 in registry default: the tag is protected by protectedTags[0]; nobody may delete it, admins included',
      roles: ['admin', 'auditor']
    }],
    ['force on a protected tag too', alice, 'force', 'default/app:latest', {
      allow: false,
      code: 'PROTECTED_TAG',
      reason: 'user:alice@example.com may not force app:latest in registry default: the tag is protected by protectedTags[0]; nobody may delete it, admins included',
      roles: ['admin', 'auditor']
    }],
    ['protection can be limited to a registry', alice, 'delete', 'mirror/app:anything', {
      allow: false,
      code: 'PROTECTED_TAG',
      reason: 'user:alice@example.com may not delete app:anything in registry mirror: the tag is protected by protectedTags[1]; nobody may delete it, admins included',
      roles: ['admin', 'auditor']
    }],
    ['protection leaves reading alone', alice, 'read', 'default/app:latest', {
      allow: true,
      reason: 'user:alice@example.com may read app:latest in registry default: role admin allows it (roles.admin[0])',
      roles: ['admin', 'auditor']
    }],
    ['protection is checked before roles', stranger, 'delete', 'default/app:latest', {
      allow: false,
      code: 'PROTECTED_TAG',
      reason: 'apikey:stranger may not delete app:latest in registry default: the tag is protected by protectedTags[0]; nobody may delete it, admins included',
      roles: []
    }],
    ['no role', stranger, 'read', 'default/app:v1', {
      allow: false,
      code: 'FORBIDDEN',
      reason: 'apikey:stranger may not read app:v1 in registry default: subject apikey:stranger has no role',
      roles: []
    }],
    ['no role, with groups', bob, 'read', 'default/app:v1', {
      allow: false,
      code: 'FORBIDDEN',
      reason: 'user:bob may not read app:v1 in registry default: subject user:bob and its groups dev, qa have no role',
      roles: []
    }]
  ]
  for (const [name, identity, action, image, expected] of cases) {
    const [, registry, repository, tag] = /^([^/]+)\/(.+):([^:]+)$/.exec(image) as RegExpExecArray
    t.same(decide(policy, identity, action, { registry: registry as string, repository: repository as string, tag: tag as string }), expected, name)
  }
})

t.test('without a policy everything is denied', async t => {
  t.same(decide(undefined, alice, 'read', { registry: 'default', repository: 'app', tag: 'v1' }), {
    allow: false,
    code: 'FORBIDDEN',
    reason: 'user:alice@example.com may not read app:v1 in registry default: no policy is loaded, so every request is denied',
    roles: []
  })
})

t.test('tags protected by name, for the re-check right before a DELETE', async t => {
  t.same(literalProtectedTags(policy, 'default', 'team-a/app'), ['latest'], 'globs (v*.*.*) are left out')
  t.same(literalProtectedTags(policy, 'mirror', 'team-a/app'), ['latest'], 'each tag once; a registry-wide * names nothing')
  const twice = loadPolicy('protectedTags:\n  - { repositories: ["team-a/**"], tags: [latest, stable] }\n  - { tags: [latest] }\n', 'twice.yaml')
  t.same(literalProtectedTags(twice, 'default', 'team-a/app'), ['latest', 'stable'])
  t.same(literalProtectedTags(twice, 'default', 'team-b/app'), ['latest'], 'only entries covering the repository')
  t.same(literalProtectedTags(undefined, 'default', 'team-a/app'), [], 'no policy, nothing to look up')
})

t.test('approval is required only when every rule that allows the action requires it', async t => {
  const gated = loadPolicy(`
roles:
  gated:
    - { actions: [delete], repositories: ["team-a/**"], approval: required }
  trusted:
    - { actions: [delete], repositories: ["team-a/app"], tags: ["pr-*"] }
  approver:
    - { actions: [approve], repositories: ["team-a/**"] }
bindings:
  - { role: gated, subjects: ["slack:T1/UA", "slack:T1/UB"] }
  - { role: trusted, subjects: ["slack:T1/UB"] }
  - { role: approver, subjects: ["slack:T1/UC"] }
`, 'gated.yaml')
  const a: Identity = { subject: 'slack:T1/UA', groups: [], kind: 'slack' }
  const b: Identity = { subject: 'slack:T1/UB', groups: [], kind: 'slack' }
  const c: Identity = { subject: 'slack:T1/UC', groups: [], kind: 'slack' }
  const image = { registry: 'default', repository: 'team-a/app', tag: 'pr-1' }
  t.same(decide(gated, a, 'delete', image), {
    allow: true,
    approval: 'required',
    reason: 'slack:T1/UA may delete team-a/app:pr-1 in registry default once someone else approves: role gated allows it (roles.gated[0])',
    roles: ['gated']
  })
  t.match(decide(gated, b, 'delete', image), { allow: true, approval: undefined, reason: /role trusted allows it/ }, 'a rule without approval wins')
  t.match(decide(gated, b, 'delete', { ...image, tag: 'v1' }), { allow: true, approval: 'required' }, 'where only the gated rule applies')
  t.match(decide(gated, c, 'approve', image), { allow: true, reason: /slack:T1\/UC may approve team-a\/app:pr-1/ })
  t.match(decide(gated, a, 'approve', image), { allow: false, code: 'FORBIDDEN' }, 'delete does not imply approve')
})

t.test('decisions of one repositoryDecider do not share their roles array', async t => {
  const decider = repositoryDecider(policy, ciCleaner, 'delete', 'default', 'team-a/app')
  const first = decider('pr-1')
  first.roles.push('changed by a caller')
  t.same(decider('pr-2').roles, ['preview-cleaner', 'auditor'], 'an allowed decision is not changed by its sibling')
  const denied = repositoryDecider(policy, stranger, 'delete', 'default', 'team-a/app')
  denied('pr-1').roles.push('changed by a caller')
  t.same(denied('pr-2').roles, [], 'nor is a denial')
})
