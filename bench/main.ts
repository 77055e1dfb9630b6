/**
 * `npm run bench`: starts its own registry (docker-registry on a free loopback port), seeds it, runs the
 * scenarios of the performance issues against the gateway as a separate process over real HTTP, prints a table
 * and writes bench-results/latest.json. `--quick` runs smaller repositories and fewer rounds (a smoke test).
 * `--only=untag` (or a comma-separated list of latency, guard, rejections, rss, untag, audit-list, browse, ui, pg-latency,
 * pg-audit-list, replicas, cleanup, cleanup-run) runs only those scenarios
 * and writes bench-results/only-<names>.json.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { Pool } from 'undici'
import { startRegistry, type RegistryProcess } from '../testing/registry-process.js'
import { measureAuditList, seedAuditTrail, type AuditListResult } from './audit-list.js'
import { BROWSE_WARMUP_REGISTRY, browseRows, measureBrowse, type BrowseResult } from './browse.js'
import { cleanupRows, measureCleanupPlan, seedCleanupRepository, type CleanupResult } from './cleanup.js'
import { cleanupRunRows, measureCleanupRun, type CleanupRunResult } from './cleanup-run.js'
import { startGateway, type BenchGateway } from './gateway.js'
import { measureGuard, type GuardResult } from './guard.js'
import { measureDeleteLatency } from './latency.js'
import { Progress } from './progress.js'
import { measureRejections } from './rejections.js'
import { measurePeakRss } from './rss.js'
import { seedRepository, type SeededRepository } from './seed-tags.js'
import { round } from './stats.js'
import { measureUi, uiRows, type UiResult } from './ui.js'
import { measureUntag, tagsNeeded, untagRows, type UntagResult } from './untag.js'
import { measurePgAuditList, measurePgLatency, measureReplicas, seedPostgresTrail, type PgAuditListResult, type PgLatencyResult, type ReplicasResult } from './postgres.js'
import { startPostgres, type PostgresProcess } from '../testing/postgres-process.js'

const quick = process.argv.includes('--quick')
const SCENARIOS = ['latency', 'guard', 'rejections', 'rss', 'untag', 'audit-list', 'browse', 'ui', 'pg-latency', 'pg-audit-list', 'replicas', 'cleanup', 'cleanup-run'] as const
type Scenario = typeof SCENARIOS[number]
const only = process.argv.find(arg => arg.startsWith('--only='))?.slice('--only='.length).split(',')
const unknownScenario = only?.find(name => !(SCENARIOS as readonly string[]).includes(name))
if (unknownScenario !== undefined) throw new Error(`--only: unknown scenario ${unknownScenario} (have: ${SCENARIOS.join(', ')})`)
const runs = (scenario: Scenario): boolean => only === undefined || only.includes(scenario)
const settings = {
  quick,
  latency: { tags: 50, rounds: quick ? 15 : 60, warmupRounds: 5 },
  guard: quick ? [{ tags: 500, repetitions: 3 }, { tags: 1000, repetitions: 3 }] : [{ tags: 2000, repetitions: 7 }, { tags: 10_000, repetitions: 3 }],
  rejections: { concurrency: 50, sliceMs: quick ? 1000 : 2000, rounds: 3, warmupMs: 1000 },
  rss: { clients: 100, maxRequests: quick ? 600 : 2000, maxDurationMs: 120_000 },
  untag: { sizes: quick ? [300, 1000] : [300, 10_000], rounds: quick ? 10 : 30, warmupRounds: 3 },
  auditList: { records: quick ? 50_000 : 500_000, rounds: 30, concurrency: 10, durationMs: 3000 },
  browse: { tags: 100, coldRounds: quick ? 5 : 30, warmRounds: quick ? 10 : 30 },
  ui: { tags: 1000, coldRounds: quick ? 2 : 5, warmRounds: quick ? 3 : 10 },
  pgLatency: { tags: 50, rounds: quick ? 15 : 60, warmupRounds: 5 },
  pgAuditList: { records: quick ? 100_000 : 1_000_000, rounds: 30 },
  replicas: { count: 3, concurrency: 50, sliceMs: quick ? 1000 : 2000, rounds: 3, warmupMs: 1000 },
  cleanup: { tags: quick ? 1000 : 10_000, configs: quick ? 100 : 1000, rounds: quick ? 3 : 5 },
  cleanupRun: { removals: quick ? 200 : 1000 }
}

interface Row { scenario: string, value: string, target: string, ok: boolean | undefined }

const progress = new Progress()
const cleanups: Array<() => Promise<void>> = []
let interrupted = false

async function cleanUp (): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      await cleanup()
    } catch (error) {
      process.stderr.write(`\ncleanup failed: ${(error as Error).message}\n`)
    }
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = true
    progress.end()
    process.stderr.write(`${signal}: stopping the registry and the gateway\n`)
    void cleanUp().then(() => process.exit(130))
  })
}

function registryVersion (): string {
  try {
    return execFileSync(process.env.DOCKER_REGISTRY_BIN ?? 'docker-registry', ['--version'], { encoding: 'utf8' }).trim()
  } catch {
    return 'unknown'
  }
}

async function runAuditList (registryUrl: string): Promise<AuditListResult> {
  progress.begin(`(6) audit list: seeding ${settings.auditList.records} audit records`)
  const dir = mkdtempSync(join(tmpdir(), 'rdg-bench-audit-'))
  cleanups.push(async () => { rmSync(dir, { recursive: true, force: true }) })
  const auditPath = join(dir, 'audit.db')
  await seedAuditTrail(auditPath, settings.auditList.records, progress)
  progress.begin('(6) audit list: starting a gateway on that trail')
  const gateway = await startGateway(registryUrl, { auditPath })
  cleanups.push(async () => { await gateway.close() })
  progress.begin('(6) audit list, narrow caller')
  const result = await measureAuditList({ gateway, ...settings.auditList, progress })
  await gateway.close()
  return result
}

async function runBrowse (registryUrl: string, seed: (name: string, count: number, shared: boolean) => Promise<SeededRepository>): Promise<BrowseResult> {
  const repositories: SeededRepository[] = []
  for (let index = 0; index <= settings.browse.coldRounds; index++) repositories.push(await seed(`bench/browse-${index}`, settings.browse.tags, false))
  progress.begin('(7) browse: starting a gateway')
  const gateway = await startGateway(registryUrl, { config: { registries: { default: { url: registryUrl }, [BROWSE_WARMUP_REGISTRY]: { url: registryUrl } } } })
  cleanups.push(async () => { await gateway.close() })
  progress.begin(`(7) browse, pages of ${settings.browse.tags} tags`)
  const result = await measureBrowse({ registryUrl, gateway, repositories, warmRounds: settings.browse.warmRounds, progress })
  await gateway.close()
  return result
}

async function runCleanup (registryUrl: string, pool: Pool): Promise<CleanupResult> {
  const { tags, configs, rounds } = settings.cleanup
  const name = 'bench/cleanup'
  progress.begin(`(9) cleanup plan: seeding ${tags} tags`)
  await seedCleanupRepository(registryUrl, pool, name, tags, configs, done => { if (done % 500 === 0) progress.update(`${done}/${tags} tags`) })
  progress.begin('(9) cleanup plan: starting a gateway')
  // A one-entry cache: every plan reads its configs again, as the bare client does.
  const gateway = await startGateway(registryUrl, { config: { browse: { cacheEntries: 1 }, cleanups: { maxTags: tags * 2 } } })
  cleanups.push(async () => { await gateway.close() })
  progress.begin(`(9) cleanup plan, ${tags} tags`)
  const result = await measureCleanupPlan({ registryUrl, gateway, name, tags, configs, rounds, progress })
  await gateway.close()
  return result
}

async function runUi (registryUrl: string, seed: (name: string, count: number, shared: boolean) => Promise<SeededRepository>): Promise<UiResult> {
  const repositories: SeededRepository[] = []
  for (let index = 0; index < settings.ui.coldRounds; index++) repositories.push(await seed(`bench/ui-${index}`, settings.ui.tags, false))
  progress.begin('(8) web page: starting a gateway')
  const gateway = await startGateway(registryUrl)
  cleanups.push(async () => { await gateway.close() })
  progress.begin(`(8) web page, ${settings.ui.tags} tags in chromium`)
  const result = await measureUi({ registryUrl, gateway, repositories, warmRounds: settings.ui.warmRounds, progress })
  await gateway.close()
  return result
}

/** One PostgreSQL cluster for the issue 14 scenarios, each with a database of its own. */
let postgresServer: PostgresProcess | undefined
async function postgresDatabase (name: string): Promise<string> {
  if (postgresServer === undefined) {
    progress.begin('starting PostgreSQL')
    const server = await startPostgres()
    postgresServer = server
    cleanups.push(async () => { await server.stop() })
  }
  return await postgresServer.createDatabase(name)
}

async function runPgLatency (registryUrl: string, seed: (name: string, count: number, shared: boolean) => Promise<SeededRepository>): Promise<PgLatencyResult> {
  const repositories = {
    sqlite: await seed('bench/pg-latency-sqlite', settings.pgLatency.tags, false),
    postgres: await seed('bench/pg-latency-postgres', settings.pgLatency.tags, false)
  }
  const url = await postgresDatabase('bench_latency')
  progress.begin('(9) delete latency: starting a gateway on SQLite and one on PostgreSQL')
  const sqlite = await startGateway(registryUrl)
  cleanups.push(async () => { await sqlite.close() })
  const postgres = await startGateway(registryUrl, { audit: { driver: 'postgres', url } })
  cleanups.push(async () => { await postgres.close() })
  progress.begin(`(9) delete latency, SQLite vs PostgreSQL, ${settings.pgLatency.tags}-tag repositories`)
  const result = await measurePgLatency({ registryUrl, sqlite, postgres, repositories, ...settings.pgLatency, progress })
  await Promise.all([sqlite.close(), postgres.close()])
  return result
}

async function runPgAuditList (registryUrl: string): Promise<PgAuditListResult> {
  const url = await postgresDatabase('bench_audit_list')
  progress.begin(`(10) audit list on PostgreSQL: seeding ${settings.pgAuditList.records} records`)
  await seedPostgresTrail(url, settings.pgAuditList.records, progress)
  progress.begin('(10) audit list on PostgreSQL: starting a gateway')
  const gateway = await startGateway(registryUrl, { audit: { driver: 'postgres', url } })
  cleanups.push(async () => { await gateway.close() })
  progress.begin('(10) audit list on PostgreSQL')
  const result = await measurePgAuditList({ gateway, ...settings.pgAuditList, progress })
  await gateway.close()
  return result
}

async function runCleanupRun (registryUrl: string, pool: Pool, seed: (name: string, count: number, shared: boolean) => Promise<SeededRepository>): Promise<CleanupRunResult> {
  const throughGateway = await seed('bench/cleanup-run-gateway', settings.cleanupRun.removals, false)
  const floor = await seed('bench/cleanup-run-floor', settings.cleanupRun.removals, false)
  const unsafeFloor = await seed('bench/cleanup-run-unsafe', settings.cleanupRun.removals, false)
  progress.begin('(13) cleanup run: starting a gateway and planning')
  const gateway = await startGateway(registryUrl)
  cleanups.push(async () => { await gateway.close() })
  const result = await measureCleanupRun({ gateway, pool, throughGateway, floor, unsafeFloor, progress })
  await gateway.close()
  return result
}

async function runReplicas (registryUrl: string, seed: (name: string, count: number, shared: boolean) => Promise<SeededRepository>): Promise<ReplicasResult> {
  const repository = await seed('bench/replicas', 1, false)
  const url = await postgresDatabase('bench_replicas')
  const gateways: BenchGateway[] = []
  for (let index = 0; index < settings.replicas.count; index++) {
    progress.begin(`(11) replicas: starting gateway ${index + 1}/${settings.replicas.count} on one PostgreSQL database`)
    const gateway = await startGateway(registryUrl, { audit: { driver: 'postgres', url } })
    gateways.push(gateway)
    cleanups.push(async () => { await gateway.close() })
  }
  progress.begin('(11) rejected requests, 1 to 3 replicas')
  const result = await measureReplicas({ gateways, repository: repository.name, ...settings.replicas, progress })
  await Promise.all(gateways.map(async gateway => { await gateway.close() }))
  return result
}

function postgresRows (latency: PgLatencyResult | undefined, list: PgAuditListResult | undefined, replicas: ReplicasResult | undefined): Row[] {
  return [
    ...(latency === undefined
      ? []
      : [
          { scenario: `(9) delete, audit in SQLite, median (p95), ${latency.tagsPerRepository} tags`, value: `${latency.sqliteMs.median.toFixed(1)} ms (${latency.sqliteMs.p95.toFixed(1)})`, target: '', ok: undefined },
          { scenario: '    delete, audit in PostgreSQL, median (p95)', value: `${latency.postgresMs.median.toFixed(1)} ms (${latency.postgresMs.p95.toFixed(1)})`, target: '', ok: undefined },
          { scenario: '    PostgreSQL / SQLite (median; p95)', value: `${latency.ratio.toFixed(2)} (${latency.ratioP95.toFixed(2)})`, target: '<= 1.10', ok: latency.ratio <= 1.10 }
        ]),
    ...(list === undefined
      ? []
      : [
          { scenario: `(10) GET /audit?limit=50 of ${list.records} in PostgreSQL, p95 (median)`, value: `${list.allMs.p95.toFixed(1)} ms (${list.allMs.median.toFixed(1)})`, target: '< 50 ms', ok: list.allMs.p95 < 50 && list.unexpected === 0 },
          { scenario: '     narrow caller (1 in 100 visible), p95 (median)', value: `${list.narrowMs.p95.toFixed(1)} ms (${list.narrowMs.median.toFixed(1)})`, target: 'reported', ok: undefined },
          { scenario: '     ?name= filter, p95 (median)', value: `${list.filteredMs.p95.toFixed(1)} ms (${list.filteredMs.median.toFixed(1)})`, target: 'reported', ok: undefined }
        ]),
    ...(replicas === undefined
      ? []
      : (['invalidReference', 'forbidden'] as const).flatMap(kind => replicas[kind].map(run => ({
          scenario: `(11) ${kind === 'invalidReference' ? '400 invalid reference' : '403 no rights (audited)'}, ${run.replicas} replica(s)`,
          value: `${run.rps} req/s`,
          target: 'reported',
          ok: run.unexpected === 0 && run.errors === 0 ? undefined : false
        }))))
  ]
}

function auditListRows (result: AuditListResult): Row[] {
  return [
    { scenario: `(6) GET /audit?limit=50, narrow caller, ${result.records} records, p95 (median)`, value: `${result.pageMs.p95.toFixed(1)} ms (${result.pageMs.median.toFixed(1)})`, target: '< 100 ms', ok: result.pageMs.p95 < 100 && result.unexpected === 0 },
    { scenario: `    /healthz p99 during ${result.concurrency} such requests at once`, value: `${result.healthzMs.p99.toFixed(1)} ms (${result.concurrentPages} pages)`, target: '< 20 ms', ok: result.healthzMs.p99 < 20 && result.unexpected === 0 }
  ]
}

async function main (): Promise<void> {
  const started = performance.now()
  const loadBefore = loadavg()
  if ((loadBefore[0] as number) > 0.5) {
    process.stderr.write(`warning: the machine is already busy (load average ${loadBefore.map(value => value.toFixed(2)).join(' ')}); the numbers will be noisier and lower\n`)
  }
  progress.begin('starting the registry')
  const registry: RegistryProcess = await startRegistry({ readyTimeoutMs: 20_000 })
  cleanups.push(async () => { await registry.stop() })
  const pool = new Pool(registry.url, { connections: 16, pipelining: 1 })
  cleanups.push(async () => { await pool.close() })

  const seed = async (name: string, count: number, shared: boolean): Promise<SeededRepository> => {
    progress.begin(`seeding ${name} (${count} tags${shared ? ', one digest' : ', one digest each'})`)
    return await seedRepository(registry.url, pool, name, count, shared, done => { progress.update(`${done}/${count}`) })
  }
  const needsGateway = runs('latency') || runs('rejections') || runs('rss')
  const latencyRepos = needsGateway
    ? {
        gateway: await seed('bench/latency-gateway', settings.latency.tags, false),
        directSafe: await seed('bench/latency-direct-safe', settings.latency.tags, false),
        directBare: await seed('bench/latency-direct-bare', settings.latency.tags, false)
      }
    : undefined
  const guardRepos: SeededRepository[] = []
  if (runs('guard')) for (const { tags } of settings.guard) guardRepos.push(await seed(`bench/guard-${tags}`, tags, true))
  // One tag per manifest, so that the unsafe floor and skopeo, deleting by digest, also remove a single tag.
  const untagRepos: SeededRepository[] = []
  if (runs('untag')) {
    for (const tags of settings.untag.sizes) untagRepos.push(await seed(`bench/untag-${tags}`, tagsNeeded(tags, settings.untag.rounds, settings.untag.warmupRounds), false))
  }
  const seeding = Object.fromEntries([...Object.values(latencyRepos ?? {}), ...guardRepos, ...untagRepos].map(repo => [repo.name, { tags: repo.tags.length, seconds: round(repo.ms / 1000, 2), tagsPerSecond: round(repo.tags.length / (repo.ms / 1000), 0) }]))

  // (5) like (2): in this process; the gateway beside it only answers the mode=untag deletes, one at a time.
  const untag: UntagResult[] = []
  if (untagRepos.length > 0) {
    progress.begin('(5) untag: starting a gateway')
    const untagGateway = await startGateway(registry.url)
    try {
      for (const [index, repository] of untagRepos.entries()) {
        const tags = settings.untag.sizes[index] as number
        progress.begin(`(5) untag, ${tags} tags`)
        untag.push(await measureUntag({ registryUrl: registry.url, pool, repository, tags, rounds: settings.untag.rounds, warmupRounds: settings.untag.warmupRounds, progress, gateway: untagGateway }))
      }
    } finally {
      await untagGateway.close()
    }
  }

  // (2) first, in this process, before any gateway runs beside it.
  const guard: GuardResult[] = []
  for (const [index, repository] of guardRepos.entries()) {
    progress.begin(`(2) co-tag guard, ${repository.tags.length} tags`)
    guard.push(await measureGuard({ registryUrl: registry.url, repository, repetitions: settings.guard[index]?.repetitions ?? 3, warmup: index === 0, progress }))
  }

  let latency: Awaited<ReturnType<typeof measureDeleteLatency>> | undefined
  let rejections: Awaited<ReturnType<typeof measureRejections>> | undefined
  let rss: Awaited<ReturnType<typeof measurePeakRss>> | undefined
  if (latencyRepos !== undefined) {
    progress.begin('starting the gateway')
    let gateway: BenchGateway = await startGateway(registry.url)
    let closeGateway = async (): Promise<void> => { await gateway.close() }
    cleanups.push(async () => { await closeGateway() })

    if (runs('latency')) {
      progress.begin(`(1) delete latency, ${settings.latency.tags}-tag repositories`)
      latency = await measureDeleteLatency({ registryUrl: registry.url, gateway, repositories: latencyRepos, rounds: settings.latency.rounds, warmupRounds: settings.latency.warmupRounds, progress })
    }

    if (runs('rejections')) {
      progress.begin('(3) rejected requests')
      rejections = await measureRejections({ gateway, repository: latencyRepos.gateway.name, ...settings.rejections, progress })
    }

    if (runs('rss')) {
      // (4) on a fresh gateway, so that its peak covers only start-up and this load.
      await gateway.close()
      progress.begin('(4) peak RSS: starting a fresh gateway')
      gateway = await startGateway(registry.url)
      closeGateway = async () => { await gateway.close() }
      progress.begin(`(4) peak RSS, ${settings.rss.clients} concurrent clients`)
      rss = await measurePeakRss({ gateway, repository: latencyRepos.gateway.name, tags: settings.latency.tags, ...settings.rss, progress })
    }
  }
  const auditList = runs('audit-list') ? await runAuditList(registry.url) : undefined
  const browse = runs('browse') ? await runBrowse(registry.url, seed) : undefined
  const ui = runs('ui') ? await runUi(registry.url, seed) : undefined
  const pgLatency = runs('pg-latency') ? await runPgLatency(registry.url, seed) : undefined
  const pgAuditList = runs('pg-audit-list') ? await runPgAuditList(registry.url) : undefined
  const replicas = runs('replicas') ? await runReplicas(registry.url, seed) : undefined
  const cleanup = runs('cleanup') ? await runCleanup(registry.url, pool) : undefined
  const cleanupRun = runs('cleanup-run') ? await runCleanupRun(registry.url, pool, seed) : undefined
  progress.end()

  const rows: Row[] = [
    ...(latency === undefined
      ? []
      : [
          { scenario: `(1) delete through gateway (mode=auto), median (p95), ${latency.tagsPerRepository} tags`, value: `${latency.gatewayMs.median.toFixed(1)} ms (${latency.gatewayMs.p95.toFixed(1)})`, target: '', ok: undefined },
          { scenario: '    direct safe client, median (p95)', value: `${latency.directSafeMs.median.toFixed(1)} ms (${latency.directSafeMs.p95.toFixed(1)})`, target: '', ok: undefined },
          { scenario: '    bare HEAD+DELETE (skopeo, unsafe), median (p95)', value: `${latency.directBareMs.median.toFixed(1)} ms (${latency.directBareMs.p95.toFixed(1)})`, target: '', ok: undefined },
          { scenario: '    gateway / direct safe (median)', value: latency.ratioToDirectSafe.toFixed(2), target: '<= 1.10', ok: latency.ratioToDirectSafe <= 1.10 },
          { scenario: '    gateway / bare HEAD+DELETE (median)', value: latency.ratioToBare.toFixed(2), target: 'reported', ok: undefined }
        ]),
    ...guard.flatMap(result => [
      { scenario: `(2) co-tag guard, ${result.tags} tags, median`, value: `${result.guardMs.median.toFixed(0)} ms (HEADs ${result.rawHeadsMs.median.toFixed(0)}, list ${result.rawListMs.median.toFixed(0)})`, target: '', ok: undefined },
      { scenario: `    guard / raw concurrent HEADs, ${result.tags} tags`, value: result.ratio.toFixed(2), target: '<= 1.20', ok: result.ratio <= 1.2 }
    ]),
    ...(rejections === undefined
      ? []
      : [
          { scenario: '(3) bare Fastify 400', value: `${rejections.bare.rps} req/s`, target: '', ok: undefined },
          ...([['invalidReference', '400 invalid reference'], ['unauthenticated', '401 no credentials'], ['forbidden', '403 no rights']] as const).map(([key, label]) => {
            const run = (rejections as NonNullable<typeof rejections>).gateway[key]
            return { scenario: `    gateway ${label}`, value: `${run.rps} req/s = ${run.ratio.toFixed(2)}x`, target: '>= 0.60x', ok: run.ratio >= 0.6 && run.unexpected === 0 && run.errors === 0 }
          })
        ]),
    ...(rss === undefined
      ? []
      : [{ scenario: `(4) peak RSS, ${rss.clients} clients, ${rss.requests} requests`, value: `${rss.peakRssMb.toFixed(1)} MB (idle ${rss.idleRssMb.toFixed(1)})`, target: '<= 120 MB', ok: rss.peakRssMb <= 120 && rss.unexpected === 0 && rss.errors === 0 }]),
    ...untag.flatMap(untagRows),
    ...(auditList === undefined ? [] : auditListRows(auditList)),
    ...(browse === undefined ? [] : browseRows(browse)),
    ...(ui === undefined ? [] : uiRows(ui)),
    ...postgresRows(pgLatency, pgAuditList, replicas),
    ...(cleanup === undefined ? [] : cleanupRows(cleanup)),
    ...(cleanupRun === undefined ? [] : cleanupRunRows(cleanupRun))
  ]
  const width = Math.max(...rows.map(row => row.scenario.length))
  const valueWidth = Math.max(...rows.map(row => row.value.length))
  const lines = [
    `${'scenario'.padEnd(width)}  ${'value'.padEnd(valueWidth)}  ${'target'.padEnd(9)}  ok?`,
    `${'-'.repeat(width)}  ${'-'.repeat(valueWidth)}  ${'-'.repeat(9)}  ---`,
    ...rows.map(row => `${row.scenario.padEnd(width)}  ${row.value.padEnd(valueWidth)}  ${row.target.padEnd(9)}  ${row.ok === undefined ? '' : row.ok ? 'yes' : 'NO'}`)
  ]
  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: round(totalmem() / 1024 ** 3, 1),
    node: process.version,
    registry: registryVersion(),
    loadAverageBefore: loadBefore.map(value => round(value, 2)),
    loadAverageAfter: loadavg().map(value => round(value, 2))
  }
  const report = {
    time: new Date().toISOString(),
    machine,
    settings,
    seconds: round((performance.now() - started) / 1000, 1),
    seeding,
    latency,
    guard,
    rejections,
    rss,
    untag,
    auditList,
    browse,
    ui,
    pgLatency,
    pgAuditList,
    replicas,
    cleanup,
    cleanupRun,
    targets: rows.filter(row => row.ok !== undefined).map(row => ({ scenario: row.scenario.trim(), value: row.value, target: row.target, ok: row.ok }))
  }
  mkdirSync('bench-results', { recursive: true })
  const out = join('bench-results', `${only === undefined ? '' : `only-${only.join('-')}-`}${quick ? 'quick.json' : 'latest.json'}`)
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`)
  process.stdout.write(`registry-delete-gateway bench (${machine.cpus} cores, ${machine.memoryGiB} GiB, Node ${machine.node}, ${machine.registry}), ${report.seconds} s\n\n${lines.join('\n')}\n\nwritten: ${out}\n`)
}

try {
  await main()
} catch (error) {
  progress.end()
  if (!interrupted) process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\n`)
  process.exitCode = 1
} finally {
  if (!interrupted) await cleanUp()
}
