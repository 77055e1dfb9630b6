import pg from 'pg'
import t from 'tap'
import { request } from 'undici'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { freePort } from '../../testing/ports.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { startGateway } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(() => registry.stop())
const postgres = await startPostgres()
t.teardown(() => postgres.stop())

async function tagStatus (name: string, tag: string): Promise<number> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${tag}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode
}

t.test('issue 14: with audit.driver postgres, a deletion is audited in PostgreSQL, listed and undone', async t => {
  const url = await postgres.createDatabase('gateway_trail')
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, config: { audit: { driver: 'postgres', url } } })
  const image = await pushImage({ url: registry.url }, 'pg/app', ['v1'], 'oci')
  t.equal((await gateway.rest('GET', '/readyz', { key: null })).status, 200, 'ready once the database answers')

  const deleted = await gateway.rest('DELETE', '/images/pg/app/v1')
  t.equal(deleted.status, 200)
  t.equal(await tagStatus('pg/app', 'v1'), 404)
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  t.teardown(() => client.end())
  const { rows } = await client.query<{ id: string, outcome: string, manifest: Buffer }>('SELECT id, outcome, manifest FROM audit_records WHERE action = $1', ['delete'])
  t.equal(rows.length, 1, 'one record of the deletion, in PostgreSQL')
  t.equal(rows[0]?.outcome, 'deleted')
  t.equal(rows[0]?.id, deleted.body.auditId)
  t.ok(rows[0]?.manifest.equals(image.manifest) === true, 'the exact manifest bytes were saved before the DELETE')

  const listed = await gateway.rest('GET', '/audit?name=pg/app&outcome=deleted')
  t.same(listed.body.items.map((item: { id: string }) => item.id), [deleted.body.auditId])

  const restored = await gateway.rest('POST', `/deletions/${deleted.body.auditId as string}/restore`)
  t.equal(restored.status, 200)
  t.equal(await tagStatus('pg/app', 'v1'), 200, 'the tag is back')
  t.equal((await gateway.rest('POST', `/deletions/${deleted.body.auditId as string}/restore`)).status, 409, 'a second undo is refused')
})

t.test('issue 14: PostgreSQL unreachable: /readyz says the trail is not writable and nothing is deleted', async t => {
  const url = `postgres://postgres@127.0.0.1:${await freePort()}/gone`
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, config: { audit: { driver: 'postgres', url } } })
  await pushImage({ url: registry.url }, 'pg/down', ['v1'], 'schema2')
  const ready = await gateway.rest('GET', '/readyz', { key: null })
  t.equal(ready.status, 503)
  t.match(JSON.stringify(ready.body), /audit/)
  const response = await gateway.rest('DELETE', '/images/pg/down/v1')
  t.equal(response.status, 503)
  t.match(response.body, { code: 'AUDIT_UNAVAILABLE' })
  t.notMatch(JSON.stringify(response.body), /ECONNREFUSED|postgres:/, 'the database error and URL stay internal')
  t.equal(await tagStatus('pg/down', 'v1'), 200, 'the image is still there')
})

t.test('issue 14: PostgreSQL stopped while running: deletions get 503 and touch nothing; when it returns they resume without a restart', async t => {
  const outage = await startPostgres()
  let current = outage
  t.teardown(() => current.stop())
  const url = await outage.createDatabase('outage_trail')
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, config: { audit: { driver: 'postgres', url } } })
  await pushImage({ url: registry.url }, 'pg/outage', ['v1'], 'schema2')
  t.equal((await gateway.rest('GET', '/readyz', { key: null })).status, 200)

  await outage.stop({ keepData: true })
  const refused = await gateway.rest('DELETE', '/images/pg/outage/v1')
  t.equal(refused.status, 503)
  t.match(refused.body, { code: 'AUDIT_UNAVAILABLE' })
  t.equal(await tagStatus('pg/outage', 'v1'), 200, 'nothing deleted while the trail is down')
  // /readyz answers from a one-second cache.
  await new Promise(resolve => setTimeout(resolve, 1100))
  t.equal((await gateway.rest('GET', '/readyz', { key: null })).status, 503, 'not ready while the trail is down')

  current = await startPostgres({ restart: { dataDir: outage.dataDir, port: outage.port } })
  await new Promise(resolve => setTimeout(resolve, 1100))
  t.equal((await gateway.rest('GET', '/readyz', { key: null })).status, 200, 'ready again, same process')
  const deleted = await gateway.rest('DELETE', '/images/pg/outage/v1')
  t.equal(deleted.status, 200)
  t.equal(await tagStatus('pg/outage', 'v1'), 404)
  const listed = await gateway.rest('GET', '/audit?name=pg/outage&action=delete')
  t.same(listed.body.items.map((item: { outcome: string }) => item.outcome), ['deleted'],
    'the deletion is in the trail that survived the outage; the refused attempt could not be recorded')
})
