/**
 * Issue 11: an untag by swap PUTs a placeholder, so the gateway's registry account needs push. A token service
 * that grants the account only pull and delete makes the swap fail before it changes anything, and the answer
 * says that untag needs push (digest deletions keep working with the same account).
 */
import t from 'tap'
import { request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { startTokenIssuer } from '../fixtures/token-issuer.js'
import { startGateway } from '../fixtures/gateway.js'

const issuer = await startTokenIssuer({
  users: { gateway: 'token-password' },
  grant: (_user, _repository, asked) => asked.filter(action => action !== 'push')
})
t.teardown(async () => { await issuer.close() })
const seeded = await startRegistry()
const image = await pushImage({ url: seeded.url }, 'team/app', ['rest', 'graphql', 'kept'], 'schema2')
await seeded.stop({ keepData: true })
const registry = await startRegistry({
  dataDir: seeded.dataDir,
  token: { realm: issuer.realm, service: issuer.service, issuer: issuer.issuer, rootCertBundle: issuer.certPath }
})
t.teardown(async () => { await registry.stop() })
const gateway = await startGateway(t, {
  registries: { default: { url: registry.url, username: 'gateway', password: 'token-password', tokenRealmOrigins: [new URL(issuer.realm).origin], defaultMode: 'untag' } }
})

t.test('without push an untag is UPSTREAM_AUTH_FAILED saying it needs push, and every tag stays', async t => {
  const rest = await gateway.rest('DELETE', '/images/team/app/rest')
  t.equal(rest.status, 502)
  t.equal(rest.body.code, 'UPSTREAM_AUTH_FAILED')
  t.match(rest.body.detail, /Untag by swap needs push/)
  const graphql = await gateway.gql('mutation { deleteImage(name: "team/app", tag: "graphql", mode: UNTAG) { action } }')
  t.match(graphql.body.errors[0], { message: /needs push/, extensions: { code: 'UPSTREAM_AUTH_FAILED' } })
  t.ok(issuer.requests.some(asked => asked.scope.includes('repository:team/app:pull,push,delete')), 'the swap asked for pull,push,delete')

  const token = await request(`${issuer.realm}?service=${issuer.service}&scope=repository:team/app:pull`, { headers: { authorization: `Basic ${Buffer.from('gateway:token-password').toString('base64')}` } })
  const { token: bearer } = await token.body.json() as { token: string }
  const tags = await request(`${registry.url}/v2/team/app/tags/list`, { headers: { authorization: `Bearer ${bearer}` } })
  t.same(((await tags.body.json()) as { tags: string[] }).tags.sort(), ['graphql', 'kept', 'rest'], 'nothing was untagged')
  const records = (await gateway.rest('GET', '/audit?name=team/app')).body.items
  t.equal(records.length, 2)
  for (const record of records) t.match(record, { outcome: 'failed', errorCode: 'UPSTREAM_AUTH_FAILED', deleteAction: 'untagged', digest: image.digest })
})
