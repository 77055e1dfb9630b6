/**
 * Scenario 8: the web page. What a browser downloads for it (its scripts, gzipped as a server sends them), and
 * how long headless chromium takes from opening a 1,000-tag repository to showing its first rows and all 1,000
 * rows: cold (the gateway has not seen the repository) and then warm (manifests cached by digest). The page signs
 * in with an API key, typed into its form like a person would.
 */
import { fileURLToPath } from 'node:url'
import type { Page } from 'playwright-core'
import { launchBrowser } from '../testing/browser.js'
import { scriptBytes } from '../testing/ui-build.js'
import type { BenchGateway } from './gateway.js'
import type { Progress } from './progress.js'
import type { SeededRepository } from './seed-tags.js'
import { round, roundSummary, summarize, type Summary } from './stats.js'

/** Where build-tools.sh puts the page, and where the compiled gateway beside it serves it from. */
const PAGE = fileURLToPath(new URL('../dist/ui/', import.meta.url))

export interface UiResult {
  scriptRawBytes: number
  scriptGzipBytes: number
  tags: number
  coldFirstRowsMs: number
  coldAllRowsMs: number
  warmFirstRowsMs: Summary
  warmAllRowsMs: Summary
}

async function openRepository (page: Page, name: string, tags: number): Promise<{ firstRowsMs: number, allRowsMs: number }> {
  await page.getByRole('button', { name: 'Repositories', exact: true }).click()
  const link = page.getByRole('button', { name, exact: true })
  await link.waitFor()
  const started = performance.now()
  await link.click()
  await page.getByRole('rowheader').first().waitFor()
  const firstRowsMs = performance.now() - started
  await page.getByText(`${tags} of ${tags} tags`).waitFor({ timeout: 60_000 })
  const allRowsMs = performance.now() - started
  const rows = await page.getByRole('rowheader').count()
  if (rows !== tags) throw new Error(`the page shows ${rows} rows, not ${tags}`)
  return { firstRowsMs, allRowsMs }
}

export async function measureUi (options: { gateway: BenchGateway, repository: SeededRepository, warmRounds: number, progress: Progress }): Promise<UiResult> {
  const { gateway, repository, progress } = options
  const size = scriptBytes(PAGE)
  const browser = await launchBrowser()
  try {
    const page = await browser.context.newPage()
    await page.goto(`${gateway.url}/ui/`)
    await page.getByLabel('API key', { exact: true }).fill(gateway.adminKey)
    await page.getByRole('button', { name: 'Use this key' }).click()
    progress.update('cold')
    const cold = await openRepository(page, repository.name, repository.tags.length)
    const warm = { first: [] as number[], all: [] as number[] }
    for (let index = 0; index < options.warmRounds; index++) {
      progress.update(`warm round ${index + 1}/${options.warmRounds}`)
      const round = await openRepository(page, repository.name, repository.tags.length)
      warm.first.push(round.firstRowsMs)
      warm.all.push(round.allRowsMs)
    }
    return {
      scriptRawBytes: size.raw,
      scriptGzipBytes: size.gzip,
      tags: repository.tags.length,
      coldFirstRowsMs: round(cold.firstRowsMs, 1),
      coldAllRowsMs: round(cold.allRowsMs, 1),
      warmFirstRowsMs: roundSummary(summarize(warm.first), 1),
      warmAllRowsMs: roundSummary(summarize(warm.all), 1)
    }
  } finally {
    await browser.close()
  }
}

export function uiRows (result: UiResult): Array<{ scenario: string, value: string, target: string, ok: boolean | undefined }> {
  const ms = (summary: Summary): string => `${summary.median.toFixed(0)} ms (${summary.p95.toFixed(0)})`
  return [
    { scenario: '(8) web page scripts, gzipped (raw)', value: `${(result.scriptGzipBytes / 1024).toFixed(1)} KB (${(result.scriptRawBytes / 1024).toFixed(1)})`, target: '<= 60 KB', ok: result.scriptGzipBytes <= 60 * 1024 },
    { scenario: `    ${result.tags}-tag repository in chromium, cold: first rows, all rows`, value: `${result.coldFirstRowsMs.toFixed(0)} ms, ${result.coldAllRowsMs.toFixed(0)} ms`, target: 'reported', ok: undefined },
    { scenario: '    warm: first rows, median (p95)', value: ms(result.warmFirstRowsMs), target: '', ok: undefined },
    { scenario: `    warm: all ${result.tags} rows, median (p95)`, value: ms(result.warmAllRowsMs), target: '< 1000 ms', ok: result.warmAllRowsMs.median < 1000 }
  ]
}
