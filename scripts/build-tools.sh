#!/usr/bin/env bash
# Compiles the demo, the benchmark, the soak and their harness (testing/), together with the gateway they run,
# into build/tools/ — never dist/, which is what the image ships. The gateway finds schema/ and openapi.yaml
# relative to its own files (two levels up from src/graphql/, src/http/), so they are copied beside the compiled src/,
# and the web page is built where the compiled src/http/ui.js looks for it (dist/ui two levels up).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf build/tools
node_modules/.bin/tsc -p tsconfig.tools.json
cp -r schema openapi.yaml build/tools/
node_modules/.bin/vite build --config ui/vite.config.ts --outDir "$PWD/build/tools/dist/ui" --emptyOutDir --logLevel warn
