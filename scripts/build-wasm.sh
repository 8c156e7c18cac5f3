#!/usr/bin/env bash
# Builds the wasm core for the page, twice:
#   www/pkg/          tinyformer.js + tinyformer_bg.wasm, wasm simd128 (.cargo/config.toml): every browser
#   www/pkg-relaxed/  the same with relaxed SIMD (+relaxed-simd: the CPU path's GEMM and GEMV use
#                     f32x4.relaxed_madd, fused where the CPU has FMA); browsers without it reject the module,
#                     so www/worker.js probes for it and loads this build only where it validates.
# The second build passes +relaxed-simd to this crate only (cargo rustc's flags reach the last crate), so the
# dependencies are compiled once and shared: it costs one more compile of this crate and a wasm-bindgen run.
# WASM_RELAXED=0 skips it and removes www/pkg-relaxed (the page then loads www/pkg everywhere).
# The profile is Cargo.toml's `wasm` (release with one codegen unit: a smaller wasm).
# Works from any directory, and with CARGO_TARGET_DIR set. Needs the wasm32 target and wasm-bindgen-cli (scripts/setup.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/wasm/tinyformer.wasm"
size() { echo "$1: $(wc -c <"$1") bytes, gzip -9 $(gzip -9 -c "$1" | wc -c)"; }

cargo build --lib --profile wasm --target wasm32-unknown-unknown
wasm-bindgen --target web --no-typescript --out-dir www/pkg "$out"
echo "[build-wasm] www/pkg: $(ls www/pkg | tr '\n' ' ')"
size www/pkg/tinyformer_bg.wasm

if [ "${WASM_RELAXED:-1}" = 0 ]; then
  rm -rf www/pkg-relaxed
  echo "[build-wasm] WASM_RELAXED=0: no relaxed-SIMD build"
  exit 0
fi
cargo rustc --lib --profile wasm --target wasm32-unknown-unknown -- -C target-feature=+simd128,+relaxed-simd
wasm-bindgen --target web --no-typescript --out-dir www/pkg-relaxed "$out"
echo "[build-wasm] www/pkg-relaxed: $(ls www/pkg-relaxed | tr '\n' ' ')"
size www/pkg-relaxed/tinyformer_bg.wasm
