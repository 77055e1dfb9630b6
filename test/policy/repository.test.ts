import t from 'tap'
import { loadPolicy } from '../../src/policy/load.js'
import { decideRepositoryRead } from '../../src/policy/repository.js'
import type { Identity } from '../../src/policy/types.js'

const policy = loadPolicy(`
roles:
  reader:
    - actions: [read]
      repositories: ["team-a/**"]
      registries: [default]
  deleter:
    - actions: [delete]
      repositories: ["team-b/**"]
  auditor:
    - actions: [audit]
      repositories: ["**"]
bindings:
  - { role: reader, subjects: ["user:reader"] }
  - { role: deleter, subjects: ["group:deleters"] }
  - { role: auditor, subjects: ["user:auditor"] }
`, 'test.yaml')

const user = (subject: string, groups: string[] = []): Identity => ({ subject: `user:${subject}`, groups, kind: 'jwt' })

t.test('read on some tag of the repository is enough; delete implies read', async t => {
  t.match(decideRepositoryRead(policy, user('reader'), 'default', 'team-a/app'), { allow: true, reason: /user:reader may read team-a\/app in registry default: role reader allows it \(roles.reader\[0\]\)/ })
  t.match(decideRepositoryRead(policy, user('x', ['deleters']), 'mirror', 'team-b/app'), { allow: true })
  t.match(decideRepositoryRead(policy, user('reader'), 'default', ''), { allow: true, reason: /may read the catalog of registry default/ })
})

t.test('each denial says what failed', async t => {
  t.same(decideRepositoryRead(undefined, user('reader'), 'default', 'team-a/app'),
    { allow: false, code: 'FORBIDDEN', reason: 'user:reader may not read team-a/app in registry default: no policy is loaded, so every request is denied', roles: [] })
  t.match(decideRepositoryRead(policy, user('stranger'), 'default', 'x'), { allow: false, reason: /subject user:stranger has no role$/ })
  t.match(decideRepositoryRead(policy, user('stranger', ['a', 'b']), 'default', 'x'), { reason: /subject user:stranger and its groups a, b have no role$/ })
  t.match(decideRepositoryRead(policy, user('auditor'), 'default', 'x'), { allow: false, reason: /no rule of roles \[auditor\] allows read$/, roles: ['auditor'] })
  t.match(decideRepositoryRead(policy, user('reader'), 'mirror', 'team-a/app'), { reason: /allows read on registry mirror$/ })
  t.match(decideRepositoryRead(policy, user('reader'), 'mirror', ''), { reason: /may not read the catalog of registry mirror: .* on registry mirror$/ })
  t.match(decideRepositoryRead(policy, user('reader'), 'default', 'team-b/app'), { reason: /allows read on repository team-b\/app$/ })
})
