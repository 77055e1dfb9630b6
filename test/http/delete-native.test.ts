/**
 * Native untag (DELETE /v2/<name>/manifests/<tag>) through both edges. No registry packaged here supports it
 * (distribution 2.8.2 answers 400 DIGEST_INVALID), so this runs against a small FAKE registry written for this
 * test: it serves one manifest under a few tags and removes exactly one tag on a DELETE by tag.
 */
import { createHash } from 'node:crypto'
import { createServer } from 'node:http'
import t from 'tap'
import { startGateway } from '../fixtures/gateway.js'

const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'0'.repeat(64)}`, size: 2 }, layers: [] }))
const DIGEST = `sha256:${createHash('sha256').update(MANIFEST).digest('hex')}`
const tags = new Set(['rest', 'graphql', 'refused', 'kept', 'moving', 'lost-gone', 'lost-kept', 'lost-unknown', 'lost-moved'])
/** Once untagged, `lost-unknown` cannot be looked up: the registry fails every request for it (503). */
let unknownDown = false
const seen: string[] = []
/** What `moving` points at once the gateway has read it: someone pushed another image under it meanwhile. */
const PUSHED_MEANWHILE = `sha256:${'9'.repeat(64)}`
/** Tags pushed over by someone else (reference → digest): `moving` once read, `lost-moved` once untagged. */
const pushedOver = new Map<string, string>()

const fake = createServer((request, response) => {
  const path = (request.url ?? '').split('?')[0] as string
  seen.push(`${request.method as string} ${path}`)
  const reference = /^\/v2\/app\/manifests\/(.+)$/.exec(path)?.[1]
  const json = (status: number, body: unknown): void => { response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
  if (path === '/v2/') return json(200, {})
  if (path === '/v2/app/tags/list') return json(200, { name: 'app', tags: [...tags] })
  if (reference === undefined) return json(404, { errors: [{ code: 'NAME_UNKNOWN', message: 'unknown' }] })
  const known = reference === DIGEST || tags.has(reference)
  if (reference === 'lost-unknown' && unknownDown) return json(503, { errors: [{ code: 'UNAVAILABLE', message: 'down' }] })
  if (request.method === 'DELETE') {
    // Like distribution 2.8.2 for this one tag: a registry that does not delete by tag.
    if (reference === 'refused') return json(400, { errors: [{ code: 'DIGEST_INVALID', message: 'provided digest did not match uploaded content' }] })
    // The answer is lost on the way back: the connection drops, after the untag (lost-gone, lost-unknown) or before it.
    if (reference === 'lost-kept') return request.socket.destroy()
    if (reference === 'lost-moved') {
      pushedOver.set('lost-moved', PUSHED_MEANWHILE)
      return request.socket.destroy()
    }
    if (reference === 'lost-gone' || reference === 'lost-unknown') {
      tags.delete(reference)
      unknownDown = reference === 'lost-unknown'
      return request.socket.destroy()
    }
    if (!tags.delete(reference)) return json(404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'unknown' }] })
    return response.writeHead(202).end()
  }
  if (!known) return json(404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'unknown' }] })
  const digest = pushedOver.get(reference) ?? DIGEST
  if (reference === 'moving' && request.method === 'GET') pushedOver.set('moving', PUSHED_MEANWHILE)
  response.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': digest, 'content-length': String(MANIFEST.length) })
  response.end(request.method === 'HEAD' ? undefined : MANIFEST)
})
await new Promise<void>(resolve => fake.listen(0, '127.0.0.1', resolve))
t.teardown(() => { fake.closeAllConnections(); fake.close() })
const url = `http://127.0.0.1:${(fake.address() as { port: number }).port}`
const gateway = await startGateway(t, { registries: { fake: { url, untagStrategy: 'native', defaultMode: 'untag' } } })

t.test('native untag: one DELETE by tag after reading the manifest (under the repository lock) to save it; only that tag goes', async t => {
  const before = seen.length
  const rest = await gateway.rest('DELETE', '/images/app/rest')
  t.equal(rest.status, 200)
  t.match(rest.body, { mode: 'untag', action: 'untagged', strategy: 'native', digest: DIGEST, removedTags: ['rest'], deleted: true })
  t.same(seen.slice(before), ['GET /v2/app/manifests/rest', 'DELETE /v2/app/manifests/rest'], 'two registry requests: save, untag; read under the lock, so no second look')

  const graphql = await gateway.gql('mutation { deleteImage(name: "app", tag: "graphql") { mode action strategy removedTags } }')
  t.same(graphql.body.data.deleteImage, { mode: 'UNTAG', action: 'UNTAGGED', strategy: 'NATIVE', removedTags: ['graphql'] })
  t.same([...tags].sort(), ['kept', 'lost-gone', 'lost-kept', 'lost-moved', 'lost-unknown', 'moving', 'refused'])
  const [record] = (await gateway.rest('GET', '/audit?tag=graphql')).body.items
  t.match(record, { outcome: 'deleted', mode: 'untag', deleteAction: 'untagged', strategy: 'native', restorable: true })
})

t.test('native untag on a registry that does not delete by tag: the failure says to use swap, nothing changed', async t => {
  const rest = await gateway.rest('DELETE', '/images/app/refused')
  t.equal(rest.status, 502)
  t.match(rest.body.detail, /untagStrategy: swap/)
  const graphql = await gateway.gql('mutation { deleteImage(name: "app", tag: "refused") { action } }')
  t.match(graphql.body.errors[0], { message: /untagStrategy: swap/, extensions: { status: 502 } })
  t.ok(tags.has('refused'))
  const records = (await gateway.rest('GET', '/audit?tag=refused')).body.items
  t.equal(records.length, 2)
  for (const record of records) t.match(record, { outcome: 'failed', strategy: 'native', upstreamStatus: 400 })
})

t.test('native untag whose answer was lost: the registry is asked again and the record says what happened', async t => {
  const gone = await gateway.rest('DELETE', '/images/app/lost-gone')
  t.equal(gone.status, 502)
  t.equal(gone.body.code, 'UPSTREAM_ERROR')
  t.match(gone.body.detail, /may or may not have acted/)
  t.notOk(tags.has('lost-gone'))
  const [goneRecord] = (await gateway.rest('GET', '/audit?tag=lost-gone')).body.items
  t.match(goneRecord, { outcome: 'deleted', errorCode: 'UPSTREAM_ERROR', errorDetail: /answer was lost .*but the tag is gone/, strategy: 'native', restorable: true }, 'the tag is gone: deleted')

  const kept = await gateway.rest('DELETE', '/images/app/lost-kept')
  t.equal(kept.status, 502)
  t.ok(tags.has('lost-kept'))
  const [keptRecord] = (await gateway.rest('GET', '/audit?tag=lost-kept')).body.items
  t.match(keptRecord, { outcome: 'failed', errorCode: 'UPSTREAM_ERROR' }, 'the tag is still on its digest: failed')

  t.equal((await gateway.rest('DELETE', '/images/app/lost-moved')).status, 502)
  const [movedRecord] = (await gateway.rest('GET', '/audit?tag=lost-moved')).body.items
  t.match(movedRecord, { outcome: 'failed', errorCode: 'UPSTREAM_ERROR', errorDetail: new RegExp(`may or may not have acted.*; app:lost-moved points at ${PUSHED_MEANWHILE} now`) }, 'the tag is on another image now: failed, saying where it points')

  const unknown = await gateway.rest('DELETE', '/images/app/lost-unknown')
  t.equal(unknown.status, 502)
  const [unknownRecord] = (await gateway.rest('GET', '/audit?tag=lost-unknown')).body.items
  t.match(unknownRecord, { outcome: 'pending' }, 'the registry cannot tell: left for start-up reconciliation')
})
