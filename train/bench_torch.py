"""PyTorch eager CPU peer of the tinyformer CPU benchmark (scripts/bench-peers.sh runs it).

Same checkpoints, same ids (the first tokens of models/<name>.json's eval slice), same counts as
examples/bench_cpu.rs: greedy decode of 64 tokens after a 16-token prompt with the reference modules'
KV cache (train/reference.py), tok/s = 64 / (whole generation, prefill of the prompt included), and a
128-token prefill from an empty cache, in ms. 1 thread (torch.set_num_threads(1)), torch.no_grad,
best of N after a warm-up. Prints JSON, with the generated ids for the cross-engine check.

Usage: python3 train/bench_torch.py models/shakespeare-gpt.safetensors models/shakespeare-llama.safetensors
"""
import json
import os
import sys
import time

try:
    import torch
except ImportError:  # not a CI dependency
    print(json.dumps({"bench": "torch_models", "skipped": "torch is not installed (pip install torch)"}))
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import load_checkpoint  # noqa: E402
from reference import build_model  # noqa: E402

REPS = int(os.environ.get("BENCH_REPS", "5"))


def best(reps, f):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


@torch.no_grad()
def generate(model, prompt, n):
    cache = [{} for _ in range(model.config["num_layers"])]
    out = model(prompt, kv_cache=cache)
    ids = []
    for step in range(n):
        nxt = out["logits"][:, -1, :].argmax(dim=-1, keepdim=True)
        ids.append(int(nxt))
        if step < n - 1:
            out = model(nxt, kv_cache=out["kv_cache"])
    return ids


@torch.no_grad()
def prefill(model, ids):
    cache = [{} for _ in range(model.config["num_layers"])]
    return model(ids, kv_cache=cache)["logits"][0, -1]


def main(paths):
    torch.set_num_threads(1)
    res = {}
    for p in paths:
        tensors, config, _ = load_checkpoint(p)
        model = build_model(config)
        model.load_state_dict(tensors, strict=True)
        side = json.load(open(p.replace(".safetensors", ".json")))
        ids = side["eval_slice"]["ids"]
        prompt = torch.tensor([ids[:16]])
        pre = torch.tensor([ids[:128]])
        out = []
        gen = best(REPS, lambda: out.__setitem__(slice(None), generate(model, prompt, 64)))
        t_pre = best(REPS, lambda: prefill(model, pre))
        name = os.path.splitext(os.path.basename(p))[0]
        res[name] = {
            "decode_tokens_per_second": 64 / gen,
            "prefill_128_ms": t_pre * 1e3,
            "ids": out,
            "prefill_argmax": int(prefill(model, pre).argmax()),
        }
    print(json.dumps({"bench": "torch_models", "torch": torch.__version__, "threads": torch.get_num_threads(), "models": res}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
