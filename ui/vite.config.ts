import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'

// The page ships inside the package (dist/ui) and is served by the gateway at /ui/: no CDN, nothing fetched at
// run time, no inline script (the CSP forbids it), hashed file names (served as immutable).
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/ui/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: fileURLToPath(new URL('../dist/ui', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    sourcemap: false
  }
})
