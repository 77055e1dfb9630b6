import t from 'tap'
import { request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { ADMIN_KEY, startGateway } from '../fixtures/gateway.js'

// Security findings 2 and 3: a mutation runs only over POST, and one document runs at most
// graphql.maxMutationsPerDocument of them, however they are written (aliases, fragments, inline fragments).
const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const gateway = await startGateway(t, { registries: { default: { url: registry.url } } })

async function tagExists (name: string, tag: string): Promise<boolean> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${tag}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode === 200
}

const mutation = (name: string, tag: string): string => `mutation { deleteImage(name: "${name}", tag: "${tag}") { deleted } }`

t.test('a mutation in the query string runs under no method: only POST runs it', async t => {
  await pushImage(target, 'methods/app', ['keep'], 'schema2')
  for (const method of ['GET', 'HEAD', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const) {
    const response = await gateway.app.inject({
      method,
      url: `/graphql?query=${encodeURIComponent(mutation('methods/app', 'keep'))}`,
      headers: { 'x-api-key': ADMIN_KEY }
    })
    t.ok([404, 405].includes(response.statusCode), `${method} is refused (${response.statusCode})`)
    if (method === 'GET' || method === 'HEAD') {
      t.equal(response.statusCode, 405, `${method}: 405 Method Not Allowed`)
      t.equal(response.headers.allow, 'POST', `${method}: Allow names POST`)
    }
    if (method === 'GET') t.equal(response.json().errors[0].extensions.code, 'METHOD_NOT_ALLOWED', 'GET: a GraphQL error with the catalogue code')
    t.ok(await tagExists('methods/app', 'keep'), `${method}: nothing was deleted`)
  }
  const query = await gateway.app.inject({ method: 'GET', url: `/graphql?query=${encodeURIComponent('{ me { subject } }')}`, headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(query.json().data.me.subject, 'apikey:admin', 'a query still runs over GET')
  const head = await gateway.app.inject({ method: 'HEAD', url: `/graphql?query=${encodeURIComponent('{ me { subject } }')}`, headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(head.statusCode, 200, 'and over HEAD')
  const posted = await gateway.gql(mutation('methods/app', 'keep'))
  t.equal(posted.body.data.deleteImage.deleted, true, 'POST runs the mutation')
  t.notOk(await tagExists('methods/app', 'keep'))
})

t.test('one mutation per document by default: aliases, fragments and inline fragments are counted after expansion', async t => {
  await pushImage(target, 'aliases/app', ['a', 'b', 'c'], 'oci')
  const documents = {
    aliases: 'mutation { a: deleteImage(name: "aliases/app", tag: "a") { deleted } b: deleteImage(name: "aliases/app", tag: "b") { deleted } }',
    fragments: 'mutation { ...Both } fragment Both on Mutation { a: deleteImage(name: "aliases/app", tag: "a") { deleted } b: deleteImage(name: "aliases/app", tag: "b") { deleted } }',
    inline: 'mutation { ... on Mutation { a: deleteImage(name: "aliases/app", tag: "a") { deleted } } ... { b: deleteImage(name: "aliases/app", tag: "b") { deleted } } }',
    'one fragment spread twice': 'mutation { ...One x: restoreDeletion(id: "nope") { auditId } } fragment One on Mutation { a: deleteImage(name: "aliases/app", tag: "a") { deleted } }'
  }
  for (const [how, document] of Object.entries(documents)) {
    const reply = await gateway.gql(document)
    t.equal(reply.status, 400, `${how}: refused before anything runs`)
    t.match(reply.body.errors[0].message, /runs 2 mutations; at most 1 per request \(graphql\.maxMutationsPerDocument\)/, how)
    t.equal(reply.body.errors[0].extensions.code, 'INVALID_REQUEST')
  }
  t.ok(await tagExists('aliases/app', 'a'), 'nothing was deleted')
  t.ok(await tagExists('aliases/app', 'b'))
  const single = await gateway.gql('mutation { ... on Mutation { __typename one: deleteImage(name: "aliases/app", tag: "c", dryRun: true, force: true) { dryRun } } }')
  t.equal(single.body.data?.one.dryRun, true, `one mutation (plus __typename) runs: ${JSON.stringify(single.body)}`)
})

t.test('operationName picks the operation the method rule judges; fragment cycles and unknown fragments stay graphql errors', async t => {
  const both = encodeURIComponent('query Who { me { subject } } mutation Gone { deleteImage(name: "aliases/app", tag: "a") { deleted } }')
  const asMutation = await gateway.app.inject({ method: 'GET', url: `/graphql?query=${both}&operationName=Gone`, headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(asMutation.statusCode, 405, 'the named mutation is refused over GET')
  const asQuery = await gateway.app.inject({ method: 'GET', url: `/graphql?query=${both}&operationName=Who`, headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(asQuery.json().data.me.subject, 'apikey:admin', 'the named query runs')
  const cycle = await gateway.gql('mutation { ...A } fragment A on Mutation { ...B } fragment B on Mutation { ...A }')
  t.match(cycle.body.errors[0].message, /Cannot spread fragment "A" within itself/, 'a cycle is reported, not walked forever')
  const unknown = await gateway.gql('mutation { ...Missing }')
  t.match(unknown.body.errors[0].message, /Unknown fragment "Missing"/)
})

t.test('fragments that multiply to ten thousand root fields are judged without expanding them all', async t => {
  // Four levels of ten spreads each: 10^4 root fields from a document of a few hundred tokens.
  const ten = (name: string): string => Array.from({ length: 10 }, (_, index) => `...${name}`.concat(index === 9 ? '' : ' ')).join('')
  const leaves = Array.from({ length: 10 }, (_, index) => `f${index}: __typename`).join(' ')
  const document = `mutation { ...L3 } fragment L3 on Mutation { ${ten('L2')} } fragment L2 on Mutation { ${ten('L1')} } fragment L1 on Mutation { ${ten('L0')} } fragment L0 on Mutation { ${leaves} }`
  const reply = await gateway.gql(document)
  t.equal(reply.status, 400)
  t.match(reply.body.errors[0].message, /more than 200 fields once fragments are expanded/)
})

t.test('graphql.maxMutationsPerDocument raises the cap for operators who want it', async t => {
  const wide = await startGateway(t, { registries: { default: { url: registry.url } }, config: { graphql: { maxMutationsPerDocument: 2 } } })
  await pushImage(target, 'wide/app', ['a', 'b'], 'oci')
  const reply = await wide.gql('mutation { a: deleteImage(name: "wide/app", tag: "a", dryRun: true, force: true) { dryRun } b: deleteImage(name: "wide/app", tag: "b", dryRun: true, force: true) { dryRun } }')
  t.same(reply.body.data, { a: { dryRun: true }, b: { dryRun: true } })
  const three = await wide.gql('mutation { a: deleteImage(name: "wide/app", tag: "a", dryRun: true, force: true) { dryRun } b: deleteImage(name: "wide/app", tag: "b", dryRun: true, force: true) { dryRun } c: deleteImage(name: "wide/app", tag: "b", dryRun: true, force: true) { dryRun } }')
  t.match(three.body.errors[0].message, /runs 3 mutations; at most 2/)
})

t.test('every GraphQL request is charged to the caller, whatever its method', async t => {
  const limited = await startGateway(t, { registries: { default: { url: registry.url } }, config: { limits: { requestsPerWindow: 2 } } })
  const me = encodeURIComponent('{ me { subject } }')
  const statuses = []
  for (const method of ['GET', 'HEAD', 'POST'] as const) {
    const response = await limited.app.inject({ method, url: method === 'POST' ? '/graphql' : `/graphql?query=${me}`, headers: { 'x-api-key': ADMIN_KEY }, ...(method === 'POST' ? { payload: { query: '{ me { subject } }' } } : {}) })
    statuses.push(response.statusCode)
  }
  t.same(statuses, [200, 200, 429], 'the third request, a POST, finds the budget spent by a GET and a HEAD')
})
