#!/usr/bin/env bash
# Compiles the demo, the benchmark, the soak and their harness (testing/), together with the gateway they run,
# into build/tools/ — never dist/, which is what the image ships. The gateway finds schema/ and openapi.yaml
# relative to its own files (two levels up from src/graphql/, src/http/), so they are copied beside the compiled src/.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf build/tools
node_modules/.bin/tsc -p tsconfig.tools.json
cp -r schema openapi.yaml build/tools/
