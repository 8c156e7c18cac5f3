"""PyTorch peer of `tinyformer bench generate` on a GPU: a static KV cache and one CUDA graph per step.

Issue 12 asks for `bench generate` on the shipped models against "PyTorch with a static KV cache and one CUDA
graph per step on the same machine". train/reference.py's modules grow their cache with torch.cat (a new shape
every step), which a CUDA graph cannot capture. This file runs the same weights through a step function with
fixed shapes instead:
- the K/V cache is preallocated for the model's context ([layers, heads, max_seq_len, head_dim]);
- the position is a 0-d tensor on the device, so the step has no Python-side shape or value that changes;
- the new K/V row is written with index_copy_, and a key mask `arange(max_seq_len) <= pos` blocks the rest;
- the argmax is written back into the step's input id, so a replay feeds the next one.

The step is checked against the reference modules before anything is timed: on the CPU (eager step) and on
CUDA (eager step, then graph replays) the greedy ids must equal train/reference.py's `greedy_cached`.

Models: the decoder (gpt) and the llama. The MoE checkpoint is left out: its capacity rule drops tokens by
their order in the call, which a fixed-shape one-token step does not reproduce without a data-dependent path.

Workload as train/bench_torch.py: 64 greedy tokens after a 16-token prompt (the prompt is fed one token a step
through the same graph, so tok/s = 64 / (16 + 64 steps' time)), and an eager 128-token prefill with the
reference module on the device, in ms. Best of BENCH_REPS (default 5) after a warm-up. Prints JSON.

Usage: python3 train/bench_torch_cuda.py [--device cuda|cpu] models/shakespeare-gpt.safetensors ...
(scripts/bench-device.sh runs it on the device machine; on a machine without CUDA it checks the step on the CPU.)
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import load_checkpoint  # noqa: E402
from reference import DecoderLM, Llama, apply_rotary_emb, build_model, greedy_cached  # noqa: E402


class StaticStep:
    """One greedy decode step with fixed shapes, reading the weights of a DecoderLM (no MoE) or a Llama."""

    def __init__(self, model, device):
        c = model.config
        self.model = model
        self.llama = isinstance(model, Llama)
        if not self.llama and (not isinstance(model, DecoderLM) or c.get("moe")):
            raise ValueError(f"StaticStep runs the decoder and the llama, not {c['arch']} with moe={bool(c.get('moe'))}")
        self.s = c["max_seq_len"]
        self.nh = c["num_heads"]
        self.nkv = c.get("num_kv_heads", self.nh) if self.llama else self.nh
        self.hd = c["d_model"] // self.nh
        n = c["num_layers"]
        self.k = torch.zeros(n, self.nkv, self.s, self.hd, device=device)
        self.v = torch.zeros_like(self.k)
        self.ids = torch.zeros(1, dtype=torch.long, device=device)
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.keys = torch.arange(self.s, device=device)
        self.record = torch.zeros(self.s, dtype=torch.long, device=device)  # the argmax of the step at each position

    def reset(self, first_id):
        self.k.zero_()
        self.v.zero_()
        self.ids.fill_(first_id)
        self.pos.zero_()

    def _attend(self, layer, q, k, v):
        """q [NH, hd], k/v [NKV, hd] of the new token; writes the cache row at self.pos; returns [NH*hd]."""
        self.k[layer].index_copy_(1, self.pos.view(1), k.unsqueeze(1))
        self.v[layer].index_copy_(1, self.pos.view(1), v.unsqueeze(1))
        rep = self.nh // self.nkv
        kk = self.k[layer].repeat_interleave(rep, dim=0)  # [NH, S, hd]
        vv = self.v[layer].repeat_interleave(rep, dim=0)
        scores = torch.einsum("hd,hsd->hs", q, kk) / math.sqrt(self.hd)
        scores = scores.masked_fill(self.keys > self.pos, float("-inf"))
        p = F.softmax(scores, dim=-1)
        return torch.einsum("hs,hsd->hd", p, vv).reshape(-1)

    @torch.no_grad()
    def step(self):
        m = self.model
        if self.llama:
            x = m.tok_embeddings(self.ids)[0]
            fc = m.freqs_cis.index_select(0, self.pos.view(1))  # [1, hd/2] complex
            for i, layer in enumerate(m.layers):
                a = layer.attention
                h = layer.attention_norm(x)
                q = a.wq(h).view(1, 1, self.nh, self.hd)
                k = a.wk(h).view(1, 1, self.nkv, self.hd)
                v = a.wv(h).view(self.nkv, self.hd)
                q = apply_rotary_emb(q, fc).view(self.nh, self.hd)
                k = apply_rotary_emb(k, fc).view(self.nkv, self.hd)
                x = x + a.wo(self._attend(i, q, k, v))
                x = x + layer.feed_forward(layer.ffn_norm(x))
            logits = m.output(m.norm(x))
        else:
            x = m.token_embedding(self.ids)[0] * math.sqrt(m.d_model)
            x = x + m.pos_encoding.pe[0].index_select(0, self.pos.view(1))[0]
            for i, layer in enumerate(m.decoder_layers):
                a = layer.self_attn
                h = layer.norm1(x)
                q = a.w_q(h).view(self.nh, self.hd)
                k = a.w_k(h).view(self.nkv, self.hd)
                v = a.w_v(h).view(self.nkv, self.hd)
                x = x + a.w_o(self._attend(i, q, k, v))
                x = x + layer.feed_forward(layer.norm2(x))
            logits = m.lm_head(m.ln_f(x))
        nxt = logits.argmax(dim=-1, keepdim=True)
        self.record.index_copy_(0, self.pos.view(1), nxt)
        self.ids.copy_(nxt)
        self.pos.add_(1)


def run_steps(st, prompt, n, replay):
    """Feeds the prompt one id a step, then greedy steps (each feeds its argmax to the next) until n ids are made;
    returns them as a device tensor (no sync inside the loop)."""
    st.reset(prompt[0])
    for i in range(len(prompt) + n - 1):
        replay()
        if i + 1 < len(prompt):
            st.ids.fill_(prompt[i + 1])
    return st.record[len(prompt) - 1 : len(prompt) - 1 + n]


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def best(reps, device, f):
    f()
    sync(device)
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        f()
        sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    reps = int(os.environ.get("BENCH_REPS", "5"))
    dev = a.device
    res = {}
    for p in a.models:
        tensors, config, _ = load_checkpoint(p)
        model = build_model(config)
        model.load_state_dict(tensors, strict=True)
        model = model.to(dev)
        side = json.load(open(p.replace(".safetensors", ".json")))
        ids = side["eval_slice"]["ids"]
        prompt, pre = ids[:16], torch.tensor([ids[:128]], device=dev)
        name = os.path.splitext(os.path.basename(p))[0]
        want, _ = greedy_cached(model, torch.tensor([prompt], device=dev), 64)
        want = want[0, 16:].tolist()
        try:
            st = StaticStep(model, dev)
        except ValueError as e:
            res[name] = {"skipped": str(e)}
            continue
        eager = run_steps(st, prompt, 64, st.step).tolist()
        entry = {"reference_ids": want, "eager_step_ids": eager, "eager_step_same_ids": eager == want}
        with torch.no_grad():
            t_pre = best(reps, dev, lambda: model(pre, kv_cache=[{} for _ in range(config["num_layers"])]))
        entry["prefill_128_ms_eager"] = t_pre * 1e3
        entry["decode_tokens_per_second_eager_static"] = 64 / best(reps, dev, lambda: run_steps(st, prompt, 64, st.step))
        if dev == "cuda":
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):  # warm-up outside the graph, as torch.cuda.graphs asks
                st.reset(prompt[0])
                for _ in range(3):
                    st.step()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            st.reset(prompt[0])
            with torch.cuda.graph(g):
                st.step()
            graph = run_steps(st, prompt, 64, g.replay).tolist()
            entry["graph_ids_same"] = graph == want
            entry["decode_tokens_per_second_cuda_graph"] = 64 / best(reps, dev, lambda: run_steps(st, prompt, 64, g.replay))
        res[name] = entry
    info = {"bench": "torch_static_cache", "torch": torch.__version__, "device": dev}
    if dev == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    info["models"] = res
    print(json.dumps(info, indent=1))
    bad = [n for n, e in res.items() if "skipped" not in e and not (e["eager_step_same_ids"] and e.get("graph_ids_same", True))]
    if bad:
        print(f"bench_torch_cuda: the static step's ids differ from the reference modules' for {', '.join(bad)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
