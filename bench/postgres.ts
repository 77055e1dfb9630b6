/**
 * Issue 14: the gateway on PostgreSQL. (9) one delete's latency with the audit trail in PostgreSQL against the same
 * gateway on SQLite, same registry, same work; (10) an audit page of 50 from 1,000,000 records in PostgreSQL;
 * (11) rejected requests a second with 1, 2 and 3 gateway processes on one database.
 */
import pg from 'pg'
import { Pool } from 'undici'
import { openPostgresAuditStore } from '../src/audit/index.js'
import type { BenchGateway } from './gateway.js'
import { runLoad, type LoadRequest } from './load.js'
import type { Progress } from './progress.js'
import { putTag, type SeededRepository } from './seed-tags.js'
import { round, roundSummary, summarize, type Summary } from './stats.js'

export interface PgLatencyResult {
  tagsPerRepository: number
  rounds: number
  sqliteMs: Summary
  postgresMs: Summary
  /** Medians, and p95s. */
  ratio: number
  ratioP95: number
}

async function gatewayDelete (pool: Pool, gateway: BenchGateway, name: string, tag: string): Promise<void> {
  const response = await pool.request({ method: 'DELETE', path: `/images/${name}/${tag}?mode=auto`, headers: { 'x-api-key': gateway.adminKey } })
  const body = await response.body.json() as { deleted?: boolean, removedTags?: string[] }
  if (response.statusCode !== 200 || body.deleted !== true || body.removedTags?.length !== 1) {
    throw new Error(`gateway DELETE ${name}:${tag} answered ${response.statusCode}: ${JSON.stringify(body)}`)
  }
}

/** As scenario (1): each round both gateways delete one tag of their own 50-tag repository, in alternating order; the tag is put back untimed. */
export async function measurePgLatency (options: {
  registryUrl: string
  sqlite: BenchGateway
  postgres: BenchGateway
  repositories: { sqlite: SeededRepository, postgres: SeededRepository }
  rounds: number
  warmupRounds: number
  progress: Progress
}): Promise<PgLatencyResult> {
  const registry = new Pool(options.registryUrl, { connections: 4, pipelining: 1 })
  const pools = { sqlite: new Pool(options.sqlite.url, { connections: 1 }), postgres: new Pool(options.postgres.url, { connections: 1 }) }
  const samples: Record<'sqlite' | 'postgres', number[]> = { sqlite: [], postgres: [] }
  const total = options.warmupRounds + options.rounds
  try {
    for (let roundIndex = 0; roundIndex < total; roundIndex++) {
      const warm = roundIndex < options.warmupRounds
      options.progress.update(`${warm ? 'warm-up' : 'round'} ${roundIndex + 1}/${total}`)
      const order = roundIndex % 2 === 0 ? ['sqlite', 'postgres'] as const : ['postgres', 'sqlite'] as const
      for (const driver of order) {
        const repository = options.repositories[driver]
        const entry = repository.tags[roundIndex % repository.tags.length] as SeededRepository['tags'][number]
        const started = performance.now()
        await gatewayDelete(pools[driver], options[driver], repository.name, entry.tag)
        if (!warm) samples[driver].push(performance.now() - started)
        await putTag(registry, repository.name, entry.tag, entry.bytes, repository.mediaType)
      }
    }
  } finally {
    await Promise.all([registry.close(), pools.sqlite.close(), pools.postgres.close()])
  }
  const sqliteMs = summarize(samples.sqlite)
  const postgresMs = summarize(samples.postgres)
  return {
    tagsPerRepository: options.repositories.sqlite.tags.length,
    rounds: options.rounds,
    sqliteMs: roundSummary(sqliteMs),
    postgresMs: roundSummary(postgresMs),
    ratio: round(postgresMs.median / sqliteMs.median),
    ratioP95: round(postgresMs.p95 / sqliteMs.p95)
  }
}

/**
 * `records` audit records straight into PostgreSQL with one INSERT … SELECT over generate_series (the gateway's
 * own INSERTs would take minutes and measure nothing): the shape of (6)'s trail, one in a hundred on
 * bench/narrow/app, every fifth a deletion with 1 KB of manifest bytes, ids in ULID form and in time order.
 */
export async function seedPostgresTrail (url: string, records: number, progress: Progress): Promise<void> {
  await (await openPostgresAuditStore({ connectionString: url, poolSize: 1 })).close()
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    const batch = 100_000
    for (let done = 0; done < records; done += batch) {
      await client.query(`INSERT INTO audit_records (id, time, request_id, transport, subject, groups, action, registry, name, tag, digest, media_type,
          removed_tags, decision_allow, decision_reason, outcome, manifest)
        SELECT '01J' || lpad(upper(to_hex(g)), 23, '0'),
          to_char(timestamp '2026-01-01' + g * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
          'seed-' || g, 'rest', 'apikey:bench-admin', '{}', 'delete', 'default',
          CASE WHEN g % 100 = 0 THEN 'bench/narrow/app' ELSE 'bench/other-' || (g % 37) END, 'v' || g,
          CASE WHEN g % 5 = 0 THEN 'sha256:' || repeat('a', 64) END,
          CASE WHEN g % 5 = 0 THEN 'application/vnd.oci.image.manifest.v1+json' END,
          ARRAY['v' || g], true, 'seeded', CASE WHEN g % 5 = 0 THEN 'deleted' ELSE 'denied' END,
          CASE WHEN g % 5 = 0 THEN convert_to(repeat('{"schemaVersion":2}', 54), 'UTF8') END
        FROM generate_series($1::bigint, $2::bigint) AS g`, [done + 1, Math.min(done + batch, records)])
      progress.update(`${Math.min(done + batch, records)}/${records}`)
    }
    progress.update('VACUUM ANALYZE')
    await client.query('VACUUM ANALYZE audit_records')
  } finally {
    await client.end()
  }
}

export interface PgAuditListResult {
  records: number
  /** A caller who may audit everything: GET /audit?limit=50, one after another. */
  allMs: Summary
  /** The narrow caller of (6): one record in a hundred is theirs. */
  narrowMs: Summary
  /** A filtered page: ?name=bench/narrow/app&limit=50 as the all-seeing caller. */
  filteredMs: Summary
  unexpected: number
}

export async function measurePgAuditList (options: { gateway: BenchGateway, records: number, rounds: number, progress: Progress }): Promise<PgAuditListResult> {
  const { gateway } = options
  const pool = new Pool(gateway.url, { connections: 1, pipelining: 1 })
  let unexpected = 0
  const timed = async (path: string, key: string): Promise<number> => {
    const started = performance.now()
    const response = await pool.request({ method: 'GET', path, headers: { 'x-api-key': key } })
    const body = await response.body.json() as { items?: unknown[] }
    if (response.statusCode !== 200 || body.items?.length !== 50) unexpected++
    return performance.now() - started
  }
  const series = async (label: string, path: string, key: string): Promise<Summary> => {
    for (let i = 0; i < 5; i++) await timed(path, key)
    const samples: number[] = []
    for (let i = 0; i < options.rounds; i++) {
      samples.push(await timed(path, key))
      options.progress.update(`${label} ${i + 1}/${options.rounds}`)
    }
    return roundSummary(summarize(samples))
  }
  try {
    return {
      records: options.records,
      allMs: await series('all', '/audit?limit=50', gateway.adminKey),
      narrowMs: await series('narrow caller', '/audit?limit=50', gateway.auditorKey),
      filteredMs: await series('filtered', '/audit?name=bench/narrow/app&limit=50', gateway.adminKey),
      unexpected
    }
  } finally {
    await pool.close()
  }
}

export interface ReplicaRun {
  replicas: number
  /** Summed over the replicas, median of the rounds. */
  rps: number
  roundRps: number[]
  unexpected: number
  errors: number
  /** Answers of every round, by status. */
  statuses: Record<string, number>
  latencyMs: Summary
}

export interface ReplicasResult {
  concurrency: number
  sliceSeconds: number
  rounds: number
  invalidReference: ReplicaRun[]
  forbidden: ReplicaRun[]
}

/**
 * The load generator spreads its clients round-robin over the first n replicas itself (one keep-alive pool each):
 * a load balancer process in between would take a share of the same 2 cores and measure itself.
 */
export async function measureReplicas (options: {
  gateways: BenchGateway[]
  repository: string
  concurrency: number
  sliceMs: number
  rounds: number
  warmupMs: number
  progress: Progress
}): Promise<ReplicasResult> {
  const targets: Array<['invalidReference' | 'forbidden', number, (gateway: BenchGateway) => LoadRequest]> = [
    // With a valid key: a 401 would soon be a 429 (limits.failedAuthPerWindow counts by client address, all loopback here).
    ['invalidReference', 400, gateway => ({ method: 'DELETE', path: '/images/Bad_Name/v1', headers: { 'x-api-key': gateway.adminKey } })],
    // A denial is audited: with n replicas, n processes append to the one PostgreSQL trail.
    ['forbidden', 403, gateway => ({ method: 'DELETE', path: `/images/${options.repository}/t-0`, headers: { 'x-api-key': gateway.outsiderKey } })]
  ]
  const result: ReplicasResult = { concurrency: options.concurrency, sliceSeconds: options.sliceMs / 1000, rounds: options.rounds, invalidReference: [], forbidden: [] }
  for (const [name, status, request] of targets) {
    for (let replicas = 1; replicas <= options.gateways.length; replicas++) {
      const used = options.gateways.slice(0, replicas)
      const statuses: Record<string, number> = {}
      const slice = async (durationMs: number): Promise<{ rps: number, unexpected: number, errors: number, latencies: Summary }> => {
        const runs = await Promise.all(used.map(async (gateway, index) => await runLoad({
          url: gateway.url,
          // The clients, dealt out round-robin.
          concurrency: Math.floor(options.concurrency / replicas) + (index < options.concurrency % replicas ? 1 : 0),
          durationMs,
          request: () => request(gateway),
          expect: got => got === status
        })))
        for (const run of runs) for (const [code, count] of Object.entries(run.statuses)) statuses[code] = (statuses[code] ?? 0) + count
        return {
          rps: runs.reduce((sum, run) => sum + run.rps, 0),
          unexpected: runs.reduce((sum, run) => sum + run.unexpected, 0),
          errors: runs.reduce((sum, run) => sum + run.errors, 0),
          latencies: (runs[0] as (typeof runs)[number]).latencyMs
        }
      }
      options.progress.update(`${name}, ${replicas} replica(s): warm-up`, true)
      await slice(options.warmupMs)
      const rounds = []
      for (let roundIndex = 0; roundIndex < options.rounds; roundIndex++) {
        options.progress.update(`${name}, ${replicas} replica(s): round ${roundIndex + 1}/${options.rounds}`, true)
        rounds.push(await slice(options.sliceMs))
      }
      result[name].push({
        replicas,
        rps: round(summarize(rounds.map(run => run.rps)).median, 0),
        roundRps: rounds.map(run => round(run.rps, 0)),
        unexpected: rounds.reduce((sum, run) => sum + run.unexpected, 0),
        errors: rounds.reduce((sum, run) => sum + run.errors, 0),
        statuses,
        latencyMs: roundSummary((rounds.at(-1) as (typeof rounds)[number]).latencies)
      })
    }
  }
  return result
}
