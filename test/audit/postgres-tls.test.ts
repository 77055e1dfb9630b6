import { rm } from 'node:fs/promises'
import pg from 'pg'
import t from 'tap'
import { openPostgresAuditStore, type AuditStore } from '../../src/audit/index.js'
import { POSTGRES_APPLICATION_NAME } from '../../src/audit/postgres-store.js'
import { postgresTlsOptions } from '../../src/services.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { startRegistry } from '../../testing/registry-process.js'
import { startGateway } from '../fixtures/gateway.js'
import { makeTestPki } from '../fixtures/tls-certs.js'

const pki = await makeTestPki()
t.teardown(() => rm(pki.dir, { recursive: true, force: true }))
// TCP takes TLS only, with a client certificate from the test CA.
const server = await startPostgres({ tls: { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, caFile: pki.caFile, requireClientCert: true } })
t.teardown(() => server.stop())
const url = await server.createDatabase('tls_trail')
const clientPair = { certFile: pki.clientCertFile, keyFile: pki.clientKeyFile }

/** Whether every connection the gateway holds to this database is encrypted, and how many there are (over the socket, no TLS needed). */
async function gatewayConnections (): Promise<{ count: number, allTls: boolean }> {
  const admin = new pg.Client({ host: server.dataDir, port: server.port, user: 'postgres', database: 'postgres' })
  await admin.connect()
  try {
    const { rows } = await admin.query<{ count: number, all_tls: boolean | null }>(`SELECT count(*)::int AS count, bool_and(s.ssl) AS all_tls
      FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE $1 || '%' AND a.datname = 'tls_trail'`, [POSTGRES_APPLICATION_NAME])
    return { count: rows[0]?.count ?? 0, allTls: rows[0]?.all_tls === true }
  } finally {
    await admin.end()
  }
}

async function open (tls: Parameters<typeof postgresTlsOptions>[0], connectionString = url): Promise<AuditStore> {
  return await openPostgresAuditStore({ connectionString, tls: postgresTlsOptions(tls), poolSize: 2 })
}

t.test('issue 14: audit.tls with the CA and a client certificate: the store connects over TLS and works', async t => {
  const store = await open({ caFile: pki.caFile, ...clientPair, rejectUnauthorized: true })
  t.teardown(() => store.close())
  await store.check()
  const appended = await store.append({
    requestId: 'r1',
    transport: 'rest',
    subject: 'apikey:a',
    groups: [],
    action: 'delete',
    registry: 'default',
    name: 'tls/app',
    tag: 'v1',
    removedTags: [],
    decision: { allow: true, reason: 'test' },
    outcome: 'pending',
    manifest: Buffer.from('{"schemaVersion":2}')
  })
  t.same((await store.get(appended.id))?.manifest, Buffer.from('{"schemaVersion":2}'))
  // The cross-replica lock has a pool of its own: it must connect the way the audit pool does.
  t.equal(await store.shared.exclusive('default/tls/app', async () => await gatewayConnections()).then(seen => seen.count >= 2), true, 'the lock pool is connected too')
  t.match(await gatewayConnections(), { allTls: true }, 'pg_stat_ssl: the connections are encrypted')
  t.ok((await gatewayConnections()).count >= 1)
})

t.test('issue 14: the server certificate is verified: another CA, no CA, or a servername it does not carry are refused', async t => {
  await t.rejects(open({ caFile: pki.otherCaFile, ...clientPair, rejectUnauthorized: true }), /self[- ]signed|unable to (get|verify)/i, 'signed by a CA we were not given')
  await t.rejects(open({ ...clientPair, rejectUnauthorized: true }), /self[- ]signed|unable to (get|verify)/i, 'the system CAs do not know the test CA')
  await t.rejects(open({ caFile: pki.caFile, ...clientPair, rejectUnauthorized: true, servername: 'other.test' }), /other\.test/, 'the name checked is servername, not the URL host')
  const named = await open({ caFile: pki.caFile, ...clientPair, rejectUnauthorized: true, servername: 'db.test' })
  await named.check()
  await named.close()
  t.pass('servername db.test, which the certificate carries, connects to 127.0.0.1')
  const unverified = await open({ ...clientPair, rejectUnauthorized: false })
  await unverified.check()
  await unverified.close()
  t.pass('rejectUnauthorized false accepts the certificate unverified (encrypted, not authenticated)')
})

t.test('issue 14: without TLS or without a client certificate the server refuses the connection', async t => {
  await t.rejects(openPostgresAuditStore({ connectionString: url }), /pg_hba\.conf|no encryption|SSL off/i, 'plain TCP is refused')
  await t.rejects(open({ caFile: pki.caFile, rejectUnauthorized: true }), /certificate/i, 'the server asks for a client certificate')
})

t.test('issue 14: libpq ssl parameters in audit.url work instead of audit.tls', async t => {
  const params = new URLSearchParams({ sslmode: 'verify-full', sslrootcert: pki.caFile, sslcert: pki.clientCertFile, sslkey: pki.clientKeyFile })
  const store = await openPostgresAuditStore({ connectionString: `${url}?${params.toString()}` })
  t.teardown(() => store.close())
  await store.check()
  t.match(await gatewayConnections(), { allTls: true })
  const wrongCa = new URLSearchParams({ sslmode: 'verify-full', sslrootcert: pki.otherCaFile, sslcert: pki.clientCertFile, sslkey: pki.clientKeyFile })
  await t.rejects(openPostgresAuditStore({ connectionString: `${url}?${wrongCa.toString()}` }), /self[- ]signed|unable to (get|verify)/i)
})

t.test('issue 14: the gateway with audit.tls is ready on the TLS-only database; a missing file stops it at start-up', async t => {
  const registry = await startRegistry()
  t.teardown(() => registry.stop())
  const gateway = await startGateway(t, {
    registries: { default: { url: registry.url } },
    config: { audit: { driver: 'postgres', url, tls: { caFile: pki.caFile, ...clientPair } } }
  })
  t.equal((await gateway.rest('GET', '/readyz', { key: null })).status, 200)
  t.throws(() => postgresTlsOptions({ caFile: `${pki.dir}/missing.pem`, rejectUnauthorized: true }), /ENOENT/)
  t.equal(postgresTlsOptions(undefined), undefined)
})
