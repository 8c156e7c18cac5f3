#!/usr/bin/env bash
# Serves the playground: makes the machine ready, builds the wasm core, then serves the repository root
# on http://127.0.0.1:${PORT:-8080}/ (prints the URL). Extra arguments go to serve.mjs (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-wasm.sh
exec node scripts/serve.mjs "$@"
