/**
 * Soak test: the compiled gateway (dist/server.js, its own process) in front of a real registry, under mixed load
 * for SOAK_SECONDS (default 600): dry-runs, denials (protected tag, forbidden repository, unknown caller) and
 * deletions of tags a seeder keeps pushing. Reports the error count (answers other than the expected one), latency
 * percentiles and the gateway's RSS after warm-up and at the end; fails (exit 1) on any error or RSS growth >= 10%
 * (growth is judged on runs of 300 s or more: before that V8 has not settled its heap).
 *
 *   npm run soak                      # 10 minutes
 *   SOAK_SECONDS=60 npm run soak      # a quick check
 *
 * Other knobs: SOAK_CONCURRENCY (default 4 requests in flight), SOAK_WARMUP_SECONDS (default 10% of the run, at most
 * 60), SOAK_MAX_RSS_GROWTH (default 0.10). Everything listens on 127.0.0.1 and is stopped at the end.
 */
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createHistogram } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { Pool } from 'undici'
import { startRegistry, type RegistryProcess } from '../testing/registry-process.js'
import { pushImage } from '../testing/seed.js'
import { MANIFEST_ACCEPT } from '../src/registry/media-types.js'
import { startGatewayProcess, type GatewayProcess } from '../testing/gateway-process.js'

interface Settings { seconds: number, concurrency: number, warmupSeconds: number, maxRssGrowth: number }

function positive (name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got ${JSON.stringify(raw)}`)
  return value
}

function settings (): Settings {
  const seconds = positive('SOAK_SECONDS', 600)
  return {
    seconds,
    concurrency: Math.round(positive('SOAK_CONCURRENCY', 4)),
    warmupSeconds: positive('SOAK_WARMUP_SECONDS', Math.min(60, seconds * 0.1)),
    maxRssGrowth: positive('SOAK_MAX_RSS_GROWTH', 0.10)
  }
}

const MIN_SECONDS_TO_JUDGE_RSS = 300

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')

async function startGateway (registryUrl: string, keys: { cleaner: string, outsider: string }): Promise<GatewayProcess> {
  return await startGatewayProcess({
    registryUrl,
    name: 'rdg-soak',
    policy: {
      apiKeys: [{ name: 'soak-cleaner', sha256: sha256(keys.cleaner) }, { name: 'outsider', sha256: sha256(keys.outsider) }],
      roles: { cleaner: [{ actions: ['read', 'delete'], repositories: ['soak/**'] }] },
      bindings: [{ role: 'cleaner', subjects: ['apikey:soak-cleaner'] }],
      protectedTags: [{ repositories: ['**'], tags: ['keep'] }]
    },
    // a soak ends with requests in flight: give the gateway its time to drain them
    killAfterMs: 15_000
  })
}

interface Memory { rss: number, heapUsed: number, external: number }

/** The gateway's resident set size and heap, from its own /metrics. */
async function gatewayMemory (pool: Pool): Promise<Memory> {
  const response = await pool.request({ method: 'GET', path: '/metrics' })
  const text = await response.body.text()
  const gauge = (name: string): number => {
    const match = new RegExp(`^${name} (\\d+(?:\\.\\d+)?(?:e\\+\\d+)?)$`, 'm').exec(text)
    if (match === null) throw new Error(`the gateway's /metrics has no ${name}`)
    return Number(match[1])
  }
  return { rss: gauge('process_resident_memory_bytes'), heapUsed: gauge('nodejs_heap_size_used_bytes'), external: gauge('nodejs_external_memory_bytes') }
}

async function registryStatus (url: string, name: string, reference: string): Promise<number | string> {
  try {
    const response = await fetch(`${url}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })
    return response.status
  } catch (error) {
    return (error as Error).message
  }
}

/** A child process's RSS from /proc (Linux), for the report; undefined elsewhere. */
function processRss (pid: number): number | undefined {
  try {
    const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return kb === undefined ? undefined : Number(kb) * 1024
  } catch {
    return undefined
  }
}

type Operation = 'dry-run' | 'dry-run-protected' | 'graphql-dry-run' | 'denied-protected' | 'denied-forbidden' | 'denied-outsider' | 'unauthenticated' | 'delete'

const WEIGHTS: Array<[Operation, number]> = [
  ['dry-run', 20], ['dry-run-protected', 10], ['graphql-dry-run', 10],
  ['denied-protected', 10], ['denied-forbidden', 10], ['denied-outsider', 5], ['unauthenticated', 5],
  ['delete', 30]
]
const TOTAL_WEIGHT = WEIGHTS.reduce((sum, [, weight]) => sum + weight, 0)

function pick (): Operation {
  let roll = Math.random() * TOTAL_WEIGHT
  for (const [operation, weight] of WEIGHTS) {
    roll -= weight
    if (roll < 0) return operation
  }
  return 'dry-run'
}

interface Call { method: 'DELETE' | 'POST', path: string, key: string, body?: string, image?: { name: string, tag: string, digest: string } }
interface Expectation { status: number, check?: (body: any) => boolean }

const mb = (bytes: number | undefined): string => bytes === undefined ? 'n/a' : `${(bytes / 1024 / 1024).toFixed(1)} MiB`

async function main (): Promise<number> {
  const config = settings()
  const keys = { cleaner: `rdg_${randomBytes(24).toString('base64url')}`, outsider: `rdg_${randomBytes(24).toString('base64url')}` }
  let registry: RegistryProcess | undefined
  let gateway: GatewayProcess | undefined
  let pool: Pool | undefined
  try {
    console.log(`soak: ${config.seconds} s, ${config.concurrency} in flight, warm-up ${config.warmupSeconds} s, starting a registry and the gateway…`)
    registry = await startRegistry()
    const target = { url: registry.url }
    await pushImage(target, 'soak/stable', ['pr-stable'], 'oci')
    await pushImage(target, 'soak/stable', ['keep'], 'schema2')
    await pushImage(target, 'other/app', ['v1'], 'schema2')
    gateway = await startGateway(registry.url, keys)
    pool = new Pool(gateway.url, { connections: config.concurrency + 1 })
    const client = pool
    const startRss = (await gatewayMemory(client)).rss

    // Tags to delete: a seeder keeps a small stock of freshly pushed images, spread over a few repositories.
    const ready: Array<{ name: string, tag: string, digest: string }> = []
    let nextImage = 0
    let seeded = 0
    let seedFailures = 0
    const stop = new AbortController()
    const errorSamples: string[] = []
    const seed = async (): Promise<void> => {
      while (!stop.signal.aborted) {
        if (ready.length >= 24) {
          await sleep(20)
          continue
        }
        const n = nextImage++
        const name = `soak/app-${n % 6}`
        try {
          const image = await pushImage(target, name, [`pr-${n}`], n % 5 === 0 ? 'oci-index' : 'schema2')
          ready.push({ name, tag: `pr-${n}`, digest: image.digest })
          seeded++
        } catch (error) {
          // The registry, not the gateway, failed: reported apart from the gateway's errors.
          seedFailures++
          if (errorSamples.length < 10) errorSamples.push(`seeding ${name}:pr-${n} failed: ${(error as Error).message.slice(0, 200)}`)
          await sleep(100)
        }
      }
    }
    const seeders = [seed(), seed()]

    const latency = createHistogram()
    const byOperation = new Map<Operation, { count: number, errors: number }>()
    let requests = 0
    let errors = 0

    const plan = (operation: Operation): [Call, Expectation] | undefined => {
      const dry = (name: string, tag: string, key = keys.cleaner): Call => ({ method: 'DELETE', path: `/images/${name}/${tag}?dryRun=true`, key })
      switch (operation) {
        case 'dry-run': return [dry('soak/stable', 'pr-stable'), { status: 200, check: body => body.allowed === true && body.deleted === false }]
        case 'dry-run-protected': return [dry('soak/stable', 'keep'), { status: 200, check: body => body.allowed === false && /^PROTECTED_TAG/.test(body.reason) }]
        case 'graphql-dry-run': return [{
          method: 'POST',
          path: '/graphql',
          key: keys.cleaner,
          body: JSON.stringify({ query: 'mutation { deleteImage(name: "soak/stable", tag: "pr-stable", dryRun: true) { allowed deleted } }' })
        }, { status: 200, check: body => body.data?.deleteImage?.allowed === true }]
        case 'denied-protected': return [{ method: 'DELETE', path: '/images/soak/stable/keep', key: keys.cleaner }, { status: 403, check: body => body.code === 'PROTECTED_TAG' }]
        case 'denied-forbidden': return [{ method: 'DELETE', path: '/images/other/app/v1', key: keys.cleaner }, { status: 403, check: body => body.code === 'FORBIDDEN' }]
        case 'denied-outsider': return [{ method: 'DELETE', path: '/images/soak/stable/pr-stable', key: keys.outsider }, { status: 403, check: body => body.code === 'FORBIDDEN' }]
        case 'unauthenticated': return [{ method: 'DELETE', path: '/images/soak/stable/pr-stable', key: 'rdg_not-a-key' }, { status: 401, check: body => body.code === 'UNAUTHENTICATED' }]
        case 'delete': {
          const next = ready.shift()
          if (next === undefined) return undefined
          return [{ method: 'DELETE', path: `/images/${next.name}/${next.tag}`, key: keys.cleaner, image: next }, { status: 200, check: body => body.deleted === true && body.removedTags?.[0] === next.tag }]
        }
      }
    }

    const started = Date.now()
    const endAt = started + config.seconds * 1000
    const worker = async (): Promise<void> => {
      while (Date.now() < endAt) {
        let operation = pick()
        let planned = plan(operation)
        if (planned === undefined) {
          operation = 'dry-run'
          planned = plan(operation) as [Call, Expectation]
        }
        const [call, expected] = planned
        const stats = byOperation.get(operation) ?? { count: 0, errors: 0 }
        byOperation.set(operation, stats)
        const t0 = process.hrtime.bigint()
        let problem: string | undefined
        try {
          const response = await client.request({
            method: call.method,
            path: call.path,
            headers: { 'x-api-key': call.key, ...(call.body === undefined ? {} : { 'content-type': 'application/json' }) },
            body: call.body,
            headersTimeout: 30_000,
            bodyTimeout: 30_000
          })
          const text = await response.body.text()
          let body: unknown
          try { body = JSON.parse(text) } catch { body = undefined }
          if (response.statusCode !== expected.status || (expected.check !== undefined && !expected.check(body))) {
            problem = `${operation}: ${call.method} ${call.path} answered ${response.statusCode} ${text.slice(0, 600)}`
          }
        } catch (error) {
          problem = `${operation}: ${call.method} ${call.path} failed: ${(error as Error).message}`
        }
        latency.record(Math.max(1, Number(process.hrtime.bigint() - t0)))
        if (problem !== undefined && call.image !== undefined) {
          // What the registry itself says now, to tell a gateway fault from a registry one.
          const [tagNow, digestNow] = await Promise.all([call.image.tag, call.image.digest].map(async reference => await registryStatus(target.url, call.image!.name, reference)))
          problem += ` | seeded ${call.image.name}:${call.image.tag} as ${call.image.digest}; the registry now answers ${tagNow} for the tag, ${digestNow} for the digest`
        }
        requests++
        stats.count++
        if (problem !== undefined) {
          errors++
          stats.errors++
          if (errorSamples.length < 10) errorSamples.push(problem)
        }
      }
    }

    // RSS is sampled every 2 s; start and end are the medians of the first and last fifth of the samples taken
    // after warm-up, so one garbage-collection cycle caught at its peak does not decide the verdict.
    const samples: Array<{ at: number } & Memory> = []
    const sampler = (async () => {
      let lastRequests = 0
      let lastReport = started
      while (Date.now() < endAt) {
        await sleep(Math.min(2000, Math.max(50, endAt - Date.now())))
        const now = Date.now()
        const memory = await gatewayMemory(client).catch(() => undefined)
        if (memory !== undefined) samples.push({ at: now - started, ...memory })
        const rss = memory?.rss
        if (now - lastReport >= 10_000 || now >= endAt) {
          const rate = (requests - lastRequests) / ((now - lastReport) / 1000)
          lastRequests = requests
          lastReport = now
          console.log(`  ${Math.round((now - started) / 1000)} s: ${requests} requests (${rate.toFixed(0)}/s), ${errors} errors, p99 ${(latency.percentile(99) / 1e6).toFixed(1)} ms, gateway RSS ${mb(rss)}, ${ready.length} tags ready`)
        }
      }
    })()

    await Promise.all([...Array.from({ length: config.concurrency }, worker), sampler])
    stop.abort()
    await Promise.all(seeders)
    const endMemory = await gatewayMemory(client)
    const endRss = endMemory.rss
    samples.push({ at: Date.now() - started, ...endMemory })
    const warm = samples.filter(sample => sample.at >= config.warmupSeconds * 1000)
    const window = Math.max(1, Math.floor(warm.length / 5))
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number
    const startWindow = median(warm.slice(0, window).map(sample => sample.rss))
    const endWindow = median(warm.slice(-window).map(sample => sample.rss))
    const growth = (endWindow - startWindow) / startWindow
    const maxRss = Math.max(...samples.map(sample => sample.rss))
    const report = {
      seconds: (Date.now() - started) / 1000,
      requests,
      errors,
      requestsPerSecond: Math.round(requests / ((Date.now() - started) / 1000)),
      latencyMs: {
        p50: latency.percentile(50) / 1e6,
        p99: latency.percentile(99) / 1e6,
        max: latency.max / 1e6
      },
      gatewayRss: { atLaunch: startRss, start: startWindow, end: endWindow, firstAfterWarmup: warm[0]?.rss, last: endRss, max: maxRss, samples: samples.length, growth },
      heapUsed: { start: median(warm.slice(0, window).map(sample => sample.heapUsed)), end: median(warm.slice(-window).map(sample => sample.heapUsed)) },
      trend: samples.filter((_, i) => i % 5 === 4 || i === samples.length - 1).map(sample => [Math.round(sample.at / 1000), Math.round(sample.rss / 1048576), Math.round(sample.heapUsed / 1048576)]),
      registryRss: processRss(registry.pid),
      seeded,
      seedFailures,
      operations: Object.fromEntries(byOperation)
    }
    // V8 lets the heap grow for the first minute or so before its first full collection: shorter runs report RSS
    // but cannot judge its growth.
    const judgeRss = config.seconds >= MIN_SECONDS_TO_JUDGE_RSS
    const passed = errors === 0 && (!judgeRss || growth < config.maxRssGrowth)
    console.log('')
    console.log(`soak ${passed ? 'PASSED' : 'FAILED'} after ${report.seconds.toFixed(0)} s: ${requests} requests (${report.requestsPerSecond}/s), ${errors} errors`)
    console.log(`  latency: p50 ${report.latencyMs.p50.toFixed(1)} ms, p99 ${report.latencyMs.p99.toFixed(1)} ms, max ${report.latencyMs.max.toFixed(1)} ms`)
    console.log(`  gateway RSS: ${mb(startWindow)} at the start, ${mb(endWindow)} at the end (medians of the first and last ${window} of ${warm.length} samples after warm-up): ${(growth * 100).toFixed(1)}% growth, limit ${(config.maxRssGrowth * 100).toFixed(0)}%`)
    if (!judgeRss) console.log(`  (RSS growth not judged: runs shorter than ${MIN_SECONDS_TO_JUDGE_RSS} s end before the heap settles)`)
    console.log(`  gateway heap used: ${mb(report.heapUsed.start)} at the start, ${mb(report.heapUsed.end)} at the end (same windows)`)
    console.log(`  trend [s, RSS MiB, heap MiB]: ${JSON.stringify(report.trend)}`)
    console.log(`  gateway RSS samples: ${mb(startRss)} at launch, ${mb(warm[0]?.rss)} first after warm-up, ${mb(endRss)} last, ${mb(maxRss)} max`)
    console.log(`  registry RSS at the end: ${mb(report.registryRss)}; ${seeded} images seeded (${seedFailures} pushes failed)`)
    for (const [operation, stats] of byOperation) console.log(`  ${operation}: ${stats.count} requests, ${stats.errors} errors`)
    for (const sample of errorSamples) console.log(`  error: ${sample}`)
    console.log(JSON.stringify(report))
    return passed ? 0 : 1
  } finally {
    await pool?.close()
    await gateway?.close()
    await registry?.stop()
  }
}

main().then(code => { process.exitCode = code }, (error: unknown) => {
  console.error(`soak could not run: ${(error as Error).stack ?? String(error)}`)
  process.exitCode = 2
})
