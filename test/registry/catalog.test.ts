import t, { type Test } from 'tap'
import { RegistryClient } from '../../src/registry/client.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { rejection } from '../fixtures/rejection.js'
import { startTokenIssuer } from '../fixtures/token-issuer.js'

// The catalog needs its own token scope (registry:catalog:*), not a repository's: checked against a real
// registry in token mode, whose only account for the catalog is the gateway's.
const issuer = await startTokenIssuer({
  users: { gateway: 'gateway-pw', pusher: 'pusher-pw' },
  grant: (user, name, asked) => name === 'catalog' && user !== 'gateway' ? [] : asked
})
t.teardown(() => issuer.close())
const seeder = await startRegistry()
const pushed = await pushImage({ url: seeder.url }, 'cat/one', ['v1'], 'schema2')
await pushImage({ url: seeder.url }, 'cat/two', ['v1'], 'schema2')
await seeder.stop({ keepData: true })
const registry = await startRegistry({
  dataDir: seeder.dataDir,
  token: { realm: issuer.realm, service: issuer.service, issuer: issuer.issuer, rootCertBundle: issuer.certPath }
})
t.teardown(async () => {
  await registry.stop()
  await seeder.stop()
})

function client (t: Test, username: string, password: string): RegistryClient {
  const registryClient = new RegistryClient({
    name: 'tokened',
    url: registry.url,
    credentials: { username, password },
    connectTimeoutMs: 1000,
    requestTimeoutMs: 5000,
    connections: 2,
    trustedRealmOrigins: [new URL(issuer.realm).origin]
  })
  t.teardown(async () => { await registryClient.close() })
  return registryClient
}

t.test('a catalog page asks for a registry:catalog:* token and follows the registry\'s order', async t => {
  const gateway = client(t, 'gateway', 'gateway-pw')
  const first = await gateway.catalogPage(undefined, 1)
  t.same(first, { repositories: ['cat/one'], more: true })
  t.same(await gateway.catalogPage('cat/one', 1), { repositories: ['cat/two'], more: false }, 'a full last page announces nothing more')
  t.same(await gateway.catalogPage('cat/two', 1), { repositories: [], more: false })
  t.ok(issuer.requests.some(request => request.user === 'gateway' && request.scope.includes('registry:catalog:*')))
  t.notOk(issuer.requests.some(request => request.scope.some(scope => scope.startsWith('repository:the catalog'))), 'no repository scope for the catalog')
  const config = JSON.parse(pushed.manifest.toString()).config as { digest: string, size: number }
  const blob = await gateway.getBlob('cat/one', config.digest, 1024 * 1024)
  t.equal(blob.length, config.size, 'a blob comes with a pull token of its repository')
})

t.test('an account without the catalog scope is refused, saying so', async t => {
  const error = await rejection(client(t, 'pusher', 'pusher-pw').catalogPage(undefined, 10))
  t.equal(error.code, 'UPSTREAM_AUTH_FAILED')
  t.match(error.detail, /refused list catalog of the catalog: the gateway's account lacks registry:catalog:\*/)
})
