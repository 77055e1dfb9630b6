/**
 * Scenario 4: the gateway's peak resident memory while 100 clients at once send a mix of dry-runs (each one a
 * real co-tag check against the registry) and rejections (400, 401, 403), for a bounded number of requests.
 * The gateway is a fresh child process, so its VmHWM covers only its start-up and this load.
 */
import type { BenchGateway } from './gateway.js'
import { runLoad, type LoadRequest, type LoadResult } from './load.js'
import { memoryOf } from './memory.js'
import type { Progress } from './progress.js'
import { round, roundSummary } from './stats.js'

const MB = 1024 * 1024

export interface RssResult extends LoadResult {
  clients: number
  idleRssMb: number
  /** The highest of VmHWM (kernel's peak) and every VmRSS sample. */
  peakRssMb: number
  samples: number
}

export async function measurePeakRss (options: {
  gateway: BenchGateway
  /** Dry-runs go to tags t-0 … t-(tags-1) of this repository. */
  repository: string
  tags: number
  clients: number
  maxRequests: number
  maxDurationMs: number
  progress: Progress
}): Promise<RssResult> {
  const { gateway, progress } = options
  const idle = memoryOf(gateway.pid)
  let peak = idle.hwm
  const rssSamples: number[] = []
  const sampler = setInterval(() => {
    try {
      const { rss, hwm } = memoryOf(gateway.pid)
      rssSamples.push(rss)
      peak = Math.max(peak, rss, hwm)
    } catch {}
  }, 20)
  const mix = (index: number): LoadRequest => {
    const tag = `t-${Math.floor(index / 4) % options.tags}`
    switch (index % 4) {
      case 0: return { method: 'DELETE', path: `/images/${options.repository}/${tag}?dryRun=true`, headers: { 'x-api-key': gateway.adminKey } }
      case 1: return { method: 'DELETE', path: '/images/Bad_Name/v1', headers: { 'x-api-key': gateway.adminKey } }
      case 2: return { method: 'DELETE', path: `/images/${options.repository}/${tag}` }
      default: return { method: 'DELETE', path: `/images/${options.repository}/${tag}`, headers: { 'x-api-key': gateway.outsiderKey } }
    }
  }
  const expected = [200, 400, 401, 403]
  let result
  try {
    result = await runLoad({
      url: gateway.url,
      concurrency: options.clients,
      durationMs: options.maxDurationMs,
      maxRequests: options.maxRequests,
      request: mix,
      expect: (status, index) => status === expected[index % 4],
      onTick: done => { progress.update(`${done}/${options.maxRequests} requests, RSS ${(rssSamples.at(-1) ?? idle.rss) / MB | 0} MB, peak ${peak / MB | 0} MB`) }
    })
  } finally {
    clearInterval(sampler)
  }
  const last = memoryOf(gateway.pid)
  peak = Math.max(peak, last.hwm)
  return {
    clients: options.clients,
    requests: result.requests,
    seconds: round(result.seconds, 2),
    rps: round(result.rps, 0),
    statuses: result.statuses,
    unexpected: result.unexpected,
    errors: result.errors,
    latencyMs: roundSummary(result.latencyMs),
    idleRssMb: round(idle.rss / MB, 1),
    peakRssMb: round(peak / MB, 1),
    samples: rssSamples.length
  }
}
