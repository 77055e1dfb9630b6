/**
 * Issue 14: three gateway processes on one PostgreSQL database and one real registry (2.8.2), behind a small
 * round-robin load balancer on 127.0.0.1. 50 concurrent deletes of one tag: exactly one deletes, one audit record
 * of it; undo by id on another replica; kill -9 of a replica mid-delete: its pending record is reconciled by
 * another, and the lock it held is free.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, request as httpRequest, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ChildProcess } from 'node:child_process'
import pg from 'pg'
import t from 'tap'
import { request } from 'undici'
import { stringify } from 'yaml'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { freePort, HOST } from '../../testing/ports.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { spawnLogged, terminate } from '../../testing/processes.js'
import { startRegistry } from '../../testing/registry-process.js'
import { pushImage } from '../../testing/seed.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { ADMIN_KEY, ADMIN_POLICY } from '../fixtures/gateway.js'

// Three gateways compiled on the fly beside a registry and PostgreSQL take a minute to start on two busy cores.
// Three gateways compile the TypeScript sources on start; on a busy 2-core machine that takes minutes.
t.setTimeout(600_000)
const serverFile = fileURLToPath(new URL('../../src/server.ts', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'rdg-replicas-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
const registry = await startRegistry()
t.teardown(() => registry.stop())
const postgres = await startPostgres()
t.teardown(() => postgres.stop())
// The third replica reaches the registry through a proxy, so the test can make its DELETE hang.
const proxy = await startFaultProxy(registry.url)
t.teardown(() => proxy.close())
const databaseUrl = await postgres.createDatabase('replicas')
const policyFile = join(dir, 'policy.yaml')
writeFileSync(policyFile, ADMIN_POLICY)

interface Replica { index: number, url: string, child: ChildProcess, logPath: string }
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function startReplica (index: number, registryUrl: string): Promise<Replica> {
  const port = await freePort()
  const configFile = join(dir, `replica-${index}.yaml`)
  writeFileSync(configFile, stringify({
    host: HOST,
    port,
    logLevel: 'warn',
    // Shorter timeouts and lock wait than the defaults, so that reconcileAfterMs (at least their sum) fits the kill test's wait.
    registries: { default: { url: registryUrl, defaultMode: 'digest', timeouts: { connectMs: 1000, requestMs: 4000 } } },
    policyFile,
    audit: { driver: 'postgres', url: databaseUrl, lockWaitMs: 5000, reconcileIntervalMs: 1000, reconcileAfterMs: 10_000 },
    limits: { requestsPerWindow: 1_000_000, coTagScansPerCaller: 10_000 }
  }))
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const name of ['HOST', 'PORT', 'LOG_LEVEL', 'POLICY_FILE', 'AUDIT_DB', 'REGISTRY_URL', 'DATABASE_URL', 'CONFIG_FILE']) delete env[name]
  const logPath = join(dir, `replica-${index}.log`)
  const child = await spawnLogged(process.execPath, [...process.execArgv, serverFile, '--config', configFile], { logPath, env })
  const url = `http://${HOST}:${port}`
  const deadline = Date.now() + 240_000
  while (Date.now() < deadline) {
    const ready = await request(`${url}/readyz`).then(async response => { await response.body.dump(); return response.statusCode === 200 }, () => false)
    if (ready) return { index, url, child, logPath }
    await sleep(100)
  }
  throw new Error(`replica ${index} did not become ready\n${readFileSync(logPath, 'utf8').slice(-2000)}`)
}

/** Round-robin over the replicas; says which one answered in `x-replica`. */
async function startBalancer (replicas: Replica[]): Promise<{ url: string, server: Server }> {
  let next = 0
  const server = createServer((incoming, outgoing) => {
    const replica = replicas[next++ % replicas.length] as Replica
    const forwarded = httpRequest(`${replica.url}${incoming.url ?? '/'}`, { method: incoming.method, headers: incoming.headers }, answer => {
      outgoing.writeHead(answer.statusCode ?? 502, { ...answer.headers, 'x-replica': String(replica.index) })
      answer.pipe(outgoing)
    })
    forwarded.on('error', () => { outgoing.writeHead(502).end() })
    incoming.pipe(forwarded)
  })
  await new Promise<void>(resolve => server.listen(0, HOST, resolve))
  return { url: `http://${HOST}:${(server.address() as { port: number }).port}`, server }
}

async function call (base: string, method: 'GET' | 'DELETE' | 'POST', path: string): Promise<{ status: number, replica: string, body: any }> {
  const response = await request(`${base}${path}`, { method, headers: { 'x-api-key': ADMIN_KEY } })
  const text = await response.body.text()
  return { status: response.statusCode, replica: String(response.headers['x-replica']), body: text === '' ? undefined : JSON.parse(text) }
}

async function tagStatus (name: string, tag: string): Promise<number> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${tag}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode
}

const replicas = await Promise.all([startReplica(0, registry.url), startReplica(1, registry.url), startReplica(2, proxy.url)])
t.teardown(async () => { await Promise.all(replicas.map(async replica => { await terminate(replica.child, 5000) })) })
const balancer = await startBalancer(replicas)
t.teardown(() => { balancer.server.closeAllConnections(); balancer.server.close() })

t.test('50 concurrent deletes of one tag over 3 replicas: one deletes, the rest 404/409, one audit record; undo on another replica', async t => {
  const image = await pushImage({ url: registry.url }, 'replicas/app', ['v1'], 'schema2')
  const answers = await Promise.all(Array.from({ length: 50 }, async () => await call(balancer.url, 'DELETE', '/images/replicas/app/v1')))
  const statuses = answers.map(answer => answer.status)
  t.equal(statuses.filter(status => status === 200).length, 1, `exactly one success (${JSON.stringify(statuses)})`)
  t.ok(statuses.every(status => [200, 404, 409].includes(status)), 'the rest are 404 or 409')
  t.same(new Set(answers.map(answer => answer.replica)), new Set(['0', '1', '2']), 'every replica took part')
  t.equal(await tagStatus('replicas/app', 'v1'), 404)
  const deleted = await call(balancer.url, 'GET', '/audit?name=replicas/app&outcome=deleted')
  const success = answers.find(answer => answer.status === 200)!
  t.same(deleted.body.items.map((item: { id: string }) => item.id), [success.body.auditId], 'one audit record of the deletion')
  t.equal((await call(balancer.url, 'GET', '/audit?name=replicas/app&outcome=pending')).body.items.length, 0, 'nothing left pending')

  const other = replicas.find(replica => String(replica.index) !== success.replica)!
  const restored = await call(other.url, 'POST', `/deletions/${success.body.auditId as string}/restore`)
  t.equal(restored.status, 200, `undone on replica ${other.index}, not ${success.replica} which deleted`)
  t.equal(await tagStatus('replicas/app', 'v1'), 200)
  const again = replicas.find(replica => replica !== other)!
  t.match(await call(again.url, 'POST', `/deletions/${success.body.auditId as string}/restore`), { status: 409, body: { code: 'ALREADY_RESTORED' } })
  t.equal(image.name, 'replicas/app')
})

t.test('kill -9 of a replica mid-delete: another reconciles its pending record, and the lock it held is free', async t => {
  await pushImage({ url: registry.url }, 'replicas/killed', ['v1', 'v2'], 'schema2')
  await pushImage({ url: registry.url }, 'replicas/killed', ['v3'], 'oci')
  proxy.fault({ method: 'DELETE', path: /^\/v2\/replicas\/killed\//, action: { kind: 'hang-after-forward' } })
  const victim = replicas[2] as Replica
  const cut = call(victim.url, 'DELETE', '/images/replicas/killed/v1?force=true').catch((error: unknown) => error)
  await proxy.waitFor(seen => seen.method === 'DELETE' && seen.path.startsWith('/v2/replicas/killed/'), 30_000)
  const db = new pg.Client({ connectionString: databaseUrl })
  await db.connect()
  t.teardown(() => db.end())
  t.equal((await db.query("SELECT id FROM audit_records WHERE name = 'replicas/killed' AND outcome = 'pending'")).rowCount, 1, 'the write-ahead record is there')
  victim.child.kill('SIGKILL')
  t.type(await cut, Error, 'the caller of the killed replica gets no answer')
  t.equal(await tagStatus('replicas/killed', 'v1'), 404, 'the registry did act')

  const survivor = replicas[0] as Replica
  const started = Date.now()
  t.match(await call(survivor.url, 'DELETE', '/images/replicas/killed/v3'), { status: 200 }, 'the repository lock of the dead replica is free at once')
  t.ok(Date.now() - started < 10_000)
  let settled: any
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const listed = await call(survivor.url, 'GET', '/audit?name=replicas/killed&tag=v1')
    settled = listed.body.items.find((item: { action: string }) => item.action === 'delete')
    if (settled?.outcome !== 'pending') break
    await sleep(200)
  }
  t.match(settled, { outcome: 'deleted', removedTags: ['v1', 'v2'], errorDetail: /reconciled at start-up or by a later pass \(on any replica\)/ })
  const reconciled = await db.query<{ reconcile_owner: string }>('SELECT reconcile_owner FROM audit_records WHERE id = $1', [settled.id])
  t.match(reconciled.rows[0]?.reconcile_owner, /\/\d+\//, 'claimed by a live replica')
})
