/**
 * Scenario 7: a page of 100 tags through the read API (GET /images/<name>?limit=100) against what a client
 * talking to the registry directly pays for the same information: GETting those 100 manifests, 16 in flight.
 * Cold: the gateway has never seen the repository (each round has its own repository, so nothing is cached by
 * digest). Warm: the same page again, manifests cached by digest and tag digests within browse.tagTtlMs.
 * Every manifest is read once directly before timing, so the registry's own caches are warm for both. The gateway
 * then reads every repository once through a second registry entry (`BROWSE_WARMUP_REGISTRY`, the same registry
 * under another name, so nothing it caches is the timed one's), which warms its JIT as those direct reads warmed
 * the direct client's: with only one warm-up page, V8 was still optimizing the page's code on its background
 * threads during the first half of the timed rounds (about 15 ms of CPU per page), a cost a running gateway paid
 * long ago. One untimed page of an extra repository warms its connections to the timed registry.
 */
import { readFileSync } from 'node:fs'
import { Pool } from 'undici'
import { MANIFEST_ACCEPT } from '../src/registry/media-types.js'
import { forEachLimited } from '../src/images/co-tags.js'
import type { BenchGateway } from './gateway.js'
import type { Progress } from './progress.js'
import type { SeededRepository } from './seed-tags.js'
import { round, roundSummary, summarize, type Summary } from './stats.js'

const CONCURRENCY = 16
/** The benchmark's gateway lists the registry twice: under its default name, timed, and under this one, for the warm-up. */
export const BROWSE_WARMUP_REGISTRY = 'warmup'

export interface BrowseResult {
  tags: number
  coldRounds: number
  warmRounds: number
  gatewayColdMs: Summary
  directMs: Summary
  gatewayWarmMs: Summary
  /** Medians, gateway / direct. */
  ratioCold: number
  ratioWarm: number
  /**
   * CPU spent per cold page by the gateway process, and per 100 manifests by the direct client (this process):
   * on 2 cores the registry is CPU-bound, so what either spends is taken from it. Unlike wall time, this hardly
   * moves with the load others put on the machine.
   */
  gatewayCpuPerColdPageMs: number
  directCpuPerPageMs: number
}

/** User + system CPU of a process so far, from /proc (clock ticks of 10 ms). */
function processCpuMs (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10
}

function ownCpuMs (): number {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1000
}

async function fetchDirectly (pool: Pool, repository: SeededRepository): Promise<void> {
  await forEachLimited(repository.tags, CONCURRENCY, async (entry) => {
    const response = await pool.request({ method: 'GET', path: `/v2/${repository.name}/manifests/${entry.tag}`, headers: { accept: MANIFEST_ACCEPT } })
    const bytes = await response.body.arrayBuffer()
    if (response.statusCode !== 200 || bytes.byteLength !== entry.bytes.length) throw new Error(`GET ${repository.name}:${entry.tag} answered ${response.statusCode}`)
  })
}

async function fetchPage (pool: Pool, gateway: BenchGateway, repository: SeededRepository, registry?: string): Promise<void> {
  const query = `limit=${repository.tags.length}${registry === undefined ? '' : `&registry=${registry}`}`
  const response = await pool.request({
    method: 'GET', path: `/images/${encodeURIComponent(repository.name)}?${query}`, headers: { 'x-api-key': gateway.adminKey }
  })
  const body = await response.body.json() as { items?: unknown[] }
  if (response.statusCode !== 200 || body.items?.length !== repository.tags.length) {
    throw new Error(`GET /images/${repository.name} answered ${response.statusCode}: ${JSON.stringify(body).slice(0, 300)}`)
  }
}

export async function measureBrowse (options: {
  registryUrl: string
  gateway: BenchGateway
  /** One per cold round, each with its own manifests, plus one (the first) for the untimed warm-up. */
  repositories: SeededRepository[]
  warmRounds: number
  progress: Progress
}): Promise<BrowseResult> {
  const { gateway, progress } = options
  const [warmUp, ...repositories] = options.repositories as [SeededRepository, ...SeededRepository[]]
  const registry = new Pool(options.registryUrl, { connections: CONCURRENCY, pipelining: 1 })
  const gatewayPool = new Pool(gateway.url, { connections: 1, pipelining: 1 })
  const samples = { cold: [] as number[], direct: [] as number[], warm: [] as number[] }
  const cpu = { gateway: 0, direct: 0 }
  const time = async (work: () => Promise<void>, kind?: 'gateway' | 'direct'): Promise<number> => {
    const cpuBefore = kind === 'gateway' ? processCpuMs(gateway.pid) : ownCpuMs()
    const started = performance.now()
    await work()
    const elapsed = performance.now() - started
    if (kind === 'gateway') cpu.gateway += processCpuMs(gateway.pid) - cpuBefore
    if (kind === 'direct') cpu.direct += ownCpuMs() - cpuBefore
    return elapsed
  }
  try {
    for (const repository of options.repositories) await fetchDirectly(registry, repository)
    progress.update('warming up the gateway')
    for (const repository of options.repositories) await fetchPage(gatewayPool, gateway, repository, BROWSE_WARMUP_REGISTRY)
    await fetchPage(gatewayPool, gateway, warmUp)
    for (const [index, repository] of repositories.entries()) {
      progress.update(`cold round ${index + 1}/${repositories.length}`, true)
      // Alternated, so that neither always runs right after the other.
      if (index % 2 === 0) {
        samples.direct.push(await time(async () => { await fetchDirectly(registry, repository) }, 'direct'))
        samples.cold.push(await time(async () => { await fetchPage(gatewayPool, gateway, repository) }, 'gateway'))
      } else {
        samples.cold.push(await time(async () => { await fetchPage(gatewayPool, gateway, repository) }, 'gateway'))
        samples.direct.push(await time(async () => { await fetchDirectly(registry, repository) }, 'direct'))
      }
    }
    const warm = repositories.at(-1) as SeededRepository
    for (let index = 0; index < options.warmRounds; index++) {
      progress.update(`warm round ${index + 1}/${options.warmRounds}`)
      samples.warm.push(await time(async () => { await fetchPage(gatewayPool, gateway, warm) }))
    }
  } finally {
    await Promise.all([registry.close(), gatewayPool.close()])
  }
  const gatewayColdMs = summarize(samples.cold)
  const directMs = summarize(samples.direct)
  const gatewayWarmMs = summarize(samples.warm)
  return {
    tags: repositories[0]?.tags.length ?? 0,
    coldRounds: repositories.length,
    warmRounds: options.warmRounds,
    gatewayColdMs: roundSummary(gatewayColdMs, 2),
    directMs: roundSummary(directMs, 2),
    gatewayWarmMs: roundSummary(gatewayWarmMs, 2),
    ratioCold: round(gatewayColdMs.median / directMs.median),
    ratioWarm: round(gatewayWarmMs.median / directMs.median),
    gatewayCpuPerColdPageMs: round(cpu.gateway / repositories.length, 1),
    directCpuPerPageMs: round(cpu.direct / repositories.length, 1)
  }
}

export function browseRows (result: BrowseResult): Array<{ scenario: string, value: string, target: string, ok: boolean | undefined }> {
  const ms = (summary: Summary): string => `${summary.median.toFixed(1)} ms (${summary.p95.toFixed(1)})`
  return [
    { scenario: `(7) GET /images/<name>?limit=${result.tags}, cold, median (p95)`, value: ms(result.gatewayColdMs), target: '', ok: undefined },
    { scenario: `    ${result.tags} manifests fetched directly, 16 in flight`, value: ms(result.directMs), target: '', ok: undefined },
    { scenario: '    cold page / direct (median)', value: result.ratioCold.toFixed(2), target: '<= 1.20', ok: result.ratioCold <= 1.2 },
    { scenario: '    CPU per cold page: gateway process, direct client', value: `${result.gatewayCpuPerColdPageMs.toFixed(1)} ms, ${result.directCpuPerPageMs.toFixed(1)} ms`, target: 'reported', ok: undefined },
    { scenario: '    warm page, median (p95)', value: ms(result.gatewayWarmMs), target: '', ok: undefined },
    { scenario: '    warm page / direct (median)', value: result.ratioWarm.toFixed(2), target: '<= 0.10', ok: result.ratioWarm <= 0.1 }
  ]
}
