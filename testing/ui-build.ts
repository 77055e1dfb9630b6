/**
 * Builds the web page from ui/ into a temp dir, so a test serves the page of the sources it runs with (never a
 * stale dist/ui) and parallel test files do not write over each other's build.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { build } from 'vite'

const CONFIG = fileURLToPath(new URL('../ui/vite.config.ts', import.meta.url))

export interface UiBuild {
  root: string
  close: () => void
}

export async function buildUi (): Promise<UiBuild> {
  const root = mkdtempSync(join(tmpdir(), 'rdg-ui-'))
  await build({ configFile: CONFIG, logLevel: 'silent', build: { outDir: root, emptyOutDir: true } })
  return { root, close: () => { rmSync(root, { recursive: true, force: true }) } }
}

/** The bytes a browser downloads for the page's scripts, gzipped as a server would send them. */
export function scriptBytes (root: string): { raw: number, gzip: number } {
  let raw = 0
  let gzip = 0
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry)
      if (statSync(path).isDirectory()) walk(path)
      else if (entry.endsWith('.js')) {
        const bytes = readFileSync(path)
        raw += bytes.length
        gzip += gzipSync(bytes, { level: 9 }).length
      }
    }
  }
  walk(root)
  return { raw, gzip }
}
