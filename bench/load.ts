/**
 * A small closed-loop load generator (autocannon is not a dependency): `concurrency` workers over one undici
 * Pool, each sending its next request as soon as the previous answer is read, until the duration or the request
 * budget runs out. Bounded by both, so it always stops by itself.
 */
import { Pool, type Dispatcher } from 'undici'
import { summarize, type Summary } from './stats.js'

export interface LoadRequest {
  method: Dispatcher.HttpMethod
  path: string
  headers?: Record<string, string>
}

export interface LoadOptions {
  url: string
  concurrency: number
  durationMs: number
  /** Stops earlier once this many requests were sent. */
  maxRequests?: number
  /** The i-th request. */
  request: (index: number) => LoadRequest
  /** Statuses that count as the expected answer; others are counted as unexpected. */
  expect: (status: number, index: number) => boolean
  onTick?: (completed: number) => void
}

export interface LoadResult {
  requests: number
  seconds: number
  rps: number
  statuses: Record<string, number>
  unexpected: number
  /** Transport failures (refused, reset, timeout). */
  errors: number
  latencyMs: Summary
}

export async function runLoad (options: LoadOptions): Promise<LoadResult> {
  const pool = new Pool(options.url, { connections: options.concurrency, pipelining: 1 })
  const statuses: Record<string, number> = {}
  const latencies: number[] = []
  let sent = 0
  let completed = 0
  let unexpected = 0
  let errors = 0
  const limit = options.maxRequests ?? Number.POSITIVE_INFINITY
  const started = performance.now()
  const deadline = started + options.durationMs
  const worker = async (): Promise<void> => {
    while (sent < limit && performance.now() < deadline) {
      const index = sent++
      const { method, path, headers } = options.request(index)
      const begun = performance.now()
      try {
        const response = await pool.request({ method, path, headers, headersTimeout: 30_000, bodyTimeout: 30_000 })
        await response.body.arrayBuffer()
        latencies.push(performance.now() - begun)
        statuses[response.statusCode] = (statuses[response.statusCode] ?? 0) + 1
        if (!options.expect(response.statusCode, index)) unexpected++
      } catch {
        errors++
      }
      completed++
      options.onTick?.(completed)
    }
  }
  try {
    await Promise.all(Array.from({ length: options.concurrency }, worker))
  } finally {
    await pool.close()
  }
  const seconds = (performance.now() - started) / 1000
  return { requests: completed, seconds, rps: completed / seconds, statuses, unexpected, errors, latencyMs: summarize(latencies) }
}
