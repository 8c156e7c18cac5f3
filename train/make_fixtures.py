"""Generate the reference fixtures in tests/fixtures/models/ (deterministic).

    python train/make_fixtures.py

For every config below: random weights (spread wider than the seeds' init, so argmax decisions are not
near-ties), a `<name>.safetensors` checkpoint in the contract format (train/export.py) and a `<name>.json` with
the inputs, logits, attention maps, masks, MoE routing and a greedy continuation, all computed by
train/reference.py. If a candidate seed gives a near-tie (greedy top-1 vs top-2 logit margin < 1e-2, a MoE
router top-k boundary margin < 1e-3, an encoder-decoder greedy run that emits PAD), the next seed is tried.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from export import save_checkpoint  # noqa: E402
from reference import (  # noqa: E402
    EOS_ID,
    PAD_ID,
    RMSNorm,
    build_model,
    greedy_cached,
    greedy_uncached,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "models")

GREEDY_MARGIN = 1e-2
ROUTER_MARGIN = 1e-3
MAX_NEW_TOKENS = 12
MAX_TRIES = 500
MIN_DISTINCT = 5  # distinct tokens among the 12 greedy ones (decoder, llama)
MIN_DISTINCT_ENCDEC = 3  # distinct tokens among the generated ones (encoder_decoder, EOS included)

FIXTURES: List[Dict[str, Any]] = [
    {
        "name": "encdec_a",
        "seed": 1000,
        "config": {"arch": "encoder_decoder", "src_vocab_size": 32, "tgt_vocab_size": 32, "d_model": 16,
                   "num_layers": 2, "num_heads": 2, "d_ff": 32, "max_seq_len": 32},
        "inputs": {"src_ids": [5, 9, 3, 7, 0, 0], "tgt_ids": [1, 4, 8, 0]},
        "expect_eos": True,  # greedy stops at EOS
    },
    {
        "name": "encdec_b",
        "seed": 2000,
        "config": {"arch": "encoder_decoder", "src_vocab_size": 37, "tgt_vocab_size": 41, "d_model": 20,
                   "num_layers": 2, "num_heads": 4, "d_ff": 32, "max_seq_len": 24},
        "inputs": {"src_ids": [3, 11, 36, 7, 21, 9, 0, 0], "tgt_ids": [1, 6, 40, 13, 5, 0, 0]},
        "expect_eos": False,  # greedy runs to max_new_tokens
    },
    {
        "name": "decoder_a",
        "seed": 3000,
        "config": {"arch": "decoder", "vocab_size": 48, "d_model": 24, "num_layers": 2, "num_heads": 2,
                   "d_ff": 48, "max_seq_len": 32},
        "inputs": {"ids": [7, 3, 19, 42, 5, 0, 11, 30]},
        "prompt": [4, 17, 9, 23],
        "variants": ["f16", "bf16"],
    },
    {
        "name": "decoder_b",
        "seed": 4000,
        "config": {"arch": "decoder", "vocab_size": 53, "d_model": 16, "num_layers": 2, "num_heads": 4,
                   "d_ff": 40, "max_seq_len": 40},
        "inputs": {"ids": [2, 51, 8, 14, 33, 6, 27, 1, 45, 10]},
        "prompt": [12, 5, 40],
    },
    {
        "name": "moe_a",
        "seed": 5000,
        "config": {"arch": "decoder", "vocab_size": 40, "d_model": 16, "num_layers": 2, "num_heads": 2,
                   "d_ff": 32, "max_seq_len": 32,
                   "moe": {"num_experts": 4, "top_k": 2, "expert_dim": 24, "capacity_factor": 2.0}},
        "inputs": {"ids": [3, 17, 8, 25, 39, 12, 6, 30]},
        "prompt": [9, 21, 2, 14],
        "expect_drops": False,
    },
    {
        "name": "moe_b",
        "seed": 6000,
        "config": {"arch": "decoder", "vocab_size": 44, "d_model": 16, "num_layers": 2, "num_heads": 4,
                   "d_ff": 32, "max_seq_len": 32,
                   "moe": {"num_experts": 4, "top_k": 2, "expert_dim": 16, "capacity_factor": 1.0}},
        "inputs": {"ids": [5, 12, 33, 7, 41, 19, 2, 28, 11, 36, 4, 23, 15, 40, 9, 30, 1, 26, 18, 37]},
        "prompt": [6, 31, 13, 22, 3],
        "expect_drops": True,
    },
    {
        "name": "llama_gqa",
        "seed": 7000,
        "config": {"arch": "llama", "vocab_size": 48, "d_model": 24, "num_layers": 2, "num_heads": 4,
                   "num_kv_heads": 2, "multiple_of": 24, "norm_eps": 1e-6, "rope_theta": 10000.0,
                   "max_seq_len": 32},
        "inputs": {"ids": [10, 4, 33, 21, 7, 46, 2, 15, 29]},
        "prompt": [8, 40, 16, 3],
    },
    {
        "name": "llama_mqa",
        "seed": 8000,
        "config": {"arch": "llama", "vocab_size": 61, "d_model": 16, "num_layers": 2, "num_heads": 4,
                   "num_kv_heads": 1, "multiple_of": 16, "norm_eps": 1e-5, "rope_theta": 500000.0,
                   "max_seq_len": 32},
        "inputs": {"ids": [59, 3, 27, 14, 8, 41, 0]},
        "prompt": [33, 7, 52, 19, 1],
    },
]

VARIANT_DTYPES = {"f16": (torch.float16, "F16"), "bf16": (torch.bfloat16, "BF16")}


# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def init_wide(model: nn.Module) -> None:
    """Weights wider than the seeds' init so that decisions are far from ties."""
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, 0.5)
        elif isinstance(m, nn.Linear):
            m.weight.normal_(0.0, 0.35)
            if m.bias is not None:
                m.bias.normal_(0.0, 0.1)
        elif isinstance(m, nn.LayerNorm):
            m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
            m.bias.normal_(0.0, 0.1)
        elif isinstance(m, RMSNorm):
            m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))


@torch.no_grad()
def round_params(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy whose parameters are rounded to dtype and cast back to f32 (buffers stay exact f32: loaders
    recompute the positional encoding rather than read it)."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.copy_(p.to(dtype).float())
    return m


def f32(x: float) -> float:
    # shortest decimal that round-trips the float32 value
    return float(str(np.float32(x)))


def to_list(t: torch.Tensor):
    a = t.detach().cpu()
    if a.dtype == torch.bool:
        return a.tolist()
    if a.is_floating_point():
        return np.vectorize(f32, otypes=[object])(a.float().numpy()).tolist() if a.dim() else f32(a.item())
    return a.tolist()


def margin(logits_row: torch.Tensor) -> float:
    top = torch.topk(logits_row.float(), 2).values
    return float(top[0] - top[1])


class Reject(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def moe_router_margin(records) -> float:
    worst = math.inf
    for r in records:
        p = r["router_probs"].reshape(-1, r["router_probs"].size(-1))
        k = r["experts"].size(-1)
        s = torch.sort(p, dim=-1, descending=True).values
        worst = min(worst, float((s[:, k - 1] - s[:, k]).min()))
    return worst


@torch.no_grad()
def evaluate(spec: Dict[str, Any], model: nn.Module) -> Dict[str, Any]:
    """Runs forward + greedy; raises Reject if a decision is near a tie. Returns the JSON body (without name)."""
    cfg = spec["config"]
    body: Dict[str, Any] = {"config": cfg, "inputs": spec["inputs"]}
    if cfg["arch"] == "encoder_decoder":
        src = torch.tensor([spec["inputs"]["src_ids"]])
        tgt = torch.tensor([spec["inputs"]["tgt_ids"]])
        out = model(src, tgt)
        ids, steps = model.greedy(src, MAX_NEW_TOKENS)
        new = ids[0, 1:].tolist()
        if PAD_ID in new:
            raise Reject("greedy emitted PAD")
        if len(set(new)) < MIN_DISTINCT_ENCDEC:
            raise Reject(f"greedy too repetitive {new}")
        if "expect_eos" in spec and (new[-1] == EOS_ID) != spec["expect_eos"]:
            raise Reject("greedy EOS " + ("missing" if spec["expect_eos"] else "present"))
        body["greedy"] = {"src_ids": spec["inputs"]["src_ids"], "max_new_tokens": MAX_NEW_TOKENS,
                          "ids": ids[0].tolist()}
    else:
        ids_in = torch.tensor([spec["inputs"]["ids"]])
        out = model(ids_in)
        prompt = torch.tensor([spec["prompt"]])
        assert prompt.size(1) + MAX_NEW_TOKENS <= cfg["max_seq_len"]
        ids, steps = greedy_uncached(model, prompt, MAX_NEW_TOKENS)
        body["greedy"] = {"prompt_ids": spec["prompt"], "max_new_tokens": MAX_NEW_TOKENS, "ids": ids[0].tolist()}
        new = ids[0, prompt.size(1):].tolist()
        if len(set(new)) < MIN_DISTINCT:
            raise Reject(f"greedy too repetitive {new}")
        if "moe" in cfg:
            # router decisions of every forward call made during greedy must also be far from ties
            rm = moe_router_margin(out["moe"])
            for n in range(prompt.size(1), ids.size(1)):
                rm = min(rm, moe_router_margin(model(ids[:, :n])["moe"]))
            if rm < ROUTER_MARGIN:
                raise Reject(f"router margin {rm:.2e}")
            body["min_router_margin"] = f32(rm)
            dropped = sum(int((~r["kept"]).sum()) for r in out["moe"])
            if spec.get("expect_drops") and dropped == 0:
                raise Reject("no MoE assignment dropped")
            if not spec.get("expect_drops"):
                assert dropped == 0, "capacity_factor 2.0 with k=2, E=4 can never drop"
            body["dropped_assignments"] = dropped
    m = min(margin(s[0]) for s in steps)
    if m < GREEDY_MARGIN:
        raise Reject(f"greedy margin {m:.2e}")
    body["min_greedy_margin"] = f32(m)

    body["logits"] = to_list(out["logits"][0])
    body["attention"] = [{"kind": a["kind"], "layer": a["layer"], "weights": to_list(a["weights"][0])}
                         for a in out["attention"]]
    body["masks"] = {k: v[0].to(torch.int64).tolist() for k, v in out["masks"].items()}
    if "moe" in out:
        body["moe"] = [{"router_probs": to_list(r["router_probs"][0]), "experts": to_list(r["experts"][0]),
                        "weights": to_list(r["weights"][0]), "kept": to_list(r["kept"][0]),
                        "capacity": r["capacity"]} for r in out["moe"]]
    return body


def write_json(path: str, obj: Dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


def make(spec: Dict[str, Any]) -> List[str]:
    name, cfg = spec["name"], spec["config"]
    for attempt in range(MAX_TRIES):
        seed = spec["seed"] + attempt
        torch.manual_seed(seed)
        model = build_model(cfg)
        init_wide(model)
        model.eval()
        try:
            body = evaluate(spec, model)
            variants = {}
            for v in spec.get("variants", []):
                dtype, _ = VARIANT_DTYPES[v]
                variants[v] = evaluate(spec, round_params(model, dtype))
        except Reject as e:
            print(f"  {name}: seed {seed} rejected ({e})")
            continue
        break
    else:
        raise RuntimeError(f"{name}: no acceptable seed in {MAX_TRIES} tries")

    written = []
    ckpt = f"{name}.safetensors"
    save_checkpoint(model, cfg, os.path.join(OUT_DIR, ckpt))
    write_json(os.path.join(OUT_DIR, f"{name}.json"),
               {"name": name, "seed": seed, "dtype": "F32", "checkpoint": ckpt, **body})
    written += [ckpt, f"{name}.json"]
    for v, vbody in variants.items():
        dtype, dname = VARIANT_DTYPES[v]
        vname = f"{name}_{v}"
        vckpt = f"{vname}.safetensors"
        save_checkpoint(model, cfg, os.path.join(OUT_DIR, vckpt), dtype=dtype)
        write_json(os.path.join(OUT_DIR, f"{vname}.json"),
                   {"name": vname, "seed": seed, "dtype": dname, "checkpoint": vckpt, **vbody})
        written += [vckpt, f"{vname}.json"]

    # self-checks: cached greedy equals uncached greedy (decoder without MoE drops, llama)
    if cfg["arch"] != "encoder_decoder":
        prompt = torch.tensor([spec["prompt"]])
        a, _ = greedy_uncached(model, prompt, MAX_NEW_TOKENS)
        if "moe" not in cfg or cfg["moe"]["capacity_factor"] * cfg["moe"]["top_k"] >= cfg["moe"]["num_experts"]:
            b, _ = greedy_cached(model, prompt, MAX_NEW_TOKENS)
            assert a.tolist() == b.tolist(), f"{name}: cached greedy differs from uncached"
    print(f"{name}: seed {seed}, greedy {body['greedy']['ids']}, min margin {body['min_greedy_margin']:.3g}"
          + (f", dropped {body['dropped_assignments']}, capacity {[r['capacity'] for r in body['moe']]}" if "moe" in cfg else ""))
    return written


def main() -> None:
    torch.set_grad_enabled(False)
    os.makedirs(OUT_DIR, exist_ok=True)
    written = []
    for spec in FIXTURES:
        written += make(spec)
    total = 0
    for f in written:
        size = os.path.getsize(os.path.join(OUT_DIR, f))
        total += size
        print(f"  {f:32s} {size:8d} bytes")
    print(f"total {total} bytes")
    assert total < 1_500_000, "fixtures too large"


if __name__ == "__main__":
    main()
