/**
 * `registry-delete-gateway cleanup plan|run FILE`: a cleanup request (registry, repositories, rules; JSON or YAML)
 * sent to a running gateway. `plan` prints the plan as a table (removed, kept, refused, with the rule and reason);
 * `run` plans it, executes it and follows its events: a progress bar on a terminal, one line per tag otherwise.
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { parse as parseYaml } from 'yaml'

export interface CleanupCliIo {
  out: (text: string) => void
  err: (text: string) => void
  /** Rewrites the current terminal line; absent when stdout is not a terminal. */
  progress?: (text: string) => void
}

export class CleanupUsageError extends Error {}

interface Entry { repository: string, tag: string, outcome: 'remove' | 'keep' | 'refuse', rule: string, reason: string, plan?: { action: string } }
interface Plan { id: string, entries: Entry[], totals: { remove: number, keep: number, refuse: number, hiddenTags: number } }
interface Counts { done: number, stale: number, failed: number, skipped: number }

const OUTCOMES: Array<[Entry['outcome'], string]> = [['remove', 'REMOVED'], ['keep', 'KEPT'], ['refuse', 'REFUSED']]

function options (args: string[]): { file: string, gateway: string, apiKey: string, maxDeletions?: number } {
  let parsed
  try {
    parsed = parseArgs({
      args,
      options: { gateway: { type: 'string' }, 'api-key': { type: 'string' }, 'max-deletions': { type: 'string' } },
      allowPositionals: true
    })
  } catch (error) {
    throw new CleanupUsageError((error as Error).message)
  }
  const { values, positionals } = parsed
  if (positionals.length !== 1) throw new CleanupUsageError('cleanup: give one FILE with the cleanup request (registry, repositories, rules)')
  const gateway = values.gateway ?? process.env.RDG_GATEWAY_URL
  const apiKey = values['api-key'] ?? process.env.RDG_API_KEY
  if (gateway === undefined || apiKey === undefined) {
    throw new CleanupUsageError('cleanup: give --gateway URL and --api-key KEY (or RDG_GATEWAY_URL and RDG_API_KEY)')
  }
  const max = values['max-deletions']
  if (max !== undefined && !/^[1-9]\d{0,6}$/.test(max)) throw new CleanupUsageError('cleanup: --max-deletions takes a positive integer')
  return { file: positionals[0] as string, gateway: gateway.replace(/\/+$/, ''), apiKey, ...(max === undefined ? {} : { maxDeletions: Number(max) }) }
}

async function call (gateway: string, apiKey: string, path: string, body: unknown): Promise<unknown> {
  const method = 'POST'
  const response = await fetch(gateway + path, { method, headers: { 'x-api-key': apiKey, 'content-type': 'application/json' }, body: JSON.stringify(body) })
  // A refusal is problem+json, with the catalogue's code and detail (and the field of a 400).
  const answer = await response.json() as { detail: string, code: string, field?: string }
  if (!response.ok) {
    const field = answer.field === undefined ? '' : ` (field ${answer.field})`
    throw new Error(`${method} ${path}: ${response.status} ${answer.code}${field}: ${answer.detail}`)
  }
  return answer
}

function table (plan: Plan): string {
  const lines: string[] = []
  for (const [outcome, title] of OUTCOMES) {
    const entries = plan.entries.filter(entry => entry.outcome === outcome)
    lines.push(`${title} (${entries.length})`)
    const width = Math.max(0, ...entries.map(entry => `${entry.repository}:${entry.tag}`.length))
    for (const entry of entries) {
      const action = entry.plan === undefined ? '' : ` [${entry.plan.action}]`
      lines.push(`  ${`${entry.repository}:${entry.tag}`.padEnd(width)}  ${entry.rule}${action}: ${entry.reason}`)
    }
  }
  lines.push(`cleanup ${plan.id}: ${plan.totals.remove} to remove, ${plan.totals.keep} kept, ${plan.totals.refuse} refused, ${plan.totals.hiddenTags} not shown (you may not read them)`)
  return lines.join('\n')
}

function bar (counts: Counts, total: number): string {
  const finished = counts.done + counts.stale + counts.failed + counts.skipped
  const filled = total === 0 ? 20 : Math.round(20 * finished / total)
  return `[${'#'.repeat(filled)}${'-'.repeat(20 - filled)}] ${finished}/${total} done ${counts.done} stale ${counts.stale} failed ${counts.failed} skipped ${counts.skipped}`
}

/** Reads the run's Server-Sent Events until the stream ends; answers the final counts and state. */
async function follow (gateway: string, apiKey: string, plan: Plan, io: CleanupCliIo): Promise<{ state: string, counts: Counts }> {
  const response = await fetch(`${gateway}/cleanups/${plan.id}/events`, { headers: { 'x-api-key': apiKey } })
  const total = plan.totals.remove
  let end = { state: 'unknown', counts: { done: 0, stale: 0, failed: 0, skipped: 0 } }
  let buffer = ''
  const decoder = new TextDecoder()
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true })
    let boundary
    while ((boundary = buffer.indexOf('\n\n')) !== -1) {
      const block = buffer.slice(0, boundary)
      buffer = buffer.slice(boundary + 2)
      // Heartbeats (comment lines) and the opening state event carry nothing to show. A replica that does not run the
      // cleanup (behind a load balancer) sends counts as `progress` instead of per-tag events.
      const event = /^event: (tag|progress|end)$/m.exec(block)?.[1]
      if (event === undefined) continue
      type Progress = { tag?: string, repository?: string, result?: string, detail?: string, state: string, counts: Counts }
      const parsed = JSON.parse((/^data: (.*)$/m.exec(block) as RegExpExecArray)[1] as string) as Progress
      if (event === 'tag') {
        if (io.progress !== undefined) io.progress(bar(parsed.counts, total))
        else io.out([`${parsed.result as string} ${parsed.repository as string}:${parsed.tag as string}`, parsed.detail].filter(Boolean).join(': '))
      }
      if (event === 'progress') (io.progress ?? io.out)(bar(parsed.counts, total))
      if (event === 'end') end = { state: parsed.state, counts: parsed.counts }
    }
  }
  return end
}

/** Answers the exit code: 0 when the run ended done with nothing failed, 1 otherwise. */
export async function cleanupCommand (args: string[], io: CleanupCliIo): Promise<number> {
  const [subcommand, ...rest] = args
  if (subcommand !== 'plan' && subcommand !== 'run') throw new CleanupUsageError('cleanup: use "cleanup plan FILE" or "cleanup run FILE" with --gateway URL --api-key KEY')
  const { file, gateway, apiKey, maxDeletions } = options(rest)
  let request: unknown
  try {
    request = parseYaml(readFileSync(file, 'utf8'))
  } catch (error) {
    throw new CleanupUsageError(`cleanup: cannot read ${file}: ${(error as Error).message}`)
  }
  const plan = await call(gateway, apiKey, '/cleanups', request) as Plan
  io.out(table(plan))
  if (subcommand === 'plan') return 0
  await call(gateway, apiKey, `/cleanups/${plan.id}/execute`, maxDeletions === undefined ? {} : { maxDeletions })
  const end = await follow(gateway, apiKey, plan, io)
  if (io.progress !== undefined) io.progress(`${bar(end.counts, plan.totals.remove)}\n`)
  const { done, stale, failed, skipped } = end.counts
  io.out(`cleanup ${plan.id} ${end.state}: ${done} removed, ${stale} stale, ${failed} failed, ${skipped} skipped (undo: POST /cleanups/${plan.id}/restore)`)
  return Number(end.state !== 'done' || failed > 0)
}
