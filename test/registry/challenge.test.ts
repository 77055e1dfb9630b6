import t from 'tap'
import { parseChallenges } from '../../src/registry/challenge.js'

t.test('distribution bearer challenge', async t => {
  t.same(parseChallenges('Bearer realm="http://127.0.0.1:5001/token",service="registry",scope="repository:team/app:pull"'), [{
    scheme: 'bearer',
    params: { realm: 'http://127.0.0.1:5001/token', service: 'registry', scope: 'repository:team/app:pull' }
  }])
})

t.test('quoted commas, escapes, spaces and error parameters', async t => {
  t.same(parseChallenges('Bearer realm="https://auth/token", scope="repository:a:pull,delete repository:b:pull" , error="insufficient_scope", x="a \\"quoted\\" word"'), [{
    scheme: 'bearer',
    params: { realm: 'https://auth/token', scope: 'repository:a:pull,delete repository:b:pull', error: 'insufficient_scope', x: 'a "quoted" word' }
  }])
})

t.test('several challenges in one header, case-insensitive names, token values', async t => {
  t.same(parseChallenges('Basic realm="Registry Realm", BEARER Realm=https://x/token,service=reg'), [
    { scheme: 'basic', params: { realm: 'Registry Realm' } },
    { scheme: 'bearer', params: { realm: 'https://x/token', service: 'reg' } }
  ])
})

t.test('token68 and bare schemes', async t => {
  t.same(parseChallenges('Negotiate abc123==, Basic'), [
    { scheme: 'negotiate', params: { '': 'abc123==' } },
    { scheme: 'basic', params: {} }
  ])
  t.same(parseChallenges('Basic realm=x'), [{ scheme: 'basic', params: { realm: 'x' } }])
})

t.test('garbage and truncated input never throw', async t => {
  t.same(parseChallenges(''), [])
  t.same(parseChallenges(',,, '), [])
  t.same(parseChallenges('Bearer realm="unterminated'), [{ scheme: 'bearer', params: { realm: 'unterminated' } }])
  t.same(parseChallenges('Bearer realm="a",'), [{ scheme: 'bearer', params: { realm: 'a' } }])
  t.same(parseChallenges('Bearer ="x"'), [{ scheme: 'bearer', params: {} }])
})
