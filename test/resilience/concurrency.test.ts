/**
 * Concurrency against a real registry: many distinct deletions at once, many deletions of the same tag at once,
 * and policy reloads while requests are in flight.
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { startRegistry } from '../../testing/registry-process.js'
import { MEDIA_TYPES, pushBlob, pushImage, tagManifest } from '../../testing/seed.js'
import { MANIFEST_ACCEPT } from '../../src/registry/media-types.js'
import { startFaultProxy } from '../fixtures/fault-proxy.js'
import { countingDispatcher, DELETE_MUTATION, sha256Hex, startGateway, type Gateway, type Reply } from '../fixtures/gateway.js'

const registry = await startRegistry()
t.teardown(async () => { await registry.stop() })
const target = { url: registry.url }
const NO_RATE_LIMIT = { limits: { requestsPerWindow: 1_000_000, coTagScansPerCaller: 10_000 } }

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`

/** Many tags with distinct digests, fast: one config and layer per repository, one small manifest per tag. */
async function seedDistinct (name: string, tags: string[]): Promise<Map<string, string>> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, nonce: randomBytes(8).toString('hex') }))
  const layer = randomBytes(64)
  await pushBlob(target, name, config)
  await pushBlob(target, name, layer)
  const digests = new Map<string, string>()
  await Promise.all(tags.map(async tag => {
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: sha256(config), size: config.length },
      layers: [{ mediaType: MEDIA_TYPES.ociLayer, digest: sha256(layer), size: layer.length }],
      annotations: { 'org.example.tag': tag }
    }))
    digests.set(tag, await tagManifest(target, name, tag, manifest, MEDIA_TYPES.ociManifest))
  }))
  return digests
}

async function headStatus (name: string, reference: string): Promise<number> {
  const response = await request(`${registry.url}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
  await response.body.dump()
  return response.statusCode
}

async function registryTags (name: string): Promise<string[]> {
  const response = await request(`${registry.url}/v2/${name}/tags/list`)
  const body = await response.body.json() as { tags?: string[] | null }
  return body.tags ?? []
}

async function deletedInAudit (gateway: Gateway, name: string): Promise<any[]> {
  const reply = await gateway.rest('GET', `/audit?outcome=deleted&name=${encodeURIComponent(name)}&limit=200`)
  return reply.body.items
}

t.test('200 concurrent deletions of distinct tags: each succeeds exactly once and the registry shows them all gone', async t => {
  const counted = countingDispatcher(t)
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, dispatcher: counted.dispatcher, config: NO_RATE_LIMIT })
  const repositories = Array.from({ length: 20 }, (_, i) => `many/repo-${i}`)
  const tags = Array.from({ length: 10 }, (_, i) => `pr-${i}`)
  const digests = new Map<string, Map<string, string>>()
  for (const repository of repositories) digests.set(repository, await seedDistinct(repository, tags))
  const jobs = repositories.flatMap(repository => tags.map(tag => ({ repository, tag })))
  t.equal(jobs.length, 200)

  const replies = await Promise.all(jobs.map(async ({ repository, tag }, i) => {
    // Both transports, interleaved.
    if (i % 4 === 3) {
      const reply = await gateway.gql(DELETE_MUTATION, { name: repository, tag })
      return { status: reply.body.errors === undefined ? 200 : reply.body.errors[0].extensions.status, body: reply.body.data?.deleteImage ?? reply.body.errors[0].extensions }
    }
    return await gateway.rest('DELETE', `/images/${repository}/${tag}`)
  }))
  const failures = replies.map((reply, i) => ({ ...jobs[i], status: reply.status, code: reply.body?.code })).filter(reply => reply.status !== 200)
  t.same(failures, [], 'every deletion answered 200')
  t.ok(replies.every((reply, i) => reply.body.deleted === true && reply.body.digest === digests.get(jobs[i]!.repository)!.get(jobs[i]!.tag) && reply.body.removedTags.length === 1),
    'each deleted exactly its own digest and nothing else')

  const deletes = counted.requests.filter(entry => entry.method === 'DELETE')
  t.equal(deletes.length, 200, 'one DELETE per tag reached the registry')
  t.equal(new Set(deletes.map(entry => entry.path)).size, 200, 'no digest was deleted twice')
  for (const repository of repositories) {
    t.same(await registryTags(repository), [], `${repository}: no tags left`)
    const audit = await deletedInAudit(gateway, repository)
    t.same(audit.map(item => item.tag).sort(), [...tags].sort(), `${repository}: one deletion per tag in the audit trail`)
  }
  const stillThere = await Promise.all(jobs.map(async ({ repository, tag }) => await headStatus(repository, digests.get(repository)!.get(tag)!)))
  t.ok(stillThere.every(status => status === 404), 'every manifest is gone from the registry')
})

t.test('50 concurrent deletions of the same tag: exactly one succeeds, the rest are 404 NOT_FOUND (or 409), none is a 5xx', async t => {
  // distribution 2.8 itself sometimes answers 202 to two concurrent DELETEs of one digest (2 rounds in 30 of 50
  // DELETEs straight at the registry), so "exactly one" is the gateway's to guarantee; five rounds give the race a chance.
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, config: NO_RATE_LIMIT })
  for (const round of [1, 2, 3, 4, 5]) {
    const name = `same/app-${round}`
    const image = await pushImage(target, name, ['v1'], round % 2 === 0 ? 'oci-index' : 'schema2')
    const replies: Reply[] = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
      if (i % 2 === 1) {
        const reply = await gateway.gql(DELETE_MUTATION, { name, tag: 'v1' })
        return { status: reply.body.errors === undefined ? 200 : reply.body.errors[0].extensions.status, headers: {}, body: reply.body.data?.deleteImage ?? reply.body.errors[0].extensions }
      }
      return await gateway.rest('DELETE', `/images/${name}/v1`)
    }))
    const statuses = replies.map(reply => reply.status)
    const summary = JSON.stringify(statuses.reduce<Record<number, number>>((counts, status) => ({ ...counts, [status]: (counts[status] ?? 0) + 1 }), {}))
    t.equal(statuses.filter(status => status === 200).length, 1, `round ${round}: exactly one success (${summary})`)
    t.ok(statuses.every(status => status === 200 || status === 404 || status === 409), `round ${round}: the others are 404 or 409 (${summary})`)
    t.ok(replies.filter(reply => reply.status === 404).every(reply => reply.body.code === 'NOT_FOUND'), `round ${round}: every 404 is NOT_FOUND`)
    const audit = await deletedInAudit(gateway, name)
    t.equal(audit.length, 1, `round ${round}: the audit trail shows one deletion`)
    t.equal(audit[0]?.digest, image.digest)
    t.equal(await headStatus(name, 'v1'), 404, `round ${round}: the tag is gone`)
    const pending = await gateway.rest('GET', `/audit?outcome=pending&name=${name}`)
    t.same(pending.body.items, [], `round ${round}: nothing left pending`)
  }
})

const RELOAD_KEY = 'rdg_reload-test-key-that-is-long-enough-01'

/** An audit database in a directory of its own, away from the watched policy file's. */
function separateAuditPath (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'rdg-audit-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return join(dir, 'audit.db')
}

/** Replaces the policy file the way editors and config maps do: write aside, rename over. */
function replacePolicy (gateway: Gateway, text: string): void {
  writeFileSync(`${gateway.policyFile}.tmp`, text)
  renameSync(`${gateway.policyFile}.tmp`, gateway.policyFile)
}

function policyAllowing (role: string, repository: string): string {
  return `
apiKeys:
  - name: loader
    sha256: ${sha256Hex(RELOAD_KEY)}
roles:
  ${role}:
    - actions: [read, delete, audit]
      repositories: ["${repository}/**"]
bindings:
  - role: ${role}
    subjects: ["apikey:loader"]
`
}

t.test('policy reloads under load: every request is judged by one whole policy, the old or the new', async t => {
  const A = policyAllowing('role-a', 'reload/a')
  const B = policyAllowing('role-b', 'reload/b')
  await pushImage(target, 'reload/a/app', ['t'], 'schema2')
  await pushImage(target, 'reload/b/app', ['t'], 'schema2')
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, policy: A, config: NO_RATE_LIMIT, auditPath: separateAuditPath(t) })
  const key = { key: RELOAD_KEY }

  let swaps = 0
  const stop = new AbortController()
  const swapper = (async () => {
    // Atomic replacement, as editors and config maps do; the gateway's directory watch picks it up.
    while (!stop.signal.aborted && swaps < 40) {
      await sleep(260)
      replacePolicy(gateway, swaps % 2 === 0 ? B : A)
      swaps++
    }
  })()

  const seen = { a: 0, b: 0 }
  const inconsistent: string[] = []
  const deadline = Date.now() + 4000
  const worker = async (worker: number): Promise<void> => {
    for (let i = 0; Date.now() < deadline; i++) {
      const which = (worker + i) % 3
      if (which === 2) {
        const me = await gateway.rest('GET', '/me', key)
        const roles = JSON.stringify(me.body.roles)
        if (me.status !== 200 || (roles !== '["role-a"]' && roles !== '["role-b"]')) inconsistent.push(`/me: ${me.status} ${roles}`)
        else seen[roles === '["role-a"]' ? 'a' : 'b']++
        continue
      }
      const repository = which === 0 ? 'reload/a/app' : 'reload/b/app'
      const reply = await gateway.rest('DELETE', `/images/${repository}/t?dryRun=true`, key)
      // Under a whole policy a dry-run is either allowed through (read and delete both granted) or refused at
      // once (neither granted); read granted but delete refused would mean two policies judged one request.
      const whole = (reply.status === 200 && reply.body.allowed === true) || (reply.status === 403 && reply.body.code === 'FORBIDDEN')
      if (!whole) inconsistent.push(`${repository}: ${reply.status} ${String(reply.body.code ?? `allowed=${String(reply.body.allowed)} reason=${String(reply.body.reason).slice(0, 160)}`)}`)
    }
  }
  await Promise.all(Array.from({ length: 6 }, async (_, i) => { await worker(i) }))
  stop.abort()
  await swapper
  t.equal(inconsistent.length, 0, `no request saw a mix of policies, a policy without bindings or a 5xx (${inconsistent.length}, e.g. ${JSON.stringify(inconsistent.slice(0, 3))})`)
  t.ok(swaps >= 10, `the policy file was replaced ${swaps} times during the load`)
  t.ok(seen.a > 0 && seen.b > 0, `requests ran under both policies (${seen.a} under A, ${seen.b} under B)`)
})

t.test('a request that straddles a reload is judged by the policy it started under, not by two', async t => {
  // A lets the caller delete `one` but not force; B lets it force `one` and delete `two`, but not delete `one`.
  // Neither alone lets a forced delete of `one` (which takes `two` with it) through.
  const rules = (list: string): string => `
apiKeys:
  - name: loader
    sha256: ${sha256Hex(RELOAD_KEY)}
roles:
  straddle:
${list}
bindings:
  - role: straddle
    subjects: ["apikey:loader"]
`
  const A = rules('    - { actions: [read, delete], repositories: ["mix/**"], tags: ["one"] }')
  const B = rules('    - { actions: [read, force], repositories: ["mix/**"], tags: ["one"] }\n    - { actions: [read, delete], repositories: ["mix/**"], tags: ["two"] }')
  const image = await pushImage(target, 'mix/app', ['one', 'two'], 'schema2')
  const proxy = await startFaultProxy(registry.url)
  t.teardown(async () => { await proxy.close() })
  const gateway = await startGateway(t, { registries: { default: { url: proxy.url } }, policy: A, auditPath: separateAuditPath(t) })
  const key = { key: RELOAD_KEY }

  // The tag listing (between the entry check and the co-tag checks) is held until the policy has changed.
  let release = (): void => {}
  proxy.fault({ method: 'GET', path: /^\/v2\/mix\/app\/tags\/list/, action: { kind: 'hold', release: new Promise<void>(resolve => { release = resolve }) }, times: 1 })
  const pending = gateway.rest('DELETE', '/images/mix/app/one?force=true', key)
  await proxy.waitFor(entry => entry.action === 'hold')
  replacePolicy(gateway, B)
  let reloaded = false
  for (let i = 0; i < 250 && !reloaded; i++) {
    // Only B lets the caller read `two`.
    reloaded = (await gateway.rest('DELETE', '/images/mix/app/two?dryRun=true', key)).status !== 403
    if (!reloaded) await sleep(20)
  }
  t.ok(reloaded, 'policy B is in force while the first request waits')
  release()
  const reply = await pending
  t.equal(reply.status, 403, `the forced delete is refused (${reply.status} ${String(reply.body.code)})`)
  t.equal(await headStatus('mix/app', 'two'), 200, 'two was not taken along')
  t.equal(await headStatus('mix/app', image.digest), 200, 'nothing was deleted')
})

t.test('a busy neighbour of the policy file (the audit database) does not hold a reload back', async t => {
  // startGateway keeps policy.yaml and audit.db in one directory, as a deployment with one data directory would.
  const A = policyAllowing('role-a', 'busy/a')
  const B = policyAllowing('role-b', 'busy/b')
  await pushImage(target, 'busy/a/app', ['t'], 'schema2')
  const gateway = await startGateway(t, { registries: { default: { url: registry.url } }, policy: A, config: NO_RATE_LIMIT })
  const key = { key: RELOAD_KEY }
  const stop = new AbortController()
  // Audited requests all the time: every one writes the audit database next to the policy file.
  const traffic = (async () => {
    while (!stop.signal.aborted) await gateway.rest('DELETE', '/images/busy/a/app/t?dryRun=true', key)
  })()
  await sleep(300)
  replacePolicy(gateway, B)
  const changed = Date.now()
  let roles = ''
  while (Date.now() - changed < 3000 && roles !== '["role-b"]') {
    await sleep(50)
    roles = JSON.stringify((await gateway.rest('GET', '/me', key)).body.roles)
  }
  stop.abort()
  await traffic
  t.equal(roles, '["role-b"]', `the new policy is in force within 3 s of the change, despite the traffic (${Date.now() - changed} ms)`)
})
