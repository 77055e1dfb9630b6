/**
 * Scenario 9: planning a cleanup of one large repository (POST /cleanups, nothing deleted) against the floor a
 * bare client needs for the same registry requests: the tag list, every tag's manifest (16 in flight) and every
 * distinct image config once (16 in flight), with the creation times read from the configs. Each tag has its own
 * manifest; the configs are shared by groups of tags (as builds of one commit are), so "once per digest" shows.
 * The gateway runs with a one-entry browse cache, so every plan reads its configs again: both sides are cold.
 */
import { randomBytes } from 'node:crypto'
import { Pool } from 'undici'
import { forEachLimited } from '../src/images/co-tags.js'
import { MANIFEST_ACCEPT } from '../src/registry/media-types.js'
import { pushBlob, pushImage, MEDIA_TYPES } from '../testing/seed.js'
import type { BenchGateway } from './gateway.js'
import type { Progress } from './progress.js'
import { putTag, sha256 } from './seed-tags.js'
import { round, roundSummary, summarize, type Summary } from './stats.js'

const CONCURRENCY = 16

export interface CleanupResult {
  tags: number
  configs: number
  rounds: number
  gatewayMs: Summary
  floorMs: Summary
  ratio: number
  /** What the last plan said, as a check that it judged every tag. */
  totals: Record<string, number>
}

/** `tags` tags on their own manifests, sharing `configs` configs whose `created` times differ. */
export async function seedCleanupRepository (registryUrl: string, pool: Pool, name: string, tags: number, configs: number, onProgress: (done: number) => void): Promise<void> {
  const image = await pushImage({ url: registryUrl }, name, [], 'oci')
  const base = JSON.parse(image.manifest.toString('utf8')) as { layers: unknown[] }
  const descriptors: Array<{ mediaType: string, digest: string, size: number }> = []
  for (let index = 0; index < configs; index++) {
    const config = Buffer.from(JSON.stringify({
      architecture: 'amd64', os: 'linux', created: new Date(Date.now() - index * 3_600_000).toISOString(), config: { Labels: { nonce: randomBytes(8).toString('hex') } }, rootfs: { type: 'layers', diff_ids: [] }
    }))
    await pushBlob({ url: registryUrl }, name, config)
    descriptors.push({ mediaType: MEDIA_TYPES.ociConfig, digest: sha256(config), size: config.length })
  }
  let done = 0
  await forEachLimited(Array.from({ length: tags }, (_, index) => index), CONCURRENCY, async (index) => {
    const bytes = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: descriptors[index % configs], layers: base.layers, annotations: { 'org.example.bench': `${name}:t-${index}` }
    }))
    await putTag(pool, name, `t-${index}`, bytes, MEDIA_TYPES.ociManifest)
    onProgress(++done)
  })
}

/** The bare client: list, every manifest, every distinct config once, the creation times parsed. */
async function planDirectly (pool: Pool, name: string): Promise<number> {
  const listed = await pool.request({ method: 'GET', path: `/v2/${name}/tags/list` })
  const { tags } = await listed.body.json() as { tags: string[] }
  const configs = new Map<string, Promise<number>>()
  const created: number[] = []
  await forEachLimited(tags, CONCURRENCY, async (tag) => {
    const response = await pool.request({ method: 'GET', path: `/v2/${name}/manifests/${tag}`, headers: { accept: MANIFEST_ACCEPT } })
    const manifest = await response.body.json() as { config: { digest: string } }
    let pending = configs.get(manifest.config.digest)
    if (pending === undefined) {
      pending = (async () => {
        const blob = await pool.request({ method: 'GET', path: `/v2/${name}/blobs/${manifest.config.digest}` })
        return Date.parse((await blob.body.json() as { created: string }).created)
      })()
      configs.set(manifest.config.digest, pending)
    }
    created.push(await pending)
  })
  if (created.length !== tags.length) throw new Error(`read ${created.length} of ${tags.length} tags`)
  return tags.length
}

const RULES = { select: [{ glob: 't-*' }], keep: { newest: 100 } }

async function planThroughGateway (pool: Pool, gateway: BenchGateway, name: string): Promise<Record<string, number>> {
  const response = await pool.request({
    method: 'POST',
    path: '/cleanups',
    headers: { 'x-api-key': gateway.adminKey, 'content-type': 'application/json' },
    body: JSON.stringify({ repositories: [name], rules: RULES })
  })
  const body = await response.body.json() as { totals?: Record<string, number> }
  if (response.statusCode !== 201 || body.totals === undefined) throw new Error(`POST /cleanups answered ${response.statusCode}: ${JSON.stringify(body).slice(0, 300)}`)
  return body.totals
}

export async function measureCleanupPlan (options: {
  registryUrl: string
  gateway: BenchGateway
  name: string
  tags: number
  configs: number
  rounds: number
  progress: Progress
}): Promise<CleanupResult> {
  const { gateway, progress, name } = options
  const registry = new Pool(options.registryUrl, { connections: CONCURRENCY, pipelining: 1 })
  const gatewayPool = new Pool(gateway.url, { connections: 1, pipelining: 1, bodyTimeout: 600_000, headersTimeout: 600_000 })
  const samples = { gateway: [] as number[], floor: [] as number[] }
  let totals: Record<string, number> = {}
  const time = async (work: () => Promise<void>): Promise<number> => {
    const started = performance.now()
    await work()
    return performance.now() - started
  }
  try {
    // Untimed: warms the registry's caches, both connection pools and the gateway's JIT.
    await planDirectly(registry, name)
    await planThroughGateway(gatewayPool, gateway, name)
    for (let index = 0; index < options.rounds; index++) {
      progress.update(`round ${index + 1}/${options.rounds}`, true)
      const floor = async (): Promise<void> => { samples.floor.push(await time(async () => { await planDirectly(registry, name) })) }
      const planned = async (): Promise<void> => { samples.gateway.push(await time(async () => { totals = await planThroughGateway(gatewayPool, gateway, name) })) }
      // Alternated, so that neither always runs right after the other.
      if (index % 2 === 0) { await floor(); await planned() } else { await planned(); await floor() }
    }
  } finally {
    await Promise.all([registry.close(), gatewayPool.close()])
  }
  const gatewayMs = summarize(samples.gateway)
  const floorMs = summarize(samples.floor)
  return {
    tags: options.tags,
    configs: options.configs,
    rounds: options.rounds,
    gatewayMs: roundSummary(gatewayMs, 1),
    floorMs: roundSummary(floorMs, 1),
    ratio: round(gatewayMs.median / floorMs.median),
    totals
  }
}

export function cleanupRows (result: CleanupResult): Array<{ scenario: string, value: string, target: string, ok: boolean | undefined }> {
  const ms = (summary: Summary): string => `${summary.median.toFixed(0)} ms (${summary.p95.toFixed(0)})`
  return [
    { scenario: `(9) POST /cleanups, ${result.tags} tags, ${result.configs} configs, median (p95)`, value: ms(result.gatewayMs), target: '', ok: undefined },
    { scenario: '    bare client, same requests, median (p95)', value: ms(result.floorMs), target: '', ok: undefined },
    { scenario: '    plan / bare client (median)', value: result.ratio.toFixed(2), target: '<= 1.20', ok: result.ratio <= 1.2 }
  ]
}
