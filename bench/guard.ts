/**
 * Scenario 2: the co-tag guard (findCoTags with the gateway's RegistryClient, configured as buildRegistries
 * configures it, metrics observer included) on a repository where every tag shares one digest, against the
 * floor: a bare undici Pool HEADing the same tags with the same Accept list and as many in flight.
 */
import { Pool } from 'undici'
import { findCoTags, ManifestBudget } from '../src/images/co-tags.js'
import { createMetrics } from '../src/metrics.js'
import { RegistryClient } from '../src/registry/client.js'
import type { Progress } from './progress.js'
import { listTags, tagsOnDigest } from './registry-ops.js'
import type { SeededRepository } from './seed-tags.js'
import { round, roundSummary, summarize, type Summary } from './stats.js'

const CONCURRENCY = 16

export interface GuardResult {
  tags: number
  repetitions: number
  guardMs: Summary
  /** HEADs only: the floor the target is measured against. */
  rawHeadsMs: Summary
  /** The raw tag list alone (one GET, JSON.parse). */
  rawListMs: Summary
  /** Median guard time over median raw HEAD time. */
  ratio: number
  /** Median guard time over median (raw list + raw HEADs). */
  ratioWithList: number
  /** Median of each repetition's guard time over the raw HEAD time measured right beside it. */
  pairedRatio: number
}

export async function measureGuard (options: {
  registryUrl: string
  repository: SeededRepository
  repetitions: number
  /** One untimed run of each first (connections, JIT). */
  warmup: boolean
  progress: Progress
}): Promise<GuardResult> {
  const { repository, progress } = options
  const client = new RegistryClient({
    name: 'default',
    url: options.registryUrl,
    connectTimeoutMs: 2000,
    requestTimeoutMs: 10_000,
    connections: CONCURRENCY,
    trustedRealmOrigins: [],
    tls: { insecure: false },
    observer: createMetrics()
  })
  const raw = new Pool(options.registryUrl, { connections: CONCURRENCY, pipelining: 1 })
  const first = repository.tags[0] as SeededRepository['tags'][number]
  const others = repository.tags.slice(1).map(entry => entry.tag)
  const expected = others.length
  const guard = async (): Promise<number> => {
    const started = performance.now()
    const { coTags: found } = await findCoTags(client, repository.name, first.digest, first.tag, { concurrency: CONCURRENCY, budget: new ManifestBudget(Number.MAX_SAFE_INTEGER) })
    const ms = performance.now() - started
    if (found.length !== expected) throw new Error(`findCoTags found ${found.length} co-tags of ${repository.name}:${first.tag}, expected ${expected}`)
    return ms
  }
  const heads = async (): Promise<number> => {
    const started = performance.now()
    const found = await tagsOnDigest(raw, repository.name, others, first.digest, CONCURRENCY)
    const ms = performance.now() - started
    if (found.length !== expected) throw new Error(`raw HEADs found ${found.length} tags on the digest, expected ${expected}`)
    return ms
  }
  const list = async (): Promise<number> => {
    const started = performance.now()
    const tags = await listTags(raw, repository.name)
    const ms = performance.now() - started
    if (tags.length !== repository.tags.length) throw new Error(`tags/list of ${repository.name} has ${tags.length} tags, expected ${repository.tags.length}`)
    return ms
  }
  const samples = { guard: [] as number[], heads: [] as number[], list: [] as number[] }
  try {
    if (options.warmup) {
      progress.update('warm-up', true)
      await guard()
      await heads()
      await list()
    }
    for (let repetition = 0; repetition < options.repetitions; repetition++) {
      progress.update(`repetition ${repetition + 1}/${options.repetitions}`, true)
      // Alternated, so drift (page cache, registry GC) does not favour one side.
      if (repetition % 2 === 0) {
        samples.guard.push(await guard())
        samples.heads.push(await heads())
      } else {
        samples.heads.push(await heads())
        samples.guard.push(await guard())
      }
      samples.list.push(await list())
    }
  } finally {
    await Promise.all([client.close(), raw.close()])
  }
  const guardMs = summarize(samples.guard)
  const rawHeadsMs = summarize(samples.heads)
  const rawListMs = summarize(samples.list)
  return {
    tags: repository.tags.length,
    repetitions: options.repetitions,
    guardMs: roundSummary(guardMs, 1),
    rawHeadsMs: roundSummary(rawHeadsMs, 1),
    rawListMs: roundSummary(rawListMs, 1),
    ratio: round(guardMs.median / rawHeadsMs.median),
    ratioWithList: round(guardMs.median / (rawHeadsMs.median + rawListMs.median)),
    pairedRatio: round(summarize(samples.guard.map((ms, index) => ms / (samples.heads[index] as number))).median)
  }
}
