"""GPT-2 small for the browser peer benchmark (scripts/bench-peers.sh --gpt2-small): the model, f32 and f16, as
a Hugging Face folder for tinyformer and as ONNX for onnxruntime-web, the way transformers.js runs GPT-2.

    python3 train/gpt2_small_peer.py [--out bench-out/gpt2-small] [--check]

writes (bench-out/ is gitignored: about 1.5 GB in all, never committed)

    OUT/f32/  config.json, model.safetensors (f32, 498 MB), tokenizer.json, tokenizer_config.json
    OUT/f16/  the same weights rounded to f16 (249 MB)
    OUT/onnx/gpt2.f32.onnx, OUT/onnx/gpt2.f16.onnx

The weights are `GPT2LMHeadModel(GPT2Config())` with torch.manual_seed(0), as train/gpt2_small_cost.py makes
them (no Hub access here: random weights in GPT-2 small's exact shape; speed and memory depend on the shape,
not the values). The tokenizer is the tiny GPT-2 fixture's (tests/fixtures/hf_models/gpt2, made by
train/hf_fixtures.py: a real-format byte-level tokenizer.json of 384 tokens, a subset of the model's ids), so
the page and the CLI open the folder; the benchmark works on ids.

The ONNX graph is one decoder with past key/values, with the input and output names of an optimum
`text-generation-with-past` export, which transformers.js runs for GPT-2:

    input_ids int64 [1, T], attention_mask int64 [1, P + T], position_ids int64 [1, T],
    past_key_values.{i}.key / .value float [1, 12, P, 64]
      -> logits float [1, T, 50257], present.{i}.key / .value float [1, 12, P + T, 64]

transformers.js runs the prompt with an empty past (P = 0) and each later token with the cache, and takes
the argmax of the last row itself (so does the bench, in JS). The graph calls the Hugging Face model's own
submodules (wte, wpe, ln_1, c_attn, c_proj, mlp, ln_f) as they are; only the attention with its cache is
written here (softmax(q k^T / 8 + mask) v, the mask causal over absolute positions and the attention_mask).
The head is the tied wte, as in GPT-2; the exporter stores it a second time, transposed for the head's
MatMul (652 MB f32 graph for 498 MB of weights, 326 MB f16), as optimum's GPT-2 exports do. The f16 graph is the same module in half precision (weights,
activations, K/V and logits f16), as transformers.js's `dtype: 'fp16'` files are.

--check runs both graphs with onnxruntime (pip) and compares them with transformers on a few ids: the
prefill's logits, a decode step's logits with the cache, and 8 greedy ids; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import torch
import torch.nn as nn
from transformers import GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_small_cost import make as make_f32  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Gpt2WithPast(nn.Module):
    def __init__(self, m: GPT2LMHeadModel):
        super().__init__()
        self.m = m
        c = m.config
        self.layers, self.heads, self.hd = c.n_layer, c.n_head, c.n_embd // c.n_head

    def forward(self, input_ids, attention_mask, position_ids, *past):
        tr = self.m.transformer
        x = tr.wte(input_ids) + tr.wpe(position_ids)
        t = input_ids.shape[1]
        p = past[0].shape[2]
        q_pos = torch.arange(t, device=x.device) + p
        k_pos = torch.arange(p + t, device=x.device)
        allowed = (k_pos[None, :] <= q_pos[:, None])[None, None] & (attention_mask[:, None, None, :] > 0)
        neg = torch.tensor(torch.finfo(x.dtype).min, dtype=x.dtype)
        zero = torch.tensor(0.0, dtype=x.dtype)
        bias = torch.where(allowed, zero, neg)
        presents = []
        for i, blk in enumerate(tr.h):
            h = blk.ln_1(x)
            q, k, v = blk.attn.c_attn(h).split(self.heads * self.hd, dim=2)
            q = q.view(1, t, self.heads, self.hd).transpose(1, 2)
            k = torch.cat([past[2 * i], k.view(1, t, self.heads, self.hd).transpose(1, 2)], dim=2)
            v = torch.cat([past[2 * i + 1], v.view(1, t, self.heads, self.hd).transpose(1, 2)], dim=2)
            presents += [k, v]
            s = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / self.hd**0.5) + bias
            o = torch.matmul(torch.softmax(s, dim=-1), v)
            o = o.transpose(1, 2).reshape(1, t, self.heads * self.hd)
            x = x + blk.attn.c_proj(o)
            x = x + blk.mlp(blk.ln_2(x))
        x = tr.ln_f(x)
        return (self.m.lm_head(x), *presents)


def names(layers):
    past = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return past, present


def export(model: GPT2LMHeadModel, path: str):
    w = Gpt2WithPast(model).eval()
    c = model.config
    past_names, present_names = names(c.n_layer)
    p, t = 3, 2  # a non-empty past in the trace, so nothing is specialised to P = 0 or T = 1
    dt = next(model.parameters()).dtype
    past = [torch.zeros(1, c.n_head, p, c.n_embd // c.n_head, dtype=dt) for _ in past_names]
    args = (torch.tensor([[5, 7]]), torch.ones(1, p + t, dtype=torch.int64), torch.tensor([[p, p + 1]]), *past)
    axes = {"input_ids": {1: "sequence_length"}, "attention_mask": {1: "total_sequence_length"},
            "position_ids": {1: "sequence_length"}, "logits": {1: "sequence_length"}}
    for n in past_names:
        axes[n] = {2: "past_sequence_length"}
    for n in present_names:
        axes[n] = {2: "total_sequence_length"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(w, args, path, input_names=["input_ids", "attention_mask", "position_ids", *past_names],
                          output_names=["logits", *present_names], dynamic_axes=axes, opset_version=17,
                          dynamo=False, do_constant_folding=True)


def make(out):
    f32 = os.path.join(out, "f32")
    f16 = os.path.join(out, "f16")
    onnx_dir = os.path.join(out, "onnx")
    os.makedirs(onnx_dir, exist_ok=True)
    make_f32(f32)  # seed 0, GPT2LMHeadModel(GPT2Config()), the fixture's tokenizer
    model = GPT2LMHeadModel.from_pretrained(f32, attn_implementation="eager").eval()
    export(model, os.path.join(onnx_dir, "gpt2.f32.onnx"))
    model = model.half()
    model.save_pretrained(f16, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(f32, f), "rb") as src, open(os.path.join(f16, f), "wb") as dst:
            dst.write(src.read())
    export(model, os.path.join(onnx_dir, "gpt2.f16.onnx"))
    sizes = {k: os.path.getsize(os.path.join(d, n)) for k, d, n in (
        ("f32_safetensors", f32, "model.safetensors"), ("f16_safetensors", f16, "model.safetensors"),
        ("f32_onnx", onnx_dir, "gpt2.f32.onnx"), ("f16_onnx", onnx_dir, "gpt2.f16.onnx"))}
    print(json.dumps({"made": out, "bytes": sizes}))


def check(out):
    """The ONNX graphs (onnxruntime, CPU) against transformers on a few ids; True when they agree."""
    import numpy as np
    import onnxruntime as ort

    ok = True
    report = {}
    for prec in ("f32", "f16"):
        model = GPT2LMHeadModel.from_pretrained(os.path.join(out, prec), attn_implementation="eager").eval()
        if prec == "f16":
            model = model.float()  # the reference: transformers in f32 on the f16-rounded weights
        sess = ort.InferenceSession(os.path.join(out, "onnx", f"gpt2.{prec}.onnx"), providers=["CPUExecutionProvider"])
        c = model.config
        past_names, present_names = names(c.n_layer)
        fdt = np.float16 if prec == "f16" else np.float32

        def run(ids, past, p):
            t = len(ids)
            feed = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, p + t), dtype=np.int64),
                    "position_ids": np.arange(p, p + t, dtype=np.int64)[None]}
            for n in past_names:
                feed[n] = past.get(n, np.zeros((1, c.n_head, 0, c.n_embd // c.n_head), dtype=fdt))
            r = sess.run(None, feed)
            return r[0].astype(np.float32), {pn: r[1 + j] for j, pn in enumerate(past_names)}

        ids = [(7 * i + 3) % 384 for i in range(16)]
        with torch.no_grad():
            ref = model(torch.tensor([ids + [11]])).logits[0].numpy()
            got_pre, past = run(ids, {}, 0)
            got_dec, _ = run([11], past, len(ids))
            # greedy ids, both with the cache
            seq, tids = list(ids), []
            o = model(torch.tensor([seq]), use_cache=True)
            for _ in range(8):
                nxt = int(o.logits[0, -1].argmax())
                tids.append(nxt)
                o = model(torch.tensor([[nxt]]), past_key_values=o.past_key_values, use_cache=True)
            oids, (lg, past) = [], run(ids, {}, 0)
            for k in range(8):
                nxt = int(lg[0, -1].argmax())
                oids.append(nxt)
                lg, past = run([nxt], past, len(ids) + k)
        err_pre = float(np.abs(got_pre[0] - ref[: len(ids)]).max())
        err_dec = float(np.abs(got_dec[0, 0] - ref[len(ids)]).max())
        scale = float(np.abs(ref).max())
        tol = 1e-4 * scale if prec == "f32" else 2e-2 * scale  # f16 activations: about 3 decimal digits
        same = tids == oids
        report[prec] = {"max_abs_err_prefill": err_pre, "max_abs_err_decode": err_dec, "logit_scale": scale,
                        "tolerance": tol, "greedy_transformers": tids, "greedy_onnx": oids, "same_greedy_ids": same}
        ok = ok and err_pre <= tol and err_dec <= tol and (same or prec == "f16")
    print(json.dumps({"check": report, "ok": ok}))
    return ok


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-out", "gpt2-small"))
    ap.add_argument("--check", action="store_true", help="only check existing graphs against transformers")
    a = ap.parse_args()
    if not a.check:
        make(a.out)
    sys.exit(0 if check(a.out) else 1)
