#!/usr/bin/env bash
# Makes a fresh clone runnable: the system packages the tests and the demo start (a real registry, skopeo,
# htpasswd, openssl, chromium for the web page's browser tests and benchmark, PostgreSQL for the second audit store) and the npm dependencies. Does nothing when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
command -v openssl >/dev/null || missing+=(openssl)
# Debian's own build: playwright-core drives it, and nothing downloads a browser.
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The PostgreSQL audit store's tests start throwaway clusters from Debian's server binaries.
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund >&2
fi
