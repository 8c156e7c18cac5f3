#!/usr/bin/env bash
# Builds the wasm core for the page: www/pkg/tinyformer.js + www/pkg/tinyformer_bg.wasm.
# Works from any directory. Needs the wasm32 target and wasm-bindgen-cli (scripts/setup.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --lib --release --target wasm32-unknown-unknown
wasm-bindgen --target web --no-typescript --out-dir www/pkg target/wasm32-unknown-unknown/release/tinyformer.wasm
echo "[build-wasm] www/pkg: $(ls www/pkg | tr '\n' ' ')"
