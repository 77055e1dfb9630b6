import { X509Certificate, createPublicKey } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import t from 'tap'
import { request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { libtrustKeyId, startTokenIssuer, type TokenIssuer } from '../fixtures/token-issuer.js'

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'

async function send (method: 'GET' | 'HEAD' | 'DELETE', url: string, headers: Record<string, string> = {}): Promise<{ status: number, headers: Record<string, unknown>, body: string }> {
  const response = await request(url, { method, headers })
  return { status: response.statusCode, headers: response.headers, body: await response.body.text() }
}

function basic (user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
}

async function fetchToken (issuer: TokenIssuer, scopes: string[], authorization?: string): Promise<{ status: number, body: Record<string, unknown> }> {
  const query = new URLSearchParams({ service: issuer.service })
  for (const scope of scopes) query.append('scope', scope)
  const response = await send('GET', `${issuer.realm}?${query.toString()}`, authorization === undefined ? {} : { authorization })
  return { status: response.status, body: JSON.parse(response.body) }
}

async function token (issuer: TokenIssuer, scopes: string[], user = 'alice', password = 'alice-pw'): Promise<string> {
  const { status, body } = await fetchToken(issuer, scopes, basic(user, password))
  if (status !== 200) throw new Error(`token request answered ${status}`)
  return body.token as string
}

function decode (jwt: string): { header: Record<string, unknown>, claims: Record<string, unknown> } {
  const [header, claims] = jwt.split('.').slice(0, 2).map(part => JSON.parse(Buffer.from(part, 'base64url').toString()))
  return { header, claims }
}

// bob may only pull, whatever he asks for
const grant = (user: string, _repository: string, asked: string[]): string[] => user === 'bob' ? ['pull'] : asked

const issuer = await startTokenIssuer({ users: { alice: 'alice-pw', bob: 'bob-pw' }, grant })
t.teardown(() => issuer.close())

const seeder = await startRegistry()
const images = {
  pulled: await pushImage({ url: seeder.url }, 'tok/app', ['v1'], 'schema2'),
  deleted: await pushImage({ url: seeder.url }, 'tok/app', ['v2'], 'oci-index')
}
await seeder.stop({ keepData: true })
const { realm, service, issuer: issuerName, certPath } = issuer
const reg = await startRegistry({ dataDir: seeder.dataDir, token: { realm, service, issuer: issuerName, rootCertBundle: certPath } })
t.teardown(async () => {
  await reg.stop()
  await seeder.stop()
})

t.test('the certificate and the kid describe the same key', async t => {
  const certificate = new X509Certificate(await readFile(certPath))
  t.equal(certificate.subject, 'CN=token-issuer')
  t.equal(libtrustKeyId(createPublicKey(certificate.publicKey.export({ type: 'spki', format: 'pem' }))), issuer.keyId)
  t.match(issuer.keyId, /^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/)
})

t.test('the registry challenges for a token with the scope it needs', async t => {
  const head = await send('HEAD', `${reg.url}/v2/tok/app/manifests/v1`, { accept: ACCEPT })
  t.equal(head.status, 401)
  t.equal(head.headers['www-authenticate'], `Bearer realm="${realm}",service="${service}",scope="repository:tok/app:pull"`)
})

t.test('HEAD with a pull token answers the digest', async t => {
  const jwt = await token(issuer, ['repository:tok/app:pull'])
  const head = await send('HEAD', `${reg.url}/v2/tok/app/manifests/v1`, { accept: ACCEPT, authorization: `Bearer ${jwt}` })
  t.equal(head.status, 200)
  t.equal(head.headers['docker-content-digest'], images.pulled.digest)
})

t.test('a token with only pull cannot DELETE', async t => {
  const jwt = await token(issuer, ['repository:tok/app:pull'])
  const deleted = await send('DELETE', `${reg.url}/v2/tok/app/manifests/${images.deleted.digest}`, { authorization: `Bearer ${jwt}` })
  t.equal(deleted.status, 401)
  t.match(deleted.headers['www-authenticate'], /scope="repository:tok\/app:delete",error="insufficient_scope"/)
})

t.test('grant narrows what a user asked for', async t => {
  const jwt = await token(issuer, ['repository:tok/app:pull,delete'], 'bob', 'bob-pw')
  t.same(decode(jwt).claims.access, [{ type: 'repository', name: 'tok/app', actions: ['pull'] }])
  const deleted = await send('DELETE', `${reg.url}/v2/tok/app/manifests/${images.deleted.digest}`, { authorization: `Bearer ${jwt}` })
  t.equal(deleted.status, 401)
  t.match(deleted.headers['www-authenticate'], /error="insufficient_scope"/)
})

t.test('pull,delete lets the DELETE through', async t => {
  const jwt = await token(issuer, ['repository:tok/app:pull,delete'])
  const deleted = await send('DELETE', `${reg.url}/v2/tok/app/manifests/${images.deleted.digest}`, { authorization: `Bearer ${jwt}` })
  t.equal(deleted.status, 202)
  const head = await send('HEAD', `${reg.url}/v2/tok/app/manifests/v2`, { accept: ACCEPT, authorization: `Bearer ${jwt}` })
  t.equal(head.status, 404)
})

t.test('a token signed by another issuer is invalid', async t => {
  const stranger = await startTokenIssuer({ users: { alice: 'alice-pw' }, service, issuer: issuerName })
  t.teardown(() => stranger.close())
  const jwt = await token(stranger, ['repository:tok/app:pull'])
  const head = await send('GET', `${reg.url}/v2/tok/app/manifests/v1`, { accept: ACCEPT, authorization: `Bearer ${jwt}` })
  t.equal(head.status, 401)
  t.match(head.headers['www-authenticate'], /error="invalid_token"/)
})

t.test('claims are the shape 2.8 requires', async t => {
  const before = Math.floor(Date.now() / 1000)
  const { status, body } = await fetchToken(issuer, ['repository:tok/app:pull', 'repository:tok/other:push registry:catalog:* repository:no-actions blob:x:pull'], basic('alice', 'alice-pw'))
  t.equal(status, 200)
  t.equal(body.token, body.access_token)
  t.equal(body.expires_in, 300)
  t.ok(Number.isFinite(Date.parse(body.issued_at as string)))
  const { header, claims } = decode(body.token as string)
  t.same(header, { alg: 'RS256', typ: 'JWT', kid: issuer.keyId })
  t.equal(claims.iss, issuer.issuer)
  t.equal(claims.aud, service, 'aud is a plain string')
  t.equal(claims.sub, 'alice')
  t.ok(Number.isInteger(claims.iat) && (claims.iat as number) >= before)
  t.equal(claims.nbf, claims.iat)
  t.equal(claims.exp, (claims.iat as number) + 300)
  t.type(claims.jti, 'string')
  t.same(claims.access, [
    { type: 'repository', name: 'tok/app', actions: ['pull'] },
    { type: 'repository', name: 'tok/other', actions: ['push'] },
    { type: 'registry', name: 'catalog', actions: ['*'] }
  ], 'space-separated scopes are split; scopes of types other than repository and registry are dropped')
})

t.test('expiresIn null omits expires_in; the token then lives the 60 s clients assume', async t => {
  const quiet = await startTokenIssuer({ users: { alice: 'alice-pw' }, expiresIn: null })
  t.teardown(() => quiet.close())
  const { body } = await fetchToken(quiet, ['repository:tok/app:pull'], basic('alice', 'alice-pw'))
  t.notOk('expires_in' in body)
  const { claims } = decode(body.token as string)
  t.equal(claims.exp, (claims.iat as number) + 60)
  t.equal(claims.aud, 'registry.test')
  t.equal(claims.iss, 'token-issuer.test')
})

t.test('bad or missing credentials get 401; other paths 404; every token request is recorded', async t => {
  const start = issuer.requests.length
  const wrong = await fetchToken(issuer, ['repository:tok/app:pull'], basic('alice', 'nope'))
  t.equal(wrong.status, 401)
  t.equal((await fetchToken(issuer, ['repository:tok/app:pull'], basic('mallory', 'x'))).status, 401)
  t.equal((await fetchToken(issuer, ['repository:tok/app:pull'], `Basic ${Buffer.from('nocolon').toString('base64')}`)).status, 401)
  t.equal((await fetchToken(issuer, ['repository:tok/app:pull'])).status, 401)
  t.equal((await send('GET', issuer.realm.replace('/token', '/other'))).status, 404)
  t.same(issuer.requests.slice(start), [
    { scope: ['repository:tok/app:pull'] },
    { scope: ['repository:tok/app:pull'] },
    { scope: ['repository:tok/app:pull'] },
    { scope: ['repository:tok/app:pull'] }
  ])
  await token(issuer, ['repository:tok/app:*'])
  t.same(issuer.requests.at(-1), { scope: ['repository:tok/app:*'], user: 'alice' })
})
