#!/usr/bin/env bash
# Runs every test: CPU goldens, loader, tokenizers, model fixtures, every GPU kernel against its
# CPU twin on the native GPU (Mesa llvmpipe where there is no real one), then the same checks and
# the playground in headless Chromium's WebGPU (SwiftShader). Sets up a fresh machine first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# A GPU test that skips because no adapter was found would be a hidden failure: the native tests
# panic without an adapter, and this check says why before they run.
if command -v vulkaninfo >/dev/null 2>&1 && ! vulkaninfo --summary >/dev/null 2>&1; then
  echo "test: no Vulkan device found (vulkaninfo failed); install mesa-vulkan-drivers" >&2
  exit 1
fi

echo "== native tests (cargo test)"
# A one-shot build keeps no incremental state: it would only add to the disk the test binaries fill.
export CARGO_INCREMENTAL=0
cargo test --all-targets 2>&1

echo "== wasm build"
scripts/build-wasm.sh

echo "== browser tests (node --test, headless Chromium with WebGPU on SwiftShader)"
node --test --test-concurrency=1 tests/browser/
