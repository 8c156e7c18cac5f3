"""PyTorch's side of the training speed benchmark: eager AdamW steps over a fixed batches file.

    # the batches: seeded random windows of a char-level text (see --make-batches)
    python train/bench_train_torch.py --make-batches input.txt --out baby.batches.json --steps 50
    # the run: prints one JSON object
    python train/bench_train_torch.py --batches baby.batches.json --threads 1

Text to batches (``--make-batches TEXT``): the vocabulary is the sorted set of the file's characters (by code
point; id = the position in that list), as the engine's ``train --text`` builds it. The first 90% of the
characters are the training split and the last 10% the validation split (cut = n - n // 10). ``--split``
picks which one the windows come from. Each row is a window of ``--context + 1`` characters at a start
drawn from numpy's default_rng(--seed): inputs are its first ``--context`` ids, targets the last
``--context``. ``--batch`` rows per step, ``--steps`` steps. The file is the engine's ``--batches`` format,
``{"steps": [{"inputs": [[...]], "targets": [[...]]}, ...]}``. The vocabulary size is printed, not stored,
because the engine's parser takes no other keys.

The model (default: nanoGPT's CPU "baby" Shakespeare-char model): train/reference.py's decoder with 4
layers, 4 heads, d_model 128, d_ff 512, context 64, GPT-2 style. That means learned positions, GELU-tanh,
LayerNorm eps 1e-5 and the head tied to the token embedding (nanoGPT ties them; ``--untied`` gives an
``lm_head``). There is no dropout. Unlike nanoGPT's ``bias=False``, every linear layer and LayerNorm has a
bias, because our decoder always has them. The vocabulary is ``--vocab``, by default the largest id in the
batches + 1. The init is nanoGPT's: N(0, 0.02) for weights and embeddings, N(0, 0.02 / sqrt(2 * layers))
for the projections into the residual stream (w_o, linear2), zero biases, and LayerNorm 1 / 0. It is seeded
with ``--seed``. Instead, ``--model INIT.safetensors`` starts from a checkpoint, for example the one the
engine starts from.

The step: the mean cross-entropy over all targets, backward, then ``clip_grad_norm_(params, --clip)``. Then
AdamW with nanoGPT's two groups (weight decay ``--weight-decay`` on parameters of 2 or more dims, 0 on the
rest), betas ``--betas`` and eps 1e-8, at a constant ``--lr`` (or, with ``--schedule cosine``, the engine's
warmup then cosine to ``--min-lr``). ``--val-batches FILE --eval-every N``: the mean loss over that file's steps
every N steps and at the last, with the training seconds so far (``evals`` in the output). ``--save-init FILE`` writes the
model as it starts (the engine's ``train --model`` reads it: both engines from one init), ``--log FILE`` one JSON line
a step (loss, lr, grad_norm before clipping, train_s, val_loss when evaluated). Every step runs in the file's order. The
timer is ``time.perf_counter`` around each whole step, from zero_grad through the optimizer step, with the
loss read back. ``torch.set_num_threads(--threads)``, eager, float32. The attention is reference.py's: it
materialises the masked [B, H, T, T] scores and does not call F.scaled_dot_product_attention. nanoGPT's own
model, which does call it, may be faster.

Output, one JSON object: steps, batch, context, tokens (B * T * steps), seconds (all steps),
tokens_per_second, the same two without the first step (``steady_*``), the median and the best step's
tokens per second without the first step (``median_step_*``, ``best_step_*``), first and final loss (each the
step's loss before its update), params, threads, torch version, CPU model, and the config.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List

import numpy as np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # not a CI dependency
    print(json.dumps({"bench": "torch_train", "skipped": "torch is not installed (pip install torch)"}))
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from export import load_checkpoint, save_checkpoint  # noqa: E402
from reference import build_model  # noqa: E402
from train_reference import param_groups  # noqa: E402


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------------------
# text -> batches


def make_batches(text: str, steps: int, batch: int, context: int, seed: int, split: str) -> Dict[str, Any]:
    alphabet = sorted(set(text))
    index = {ch: i for i, ch in enumerate(alphabet)}
    ids = np.array([index[ch] for ch in text], dtype=np.int64)
    cut = len(ids) - len(ids) // 10
    part = ids[:cut] if split == "train" else ids[cut:]
    if len(part) < context + 1:
        raise SystemExit(f"the {split} split has {len(part)} characters, fewer than --context + 1 ({context + 1})")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        starts = rng.integers(0, len(part) - context, size=batch)
        rows = [part[s : s + context + 1].tolist() for s in starts]
        out.append({"inputs": [r[:-1] for r in rows], "targets": [r[1:] for r in rows]})
    return {"batches": {"steps": out}, "vocab_size": len(alphabet), "characters": len(ids), "split": split,
            "split_characters": int(len(part))}


# ----------------------------------------------------------------------------------------------------------
# model


@torch.no_grad()
def init_nanogpt(model: nn.Module, num_layers: int) -> None:
    for name, p in model.named_parameters():
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "ln_f.weight":
            p.fill_(1.0)
        elif p.dim() < 2:
            p.zero_()
        elif name.endswith("w_o.weight") or name.endswith("linear2.weight"):
            p.normal_(0.0, 0.02 / math.sqrt(2 * num_layers))
        else:
            p.normal_(0.0, 0.02)


def make_model(args, vocab: int, context: int) -> nn.Module:
    if args.model:
        state, config, _ = load_checkpoint(args.model)
        model = build_model(config)
        model.load_state_dict(state, strict=True)
        return model.train()
    config = {"arch": "decoder", "vocab_size": vocab, "d_model": args.dim, "num_layers": args.layers,
              "num_heads": args.heads, "d_ff": args.ff or 4 * args.dim, "max_seq_len": args.max_seq_len or context,
              "positions": "learned", "activation": "gelu_tanh", "tie_embeddings": not args.untied,
              "norm_eps": 1e-5}
    torch.manual_seed(args.seed)
    model = build_model(config)
    init_nanogpt(model, args.layers)
    return model.train()


# ----------------------------------------------------------------------------------------------------------


def run(args) -> Dict[str, Any]:
    with open(args.batches) as f:
        steps: List[Dict[str, Any]] = json.load(f)["steps"]
    if args.steps:
        steps = steps[: args.steps]
    data = [(torch.tensor(s["inputs"], dtype=torch.long), torch.tensor(s["targets"], dtype=torch.long))
            for s in steps]
    b, t = data[0][0].shape
    vocab = args.vocab or 1 + max(int(max(x.max(), y.max())) for x, y in data)
    torch.set_num_threads(args.threads)
    model = make_model(args, vocab, t)
    if model.config.get("vocab_size", 0) < vocab:
        raise SystemExit(f"the batches hold id {vocab - 1}, outside the model's vocabulary")
    beta1, beta2 = (float(x) for x in args.betas.split(","))
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(beta1, beta2), eps=1e-8)
    params = [p for p in model.parameters() if p.requires_grad]
    val = []
    if args.val_batches:
        with open(args.val_batches) as f:
            val = [(torch.tensor(s["inputs"], dtype=torch.long), torch.tensor(s["targets"], dtype=torch.long))
                   for s in json.load(f)["steps"]]
    evals = []

    def evaluate(step: int) -> None:
        with torch.no_grad():
            vl = []
            for x, y in val:
                lg = model(x)["logits"]
                vl.append(F.cross_entropy(lg.reshape(-1, lg.size(-1)), y.reshape(-1)).item())
        evals.append({"step": step, "train_seconds": sum(times), "val_loss": sum(vl) / len(vl)})

    if args.save_init:
        save_checkpoint(model, model.config, args.save_init)
    log = open(args.log, "w") if args.log else None
    times, losses = [], []
    for i, (inputs, targets) in enumerate(data):
        t0 = time.perf_counter()
        lr = lr_at(args, i + 1, len(data)) if args.schedule == "cosine" else args.lr
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        logits = model(inputs)["logits"]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - t0)
        last = i + 1 == len(data)
        if val and args.eval_every and ((i + 1) % args.eval_every == 0 or last):
            evaluate(i + 1)
        if log:
            row = {"step": i + 1, "loss": losses[-1], "lr": lr, "grad_norm": float(norm), "train_s": sum(times)}
            if evals and evals[-1]["step"] == i + 1:
                row["val_loss"] = evals[-1]["val_loss"]
            log.write(json.dumps(row) + "\n")
    if log:
        log.close()
    tokens = b * t * len(data)
    seconds = sum(times)
    steady = sum(times[1:])
    return {
        "bench": "torch_train",
        "steps": len(data),
        "batch": b,
        "context": t,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "steady_seconds": steady,
        "steady_tokens_per_second": b * t * (len(data) - 1) / steady if steady > 0 else None,
        # per step, without the first: robust to a machine that other work shares
        "median_step_tokens_per_second": b * t / statistics.median(times[1:]) if len(times) > 1 else None,
        "best_step_tokens_per_second": b * t / min(times[1:]) if len(times) > 1 else None,
        "evals": evals,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "params": sum(p.numel() for p in params),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "config": model.config,
        "optimizer": {"lr": args.lr, "betas": [beta1, beta2], "eps": 1e-8, "weight_decay": args.weight_decay,
                      "clip": args.clip},
    }


def lr_at(args: argparse.Namespace, s: int, steps: int) -> float:
    """The engine's schedule (src/train/optim.rs `lr_at`), step s counted from 1: lr * s / warmup, then cosine
    from lr to min_lr over the remaining steps."""
    if args.warmup > 0 and s <= args.warmup:
        return args.lr * s / args.warmup
    progress = min(1.0, (s - min(args.warmup, s)) / max(1, steps - args.warmup))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1.0 + math.cos(math.pi * progress))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", help="the batches file to train on")
    ap.add_argument("--make-batches", metavar="TEXT", help="write a batches file from this text instead (--out)")
    ap.add_argument("--out", help="where --make-batches writes")
    ap.add_argument("--split", choices=("train", "val"), default="train", help="--make-batches: which split")
    ap.add_argument("--steps", type=int, default=0, help="steps to write (--make-batches, default 50) or to run "
                    "(default: every step of the file)")
    ap.add_argument("--batch", type=int, default=12, help="--make-batches: rows per step")
    ap.add_argument("--context", type=int, default=64, help="--make-batches: ids per row")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--model", help="start from this checkpoint instead of a fresh model")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--ff", type=int, default=0, help="FFN width (default 4 x --dim)")
    ap.add_argument("--max-seq-len", type=int, default=0, help="the model's context (default: the batches' T)")
    ap.add_argument("--vocab", type=int, default=0, help="vocabulary (default: largest id in the batches + 1)")
    ap.add_argument("--untied", action="store_true", help="a separate lm_head instead of the tied embedding")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--betas", default="0.9,0.95")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-batches", help="a batches file of the validation split (--make-batches --split val) to "
                    "evaluate on every --eval-every steps: the mean loss over its steps, with the training seconds so far")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--save-init", metavar="INIT.safetensors", help="write the model as it starts (the checkpoint "
                    "format the engine's --model reads), so both engines can start from the same weights")
    ap.add_argument("--log", metavar="LOG.jsonl", help="one JSON object per step: step, loss, lr, grad_norm (before "
                    "clipping), train_s (the training seconds so far) and val_loss when evaluated")
    ap.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    ap.add_argument("--warmup", type=int, default=0, help="--schedule cosine: linear warmup steps")
    ap.add_argument("--min-lr", type=float, default=1e-4, help="--schedule cosine: the final lr")
    args = ap.parse_args()
    if args.make_batches:
        if not args.out:
            ap.error("--make-batches needs --out")
        with open(args.make_batches, encoding="utf-8") as f:
            text = f.read()
        made = make_batches(text, args.steps or 50, args.batch, args.context, args.seed, args.split)
        with open(args.out, "w") as f:
            json.dump(made["batches"], f, separators=(",", ":"))
            f.write("\n")
        print(json.dumps({"wrote": args.out, "steps": args.steps or 50, "batch": args.batch, "context": args.context,
                          "vocab_size": made["vocab_size"], "characters": made["characters"],
                          "split": made["split"], "split_characters": made["split_characters"], "seed": args.seed}))
        return
    if not args.batches:
        ap.error("give --batches (or --make-batches TEXT --out FILE)")
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
