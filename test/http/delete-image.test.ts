import t from 'tap'
import { request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage, tagManifest, type ImageKind } from '../../testing/seed.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { countingDispatcher, DELETE_MUTATION, startGateway, type Gateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const counted = countingDispatcher(t)
const gateway: Gateway = await startGateway(t, { registries: { default: { url: registry.url } }, dispatcher: counted.dispatcher })

async function headStatus (name: string, reference: string): Promise<number> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode
}

async function viaGraphQL (variables: Record<string, unknown>): Promise<{ data: any, error: any }> {
  const reply = await gateway.gql(DELETE_MUTATION, variables)
  t.equal(reply.status, 200, 'GraphQL answers 200 and carries errors in the body')
  return { data: reply.body.data?.deleteImage, error: reply.body.errors?.[0] }
}

const kinds: ImageKind[] = ['schema2', 'oci', 'oci-index', 'docker-list']
for (const kind of kinds) {
  t.test(`${kind}: the digest deleted is the one the tag points at, never a child`, async t => {
    const restImage = await pushImage(target, `kinds/${kind}`, ['rest'], kind)
    const gqlImage = await pushImage(target, `kinds/${kind}`, ['graphql'], kind)

    const rest = await gateway.rest('DELETE', `/images/kinds/${kind}/rest`)
    t.equal(rest.status, 200)
    t.match(rest.body.auditId, /^[0-9A-Z]{26}$/, 'names its audit record')
    t.same(rest.body, {
      auditId: rest.body.auditId,
      registry: 'default',
      name: `kinds/${kind}`,
      tag: 'rest',
      digest: restImage.digest,
      mediaType: restImage.mediaType,
      mode: 'digest',
      action: 'deleted-digest',
      strategy: 'digest',
      planId: rest.body.planId,
      dryRun: false,
      deleted: true,
      removedTags: ['rest'],
      sharedWith: [],
      referencedBy: [],
      allowed: true
    })
    t.equal(await headStatus(`kinds/${kind}`, 'rest'), 404, 'the tag is gone')
    t.equal(await headStatus(`kinds/${kind}`, restImage.digest), 404, 'the manifest is gone')

    const { data } = await viaGraphQL({ name: `kinds/${kind}`, tag: 'graphql' })
    t.equal(data.digest, gqlImage.digest)
    t.equal(data.mediaType, gqlImage.mediaType)
    t.equal(data.deleted, true)
    t.equal(await headStatus(`kinds/${kind}`, 'graphql'), 404)
    for (const child of gqlImage.children) {
      t.equal(await headStatus(`kinds/${kind}`, child.digest), 200, `child ${child.platform.architecture} is left for garbage collection`)
    }
  })
}

t.test('two tags on one digest: 409 naming the co-tag, then force removes both', async t => {
  for (const [transport, tags] of [['rest', ['one', 'two']], ['graphql', ['three', 'four']]] as const) {
    const image = await pushImage(target, 'shared/app', [...tags], 'schema2')
    const [first, second] = tags
    if (transport === 'rest') {
      const refused = await gateway.rest('DELETE', `/images/shared/app/${first}`)
      t.equal(refused.status, 409)
      t.equal(refused.headers['content-type'], 'application/problem+json; charset=utf-8')
      t.match(refused.body, { code: 'SHARED_DIGEST', status: 409, sharedWith: [second], digest: image.digest })
      t.match(refused.body.detail, /force=true/)
      t.equal(await headStatus('shared/app', first), 200, 'nothing deleted')
      const forced = await gateway.rest('DELETE', `/images/shared/app/${first}?force=true`)
      t.equal(forced.status, 200)
      t.same(forced.body.removedTags, [first, second])
    } else {
      const refused = await viaGraphQL({ name: 'shared/app', tag: first })
      t.equal(refused.data, undefined)
      t.match(refused.error.extensions, { code: 'SHARED_DIGEST', sharedWith: [second] })
      t.equal(await headStatus('shared/app', second), 200, 'nothing deleted')
      const forced = await viaGraphQL({ name: 'shared/app', tag: first, force: true })
      t.same(forced.data.removedTags, [first, second], 'the tag asked for first, then its co-tags')
    }
    t.equal(await headStatus('shared/app', first), 404)
    t.equal(await headStatus('shared/app', second), 404)
  }
})

t.test('nested names, URL-encoded or as plain segments', async t => {
  await pushImage(target, 'team/app/api', ['v1', 'v2'], 'oci')
  await pushImage(target, 'team/app/api', ['v2'], 'oci')
  const encoded = await gateway.rest('DELETE', '/images/team%2Fapp%2Fapi/v1')
  t.equal(encoded.status, 200)
  t.equal(encoded.body.name, 'team/app/api')
  t.equal(encoded.body.tag, 'v1')
  const plain = await gateway.rest('DELETE', '/images/team/app/api/v2')
  t.equal(plain.status, 200)
  t.equal(plain.body.name, 'team/app/api')
  t.equal(await headStatus('team/app/api', 'v2'), 404)
})

t.test('a dry-run answers as the real call would and touches nothing', async t => {
  const image = await pushImage(target, 'dry/app', ['keep'], 'docker-list')
  const rest = await gateway.rest('DELETE', '/images/dry/app/keep?dryRun=true')
  t.same(rest.body, { auditId: rest.body.auditId, registry: 'default', name: 'dry/app', tag: 'keep', digest: image.digest, mediaType: image.mediaType, mode: 'digest', action: 'deleted-digest', strategy: 'digest', planId: rest.body.planId, dryRun: true, deleted: false, removedTags: ['keep'], sharedWith: [], referencedBy: [], allowed: true })
  const { data } = await viaGraphQL({ name: 'dry/app', tag: 'keep', dryRun: true })
  t.equal(data.deleted, false)

  t.equal(data.dryRun, true)
  t.equal(await headStatus('dry/app', 'keep'), 200, 'still there')

  await tagManifest(target, 'dry/app', 'also', image.manifest, image.mediaType)
  const shared = await gateway.rest('DELETE', '/images/dry/app/keep?dryRun=true')
  t.equal(shared.status, 409, 'a dry-run reports the 409 the real call would get')
  const forced = await gateway.rest('DELETE', '/images/dry/app/keep?dryRun=true&force=true')
  t.same(forced.body.removedTags, ['keep', 'also'])
  t.equal(forced.body.deleted, false)
  t.equal(await headStatus('dry/app', 'also'), 200)
  t.equal(await headStatus('dry/app', 'keep'), 200)
})

t.test('unknown tag or repository: 404 NOT_FOUND', async t => {
  await pushImage(target, 'known/app', ['v1'], 'schema2')
  for (const path of ['/images/known/app/nope', '/images/unknown/repo/v1']) {
    const reply = await gateway.rest('DELETE', path)
    t.equal(reply.status, 404, path)
    t.match(reply.body, { code: 'NOT_FOUND', status: 404, title: 'Not found' })
    t.type(reply.body.requestId, 'string')
    t.equal(reply.headers['x-request-id'], reply.body.requestId)
  }
  const { error } = await viaGraphQL({ name: 'known/app', tag: 'nope', dryRun: null, force: null, registry: null })
  t.equal(error.extensions.code, 'NOT_FOUND', 'explicit nulls mean the defaults')
  t.equal(await headStatus('known/app', 'v1'), 200)
})

t.test('invalid input: 400 naming the field and the rule, and no upstream request', async t => {
  const before = counted.requests.length
  const cases: Array<[string, string, string]> = [
    ['/images/Team/App/v1', 'INVALID_REFERENCE', 'name'],
    ['/images/team/..%2F..%2Fetc/v1', 'INVALID_REFERENCE', 'name'],
    ['/images/team%252Fapp/v1', 'INVALID_REFERENCE', 'name'],
    ['/images/team//app/v1', 'INVALID_REFERENCE', 'name'],
    [`/images/${'a'.repeat(256)}/v1`, 'INVALID_REFERENCE', 'name'],
    ['/images/team/app/.hidden', 'INVALID_REFERENCE', 'tag'],
    [`/images/team/app/${'t'.repeat(129)}`, 'INVALID_REFERENCE', 'tag'],
    ['/images/app', 'INVALID_REFERENCE', 'tag'],
    ['/images/team/app/', 'INVALID_REFERENCE', 'tag'],
    ['/images/team/app/v1%00', 'INVALID_REFERENCE', 'tag'],
    ['/images/team/app/v1?dryRun=maybe', 'INVALID_REQUEST', 'dryRun'],
    ['/images/team/app/v1?dryrun=true', 'INVALID_REQUEST', 'dryrun'],
    ['/images/team/app/v1?registry=elsewhere', 'UNKNOWN_REGISTRY', 'registry']
  ]
  for (const [path, code, field] of cases) {
    const reply = await gateway.rest('DELETE', path)
    t.equal(reply.status, 400, path.slice(0, 60))
    t.equal(reply.body.code, code, path.slice(0, 60))
    t.equal(reply.body.field, field, path.slice(0, 60))
    t.type(reply.body.rule, 'string')
  }
  const { error } = await viaGraphQL({ name: 'UPPER/case', tag: 'v1' })
  t.match(error.extensions, { code: 'INVALID_REFERENCE', field: 'name' })
  const badTag = await viaGraphQL({ name: 'ok', tag: '-v1' })
  t.match(badTag.error.extensions, { code: 'INVALID_REFERENCE', field: 'tag' })
  const badRegistry = await viaGraphQL({ name: 'ok', tag: 'v1', registry: 'elsewhere' })
  t.match(badRegistry.error.extensions, { code: 'UNKNOWN_REGISTRY', field: 'registry' })
  const longRegistry = await viaGraphQL({ name: 'ok', tag: 'v1', registry: 'r'.repeat(1000) })
  t.match(longRegistry.error.extensions, { code: 'UNKNOWN_REGISTRY' })
  t.ok(longRegistry.error.message.length < 300, 'a long value is shortened in the detail')
  t.equal(counted.requests.length, before, 'the registry saw no request')
})

t.test('a platform image that a tagged multi-platform image references is never deleted, not even with force', async t => {
  const multi = await pushImage(target, 'platforms/app', ['multi', 'multi-too'], 'oci-index')
  await pushImage(target, 'platforms/app', ['solo'], 'schema2')
  const child = multi.children[0] as { digest: string, mediaType: string }
  const childBytes = await (await request(`${registry.url}/v2/platforms/app/manifests/${child.digest}`, { headers: { accept: child.mediaType } })).body.arrayBuffer()
  await tagManifest(target, 'platforms/app', 'amd64-only', Buffer.from(childBytes), child.mediaType)

  for (const query of ['', '?force=true', '?dryRun=true']) {
    const refused = await gateway.rest('DELETE', `/images/platforms/app/amd64-only${query}`)
    t.equal(refused.status, 409, query)
    t.match(refused.body, { code: 'REFERENCED_BY_INDEX', digest: child.digest, referencedBy: [{ digest: multi.digest, tags: ['multi', 'multi-too'] }] })
    t.match(refused.body.detail, /tagged multi, multi-too; deleting it would break those tags/)
  }
  const { error } = await viaGraphQL({ name: 'platforms/app', tag: 'amd64-only', force: true })
  t.equal(error.extensions.code, 'REFERENCED_BY_INDEX')

  const lone = await pushImage(target, 'platforms/other', ['lone'], 'docker-list')
  const loneChild = lone.children[1] as { digest: string, mediaType: string }
  const loneBytes = await (await request(`${registry.url}/v2/platforms/other/manifests/${loneChild.digest}`, { headers: { accept: loneChild.mediaType } })).body.arrayBuffer()
  await tagManifest(target, 'platforms/other', 'arm64-only', Buffer.from(loneBytes), loneChild.mediaType)
  const single = await gateway.rest('DELETE', '/images/platforms/other/arm64-only')
  t.match(single.body.detail, /tagged lone; deleting it would break that tag/)
  t.equal(await headStatus('platforms/app', child.digest), 200, 'the child is still there')
  t.equal((await gateway.rest('DELETE', '/images/platforms/app/solo')).status, 200, 'an image no index references goes')
  t.equal((await gateway.rest('DELETE', '/images/platforms/app/multi?force=true')).status, 200, 'the index itself can go')
  t.equal((await gateway.rest('DELETE', '/images/platforms/app/amd64-only')).status, 200, 'and then its child, no longer referenced by a tag')
})
