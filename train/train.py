"""Train the shipped tinyformer models with the PyTorch reference modules (train/reference.py).

One command per model, fixed seeds:

    python train/train.py --model shakespeare-llama    # llama, GQA, RoPE, SwiGLU; char_merges 512
    python train/train.py --model shakespeare-gpt      # decoder (LayerNorm, sinusoidal PE, ReLU); byte_bpe 512
    python train/train.py --model shakespeare-moe      # decoder + MoE (4 experts, top-2) in every layer; byte_bpe 512
    python train/train.py --model dates-encdec         # encoder-decoder, character level, generated dates
                                                       # (years 1000-2999; 1 thread, see MODELS.md)

Prerequisites: `pip install torch safetensors numpy` and the native CLI, `cargo build --release --bin
tinyformer` (tokenizers are trained and applied by `tinyformer tokenizer ...`, see train/data.py). On a
shared machine run it with `nice -n 19`. It uses 2 threads (`--threads`), dates-encdec 1: on 2 cores shared with
other jobs, 2 threads ran about 7x slower than 1 (the threads wait for each other).

Writes models/<name>.safetensors (train/export.save_checkpoint: config + tokenizer metadata) and
models/<name>.json (the sidecar, see MODELS.md). Scratch files go to train/out/<name>/.

The forward pass is always train/reference.py's. The Shakespeare models train under CPU bf16 autocast (fp32
master weights and optimizer, about 2x faster on these CPUs); evaluation and export are in f32. One exception: while training shakespeare-moe, the MoE
feed-forward uses a vectorised forward (`moe_forward_train`). It computes the same function as the
reference when nothing is dropped, which capacity_factor 2.0 = num_experts / top_k guarantees; this is
checked against the reference at start-up. It also returns the router statistics for the
load-balancing loss. Evaluation and export use the reference forward.

Held-out loss convention (also used for the sidecar's eval_slice): the text is encoded as one sequence of
n ids. Windows of max_seq_len ids start every max_seq_len - 1 ids (consecutive windows share one id), so
every id after the first is predicted exactly once, from the ids before it inside its window.
loss_per_token = total nats / (n - 1), loss_per_char = total nats / characters of the text.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import types
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import data  # noqa: E402
import dates  # noqa: E402
import reference as R  # noqa: E402
from export import save_checkpoint  # noqa: E402

SHAKESPEARE_PROMPTS = [
    "ROMEO.\nBut soft, what light",
    "KING.\nWhat say you, my lord",
    "First Citizen.\nBefore we proceed any further, hear me speak.\n\n",
    "HAMLET.\nTo be, or not to be",
    "JULIET.\n",
]
SAMPLE_PROMPTS = [("KING.\n", 1), ("To be, or not to be", 2), ("ROMEO.\nO, she doth teach", 3)]

MODELS: Dict[str, Dict[str, Any]] = {
    "shakespeare-llama": {
        "task": "shakespeare",
        "tokenizer": "char_merges",
        "config": {"arch": "llama", "vocab_size": 512, "d_model": 192, "num_layers": 4, "num_heads": 6,
                   "num_kv_heads": 2, "multiple_of": 32, "norm_eps": 1e-5, "rope_theta": 10000.0,
                   "max_seq_len": 256},
        "steps": 1800, "batch": 12, "block": 256, "lr": 3e-3, "warmup": 100, "dtype": "f16", "autocast": "bf16",
    },
    "shakespeare-gpt": {
        "task": "shakespeare",
        "tokenizer": "byte_bpe",
        "config": {"arch": "decoder", "vocab_size": 512, "d_model": 192, "num_layers": 4, "num_heads": 6,
                   "d_ff": 768, "max_seq_len": 256},
        "steps": 1800, "batch": 12, "block": 256, "lr": 3e-3, "warmup": 100, "dtype": "f16", "autocast": "bf16",
    },
    "shakespeare-moe": {
        "task": "shakespeare",
        "tokenizer": "byte_bpe",
        "config": {"arch": "decoder", "vocab_size": 512, "d_model": 160, "num_layers": 4, "num_heads": 5,
                   "d_ff": 640, "max_seq_len": 256,
                   "moe": {"num_experts": 4, "top_k": 2, "expert_dim": 320, "capacity_factor": 2.0}},
        "steps": 1800, "batch": 12, "block": 256, "lr": 3e-3, "warmup": 100, "dtype": "f16", "autocast": "bf16",
        "aux_coef": 0.01,
    },
    "dates-encdec": {
        "task": "dates",
        "config": {"arch": "encoder_decoder", "src_vocab_size": len(dates.ITOS), "tgt_vocab_size": len(dates.ITOS),
                   "d_model": 128, "num_layers": 3, "num_heads": 4, "d_ff": 256, "max_seq_len": dates.MAX_SRC_LEN},
        "steps": 1400, "batch": 128, "lr": 2e-3, "warmup": 200, "dtype": "f32", "threads": 1,
    },
}

HARDWARE = "2 shared CPU cores (AMD EPYC, torch.set_num_threads(2), nice -n 19), no GPU"


def log(msg: str, fh=None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")
        fh.flush()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def make_optimizer(model: nn.Module, lr: float, wd: float = 0.1) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embedding" not in name and "tok_embeddings" not in name else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def init_weights(model: nn.Module, cfg: Dict[str, Any]) -> None:
    """GPT-2 style init: Linear N(0, 0.02), zero biases, residual output projections scaled by 1/sqrt(2L).
    Embeddings that are multiplied by sqrt(d_model) (decoder, encoder_decoder) get std d_model^-0.5, so the
    scaled embedding has unit variance like the positional encoding. LayerNorm/RMSNorm stay at 1/0."""
    d = cfg["d_model"]
    resid_std = 0.02 / math.sqrt(2 * cfg["num_layers"])
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            std = resid_std if name.endswith(("w_o", "W_o", "wo", "linear2", "w2", ".2")) else 0.02
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02 if cfg["arch"] == "llama" else d ** -0.5)


def round_params(model: nn.Module, dtype: str) -> None:
    """Round the parameters (not the buffers: loaders recompute the positional encoding) to the storage dtype."""
    if dtype == "f32":
        return
    t = {"f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(t).float())


TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------------
# MoE: vectorised training forward (same function as the reference when nothing is dropped) + aux loss
# ---------------------------------------------------------------------------------------------------------


def moe_forward_train(self: R.MoEFeedForward, x: torch.Tensor):
    b, t, d = x.shape
    n = b * t
    if self.capacity(n) < n:
        raise RuntimeError("moe_forward_train needs capacity_factor >= num_experts / top_k (no drops)")
    flat = x.reshape(n, d)
    probs = F.softmax(self.router(flat), dim=-1)
    sorted_p, sorted_i = torch.sort(probs, dim=-1, descending=True, stable=True)
    top_p, top_i = sorted_p[:, : self.top_k], sorted_i[:, : self.top_k]
    weights = top_p / top_p.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(flat)
    for e, expert in enumerate(self.experts):
        sel = top_i == e  # [N, k]
        tokens = sel.any(dim=-1).nonzero().squeeze(-1)
        if tokens.numel() == 0:
            continue
        w = (weights * sel.float()).sum(dim=-1)[tokens]
        out = out.index_add(0, tokens, expert(flat[tokens]) * w[:, None])
    # Switch-style load balancing: E * sum_e f_e * P_e, f_e = share of the top-k assignments to e,
    # P_e = mean router probability of e. Equals 1 when perfectly balanced.
    e = self.num_experts
    f = torch.bincount(top_i.reshape(-1), minlength=e).float() / (n * self.top_k)
    p = probs.mean(dim=0)
    self._aux = e * (f.detach() * p).sum()
    self._load = f.detach()
    return out.view(b, t, d), {"experts": top_i.view(b, t, -1)}


def set_moe_train_forward(model: nn.Module, on: bool) -> List[R.MoEFeedForward]:
    mods = [m for m in model.modules() if isinstance(m, R.MoEFeedForward)]
    for m in mods:
        if on:
            m.forward = types.MethodType(moe_forward_train, m)
        elif "forward" in m.__dict__:
            del m.forward
    return mods


def check_moe_train_forward(model: nn.Module) -> float:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config["vocab_size"], (2, 40), generator=g)
    with torch.no_grad():
        set_moe_train_forward(model, False)
        ref = model(ids)["logits"]
        set_moe_train_forward(model, True)
        fast = model(ids)["logits"]
        set_moe_train_forward(model, False)
    err = (ref - fast).abs().max().item()
    if err > 1e-4:
        raise RuntimeError(f"vectorised MoE forward differs from the reference by {err}")
    return err


# ---------------------------------------------------------------------------------------------------------
# Shakespeare
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def eval_ids(model: nn.Module, ids: np.ndarray, window: int, batch: int = 16) -> Tuple[float, int]:
    """Total nats and number of predicted ids over `ids` (windows of `window`, stride window - 1)."""
    n = len(ids)
    stride = window - 1
    starts = list(range(0, max(1, n - 1), stride))
    full = [s for s in starts if s + window <= n]
    rest = [s for s in starts if s + window > n]
    total, count = 0.0, 0
    t = torch.from_numpy(ids.astype(np.int64))
    for i in range(0, len(full), batch):
        chunk = torch.stack([t[s : s + window] for s in full[i : i + batch]])
        logits = model(chunk[:, :-1])["logits"]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).double(), chunk[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += chunk[:, 1:].numel()
    for s in rest:
        chunk = t[s:][None]
        if chunk.size(1) < 2:
            continue
        logits = model(chunk[:, :-1])["logits"]
        total += F.cross_entropy(logits[0].double(), chunk[0, 1:], reduction="sum").item()
        count += chunk.size(1) - 1
    return total, count


@torch.no_grad()
def expert_load(model: nn.Module, ids: np.ndarray, window: int, batch: int = 16) -> Dict[str, Any]:
    """Share of the top-k assignments and of the top-1 choices per expert, per layer, on `ids` (reference forward)."""
    cfg = model.config
    e, k = cfg["moe"]["num_experts"], cfg["moe"]["top_k"]
    layers = cfg["num_layers"]
    assign = torch.zeros(layers, e)
    top1 = torch.zeros(layers, e)
    dropped = 0
    stride = window - 1
    t = torch.from_numpy(ids.astype(np.int64))
    starts = [s for s in range(0, len(ids) - window + 1, stride)]
    for i in range(0, len(starts), batch):
        chunk = torch.stack([t[s : s + window - 1] for s in starts[i : i + batch]])
        out = model(chunk)
        for li, rec in enumerate(out["moe"]):
            ex = rec["experts"].reshape(-1, k)
            kept = rec["kept"].reshape(-1, k)
            dropped += int((~kept).sum())
            assign[li] += torch.bincount(ex.reshape(-1), minlength=e).float()
            top1[li] += torch.bincount(ex[:, 0], minlength=e).float()
    assign = assign / assign.sum(dim=1, keepdim=True)
    top1 = top1 / top1.sum(dim=1, keepdim=True)
    r = lambda m: [[round(float(v), 4) for v in row] for row in m]  # noqa: E731
    return {"assignment_share": r(assign), "top1_share": r(top1), "dropped_assignments": dropped,
            "tokens": len(starts) * (window - 1),
            "note": "per layer, share of the top-2 assignments (and of the first choices) each expert received "
                    "on the held-out text; 0.25 each is perfectly balanced"}


@torch.no_grad()
def sample(model: nn.Module, prompt: List[int], n: int, temperature: float, seed: int) -> List[int]:
    g = torch.Generator().manual_seed(seed)
    cache = [{} for _ in range(model.config["num_layers"])]
    ids = torch.tensor([prompt])
    out = model(ids, kv_cache=cache)
    res = list(prompt)
    for step in range(n):
        logits = out["logits"][0, -1] / temperature
        nxt = int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=g))
        res.append(nxt)
        if step < n - 1:
            out = model(torch.tensor([[nxt]]), kv_cache=out["kv_cache"])
    return res


def min_margin(steps: List[torch.Tensor]) -> float:
    m = float("inf")
    for s in steps:
        top2 = torch.topk(s[0], 2).values
        m = min(m, float(top2[0] - top2[1]))
    return m


def train_shakespeare(name: str, spec: Dict[str, Any], args) -> None:
    cfg = dict(spec["config"])
    out_dir = os.path.join(HERE, "out", name)
    os.makedirs(out_dir, exist_ok=True)
    fh = open(os.path.join(out_dir, "log.txt"), "a")
    log(f"== {name} ==", fh)
    train_txt, held_txt = data.write_split(os.path.join(HERE, "out", "shakespeare"))
    tok_path = os.path.join(out_dir, "tokenizer.json")
    st = data.train_tokenizer(spec["tokenizer"], cfg["vocab_size"], train_txt, tok_path)
    log(f"tokenizer {st}", fh)
    tok = json.load(open(tok_path))
    train_ids, tr_stats = data.encode_file(tok_path, train_txt, os.path.join(out_dir, "train.bin"))
    held_ids, he_stats = data.encode_file(tok_path, held_txt, os.path.join(out_dir, "heldout.bin"))
    log(f"train {tr_stats['tokens']} tokens ({tr_stats['chars_per_token']:.3f} chars/token), "
        f"held-out {he_stats['tokens']} tokens ({he_stats['chars_per_token']:.3f} chars/token)", fh)
    if int(train_ids.max()) >= cfg["vocab_size"]:
        raise SystemExit("tokenizer vocabulary exceeds the model's vocab_size")

    torch.manual_seed(args.seed)
    model = R.build_model(cfg)
    init_weights(model, cfg)
    params = count_params(model)
    log(f"config {json.dumps(cfg)}; {params:,} parameters", fh)
    is_moe = "moe" in cfg
    if is_moe:
        log(f"vectorised MoE forward matches the reference (max |diff| {check_moe_train_forward(model):.2e})", fh)

    steps = args.steps or spec["steps"]
    batch, block = spec["batch"], spec["block"]
    opt = make_optimizer(model, spec["lr"])
    g = torch.Generator().manual_seed(args.seed + 1)
    data_t = torch.from_numpy(train_ids)
    max_start = len(train_ids) - block - 1
    moes = set_moe_train_forward(model, True) if is_moe else []
    model.train()
    t0 = time.time()
    ema = None
    for step in range(steps):
        lr = lr_at(step, steps, spec["lr"], spec["warmup"])
        for grp in opt.param_groups:
            grp["lr"] = lr
        starts = torch.randint(0, max_start, (batch,), generator=g)
        x = torch.stack([data_t[s : s + block + 1] for s in starts.tolist()])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.get("autocast") == "bf16"):
            logits = model(x[:, :-1])["logits"]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        total = loss
        aux = None
        if is_moe:
            aux = torch.stack([m._aux for m in moes]).mean()
            total = loss + spec["aux_coef"] * aux
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            el = time.time() - t0
            extra = ""
            if is_moe:
                loads = torch.stack([m._load for m in moes])
                extra = f" aux {aux.item():.3f} load(min/max) {loads.min():.3f}/{loads.max():.3f}"
            log(f"step {step} loss {loss.item():.4f} ema {ema:.4f} ({ema * tr_stats['tokens'] / tr_stats['chars']:.3f}"
                f"/char) lr {lr:.2e} {el:.0f}s {(step + 1) / el:.2f} steps/s{extra}", fh)
        if args.eval_every and step and step % args.eval_every == 0:
            model.eval()
            set_moe_train_forward(model, False)
            nats, cnt = eval_ids(model, held_ids[:20000], cfg["max_seq_len"])
            log(f"  held-out (first 20k tokens) {nats / cnt:.4f}/token", fh)
            set_moe_train_forward(model, True) if is_moe else None
            model.train()
    seconds = time.time() - t0
    set_moe_train_forward(model, False)
    model.eval()
    log(f"trained {steps} steps in {seconds:.0f}s", fh)
    torch.save(model.state_dict(), os.path.join(out_dir, "final_f32.pt"))
    if args.no_export:
        return

    # Everything below is computed with the weights as stored.
    round_params(model, spec["dtype"])
    window = cfg["max_seq_len"]
    nats, cnt = eval_ids(model, held_ids, window)
    held = {"loss_per_token": nats / cnt, "chars_per_token": he_stats["chars_per_token"],
            "loss_per_char": nats / he_stats["chars"], "tokens": int(he_stats["tokens"]), "chars": he_stats["chars"],
            "predicted_tokens": cnt}
    log(f"held-out: {held}", fh)

    # eval slice: ~2,000 characters of held-out text, starting at a line start
    ht = data.heldout_text()
    a = ht.index("\n\n", 100_000) + 2
    b = ht.index("\n", a + 2000) + 1
    slice_text = ht[a:b]
    slice_ids = data.encode(tok_path, slice_text)
    s_nats, s_cnt = eval_ids(model, np.array(slice_ids), window)
    eval_slice = {"text": slice_text, "ids": slice_ids, "chars": len(slice_text), "predicted_tokens": s_cnt,
                  "total_nats": s_nats, "loss_per_token": s_nats / s_cnt, "loss_per_char": s_nats / len(slice_text),
                  "window": window, "stride": window - 1}

    # greedy from a prompt with a clear margin at every step
    chosen = None
    for p in SHAKESPEARE_PROMPTS:
        p_ids = data.encode(tok_path, p)
        ids, steps_logits = R.greedy_uncached(model, torch.tensor([p_ids]), 32)
        m = min_margin(steps_logits)
        cached, _ = R.greedy_cached(model, torch.tensor([p_ids]), 32)
        same = cached.tolist() == ids.tolist()
        log(f"greedy prompt {p!r}: min margin {m:.4f}, cached == uncached: {same}", fh)
        if chosen is None or (m > chosen[3] and chosen[3] < 0.05):
            chosen = (p, p_ids, ids[0].tolist(), m, same)
        if m >= 0.05 and same:
            break
    prompt, prompt_ids, greedy_ids, margin, same = chosen
    greedy_text = data.decode(tok_path, greedy_ids)

    samples = []
    for sp, seed in SAMPLE_PROMPTS:
        sp_ids = data.encode(tok_path, sp)
        s_ids = sample(model, sp_ids, 160, 0.8, seed)
        samples.append({"prompt": sp, "seed": seed, "temperature": 0.8, "new_tokens": 160,
                        "ids": s_ids, "text": data.decode(tok_path, s_ids)})
        log(f"sample {seed}: {samples[-1]['text']!r}", fh)

    sidecar = {
        "name": name, "params": params, "config": cfg, "tokenizer_kind": tok["kind"], "dtype": spec["dtype"].upper(),
        "prompt": prompt, "prompt_ids": prompt_ids, "max_new_tokens": 32, "greedy_ids": greedy_ids,
        "greedy_text": greedy_text, "min_greedy_margin": margin, "greedy_cached_equals_uncached": same,
        "eval_slice": eval_slice, "heldout": held, "samples": samples,
    }
    if is_moe:
        sidecar["expert_load"] = expert_load(model, held_ids, window)
        log(f"expert load {sidecar['expert_load']}", fh)
    sidecar["train"] = {"steps": steps, "seconds": round(seconds, 1), "hardware": HARDWARE,
                        "command": f"nice -n 19 python train/train.py --model {name}",
                        "batch": batch, "block": block, "lr": spec["lr"], "warmup": spec["warmup"],
                        "optimizer": "AdamW(betas=(0.9, 0.95), weight_decay=0.1 on matrices), cosine to 10%, clip 1.0",
                        "autocast": spec.get("autocast", "none"),
                        "seed": args.seed, "aux_coef": spec.get("aux_coef"),
                        "torch": torch.__version__, "python": platform.python_version()}
    export(model, cfg, tok, spec["dtype"], name, sidecar, fh)


MODELS_DIR = os.path.join(ROOT, "models")


def export(model, cfg, tok, dtype, name, sidecar, fh) -> None:
    os.makedirs(MODELS_DIR, exist_ok=True)
    path = os.path.join(MODELS_DIR, f"{name}.safetensors")
    # the date model declares its output form: the core decodes only valid ISO dates (src/model/constraint.rs)
    extra = {"output_constraint": "iso_date"} if cfg.get("arch") == "encoder_decoder" else None
    save_checkpoint(model, cfg, path, tokenizer=tok, dtype=TORCH_DTYPES[dtype], extra_metadata=extra)
    with open(os.path.join(MODELS_DIR, f"{name}.json"), "w") as f:
        json.dump(sidecar, f, indent=1, ensure_ascii=False)
        f.write("\n")
    log(f"wrote {path} ({os.path.getsize(path):,} bytes) and its sidecar", fh)
    if os.path.abspath(MODELS_DIR) != os.path.join(ROOT, "models"):
        return
    with open(os.path.join(HERE, "PROGRESS.md"), "a") as f:
        h = sidecar.get("heldout")
        summary = (f"held-out {h['loss_per_token']:.4f} nats/token, {h['loss_per_char']:.4f} nats/char" if h
                   else f"test exact match {sidecar['test_exact_match']:.4f}")
        f.write(f"- {time.strftime('%Y-%m-%d %H:%M')} {name}: exported models/{name}.safetensors "
                f"({os.path.getsize(path):,} bytes, {sidecar['params']:,} params, {dtype}); {summary}; "
                f"{sidecar['train']['steps']} steps in {sidecar['train']['seconds']:.0f}s\n")


# ---------------------------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------------------------


def pad_batch(seqs: List[List[int]]) -> torch.Tensor:
    m = max(len(s) for s in seqs)
    return torch.tensor([s + [dates.PAD] * (m - len(s)) for s in seqs])


@torch.no_grad()
def greedy_batch(model: R.EncoderDecoder, src: torch.Tensor, steps: int = 11) -> torch.Tensor:
    enc, _ = model.encode(src)
    tgt = torch.full((src.size(0), 1), dates.BOS, dtype=torch.long)
    for _ in range(steps):
        dec, _, _ = model.decode(tgt, enc, src)
        nxt = model.final_layer(dec)[:, -1].argmax(-1, keepdim=True)
        tgt = torch.cat([tgt, nxt], 1)
    return tgt


@torch.no_grad()
def translate(model, inputs: List[str], batch: int = 250) -> List[str]:
    """Greedy translations (batched, padded); an output without EOS within 11 steps gets a trailing '?'."""
    preds = []
    for i in range(0, len(inputs), batch):
        chunk = inputs[i : i + batch]
        out = greedy_batch(model, pad_batch([dates.encode_src(s) for s in chunk]))
        for row in out.tolist():
            ids = row[: row.index(dates.EOS) + 1] if dates.EOS in row else row
            preds.append(dates.decode(ids) + ("" if dates.EOS in row else "?"))
    return preds


def century(iso: str) -> str:
    return iso[:2] + "xx"


def score(test: List[Dict[str, Any]], preds: List[str]) -> Dict[str, Any]:
    """Exact match overall, per format and per century (of the expected date)."""
    per_fmt: Dict[str, List[int]] = {}
    per_cent: Dict[str, List[int]] = {}
    wrong = []
    for t, p in zip(test, preds):
        ok = p == t["expected"]
        for key, d in ((t["format"], per_fmt), (century(t["expected"]), per_cent)):
            d.setdefault(key, [0, 0])
            d[key][0] += ok
            d[key][1] += 1
        if not ok:
            wrong.append([t["input"], t["expected"], p])
    return {"exact_match": sum(p == t["expected"] for t, p in zip(test, preds)) / len(test), "size": len(test),
            "per_format": {k: {"ok": v[0], "n": v[1]} for k, v in per_fmt.items()},
            "per_century": {k: {"ok": v[0], "n": v[1]} for k, v in sorted(per_cent.items())},
            "wrong": wrong}


@torch.no_grad()
def validity(model, n: int, seed: int, impossible: int) -> Dict[str, Any]:
    """How often greedy output is a real calendar day: on `n` random inputs over the whole range (every format,
    days anywhere, including training days), and on `impossible` inputs that name no real day."""
    rng = __import__("random").Random(seed)
    pairs = [dates.random_pair(rng, set()) for _ in range(n)]
    preds = translate(model, [s for s, _, _ in pairs])
    bad = [[s, p] for (s, _, _), p in zip(pairs, preds) if not dates.is_valid_iso(p)]
    exact = sum(p == t for (_, t, _), p in zip(pairs, preds))
    imp = dates.impossible_inputs(impossible, seed + 1)
    ipreds = translate(model, imp)
    ibad = [[s, p] for s, p in zip(imp, ipreds) if not dates.is_valid_iso(p)]
    return {"random_inputs": n, "valid": n - len(bad), "exact": exact, "invalid_examples": bad[:20],
            "impossible_inputs": impossible, "impossible_valid": impossible - len(ibad),
            "impossible_invalid_examples": ibad[:10], "impossible_valid_examples": [[s, p] for s, p in
                                                                                  zip(imp[:8], ipreds[:8])],
            "seed": seed}


# ISO positions of each part's digits; decoder position j reads ISO char j-1 (BOS at 0) and predicts ISO char j.
ISO_PARTS = {"year": [0, 1, 2, 3], "month": [5, 6], "day": [8, 9]}


@torch.no_grad()
def cross_alignment(model, test: List[Dict[str, Any]]) -> Dict[str, Any]:
    """For every layer, the cross-attention averaged over heads, teacher-forced on the ISO answer: at the step
    that predicts each digit of the year (month, day), is the argmax source position inside the input's year
    (month, day) field? Reported per digit and per input (all digits of the part inside), for every layer.
    The year digits counted are those the input spells: all 4, or the last 2 of a two-digit year. The
    criterion layer has the best year share (ties: the best month + day shares)."""
    L = model.config["num_layers"]
    digit_hits = [{p: 0 for p in ISO_PARTS} for _ in range(L)]
    input_hits = [{p: 0 for p in ISO_PARTS} for _ in range(L)]
    per_fmt_year = [dict() for _ in range(L)]
    digit_total = {p: 0 for p in ISO_PARTS}
    for t in test:
        src = torch.tensor([dates.encode_src(t["input"])])
        tgt = torch.tensor([dates.encode_tgt(t["expected"])[:-1]])
        out = model(src, tgt)
        cross = [a["weights"][0] for a in out["attention"] if a["kind"] == "cross"]
        for li, w in enumerate(cross):
            am = w.mean(0).argmax(-1).tolist()
            for part, js in ISO_PARTS.items():
                a, b = t["spans"][part]
                if part == "year" and b - a == 2:
                    js = js[2:]  # a two-digit year spells only the last two digits; the century has no source
                inside = [a <= am[j] < b for j in js]
                digit_hits[li][part] += sum(inside)
                if li == 0:
                    digit_total[part] += len(js)
                input_hits[li][part] += all(inside)
                if part == "year":
                    c = per_fmt_year[li].setdefault(t["format"], [0, 0])
                    c[0] += all(inside)
                    c[1] += 1
    n = len(test)
    res = {"inputs": n, "layers": []}
    for li in range(L):
        res["layers"].append({
            "layer": li,
            "digits_in_field": {p: round(digit_hits[li][p] / digit_total[p], 4) for p in ISO_PARTS},
            "inputs_all_digits_in_field": {p: round(input_hits[li][p] / n, 4) for p in ISO_PARTS},
            "year_per_format": {k: round(v[0] / v[1], 3) for k, v in per_fmt_year[li].items()},
        })
    best = max(range(L), key=lambda li: (res["layers"][li]["inputs_all_digits_in_field"]["year"],
                                         sum(res["layers"][li]["inputs_all_digits_in_field"].values())))
    res["criterion_layer"] = best
    return res


@torch.no_grad()
def alignment_examples(model, pairs) -> List[Dict[str, Any]]:
    """For a few inputs: for every output character, the input character at the argmax of the cross-attention
    (averaged over heads) of every layer, at the decoder step that predicts it."""
    res = []
    for s, t in pairs:
        src = torch.tensor([dates.encode_src(s)])
        tgt = torch.tensor([dates.encode_tgt(t)[:-1]])
        out = model(src, tgt)
        cross = [a["weights"][0] for a in out["attention"] if a["kind"] == "cross"]
        per_layer = []
        for li, w in enumerate(cross):
            am = w.mean(0).argmax(-1).tolist()
            per_layer.append(" ".join(f"{t[j]}<-{s[k]!s}@{k}" for j, k in enumerate(am) if j < len(t)))
        res.append({"input": s, "output": t, "argmax_per_layer": per_layer})
    return res


def one_example(model, s: str, expected: str) -> Dict[str, Any]:
    """Checked one at a time with the reference greedy (batch 1, no padding), as the Rust test runs it."""
    src_ids = dates.encode_src(s)
    ids, _ = model.greedy(torch.tensor([src_ids]), dates.TGT_LEN)
    ids = ids[0].tolist()
    return {"input": s, "expected": expected, "src_ids": src_ids, "greedy_ids": ids,
            "ok": dates.decode(ids) == expected and ids[-1] == dates.EOS}


def train_dates(name: str, spec: Dict[str, Any], args) -> None:
    import random as _r

    cfg = dict(spec["config"])
    out_dir = os.path.join(HERE, "out", name)
    os.makedirs(out_dir, exist_ok=True)
    fh = open(os.path.join(out_dir, "log.txt"), "a")
    log(f"== {name} ==", fh)
    test = dates.test_set()
    held = dates.held_out_days()
    log(f"{len(test)} test pairs ({len(dates.FORMATS)} formats), {len(held)} held-out days, vocab {len(dates.ITOS)}", fh)
    torch.manual_seed(args.seed)
    model = R.build_model(cfg)
    init_weights(model, cfg)
    params = count_params(model)
    log(f"config {json.dumps(cfg)}; {params:,} parameters", fh)
    steps = args.steps or spec["steps"]
    batch = spec["batch"]
    opt = make_optimizer(model, spec["lr"], wd=0.01)
    rng = _r.Random(dates.TRAIN_SEED)  # training pairs are drawn on the fly from the non-held-out days
    vrng = _r.Random(dates.TRAIN_SEED + 1)
    val = [dates.random_pair(vrng, held) for _ in range(1000)]  # validation: training days, never the test's
    seen_strings, seen_isos = set(), set()
    model.train()
    t0 = time.time()
    ema = None
    for step in range(steps):
        lr = lr_at(step, steps, spec["lr"], spec["warmup"], floor=0.05)
        for grp in opt.param_groups:
            grp["lr"] = lr
        pairs = [dates.random_pair(rng, held) for _ in range(batch)]
        seen_strings.update(s for s, _, _ in pairs)
        seen_isos.update(t for _, t, _ in pairs)
        src = pad_batch([dates.encode_src(s) for s, _, _ in pairs])
        tgt = torch.tensor([dates.encode_tgt(t) for _, t, _ in pairs])
        logits = model(src, tgt[:, :-1])["logits"]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1), ignore_index=dates.PAD)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            el = time.time() - t0
            log(f"step {step} loss {loss.item():.4f} ema {ema:.4f} lr {lr:.2e} {el:.0f}s {(step + 1) / el:.2f} steps/s", fh)
        if args.eval_every and step and step % args.eval_every == 0:
            model.eval()
            vp = translate(model, [s for s, _, _ in val])
            log(f"  validation exact match (1000 training-day pairs) {sum(p == t for (_, t, _), p in zip(val, vp)) / 1000:.4f}", fh)
            model.train()
    seconds = time.time() - t0
    model.eval()
    dates.check_split(seen_strings, seen_isos, test)
    log(f"split checked: {len(seen_strings):,} distinct training strings on {len(seen_isos):,} days; none shared "
        "with the test set", fh)
    torch.save(model.state_dict(), os.path.join(out_dir, "final_f32.pt"))
    round_params(model, spec["dtype"])
    res = score(test, translate(model, [t["input"] for t in test]))
    log(f"trained {steps} steps in {seconds:.0f}s; test exact match {res['exact_match']:.4f} "
        f"({len(res['wrong'])} wrong)", fh)
    for w in res["wrong"][:30]:
        log(f"  wrong: {w}", fh)
    val_ok = validity(model, args.validity_n, seed=99, impossible=max(100, args.validity_n // 10))
    log(f"validity: {val_ok['valid']}/{val_ok['random_inputs']} valid, {val_ok['exact']} exact; impossible "
        f"inputs {val_ok['impossible_valid']}/{val_ok['impossible_inputs']} valid; {val_ok['invalid_examples'][:5]}", fh)
    align = cross_alignment(model, test)
    log(f"cross-attention alignment {json.dumps(align['layers'][align['criterion_layer']]['inputs_all_digits_in_field'])} "
        f"(layer {align['criterion_layer']})", fh)
    if args.no_export:
        return

    # One example per format (the first test pair of that format that greedy translates exactly, checked one
    # at a time with the reference greedy) and the hand-written EXTRA_EXAMPLES, whatever their result.
    examples, skipped = [], 0
    for fmt in dates.FORMATS:
        for t in [t for t in test if t["format"] == fmt]:
            e = one_example(model, t["input"], t["expected"])
            if e["ok"]:
                examples.append(e)
                break
            skipped += 1
    extra = [one_example(model, s, t) for s, t in dates.EXTRA_EXAMPLES]
    for e in extra:
        log(f"  extra {e['input']!r} -> {dates.decode(e['greedy_ids'])} ({'ok' if e['ok'] else 'WRONG'})", fh)
    examples = extra + examples
    # the subset the Rust test re-measures the alignment criterion on: 6 test pairs of every format
    check = [t for t in test[: 6 * len(dates.FORMATS)]]
    li = align["criterion_layer"]
    check_align = cross_alignment(model, check)
    align_check = {
        "layer": li,
        "pytorch_inputs_all_year_digits_in_field": check_align["layers"][li]["inputs_all_digits_in_field"]["year"],
        "pytorch_inputs_all_digits_in_field": check_align["layers"][li]["inputs_all_digits_in_field"],
        "items": [{"input": t["input"], "src_ids": dates.encode_src(t["input"]),
                   "tgt_ids": dates.encode_tgt(t["expected"])[:-1], "spans": t["spans"]} for t in check],
    }
    show = [(e["input"], e["expected"]) for e in extra[:6]]
    align_ex = alignment_examples(model, show)
    for a in align_ex:
        log(f"  {a}", fh)

    first = examples[0]
    sidecar = {
        "name": name, "params": params, "config": cfg, "tokenizer_kind": "chars", "dtype": spec["dtype"].upper(),
        "tokenizer": dates.tokenizer_json(),
        "prompt": first["input"], "prompt_ids": first["src_ids"], "greedy_ids": first["greedy_ids"],
        "greedy_text": dates.decode(first["greedy_ids"]),
        "test_exact_match": res["exact_match"], "test_size": len(test), "test_wrong": res["wrong"],
        "test_per_format": res["per_format"], "test_per_century": res["per_century"],
        "validity": val_ok,
        "examples": examples, "examples_skipped": skipped,
        "cross_attention": {"alignment": align, "check": align_check, "examples": align_ex},
        "formats": dates.FORMATS,
        "train": {"steps": steps, "seconds": round(seconds, 1), "hardware": HARDWARE_DATES,
                  "command": f"nice -n 5 python train/train.py --model {name}", "batch": batch,
                  "lr": spec["lr"], "warmup": spec["warmup"], "seed": args.seed,
                  "optimizer": "AdamW(betas=(0.9, 0.95), weight_decay=0.01 on matrices), cosine to 5%, clip 1.0",
                  "train_pairs": steps * batch, "distinct_train_strings": len(seen_strings),
                  "distinct_train_days": len(seen_isos), "threads": args.threads, "torch": torch.__version__},
    }
    export(model, cfg, dates.tokenizer_json(), spec["dtype"], name, sidecar, fh)


HARDWARE_DATES = "2 CPU cores shared with 4 other engineers' builds and browser tests (AMD EPYC, torch.set_num_threads(1), nice -n 5), no GPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--steps", type=int, help="override the number of training steps (for timing runs)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, help="torch threads (default 2; dates-encdec 1, see MODELS.md)")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--validity-n", type=int, default=20_000, help="dates: random inputs for the validity count")
    ap.add_argument("--models-dir", default=MODELS_DIR, help="where to write the checkpoint and sidecar")
    args = ap.parse_args()
    globals()["MODELS_DIR"] = os.path.abspath(args.models_dir)
    spec = MODELS[args.model]
    args.threads = args.threads or spec.get("threads", 2)
    torch.set_num_threads(args.threads)
    if spec["task"] == "dates":
        train_dates(args.model, spec, args)
    else:
        train_shakespeare(args.model, spec, args)


if __name__ == "__main__":
    main()
