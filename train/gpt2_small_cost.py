"""What GPT-2 small costs: a GPT-2-small-shaped directory and PyTorch's figures on it.

    python train/gpt2_small_cost.py make DIR     # writes DIR/{config.json, model.safetensors, tokenizer.json, ...}
    python train/gpt2_small_cost.py torch DIR    # PyTorch eager CPU, 1 thread: load, prefill-128, decode tok/s
    python train/gpt2_small_cost.py ours DIR     # tinyformer's CLI (target/release/tinyformer), fast CPU and GPU

There is no Hub access here, so the weights are random (transformers' own init, seed 0) in GPT-2 small's exact
shape (GPT2Config's defaults: 12 layers, 12 heads, d 768, vocab 50257, context 1024; 124,439,808 parameters,
548 MB in f32). Speed and memory depend on the shape only, not on the values. The tokenizer.json is the tiny
GPT-2 fixture's (384 tokens, a subset of the model's ids), so the page and CLI can load the directory.
scripts/bench-gpt2-small.sh runs both halves and tinyformer's CLI on the same ids.
"""

import json
import os
import resource
import shutil
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hf_models", "gpt2")
PROMPT = 16
NEW = 32
PREFILL = 128


def ids(n):
    return [(7 * i + 3) % 384 for i in range(n)]


def make(out):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())
    model.save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(FIXTURE, f), os.path.join(out, f))
    print(json.dumps({"made": out, "parameters": sum(p.numel() for p in model.parameters())}))


@torch.no_grad()
def bench_torch(d):
    torch.set_num_threads(1)
    t = time.perf_counter()
    model = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager").eval()
    load_s = time.perf_counter() - t

    def generate():
        x = torch.tensor([ids(PROMPT)])
        out = model(x, use_cache=True)
        past, nxt = out.past_key_values, out.logits[0, -1].argmax()
        got = [int(nxt)]
        for _ in range(NEW - 1):
            out = model(nxt.view(1, 1), past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[0, -1].argmax()
            got.append(int(nxt))
        return got

    def prefill():
        model(torch.tensor([ids(PREFILL)]), use_cache=True)

    def best(f, reps=3):
        f()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return min(ts)

    gen_s = best(generate)
    prefill_s = best(prefill)
    print(json.dumps({
        "engine": "pytorch eager (transformers GPT2LMHeadModel), CPU, 1 thread",
        "torch": torch.__version__,
        "load_s": round(load_s, 3),
        "decode_tok_s": round(NEW / gen_s, 2),
        "prefill_128_ms": round(prefill_s * 1e3, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "greedy_ids": generate(),
    }))


def bench_ours(d):
    """Each CLI run loads the directory again: load = a 1-token run's wall time; decode tok/s from the
    difference between an N+1-token and a 1-token run; peak memory = the process's max RSS."""
    import subprocess

    exe = os.path.join(ROOT, "target", "release", "tinyformer")
    prompt = ",".join(map(str, ids(PROMPT)))

    def run(backend, new):
        import tempfile
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            t = time.perf_counter()
            p = subprocess.Popen([exe, "generate", "--model", d, "--backend", backend, "--ids", prompt,
                                  "--max-new-tokens", str(new), "--greedy", "--memory-budget", "8GiB"],
                                 stdout=out, stderr=err)
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t
            out.seek(0)
            err.seek(0)
            if status != 0:
                raise SystemExit(f"tinyformer {backend}: {err.read().decode()[:300]}")
            return wall, ru.ru_maxrss, json.loads(out.read())["ids"]

    res = {"engine": "tinyformer CLI (release), 1 process per run", "runs": {}}
    for backend, n in (("cpu", NEW), ("gpu", 8)):
        try:
            one = [run(backend, 1) for _ in range(2)]
        except SystemExit as e:  # e.g. a GPU whose storage-buffer limit is under the f32 embedding
            res["runs"][backend] = {"error": str(e)}
            continue
        full = [run(backend, n + 1) for _ in range(2)]
        t1, tn = min(r[0] for r in one), min(r[0] for r in full)
        res["runs"][backend] = {
            "load_and_first_token_s": round(t1, 3),
            "decode_tok_s": round(n / max(tn - t1, 1e-9), 2),
            "peak_rss_mib": round(max(r[1] for r in one + full) / 1024, 1),
            "greedy_ids": full[0][2][PROMPT:],
        }
    print(json.dumps(res))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("make", "torch", "ours"):
        sys.exit(__doc__)
    {"make": make, "torch": bench_torch, "ours": bench_ours}[sys.argv[1]](sys.argv[2])
