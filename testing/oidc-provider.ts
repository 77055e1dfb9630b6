/**
 * A real OpenID provider (oidc-provider, the certified implementation) on a free loopback port, for the browser
 * tests and the demo: a few users with passwords and groups, a login page of its own, authorization code + PKCE
 * for the public client the web page is, and JWT access tokens for the gateway's audience (a resource indicator),
 * signed by a key published at /jwks — exactly what a production identity provider gives the gateway.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createHash, randomBytes } from 'node:crypto'
import { exportJWK, generateKeyPair } from 'jose'
import Provider, { type Configuration, type KoaContextWithOIDC } from 'oidc-provider'
import { request } from 'undici'
import { freePort, HOST } from './ports.js'

export interface OidcUser {
  /** The login name, which is also the token's `sub`. */
  username: string
  password: string
  groups: string[]
}

export interface OidcProviderOptions {
  users: OidcUser[]
  /** The public client (the web page) and where it may be sent back to. */
  clientId: string
  redirectUris: string[]
  /** The access tokens' `aud`, which the gateway's policy `jwt.audience` names. */
  audience: string
  /** Seconds an access token lives; default 300. Can be changed later with setAccessTokenTtl. */
  accessTokenTtl?: number
}

export interface OidcProviderProcess {
  /** http://127.0.0.1:PORT, the tokens' `iss`. */
  issuer: string
  jwksUri: string
  audience: string
  /** Tokens issued from now on live this many seconds (the expired-session test shortens it). */
  setAccessTokenTtl: (seconds: number) => void
  /** Logins tried on the login page, in order: who, and whether the password matched. */
  logins: Array<{ username: string, ok: boolean }>
  close: () => Promise<void>
}

/** The resource indicator the page's access tokens are for (RFC 8707 wants an absolute URI). */
export const GATEWAY_RESOURCE = 'urn:registry-delete-gateway'

export async function startOidcProvider (options: OidcProviderOptions): Promise<OidcProviderProcess> {
  const port = await freePort()
  const issuer = `http://${HOST}:${port}`
  let accessTokenTtl = options.accessTokenTtl ?? 300
  const users = new Map(options.users.map(user => [user.username, user]))
  const { privateKey } = await generateKeyPair('RS256', { extractable: true })
  const signing = { ...(await exportJWK(privateKey)), kid: `rs256-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' }
  const logins: OidcProviderProcess['logins'] = []

  const configuration: Configuration = {
    clients: [{
      client_id: options.clientId,
      token_endpoint_auth_method: 'none',
      redirect_uris: options.redirectUris,
      post_logout_redirect_uris: options.redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code']
    }],
    jwks: { keys: [signing] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: { openid: ['sub'], profile: ['name', 'groups'] },
    async findAccount (_ctx, id) {
      const user = users.get(id)
      if (user === undefined) return undefined
      return { accountId: id, claims: async () => ({ sub: id, name: id, groups: user.groups }) }
    },
    // The web page is a public client on the gateway's origin: it may call the token endpoint from there.
    clientBasedCORS: (_ctx, origin, client) => client.redirectUris?.some(uri => new URL(uri).origin === origin) ?? false,
    features: {
      devInteractions: { enabled: false },
      // The provider's own page would fetch a web font; this one is self-contained, like the login page.
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          ctx.body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign out — test identity provider</title></head>
<body><main><h1>Sign out of the test identity provider?</h1>${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button></main></body></html>`
        }
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => GATEWAY_RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => ({
          scope: 'openid profile',
          audience: options.audience,
          accessTokenTTL: accessTokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } }
        })
      }
    },
    // Groups go into the access token itself: the gateway reads roles from the token, it never calls userinfo.
    async extraTokenClaims (_ctx, token) {
      const user = users.get((token as { accountId?: string }).accountId ?? '')
      return user === undefined ? undefined : { groups: user.groups }
    },
    // The page is the provider's own first-party client: no consent screen, the grant covers what it asks.
    async loadExistingGrant (ctx: KoaContextWithOIDC) {
      const session = ctx.oidc.session
      const client = ctx.oidc.client
      if (session === undefined || client === undefined || session.accountId === undefined) return undefined
      const existing = ctx.oidc.result?.consent?.grantId ?? session.grantIdFor(client.clientId)
      if (existing !== undefined) return await ctx.oidc.provider.Grant.find(existing)
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId })
      grant.addOIDCScope('openid profile')
      grant.addResourceScope(GATEWAY_RESOURCE, 'openid profile')
      await grant.save()
      return grant
    },
    ttl: {
      AccessToken: () => accessTokenTtl,
      Session: 3600,
      Grant: 3600,
      Interaction: 600,
      AuthorizationCode: 60,
      IdToken: 3600
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` }
  }
  const provider = new Provider(issuer, configuration)
  const callback = provider.callback()

  const server: Server = createServer((request, response) => {
    const match = /^\/interaction\/([\w-]+)(\/login)?$/.exec(new URL(request.url ?? '/', issuer).pathname)
    if (match === null) {
      callback(request, response)
      return
    }
    interaction(provider, users, logins, request, response, match[2] !== undefined).catch((error: Error) => {
      response.statusCode = 500
      response.end(`interaction failed: ${error.message}`)
    })
  })
  await new Promise<void>(resolve => server.listen(port, HOST, resolve))
  return {
    issuer,
    jwksUri: `${issuer}/jwks`,
    audience: options.audience,
    setAccessTokenTtl (seconds) { accessTokenTtl = seconds },
    logins,
    async close () {
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  }
}

async function interaction (provider: Provider, users: Map<string, OidcUser>, logins: OidcProviderProcess['logins'],
  request: IncomingMessage, response: ServerResponse, submitted: boolean): Promise<void> {
  const details = await provider.interactionDetails(request, response)
  if (!submitted) {
    loginPage(response, details.uid, '')
    return
  }
  const form = new URLSearchParams(await readBody(request))
  const username = form.get('username') ?? ''
  const user = users.get(username)
  const ok = user !== undefined && user.password === form.get('password')
  logins.push({ username, ok })
  if (!ok) {
    loginPage(response, details.uid, 'Unknown user or wrong password.')
    return
  }
  await provider.interactionFinished(request, response, { login: { accountId: username } }, { mergeWithLastSubmission: false })
}

async function readBody (request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of request) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

function loginPage (response: ServerResponse, uid: string, error: string): void {
  response.statusCode = error === '' ? 200 : 401
  response.setHeader('content-type', 'text/html; charset=utf-8')
  response.setHeader('cache-control', 'no-store')
  response.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in — test identity provider</title></head>
<body><main><h1>Test identity provider</h1>${error === '' ? '' : `<p role="alert">${error}</p>`}
<form method="post" action="/interaction/${uid}/login">
<p><label for="username">Username</label> <input id="username" name="username" autocomplete="username" required></p>
<p><label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p></form></main></body></html>`)
}

/**
 * Signs `username` in the way a browser would (authorization code with PKCE, the provider's own login form), but
 * over plain HTTP, for tests and the benchmark that need a real access token and no page.
 */
export async function signInWithoutBrowser (provider: { issuer: string }, client: { clientId: string, redirectUri: string, scope?: string },
  username: string, password: string): Promise<string> {
  const verifier = randomBytes(32).toString('base64url')
  const challenge = createHash('sha256').update(verifier).digest('base64url')
  const cookies = new Map<string, string>()
  const step = async (url: string, init: { method?: 'GET' | 'POST', body?: string } = {}): Promise<string> => {
    const response = await request(url, {
      method: init.method ?? 'GET',
      headers: {
        cookie: [...cookies].map(([name, value]) => `${name}=${value}`).join('; '),
        ...(init.body === undefined ? {} : { 'content-type': 'application/x-www-form-urlencoded' })
      },
      body: init.body
    })
    const text = await response.body.text()
    for (const line of [response.headers['set-cookie'] ?? []].flat()) {
      const [pair = ''] = line.split(';')
      const eq = pair.indexOf('=')
      cookies.set(pair.slice(0, eq), pair.slice(eq + 1))
    }
    const location = response.headers.location
    if (typeof location !== 'string') throw new Error(`${url}: expected a redirect, got ${response.statusCode}: ${text.slice(0, 300)}`)
    return new URL(location, url).href
  }
  const authorize = new URL('/auth', provider.issuer)
  const state = randomBytes(8).toString('hex')
  for (const [key, value] of Object.entries({
    client_id: client.clientId,
    redirect_uri: client.redirectUri,
    response_type: 'code',
    scope: client.scope ?? 'openid profile',
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state
  })) authorize.searchParams.set(key, value)
  const interaction = await step(authorize.href)
  const resume = await step(`${interaction}/login`, { method: 'POST', body: new URLSearchParams({ username, password }).toString() })
  const back = new URL(await step(resume))
  const code = back.searchParams.get('code')
  if (code === null || back.searchParams.get('state') !== state) throw new Error(`sign-in of ${username} did not return a code: ${back.href}`)
  const token = await request(new URL('/token', provider.issuer), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: client.redirectUri, client_id: client.clientId, code_verifier: verifier }).toString()
  })
  const answer = await token.body.json() as { access_token?: string }
  if (token.statusCode !== 200 || answer.access_token === undefined) throw new Error(`token request failed: ${token.statusCode} ${JSON.stringify(answer)}`)
  return answer.access_token
}
