import { createServer, type Socket } from 'node:net'
import t from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { DELETE_MUTATION, startGateway } from '../fixtures/gateway.js'
import { startTokenIssuer } from '../fixtures/token-issuer.js'

async function bothTransports (gateway: Awaited<ReturnType<typeof startGateway>>, name: string, tag: string): Promise<{ rest: any, graphql: any }> {
  const rest = await gateway.rest('DELETE', `/images/${name}/${tag}`)
  const graphql = await gateway.gql(DELETE_MUTATION, { name, tag })
  return { rest: { status: rest.status, ...rest.body }, graphql: graphql.body.errors?.[0]?.extensions ?? graphql.body.data.deleteImage }
}

t.test('delete disabled: 501 DELETE_DISABLED telling how to enable it', async t => {
  const registry = await startRegistry({ deleteEnabled: false })
  t.teardown(async () => { await registry.stop() })
  await pushImage({ url: registry.url }, 'app', ['v1'], 'schema2')
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } } })
  const { rest, graphql } = await bothTransports(gateway, 'app', 'v1')
  t.match(rest, { status: 501, code: 'DELETE_DISABLED', reason: 'delete-disabled', upstreamStatus: 405 })
  t.match(rest.detail, /storage\.delete\.enabled/)
  t.match(graphql, { code: 'DELETE_DISABLED' })
})

t.test('read-only registry: 501 DELETE_DISABLED saying maintenance', async t => {
  const seeded = await startRegistry()
  await pushImage({ url: seeded.url }, 'app', ['v1'], 'oci')
  await seeded.stop({ keepData: true })
  const registry = await startRegistry({ dataDir: seeded.dataDir, readOnly: true })
  t.teardown(async () => { await registry.stop() })
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } } })
  const { rest, graphql } = await bothTransports(gateway, 'app', 'v1')
  t.match(rest, { status: 501, code: 'DELETE_DISABLED', reason: 'read-only' })
  t.match(rest.detail, /read-only/)
  t.match(graphql, { code: 'DELETE_DISABLED', reason: 'read-only' })
})

t.test('Basic auth: good credentials delete, bad ones are a 502 that never echoes the password', async t => {
  const seeded = await startRegistry()
  await pushImage({ url: seeded.url }, 'app', ['a', 'b'], 'schema2')
  await pushImage({ url: seeded.url }, 'app', ['b'], 'oci')
  await seeded.stop({ keepData: true })
  const registry = await startRegistry({ dataDir: seeded.dataDir, htpasswd: { username: 'gateway', password: 'right-password' } })
  t.teardown(async () => { await registry.stop() })

  const good = await startGateway(t, { registries: { default: { url: registry.url, username: 'gateway', password: 'right-password' } } })
  const { rest, graphql } = await bothTransports(good, 'app', 'a')
  t.match(rest, { status: 200, deleted: true, removedTags: ['a'] })
  t.equal(graphql.code, 'NOT_FOUND', 'REST deleted a before GraphQL asked')
  const deleted = await good.rest('DELETE', '/images/app/b')
  t.equal(deleted.status, 200)

  const bad = await startGateway(t, { registries: { default: { url: registry.url, username: 'gateway', password: 'wrong-password' } } })
  const refused = await bothTransports(bad, 'app', 'a')
  t.match(refused.rest, { status: 502, code: 'UPSTREAM_AUTH_FAILED' })
  t.match(refused.graphql, { code: 'UPSTREAM_AUTH_FAILED' })
  t.notMatch(JSON.stringify(refused), /wrong-password/)

  const none = await startGateway(t, { registries: { default: { url: registry.url } } })
  const anonymous = await none.rest('DELETE', '/images/app/a')
  t.match(anonymous.body, { code: 'UPSTREAM_AUTH_FAILED' })
  t.match(anonymous.body.detail, /REGISTRY_USERNAME/)
})

t.test('token auth: the gateway asks for pull,delete; a token without delete is a 502', async t => {
  const issuer = await startTokenIssuer({
    users: { gateway: 'token-password', reader: 'reader-password' },
    grant: (user, _repository, asked) => user === 'reader' ? asked.filter(action => action === 'pull') : asked
  })
  t.teardown(async () => { await issuer.close() })
  const seeded = await startRegistry()
  await pushImage({ url: seeded.url }, 'team/app', ['v1', 'v2'], 'oci-index')
  await pushImage({ url: seeded.url }, 'team/app', ['v2'], 'docker-list')
  await seeded.stop({ keepData: true })
  const registry = await startRegistry({
    dataDir: seeded.dataDir,
    token: { realm: issuer.realm, service: issuer.service, issuer: issuer.issuer, rootCertBundle: issuer.certPath }
  })
  t.teardown(async () => { await registry.stop() })
  const realmOrigin = new URL(issuer.realm).origin

  const reader = await startGateway(t, { registries: { default: { url: registry.url, username: 'reader', password: 'reader-password', tokenRealmOrigins: [realmOrigin] } } })
  const refused = await bothTransports(reader, 'team/app', 'v2')
  t.match(refused.rest, { status: 502, code: 'UPSTREAM_AUTH_FAILED' })
  t.match(refused.rest.detail, /lacks pull,delete/)
  t.match(refused.graphql, { code: 'UPSTREAM_AUTH_FAILED' })

  const gateway = await startGateway(t, { registries: { default: { url: registry.url, username: 'gateway', password: 'token-password', tokenRealmOrigins: [realmOrigin] } } })
  const before = issuer.requests.length
  const dry = await gateway.rest('DELETE', '/images/team/app/v2?dryRun=true')
  t.equal(dry.status, 200)
  const done = await gateway.rest('DELETE', '/images/team/app/v2')
  t.equal(done.status, 200)
  t.equal(done.body.deleted, true)
  const asked = issuer.requests.slice(before)
  t.ok(asked.length >= 1, 'a token was fetched')
  t.ok(asked.every(request => request.scope.includes('repository:team/app:pull,delete')), 'scope is pull,delete on the repository')
  t.ok(asked.length <= 2, `tokens are cached and shared by concurrent requests (${asked.length} fetched)`)

  const untrusted = await startGateway(t, { registries: { default: { url: registry.url, username: 'gateway', password: 'token-password' } } })
  const contacted = issuer.requests.length
  const withheld = await untrusted.rest('DELETE', '/images/team/app/v1')
  t.match(withheld.body, { code: 'UPSTREAM_AUTH_FAILED', realm: issuer.realm })
  t.match(withheld.body.detail, /tokenRealmOrigins/)
  t.equal(issuer.requests.length, contacted, 'a realm on another origin that is not trusted is not contacted')
})

t.test('registry not running: 503 UPSTREAM_UNAVAILABLE', async t => {
  const stopped = await startRegistry()
  const url = stopped.url
  await stopped.stop()
  const gateway = await startGateway(t, { registries: { default: { url } } })
  const { rest, graphql } = await bothTransports(gateway, 'app', 'v1')
  t.match(rest, { status: 503, code: 'UPSTREAM_UNAVAILABLE' })
  t.match(rest.detail, /ECONNREFUSED/)
  t.match(graphql, { code: 'UPSTREAM_UNAVAILABLE' })
})

t.test('registry that accepts and never answers: 504 UPSTREAM_TIMEOUT at the configured timeout', async t => {
  const sockets = new Set<Socket>()
  const silent = createServer(socket => { sockets.add(socket) })
  await new Promise<void>(resolve => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise(resolve => silent.close(resolve))
  })
  const port = (silent.address() as { port: number }).port
  const gateway = await startGateway(t, { registries: { default: { url: `http://127.0.0.1:${port}`, timeouts: { requestMs: 200 } } } })
  const { rest, graphql } = await bothTransports(gateway, 'app', 'v1')
  t.match(rest, { status: 504, code: 'UPSTREAM_TIMEOUT' })
  t.match(rest.detail, /200 ms/)
  t.match(graphql, { code: 'UPSTREAM_TIMEOUT' })
})
