import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { findApiKey, generateApiKey, sha256Hex } from '../../src/identity/api-key.js'
import { createAuthenticator } from '../../src/identity/authenticator.js'
import type { CallerCredentials } from '../../src/identity/credentials.js'
import { GatewayError } from '../../src/errors.js'
import { loadPolicy } from '../../src/policy/load.js'
import { PolicyStore } from '../../src/policy/store.js'
import type { Policy } from '../../src/policy/types.js'

const CI_KEY = generateApiKey()
const BOT_KEY = generateApiKey()
const policyText = (keys: Array<[string, string, string[]]>): string =>
  `apiKeys:\n${keys.map(([name, key, groups]) => `  - { name: ${name}, sha256: ${sha256Hex(key)}, groups: [${groups.join(', ')}] }`).join('\n')}\n`
const policy = loadPolicy(policyText([['ci-cleaner', CI_KEY, ['ci', 'deploy']], ['chat-bot', BOT_KEY, []]]), 'keys.yaml')
const fixed = (current: Policy | undefined) => ({ current: () => current })

/** The authentication failure, checked for the parts every one shares: 401, the challenge, no secret echoed. */
async function rejection (t: Test, promise: Promise<unknown>, secret?: string): Promise<GatewayError> {
  const error = await promise.then(() => t.fail('expected a rejection'), (error: unknown) => error) as GatewayError
  t.type(error, GatewayError)
  t.equal(error.code, 'UNAUTHENTICATED')
  t.equal(error.status, 401)
  t.match(error.headers['WWW-Authenticate'], /^Bearer realm="registry-delete-gateway"/)
  if (secret !== undefined) t.notOk(JSON.stringify({ ...error, message: error.message }).includes(secret), 'the credential is not echoed')
  return error
}

t.test('generated keys and their hashes', async t => {
  t.match(CI_KEY, /^rdg_[A-Za-z0-9_-]{43}$/)
  t.not(generateApiKey(), generateApiKey())
  t.equal(sha256Hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  t.equal(findApiKey(policy.apiKeys, BOT_KEY)?.name, 'chat-bot')
  t.equal(findApiKey(policy.apiKeys, 'nope'), undefined)
  t.equal(findApiKey([], CI_KEY), undefined)
})

t.test('the right key, in either header', async t => {
  const authenticator = createAuthenticator(fixed(policy))
  const expected = { subject: 'apikey:ci-cleaner', groups: ['ci', 'deploy'], kind: 'apikey' }
  t.same(await authenticator.authenticate({ authorization: `Bearer ${CI_KEY}` }), expected)
  t.same(await authenticator.authenticate({ authorization: `bearer  ${CI_KEY} ` }), expected, 'the scheme is case-insensitive')
  t.same(await authenticator.authenticate({ apiKey: CI_KEY }), expected)
  t.same(await authenticator.authenticate({ apiKey: BOT_KEY, authorization: '' }), { subject: 'apikey:chat-bot', groups: [], kind: 'apikey' }, 'an empty header counts as absent')
  const identity = await authenticator.authenticate({ apiKey: CI_KEY })
  identity.groups.push('admin')
  t.same(policy.apiKeys[0]?.groups, ['ci', 'deploy'], 'an identity cannot change the policy')
  authenticator.close()
})

t.test('a wrong key is refused in both headers', async t => {
  const authenticator = createAuthenticator(fixed(policy))
  const wrong = `${CI_KEY.slice(0, -1)}x`
  for (const credentials of [{ authorization: `Bearer ${wrong}` }, { apiKey: wrong }] satisfies CallerCredentials[]) {
    const error = await rejection(t, authenticator.authenticate(credentials), wrong)
    t.equal(error.detail, 'unknown API key (never issued, or revoked)')
    t.equal(error.headers['WWW-Authenticate'], 'Bearer realm="registry-delete-gateway", error="invalid_token"')
  }
})

t.test('a key removed from the policy stops working at the reload', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'rdg-keys-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, policyText([['ci-cleaner', CI_KEY, []], ['chat-bot', BOT_KEY, []]]))
  const store = new PolicyStore({ watch: false })
  store.load(file)
  const authenticator = createAuthenticator(store)
  t.equal((await authenticator.authenticate({ apiKey: BOT_KEY })).subject, 'apikey:chat-bot')
  writeFileSync(file, policyText([['ci-cleaner', CI_KEY, []]]))
  t.equal(store.reload(), true)
  await rejection(t, authenticator.authenticate({ apiKey: BOT_KEY }), BOT_KEY)
  t.equal((await authenticator.authenticate({ apiKey: CI_KEY })).subject, 'apikey:ci-cleaner', 'the others still work')
})

t.test('missing and unusable credentials', async t => {
  const authenticator = createAuthenticator(fixed(policy))
  const cases: Array<[CallerCredentials, string, string | undefined]> = [
    [{}, 'no credentials: send "Authorization: Bearer <API key or token>" or "X-API-Key: <API key>"', undefined],
    [{ authorization: ' ', apiKey: '' }, 'no credentials: send "Authorization: Bearer <API key or token>" or "X-API-Key: <API key>"', undefined],
    [{ authorization: `Bearer ${CI_KEY}`, apiKey: CI_KEY }, 'send one credential: either Authorization or X-API-Key, not both', 'invalid_request'],
    [{ authorization: `Basic ${Buffer.from(`u:${CI_KEY}`).toString('base64')}` }, 'the Authorization header must be "Bearer <API key or token>"', 'invalid_request'],
    [{ authorization: `Bearer ${CI_KEY} extra` }, 'the Authorization header must be "Bearer <API key or token>"', 'invalid_request'],
    [{ authorization: 'Bearer' }, 'the Authorization header must be "Bearer <API key or token>"', 'invalid_request'],
    [{ apiKey: 'k'.repeat(8193) }, 'the credential is longer than 8192 characters', 'invalid_request']
  ]
  for (const [credentials, detail, error] of cases) {
    const failure = await rejection(t, authenticator.authenticate(credentials), CI_KEY)
    t.equal(failure.detail, detail)
    t.equal(failure.headers['WWW-Authenticate'], `Bearer realm="registry-delete-gateway"${error === undefined ? '' : `, error="${error}"`}`)
  }
})

t.test('without a policy no credential is accepted', async t => {
  const authenticator = createAuthenticator(fixed(undefined))
  const error = await rejection(t, authenticator.authenticate({ apiKey: CI_KEY }), CI_KEY)
  t.equal(error.detail, 'no policy is loaded, so the gateway accepts no credentials yet')
})
