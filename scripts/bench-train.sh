#!/usr/bin/env bash
# The training speed benchmark, in one run: nanoGPT's CPU "baby" Shakespeare-char model (4 layers, 4 heads,
# d_model 128, d_ff 512, context 64, batch 12; GPT-2 style: LayerNorm, learned positions, GELU-tanh, tied
# head, biases) trained with AdamW at a constant lr on the same batches by
#   - tinyformer's fast CPU backend (`train --backend cpu`) on 1 and 2 threads,
#   - PyTorch eager (train/bench_train_torch.py) on 1 and 2 threads (skipped with a message when torch is
#     not installed: it is not a CI dependency),
#   - tinyformer's GPU backend (`--backend gpu`) when a Vulkan/Metal adapter exists: reported, not compared.
# The batches file is made from data/shakespeare.txt.xz by the PyTorch script (--make-batches; without
# torch, tinyformer trains on the text itself and nothing is compared). Each engine runs pinned to the
# same cores (taskset: core 0 for one thread, 0-1 for two). The two start from different draws of the
# same init (N(0, 0.02), residual projections scaled): the final losses are close, not equal.
#
# Prints one JSON object: per engine the mean tokens/s over the steps after the first ("steady"), the
# median and the best step's tokens/s, and the final loss; the ratios tinyformer / PyTorch (on the
# medians, robust to other work on the machine, and on the steady means); the CPU model, the load
# average before the run, the date. BENCH_STEPS (default 50) sets the steps, BENCH_GPU_STEPS (default
# 3) the GPU's. Runs in about a minute after the release build (at most a few).
#
# `scripts/bench-train.sh --time-to-val`: the time to a validation loss instead (nanoGPT's baby run): both
# engines start from one init (PyTorch's nanoGPT-style draw, --save-init, read by `train --model`), train on one
# batches file of BENCH_VAL_STEPS (default 2,000) steps of 12 x 64 random windows of the training split (90%)
# with nanoGPT's schedule (lr 1e-3, warmup 100, cosine to 1e-4, betas 0.9/0.99, weight decay 0.1, clip 1), and
# score one fixed validation set (20 batches of the last 10%; `--val-batches`) every 100 steps. They run at
# once on cores 0 and 1 (BENCH_SERIAL=1: one after the other, both on core 0). Prints one JSON object: per
# engine each evaluation's step, training seconds (evaluations left out) and validation loss, the first
# evaluation at or under BENCH_TARGET (default 1.88), tokens/s; and how far apart the two engines' per-step
# training losses are (the same init and data: they should track each other, not just end close).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${BENCH_STEPS:-50}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cargo build --quiet --release
# a copy: another build into a shared target directory must not swap the binary mid-run
cp "${CARGO_TARGET_DIR:-target}/release/tinyformer" "$tmp/tinyformer"
bin=$tmp/tinyformer
xz -dkc data/shakespeare.txt.xz >"$tmp/shakespeare.txt"
load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

pin() { # pin CORES CMD...: CMD on those cores where taskset exists
  local cores=$1
  shift
  if command -v taskset >/dev/null; then taskset -c "$cores" "$@"; else "$@"; fi
}

if [ "${1:-}" = "--time-to-val" ]; then
  python3 -c "import torch, numpy" 2>/dev/null || { echo "bench-train --time-to-val: needs torch and numpy for python3" >&2; exit 1; }
  vsteps=${BENCH_VAL_STEPS:-2000}
  torch_py=train/bench_train_torch.py
  python3 $torch_py --make-batches "$tmp/shakespeare.txt" --out "$tmp/train.json" --steps "$vsteps" >"$tmp/make.json"
  python3 $torch_py --make-batches "$tmp/shakespeare.txt" --out "$tmp/val.json" --steps 20 --split val >/dev/null
  vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$tmp/make.json")
  python3 $torch_py --batches "$tmp/train.json" --steps 1 --vocab "$vocab" --save-init "$tmp/init.safetensors" >/dev/null
  opt=(--lr 1e-3 --min-lr 1e-4 --warmup 100 --schedule cosine --betas 0.9,0.99 --weight-decay 0.1 --clip 1.0 --threads 1)
  both=(--model "$tmp/init.safetensors" --batches "$tmp/train.json" --val-batches "$tmp/val.json" --eval-every 100)
  ours_core=0 torch_core=1
  [ "${BENCH_SERIAL:-0}" = 1 ] && torch_core=0
  pin $ours_core "$bin" train "${both[@]}" "${opt[@]}" --steps "$vsteps" --backend cpu --log "$tmp/ours.jsonl" >/dev/null &
  ours_pid=$!
  [ "${BENCH_SERIAL:-0}" = 1 ] && wait $ours_pid
  pin $torch_core python3 $torch_py "${both[@]}" "${opt[@]}" --log "$tmp/torch.jsonl" >"$tmp/torch.json"
  wait $ours_pid
  python3 - "$tmp" "$load" "${BENCH_TARGET:-1.88}" "${BENCH_SERIAL:-0}" <<'PY'
import json, statistics, subprocess, sys, time
tmp, load, target, serial = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
TOKENS = 12 * 64
ours = [json.loads(l) for l in open(f"{tmp}/ours.jsonl")]
torch = [json.loads(l) for l in open(f"{tmp}/torch.jsonl")]
t = 0.0
for r in ours:  # every step is logged (--batches); tokens/s leaves the evaluations out
    t += TOKENS / r["tokens_per_second"]
    r["train_s"] = t

def engine(rows):
    evals = [{"step": r["step"], "train_s": round(r["train_s"], 1), "val_loss": round(r["val_loss"], 4)} for r in rows if "val_loss" in r]
    hit = next((e for e in evals if e["val_loss"] <= target), None)
    steps_s = [rows[i]["train_s"] - rows[i - 1]["train_s"] for i in range(1, len(rows))]
    return {"first_at_or_under_target": hit, "final_val_loss": evals[-1]["val_loss"], "train_s": round(rows[-1]["train_s"], 1),
            "median_step_tokens_per_second": round(TOKENS / statistics.median(steps_s)), "evals": evals}

diff = [abs(a["loss"] - b["loss"]) for a, b in zip(ours, torch)]
cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True, text=True).stdout.strip()
after = open("/proc/loadavg").read().split()[:3]
print(json.dumps({
    "bench": "train_time_to_val", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu,
    "load_average_before": load, "load_average_after": " ".join(after), "target": target,
    "cores": "both on core 0, one after the other" if serial else "ours core 0, PyTorch core 1, at once",
    "workload": f"nanoGPT baby (4 layers, 4 heads, d 128, T 64, B 12), {len(ours)} steps, one init, one batches file, one validation set of 20 batches",
    "tinyformer_cpu_1_thread": engine(ours), "pytorch_1_thread": engine(torch),
    "per_step_loss_abs_diff": {"max_first_100": round(max(diff[:100]), 6), "median_all": round(statistics.median(diff), 6),
                               "max_all": round(max(diff), 6)},
}, indent=1))
PY
  exit 0
fi

have_torch=0
python3 -c "import torch, numpy" 2>/dev/null && have_torch=1
model=(--arch gpt --layers 4 --heads 4 --dim 128 --ff 512 --context 64 --batch 12)
if [ "$have_torch" = 1 ]; then
  python3 train/bench_train_torch.py --make-batches "$tmp/shakespeare.txt" --out "$tmp/baby.json" --steps "$steps" >"$tmp/make.json"
  vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$tmp/make.json")
  data=(--batches "$tmp/baby.json" --vocab "$vocab" --schedule constant --warmup 0)
else
  echo "bench-train: no torch for python3 (pip install torch numpy): PyTorch is skipped, tinyformer trains on the text" >&2
  data=(--text "$tmp/shakespeare.txt" --schedule constant --warmup 0)
fi

ours() { # ours NAME CORES SECONDS ARGS...: one run, every step logged, stopped after SECONDS
  local name=$1 cores=$2 limit=$3
  shift 3
  if ! pin "$cores" timeout "$limit" "$bin" train "${model[@]}" "${data[@]}" --log "$tmp/$name.jsonl" --log-every 1 "$@" >/dev/null 2>"$tmp/$name.err"; then
    tail -1 "$tmp/$name.err" | python3 -c 'import json,sys; print(json.dumps({"skipped": sys.stdin.read().strip() or f"stopped after the time limit ({sys.argv[1]} s)"}))' "$limit" >"$tmp/$name.skip"
  fi
}
ours cpu1 0 300 --steps "$steps" --backend cpu --threads 1
ours cpu2 0-1 300 --steps "$steps" --backend cpu --threads 2
# a software adapter (lavapipe) would take minutes: a few steps, bounded
ours gpu 0 90 --steps "${BENCH_GPU_STEPS:-3}" --backend gpu
if [ "$have_torch" = 1 ]; then
  pin 0 python3 train/bench_train_torch.py --batches "$tmp/baby.json" --threads 1 >"$tmp/torch1.json"
  pin 0-1 python3 train/bench_train_torch.py --batches "$tmp/baby.json" --threads 2 >"$tmp/torch2.json"
fi

python3 - "$tmp" "$steps" "$load" <<'PY'
import json, os, platform, statistics, subprocess, sys, time
tmp, steps, load = sys.argv[1], int(sys.argv[2]), sys.argv[3]
TOKENS = 12 * 64

def ours(name):
    if os.path.exists(f"{tmp}/{name}.skip"):
        return json.load(open(f"{tmp}/{name}.skip"))
    rows = [json.loads(l) for l in open(f"{tmp}/{name}.jsonl")]
    later = [r["tokens_per_second"] for r in rows if r["step"] > 1 and r["tokens_per_second"] > 0]
    return {"steady_tokens_per_second": len(later) * TOKENS / sum(TOKENS / x for x in later),
            "median_step_tokens_per_second": statistics.median(later), "best_step_tokens_per_second": max(later),
            "final_loss": rows[-1]["loss"], "steps": rows[-1]["step"]}

def torch(n):
    p = f"{tmp}/torch{n}.json"
    if not os.path.exists(p):
        return {"skipped": "torch is not installed for python3 (pip install torch numpy)"}
    t = json.load(open(p))
    keep = ("steady_tokens_per_second", "median_step_tokens_per_second", "best_step_tokens_per_second",
            "final_loss", "steps", "threads", "torch")
    return {k: t[k] for k in keep if k in t}

cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True, text=True).stdout.strip()
out = {"bench": "train", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu or platform.processor(),
       "cores": os.cpu_count(), "load_average_before": load,
       "workload": f"nanoGPT baby Shakespeare-char (4 layers, 4 heads, d 128, ff 512, T 64, B 12), {steps} AdamW steps, same batches",
       "tinyformer_cpu_1_thread": ours("cpu1"), "tinyformer_cpu_2_threads": ours("cpu2"),
       "tinyformer_gpu": ours("gpu"), "pytorch_1_thread": torch(1), "pytorch_2_threads": torch(2), "ratios": {}}
for n, (a, b) in {"1_thread": ("tinyformer_cpu_1_thread", "pytorch_1_thread"),
                  "2_threads": ("tinyformer_cpu_2_threads", "pytorch_2_threads")}.items():
    x, y = out[a], out[b]
    if "median_step_tokens_per_second" in x and "median_step_tokens_per_second" in y:
        out["ratios"][n] = {
            "median_step": x["median_step_tokens_per_second"] / y["median_step_tokens_per_second"],
            "steady": x["steady_tokens_per_second"] / y["steady_tokens_per_second"],
            "best_step": x["best_step_tokens_per_second"] / y["best_step_tokens_per_second"],
        }
print(json.dumps(out, indent=1))
PY
