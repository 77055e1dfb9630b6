/**
 * Scenario 1: the latency of one safe delete through the gateway, against a warm client that talks to the
 * registry directly and does the same safe work, and against a bare HEAD + DELETE (what skopeo does: no co-tag
 * check). Each method has its own repository of the same size, and every deleted tag is put back (untimed)
 * before the next round, so all three always delete from a repository of exactly `tags` tags, each tag on its
 * own digest.
 */
import { Pool } from 'undici'
import type { BenchGateway } from './gateway.js'
import type { Progress } from './progress.js'
import { deleteDigest, headDigest, listTags, tagsOnDigest } from './registry-ops.js'
import { putTag, type SeededRepository } from './seed-tags.js'
import { round, roundSummary, summarize, type Summary } from './stats.js'

const CONCURRENCY = 16

export interface LatencyResult {
  tagsPerRepository: number
  rounds: number
  gatewayMs: Summary
  directSafeMs: Summary
  directBareMs: Summary
  /** Medians. */
  ratioToDirectSafe: number
  ratioToDirectSafeP95: number
  ratioToBare: number
}

type Method = 'gateway' | 'directSafe' | 'directBare'

export async function measureDeleteLatency (options: {
  registryUrl: string
  gateway: BenchGateway
  repositories: Record<Method, SeededRepository>
  rounds: number
  warmupRounds: number
  progress: Progress
}): Promise<LatencyResult> {
  const { gateway, repositories, progress } = options
  const registry = new Pool(options.registryUrl, { connections: CONCURRENCY, pipelining: 1 })
  const gatewayPool = new Pool(gateway.url, { connections: 1, pipelining: 1 })
  const deleteOne: Record<Method, (name: string, tag: string) => Promise<void>> = {
    async gateway (name, tag) {
      const response = await gatewayPool.request({ method: 'DELETE', path: `/images/${name}/${tag}?mode=auto`, headers: { 'x-api-key': gateway.adminKey } })
      const body = await response.body.json() as { deleted?: boolean, removedTags?: string[] }
      if (response.statusCode !== 200 || body.deleted !== true || body.removedTags?.length !== 1) {
        throw new Error(`gateway DELETE ${name}:${tag} answered ${response.statusCode}: ${JSON.stringify(body)}`)
      }
    },
    // Same work as the gateway: resolve the tag, list, resolve every other tag 16 at a time, delete the digest.
    async directSafe (name, tag) {
      const digest = await headDigest(registry, name, tag)
      if (digest === undefined) throw new Error(`${name}:${tag} is missing`)
      const others = (await listTags(registry, name)).filter(other => other !== tag)
      const sharing = await tagsOnDigest(registry, name, others, digest, CONCURRENCY)
      if (sharing.length > 0) throw new Error(`${name}:${tag} shares its digest with ${sharing.join(', ')}`)
      await deleteDigest(registry, name, digest)
    },
    async directBare (name, tag) {
      const digest = await headDigest(registry, name, tag)
      if (digest === undefined) throw new Error(`${name}:${tag} is missing`)
      await deleteDigest(registry, name, digest)
    }
  }
  const methods: Method[] = ['gateway', 'directSafe', 'directBare']
  const samples: Record<Method, number[]> = { gateway: [], directSafe: [], directBare: [] }
  const total = options.warmupRounds + options.rounds
  try {
    for (let roundIndex = 0; roundIndex < total; roundIndex++) {
      const warm = roundIndex < options.warmupRounds
      progress.update(`${warm ? 'warm-up' : 'round'} ${warm ? roundIndex + 1 : roundIndex - options.warmupRounds + 1}/${warm ? options.warmupRounds : options.rounds}`)
      // Rotated so that no method always runs first (or right after another's put-back).
      for (let step = 0; step < methods.length; step++) {
        const method = methods[(roundIndex + step) % methods.length] as Method
        const repository = repositories[method]
        const entry = repository.tags[roundIndex % repository.tags.length] as SeededRepository['tags'][number]
        const started = performance.now()
        await deleteOne[method](repository.name, entry.tag)
        const ms = performance.now() - started
        if (!warm) samples[method].push(ms)
        await putTag(registry, repository.name, entry.tag, entry.bytes, repository.mediaType)
      }
    }
  } finally {
    await Promise.all([registry.close(), gatewayPool.close()])
  }
  const gatewayMs = summarize(samples.gateway)
  const directSafeMs = summarize(samples.directSafe)
  const directBareMs = summarize(samples.directBare)
  return {
    tagsPerRepository: repositories.gateway.tags.length,
    rounds: options.rounds,
    gatewayMs: roundSummary(gatewayMs),
    directSafeMs: roundSummary(directSafeMs),
    directBareMs: roundSummary(directBareMs),
    ratioToDirectSafe: round(gatewayMs.median / directSafeMs.median),
    ratioToDirectSafeP95: round(gatewayMs.p95 / directSafeMs.p95),
    ratioToBare: round(gatewayMs.median / directBareMs.median)
  }
}
