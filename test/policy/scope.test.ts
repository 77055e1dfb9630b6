import t from 'tap'
import { grantsAnywhere } from '../../src/policy/index.js'
import { loadPolicy } from '../../src/policy/load.js'

t.test('grantsAnywhere: no policy grants nothing; otherwise any rule of the caller\'s roles naming the action, or *', async t => {
  const identity = { subject: 'apikey:ci', groups: [], kind: 'apikey' as const }
  t.equal(grantsAnywhere(undefined, identity, 'audit'), false, 'without a policy nobody may audit')
  const policy = loadPolicy(`
roles:
  deleter: [{ actions: [delete], repositories: ["team/**"] }]
  admin: [{ actions: ["*"], repositories: ["**"] }]
bindings:
  - { role: deleter, subjects: ["apikey:ci"] }
  - { role: admin, subjects: ["apikey:root"] }
`, 'test policy')
  t.equal(grantsAnywhere(policy, identity, 'audit'), false, 'a role without audit')
  t.equal(grantsAnywhere(policy, identity, 'delete'), true, 'a role naming the action')
  t.equal(grantsAnywhere(policy, { subject: 'apikey:root', groups: [], kind: 'apikey' as const }, 'audit'), true, '* grants every action')
  t.equal(grantsAnywhere(policy, { subject: 'apikey:nobody', groups: [], kind: 'apikey' as const }, 'read'), false, 'no role at all')
})
