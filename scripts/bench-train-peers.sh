#!/usr/bin/env bash
# The training lab's peer benchmark (issue 23 §2) in one run: the page's lab on the Shakespeare preset (wasm CPU path
# and WebGPU) against TensorFlow.js's wasm and webgpu backends in the same headless Chromium, and against the native
# fast CPU backend on 1 thread (scripts/bench-train-peers.mjs says what each engine runs and how it is timed).
# Builds the native binary (a copy is run: another build into a shared target directory must not swap it mid-run);
# needs the wasm build (scripts/build-wasm.sh) and playwright-core (npm ci). TF.js and esbuild are installed by the
# node script into the gitignored bench-out/tfjs on first use (npm registry), never into node_modules.
# Prints one JSON object; exits 1 if a request left the two local servers, the parameter counts differ, or it failed.
# BENCH_ROUNDS (4), BENCH_SECONDS (6), BENCH_GPU_ROUNDS (2), BENCH_GPU_SECONDS (25), BENCH_WEBGPU=0, BENCH_ENGINES.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f www/pkg/tinyformer_bg.wasm ]; then
  echo '{"skipped": "no www/pkg: run scripts/build-wasm.sh first"}'
  exit 1
fi
[ -d node_modules/playwright-core ] || npm ci --omit=optional --no-audit --no-fund >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build --quiet --release --bin tinyformer
cp "${CARGO_TARGET_DIR:-target}/release/tinyformer" "$tmp/tinyformer"
TINYFORMER_BIN="$tmp/tinyformer" node scripts/bench-train-peers.mjs
