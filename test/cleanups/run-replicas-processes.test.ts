/**
 * Cleanup runs across replicas: two gateway processes on one real PostgreSQL and one real registry (through a proxy
 * that can hold DELETEs). A run on one replica is cancelled and followed (SSE) through the other; a caller who may
 * not manage it cannot cancel it there; a replica killed with SIGKILL mid-run has its run marked interrupted by the
 * other once its heartbeat is older than cleanups.staleAfterMs. Intervals are small; nothing asserts on time.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ChildProcess } from 'node:child_process'
import pg from 'pg'
import t from 'tap'
import { request } from 'undici'
import { stringify } from 'yaml'
import { freePort, HOST } from '../../testing/ports.js'
import { startPostgres } from '../../testing/postgres-process.js'
import { spawnLogged, terminate } from '../../testing/processes.js'
import { startRegistry } from '../../testing/registry-process.js'
import { daysBefore, pushCreated } from '../fixtures/cleanup-seed.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { sha256Hex } from '../fixtures/gateway.js'
import { registryClient } from '../fixtures/use-case.js'

// Two gateways compile the TypeScript sources on start; on a busy 2-core machine that takes minutes.
t.setTimeout(600_000)
const serverFile = fileURLToPath(new URL('../../src/server.ts', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'rdg-run-replicas-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
const registry = await startRegistry()
t.teardown(() => registry.stop())
const postgres = await startPostgres()
t.teardown(() => postgres.stop())
const proxy = await startFaultProxy(registry.url)
t.teardown(() => proxy.close())
const databaseUrl = await postgres.createDatabase('runs')

const KEYS = { alice: 'rdg_run-replicas-alice-key-long-enough-001', auditor: 'rdg_run-replicas-auditor-key-long-enough-2' }
const policyFile = join(dir, 'policy.yaml')
writeFileSync(policyFile, `
apiKeys:
  - { name: alice, sha256: ${sha256Hex(KEYS.alice)} }
  - { name: auditor, sha256: ${sha256Hex(KEYS.auditor)} }
roles:
  planner:
    - actions: [read, delete, restore, audit]
      repositories: ["replicas/**"]
  auditor:
    - actions: [read, audit]
      repositories: ["replicas/**"]
bindings:
  - { role: planner, subjects: ["apikey:alice"] }
  - { role: auditor, subjects: ["apikey:auditor"] }
`)

interface Replica { name: string, url: string, child: ChildProcess, logPath: string }
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function startReplica (name: string, cancelWaitMs: number): Promise<Replica> {
  const port = await freePort()
  const configFile = join(dir, `${name}.yaml`)
  writeFileSync(configFile, stringify({
    host: HOST,
    port,
    logLevel: 'warn',
    // The proxy holds DELETEs for as long as a test needs: the registry request timeout must outlast that.
    registries: { default: { url: proxy.url, defaultMode: 'auto', timeouts: { connectMs: 1000, requestMs: 120_000 } } },
    policyFile,
    audit: { driver: 'postgres', url: databaseUrl, lockWaitMs: 5000, reconcileIntervalMs: 1000, reconcileAfterMs: 126_000 },
    limits: { requestsPerWindow: 1_000_000 },
    cleanups: { runConcurrency: 1, heartbeatMs: 250, staleAfterMs: 3000, cancelWaitMs, pollMs: 100 }
  }))
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const variable of ['HOST', 'PORT', 'LOG_LEVEL', 'POLICY_FILE', 'AUDIT_DB', 'REGISTRY_URL', 'DATABASE_URL', 'CONFIG_FILE']) delete env[variable]
  const logPath = join(dir, `${name}.log`)
  const child = await spawnLogged(process.execPath, [...process.execArgv, serverFile, '--config', configFile], { logPath, env })
  const url = `http://${HOST}:${port}`
  for (let tries = 0; tries < 2400; tries++) {
    const ready = await request(`${url}/readyz`).then(async response => { await response.body.dump(); return response.statusCode === 200 }, () => false)
    if (ready) return { name, url, child, logPath }
    await sleep(100)
  }
  throw new Error(`replica ${name} did not become ready\n${readFileSync(logPath, 'utf8').slice(-2000)}`)
}

async function call (replica: Replica, method: 'GET' | 'DELETE' | 'POST', path: string, key = KEYS.alice, body?: object): Promise<{ status: number, body: any }> {
  const response = await request(`${replica.url}${path}`, {
    method,
    headers: { 'x-api-key': key, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  const text = await response.body.text()
  return { status: response.statusCode, body: text === '' ? undefined : JSON.parse(text) }
}

/** The whole event stream (it ends with the run) as [event, data] pairs. */
async function events (replica: Replica, id: string): Promise<Array<[string, any]>> {
  const response = await request(`${replica.url}/cleanups/${id}/events`, { headers: { 'x-api-key': KEYS.alice } })
  const text = await response.body.text()
  return text.split('\n\n').filter(block => block.startsWith('event: ')).map(block => {
    const [event, data] = block.split('\n') as [string, string]
    return [event.slice('event: '.length), JSON.parse(data.slice('data: '.length))]
  })
}

/** Plans, through `replica`, the removal of every tag of a repository of `count` month-old images. */
async function planned (replica: Replica, name: string, count: number): Promise<{ id: string, tags: string[] }> {
  const tags = Array.from({ length: count }, (_, i) => `pr-${i}`)
  for (const tag of tags) await pushCreated({ url: registry.url }, name, [tag], daysBefore(Date.now(), 30))
  const plan = await call(replica, 'POST', '/cleanups', KEYS.alice, { repositories: [name], rules: { select: [{ glob: 'pr-*' }] } })
  t.equal(plan.status, 201, `planned ${name}`)
  t.equal(plan.body.totals.remove, count)
  return { id: plan.body.id, tags }
}

async function runOf (replica: Replica, id: string): Promise<any> {
  return (await call(replica, 'GET', `/cleanups/${id}`)).body.run
}

async function until (what: () => Promise<boolean>): Promise<void> {
  while (!await what()) await sleep(100)
}

async function tagsLeft (name: string): Promise<string[]> {
  const client = registryClient('check', registry.url)
  try {
    return (await client.listTags(name).catch(() => [])).sort()
  } finally {
    await client.close()
  }
}

/** Holds every DELETE the proxy receives from now on; `release` lets them (and later ones) through. */
function holdDeletes (): () => void {
  let release: () => void = () => {}
  const remove = proxy.fault({ method: 'DELETE', action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) } })
  return () => {
    remove()
    release()
  }
}

const db = new pg.Client({ connectionString: databaseUrl })
await db.connect()
t.teardown(async () => { await db.end() })

/** When the replica running it last beat, as the store has it (the API does not show it). */
async function heartbeatOf (id: string): Promise<string> {
  const { rows } = await db.query<{ beat: string }>('SELECT heartbeat_at::text AS beat FROM cleanup_runs WHERE cleanup_id = $1', [id])
  return (rows[0] as { beat: string }).beat
}

const deletesSeen = (): number => proxy.requests.filter(each => each.method === 'DELETE').length

// A answers a cancel of B's run at once (202 cancelling); B waits for A's run to stop.
const [a, b] = await Promise.all([startReplica('a', 0), startReplica('b', 60_000)]) as [Replica, Replica]
t.teardown(async () => { await Promise.all([a, b].map(async replica => { await terminate(replica.child, 5000) })) })

t.test('a run on A: a caller who may not manage it cannot cancel it through B; the planner can, B follows it to the end', async t => {
  const name = 'replicas/cancel'
  const plan = await planned(b, name, 6)
  const release = holdDeletes()
  const before = deletesSeen()
  t.match(await call(a, 'POST', `/cleanups/${plan.id}/execute`), { status: 202, body: { state: 'running' } })
  await until(async () => deletesSeen() > before)
  const following = events(b, plan.id)

  t.match(await call(b, 'DELETE', `/cleanups/${plan.id}`, KEYS.auditor), { status: 403, body: { code: 'FORBIDDEN', detail: /may not cancel/ } },
    'an auditor sees the cleanup but may not cancel it')
  t.match(await runOf(b, plan.id), { state: 'running' }, 'and the run goes on, no cancel recorded')
  t.notOk('cancelRequestedAt' in await runOf(b, plan.id))

  const cancelling = call(b, 'DELETE', `/cleanups/${plan.id}`)
  await until(async () => (await runOf(a, plan.id)).state === 'cancelling')
  t.match(await runOf(a, plan.id), { state: 'cancelling', cancelRequestedBy: 'apikey:alice', cancelRequestedAt: /^\d{4}-/ }, 'every replica shows the cancel asked')
  release()
  const cancelled = await cancelling
  t.match(cancelled, { status: 200, body: { cleanupId: plan.id, state: 'cancelled', finishedAt: /^\d{4}-/, cancelRequestedBy: 'apikey:alice' } },
    'B waited for A\'s run to stop and answers how it ended')
  const { done, skipped, stale, failed } = cancelled.body.counts
  t.ok(done >= 1 && done < 6, `the removal in flight finished, the rest skipped (${done} done, ${skipped} skipped)`)
  t.equal(done + skipped + stale + failed, 6)
  t.equal((await tagsLeft(name)).length, 6 - done, 'every other tag untouched')

  const stream = await following
  t.match(stream[0], ['state', { cleanupId: plan.id, state: 'running' }], 'B\'s stream opens with the stored state')
  t.match(stream.at(-1), ['end', { state: 'cancelled', counts: cancelled.body.counts }], 'and ends with the run')
  t.ok(stream.slice(1, -1).every(([event]) => event === 'progress'), 'between them, progress read from the store')
  t.match(await call(a, 'DELETE', `/cleanups/${plan.id}`), { status: 200, body: { state: 'cancelled' } }, 'cancelling again says how it ended')
})

t.test('a run on B cancelled through A that does not stop in time: 202 cancelling; it stops, and A\'s stream ends with it', async t => {
  const name = 'replicas/slow'
  const plan = await planned(a, name, 3)
  const release = holdDeletes()
  const before = deletesSeen()
  t.match(await call(b, 'POST', `/cleanups/${plan.id}/execute`), { status: 202 })
  await until(async () => deletesSeen() > before)
  const answer = await call(a, 'DELETE', `/cleanups/${plan.id}`)
  t.match(answer, { status: 202, body: { cleanupId: plan.id, state: 'cancelling', cancelRequestedBy: 'apikey:alice' } },
    'the removal B has in flight keeps it running: accepted, not done')
  const following = events(a, plan.id)
  // Released only once B has beaten after the cancel was recorded (that beat read it): released sooner, B's three
  // removals could all finish before its next beat, and the run would end done.
  const beatAfterCancel = await heartbeatOf(plan.id)
  await until(async () => await heartbeatOf(plan.id) !== beatAfterCancel)
  release()
  const stream = await following
  t.match(stream[0], ['state', { state: 'cancelling' }])
  const end = stream.at(-1) as [string, any]
  t.match(end, ['end', { state: 'cancelled' }])
  const { done, skipped } = end[1].counts
  // B may start one more removal before its next heartbeat reads the cancel.
  t.ok(done >= 1 && done + skipped === 3, `the held removal finished, the rest skipped (${done} done)`)
  t.match(await runOf(b, plan.id), { state: 'cancelled', counts: end[1].counts })
  t.equal((await tagsLeft(name)).length, 3 - done)
})

t.test('kill -9 of the replica running a cleanup: the other marks the run interrupted once its heartbeat is stale', async t => {
  const name = 'replicas/killed'
  const plan = await planned(b, name, 4)
  const release = holdDeletes()
  t.teardown(release)
  const before = deletesSeen()
  t.match(await call(a, 'POST', `/cleanups/${plan.id}/execute`), { status: 202 })
  await until(async () => deletesSeen() > before)
  const following = events(b, plan.id)
  a.child.kill('SIGKILL')
  await until(async () => (await runOf(b, plan.id)).state !== 'running')
  t.match(await runOf(b, plan.id), { state: 'interrupted', finishedAt: /^\d{4}-/ }, 'marked by B\'s housekeeping, not left running')
  t.match((await following).at(-1), ['end', { state: 'interrupted' }], 'B\'s stream of the run ends with it')
  t.match(await call(b, 'DELETE', `/cleanups/${plan.id}`), { status: 200, body: { state: 'interrupted' } }, 'a cancel now says how it ended')
  t.match(readFileSync(b.logPath, 'utf8'), /cleanup runs whose replica stopped beating are marked interrupted/, 'and B logged why')
})
