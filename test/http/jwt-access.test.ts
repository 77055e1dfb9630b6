import { exportJWK, exportSPKI, SignJWT, UnsecuredJWT, type JWTPayload } from 'jose'
import t from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { callDelete, callMe, headStatus, JwksServer, jwksOf, nowSeconds, signingKey, signToken, TRANSPORTS } from '../fixtures/access.js'
import { countingDispatcher, startGateway } from '../fixtures/gateway.js'

const ISSUER = 'https://sso.test/'
const AUDIENCE = 'registry-gateway'

const idp = new JwksServer()
const jwksUri = await idp.start()
t.teardown(async () => { await idp.stop() })
const rsa = await signingKey('rsa-1')
const ec = await signingKey('ec-1', 'ES256')
idp.jwks = await jwksOf(rsa, ec)

const POLICY = `
jwt:
  issuer: ${ISSUER}
  audience: ${AUDIENCE}
  jwksUri: ${jwksUri}
roles:
  releaser:
    - actions: [delete, force]
      repositories: ["team-a/**"]
      tags: ["pr-*", "rc-*"]
  reader:
    - actions: [read]
      repositories: ["**"]
bindings:
  - { role: releaser, subjects: ["group:release-managers"] }
  - { role: reader, subjects: ["user:carol"] }
protectedTags:
  - tags: ["latest"]
`

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const counted = countingDispatcher(t)
// This file presents many refused tokens from one address; the failed-authentication budget has its own test.
const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, dispatcher: counted.dispatcher, policy: POLICY, config: { limits: { failedAuthPerWindow: 100_000 } } })

/** Claims of a token the policy accepts; each case overrides some (undefined leaves a claim out). */
function claims (overrides: JWTPayload = {}): JWTPayload {
  return { sub: 'alice', groups: ['release-managers'], iss: ISSUER, aud: AUDIENCE, iat: nowSeconds(), exp: nowSeconds() + 300, ...overrides }
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

t.test('accepted tokens: the subject and groups claims decide, end to end', async t => {
  const cases: Array<[string, () => Promise<string>]> = [
    ['RS256, roles through the groups claim', async () => await signToken(rsa, claims())],
    ['ES256', async () => await signToken(ec, claims())],
    ['groups as a single string', async () => await signToken(rsa, claims({ groups: 'release-managers' }))],
    ['expired within the 30 s leeway', async () => await signToken(rsa, claims({ exp: nowSeconds() - 10 }))]
  ]
  let index = 0
  for (const [title, make] of cases) {
    for (const transport of TRANSPORTS) {
      const name = `team-a/jwt-ok-${transport}`
      const tag = `pr-${++index}`
      const image = await pushImage(target, name, [tag], 'oci')
      const mark = counted.requests.length
      const outcome = await callDelete(gateway.app, transport, { name, tag }, bearer(await make()))
      t.equal(outcome.status, 200, `${transport}, ${title}`)
      t.match(outcome.result, { name, tag, digest: image.digest, deleted: true, allowed: true }, `${transport}, ${title}`)
      t.same(counted.requests.slice(mark).filter(request => request.method === 'DELETE'), [{ method: 'DELETE', path: `/v2/${name}/manifests/${image.digest}` }])
      t.equal(await headStatus(registry.url, name, tag), 404, `${transport}, ${title}: the tag is gone`)
    }
  }
})

t.test('refused tokens: 401 naming why, the token not echoed, no registry call', async t => {
  const stranger = await signingKey('stranger')
  const publicPem = await exportSPKI(rsa.publicKey)
  const publicJwk = JSON.stringify(await exportJWK(rsa.publicKey))
  const hs256 = async (secret: string): Promise<string> =>
    await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: rsa.kid }).sign(new TextEncoder().encode(secret))
  const cases: Array<[string, () => Promise<string>, string]> = [
    ['expired', async () => await signToken(rsa, claims({ iat: nowSeconds() - 600, exp: nowSeconds() - 120 })), 'the token has expired'],
    ['not yet valid', async () => await signToken(rsa, claims({ nbf: nowSeconds() + 120 })), 'the token is not valid yet'],
    ['wrong issuer', async () => await signToken(rsa, claims({ iss: 'https://evil.test/' })), 'the token was issued by an issuer the gateway does not accept'],
    ['wrong audience', async () => await signToken(rsa, claims({ aud: 'another-service' })), 'the token is meant for another audience'],
    ['no expiry', async () => await signToken(rsa, claims({ exp: undefined })), 'the token must carry an expiry (exp)'],
    ['no subject', async () => await signToken(rsa, claims({ sub: undefined })), 'the token has no sub claim naming its subject'],
    ['alg: none', async () => new UnsecuredJWT(claims()).encode(), 'the token algorithm is not accepted; only asymmetric signatures are'],
    ['HS256 signed with the public key (PEM)', async () => await hs256(publicPem), 'the token algorithm is not accepted; only asymmetric signatures are'],
    ['HS256 signed with the public key (JWK)', async () => await hs256(publicJwk), 'the token algorithm is not accepted; only asymmetric signatures are'],
    ['unknown kid', async () => await signToken(stranger, claims()), "the key that signed the token (kid) is not one of the identity provider's keys"],
    ['a known kid, signed by another key', async () => await signToken({ ...stranger, kid: rsa.kid }, claims()), 'the token signature does not verify']
  ]
  const name = 'team-a/jwt-refused'
  await pushImage(target, name, ['pr-1'], 'schema2')
  const mark = counted.requests.length
  for (const [title, make, detail] of cases) {
    const token = await make()
    for (const transport of TRANSPORTS) {
      const label = `${transport}, ${title}`
      const outcome = await callDelete(gateway.app, transport, { name, tag: 'pr-1' }, bearer(token))
      t.equal(outcome.status, 401, label)
      t.equal(outcome.headers['www-authenticate'], 'Bearer realm="registry-delete-gateway", error="invalid_token"', label)
      t.match(outcome.error, { code: 'UNAUTHENTICATED', status: 401, detail }, label)
      t.notOk(JSON.stringify(outcome.body).includes(token.split('.')[1] as string), `${label}: the token is not echoed`)
      const me = await callMe(gateway.app, transport, bearer(token))
      t.equal(me.status, 401, `${label}: me refuses it too`)
    }
  }
  t.same(counted.requests.slice(mark), [], 'the registry saw nothing')
  t.equal(await headStatus(registry.url, name, 'pr-1'), 200, 'the tag is still there')
})

t.test('authenticated but not authorized: 403 naming the user, and the registry untouched', async t => {
  const cases: Array<{ title: string, token: () => Promise<string>, repository: string, tag: string, coTags?: string[], force?: boolean, code: string, subject: string, image: string, action: string, why: string, resolvedFirst?: boolean }> = [
    {
      title: 'a user binding that only reads',
      token: async () => await signToken(rsa, claims({ sub: 'carol', groups: [] })),
      repository: 'team-a/jwt-reader',
      tag: 'pr-1',
      code: 'FORBIDDEN',
      subject: 'user:carol',
      image: 'pr-1',
      action: 'delete',
      why: 'no rule of roles [reader] allows delete'
    },
    {
      title: 'groups bound to no role',
      token: async () => await signToken(ec, claims({ sub: 'dave', groups: ['qa', 'dev'] })),
      repository: 'team-a/jwt-nobody',
      tag: 'pr-1',
      code: 'FORBIDDEN',
      subject: 'user:dave',
      image: 'pr-1',
      action: 'delete',
      why: 'subject user:dave and its groups qa, dev have no role'
    },
    {
      title: 'a repository outside the group role',
      token: async () => await signToken(rsa, claims()),
      repository: 'team-b/jwt',
      tag: 'pr-1',
      code: 'FORBIDDEN',
      subject: 'user:alice',
      image: 'pr-1',
      action: 'delete',
      why: 'no rule of roles [releaser] allows delete on repository {name}'
    },
    {
      title: 'a protected tag',
      token: async () => await signToken(rsa, claims()),
      repository: 'team-a/jwt-protected',
      tag: 'latest',
      code: 'PROTECTED_TAG',
      subject: 'user:alice',
      image: 'latest',
      action: 'delete',
      why: 'the tag is protected by protectedTags[0]; nobody may delete it, admins included'
    },
    {
      title: 'a forced delete whose co-tag is protected',
      token: async () => await signToken(rsa, claims()),
      repository: 'team-a/jwt-force',
      tag: 'rc-1',
      coTags: ['latest'],
      force: true,
      code: 'PROTECTED_TAG',
      subject: 'user:alice',
      image: 'latest',
      action: 'delete',
      why: 'the tag is protected by protectedTags[0]; nobody may delete it, admins included',
      resolvedFirst: true
    }
  ]
  for (const testCase of cases) {
    for (const transport of TRANSPORTS) {
      const label = `${transport}, ${testCase.title}`
      const name = `${testCase.repository}-${transport}`
      const tags = [testCase.tag, ...testCase.coTags ?? []]
      await pushImage(target, name, tags, 'schema2')
      const mark = counted.requests.length
      const outcome = await callDelete(gateway.app, transport, { name, tag: testCase.tag, ...(testCase.force === undefined ? {} : { force: testCase.force }) }, bearer(await testCase.token()))
      const image = `${name}:${testCase.image}`
      t.equal(outcome.status, transport === 'rest' ? 403 : 200, label)
      t.match(outcome.error, { code: testCase.code, status: 403, subject: testCase.subject, action: testCase.action, image, registry: 'default' }, label)
      t.equal(outcome.error?.detail, `${testCase.subject} may not ${testCase.action} ${image} in registry default: ${testCase.why.replace('{name}', name)}`, label)
      const upstream = counted.requests.slice(mark)
      if (testCase.resolvedFirst === true) {
        t.ok(upstream.length > 0, `${label}: decided once the co-tags were known`)
        t.same(upstream.filter(request => request.method === 'DELETE'), [], `${label}: no DELETE`)
      } else {
        t.same(upstream, [], `${label}: decided before resolve; the registry saw nothing`)
      }
      for (const tag of tags) t.equal(await headStatus(registry.url, name, tag), 200, `${label}: ${tag} is still there`)
    }
  }

  const name = 'team-a/jwt-dry'
  await pushImage(target, name, ['pr-1'], 'schema2')
  for (const transport of TRANSPORTS) {
    const dry = await callDelete(gateway.app, transport, { name, tag: 'pr-1', dryRun: true }, bearer(await signToken(rsa, claims({ sub: 'carol', groups: [] }))))
    t.equal(dry.status, 200, `${transport}: a reader's dry-run answers`)
    t.match(dry.result, { dryRun: true, deleted: false, allowed: false, reason: `FORBIDDEN: user:carol may not delete ${name}:pr-1 in registry default: no rule of roles [reader] allows delete` })
  }
  t.equal(await headStatus(registry.url, name, 'pr-1'), 200)
})

t.test('me: who the gateway takes a token for', async t => {
  const cases: Array<[JWTPayload, { subject: string, groups: string[], roles: string[] }]> = [
    [{}, { subject: 'user:alice', groups: ['release-managers'], roles: ['releaser'] }],
    [{ sub: 'carol', groups: undefined }, { subject: 'user:carol', groups: [], roles: ['reader'] }],
    [{ sub: 'dave', groups: ['qa', 'release-managers'] }, { subject: 'user:dave', groups: ['qa', 'release-managers'], roles: ['releaser'] }],
    [{ sub: 'erin', groups: ['qa'] }, { subject: 'user:erin', groups: ['qa'], roles: [] }]
  ]
  for (const transport of TRANSPORTS) {
    for (const [overrides, expected] of cases) {
      const outcome = await callMe(gateway.app, transport, bearer(await signToken(ec, claims(overrides))))
      t.equal(outcome.status, 200, `${transport} ${expected.subject}`)
      t.same(outcome.result, expected, `${transport} ${expected.subject}`)
    }
  }
})

t.test('key rotation at the identity provider', async t => {
  const name = 'team-a/jwt-rotation'
  await pushImage(target, name, ['pr-1'], 'schema2')
  await pushImage(target, name, ['pr-2'], 'schema2')
  const retiredToken = await signToken(rsa, claims())
  t.equal((await callMe(gateway.app, 'rest', bearer(retiredToken))).status, 200, 'the current key works, so its JWKS is cached')

  const rotated = await signingKey('rsa-2')
  idp.jwks = await jwksOf(rotated, ec)
  const rotatedToken = await signToken(rotated, claims())
  const fetches = idp.fetches
  const early = await callDelete(gateway.app, 'rest', { name, tag: 'pr-1' }, bearer(rotatedToken))
  t.equal(early.status, 401, 'within 30 s of the last fetch a new kid is refused')
  t.equal(early.error?.detail, "the key that signed the token (kid) is not one of the identity provider's keys")
  t.equal(idp.fetches, fetches, 'and the JWKS is not refetched (the cooldown protects the identity provider)')

  // jose measures its cooldown with Date.now(): move that clock past it rather than wait 30 s.
  const realNow = Date.now
  Date.now = () => realNow() + 31_000
  try {
    const rest = await callDelete(gateway.app, 'rest', { name, tag: 'pr-1' }, bearer(rotatedToken))
    t.equal(rest.status, 200, 'after the cooldown the new kid makes the gateway refetch, and the token verifies')
    t.equal(rest.result?.deleted, true)
    t.equal(idp.fetches, fetches + 1, 'fetched once')
    const graphql = await callDelete(gateway.app, 'graphql', { name, tag: 'pr-2' }, bearer(rotatedToken))
    t.equal(graphql.result?.deleted, true, 'GraphQL too, from the cache')
    t.equal(idp.fetches, fetches + 1, 'no further fetch')
    for (const transport of TRANSPORTS) {
      const retired = await callMe(gateway.app, transport, bearer(retiredToken))
      t.equal(retired.status, 401, `${transport}: a token from the retired key is refused`)
      t.equal(retired.error?.detail, "the key that signed the token (kid) is not one of the identity provider's keys")
    }
  } finally {
    Date.now = realNow
  }
  t.equal(await headStatus(registry.url, name, 'pr-1'), 404)
  t.equal(await headStatus(registry.url, name, 'pr-2'), 404)
})

t.test('an identity provider that cannot be reached: 503, not the caller\'s fault', async t => {
  const gone = new JwksServer()
  const goneUri = await gone.start()
  await gone.stop()
  const downCounted = countingDispatcher(t)
  const down = await startGateway(t, { registries: { default: { url: registry.url } }, dispatcher: downCounted.dispatcher, policy: POLICY.replace(jwksUri, goneUri) })
  const name = 'team-a/jwt-idp-down'
  await pushImage(target, name, ['pr-1'], 'schema2')
  const token = await signToken(rsa, claims())
  const mark = downCounted.requests.length
  for (const transport of TRANSPORTS) {
    const outcome = await callDelete(down.app, transport, { name, tag: 'pr-1' }, bearer(token))
    t.equal(outcome.status, 503, transport)
    t.match(outcome.error, { code: 'IDENTITY_PROVIDER_UNAVAILABLE', status: 503, detail: "the gateway cannot fetch the identity provider's signing keys to check the token; try again later" }, transport)
  }
  t.same(downCounted.requests.slice(mark), [], 'the registry saw nothing')
  t.equal(await headStatus(registry.url, name, 'pr-1'), 200)
})
