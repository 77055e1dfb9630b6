/**
 * kill -9 of a gateway process mid-run: the restarted gateway shows the run interrupted, and every tag of the plan
 * is either done (gone from the registry, audited deleted with the cleanup id) or untouched (still there, no
 * deletion audited), the write-ahead records of removals in flight reconciled as at any start.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import t from 'tap'
import { request } from 'undici'
import { stringify } from 'yaml'
import { openSqliteAuditStore } from '../../src/audit/index.js'
import { planCleanup } from '../../src/cleanups/plan-cleanup.js'
import { BrowseCache } from '../../src/images/browse-cache.js'
import { loadPolicy } from '../../src/policy/load.js'
import { freePort } from '../../testing/ports.js'
import { startNodeChild, type Child } from '../../testing/processes.js'
import { startRegistry } from '../../testing/registry-process.js'
import { daysBefore, pushCreated } from '../fixtures/cleanup-seed.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { sha256Hex } from '../fixtures/gateway.js'
import { directory, registryClient } from '../fixtures/use-case.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const proxy = await startFaultProxy(registry.url)
t.teardown(async () => { await proxy.close() })

const KEY = 'rdg_cleanup-kill-test-key-long-enough-00001'
const POLICY = `
apiKeys:
  - { name: alice, sha256: ${sha256Hex(KEY)} }
roles:
  admin:
    - actions: ["*"]
      repositories: ["**"]
bindings:
  - { role: admin, subjects: ["apikey:alice"] }
`
const dir = mkdtempSync(join(tmpdir(), 'rdg-cleanup-kill-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
const policyFile = join(dir, 'policy.yaml')
writeFileSync(policyFile, POLICY)
const auditPath = join(dir, 'audit.db')
const root = fileURLToPath(new URL('../../', import.meta.url))
// The gateway's own sources, run through the TypeScript loader tap runs the tests with: no build step.
const loader = pathToFileURL(join(root, 'node_modules/@tapjs/typescript/dist/esm/import.mjs')).href

async function startChild (name: string): Promise<Child> {
  const port = await freePort()
  const configFile = join(dir, `${name}.yaml`)
  writeFileSync(configFile, stringify({
    host: '127.0.0.1',
    port,
    logLevel: 'warn',
    // Longer than the test holds a DELETE: the killed gateway must not give up on one first.
    registries: { default: { url: proxy.url, timeouts: { requestMs: 120_000 } } },
    policyFile,
    audit: { path: auditPath }
  }))
  const env: NodeJS.ProcessEnv = { ...process.env, CONFIG_FILE: configFile, NODE_OPTIONS: `--import=${loader}` }
  for (const variable of ['HOST', 'PORT', 'LOG_LEVEL', 'POLICY_FILE', 'AUDIT_DB', 'REGISTRY_URL']) delete env[variable]
  const child = await startNodeChild({ script: join(root, 'src/server.ts'), env, port, logPath: join(dir, `${name}.log`), readyPath: '/healthz', timeoutMs: 120_000 })
  t.teardown(async () => { await child.stop() })
  return child
}

async function call (child: Child, method: 'GET' | 'POST', path: string, body?: object): Promise<{ status: number, text: string }> {
  const response = await request(child.url + path, {
    method,
    headers: { 'x-api-key': KEY, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  return { status: response.statusCode, text: await response.body.text() }
}

t.test('kill -9 mid-run: interrupted after the restart; every tag done-and-audited or untouched', async t => {
  const name = 'kill/app'
  const tags = Array.from({ length: 10 }, (_, i) => `pr-${i}`)
  for (const tag of tags) await pushCreated({ url: registry.url }, name, [tag], daysBefore(Date.now(), 30))
  const policy = loadPolicy(POLICY, 'policy.yaml')
  const plan = await planCleanup({
    registries: directory(t, { default: registry.url }),
    policy: () => policy,
    cache: new BrowseCache({ entries: 100, tagTtlMs: 0 }),
    concurrency: 4,
    catalogPageSize: 100,
    maxTags: 1000,
    registrySettings: () => ({ untagStrategy: 'swap' }),
    now: Date.now
  }, { identity: { subject: 'apikey:alice', groups: [], kind: 'apikey' }, context: { requestId: 'plan', transport: 'rest' }, repositories: [name], rules: {} })
  t.equal(plan.totals.remove, 10)

  const first = await startChild('first')
  const store = openSqliteAuditStore(auditPath)
  t.teardown(async () => { await store.close() })
  await store.saveCleanup({ id: plan.id, registry: plan.registry, createdBy: plan.createdBy, createdAt: plan.createdAt, state: plan.state, body: JSON.stringify(plan) })

  // Three DELETEs reach the registry; the ones after hang in the proxy, their write-ahead records written. Once one
  // hangs, the gateway is killed.
  proxy.fault({ method: 'DELETE', action: { kind: 'set-headers', headers: {} }, times: 3 })
  let release: () => void = () => {}
  proxy.fault({ method: 'DELETE', action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) } })
  t.equal((await call(first, 'POST', `/cleanups/${plan.id}/execute`)).status, 202)
  await proxy.waitFor(() => proxy.requests.filter(each => each.method === 'DELETE').length >= 4, 60_000)
  process.kill(first.pid, 'SIGKILL')
  // What the killed process sent is still forwarded: the registry acts on requests whose answers nobody hears.
  release()
  proxy.clear()

  const second = await startChild('second')
  let state = ''
  for (let tries = 0; tries < 200 && state !== 'interrupted'; tries++) {
    const events = await call(second, 'GET', `/cleanups/${plan.id}/events`)
    state = /"state":"(\w+)"/.exec(events.text)?.[1] ?? ''
    if (state !== 'interrupted') await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.equal(state, 'interrupted', 'the restarted gateway shows the run interrupted')

  const client = registryClient('check', registry.url)
  const left = (await client.listTags(name).catch(() => [])).sort()
  await client.close()
  const audit = await call(second, 'GET', `/audit?cleanupId=${plan.id}&limit=50`)
  const records = (JSON.parse(audit.text) as { items: Array<{ tag: string, outcome: string }> }).items
  t.notOk(records.some(record => record.outcome === 'pending'), 'no record left pending: reconciled at the start')
  const deleted = records.filter(record => record.outcome === 'deleted').map(record => record.tag).sort()
  t.ok(deleted.length >= 3 && deleted.length < 10, `some done, not all (${deleted.length})`)
  t.same(deleted, tags.filter(tag => !left.includes(tag)).sort(), 'the tags gone are exactly the ones audited deleted')
  t.same([...left, ...deleted].sort(), [...tags].sort(), 'every other tag untouched')
  t.match(await store.getCleanupRun(plan.id), { state: 'interrupted', finishedAt: /^\d{4}-/ })
})
