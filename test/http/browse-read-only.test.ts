/**
 * Browsing needs only pull: a token service that grants the gateway's account nothing but pull still lets callers
 * list repositories' tags and read a tag's details, and no token asked for while browsing names delete or push.
 */
import t from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { startTokenIssuer } from '../fixtures/token-issuer.js'
import { startGateway } from '../fixtures/gateway.js'

const issuer = await startTokenIssuer({
  users: { gateway: 'token-password' },
  grant: (_user, _repository, asked) => asked.filter(action => action === 'pull')
})
t.teardown(async () => { await issuer.close() })
const seeded = await startRegistry()
const image = await pushImage({ url: seeded.url }, 'team/app', ['v1', 'v2'], 'schema2')
await seeded.stop({ keepData: true })
const registry = await startRegistry({
  dataDir: seeded.dataDir,
  token: { realm: issuer.realm, service: issuer.service, issuer: issuer.issuer, rootCertBundle: issuer.certPath }
})
t.teardown(async () => { await registry.stop() })
const gateway = await startGateway(t, {
  registries: { default: { url: registry.url, username: 'gateway', password: 'token-password', tokenRealmOrigins: [new URL(issuer.realm).origin] } }
})

t.test('a pull-only account lists tags and shows a tag; browsing asks for pull alone', async t => {
  const page = await gateway.rest('GET', '/images/team%2Fapp')
  t.equal(page.status, 200)
  t.same(page.body.items.map((item: { tag: string }) => item.tag), ['v1', 'v2'])
  t.equal(page.body.items[0].digest, image.digest)
  const detail = await gateway.rest('GET', '/images/team/app/v2')
  t.match(detail, { status: 200, body: { digest: image.digest } })
  const scopes = issuer.requests.flatMap(asked => asked.scope).filter(scope => scope.startsWith('repository:team/app:'))
  t.ok(scopes.length > 0, 'the gateway asked for a token')
  t.same([...new Set(scopes)], ['repository:team/app:pull'], 'no browsing token asked for delete or push')
})
