"""Generate the training fixtures in tests/fixtures/train/ (deterministic).

    python train/train_fixtures.py            # write the fixtures, then check them
    python train/train_fixtures.py --check    # only check the files already there

For every config below: a seeded init (``init_train``), ten batches drawn from a seeded sparse Markov chain
(decoder-only) or a seeded copy-reversed task with padded rows (encoder-decoder), and the truth computed by
train/train_reference.py with the model in float64 (the float32 init loaded, then ``.double()``):

* ``<name>.init.safetensors``   the float32 initial weights, in the checkpoint format of train/export.py;
* ``<name>.batches.json``       the engine's ``--batches`` file, one entry per step;
* ``<name>.expect.safetensors`` ``grad.<param>`` (step 1's gradient, before clipping), ``final.<param>``
  (after the 10 AdamW steps), float32, and the per-step history in the metadata.

A candidate seed is rejected, and the next one tried, when a decision the float32 engine must take the same
way sits near a tie: an element whose gradient stays about as small as its float32 rounding error (AdamW's
m_hat / (sqrt(v_hat) + eps) then turns that error into a sizeable part of a step), caught by training the
same 10 steps in float32 (twice where the objective allows: as given and with each batch's rows reversed,
for a second set of rounding errors) and asking every final parameter (but the key biases, whose gradient is 0
mathematically) to land within F32_FINAL_ABS of the float64 truth; a MoE top-k boundary (the k-th vs
(k+1)-th router probability closer than ROUTER_MARGIN at any step); a MoE fixture whose step-1 batch drops no
assignment in some layer or leaves a parameter without gradient; a step's gradient norm within CLIP_MARGIN
(relative) of the clip threshold. The clip threshold is chosen, among
candidate quantiles of the unclipped run's norms, so that some steps clip and others don't.

The check (``--check``, also run after writing) reloads every init + batches, recomputes step 1 in float32
and float64, and also trains all 10 steps in float32, printing how far float32 lands from the float64 truth
(the engine's tolerances can be read off it), and the MoE drops per layer per step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from export import load_checkpoint, save_checkpoint  # noqa: E402
from reference import BOS_ID, EOS_ID, PAD_ID, RMSNorm, build_model  # noqa: E402
from train_reference import batch_tensors, objective, train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "train")

STEPS = 10
BATCH = 3
ROUTER_MARGIN = 1e-4
CLIP_MARGIN = 0.02
F32_FINAL_ABS = 1e-4
MAX_TRIES = 200
CLIP_QUANTILES = (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8)

# init (``init_train``): embeddings and linear weights N(0, INIT_STD), biases N(0, BIAS_STD), norm weights
# 1 + N(0, NORM_STD), LayerNorm biases N(0, BIAS_STD)
INIT_STD = 0.1
BIAS_STD = 0.02
NORM_STD = 0.1

HYPER_BASE: Dict[str, Any] = {
    "steps": STEPS,
    "lr_max": 1e-2,
    "min_lr": 1e-3,
    "warmup": 3,
    "total": STEPS,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "decay": "weight_decay on every parameter with 2 or more dims, 0 on the rest",
    "clip_formula": "grads *= min(1, clip / (norm + 1e-6)), norm the global L2 norm of all grads",
    "lr_formula": "s <= warmup: lr_max * s / warmup; else min_lr + 0.5 * (lr_max - min_lr) * "
                  "(1 + cos(pi * (s - warmup) / max(1, total - warmup))), s counted from 1",
    "init": {"linear_and_embedding_std": INIT_STD, "bias_std": BIAS_STD, "norm_weight": f"1 + N(0, {NORM_STD})"},
}

FIXTURES: List[Dict[str, Any]] = [
    {
        "name": "gpt_sin",
        "seed": 100,
        "config": {"arch": "decoder", "vocab_size": 32, "d_model": 32, "num_layers": 2, "num_heads": 4,
                   "d_ff": 64, "max_seq_len": 12},
        "seq_len": 10,
        "aux_loss_weight": 0.0,
    },
    {
        "name": "gpt2",
        "seed": 200,
        "config": {"arch": "decoder", "vocab_size": 36, "d_model": 32, "num_layers": 2, "num_heads": 4,
                   "d_ff": 64, "max_seq_len": 12, "positions": "learned", "activation": "gelu_tanh",
                   "tie_embeddings": True, "norm_eps": 1e-5},
        "seq_len": 12,
        "aux_loss_weight": 0.0,
    },
    {
        "name": "llama",
        "seed": 300,
        "config": {"arch": "llama", "vocab_size": 40, "d_model": 32, "num_layers": 2, "num_heads": 4,
                   "num_kv_heads": 2, "multiple_of": 16, "norm_eps": 1e-5, "rope_theta": 10000.0,
                   "max_seq_len": 12},
        "seq_len": 10,
        "aux_loss_weight": 0.0,
    },
    {
        "name": "moe",
        "seed": 400,
        "config": {"arch": "decoder", "vocab_size": 32, "d_model": 32, "num_layers": 2, "num_heads": 4,
                   "d_ff": 24, "max_seq_len": 12,
                   "moe": {"num_experts": 4, "top_k": 2, "expert_dim": 24, "capacity_factor": 1.0}},
        "seq_len": 10,
        "aux_loss_weight": 0.01,
    },
    {
        "name": "attn_only",
        "seed": 500,
        "config": {"arch": "decoder", "vocab_size": 28, "d_model": 32, "num_layers": 2, "num_heads": 4,
                   "d_ff": 64, "max_seq_len": 12, "attention_only": True},
        "seq_len": 9,
        "aux_loss_weight": 0.0,
    },
    {
        "name": "encdec",
        "seed": 600,
        "config": {"arch": "encoder_decoder", "src_vocab_size": 28, "tgt_vocab_size": 30, "d_model": 24,
                   "num_layers": 2, "num_heads": 4, "d_ff": 32, "max_seq_len": 12},
        "src_len": 8,  # padded width of src; tgt_in / tgt_out are src_len + 1 wide
        "aux_loss_weight": 0.0,
    },
]


class Reject(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------
# init and data


@torch.no_grad()
def init_train(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, INIT_STD)
        elif isinstance(m, nn.Linear):
            m.weight.normal_(0.0, INIT_STD)
            if m.bias is not None:
                m.bias.normal_(0.0, BIAS_STD)
        elif isinstance(m, nn.LayerNorm):
            m.weight.copy_(1.0 + NORM_STD * torch.randn_like(m.weight))
            m.bias.normal_(0.0, BIAS_STD)
        elif isinstance(m, RMSNorm):
            m.weight.copy_(1.0 + NORM_STD * torch.randn_like(m.weight))


def markov_batches(rng: np.random.Generator, vocab: int, seq_len: int) -> List[Dict[str, Any]]:
    """A sparse random bigram chain (each token has 3 likely successors, 80% of the mass), so the loss has
    something to learn; inputs are seq[:-1] and targets seq[1:] of chains of seq_len + 1 tokens."""
    succ = np.stack([rng.choice(vocab, size=3, replace=False) for _ in range(vocab)])
    steps = []
    for _ in range(STEPS):
        rows = []
        for _ in range(BATCH):
            tok = int(rng.integers(vocab))
            seq = [tok]
            for _ in range(seq_len):
                tok = int(succ[tok, rng.integers(3)]) if rng.random() < 0.8 else int(rng.integers(vocab))
                seq.append(tok)
            rows.append(seq)
        steps.append({"inputs": [r[:-1] for r in rows], "targets": [r[1:] for r in rows]})
    return steps


def encdec_batches(rng: np.random.Generator, src_vocab: int, tgt_vocab: int, src_len: int) -> List[Dict[str, Any]]:
    """src: BATCH rows of distinct true lengths (one of them src_len, unpadded), ids 3..src_vocab-1, PAD
    after; the target is the reversed src mapped into 3..tgt_vocab-1; tgt_in = BOS + target, tgt_out =
    target + EOS, both padded to src_len + 1."""
    steps = []
    for _ in range(STEPS):
        lengths = [src_len] + sorted(rng.choice(np.arange(3, src_len), size=BATCH - 1, replace=False).tolist(),
                                     reverse=True)
        lengths = [lengths[i] for i in rng.permutation(BATCH)]
        src, tgt_in, tgt_out = [], [], []
        for n in lengths:
            s = [int(x) for x in rng.integers(3, src_vocab, size=n)]
            t = [3 + (x * 7) % (tgt_vocab - 3) for x in reversed(s)]
            src.append(s + [PAD_ID] * (src_len - n))
            tgt_in.append([BOS_ID] + t + [PAD_ID] * (src_len - n))
            tgt_out.append(t + [EOS_ID] + [PAD_ID] * (src_len - n))
        steps.append({"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out})
    return steps


def make_batches(spec: Dict[str, Any], seed: int) -> List[Dict[str, Any]]:
    rng = np.random.default_rng(seed)
    c = spec["config"]
    if c["arch"] == "encoder_decoder":
        return encdec_batches(rng, c["src_vocab_size"], c["tgt_vocab_size"], spec["src_len"])
    return markov_batches(rng, c["vocab_size"], spec["seq_len"])


# ----------------------------------------------------------------------------------------------------------


def load_model(path: str, dtype: torch.dtype) -> nn.Module:
    """The checkpoint's float32 weights in a fresh reference model, cast to dtype."""
    state, config, _ = load_checkpoint(path)
    model = build_model(config)
    model.load_state_dict(state, strict=True)
    if dtype == torch.float64:
        # .double() casts the floating tensors only: Llama's complex64 RoPE table stays as the seed computes
        # it (float32 angles, as the engine's table) and apply_rotary_emb widens it to complex128
        model.double()
    elif dtype != torch.float32:
        raise ValueError(f"unsupported dtype {dtype}")
    return model


def param_names(model: nn.Module) -> List[str]:
    return [n for n, _ in model.named_parameters()]


def run_truth(init_path: str, batches: List[Dict[str, Any]], hyper: Dict[str, Any],
              dtype: torch.dtype = torch.float64):
    model = load_model(init_path, dtype)
    tensors = [batch_tensors(model.config, b) for b in batches]
    hist = train(model, tensors, hyper)
    return model, hist


def try_seed(spec: Dict[str, Any], seed: int, init_path: str):
    """Writes the init for `seed`, picks the clip threshold, returns (batches, hyper, model, hist) or raises
    Reject."""
    torch.manual_seed(seed)
    model = build_model(spec["config"])
    init_train(model)
    save_checkpoint(model, spec["config"], init_path)
    batches = make_batches(spec, seed)
    hyper = dict(HYPER_BASE, aux_loss_weight=spec["aux_loss_weight"], clip=math.inf)
    _, free = run_truth(init_path, batches, hyper)
    norms = sorted(free["grad_norms"])
    for q in CLIP_QUANTILES:
        # a round threshold between two neighbouring norms of the unclipped run
        i = min(len(norms) - 2, int(q * (len(norms) - 1)))
        clip = float(f"{0.5 * (norms[i] + norms[i + 1]):.2g}")
        hyper = dict(HYPER_BASE, aux_loss_weight=spec["aux_loss_weight"], clip=clip)
        final, hist = run_truth(init_path, batches, hyper)
        near = min(abs(n - clip) / clip for n in hist["grad_norms"])
        if any(hist["clipped"]) and not all(hist["clipped"]) and near > CLIP_MARGIN:
            break
    else:
        raise Reject("no clip threshold clips some steps and not others, away from every norm")
    zero = set(zero_grad_params(final))
    want = dict(final.named_parameters())
    # float32 twice: as given, and (without MoE, whose capacity follows token order) with every batch's rows
    # reversed, the same objective summed in another order, so another set of rounding errors
    variants = [batches] if spec["config"].get("moe") else [batches, reversed_rows(batches)]
    for variant in variants:
        m32, _ = run_truth(init_path, variant, hyper, torch.float32)
        worst = max((float((p.detach().double() - want[n].detach()).abs().max()), n)
                    for n, p in m32.named_parameters() if n not in zero)
        if worst[0] > F32_FINAL_ABS:
            raise Reject(f"float32 training lands {worst[0]:.1e} away from the truth in {worst[1]}")
    if spec["config"].get("moe"):
        margin = min(min(m) for m in hist["router_margins"])
        if margin < ROUTER_MARGIN:
            raise Reject(f"router top-k margin {margin:.2e}")
        if min(hist["moe_dropped"][0]) == 0:
            raise Reject("step 1 drops no assignment in some layer")
        unused = [n for n, g in hist["first_grads"].items() if not bool(g.abs().sum() > 0)]
        if unused:
            raise Reject(f"step 1 leaves {unused[0]} without gradient")
    return batches, hyper, final, hist


def zero_grad_params(model: nn.Module) -> List[str]:
    """Parameters whose gradient is 0 mathematically: the key biases (adding one vector to every key adds the
    same q.b to a whole row of scores, which the softmax ignores). Their float64 gradient is rounding noise
    (< 1e-12) and their float32 one too (~1e-9), which AdamW's normalisation turns into steps of up to the lr."""
    suffixes = ("self_attn.w_k.bias", "self_attention.W_k.bias", "encoder_attention.W_k.bias")
    return [n for n in param_names(model) if n.endswith(suffixes)]


def reversed_rows(batches: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{k: v[::-1] for k, v in b.items()} for b in batches]


def save_sorted(tensors: Dict[str, torch.Tensor], meta: Dict[str, str], path: str) -> None:
    """safetensors.torch.save_file, with the metadata keys in sorted order: safetensors writes them in
    hash-map order, which changes from run to run, and the files should be the same bytes every time."""
    blob = save(tensors, metadata=meta)
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors pads it
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + blob[8 + n :])


def jdump(x) -> str:
    return json.dumps(x, separators=(",", ":"))


def write_fixture(spec: Dict[str, Any]) -> None:
    name = spec["name"]
    init_path = os.path.join(OUT_DIR, f"{name}.init.safetensors")
    for k in range(MAX_TRIES):
        seed = spec["seed"] + k
        try:
            batches, hyper, model, hist = try_seed(spec, seed, init_path)
            break
        except Reject as e:
            print(f"  {name}: seed {seed} rejected: {e}")
    else:
        raise SystemExit(f"{name}: no seed in {MAX_TRIES} tries")
    with open(os.path.join(OUT_DIR, f"{name}.batches.json"), "w") as f:
        f.write(jdump({"steps": batches}) + "\n")
    tensors = {}
    for n, p in model.named_parameters():
        tensors[f"grad.{n}"] = hist["first_grads"][n].float().contiguous()
        tensors[f"final.{n}"] = p.detach().float().contiguous()
    zero = zero_grad_params(model)
    for n in zero:
        assert float(hist["first_grads"][n].abs().max()) < 1e-12, (name, n)
    meta = {
        "name": name,
        "seed": str(seed),
        "config": jdump(spec["config"]),
        "losses": jdump(hist["losses"]),
        "ce_losses": jdump(hist["ce_losses"]),
        "grad_norms": jdump(hist["grad_norms"]),
        "lrs": jdump(hist["lrs"]),
        "clipped": jdump(hist["clipped"]),
        "hyper": jdump(hyper),
        "aux_loss_weight": jdump(spec["aux_loss_weight"]),
        "zero_grad_params": jdump(zero),
    }
    if spec["config"].get("moe"):
        meta["aux_losses"] = jdump(hist["aux_losses"])
        meta["moe_dropped"] = jdump(hist["moe_dropped"])
    save_sorted(tensors, meta, os.path.join(OUT_DIR, f"{name}.expect.safetensors"))
    print(f"  {name}: seed {seed}, clip {hyper['clip']}, clipped {hist['clipped']}")


# ----------------------------------------------------------------------------------------------------------
# check


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def tensor_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| over the tensor."""
    scale = float(want.abs().max())
    return float((got.double() - want.double()).abs().max()) / max(scale, 1e-30)


def check_fixture(spec: Dict[str, Any]) -> Dict[str, Any]:
    name = spec["name"]
    init_path = os.path.join(OUT_DIR, f"{name}.init.safetensors")
    with open(os.path.join(OUT_DIR, f"{name}.batches.json")) as f:
        batches = json.load(f)["steps"]
    with safe_open(os.path.join(OUT_DIR, f"{name}.expect.safetensors"), "pt") as f:
        meta = f.metadata()
        expect = {k: f.get_tensor(k) for k in f.keys()}
    hyper = json.loads(meta["hyper"])
    losses = json.loads(meta["losses"])
    zero = set(json.loads(meta["zero_grad_params"]))
    row: Dict[str, Any] = {"name": name}

    # step 1 in float64 again (the file's truth) and in float32
    m64 = load_model(init_path, torch.float64)
    b1 = batch_tensors(m64.config, batches[0])
    r64 = objective(m64, b1, hyper["aux_loss_weight"])
    m32 = load_model(init_path, torch.float32)
    r32 = objective(m32, b1, hyper["aux_loss_weight"])
    r32["objective"].backward()
    row["loss64"] = r64["objective"].item()
    row["loss1_rel"] = rel(r32["objective"].item(), losses[0])
    assert rel(row["loss64"], losses[0]) < 1e-12, (name, row["loss64"], losses[0])
    assert set(param_names(m32)) == {k[5:] for k in expect if k.startswith("grad.")}
    grads = {n: p.grad for n, p in m32.named_parameters()}
    row["grad1_err"] = max(tensor_err(g, expect[f"grad.{n}"]) for n, g in grads.items() if n not in zero)
    row["grad1_zero_abs"] = max([float(grads[n].abs().max()) for n in zero], default=0.0)
    if r64["moe"]:
        same = all(torch.equal(a["experts"], b["experts"]) and torch.equal(a["kept"], b["kept"])
                   for a, b in zip(r64["moe"], r32["moe"]))
        assert same, f"{name}: float32 routes step 1 differently"

    # all 10 steps in float32
    init = dict(load_model(init_path, torch.float32).named_parameters())
    m32, h32 = run_truth(init_path, batches, hyper, torch.float32)
    row["loss_max_rel"] = max(rel(a, b) for a, b in zip(h32["losses"], losses))
    row["norm_max_rel"] = max(rel(a, b) for a, b in zip(h32["grad_norms"], json.loads(meta["grad_norms"])))
    abs_errs, move_errs = {}, {}
    for n, p in m32.named_parameters():
        want = expect[f"final.{n}"].double()
        diff = p.detach().double() - want
        abs_errs[n] = float(diff.abs().max())
        move_errs[n] = float(diff.norm() / max(float((want - init[n].detach().double()).norm()), 1e-30))
    live = [n for n in abs_errs if n not in zero]
    row["final_abs"] = max(abs_errs[n] for n in live)
    row["final_abs_worst"] = max(live, key=lambda n: abs_errs[n])
    row["final_move"] = max(move_errs[n] for n in live)
    row["final_zero_abs"] = max([abs_errs[n] for n in zero], default=0.0)
    row["clipped_same"] = h32["clipped"] == json.loads(meta["clipped"])
    row["clipped"] = json.loads(meta["clipped"])
    row["losses"] = losses
    if "moe_dropped" in meta:
        row["moe_dropped"] = json.loads(meta["moe_dropped"])
        row["moe_same"] = h32["moe_dropped"] == row["moe_dropped"]
        row["router_margin_min"] = min(min(m) for m in h32["router_margins"])
    return row


def check_all() -> None:
    rows = [check_fixture(s) for s in FIXTURES]
    print()
    print(f"{'name':10} {'loss1 f64':>10} {'loss1 rel':>9} {'grad1 err':>9} {'losses rel':>10} {'norms rel':>9} "
          f"{'final abs':>9} {'final mv':>9} {'zero-grad abs':>13}  worst final tensor")
    for r in rows:
        print(f"{r['name']:10} {r['loss64']:10.6f} {r['loss1_rel']:9.1e} {r['grad1_err']:9.1e} "
              f"{r['loss_max_rel']:10.1e} {r['norm_max_rel']:9.1e} {r['final_abs']:9.1e} {r['final_move']:9.1e} "
              f"{r['final_zero_abs']:13.1e}  {r['final_abs_worst']}")
    print("""
float32 PyTorch against the float64 truth:
  loss1 rel   step 1's objective, relative
  grad1 err   step 1's gradients: max over tensors of max|f32 - f64| / max|f64| (zero-gradient tensors left out)
  losses rel, norms rel   the 10-step float32 run's objectives and gradient norms, max relative over the steps
  final abs   the 10-step float32 run's parameters: max |f32 - f64| over every element (zero-grad tensors left out)
  final mv    max over tensors of ||f32 - f64|| / ||f64 - init|| (the error relative to how far training moved it)
  zero-grad abs   the same max |f32 - f64| on the tensors whose gradient is 0 mathematically (key biases): noise""")
    for r in rows:
        print(f"{r['name']}: losses {[round(x, 4) for x in r['losses']]}")
        print(f"{r['name']}: clipped {r['clipped']} (float32 run agrees: {r['clipped_same']})")
        if "moe_dropped" in r:
            print(f"{r['name']}: dropped assignments per step [layer 0, layer 1]: {r['moe_dropped']} "
                  f"(float32 run agrees: {r['moe_same']}; smallest top-k margin in the f32 run "
                  f"{r['router_margin_min']:.2e})")
    for r in rows:
        assert r["loss1_rel"] < 1e-5, r
        assert r["clipped_same"], r
        assert r.get("moe_same", True), r
    print("\nsizes:")
    for f in sorted(os.listdir(OUT_DIR)):
        print(f"  {f:32} {os.path.getsize(os.path.join(OUT_DIR, f)):8d} bytes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the fixtures already written")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the same reductions, so the same bytes, on every machine with this torch
    if not args.check:
        os.makedirs(OUT_DIR, exist_ok=True)
        for spec in FIXTURES:
            write_fixture(spec)
    check_all()


if __name__ == "__main__":
    main()
