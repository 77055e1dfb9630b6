/**
 * Scenario 5: removing one tag. The gateway's untag as the use case will run it (GET the bytes to restore, then
 * the swap: a HEAD of the tag under the lock, placeholder PUT + DELETE by digest) against the unsafe floor (a warm bare HEAD + DELETE by digest,
 * which would take every co-tag along) and against `skopeo delete` (also by digest, also unsafe), one tag at a
 * time, interleaved in one repository so the registry's per-DELETE cost (it reads every tag) is the same for all.
 * With a gateway, also `DELETE /images/<name>/<tag>?mode=untag` through it: the whole use case (authorization,
 * write-ahead audit record with the bytes, swap, settle) over HTTP.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Pool } from 'undici'
import type { BenchGateway } from './gateway.js'
import { createMetrics } from '../src/metrics.js'
import { RegistryClient } from '../src/registry/client.js'
import { KeyedQueue, repositoryLockKey, Untagger } from '../src/registry/untag.js'
import type { Progress } from './progress.js'
import { deleteDigest, headDigest, listTags } from './registry-ops.js'
import type { SeededRepository } from './seed-tags.js'
import { round, roundSummary, summarize, type Summary } from './stats.js'

const run = promisify(execFile)

export type UntagMethod = 'untag' | 'gateway' | 'floor' | 'skopeo'

export interface UntagResult {
  tags: number
  rounds: number
  untagMs: Summary
  floorMs: Summary
  /** DELETE ?mode=untag through the gateway; undefined when the run had no gateway. */
  gatewayMs?: Summary
  gatewayRatioToFloor?: number
  /** Undefined when skopeo is not installed. */
  skopeoMs?: Summary
  /** Registry requests per untag in the steady state, as the registry metrics saw them (GET included). */
  requestsPerUntag: number
  /** Requests the untag itself reported (without the GET of the bytes). */
  reportedRequests: number
  ratioToFloor: number
  ratioToSkopeo?: number
  /** Median milliseconds of each registry request the untag made, by operation (where its time goes). */
  untagRequestMs: Record<string, number>
  /** The same for the floor's two requests, timed around the bare pool's calls. */
  floorRequestMs: Record<string, number>
}

export async function skopeoAvailable (): Promise<boolean> {
  try {
    await run('skopeo', ['--version'])
    return true
  } catch {
    return false
  }
}

export async function measureUntag (options: {
  registryUrl: string
  pool: Pool
  repository: SeededRepository
  /** The repository's nominal size (it was seeded with extra tags that the rounds use up). */
  tags: number
  rounds: number
  warmupRounds: number
  progress: Progress
  gateway?: BenchGateway
}): Promise<UntagResult> {
  const { repository, pool, progress } = options
  const metrics = createMetrics()
  let registryRequests = 0
  let timing = false
  const requestMs: Record<string, number[]> = {}
  const record = (operation: string, ms: number): void => { if (timing) (requestMs[operation] ??= []).push(ms) }
  const client = new RegistryClient({
    name: 'default',
    url: options.registryUrl,
    connectTimeoutMs: 2000,
    requestTimeoutMs: 30_000,
    connections: 16,
    trustedRealmOrigins: [],
    tls: { insecure: false },
    observer: { request: event => { registryRequests++; record(`untag: ${event.operation}`, event.seconds * 1000); metrics.request(event) }, tokenLookup: (registry, hit) => { metrics.tokenLookup(registry, hit) } }
  })
  const locks = new KeyedQueue()
  const untagger = new Untagger({ lock: locks })
  const withSkopeo = await skopeoAvailable()
  const host = options.registryUrl.replace(/^https?:\/\//, '')
  const methods: UntagMethod[] = ['untag', ...(options.gateway === undefined ? [] : ['gateway' as const]), 'floor', ...(withSkopeo ? ['skopeo' as const] : [])]
  const gatewayPool = options.gateway === undefined ? undefined : new Pool(options.gateway.url, { connections: 1, pipelining: 1 })
  const queue = repository.tags.map(entry => entry.tag)
  const next = (): string => {
    const tag = queue.pop()
    if (tag === undefined) throw new Error(`ran out of tags in ${repository.name}`)
    return tag
  }
  const requestCounts: number[] = []
  const reported: number[] = []
  const once: Record<UntagMethod, () => Promise<number>> = {
    untag: async () => {
      const tag = next()
      const before = registryRequests
      const started = performance.now()
      // As the use case runs an explicit untag: the bytes are read under the repository's lock, so no second look.
      const result = await locks.run(repositoryLockKey(client.name, repository.name), async () => {
        const original = await client.getManifest(repository.name, tag)
        return await untagger.untag(client, 'swap', { repository: repository.name, tag, original, readUnderLock: true })
      })
      const ms = performance.now() - started
      requestCounts.push(registryRequests - before)
      reported.push(result.requests)
      return ms
    },
    gateway: async () => {
      const tag = next()
      const gateway = options.gateway as BenchGateway
      const started = performance.now()
      const response = await (gatewayPool as Pool).request({ method: 'DELETE', path: `/images/${repository.name}/${tag}?mode=untag`, headers: { 'x-api-key': gateway.adminKey } })
      const body = await response.body.json() as { action?: string, removedTags?: string[] }
      const ms = performance.now() - started
      if (response.statusCode !== 200 || body.action !== 'untagged' || body.removedTags?.length !== 1) throw new Error(`gateway untag of ${repository.name}:${tag} answered ${response.statusCode}: ${JSON.stringify(body)}`)
      return ms
    },
    floor: async () => {
      const tag = next()
      const started = performance.now()
      const digest = await headDigest(pool, repository.name, tag)
      const headed = performance.now()
      if (digest === undefined) throw new Error(`${repository.name}:${tag} is missing`)
      await deleteDigest(pool, repository.name, digest)
      const ended = performance.now()
      record('floor: head', headed - started)
      record('floor: delete', ended - headed)
      return ended - started
    },
    skopeo: async () => {
      const tag = next()
      const started = performance.now()
      await run('skopeo', ['delete', '--tls-verify=false', '--no-creds', `docker://${host}/${repository.name}:${tag}`])
      return performance.now() - started
    }
  }
  const samples: Record<UntagMethod, number[]> = { untag: [], gateway: [], floor: [], skopeo: [] }
  try {
    for (let round = 0; round < options.warmupRounds + options.rounds; round++) {
      const warm = round < options.warmupRounds
      timing = !warm
      progress.update(warm ? `warm-up ${round + 1}/${options.warmupRounds}` : `round ${round + 1 - options.warmupRounds}/${options.rounds}`, true)
      // Rotated, so that no method always follows another (keep-alive, page cache).
      for (let index = 0; index < methods.length; index++) {
        const method = methods[(round + index) % methods.length] as UntagMethod
        const ms = await once[method]()
        if (!warm) samples[method].push(ms)
      }
      if (warm) {
        requestCounts.length = 0
        reported.length = 0
      }
    }
    const left = await listTags(pool, repository.name)
    if (left.length !== queue.length) throw new Error(`${repository.name} has ${left.length} tags after the run, expected ${queue.length}: something removed more than one tag`)
  } finally {
    await client.close()
    await gatewayPool?.close()
  }
  const untagMs = summarize(samples.untag)
  const floorMs = summarize(samples.floor)
  const skopeoMs = withSkopeo ? summarize(samples.skopeo) : undefined
  const gatewayMs = options.gateway === undefined ? undefined : summarize(samples.gateway)
  const medians = (prefix: string): Record<string, number> => Object.fromEntries(Object.entries(requestMs)
    .filter(([operation]) => operation.startsWith(prefix))
    .map(([operation, values]) => [operation.slice(prefix.length), round(summarize(values).median, 1)]))
  return {
    tags: options.tags,
    rounds: options.rounds,
    untagMs: roundSummary(untagMs, 1),
    floorMs: roundSummary(floorMs, 1),
    ...(gatewayMs === undefined ? {} : { gatewayMs: roundSummary(gatewayMs, 1), gatewayRatioToFloor: round(gatewayMs.median / floorMs.median) }),
    ...(skopeoMs === undefined ? {} : { skopeoMs: roundSummary(skopeoMs, 1), ratioToSkopeo: round(untagMs.median / skopeoMs.median) }),
    requestsPerUntag: Math.max(...requestCounts),
    reportedRequests: Math.max(...reported),
    ratioToFloor: round(untagMs.median / floorMs.median),
    untagRequestMs: medians('untag: '),
    floorRequestMs: medians('floor: ')
  }
}

/** Tags a repository needs so that it still has `tags` of them after every method's rounds. */
export function tagsNeeded (tags: number, rounds: number, warmupRounds: number): number {
  return tags + 4 * (rounds + warmupRounds)
}

export function untagRows (result: UntagResult): Array<{ scenario: string, value: string, target: string, ok: boolean | undefined }> {
  const ms = (summary: Summary): string => `${summary.median.toFixed(1)} ms (${summary.p95.toFixed(1)})`
  return [
    { scenario: `(5) untag (GET + swap), ${result.tags} tags, median (p95)`, value: ms(result.untagMs), target: '', ok: undefined },
    { scenario: '    untag requests, median each', value: Object.entries(result.untagRequestMs).map(([operation, ms]) => `${operation} ${ms}`).join(', '), target: '', ok: undefined },
    { scenario: '    bare HEAD+DELETE (unsafe floor), median (p95)', value: ms(result.floorMs), target: '', ok: undefined },
    { scenario: '    floor requests, median each', value: Object.entries(result.floorRequestMs).map(([operation, ms]) => `${operation} ${ms}`).join(', '), target: '', ok: undefined },
    { scenario: '    skopeo delete (unsafe), median (p95)', value: result.skopeoMs === undefined ? 'skopeo not installed' : ms(result.skopeoMs), target: '', ok: undefined },
    { scenario: '    untag / floor (median)', value: result.ratioToFloor.toFixed(2), target: '<= 1.50', ok: result.ratioToFloor <= 1.5 },
    ...(result.gatewayMs === undefined
      ? []
      : [
          { scenario: '    gateway DELETE ?mode=untag (HTTP, audit, swap), median (p95)', value: ms(result.gatewayMs), target: '', ok: undefined },
          { scenario: '    gateway mode=untag / floor (median)', value: (result.gatewayRatioToFloor as number).toFixed(2), target: '<= 1.50', ok: (result.gatewayRatioToFloor as number) <= 1.5 }
        ]),
    { scenario: '    untag / skopeo delete (median)', value: result.ratioToSkopeo?.toFixed(2) ?? '-', target: '< 1.00', ok: result.ratioToSkopeo === undefined ? undefined : result.ratioToSkopeo < 1 },
    { scenario: '    registry requests per untag (GET + PUT + DELETE)', value: `${result.requestsPerUntag} (untag itself: ${result.reportedRequests})`, target: '<= 3', ok: result.requestsPerUntag <= 3 }
  ]
}
