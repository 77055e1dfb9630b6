/**
 * Scenario 3: how many rejected requests a second the gateway answers (invalid reference 400, no credentials
 * 401, a valid key without rights 403), against a bare Fastify app answering 400 problem JSON on one route.
 * Both run in their own process; the load comes from this one over keep-alive connections. The four targets
 * take turns in short slices, several rounds, so that a drift of the machine (other work, CPU frequency) hits
 * them alike; each one's rate is the median of its slices.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { BenchGateway } from './gateway.js'
import { runLoad, type LoadRequest, type LoadResult } from './load.js'
import { freePort } from '../testing/ports.js'
import { startNodeChild } from '../testing/processes.js'
import type { Progress } from './progress.js'
import { round, roundSummary, summarize, type Summary } from './stats.js'

type Target = 'bare' | 'invalidReference' | 'unauthenticated' | 'forbidden'

export interface TargetResult {
  status: number
  /** Median of the slices' rates. */
  rps: number
  sliceRps: number[]
  requests: number
  unexpected: number
  errors: number
  /** Of the last slice. */
  latencyMs: Summary
}

export interface RejectionsResult {
  concurrency: number
  sliceSeconds: number
  rounds: number
  bare: TargetResult
  gateway: Record<Exclude<Target, 'bare'>, TargetResult & { ratio: number }>
}

export async function measureRejections (options: {
  gateway: BenchGateway
  /** A repository the outsider key may not touch (its 403 comes before any registry call). */
  repository: string
  concurrency: number
  sliceMs: number
  rounds: number
  warmupMs: number
  progress: Progress
}): Promise<RejectionsResult> {
  const { gateway, progress } = options
  const dir = mkdtempSync(join(tmpdir(), 'rdg-bench-bare-'))
  const port = await freePort()
  const bare = await startNodeChild({
    script: fileURLToPath(new URL('./bare-server.js', import.meta.url)),
    args: [String(port)],
    env: process.env,
    port,
    logPath: join(dir, 'bare.log'),
    readyPath: '/healthz'
  }).catch((error: unknown) => {
    rmSync(dir, { recursive: true, force: true })
    throw error
  })
  const invalid: LoadRequest = { method: 'DELETE', path: '/images/Bad_Name/v1' }
  const targets: Record<Target, { label: string, url: string, request: LoadRequest, status: number }> = {
    bare: { label: 'bare Fastify 400', url: bare.url, request: invalid, status: 400 },
    invalidReference: { label: 'gateway 400 INVALID_REFERENCE', url: gateway.url, request: { ...invalid, headers: { 'x-api-key': gateway.adminKey } }, status: 400 },
    unauthenticated: { label: 'gateway 401 UNAUTHENTICATED', url: gateway.url, request: { method: 'DELETE', path: `/images/${options.repository}/t-0` }, status: 401 },
    forbidden: { label: 'gateway 403 FORBIDDEN', url: gateway.url, request: { method: 'DELETE', path: `/images/${options.repository}/t-0`, headers: { 'x-api-key': gateway.outsiderKey } }, status: 403 }
  }
  const names = Object.keys(targets) as Target[]
  const runs: Record<Target, LoadResult[]> = { bare: [], invalidReference: [], unauthenticated: [], forbidden: [] }
  try {
    for (const name of names) {
      const { label, url, request, status } = targets[name]
      progress.update(`${label} warm-up`, true)
      await runLoad({ url, concurrency: options.concurrency, durationMs: options.warmupMs, request: () => request, expect: got => got === status })
    }
    for (let roundIndex = 0; roundIndex < options.rounds; roundIndex++) {
      for (const name of names) {
        const { label, url, request, status } = targets[name]
        const started = performance.now()
        progress.update(`round ${roundIndex + 1}/${options.rounds}, ${label}`, true)
        runs[name].push(await runLoad({
          url,
          concurrency: options.concurrency,
          durationMs: options.sliceMs,
          request: () => request,
          expect: got => got === status,
          onTick: done => { progress.update(`round ${roundIndex + 1}/${options.rounds}, ${label}: ${Math.round(done / ((performance.now() - started) / 1000))}/s`) }
        }))
      }
    }
  } finally {
    await bare.stop()
    rmSync(dir, { recursive: true, force: true })
  }
  const result = (name: Target): TargetResult => {
    const slices = runs[name]
    return {
      status: targets[name].status,
      rps: round(summarize(slices.map(run => run.rps)).median, 0),
      sliceRps: slices.map(run => round(run.rps, 0)),
      requests: slices.reduce((sum, run) => sum + run.requests, 0),
      unexpected: slices.reduce((sum, run) => sum + run.unexpected, 0),
      errors: slices.reduce((sum, run) => sum + run.errors, 0),
      latencyMs: roundSummary((slices.at(-1) as LoadResult).latencyMs)
    }
  }
  const baseline = result('bare')
  const versus = (name: Exclude<Target, 'bare'>): TargetResult & { ratio: number } => {
    const own = result(name)
    return { ...own, ratio: round(own.rps / baseline.rps) }
  }
  return {
    concurrency: options.concurrency,
    sliceSeconds: options.sliceMs / 1000,
    rounds: options.rounds,
    bare: baseline,
    gateway: { invalidReference: versus('invalidReference'), unauthenticated: versus('unauthenticated'), forbidden: versus('forbidden') }
  }
}
