"""ONNX graphs of the shipped decoder models, for the onnxruntime-web peer of scripts/bench-peers.sh.

For each checkpoint (arch "decoder" without MoE, or "llama") it writes two graphs into --out:

  <name>.prefill.onnx  ids int64 [1, T]                       -> logits float [1, V] (last row),
                                                                  next_id int64 [1] (its argmax),
                                                                  present_key_i / present_value_i
  <name>.decode.onnx   ids int64 [1, 1], position int64 [1],   -> next_id int64 [1] (argmax inside),
                       past_key_i / past_value_i                   present_key_i / present_value_i

K/V are float [1, KV heads, positions, head_dim] per layer i (present = past ++ the new token's). The
graphs are built from train/reference.py's modules and their weights: the embeddings, positional
encoding / RoPE table, norms, q/k/v/o projections, feed-forwards and heads are the reference's
submodules, called as they are. Only the attention plumbing is written here for inference, so that the
peer runs an ordinary inference graph rather than the reference's diagnostic one: no attention maps are
returned, the causal mask is an additive constant (a full row is never masked in a causal prefill, so
the reference's fully-masked-row fix is a no-op), the K/V are cached, the head runs on the last row only,
GQA broadcasts the KV heads in the matmul instead of repeating them, and RoPE multiplies by real cos/sin
tables (the reference's complex product written out: (a + ib)(c + is) = (ac - bs) + i(as + bc)).

--check runs both graphs with onnxruntime (pip; optional) on the bench workload and checks that they give
the same greedy ids as train/reference.py's greedy_cached, which tinyformer matches (tests/); exits 1 if
not. The files are generated at bench time (bench-out/ is gitignored), never committed.

Usage: python3 train/export_onnx.py [--out bench-out/onnx] [--check] models/shakespeare-gpt.safetensors ...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import load_checkpoint  # noqa: E402
from reference import DecoderLM, Llama, build_model, greedy_cached  # noqa: E402

MASK_FILL = -1e9


class Attention(nn.Module):
    """softmax(q k^T / sqrt(hd) + mask) v over [1, Hkv, rep, T, hd] queries and [1, Hkv, P, hd] keys."""

    def __init__(self, heads: int, kv_heads: int, head_dim: int):
        super().__init__()
        self.h, self.hkv, self.hd = heads, kv_heads, head_dim
        self.rep = heads // kv_heads
        self.scale = 1.0 / math.sqrt(head_dim)

    def forward(self, q, k, v, mask=None):
        # q [1, H, T, hd] -> [1, Hkv, rep, T, hd]; query head h reads KV head h // rep
        t = q.shape[2]
        q = q.reshape(1, self.hkv, self.rep, t, self.hd)
        s = torch.matmul(q, k.unsqueeze(2).transpose(-2, -1)) * self.scale  # [1, Hkv, rep, T, P]
        if mask is not None:
            s = s + mask
        p = torch.softmax(s, dim=-1)
        o = torch.matmul(p, v.unsqueeze(2))  # [1, Hkv, rep, T, hd]
        return o.reshape(1, self.h, t, self.hd).transpose(1, 2).reshape(1, t, self.h * self.hd)


class GptGraph(nn.Module):
    """DecoderLM (pre-norm, sinusoidal PE, ReLU FFN, tied-free lm_head), prefill or decode."""

    def __init__(self, m: DecoderLM, decode: bool):
        super().__init__()
        c = m.config
        if c.get("moe"):
            raise ValueError("MoE decoders are not exported (the peer bench runs the dense models)")
        self.m, self.decode = m, decode
        self.h = c["num_heads"]
        self.hd = c["d_model"] // c["num_heads"]
        self.attn = Attention(self.h, self.h, self.hd)
        t = c["max_seq_len"]
        self.register_buffer("causal", torch.triu(torch.full((t, t), MASK_FILL), diagonal=1), persistent=False)

    def forward(self, ids, *rest):
        m = self.m
        t = ids.shape[1]
        x = m.token_embedding(ids) * math.sqrt(m.d_model)
        if self.decode:
            position, past = rest[0], rest[1:]
            x = x + torch.index_select(m.pos_encoding.pe[0], 0, position)
            mask = None
        else:
            past = None
            x = x + m.pos_encoding.pe[:, :t]
            mask = self.causal[:t, :t]
        presents = []
        for i, blk in enumerate(m.decoder_layers):
            a = blk.self_attn
            h = blk.norm1(x)
            q = a.w_q(h).view(1, t, self.h, self.hd).transpose(1, 2)
            k = a.w_k(h).view(1, t, self.h, self.hd).transpose(1, 2)
            v = a.w_v(h).view(1, t, self.h, self.hd).transpose(1, 2)
            if past is not None:
                k = torch.cat([past[2 * i], k], dim=2)
                v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            x = x + a.w_o(self.attn(q, k, v, mask))
            x = x + blk.feed_forward(blk.norm2(x))
        logits = m.lm_head(m.ln_f(x[:, -1]))  # [1, V]
        next_id = torch.argmax(logits, dim=-1)
        if self.decode:
            return (next_id, *presents)
        return (logits, next_id, *presents)


class LlamaGraph(nn.Module):
    """Llama (RMSNorm, RoPE on adjacent pairs, GQA, SwiGLU), prefill or decode."""

    def __init__(self, m: Llama, decode: bool):
        super().__init__()
        c = m.config
        self.m, self.decode = m, decode
        self.h, self.hkv = c["num_heads"], c["num_kv_heads"]
        self.hd = c["d_model"] // c["num_heads"]
        self.attn = Attention(self.h, self.hkv, self.hd)
        t = c["max_seq_len"]
        self.register_buffer("causal", torch.triu(torch.full((t, t), MASK_FILL), diagonal=1), persistent=False)
        self.register_buffer("cos", m.freqs_cis.real.contiguous(), persistent=False)  # [2 * max, hd / 2]
        self.register_buffer("sin", m.freqs_cis.imag.contiguous(), persistent=False)

    def rope(self, x, cos, sin):
        # x [1, heads, T, hd]; cos/sin [T, hd/2]
        shape = x.shape
        x = x.reshape(shape[0], shape[1], shape[2], self.hd // 2, 2)
        a, b = x[..., 0], x[..., 1]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).reshape(shape)

    def forward(self, ids, *rest):
        m = self.m
        t = ids.shape[1]
        x = m.tok_embeddings(ids)
        if self.decode:
            position, past = rest[0], rest[1:]
            cos, sin = torch.index_select(self.cos, 0, position), torch.index_select(self.sin, 0, position)
            mask = None
        else:
            past = None
            cos, sin = self.cos[:t], self.sin[:t]
            mask = self.causal[:t, :t]
        presents = []
        for i, blk in enumerate(m.layers):
            a = blk.attention
            h = blk.attention_norm(x)
            q = self.rope(a.wq(h).view(1, t, self.h, self.hd).transpose(1, 2), cos, sin)
            k = self.rope(a.wk(h).view(1, t, self.hkv, self.hd).transpose(1, 2), cos, sin)
            v = a.wv(h).view(1, t, self.hkv, self.hd).transpose(1, 2)
            if past is not None:
                k = torch.cat([past[2 * i], k], dim=2)
                v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            x = x + a.wo(self.attn(q, k, v, mask))
            x = x + blk.feed_forward(blk.ffn_norm(x))
        logits = m.output(m.norm(x[:, -1]))
        next_id = torch.argmax(logits, dim=-1)
        if self.decode:
            return (next_id, *presents)
        return (logits, next_id, *presents)


def graphs(model):
    cls = {"decoder": GptGraph, "llama": LlamaGraph}.get(model.config["arch"])
    if cls is None:
        raise ValueError(f"arch {model.config['arch']!r} is not exported (decoder and llama only)")
    return cls(model, decode=False).eval(), cls(model, decode=True).eval()


def kv_shape(model, positions):
    c = model.config
    return (1, c.get("num_kv_heads", c["num_heads"]), positions, c["d_model"] // c["num_heads"])


def export(model, name, out_dir):
    """Writes <name>.prefill.onnx and <name>.decode.onnx; returns their paths."""
    prefill, decode = graphs(model)
    layers = model.config["num_layers"]
    presents = [f"present_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    pasts = [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    pre_path = os.path.join(out_dir, f"{name}.prefill.onnx")
    dec_path = os.path.join(out_dir, f"{name}.decode.onnx")
    ids = torch.zeros(1, 16, dtype=torch.long)
    kv_axes = {2: "positions"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: a plain graph of standard ops (opset 17) that onnxruntime-web's wasm
        # and webgpu EPs both run.
        torch.onnx.export(
            prefill, (ids,), pre_path, dynamo=False, opset_version=17,
            input_names=["ids"], output_names=["logits", "next_id", *presents],
            dynamic_axes={"ids": {1: "tokens"}, **{p: kv_axes for p in presents}},
        )
        past = tuple(torch.zeros(kv_shape(model, 16)) for _ in pasts)
        torch.onnx.export(
            decode, (torch.zeros(1, 1, dtype=torch.long), torch.tensor([16]), *past), dec_path, dynamo=False,
            opset_version=17, input_names=["ids", "position", *pasts], output_names=["next_id", *presents],
            dynamic_axes={**{p: {2: "past"} for p in pasts}, **{p: {2: "positions"} for p in presents}},
        )
    return pre_path, dec_path


def check(model, pre_path, dec_path, ids):
    """Greedy ids of the ONNX graphs under onnxruntime vs train/reference.py's greedy_cached."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    pre = ort.InferenceSession(pre_path, opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(dec_path, opts, providers=["CPUExecutionProvider"])
    layers = model.config["num_layers"]
    pasts = [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]

    def onnx_greedy(prompt, n):
        out = pre.run(None, {"ids": np.array([prompt], dtype=np.int64)})
        got = [int(out[1][0])]
        kv = out[2:]
        pos = len(prompt)
        while len(got) < n:
            feed = {"ids": np.array([[got[-1]]], dtype=np.int64), "position": np.array([pos], dtype=np.int64)}
            feed.update(zip(pasts, kv))
            out = dec.run(None, feed)
            got.append(int(out[0][0]))
            kv = out[1:]
            pos += 1
        return got

    got = onnx_greedy(ids[:16], 64)
    want = greedy_cached(model, torch.tensor([ids[:16]]), 64)[0][0, 16:].tolist()
    pre_onnx = int(pre.run(None, {"ids": np.array([ids[:128]], dtype=np.int64)})[1][0])
    with torch.no_grad():
        pre_ref = int(model(torch.tensor([ids[:128]]))["logits"][0, -1].argmax())
    return {"onnx_ids": got, "reference_ids": want, "same_ids": got == want and pre_onnx == pre_ref,
            "prefill_argmax": pre_onnx, "reference_prefill_argmax": pre_ref, "onnxruntime": ort.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out/onnx")
    ap.add_argument("--check", action="store_true", help="compare greedy ids with the reference (needs onnxruntime)")
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    res, ok = {}, True
    for path in args.models:
        tensors, config, _ = load_checkpoint(path)
        model = build_model(config)
        model.load_state_dict(tensors, strict=True)
        name = os.path.splitext(os.path.basename(path))[0]
        pre_path, dec_path = export(model, name, args.out)
        r = {"prefill": pre_path, "decode": dec_path, "layers": config["num_layers"],
             "kv_shape": list(kv_shape(model, 0))}
        if args.check:
            ids = json.load(open(path.replace(".safetensors", ".json")))["eval_slice"]["ids"]
            r["check"] = check(model, pre_path, dec_path, ids)
            ok = ok and r["check"]["same_ids"]
        res[name] = r
    print(json.dumps({"export": "onnx", "torch": torch.__version__, "models": res}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
