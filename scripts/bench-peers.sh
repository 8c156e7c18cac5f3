#!/usr/bin/env bash
# The native and browser peer benchmark, in one run, on the shipped checkpoints: batch 1, greedy, KV cache,
# 64 decode steps after a 16-token prompt, and a 128-token prefill, all engines on the same ids
# (models/<name>.json's eval slice) and 1 thread:
#   native:  tinyformer fast CPU backend and the reference twin (examples/bench_cpu.rs) vs PyTorch
#            eager CPU on train/reference.py's modules with their KV cache (train/bench_torch.py;
#            skipped with a message when torch is not installed: it is not a CI dependency).
#   browser: tinyformer's wasm CPU and WebGPU paths in headless Chromium vs onnxruntime-web's wasm EP
#            (1 thread) and webgpu EP, in one page (scripts/bench-peers-browser.mjs; needs
#            scripts/build-wasm.sh first, skipped with a message without www/pkg). The ONNX graphs are
#            exported first from train/reference.py's modules by train/export_onnx.py into bench-out/onnx
#            (gitignored; needs torch and onnx, skipped with a message without them); onnxruntime-web is
#            an npm dev dependency served from node_modules by the bench's own server.
# Prints one JSON object: decode tok/s, prefill ms, ratios (tinyformer speed / peer speed), and
# whether every engine produced the same ids (exits 1 if not). BENCH_REPS (default 5) sets the
# best-of count; BENCH_WEBGPU=0 leaves the WebGPU engines out.
#
# scripts/bench-peers.sh --gpt2-small: GPT-2 small (124M, random weights) instead, f32 and f16, in one
# Chromium run: the page's wasm path (the worker, given the folder's files) vs onnxruntime-web wasm with 1 and
# 2 threads, the page's WebGPU path vs onnxruntime-web webgpu, and the native CLI on 1 thread; decode tok/s,
# prefill-128, load to first token, peak memory, same ids (scripts/bench-gpt2-small.mjs, whose header says
# how each is measured). The model, its f16 copy and its ONNX graphs are made first by
# train/gpt2_small_peer.py into bench-out/gpt2-small (about 1.5 GB, gitignored) when they are not there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--gpt2-small" ]; then
  cargo build --quiet --release --bin tinyformer
  [ -f www/pkg/tinyformer_bg.wasm ] || { echo "bench-peers: no www/pkg: run scripts/build-wasm.sh first" >&2; exit 2; }
  [ -d node_modules/onnxruntime-web ] || npm ci --no-audit --no-fund >&2
  GPT2_DIR=${GPT2_DIR:-bench-out/gpt2-small}
  if [ ! -f "$GPT2_DIR/onnx/gpt2.f16.onnx" ]; then
    python3 -c "import torch, transformers, onnx, onnxruntime" 2>/dev/null ||
      { echo "bench-peers: train/gpt2_small_peer.py needs torch, transformers, onnx and onnxruntime (pip install onnx onnxruntime)" >&2; exit 2; }
    python3 train/gpt2_small_peer.py --out "$GPT2_DIR" >&2
  fi
  GPT2_DIR=$GPT2_DIR TINYFORMER_CLI=${TINYFORMER_CLI:-${CARGO_TARGET_DIR:-target}/release/tinyformer} \
    exec node scripts/bench-gpt2-small.mjs
fi
MODELS=(models/shakespeare-gpt.safetensors models/shakespeare-llama.safetensors)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cargo build --quiet --release --example bench_cpu
# one core, so neither engine gets a second thread (our kernels are single-threaded anyway)
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
"${pin[@]}" target/release/examples/bench_cpu models "${MODELS[@]}" >"$tmp/native.json"
"${pin[@]}" python3 train/bench_torch.py "${MODELS[@]}" >"$tmp/torch.json"
if [ -f www/pkg/tinyformer_bg.wasm ]; then
  [ -d node_modules/onnxruntime-web ] || npm ci --no-audit --no-fund >&2
  rm -rf bench-out/onnx
  if python3 -c "import torch, onnx" 2>/dev/null; then
    python3 train/export_onnx.py --out bench-out/onnx "${MODELS[@]}" >"$tmp/onnx.json"
  else
    echo "bench-peers: no torch/onnx for python3 (pip install torch onnx): onnxruntime-web is skipped" >&2
  fi
  node scripts/bench-peers-browser.mjs "${MODELS[@]}" >"$tmp/browser.json" || true
else
  echo '{"skipped": "no www/pkg: run scripts/build-wasm.sh first"}' >"$tmp/browser.json"
fi

python3 - "$tmp/native.json" "$tmp/torch.json" "$tmp/browser.json" <<'PY'
import json, platform, subprocess, sys
native = json.load(open(sys.argv[1]))
torch = json.load(open(sys.argv[2]))
browser = json.load(open(sys.argv[3]))
cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True, text=True).stdout.strip()
out = {"bench": "peers", "cpu": cpu or platform.processor(), "isa": native["isa"], "threads": 1,
       "workload": "batch 1, greedy, KV cache, 64 new tokens after a 16-token prompt; prefill of 128 tokens",
       "models": {}}
BROWSER_ENGINES = ("tinyformer_wasm_cpu", "tinyformer_wasm_cpu_simd128", "ort_wasm_1thread", "tinyformer_webgpu", "ort_webgpu")
ok = True
for name, r in native["models"].items():
    fast, ref = r["fast_cpu"], r["reference_cpu"]
    m = {"tinyformer_fast_cpu": fast, "tinyformer_reference_cpu": ref}
    same = fast["ids"] == ref["ids"] and fast["prefill_argmax"] == ref["prefill_argmax"]
    if "models" in torch:
        t = torch["models"][name]
        m["pytorch_eager_cpu"] = t
        same = same and fast["ids"] == t["ids"] and fast["prefill_argmax"] == t["prefill_argmax"]
        m["ratio_decode_fast_over_pytorch"] = fast["decode_tokens_per_second"] / t["decode_tokens_per_second"]
        m["ratio_prefill_fast_over_pytorch"] = t["prefill_128_ms"] / fast["prefill_128_ms"]
    if "models" in browser:
        b = browser["models"][name]
        for e in BROWSER_ENGINES:
            if e not in b:
                continue
            w = b[e]
            m[e + "_chromium"] = w
            if "ids" in w:  # it ran (an engine that failed to start carries its error instead)
                same = same and fast["ids"] == w["ids"] and fast["prefill_argmax"] == w["prefill_argmax"]
        m["ratios_chromium"] = b["ratios"]
    m["ratio_decode_fast_over_reference"] = fast["decode_tokens_per_second"] / ref["decode_tokens_per_second"]
    m["ratio_prefill_fast_over_reference"] = ref["prefill_128_ms"] / fast["prefill_128_ms"]
    m["same_ids"] = same
    ok = ok and same
    for e in ("tinyformer_fast_cpu", "tinyformer_reference_cpu", "pytorch_eager_cpu", *(x + "_chromium" for x in BROWSER_ENGINES)):
        if isinstance(m.get(e), dict):
            m[e] = {k: v for k, v in m[e].items() if k != "ids"}
    out["models"][name] = m
if "skipped" in torch:
    out["pytorch"] = "skipped: " + torch["skipped"]
else:
    out["pytorch"] = torch["torch"]
out["browser"] = browser.get("chromium") or browser.get("skipped")
out["onnxruntime_web"] = browser.get("onnxruntime_web") or "skipped"
if browser.get("foreign_requests"):
    out["foreign_requests"] = browser["foreign_requests"]
    ok = False
out["all_engines_same_ids"] = ok
print(json.dumps(out, indent=1))
sys.exit(0 if ok else 1)
PY
