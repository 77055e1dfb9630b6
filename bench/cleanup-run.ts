/**
 * Scenario 13: executing a cleanup of N removals (1,000; 200 with --quick) through the gateway — POST /cleanups, then
 * POST /cleanups/<id>/execute, until the run is done — against two floors, as many removals in flight as the run
 * has (cleanups.runConcurrency, 4). The safe floor makes the registry requests a bare client needs for the same
 * removals with the same guarantees: the repository scanned once (the tag list, every tag's manifest, 16 in flight)
 * and that view kept up to date; per removal a GET of the tag (its digest, and the bytes an undo puts back), then,
 * one removal at a time per repository as distribution 2.8 needs, the tag list (names pushed since), the DELETE by
 * digest and the tag list again (a known tag moved onto the digest went with it). The unsafe floor only HEADs and
 * DELETEs. Each side has its own repository of N tags, one digest each; planning is not timed.
 */
import { request, type Pool } from 'undici'
import { forEachLimited } from '../src/images/co-tags.js'
import { MANIFEST_ACCEPT } from '../src/registry/media-types.js'
import type { BenchGateway } from './gateway.js'
import type { Progress } from './progress.js'
import { deleteDigest, headDigest, listTags } from './registry-ops.js'
import { sha256 } from './seed-tags.js'
import type { SeededRepository } from './seed-tags.js'
import { round } from './stats.js'

export interface CleanupRunResult {
  removals: number
  concurrency: number
  planMs: number
  runMs: number
  floorMs: number
  ratioToFloor: number
  unsafeFloorMs: number
  ratioToUnsafeFloor: number
  done: number
}

const CONCURRENCY = 4

/** GET of a manifest: its digest, from the bytes a bare client would keep to undo the removal. */
async function getDigest (pool: Pool, name: string, reference: string): Promise<string | undefined> {
  const response = await pool.request({ method: 'GET', path: `/v2/${name}/manifests/${reference}`, headers: { accept: MANIFEST_ACCEPT } })
  const bytes = Buffer.from(await response.body.arrayBuffer())
  if (response.statusCode === 404) return undefined
  if (response.statusCode !== 200) throw new Error(`GET /v2/${name}/manifests/${reference} answered ${response.statusCode}`)
  return sha256(bytes)
}

/** The safe floor: one scan of the repository, kept up to date; per removal GET, then list, DELETE, list under a per-repository queue. */
async function removeSafely (pool: Pool, name: string, tags: readonly string[], onDone: (done: number) => void): Promise<void> {
  const known = new Map<string, string>()
  const listed = await listTags(pool, name)
  await forEachLimited(listed, 16, async (tag) => { known.set(tag, await getDigest(pool, name, tag) as string) })
  let queue = Promise.resolve()
  const serially = async (work: () => Promise<void>): Promise<void> => {
    const turn = queue.then(work)
    queue = turn.catch(() => undefined)
    await turn
  }
  let done = 0
  await forEachLimited(tags, CONCURRENCY, async (tag) => {
    const digest = await getDigest(pool, name, tag)
    if (digest === undefined) throw new Error(`${name}:${tag} is missing`)
    known.set(tag, digest)
    for (const [other, on] of known) if (on === digest && other !== tag) throw new Error(`${name}:${tag} shares its digest with ${other}`)
    await serially(async () => {
      const before = await listTags(pool, name)
      for (const other of before) {
        if (known.has(other)) continue
        const on = await getDigest(pool, name, other)
        if (on === digest) throw new Error(`${name}:${other} was pushed onto ${digest}`)
        if (on !== undefined) known.set(other, on)
      }
      await deleteDigest(pool, name, digest)
      known.delete(tag)
      const after = new Set(await listTags(pool, name))
      const vanished = before.filter(other => other !== tag && !after.has(other))
      if (vanished.length > 0) throw new Error(`${vanished.join(', ')} went with ${digest}`)
    })
    onDone(++done)
  })
}

async function call (gateway: BenchGateway, method: string, path: string, body?: object): Promise<any> {
  const response = await request(gateway.url + path, {
    method: method as 'GET' | 'POST',
    headers: { 'x-api-key': gateway.adminKey, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  const parsed = await response.body.json() as any
  if (response.statusCode >= 300) throw new Error(`${method} ${path} answered ${response.statusCode}: ${JSON.stringify(parsed).slice(0, 300)}`)
  return parsed
}

export async function measureCleanupRun (options: {
  gateway: BenchGateway
  pool: Pool
  throughGateway: SeededRepository
  floor: SeededRepository
  unsafeFloor: SeededRepository
  progress: Progress
}): Promise<CleanupRunResult> {
  const { gateway, pool, progress } = options
  const removals = options.throughGateway.tags.length
  let started = performance.now()
  const plan = await call(gateway, 'POST', '/cleanups', { repositories: [options.throughGateway.name], rules: {} })
  const planMs = performance.now() - started
  if (plan.totals.remove !== removals) throw new Error(`the plan removes ${String(plan.totals.remove)} tags, not ${removals}`)

  progress.begin(`(13) cleanup run, ${removals} removals through the gateway`)
  started = performance.now()
  await call(gateway, 'POST', `/cleanups/${String(plan.id)}/execute`, { maxDeletions: removals })
  // The run's event stream ends with it. (Polling GET /cleanups/<id> would have the gateway read and serialize the
  // whole plan every few milliseconds: work of the harness, not of the run.)
  const stream = await request(`${gateway.url}/cleanups/${String(plan.id)}/events`, { headers: { 'x-api-key': gateway.adminKey } })
  let seen = 0
  for await (const chunk of stream.body) {
    seen += String(chunk).split('event: tag').length - 1
    progress.update(`${seen}/${removals}`)
  }
  const runMs = performance.now() - started
  const { run } = await call(gateway, 'GET', `/cleanups/${String(plan.id)}`)
  if (run.state !== 'done') throw new Error(`the run ended ${String(run.state)}`)

  const tagsOf = (repository: SeededRepository): string[] => repository.tags.map(each => each.tag)
  progress.begin(`(13) cleanup run, ${removals} removals by a bare client with the same checks`)
  let begun = performance.now()
  await removeSafely(pool, options.floor.name, tagsOf(options.floor), done => { progress.update(`${done}/${removals}`) })
  const floorMs = performance.now() - begun

  progress.begin(`(13) cleanup run, ${removals} removals by a bare client, HEAD + DELETE only`)
  begun = performance.now()
  let unsafeDone = 0
  await forEachLimited(tagsOf(options.unsafeFloor), CONCURRENCY, async (tag) => {
    const digest = await headDigest(pool, options.unsafeFloor.name, tag)
    if (digest === undefined) throw new Error(`${options.unsafeFloor.name}:${tag} is missing`)
    await deleteDigest(pool, options.unsafeFloor.name, digest)
    progress.update(`${++unsafeDone}/${removals}`)
  })
  const unsafeFloorMs = performance.now() - begun
  return {
    removals,
    concurrency: CONCURRENCY,
    planMs: round(planMs, 1),
    runMs: round(runMs, 1),
    floorMs: round(floorMs, 1),
    ratioToFloor: round(runMs / floorMs, 2),
    unsafeFloorMs: round(unsafeFloorMs, 1),
    ratioToUnsafeFloor: round(runMs / unsafeFloorMs, 2),
    done: run.counts.done as number
  }
}

export function cleanupRunRows (result: CleanupRunResult): Array<{ scenario: string, value: string, target: string, ok: boolean | undefined }> {
  return [
    { scenario: `(13) cleanup run, ${result.removals} removals, ${result.concurrency} at a time (planning ${(result.planMs / 1000).toFixed(1)} s, not timed)`, value: `${(result.runMs / 1000).toFixed(2)} s`, target: '', ok: undefined },
    { scenario: '    bare client, same checks (scan once; GET, list, DELETE, list)', value: `${(result.floorMs / 1000).toFixed(2)} s`, target: '', ok: undefined },
    { scenario: '    bare client, HEAD + DELETE only (unsafe)', value: `${(result.unsafeFloorMs / 1000).toFixed(2)} s`, target: '', ok: undefined },
    { scenario: '    run / safe floor', value: result.ratioToFloor.toFixed(2), target: '<= 1.20', ok: result.ratioToFloor <= 1.2 && result.done === result.removals },
    { scenario: '    run / unsafe floor', value: result.ratioToUnsafeFloor.toFixed(2), target: 'reported', ok: undefined }
  ]
}
