import t from 'tap'
import { GATEWAY_RESOURCE, signInWithoutBrowser, startOidcProvider } from '../../testing/oidc-provider.js'
import { buildUi } from '../../testing/ui-build.js'
import { contractProblems } from '../fixtures/contract.js'
import { startGateway } from '../fixtures/gateway.js'

// The /ui plugin: the page and its config are open and carry strict headers; the API the page calls is not open,
// and takes only tokens of the identity provider the policy trusts (a real oidc-provider, tokens got through its login form).
const CLIENT = 'rdg-ui'
const REDIRECT = 'http://127.0.0.1:1/ui/'
const users = [{ username: 'alice', password: 'alice-password', groups: ['admins'] }]
const idp = await startOidcProvider({ users, clientId: CLIENT, redirectUris: [REDIRECT], audience: 'registry-gateway' })
t.teardown(idp.close)
const other = await startOidcProvider({ users, clientId: CLIENT, redirectUris: [REDIRECT], audience: 'registry-gateway' })
t.teardown(other.close)
const page = await buildUi()
t.teardown(page.close)

const POLICY = `
jwt:
  issuer: ${idp.issuer}
  audience: registry-gateway
  jwksUri: ${idp.jwksUri}
roles:
  admin:
    - actions: ["*"]
      repositories: ["**"]
bindings:
  - { role: admin, subjects: ["group:admins"] }
`
const registries = { default: { url: 'http://127.0.0.1:9' } }
const gateway = await startGateway(t, { registries, policy: POLICY, uiRoot: page.root, config: { ui: { oidc: { clientId: CLIENT } } } })

const get = async (url: string, headers: Record<string, string> = {}) => await gateway.app.inject({ method: 'GET', url, headers })

t.test('the page is served without credentials, with a strict CSP and no referrer', async t => {
  const index = await get('/ui/')
  t.equal(index.statusCode, 200)
  t.match(index.headers['content-type'], /^text\/html/)
  const csp = String(index.headers['content-security-policy'])
  t.match(csp, /default-src 'none'/)
  t.match(csp, /script-src 'self'(;|$)/, 'scripts from the page\'s own origin only')
  t.notMatch(csp, /unsafe-inline|unsafe-eval/, 'no inline script or eval')
  t.match(csp, /frame-ancestors 'none'/)
  t.match(csp, new RegExp(`connect-src 'self' ${idp.issuer.replace(/[.]/g, '\\.')}(;|$)`), 'the API and the identity provider only')
  t.equal(index.headers['referrer-policy'], 'no-referrer')
  t.equal(index.headers['x-frame-options'], 'DENY')
  t.equal(index.headers['cache-control'], 'no-cache')
  t.notMatch(index.body, /<script>|<script [^>]*>[^<]/, 'no inline script in the page')
  const assets = [...index.body.matchAll(/(?:src|href)="(\/ui\/assets\/[^"]+)"/g)].map(match => match[1] as string)
  t.ok(assets.some(asset => asset.endsWith('.js')) && assets.some(asset => asset.endsWith('.css')), 'a script and a stylesheet')
  for (const asset of assets) {
    const response = await get(asset)
    t.equal(response.statusCode, 200, asset)
    t.match(response.headers['cache-control'], /immutable/, `${asset} is cached for good (its name is its hash)`)
    t.equal(response.headers['referrer-policy'], 'no-referrer')
  }
  const bare = await get('/ui')
  t.equal(bare.statusCode, 301)
  t.equal(bare.headers.location, '/ui/')
  t.equal((await get('/ui/assets/missing.js')).statusCode, 404, 'a missing file is a 404, not the page')
})

t.test('config.json names the policy\'s issuer and the configured client, and needs no credentials', async t => {
  const response = await get('/ui/config.json')
  t.equal(response.statusCode, 200)
  t.same(response.json(), { oidc: { issuer: idp.issuer, clientId: CLIENT, scopes: 'openid profile' } })
  t.same(contractProblems('GET', '/ui/config.json', 200, response.headers['content-type'] as string, response.json()), [], 'as openapi.yaml says')
  t.not(contractProblems('GET', '/ui/config.json', 200, 'application/json', { oidc: { issuer: 1 } }).length, 0, 'which the checker does read')
  t.equal(response.headers['cache-control'], 'no-store')
  t.match(response.headers['content-security-policy'], /frame-ancestors 'none'/)
})

t.test('every API call the page makes needs a credential; only the trusted issuer\'s tokens are taken', async t => {
  for (const url of ['/me', '/repositories', '/images/app', '/audit']) {
    const response = await get(url)
    t.equal(response.statusCode, 401, `${url} without a token`)
    t.equal(response.json().code, 'UNAUTHENTICATED')
  }
  const client = { clientId: CLIENT, redirectUri: REDIRECT }
  const token = await signInWithoutBrowser(idp, client, 'alice', 'alice-password')
  const me = await get('/me', { authorization: `Bearer ${token}` })
  t.equal(me.statusCode, 200, me.body)
  t.same(me.json(), { subject: 'user:alice', groups: ['admins'], roles: ['admin'] }, 'subject and groups from the provider\'s access token')
  const [, payload = ''] = token.split('.')
  t.match(JSON.parse(Buffer.from(payload, 'base64url').toString()), { iss: idp.issuer, aud: 'registry-gateway', sub: 'alice' })
  t.ok(GATEWAY_RESOURCE.startsWith('urn:'))

  const stranger = await signInWithoutBrowser(other, client, 'alice', 'alice-password')
  const refused = await get('/me', { authorization: `Bearer ${stranger}` })
  t.equal(refused.statusCode, 401, 'a token of another issuer')
  t.match(refused.json(), { code: 'UNAUTHENTICATED', detail: /not one of the identity provider's keys/ })
  t.notMatch(refused.body, stranger, 'the token is not echoed')
  await t.rejects(signInWithoutBrowser(idp, client, 'alice', 'wrong'), /expected a redirect/, 'a wrong password gets no code')
  t.same(idp.logins.map(login => login.ok), [true, false])
})

t.test('without ui.oidc, or without a jwt section, the page offers API keys only; ui.enabled=false serves nothing', async t => {
  const keysOnly = await startGateway(t, { registries, policy: POLICY, uiRoot: page.root })
  t.same((await keysOnly.app.inject({ method: 'GET', url: '/ui/config.json' })).json(), {})
  t.match((await keysOnly.app.inject({ method: 'GET', url: '/ui/' })).headers['content-security-policy'], /connect-src 'self';/)
  const noJwt = await startGateway(t, { registries, uiRoot: page.root, config: { ui: { oidc: { clientId: CLIENT } } } })
  t.same((await noJwt.app.inject({ method: 'GET', url: '/ui/config.json' })).json(), {})
  const notUrl = await startGateway(t, { registries, policy: POLICY.replace(`issuer: ${idp.issuer}`, 'issuer: sso-by-name'), uiRoot: page.root, config: { ui: { oidc: { clientId: CLIENT } } } })
  t.same((await notUrl.app.inject({ method: 'GET', url: '/ui/config.json' })).json(), {}, 'an issuer that is not a URL: no OIDC sign-in')
  t.equal((await notUrl.app.inject({ method: 'GET', url: '/ui/' })).statusCode, 200, 'and the page still loads')
  const off = await startGateway(t, { registries, uiRoot: page.root, config: { ui: { enabled: false } } })
  t.equal((await off.app.inject({ method: 'GET', url: '/ui/config.json' })).statusCode, 401, 'not a route: the API\'s 401 for anything unknown without credentials')
  const unbuilt = await startGateway(t, { registries, uiRoot: '/nonexistent-ui-build' })
  t.equal((await unbuilt.app.inject({ method: 'GET', url: '/ui/' })).statusCode, 404, 'a gateway built without its page answers 404 there')
  const packaged = await startGateway(t, { registries })
  t.equal((await packaged.app.inject({ method: 'GET', url: '/ui/config.json' })).statusCode, 200, 'by default the page is the package\'s dist/ui')
})
