"""The shipped induction model (models/induction-attn.safetensors): its sidecar, computed in PyTorch.

The model is trained by our own engine (issue 23 §4), with the command in TRAIN below:

    tinyformer train --arch attn-only --task induction --tokenizer train/induction/tokenizer.json \
        --layers 2 --heads 1 --dim 64 --context 32 --batch 32 --init gpt2 --lr 0.001 --min-lr 0.001 \
        --warmup 0 --schedule constant --weight-decay 0 --betas 0.9,0.95 --steps 3000 --seed 1337 \
        --backend cpu --threads 1 --out models/induction-attn.safetensors

This script loads the result into the PyTorch reference (train/reference.py) and records what the Rust test
(tests/induction_model.rs) checks against:
- a greedy continuation of a prompt that repeats a random string (the KV cache gives the same ids);
- the induction test as the Inspect view runs it: N random ids repeated twice, every head's previous-token,
  duplicate-token and induction score (TransformerLens's "mul" measure, no exclusions), the loss of each half,
  and the second half's loss with the top induction head zero-ablated (its output zero before w_o).

Usage: python train/induction_model.py   (writes models/induction-attn.json)
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
import reference  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "induction-attn"
TRAIN = {
    "command": "tinyformer train --arch attn-only --task induction --tokenizer train/induction/tokenizer.json "
               "--layers 2 --heads 1 --dim 64 --context 32 --batch 32 --init gpt2 --lr 0.001 --min-lr 0.001 "
               "--warmup 0 --schedule constant --weight-decay 0 --betas 0.9,0.95 --steps 3000 --seed 1337 "
               "--backend cpu --threads 1 --out models/induction-attn.safetensors",
    "steps": 3000,
    "seconds": 17.0,
    "hardware": "2 shared CPU cores (AMD EPYC), the fast CPU backend on 1 thread, no GPU",
}
PROMPT = "Kx7q Rb2mW Kx7q"
MAX_NEW = 16
N = 16


def patterns(kind, ids):
    t = len(ids)
    d = torch.zeros(t, t, dtype=torch.float64)
    for i in range(t):
        for j in range(t):
            if kind == "previous_token":
                on = i >= 1 and j == i - 1
            elif kind == "duplicate_token":
                on = j < i and ids[j] == ids[i]
            else:
                on = 1 <= j <= i and ids[j - 1] == ids[i]
            d[i, j] = float(on)
    return d


def surprise(logits, ids):
    lp = torch.log_softmax(logits.double(), -1)
    return [0.0] + [float(-lp[t - 1, ids[t]]) for t in range(1, len(ids))]


@torch.no_grad()
def run(model, ids, ablate=None):
    """Logits and attention maps; `ablate` = (layer, head) zeroes that head's output before w_o."""
    hooks = []
    if ablate is not None:
        layer, head = ablate
        attn = model.decoder_layers[layer].self_attn
        dk = attn.d_k

        def pre(_mod, args):
            x = args[0].clone()
            x[..., head * dk:(head + 1) * dk] = 0
            return (x,)
        hooks.append(attn.w_o.register_forward_pre_hook(pre))
    out = model(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    return out["logits"][0], [a["weights"][0] for a in out["attention"]]


def main():
    path = os.path.join(ROOT, "models", f"{NAME}.safetensors")
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    config = json.loads(meta["config"])
    tok = json.loads(meta["tokenizer"])
    model = reference.build_model(config)
    model.load_state_dict(load_file(path))
    stoi = {s: i for i, s in enumerate(tok["itos"])}
    prompt_ids = [stoi[c] for c in PROMPT]
    ids, steps = reference.greedy_uncached(model, torch.tensor([prompt_ids]), MAX_NEW)
    cached, _ = reference.greedy_cached(model, torch.tensor([prompt_ids]), MAX_NEW)
    margins = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in steps]
    greedy = ids[0].tolist()

    g = torch.Generator().manual_seed(0)
    half = (3 + torch.randint(0, config["vocab_size"] - 3, (N,), generator=g)).tolist()
    seq = half + half
    logits, maps = run(model, seq)
    scores = {k: [[float((m[h].double() * patterns(k, seq)).sum() / m[h].double().sum()) for h in range(m.shape[0])]
                  for m in maps] for k in ("previous_token", "duplicate_token", "induction")}
    s = surprise(logits, seq)
    last = scores["induction"][-1]
    top = (len(maps) - 1, max(range(len(last)), key=lambda h: last[h]))
    s_ab = surprise(run(model, seq, top)[0], seq)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    side = {
        "name": NAME,
        "params": sum(p.numel() for p in model.parameters()),
        "config": config,
        "tokenizer_kind": tok["kind"],
        "dtype": "F32",
        "train": TRAIN,
        "prompt": PROMPT,
        "prompt_ids": prompt_ids,
        "max_new_tokens": MAX_NEW,
        "greedy_ids": greedy,
        "greedy_text": "".join(tok["itos"][i] for i in greedy),
        "min_greedy_margin": min(margins),
        "greedy_cached_equals_uncached": cached[0].tolist() == greedy,
        "induction_test": {
            "ids": seq,
            "head_scores": scores,
            "top_induction": list(top),
            "loss_first_half": mean(s[1:N]),
            "loss_second_half": mean(s[N:]),
            "loss_second_half_ablated": mean(s_ab[N:]),
        },
    }
    with open(os.path.join(ROOT, "models", f"{NAME}.json"), "w") as f:
        json.dump(side, f, indent=1)
        f.write("\n")
    it = side["induction_test"]
    print(f"greedy: {side['greedy_text']!r}; induction {last}; prev {scores['previous_token'][0]}; second half "
          f"{it['loss_second_half']:.3f} -> {it['loss_second_half_ablated']:.3f} ablated")


if __name__ == "__main__":
    main()
