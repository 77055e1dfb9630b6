/**
 * Scenario 13: executing a cleanup of N removals (1,000; 200 with --quick) through the gateway — POST /cleanups, then
 * POST /cleanups/<id>/execute, until the run is done — against two floors, as many removals in flight as the run
 * has (cleanups.runConcurrency, 4): the safe floor makes the registry requests the run's co-tag re-check needs (per
 * removal the tag list, a HEAD of every tag, then the DELETE by digest), the unsafe floor only a HEAD and the DELETE.
 * Each side has its own repository of N tags, one digest each; planning is not timed.
 */
import { request, type Pool } from 'undici'
import type { BenchGateway } from './gateway.js'
import type { Progress } from './progress.js'
import { deleteDigest, headDigest, listTags, tagsOnDigest } from './registry-ops.js'
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
  let run: any
  for (;;) {
    run = (await call(gateway, 'GET', `/cleanups/${String(plan.id)}`)).run
    progress.update(`${String(run?.counts?.done ?? 0)}/${removals}`)
    if (run !== undefined && run.state !== 'running') break
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  const runMs = performance.now() - started

  const bare = async (repository: SeededRepository, checkCoTags: boolean): Promise<number> => {
    const tags = repository.tags.map(each => each.tag)
    const begun = performance.now()
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < tags.length) {
        const tag = tags[next++] as string
        const digest = await headDigest(pool, repository.name, tag)
        if (digest === undefined) throw new Error(`${repository.name}:${tag} is missing`)
        if (checkCoTags && (await tagsOnDigest(pool, repository.name, await listTags(pool, repository.name), digest, 16)).length !== 1) {
          throw new Error(`${repository.name}:${tag} shares its digest`)
        }
        await deleteDigest(pool, repository.name, digest)
        progress.update(`${next}/${tags.length}`)
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, worker))
    return performance.now() - begun
  }
  progress.begin(`(13) cleanup run, ${removals} removals by a bare client with the co-tag check`)
  const floorMs = await bare(options.floor, true)
  progress.begin(`(13) cleanup run, ${removals} removals by a bare client, HEAD + DELETE only`)
  const unsafeFloorMs = await bare(options.unsafeFloor, false)
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
    { scenario: '    bare client with the co-tag check (list + HEAD every tag + DELETE)', value: `${(result.floorMs / 1000).toFixed(2)} s`, target: '', ok: undefined },
    { scenario: '    bare client, HEAD + DELETE only (unsafe)', value: `${(result.unsafeFloorMs / 1000).toFixed(2)} s`, target: '', ok: undefined },
    { scenario: '    run / safe floor', value: result.ratioToFloor.toFixed(2), target: '<= 1.20', ok: result.ratioToFloor <= 1.2 && result.done === result.removals },
    { scenario: '    run / unsafe floor', value: result.ratioToUnsafeFloor.toFixed(2), target: 'reported', ok: undefined }
  ]
}
