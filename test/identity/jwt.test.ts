import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { CompactSign, exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JSONWebKeySet, type JWTPayload } from 'jose'
import t from 'tap'
import { createAuthenticator, type Authenticator, type AuthenticatorOptions } from '../../src/identity/authenticator.js'
import { GatewayError } from '../../src/errors.js'
import { loadPolicy } from '../../src/policy/load.js'
import type { Policy } from '../../src/policy/types.js'

const ISSUER = 'https://sso.test/'
const AUDIENCE = 'registry-gateway'

interface SigningKey { kid: string, alg: string, privateKey: CryptoKey, publicKey: CryptoKey }

async function signingKey (kid: string, alg = 'RS256'): Promise<SigningKey> {
  return { kid, alg, ...await generateKeyPair(alg, { extractable: true }) }
}

async function jwksOf (...keys: SigningKey[]): Promise<JSONWebKeySet> {
  return { keys: await Promise.all(keys.map(async key => ({ ...await exportJWK(key.publicKey), kid: key.kid, alg: key.alg, use: 'sig' }))) }
}

/** An identity provider's JWKS endpoint on 127.0.0.1 whose keys and answers the test controls. */
class JwksServer {
  jwks: JSONWebKeySet = { keys: [] }
  status = 200
  fetches = 0
  readonly server: Server = createServer((request, response) => {
    this.fetches++
    response.writeHead(this.status, { 'content-type': 'application/json' }).end(JSON.stringify(this.jwks))
  })

  async start (): Promise<string> {
    await new Promise<void>(resolve => this.server.listen(0, '127.0.0.1', resolve))
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/jwks`
  }

  async stop (): Promise<void> {
    await new Promise(resolve => this.server.close(resolve))
  }
}

function policyFor (jwksUri: string, extra = ''): Policy {
  return loadPolicy(`jwt:\n  issuer: ${ISSUER}\n  audience: ${AUDIENCE}\n  jwksUri: ${jwksUri}\n${extra}`, 'jwt.yaml')
}

const now = (): number => Math.floor(Date.now() / 1000)

/** A token from the test's identity provider; a claim given as undefined is left out. */
async function token (key: SigningKey, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  const defaults = { sub: 'alice', groups: ['ci'], iss: ISSUER, aud: AUDIENCE, iat: now(), exp: now() + 300 }
  return await new SignJWT({ ...defaults, ...claims }).setProtectedHeader({ alg: key.alg, kid: key.kid, ...header }).sign(key.privateKey)
}

const base64url = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')

const server = new JwksServer()
const jwksUri = await server.start()
t.teardown(async () => { await server.stop() })
const first = await signingKey('first')
const ecKey = await signingKey('ec', 'ES256')
server.jwks = await jwksOf(first, ecKey)

/** An authenticator over a policy the test can swap, as a reload would. */
function authenticatorFor (policy: Policy, options: AuthenticatorOptions = {}): Authenticator & { swap: (next: Policy) => void } {
  let current = policy
  const authenticator = createAuthenticator({ current: () => current }, options)
  t.teardown(() => { authenticator.close() })
  return Object.assign(authenticator, { swap: (next: Policy) => { current = next } })
}

async function refused (promise: Promise<unknown>): Promise<GatewayError> {
  return await promise.then(() => { throw new Error('expected a refusal') }, (error: unknown) => error as GatewayError)
}

t.test('a valid token gives a user identity', async t => {
  const authenticator = authenticatorFor(policyFor(jwksUri))
  t.same(await authenticator.authenticate({ authorization: `Bearer ${await token(first)}` }), { subject: 'user:alice', groups: ['ci'], kind: 'jwt' })
  t.same(await authenticator.authenticate({ authorization: `Bearer ${await token(ecKey, { groups: 'ops' })}` }), { subject: 'user:alice', groups: ['ops'], kind: 'jwt' }, 'ES256; a single group as a string')
  t.same(await authenticator.authenticate({ authorization: `Bearer ${await token(first, { groups: ['a', 7, { b: 1 }, 'c'] })}` }), { subject: 'user:alice', groups: ['a', 'c'], kind: 'jwt' }, 'entries that are not strings are skipped')
  t.same((await authenticator.authenticate({ authorization: `Bearer ${await token(first, { groups: 42 })}` })).groups, [], 'a groups claim of another type gives none')
  t.same((await authenticator.authenticate({ authorization: `Bearer ${await token(first, { exp: now() - 10 })}` })).subject, 'user:alice', 'within the leeway')
})

t.test('custom subject and groups claims', async t => {
  const authenticator = authenticatorFor(policyFor(jwksUri, '  subjectClaim: email\n  groupsClaim: roles\n'))
  t.same(await authenticator.authenticate({ authorization: `Bearer ${await token(first, { email: 'bob@example.com', roles: ['admins'] })}` }), {
    subject: 'user:bob@example.com', groups: ['admins'], kind: 'jwt'
  })
  t.same((await authenticator.authenticate({ authorization: `Bearer ${await token(first, { email: 'bob@example.com' })}` })).groups, [], 'no groups claim, no groups')
  const error = await refused(authenticator.authenticate({ authorization: `Bearer ${await token(first)}` }))
  t.equal(error.detail, 'the token has no email claim naming its subject')
  const empty = await refused(authenticator.authenticate({ authorization: `Bearer ${await token(first, { email: '' })}` }))
  t.equal(empty.detail, 'the token has no email claim naming its subject', 'an empty subject is none')
  t.equal(error.headers['WWW-Authenticate'], 'Bearer realm="registry-delete-gateway", error="invalid_token"')
})

t.test('one of several audiences', async t => {
  const policy = loadPolicy(`jwt:\n  issuer: ${ISSUER}\n  audience: [other, ${AUDIENCE}]\n  jwksUri: ${jwksUri}\n`, 'jwt.yaml')
  const authenticator = authenticatorFor(policy)
  t.equal((await authenticator.authenticate({ authorization: `Bearer ${await token(first)}` })).subject, 'user:alice')
  t.equal((await authenticator.authenticate({ authorization: `Bearer ${await token(first, { aud: ['x', 'other'] })}` })).subject, 'user:alice')
})

t.test('tokens that are refused, and why', async t => {
  const authenticator = authenticatorFor(policyFor(jwksUri, '  leewaySeconds: 5\n'))
  const stranger = await signingKey('stranger')
  const publicPem = await exportSPKI(first.publicKey)
  const valid = await token(first)
  const [header, payload] = valid.split('.')
  const cases: Array<[string, () => Promise<string>, string]> = [
    ['expired', async () => await token(first, { exp: now() - 60 }), 'the token has expired'],
    ['not yet valid', async () => await token(first, { nbf: now() + 60 }), 'the token is not valid yet'],
    ['wrong issuer', async () => await token(first, { iss: 'https://evil.test/' }), 'the token was issued by an issuer the gateway does not accept'],
    ['wrong audience', async () => await token(first, { aud: 'another-service' }), 'the token is meant for another audience'],
    ['no expiry', async () => await token(first, { exp: undefined }), 'the token must carry an expiry (exp)'],
    ['a bad iat', async () => await token(first, { iat: 'yesterday' as unknown as number }), "the token's iat claim is invalid"],
    ['alg: none', async () => `${base64url({ alg: 'none', kid: 'first' })}.${payload as string}.`, 'the token algorithm is not accepted; only asymmetric signatures are'],
    ['HS256 signed with the public key', async () => await new SignJWT({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, exp: now() + 60 }).setProtectedHeader({ alg: 'HS256', kid: 'first' }).sign(new TextEncoder().encode(publicPem)), 'the token algorithm is not accepted; only asymmetric signatures are'],
    ['an unknown kid', async () => await token(stranger), "the key that signed the token (kid) is not one of the identity provider's keys"],
    ['a known kid, another key', async () => await token({ ...stranger, kid: 'first' }), 'the token signature does not verify'],
    ['a tampered payload', async () => `${header as string}.${base64url({ sub: 'admin', iss: ISSUER, aud: AUDIENCE, exp: now() + 60 })}.${valid.split('.')[2] as string}`, 'the token signature does not verify'],
    ['a header that is not JSON', async () => `${base64url('{{')}.${payload as string}.${valid.split('.')[2] as string}`, 'the token is malformed'],
    ['claims that are not a JSON object', async () => await new CompactSign(new TextEncoder().encode('"text"')).setProtectedHeader({ alg: 'RS256', kid: 'first' }).sign(first.privateKey), 'the token is malformed'],
    ['an unknown critical header', async () => await new CompactSign(new TextEncoder().encode(JSON.stringify({ sub: 'a', iss: ISSUER, aud: AUDIENCE, exp: now() + 60 }))).setProtectedHeader({ alg: 'RS256', kid: 'first', crit: ['x-custom'], 'x-custom': 1 }).sign(first.privateKey, { crit: { 'x-custom': true } }), 'the token uses a feature the gateway does not support']
  ]
  for (const [name, make, detail] of cases) {
    const presented = await make()
    const error = await refused(authenticator.authenticate({ authorization: `Bearer ${presented}` }))
    t.type(error, GatewayError, name)
    t.equal(error.code, 'UNAUTHENTICATED', name)
    t.equal(error.detail, detail, name)
    t.equal(error.headers['WWW-Authenticate'], 'Bearer realm="registry-delete-gateway", error="invalid_token"', name)
    t.notOk(JSON.stringify({ ...error, message: error.message }).includes(presented.split('.')[1] as string), `${name}: the token is not echoed`)
  }
})

t.test('a token without kid when the JWKS has several fitting keys', async t => {
  const twins = [await signingKey('twin'), await signingKey('twin')]
  server.jwks = await jwksOf(...twins)
  const authenticator = authenticatorFor(policyFor(jwksUri))
  const error = await refused(authenticator.authenticate({ authorization: `Bearer ${await token(twins[0] as SigningKey, {}, { kid: undefined })}` }))
  t.equal(error.detail, 'the token does not say (kid) which of several keys signed it')
  server.jwks = await jwksOf(first, ecKey)
})

t.test('key rotation: a token with a new kid refetches the JWKS', async t => {
  const authenticator = authenticatorFor(policyFor(jwksUri), { jwksCooldownMs: 0 })
  const rotated = await signingKey('rotated')
  t.equal((await authenticator.authenticate({ authorization: `Bearer ${await token(first)}` })).subject, 'user:alice')
  server.jwks = await jwksOf(rotated)
  const fetches = server.fetches
  t.equal((await authenticator.authenticate({ authorization: `Bearer ${await token(rotated)}` })).subject, 'user:alice', 'the new key verifies')
  t.equal(server.fetches, fetches + 1, 'fetched once for the unknown kid')
  const error = await refused(authenticator.authenticate({ authorization: `Bearer ${await token(first)}` }))
  t.equal(error.detail, "the key that signed the token (kid) is not one of the identity provider's keys", 'the retired key no longer verifies')
  server.jwks = await jwksOf(first, ecKey)
})

t.test('the cooldown limits refetches for unknown kids', async t => {
  const authenticator = authenticatorFor(policyFor(jwksUri))
  await authenticator.authenticate({ authorization: `Bearer ${await token(first)}` })
  const fetches = server.fetches
  const stranger = await signingKey('stranger')
  for (let i = 0; i < 3; i++) await refused(authenticator.authenticate({ authorization: `Bearer ${await token(stranger)}` }))
  t.equal(server.fetches, fetches, 'junk kids do not reach the identity provider')
})

t.test('keys are cached per policy version', async t => {
  const policy = policyFor(jwksUri)
  const authenticator = authenticatorFor(policy)
  const fetches = server.fetches
  await authenticator.authenticate({ authorization: `Bearer ${await token(first)}` })
  await authenticator.authenticate({ authorization: `Bearer ${await token(first)}` })
  t.equal(server.fetches, fetches + 1, 'one fetch for several tokens')
  authenticator.swap(policyFor(jwksUri))
  await authenticator.authenticate({ authorization: `Bearer ${await token(first)}` })
  t.equal(server.fetches, fetches + 2, 'a reloaded policy fetches afresh')
  authenticator.close()
  await authenticator.authenticate({ authorization: `Bearer ${await token(first)}` })
  t.equal(server.fetches, fetches + 3, 'close drops the cache')
})

t.test('when the keys cannot be fetched the caller is not blamed', async t => {
  const warnings: Array<[object, string]> = []
  const logger = { warn: (details: object, message: string) => { warnings.push([details, message]) } }
  const down = new JwksServer()
  const downUri = await down.start()
  await down.stop()
  server.status = 500
  for (const uri of [downUri, jwksUri]) {
    const authenticator = authenticatorFor(policyFor(uri), { logger, jwksTimeoutMs: 2000 })
    const presented = await token(first)
    const error = await refused(authenticator.authenticate({ authorization: `Bearer ${presented}` }))
    t.equal(error.code, 'IDENTITY_PROVIDER_UNAVAILABLE')
    t.equal(error.detail, "the gateway cannot fetch the identity provider's signing keys to check the token; try again later")
    t.same(warnings.at(-1)?.[0], { jwksUri: uri, error: (error.cause as Error).message })
    t.equal(warnings.at(-1)?.[1], 'cannot fetch the JWKS')
  }
  server.status = 200
  const silent = authenticatorFor(policyFor(downUri))
  t.equal((await refused(silent.authenticate({ authorization: `Bearer ${await token(first)}` }))).code, 'IDENTITY_PROVIDER_UNAVAILABLE', 'without a logger too')
})

t.test('a policy without a jwt section refuses tokens', async t => {
  const authenticator = authenticatorFor(loadPolicy('roles:\n  r: [{ actions: [read], repositories: ["**"] }]', 'keys-only.yaml'))
  const error = await refused(authenticator.authenticate({ authorization: `Bearer ${await token(first)}` }))
  t.equal(error.code, 'UNAUTHENTICATED')
  t.equal(error.detail, 'tokens are not accepted here (the policy names no issuer); use an API key')
})

t.test('lifetime: exp - iat at most jwt.maxLifetimeSeconds (default one day); no iat, no entry', async t => {
  const authenticator = authenticatorFor(policyFor(jwksUri))
  const refusal = async (claims: JWTPayload): Promise<string> => (await refused(authenticator.authenticate({ authorization: `Bearer ${await token(first, claims)}` }))).detail
  t.equal(await refusal({ iat: now(), exp: now() + 10 * 365 * 86_400 }),
    'the token is valid for 315360000 s (exp - iat); the gateway accepts at most 86400 s (jwt.maxLifetimeSeconds)', 'a ten-year token')
  t.equal(await refusal({ iat: now() - 100, exp: now() + 86_301 }), 'the token is valid for 86401 s (exp - iat); the gateway accepts at most 86400 s (jwt.maxLifetimeSeconds)')
  t.equal((await authenticator.authenticate({ authorization: `Bearer ${await token(first, { iat: now() - 100, exp: now() + 86_300 })}` })).subject, 'user:alice', 'exactly one day')
  t.equal(await refusal({ iat: undefined }), 'the token must carry its issue time (iat), so that its lifetime can be checked', 'fail closed without iat')
  t.equal(await refusal({ iat: now() + 3600, exp: now() + 7200 }), 'the token claims to be issued in the future (iat)', 'an iat in the future cannot stretch the lifetime')
  const short = authenticatorFor(policyFor(jwksUri, '  maxLifetimeSeconds: 600\n'))
  const error = await refused(short.authenticate({ authorization: `Bearer ${await token(first, { exp: now() + 900 })}` }))
  t.match(error, { code: 'UNAUTHENTICATED', detail: /at most 600 s/, headers: { 'WWW-Authenticate': 'Bearer realm="registry-delete-gateway", error="invalid_token"' } })
})

t.test('typ: absent, JWT or at+jwt only (case-insensitive, application/ optional)', async t => {
  const authenticator = authenticatorFor(policyFor(jwksUri))
  for (const typ of [undefined, 'JWT', 'jwt', 'at+jwt', 'AT+JWT', 'application/at+jwt', 'Application/JWT']) {
    t.equal((await authenticator.authenticate({ authorization: `Bearer ${await token(first, {}, { typ })}` })).subject, 'user:alice', `typ ${String(typ)}`)
  }
  const claims = JSON.stringify({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, iat: now(), exp: now() + 60 })
  const numericTyp = await new CompactSign(new TextEncoder().encode(claims)).setProtectedHeader({ alg: 'RS256', kid: 'first', typ: 7 as unknown as string }).sign(first.privateKey)
  const others = [
    ...await Promise.all(['logout+jwt', 'dpop+jwt', 'secevent+jwt', 'application/jwt+extra', ''].map(async typ => await token(first, {}, { typ }))),
    numericTyp
  ]
  for (const presented of others) {
    const error = await refused(authenticator.authenticate({ authorization: `Bearer ${presented}` }))
    t.equal(error.detail, 'the token type (typ header) is not accepted; only JWT or at+jwt access tokens are')
  }
})
