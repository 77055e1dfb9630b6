import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import t, { type Test } from 'tap'
import { RegistryClient } from '../../src/registry/client.js'
import { rejection } from '../fixtures/rejection.js'

// A hostile registry names a token realm on another origin; the gateway must not contact it unless trusted.
async function listen (t: Test, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server: Server = createServer(handler)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

async function hostileSetup (t: Test): Promise<{ registryUrl: string, realmOrigin: string, realmHits: Array<string | undefined> }> {
  const realmHits: Array<string | undefined> = []
  // Answers anyone with an anonymous token, as an open token service (or an attacker's target) would.
  const realmOrigin = await listen(t, (req, res) => {
    realmHits.push(req.headers.authorization)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ token: 'anonymous-token' }))
  })
  const registryUrl = await listen(t, (req, res) => {
    res.statusCode = 401
    const error = req.headers.authorization === undefined ? '' : ',error="insufficient_scope"'
    res.setHeader('www-authenticate', `Bearer realm="${realmOrigin}/token",service="evil"${error}`)
    res.end()
  })
  return { registryUrl, realmOrigin, realmHits }
}

function client (t: Test, url: string, trusted: string[]): RegistryClient {
  const registry = new RegistryClient({
    name: 'hostile', url, credentials: { username: 'gateway', password: 'admin-password' }, connectTimeoutMs: 1000, requestTimeoutMs: 2000, connections: 2, trustedRealmOrigins: trusted
  })
  t.teardown(async () => { await registry.close() })
  return registry
}

t.test('a realm on another origin that is not trusted is never contacted, and the error says how to trust it', async t => {
  const { registryUrl, realmOrigin, realmHits } = await hostileSetup(t)
  const error = await rejection(client(t, registryUrl, []).resolve('app', 'v1'))
  t.equal(realmHits.length, 0, 'the realm server was not contacted')
  t.equal(error.code, 'UPSTREAM_AUTH_FAILED')
  t.match(error.detail, /not trusted/)
  t.match(error.detail, new RegExp(`add "${realmOrigin}" to tokenRealmOrigins of registry "hostile"`))
  t.match(error.detail, /REGISTRY_TOKEN_REALM_ORIGINS/)
  t.notMatch(error.detail, /lacks/, 'not sent the wrong way, towards the account\'s permissions')
  t.notMatch(error.detail, /admin-password/)
})

t.test('a trusted realm on another origin is contacted, with the credentials', async t => {
  const { registryUrl, realmOrigin, realmHits } = await hostileSetup(t)
  const error = await rejection(client(t, registryUrl, [realmOrigin]).resolve('app', 'v1'))
  t.equal(realmHits.length, 1)
  t.equal(realmHits[0], `Basic ${Buffer.from('gateway:admin-password').toString('base64')}`)
  t.match(error.detail, /lacks pull,delete/)
})
