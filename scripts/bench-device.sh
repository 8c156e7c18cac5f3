#!/usr/bin/env bash
# Issue 12's real-GPU measurements in one script, for the device machine (an NVIDIA H200, when a task is lent one).
# Device time is short (15 minutes a session), so everything runs in one call and writes JSON under $OUT.
#
# Here, once (x86-64 build machine):
#   cargo build --release
#   echo /.gl/ >> .git/info/exclude; mkdir -p .gl /tmp/amd64/partial
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update; (cd .gl && apt-get $o download libvulkan1)
# Then one device call, carrying the binary and the loader:
#   run(command="bash scripts/bench-device.sh", carry=["target/release/tinyformer", ".gl"], timeout_s=540)
#
# What it measures (each step has its own time limit, so one slow step cannot eat the rest):
#   1. `tinyformer bench matmul --sizes 1024,2048,4096` on wgpu's Vulkan backend (goal: 4096^3 >= 20 TFLOP/s f32),
#      beside PyTorch's f32 matmul (cuBLAS, TF32 off) at the same sizes: the machine's limit for this op;
#   2. `tinyformer bench generate` on the shipped models at K = 1 and K = 8 tokens per submission;
#   3. train/bench_torch_cuda.py: PyTorch with a static KV cache and one CUDA graph per step, the same models
#      and ids (goal: ours >= 2x).
set -u -o pipefail
OUT=${OUT:-bench-out/device}
mkdir -p "$OUT"
log() { echo "[bench-device] $*" | tee -a "$OUT/log.txt"; }

if ! ldconfig -p | grep -q libvulkan; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
log "$(nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,memory.total --format=csv 2>&1 | tr '\n' ' ')"

BIN=target/release/tinyformer
timeout 150 "$BIN" bench matmul --sizes 1024,2048,4096 >"$OUT/matmul.json" 2>>"$OUT/log.txt" || log "bench matmul failed ($?)"

timeout 60 python3 - >"$OUT/torch_matmul.json" 2>>"$OUT/log.txt" <<'EOF' || log "torch matmul failed"
import json, torch
torch.backends.cuda.matmul.allow_tf32 = False
res = []
for s in (1024, 2048, 4096):
    a, b = torch.randn(s, s, device="cuda"), torch.randn(s, s, device="cuda")
    for _ in range(3):
        a @ b.T
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    n = 20
    e0.record()
    for _ in range(n):
        a @ b.T
    e1.record()
    torch.cuda.synchronize()
    ms = e0.elapsed_time(e1) / n
    res.append({"size": s, "ms": ms, "tflops": 2 * s**3 / (ms * 1e-3) / 1e12})
print(json.dumps({"bench": "torch_matmul_f32_no_tf32", "gpu": torch.cuda.get_device_name(0), "results": res}, indent=1))
EOF

# one compact JSON object a line (at most 8 files come back from the device machine)
compact() { python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))'; }
for m in shakespeare-gpt shakespeare-llama shakespeare-moe dates-encdec; do
  for k in 1 8; do
    timeout 60 "$BIN" bench generate --model "models/$m.safetensors" --tokens 64 --reps 5 --tokens-per-submit $k \
      2>>"$OUT/log.txt" | compact >>"$OUT/generate.jsonl" || log "bench generate $m K=$k failed"
  done
done

PYTHONUNBUFFERED=1 BENCH_REPS=5 timeout 150 python3 train/bench_torch_cuda.py --device cuda \
  models/shakespeare-gpt.safetensors models/shakespeare-llama.safetensors >"$OUT/torch_static.json" 2>>"$OUT/log.txt" \
  || log "bench_torch_cuda failed ($?)"
log "done"
