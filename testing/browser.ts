/**
 * Debian's chromium driven by playwright-core, for the web page's tests and the benchmark. playwright-core never
 * downloads a browser; the flags keep Chromium from opening connections of its own, which this closed network
 * refuses many at a time, and a fresh profile per launch keeps runs apart.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Browser, type BrowserContext } from 'playwright-core'

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync']

export interface BrowserSession {
  /** A context on a fresh profile, with the viewport asked for (1280×800 by default). */
  context: BrowserContext
  browser: Browser | undefined
  close: () => Promise<void>
}

/** Launches chromium headless with a throwaway profile; `close` ends it and removes the profile. */
export async function launchBrowser (options: { width?: number, height?: number } = {}): Promise<BrowserSession> {
  const profile = mkdtempSync(join(tmpdir(), 'rdg-chromium-'))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: options.width ?? 1280, height: options.height ?? 800 }
  })
  return {
    context,
    browser: context.browser() ?? undefined,
    async close () {
      await context.close()
      rmSync(profile, { recursive: true, force: true })
    }
  }
}
