#!/usr/bin/env bash
# Makes a fresh Debian machine ready to build, serve and test tinyformer.
# Idempotent: each step is skipped when what it installs is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# 1. Debian packages: Vulkan on the CPU (Mesa llvmpipe), Chromium (WebGPU on SwiftShader), node.
need_apt=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
dpkg -s libvulkan1 >/dev/null 2>&1 || need_apt+=(libvulkan1)
dpkg -s vulkan-tools >/dev/null 2>&1 || need_apt+=(vulkan-tools)
dpkg -s chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

# 2. Rust: the wasm target and wasm-bindgen-cli pinned to the wasm-bindgen crate's version in Cargo.lock.
if ! rustup target list --installed | grep -q '^wasm32-unknown-unknown$'; then
  log "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi
WB_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
if [ -z "$WB_VERSION" ]; then echo "setup: cannot read the wasm-bindgen version from Cargo.lock" >&2; exit 1; fi
if ! wasm-bindgen --version 2>/dev/null | grep -q " $WB_VERSION\$"; then
  log "cargo install wasm-bindgen-cli $WB_VERSION (about 5 minutes on 2 cores)"
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi

# 3. npm packages for the browser tests (playwright-core drives Debian's /usr/bin/chromium).
if [ ! -d node_modules/playwright-core ]; then
  log "npm ci (without the optional peer-benchmark packages)"
  npm ci --no-audit --no-fund --omit=optional
fi

# 4. Fail loudly if the GPU drivers are missing: a test that skips for want of a GPU is a hidden failure.
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  echo "setup: Mesa's llvmpipe Vulkan driver (lvp_icd) is missing: install mesa-vulkan-drivers" >&2; exit 1
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "setup: /usr/bin/chromium is missing: install Debian's chromium" >&2; exit 1
fi
log "ready"
