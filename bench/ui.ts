/**
 * Scenario 8: the web page. What a browser downloads for it (its scripts, gzipped as a server sends them), and
 * how long headless chromium takes from opening a 1,000-tag repository to showing its first rows (the first
 * render) and to knowing all 1,000 rows: cold (each cold round opens a repository the gateway has never seen)
 * and then warm (manifests cached by digest). Beside it, the floor for "all rows" cold: the same 1,000 manifests
 * GET directly from the registry, 16 in flight, in the same run. The page signs in with an API key, typed into
 * its form like a person would.
 */
import { fileURLToPath } from 'node:url'
import type { Page } from 'playwright-core'
import { Pool } from 'undici'
import { forEachLimited } from '../src/images/co-tags.js'
import { MANIFEST_ACCEPT } from '../src/registry/media-types.js'
import { launchBrowser } from '../testing/browser.js'
import { scriptBytes } from '../testing/ui-build.js'
import type { BenchGateway } from './gateway.js'
import type { Progress } from './progress.js'
import type { SeededRepository } from './seed-tags.js'
import { roundSummary, summarize, type Summary } from './stats.js'

/** Where build-tools.sh puts the page, and where the compiled gateway beside it serves it from. */
const PAGE = fileURLToPath(new URL('../dist/ui/', import.meta.url))

export interface UiResult {
  scriptRawBytes: number
  scriptGzipBytes: number
  tags: number
  coldRounds: number
  coldFirstRowsMs: Summary
  coldAllRowsMs: Summary
  /** The repository's manifests fetched directly, 16 in flight: what every row of a cold repository needs. */
  directAllManifestsMs: Summary
  warmFirstRowsMs: Summary
  warmAllRowsMs: Summary
}

const CONCURRENCY = 16

async function fetchDirectly (pool: Pool, repository: SeededRepository): Promise<void> {
  await forEachLimited(repository.tags, CONCURRENCY, async (entry) => {
    const response = await pool.request({ method: 'GET', path: `/v2/${repository.name}/manifests/${entry.tag}`, headers: { accept: MANIFEST_ACCEPT } })
    const bytes = await response.body.arrayBuffer()
    if (response.statusCode !== 200 || bytes.byteLength !== entry.bytes.length) throw new Error(`GET ${repository.name}:${entry.tag} answered ${response.statusCode}`)
  })
}

async function openRepository (page: Page, repository: SeededRepository): Promise<{ firstRowsMs: number, allRowsMs: number }> {
  const tags = repository.tags.length
  await page.getByRole('button', { name: 'Repositories', exact: true }).click()
  const link = page.getByRole('button', { name: repository.name, exact: true })
  await link.waitFor()
  const started = performance.now()
  await link.click()
  await page.getByRole('rowheader').first().waitFor()
  const firstRowsMs = performance.now() - started
  await page.getByText(`${tags} of ${tags} tags`).waitFor({ timeout: 60_000 })
  const allRowsMs = performance.now() - started
  // A long table renders the rows in view only: it must say it has them all, and the last must be there once
  // scrolled to (untimed).
  const rowCount = await page.locator('table.tags').getAttribute('aria-rowcount')
  if (rowCount !== String(tags + 1)) throw new Error(`the table says it has ${String(rowCount)} rows, not ${tags} and its header`)
  await page.locator('.scroll').evaluate(box => { box.scrollTop = box.scrollHeight })
  const last = repository.tags.map(entry => entry.tag).sort().at(-1) as string
  await page.getByRole('rowheader', { name: last, exact: true }).waitFor()
  return { firstRowsMs, allRowsMs }
}

export async function measureUi (options: {
  registryUrl: string
  gateway: BenchGateway
  /** One per cold round, each the gateway has never seen; the last is also the one opened warm. */
  repositories: SeededRepository[]
  warmRounds: number
  progress: Progress
}): Promise<UiResult> {
  const { gateway, repositories, progress } = options
  const size = scriptBytes(PAGE)
  const registry = new Pool(options.registryUrl, { connections: CONCURRENCY, pipelining: 1 })
  const browser = await launchBrowser()
  try {
    // The registry's own caches warm for both, as in scenario 7.
    for (const repository of repositories) await fetchDirectly(registry, repository)
    const page = await browser.context.newPage()
    await page.goto(`${gateway.url}/ui/`)
    await page.getByLabel('API key', { exact: true }).fill(gateway.adminKey)
    await page.getByRole('button', { name: 'Use this key' }).click()
    const cold = { first: [] as number[], all: [] as number[], direct: [] as number[] }
    for (const [index, repository] of repositories.entries()) {
      progress.update(`cold round ${index + 1}/${repositories.length}`)
      const started = performance.now()
      await fetchDirectly(registry, repository)
      cold.direct.push(performance.now() - started)
      const opened = await openRepository(page, repository)
      cold.first.push(opened.firstRowsMs)
      cold.all.push(opened.allRowsMs)
    }
    const warm = { first: [] as number[], all: [] as number[] }
    for (let index = 0; index < options.warmRounds; index++) {
      progress.update(`warm round ${index + 1}/${options.warmRounds}`)
      const opened = await openRepository(page, repositories.at(-1) as SeededRepository)
      warm.first.push(opened.firstRowsMs)
      warm.all.push(opened.allRowsMs)
    }
    return {
      scriptRawBytes: size.raw,
      scriptGzipBytes: size.gzip,
      tags: repositories[0]?.tags.length ?? 0,
      coldRounds: repositories.length,
      coldFirstRowsMs: roundSummary(summarize(cold.first), 1),
      coldAllRowsMs: roundSummary(summarize(cold.all), 1),
      directAllManifestsMs: roundSummary(summarize(cold.direct), 1),
      warmFirstRowsMs: roundSummary(summarize(warm.first), 1),
      warmAllRowsMs: roundSummary(summarize(warm.all), 1)
    }
  } finally {
    await Promise.all([browser.close(), registry.close()])
  }
}

export function uiRows (result: UiResult): Array<{ scenario: string, value: string, target: string, ok: boolean | undefined }> {
  const ms = (summary: Summary): string => `${summary.median.toFixed(0)} ms (${summary.p95.toFixed(0)})`
  return [
    { scenario: '(8) web page scripts, gzipped (raw)', value: `${(result.scriptGzipBytes / 1024).toFixed(1)} KB (${(result.scriptRawBytes / 1024).toFixed(1)})`, target: '<= 60 KB', ok: result.scriptGzipBytes <= 60 * 1024 },
    { scenario: `    ${result.tags}-tag repository in chromium, cold (${result.coldRounds} repositories): first render, median (p95)`, value: ms(result.coldFirstRowsMs), target: '< 1000 ms', ok: result.coldFirstRowsMs.median < 1000 },
    { scenario: '    warm: first render, median (p95)', value: ms(result.warmFirstRowsMs), target: '< 1000 ms', ok: result.warmFirstRowsMs.median < 1000 },
    { scenario: `    cold: all ${result.tags} rows, median (p95)`, value: ms(result.coldAllRowsMs), target: 'reported', ok: undefined },
    { scenario: `    ${result.tags} manifests fetched directly, 16 in flight (the floor of all rows cold)`, value: ms(result.directAllManifestsMs), target: '', ok: undefined },
    { scenario: '    cold all rows / direct (median)', value: (result.coldAllRowsMs.median / result.directAllManifestsMs.median).toFixed(2), target: 'reported', ok: undefined },
    { scenario: `    warm: all ${result.tags} rows, median (p95)`, value: ms(result.warmAllRowsMs), target: '< 1000 ms', ok: result.warmAllRowsMs.median < 1000 }
  ]
}
