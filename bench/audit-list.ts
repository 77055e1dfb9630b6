/**
 * Issue 10, finding 1: with a large audit trail, one audit page for a caller who may audit only a sliver of it
 * stays fast, and ten such pages at once do not hold up /healthz for everyone else.
 */
import { Pool } from 'undici'
import { openSqliteAuditStore, type NewAuditRecord } from '../src/audit/index.js'
import type { BenchGateway } from './gateway.js'
import type { Progress } from './progress.js'
import { round, roundSummary, summarize, type Summary } from './stats.js'

export interface AuditListResult {
  records: number
  /** One caller, one page after another. */
  pageMs: Summary
  /** /healthz while `concurrency` callers ask for audit pages without pause. */
  healthzMs: Summary & { p99: number }
  concurrency: number
  concurrentPages: number
  unexpected: number
}

const MANIFEST = Buffer.alloc(1024, '{"schemaVersion":2}')

/** `records` records, one in a hundred on bench/narrow/app; every fifth is a deletion with saved manifest bytes. */
export async function seedAuditTrail (path: string, records: number, progress: Progress): Promise<void> {
  const store = openSqliteAuditStore(path)
  const batch = 5000
  for (let done = 0; done < records; done += batch) {
    await Promise.all(Array.from({ length: Math.min(batch, records - done) }, async (_, offset) => {
      const index = done + offset
      const deleted = index % 5 === 0
      const record: NewAuditRecord = {
        requestId: `seed-${index}`,
        transport: 'rest',
        subject: 'apikey:bench-admin',
        groups: [],
        action: 'delete',
        registry: 'default',
        name: index % 100 === 0 ? 'bench/narrow/app' : `bench/other-${index % 37}`,
        tag: `v${index}`,
        removedTags: [`v${index}`],
        decision: { allow: true, reason: 'seeded' },
        outcome: deleted ? 'deleted' : 'denied',
        ...(deleted ? { digest: `sha256:${'a'.repeat(64)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', manifest: MANIFEST } : {})
      }
      await store.append(record)
    }))
    progress.update(`${Math.min(done + batch, records)}/${records}`)
  }
  await store.close()
}

function p99 (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)] as number
}

export async function measureAuditList (options: { gateway: BenchGateway, records: number, rounds: number, concurrency: number, durationMs: number, progress: Progress }): Promise<AuditListResult> {
  const { gateway, progress } = options
  const pool = new Pool(gateway.url, { connections: options.concurrency + 2, pipelining: 1 })
  let unexpected = 0
  const get = async (path: string, key?: string): Promise<number> => {
    const started = performance.now()
    const response = await pool.request({ method: 'GET', path, headers: key === undefined ? {} : { 'x-api-key': key } })
    await response.body.dump()
    if (response.statusCode !== 200) unexpected++
    return performance.now() - started
  }
  const page = async (): Promise<number> => await get('/audit?limit=50', gateway.auditorKey)
  try {
    for (let i = 0; i < 5; i++) await page()
    const pageMs: number[] = []
    for (let i = 0; i < options.rounds; i++) {
      pageMs.push(await page())
      progress.update(`page ${i + 1}/${options.rounds}`)
    }
    const stop = new AbortController()
    let concurrentPages = 0
    const callers = Array.from({ length: options.concurrency }, async () => {
      while (!stop.signal.aborted) {
        await page()
        concurrentPages++
      }
    })
    const healthz: number[] = []
    const until = performance.now() + options.durationMs
    while (performance.now() < until) {
      healthz.push(await get('/healthz'))
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    stop.abort()
    await Promise.all(callers)
    return {
      records: options.records,
      pageMs: roundSummary(summarize(pageMs)),
      healthzMs: { ...roundSummary(summarize(healthz)), p99: round(p99(healthz)) },
      concurrency: options.concurrency,
      concurrentPages,
      unexpected
    }
  } finally {
    await pool.close()
  }
}
