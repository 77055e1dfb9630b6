import t from 'tap'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { startGateway } from '../fixtures/gateway.js'
import { BROWSE_POLICY, IMAGE_QUERY, KEYS, pushLabelledImage, REPOSITORIES_QUERY, TAG_QUERY } from '../fixtures/browse.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, policy: BROWSE_POLICY, config: { browse: { catalogPageSize: 2 } } })

const shared = await pushImage(target, 'browse/app', ['v1', 'v2'], 'schema2')
const multi = await pushImage(target, 'browse/app', ['multi'], 'docker-list')
await pushImage(target, 'browse/app', ['latest'], 'schema2')
const labelled = await pushLabelledImage(target, 'browse/labelled', 'v2.0.0', { team: 'b' })
await pushImage(target, 'secret/app', ['v1'], 'schema2')

t.test('repositories: a connection filtered by read, followed through endCursor', async t => {
  const names: string[] = []
  let after: string | null = null
  for (let page = 0; page < 5; page++) {
    const reply = await gateway.gql(REPOSITORIES_QUERY, { first: 1, after }, { key: KEYS.reader })
    t.equal(reply.status, 200)
    const connection = reply.body.data.repositories
    names.push(...connection.edges.map((edge: { node: { name: string } }) => edge.node.name))
    // Catalog cursors are sealed with a fresh IV each, so the same position reads differently every time.
    if (connection.pageInfo.hasNextPage !== true) break
    t.type(connection.pageInfo.endCursor, 'string', 'a page with more to come says where to go on')
    after = connection.pageInfo.endCursor
  }
  t.same(names, ['browse/app', 'browse/labelled'])
  const prefixed = await gateway.gql(REPOSITORIES_QUERY, { prefix: 'secret', first: null, registry: null }, { key: KEYS.admin })
  t.same(prefixed.body.data.repositories.edges.map((edge: { node: { name: string } }) => edge.node.name), ['secret/app'])
  t.same(prefixed.body.data.repositories.pageInfo, { hasNextPage: false, endCursor: prefixed.body.data.repositories.edges[0].cursor })
  const empty = await gateway.gql(REPOSITORIES_QUERY, { prefix: 'nothing' }, { key: KEYS.admin })
  t.same(empty.body.data.repositories, { edges: [], pageInfo: { hasNextPage: false, endCursor: null } })
})

t.test('image: tags with co-tags, platforms, protected and actions; a page at a time', async t => {
  const reply = await gateway.gql(IMAGE_QUERY, { name: 'browse/app', first: 3 }, { key: KEYS.cleaner })
  t.equal(reply.status, 200)
  const image = reply.body.data.image
  t.match(image, { registry: 'default', name: 'browse/app' })
  const nodes = image.tags.edges.map((edge: { node: unknown }) => edge.node)
  t.same(nodes.map((node: { tag: string }) => node.tag), ['latest', 'multi', 'v1'])
  t.match(nodes[0], { protected: true, actions: { delete: { allowed: false, reason: /protected/ } } })
  t.same(nodes[1].platforms, multi.children.map(child => ({ ...child.platform, variant: null, digest: child.digest })))
  t.equal(nodes[1].size, null)
  t.match(nodes[2], { digest: shared.digest, coTags: [], platforms: null, protected: false })
  t.type(nodes[2].size, 'number')
  t.equal(image.tags.pageInfo.hasNextPage, true)
  const next = await gateway.gql(IMAGE_QUERY, { name: 'browse/app', first: 3, after: image.tags.pageInfo.endCursor }, { key: KEYS.cleaner })
  t.same(next.body.data.image.tags.edges.map((edge: { node: { tag: string } }) => edge.node.tag), ['v2'])
  t.equal(next.body.data.image.tags.pageInfo.hasNextPage, false)
})

t.test('tag: one tag in detail', async t => {
  const reply = await gateway.gql(TAG_QUERY, { name: 'browse/labelled', tag: 'v2.0.0' }, { key: KEYS.reader })
  t.match(reply.body.data.tag, {
    registry: 'default',
    name: 'browse/labelled',
    tag: 'v2.0.0',
    digest: labelled.digest,
    size: labelled.layersSize,
    created: labelled.created,
    labels: [{ name: 'team', value: 'b' }],
    protected: false,
    platforms: null,
    actions: { delete: { allowed: false } }
  })
})

t.test('refusals carry the catalogue code; denied reads are audited', async t => {
  const denied = await gateway.gql(IMAGE_QUERY, { name: 'secret/app' }, { key: KEYS.reader })
  t.equal(denied.body.data, null)
  t.match(denied.body.errors[0].extensions, { code: 'FORBIDDEN', action: 'read', repository: 'secret/app' })
  t.match(denied.body.errors[0].message, /no rule of roles \[reader\] allows read on repository secret\/app/)
  const deniedTag = await gateway.gql(TAG_QUERY, { name: 'secret/app', tag: 'v1' }, { key: KEYS.reader })
  t.match(deniedTag.body.errors[0].extensions, { code: 'FORBIDDEN', tag: 'v1' })
  const nobody = await gateway.gql(REPOSITORIES_QUERY, {}, { key: KEYS.nobody })
  t.match(nobody.body.errors[0].extensions, { code: 'FORBIDDEN' })
  const unauthenticated = await gateway.gql(REPOSITORIES_QUERY, {}, { key: null })
  t.equal(unauthenticated.status, 401)
  const audit = await gateway.rest('GET', '/audit?action=read', { key: KEYS.admin })
  t.same(audit.body.items.map((item: { subject: string, transport: string }) => `${item.subject} ${item.transport}`), ['apikey:nobody graphql', 'apikey:reader graphql', 'apikey:reader graphql'])
  for (const [query, variables, field] of [
    [IMAGE_QUERY, { name: 'browse/app', first: 101 }, 'limit'],
    [IMAGE_QUERY, { name: 'Bad_Name' }, 'name'],
    [TAG_QUERY, { name: 'browse/app', tag: '-x' }, 'tag'],
    [REPOSITORIES_QUERY, { after: 'forged' }, 'cursor'],
    [REPOSITORIES_QUERY, { registry: 'elsewhere' }, 'registry']
  ] as const) {
    const reply = await gateway.gql(query, variables, { key: KEYS.admin })
    t.equal(reply.body.errors[0].extensions.field, field, JSON.stringify(variables))
  }
})

t.test('aliases and fragments cannot multiply registry reads past graphql.maxRegistryReadsPerDocument', async t => {
  const refused = [
    '{ a: repositories { edges { cursor } } b: repositories { edges { cursor } } }',
    '{ repositories { edges { cursor } } tag(name: "browse/app", tag: "v1") { digest } }',
    '{ image(name: "browse/app") { a: tags { edges { cursor } } b: tags { edges { cursor } } } }',
    '{ a: image(name: "browse/app") { tags { edges { cursor } } } b: image(name: "browse/app") { tags { edges { cursor } } } }',
    'query { image(name: "browse/app") { ...T ...T } } fragment T on Image { tags { edges { cursor } } }',
    'query { image(name: "browse/app") { ...T } } fragment T on Image { a: tags { edges { cursor } } b: tags { edges { cursor } } c: tags { edges { cursor } } }',
    // Without tags an image reads nothing, but it is authorized and a refused one is audited: aliases count.
    '{ a: image(name: "browse/app") { name } b: image(name: "browse/labelled") { tags(first: 1) { edges { node { tag } } } } }',
    '{ a: image(name: "secret/app") { name } b: image(name: "secret/app") { name } }'
  ]
  for (const query of refused) {
    const reply = await gateway.gql(query, {}, { key: KEYS.admin })
    t.equal(reply.status, 400, query)
    t.match(reply.body.errors[0], { message: /reads the registry at least \d+ times.*maxRegistryReadsPerDocument/, extensions: { code: 'INVALID_REQUEST' } }, query)
  }
  const batch = await gateway.app.inject({
    method: 'POST',
    url: '/graphql',
    headers: { 'x-api-key': KEYS.admin },
    payload: [{ query: '{ repositories { edges { cursor } } }' }, { query: '{ tag(name: "browse/app", tag: "v1") { digest } }' }]
  })
  t.equal(batch.statusCode, 400, 'a batch of reads is refused whole (batched operations are off)')
  const noSelection = await gateway.gql('{ image(name: "browse/app") }', {}, { key: KEYS.admin })
  t.match(noSelection.body.errors[0].message, /must have a selection of subfields/, 'graphql\'s own rule answers')
  const mutation = await gateway.gql('mutation { restoreDeletion(id: "01ARZ3NDEKTSV4RRFFQ69G5FAV") { auditId } }', {}, { key: KEYS.admin })
  t.equal(mutation.body.errors[0].extensions.code, 'NOT_FOUND', 'mutations are not registry reads')
  const allowed = await gateway.gql('{ me { subject } b: image(name: "browse/labelled") { name tags(first: 1) { edges { node { tag } } } } }', {}, { key: KEYS.admin })
  t.same(allowed.body.data.b.tags.edges, [{ node: { tag: 'v2.0.0' } }], 'one image with its tags is one read')
})
