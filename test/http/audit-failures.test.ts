import t, { type Test } from 'tap'
import { request } from 'undici'
import { openSqliteAuditStore } from '../../src/audit/sqlite-store.js'
import type { AuditStore } from '../../src/audit/types.js'
import { buildApp } from '../../src/app.js'
import { validateConfig } from '../../src/config/load.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { createLogger } from '../../src/logging.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { ADMIN_KEY, ADMIN_POLICY } from '../fixtures/gateway.js'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const dir = mkdtempSync(join(tmpdir(), 'rdg-audit-failures-'))
writeFileSync(join(dir, 'policy.yaml'), ADMIN_POLICY)

/** A real store whose chosen methods fail, as a full disk or a locked database would make them. */
function failing (store: AuditStore, methods: Array<'append' | 'update'>): AuditStore {
  const broken = async (): Promise<never> => { throw new Error('SQLITE_FULL: database or disk is full') }
  return Object.assign(Object.create(store) as AuditStore, Object.fromEntries(methods.map(method => [method, broken])))
}

async function gatewayWith (t: Test, auditStore: AuditStore): Promise<{ app: Awaited<ReturnType<typeof buildApp>>, lines: string[] }> {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _encoding, done) { lines.push(chunk.toString()); done() } })
  const app = await buildApp(validateConfig({ registries: { default: { url: registry.url } }, policyFile: join(dir, 'policy.yaml') }, 'test'),
    { auditStore, logger: createLogger('error', sink) })
  t.teardown(async () => { await app.close() })
  return { app, lines }
}

async function tagStatus (name: string, tag: string): Promise<number> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${tag}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode
}

t.test('an audit trail that cannot be written stops the deletion before the registry is touched', async t => {
  const store = openSqliteAuditStore(':memory:')
  t.teardown(async () => { await store.close() })
  const { app } = await gatewayWith(t, failing(store, ['append']))
  await pushImage({ url: registry.url }, 'audited/app', ['v1'], 'schema2')
  const response = await app.inject({ method: 'DELETE', url: '/images/audited/app/v1', headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(response.statusCode, 503)
  t.match(response.json(), { code: 'AUDIT_UNAVAILABLE', detail: /nothing more was changed/ })
  t.notMatch(response.body, /SQLITE_FULL/, 'the database error stays internal')
  t.equal(await tagStatus('audited/app', 'v1'), 200, 'the image is still there')
})

t.test('when only the outcome cannot be recorded, the caller still learns the deletion happened', async t => {
  const store = openSqliteAuditStore(':memory:')
  t.teardown(async () => { await store.close() })
  const { app, lines } = await gatewayWith(t, failing(store, ['update']))
  await pushImage({ url: registry.url }, 'audited/app', ['v2'], 'oci')
  const response = await app.inject({ method: 'DELETE', url: '/images/audited/app/v2', headers: { 'x-api-key': ADMIN_KEY } })
  t.equal(response.statusCode, 200, 'answering an error would make the caller retry a deletion that happened')
  t.equal(await tagStatus('audited/app', 'v2'), 404)
  const [record] = await store.pending()
  t.match(record, { outcome: 'pending', name: 'audited/app', tag: 'v2' }, 'the write-ahead record waits for start-up reconciliation')
  t.match(lines.join(''), /the registry acted but the audit trail could not record it/)
})
