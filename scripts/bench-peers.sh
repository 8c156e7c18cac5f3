#!/usr/bin/env bash
# The peer benchmark of issue 11, in one run, on the shipped checkpoints: batch 1, greedy, KV cache,
# 64 decode steps after a 16-token prompt, and a 128-token prefill, all engines on the same ids
# (models/<name>.json's eval slice) and 1 thread:
#   native:  tinyformer fast CPU backend and the reference twin (examples/bench_cpu.rs) vs PyTorch
#            eager CPU on train/reference.py's modules with their KV cache (train/bench_torch.py;
#            skipped with a message when torch is not installed: it is not a CI dependency).
#   browser: tinyformer's wasm CPU path in headless Chromium (scripts/bench-peers-browser.mjs; needs
#            scripts/build-wasm.sh first, skipped with a message without www/pkg). Its onnxruntime-web
#            peer is not written yet: see BENCHMARKS.md.
# Prints one JSON object: decode tok/s, prefill ms, ratios (tinyformer speed / peer speed), and
# whether every engine produced the same ids. BENCH_REPS (default 5) sets the best-of count.
set -euo pipefail
cd "$(dirname "$0")/.."
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
  node scripts/bench-peers-browser.mjs "${MODELS[@]}" >"$tmp/browser.json"
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
        w = browser["models"][name]
        m["tinyformer_wasm_cpu_chromium"] = w
        same = same and fast["ids"] == w["ids"] and fast["prefill_argmax"] == w["prefill_argmax"]
    m["ratio_decode_fast_over_reference"] = fast["decode_tokens_per_second"] / ref["decode_tokens_per_second"]
    m["ratio_prefill_fast_over_reference"] = ref["prefill_128_ms"] / fast["prefill_128_ms"]
    m["same_ids"] = same
    ok = ok and same
    for e in ("tinyformer_fast_cpu", "tinyformer_reference_cpu", "pytorch_eager_cpu", "tinyformer_wasm_cpu_chromium"):
        if e in m:
            m[e] = {k: v for k, v in m[e].items() if k != "ids"}
    out["models"][name] = m
if "skipped" in torch:
    out["pytorch"] = "skipped: " + torch["skipped"]
else:
    out["pytorch"] = torch["torch"]
out["browser"] = browser.get("chromium") or browser.get("skipped")
out["onnxruntime_web"] = "not measured: the ONNX export and the onnxruntime-web runner are not written yet"
out["all_engines_same_ids"] = ok
print(json.dumps(out, indent=1))
sys.exit(0 if ok else 1)
PY
