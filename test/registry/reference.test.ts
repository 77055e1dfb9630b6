import t from 'tap'
import { GatewayError } from '../../src/errors.js'
import { parseImageRef, parseImageString, validateDigest, validateName, validateTag } from '../../src/registry/reference.js'

function fieldOf (fn: () => unknown): unknown {
  try {
    fn()
  } catch (error) {
    t.ok(error instanceof GatewayError)
    t.equal((error as GatewayError).code, 'INVALID_REFERENCE')
    return (error as GatewayError).extras.field
  }
  return 'no error'
}

t.test('valid names follow the distribution grammar', async t => {
  for (const name of ['app', 'team/app', 'team-a/app/api', 'a.b_c__d---e', 'x9/y8', 'a'.repeat(255)]) {
    t.equal(validateName(name), name, name.slice(0, 40))
  }
})

t.test('invalid names name the field and the rule', async t => {
  for (const name of ['', 'Team/app', 'team//app', '/app', 'app/', '../etc', 'team/..', '-app', 'app-', 'a_-b', 'a b',
    'app\u0000', 'ａpp', 'host:5000/app', 'a'.repeat(256), 'app%2Fx', 'a___b']) {
    t.equal(fieldOf(() => validateName(name)), 'name', JSON.stringify(name.slice(0, 40)))
  }
  const error = t.throws(() => validateName('x'.repeat(300))) as GatewayError
  t.match(error.detail, /at most 255/)
  t.match(error.detail, /…/, 'long input is shortened in the detail')
})

t.test('tags: word character first, then up to 127 of [\\w.-]', async t => {
  for (const tag of ['v1', 'latest', '_x', 'V1.2.3-rc.1', 'a'.repeat(128)]) t.equal(validateTag(tag), tag)
  for (const tag of ['', '.v1', '-v1', 'a'.repeat(129), 'v1/x', 'v 1', 'v1:x', 'tag\n']) {
    t.equal(fieldOf(() => validateTag(tag)), 'tag', JSON.stringify(tag.slice(0, 20)))
  }
})

t.test('digests: algorithm and hex, sha256 exactly 64 lowercase hex', async t => {
  const good = `sha256:${'a'.repeat(64)}`
  t.equal(validateDigest(good), good)
  t.equal(validateDigest(`sha512:${'b'.repeat(128)}`), `sha512:${'b'.repeat(128)}`)
  for (const digest of ['sha256', `sha256:${'a'.repeat(63)}`, `sha256:${'A'.repeat(64)}`, `:${'a'.repeat(64)}`, 'sha256:zz!']) {
    t.equal(fieldOf(() => validateDigest(digest)), 'digest', digest)
  }
})

t.test('name:tag strings split at the last colon after the last slash', async t => {
  t.same(parseImageString('team/app:v1'), { repository: 'team/app', tag: 'v1' })
  t.same(parseImageRef('team/app', 'v1'), { repository: 'team/app', tag: 'v1' })
  t.equal(fieldOf(() => parseImageString('team/app')), 'image')
  t.equal(fieldOf(() => parseImageString('host:5000/app')), 'image')
})
