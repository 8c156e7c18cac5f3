"""PyTorch reference implementations of the tinyformer models.

These modules define the numbers the Rust core (CPU and GPU paths) is tested against. They follow the
semantics of the seed documents (shared/seeds/000_*: encoder-decoder, decoder-only LLM with KV cache, MoE;
shared/seeds/004_*: Llama 3 style), with the seed bugs fixed (the list follows):

* masks use the convention 1 = may attend, everywhere (the seed's mask helpers return 1 for *blocked*
  cells while its attention blocks where mask == 0);
* attention rows whose mask is entirely 0 produce probabilities of exactly 0 (never a uniform row);
* MoE capacity is computed inside forward (the seed reads an attribute it never sets) and over-capacity
  assignments are dropped deterministically, in token order.

Eval-mode semantics only: there is no dropout anywhere. PyTorch is developer tooling; CI never imports this.
Every module also runs in float64 (``model.double()``): the float32 steps of RMSNorm, RoPE and the Llama logits
widen to float64 there instead of narrowing, so train/train_fixtures.py gets exact gradients.

Every model's ``forward`` returns a dict with
  ``logits``     [B, T, V]
  ``attention``  list of {"kind": "encoder"|"decoder"|"cross", "layer": i, "weights": [B, H, Tq, Tk]}
  ``masks``      {"encoder"|"decoder"|"cross": [B, Tq, Tk]} (1 = may attend, float 0/1)
  ``moe``        (decoder with MoE only) list per layer of routing records, see MoEFeedForward.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2

MASK_FILL = -1e9


# ----------------------------------------------------------------------------------------------------------
# Masks (1 = may attend)
# ----------------------------------------------------------------------------------------------------------


def key_padding_mask(seq: torch.Tensor, num_queries: int) -> torch.Tensor:
    """[B, Tk] token ids -> [B, Tq, Tk] mask: key j may be attended iff seq[j] != PAD."""
    keep = (seq != PAD_ID).float()  # [B, Tk]
    return keep[:, None, :].expand(seq.size(0), num_queries, seq.size(1)).contiguous()


def look_ahead_mask(seq_len: int, cached_len: int = 0) -> torch.Tensor:
    """[Tq, cached+Tq] causal mask, exactly the seed's ``create_causal_mask``: every cached key is visible,
    new query i sees new keys 0..i."""
    total = cached_len + seq_len
    mask = torch.ones(seq_len, total)
    mask[:, cached_len:] = torch.tril(torch.ones(seq_len, seq_len))
    return mask


def decoder_self_mask(tgt: torch.Tensor) -> torch.Tensor:
    """Target key padding AND look-ahead: [B, T, T]."""
    t = tgt.size(1)
    return key_padding_mask(tgt, t) * look_ahead_mask(t)[None]


def scaled_dot_product_attention(q, k, v, mask):
    """q [B,H,Tq,dk], k/v [B,H,Tk,dk], mask broadcastable to [B,H,Tq,Tk] with 1 = may attend.

    scores = QK^T / sqrt(dk); masked_fill(mask == 0, -1e9); softmax; rows whose mask is all 0 -> exactly 0.
    Returns (output [B,H,Tq,dk], probabilities [B,H,Tq,Tk]).
    """
    d_k = q.size(-1)
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d_k)
    if mask is not None:
        blocked = mask == 0
        scores = scores.masked_fill(blocked, MASK_FILL)
        probs = F.softmax(scores, dim=-1)
        fully_masked = blocked.all(dim=-1, keepdim=True)
        probs = probs.masked_fill(fully_masked, 0.0)
    else:
        probs = F.softmax(scores, dim=-1)
    return torch.matmul(probs, v), probs


# ----------------------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------------------


class PositionalEncoding(nn.Module):
    """Sinusoidal PE, computed in float32 as the seed does; buffer ``pe`` of shape [1, max_seq_len, d_model]."""

    def __init__(self, d_model: int, max_seq_len: int):
        super().__init__()
        pe = torch.zeros(max_seq_len, d_model)
        position = torch.arange(0, max_seq_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        t = x.size(1)
        if start + t > self.pe.size(1):
            raise ValueError(f"sequence of {start + t} positions exceeds max_seq_len {self.pe.size(1)}")
        return x + self.pe[:, start : start + t]


class ReluFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.linear2(F.relu(self.linear1(x)))


class GeluTanhFeedForward(ReluFeedForward):
    """GPT-2's MLP (``gelu_new``): the same tensors as ReluFeedForward, GELU with the tanh approximation."""

    def forward(self, x):
        return self.linear2(F.gelu(self.linear1(x), approximate="tanh"))


# ----------------------------------------------------------------------------------------------------------
# Encoder-decoder (seed 000, "A Complete Enc-Dec Transformer"), post-norm
# ----------------------------------------------------------------------------------------------------------


class EncDecMultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        assert d_model % num_heads == 0
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.W_q = nn.Linear(d_model, d_model)
        self.W_k = nn.Linear(d_model, d_model)
        self.W_v = nn.Linear(d_model, d_model)
        self.W_o = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask):
        b = query.size(0)
        q = self.W_q(query).view(b, -1, self.num_heads, self.d_k).transpose(1, 2)
        k = self.W_k(key).view(b, -1, self.num_heads, self.d_k).transpose(1, 2)
        v = self.W_v(value).view(b, -1, self.num_heads, self.d_k).transpose(1, 2)
        out, probs = scaled_dot_product_attention(q, k, v, mask)
        out = out.transpose(1, 2).contiguous().view(b, -1, self.d_model)
        return self.W_o(out), probs


class EncoderLayer(nn.Module):
    def __init__(self, d_model, num_heads, d_ff):
        super().__init__()
        self.self_attention = EncDecMultiHeadAttention(d_model, num_heads)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.feed_forward = ReluFeedForward(d_model, d_ff)

    def forward(self, x, mask):
        a, probs = self.self_attention(x, x, x, mask)
        x = self.norm1(x + a)
        x = self.norm2(x + self.feed_forward(x))
        return x, probs


class DecoderLayer(nn.Module):
    def __init__(self, d_model, num_heads, d_ff):
        super().__init__()
        self.self_attention = EncDecMultiHeadAttention(d_model, num_heads)
        self.encoder_attention = EncDecMultiHeadAttention(d_model, num_heads)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm3 = nn.LayerNorm(d_model, eps=1e-5)
        self.feed_forward = ReluFeedForward(d_model, d_ff)

    def forward(self, x, enc_out, self_mask, cross_mask):
        a, self_probs = self.self_attention(x, x, x, self_mask)
        x = self.norm1(x + a)
        c, cross_probs = self.encoder_attention(x, enc_out, enc_out, cross_mask)
        x = self.norm2(x + c)
        x = self.norm3(x + self.feed_forward(x))
        return x, self_probs, cross_probs


class Encoder(nn.Module):
    def __init__(self, vocab_size, d_model, num_layers, num_heads, d_ff, max_seq_len):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.pos_encoding = PositionalEncoding(d_model, max_seq_len)
        self.layers = nn.ModuleList([EncoderLayer(d_model, num_heads, d_ff) for _ in range(num_layers)])

    def forward(self, src, mask):
        x = self.pos_encoding(self.embedding(src) * math.sqrt(self.d_model))
        maps = []
        for layer in self.layers:
            x, p = layer(x, mask[:, None])
            maps.append(p)
        return x, maps


class Decoder(nn.Module):
    def __init__(self, vocab_size, d_model, num_layers, num_heads, d_ff, max_seq_len):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.pos_encoding = PositionalEncoding(d_model, max_seq_len)
        self.layers = nn.ModuleList([DecoderLayer(d_model, num_heads, d_ff) for _ in range(num_layers)])

    def forward(self, tgt, enc_out, self_mask, cross_mask):
        x = self.pos_encoding(self.embedding(tgt) * math.sqrt(self.d_model))
        self_maps, cross_maps = [], []
        for layer in self.layers:
            x, sp, cp = layer(x, enc_out, self_mask[:, None], cross_mask[:, None])
            self_maps.append(sp)
            cross_maps.append(cp)
        return x, self_maps, cross_maps


class EncoderDecoder(nn.Module):
    def __init__(self, config: Dict[str, Any]):
        super().__init__()
        self.config = config
        c = config
        self.encoder = Encoder(c["src_vocab_size"], c["d_model"], c["num_layers"], c["num_heads"], c["d_ff"],
                               c["max_seq_len"])
        self.decoder = Decoder(c["tgt_vocab_size"], c["d_model"], c["num_layers"], c["num_heads"], c["d_ff"],
                               c["max_seq_len"])
        self.final_layer = nn.Linear(c["d_model"], c["tgt_vocab_size"])

    def masks(self, src, tgt):
        return {
            "encoder": key_padding_mask(src, src.size(1)),
            "decoder": decoder_self_mask(tgt),
            "cross": key_padding_mask(src, tgt.size(1)),
        }

    def encode(self, src):
        return self.encoder(src, key_padding_mask(src, src.size(1)))

    def decode(self, tgt, enc_out, src):
        return self.decoder(tgt, enc_out, decoder_self_mask(tgt), key_padding_mask(src, tgt.size(1)))

    def forward(self, src, tgt):
        masks = self.masks(src, tgt)
        enc_out, enc_maps = self.encoder(src, masks["encoder"])
        dec_out, self_maps, cross_maps = self.decoder(tgt, enc_out, masks["decoder"], masks["cross"])
        logits = self.final_layer(dec_out)
        attention = [{"kind": "encoder", "layer": i, "weights": p} for i, p in enumerate(enc_maps)]
        for i, (sp, cp) in enumerate(zip(self_maps, cross_maps)):
            attention.append({"kind": "decoder", "layer": i, "weights": sp})
            attention.append({"kind": "cross", "layer": i, "weights": cp})
        return {"logits": logits, "attention": attention, "masks": masks}

    @torch.no_grad()
    def greedy(self, src, max_new_tokens: int):
        """Encode once, decode from [BOS] appending the argmax (whole target recomputed every step) until EOS
        or max_new_tokens. Returns (ids list incl. BOS, per-step logits of the last position)."""
        enc_out, _ = self.encode(src)
        tgt = torch.full((src.size(0), 1), BOS_ID, dtype=torch.long)
        steps = []
        for _ in range(max_new_tokens):
            dec_out, _, _ = self.decode(tgt, enc_out, src)
            last = self.final_layer(dec_out)[:, -1, :]
            steps.append(last)
            nxt = last.argmax(dim=-1, keepdim=True)
            tgt = torch.cat([tgt, nxt], dim=1)
            if nxt.item() == EOS_ID:
                break
        return tgt, steps


# ----------------------------------------------------------------------------------------------------------
# Decoder-only LLM (seed 000, "Decoder-only LLM" + "Adding KV-Cache"), pre-norm; optional MoE FFN
# ----------------------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        assert d_model % num_heads == 0
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)

    def forward(self, x, mask, kv_cache: Optional[Dict[str, torch.Tensor]] = None):
        b, t, _ = x.shape
        q = self.w_q(x).view(b, t, self.num_heads, self.d_k).transpose(1, 2)
        k = self.w_k(x).view(b, t, self.num_heads, self.d_k).transpose(1, 2)
        v = self.w_v(x).view(b, t, self.num_heads, self.d_k).transpose(1, 2)
        if kv_cache is not None and kv_cache.get("k") is not None:
            k = torch.cat([kv_cache["k"], k], dim=2)
            v = torch.cat([kv_cache["v"], v], dim=2)
        new_cache = {"k": k, "v": v}
        out, probs = scaled_dot_product_attention(q, k, v, mask)
        out = out.transpose(1, 2).contiguous().view(b, t, self.d_model)
        return self.w_o(out), probs, new_cache


class MoEFeedForward(nn.Module):
    """Router Linear(+bias) -> softmax -> top-k (ties to the lower expert index) -> renormalised weights;
    experts Linear -> GELU(erf) -> Linear; capacity int(capacity_factor * N * k / E) with N = B*T tokens of
    this call; per expert, assignments are kept in flattened token order until capacity is reached, later
    ones dropped (contributing 0, remaining weights not renormalised)."""

    def __init__(self, d_model, num_experts, top_k, expert_dim, capacity_factor):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.router = nn.Linear(d_model, num_experts)
        self.experts = nn.ModuleList([
            nn.Sequential(nn.Linear(d_model, expert_dim), nn.GELU(), nn.Linear(expert_dim, d_model))
            for _ in range(num_experts)
        ])

    def capacity(self, num_tokens: int) -> int:
        return int(self.capacity_factor * num_tokens * self.top_k / self.num_experts)

    def forward(self, x):
        b, t, d = x.shape
        n = b * t
        flat = x.reshape(n, d)
        probs = F.softmax(self.router(flat), dim=-1)  # [N, E]
        # stable descending sort: equal probabilities keep ascending expert order
        sorted_p, sorted_i = torch.sort(probs, dim=-1, descending=True, stable=True)
        top_p, top_i = sorted_p[:, : self.top_k], sorted_i[:, : self.top_k]
        weights = top_p / top_p.sum(dim=-1, keepdim=True)  # [N, k]

        cap = self.capacity(n)
        kept = torch.zeros(n, self.top_k, dtype=torch.bool)
        counts = [0] * self.num_experts
        for tok in range(n):
            for slot in range(self.top_k):
                e = int(top_i[tok, slot])
                if counts[e] < cap:
                    counts[e] += 1
                    kept[tok, slot] = True

        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            sel = (top_i == e) & kept  # [N, k]
            tokens = sel.any(dim=-1).nonzero().squeeze(-1)
            if tokens.numel() == 0:
                continue
            w = (weights * sel.float()).sum(dim=-1)[tokens]  # [n_e]
            out[tokens] += expert(flat[tokens]) * w[:, None]
        record = {
            "router_probs": probs.view(b, t, -1),
            "experts": top_i.view(b, t, -1),
            "weights": weights.view(b, t, -1),
            "kept": kept.view(b, t, -1),
            "capacity": cap,
        }
        return out.view(b, t, d), record


class DecoderBlock(nn.Module):
    """Pre-norm block: x + self_attn(norm1(x)), then x + feed_forward(norm2(x)). The feed-forward is the seed's
    ReLU MLP, GPT-2's GELU-tanh MLP (``activation="gelu_tanh"``) or a MoE; ``attention_only`` drops it
    together with norm2 (no tensors for either)."""

    def __init__(self, d_model, num_heads, d_ff, moe: Optional[Dict[str, Any]] = None, activation: str = "relu",
                 attention_only: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        self.self_attn = CausalSelfAttention(d_model, num_heads)
        self.attention_only = attention_only
        if attention_only:
            if moe is not None:
                raise ValueError("attention_only excludes moe")
        elif moe is None:
            if activation == "relu":
                self.feed_forward = ReluFeedForward(d_model, d_ff)
            elif activation == "gelu_tanh":
                self.feed_forward = GeluTanhFeedForward(d_model, d_ff)
            else:
                raise ValueError(f"unknown decoder activation {activation!r}")
        else:
            if activation != "relu":
                raise ValueError("a MoE decoder takes no activation but relu (its experts use GELU)")
            self.feed_forward = MoEFeedForward(d_model, moe["num_experts"], moe["top_k"], moe["expert_dim"],
                                               moe["capacity_factor"])
        self.norm1 = nn.LayerNorm(d_model, eps=norm_eps)
        if not attention_only:
            self.norm2 = nn.LayerNorm(d_model, eps=norm_eps)

    def forward(self, x, mask, kv_cache=None):
        a, probs, cache = self.self_attn(self.norm1(x), mask, kv_cache)
        x = x + a
        record = None
        if self.attention_only:
            return x, probs, cache, record
        if isinstance(self.feed_forward, MoEFeedForward):
            f, record = self.feed_forward(self.norm2(x))
        else:
            f = self.feed_forward(self.norm2(x))
        x = x + f
        return x, probs, cache, record


class DecoderLM(nn.Module):
    """The seed's decoder-only LLM. Optional config keys (absent = the seed's model):
    ``positions`` "sinusoidal" (default: embedding * sqrt(d_model) + the sinusoidal table) or "learned" (GPT-2: a
    ``position_embedding`` table added to the unscaled embedding); ``activation`` "relu" (default) or "gelu_tanh";
    ``tie_embeddings`` (the head is ``token_embedding.weight``, no ``lm_head``); ``norm_eps`` (LayerNorm eps,
    default 1e-5); ``attention_only`` (blocks without norm2 and feed-forward)."""

    def __init__(self, config: Dict[str, Any]):
        super().__init__()
        self.config = config
        c = config
        self.d_model = c["d_model"]
        positions = c.get("positions", "sinusoidal")
        if positions not in ("sinusoidal", "learned"):
            raise ValueError(f"unknown decoder positions {positions!r}")
        self.learned_positions = positions == "learned"
        self.tie_embeddings = bool(c.get("tie_embeddings", False))
        eps = c.get("norm_eps", 1e-5)
        attention_only = bool(c.get("attention_only", False))
        self.token_embedding = nn.Embedding(c["vocab_size"], c["d_model"])
        if self.learned_positions:
            self.position_embedding = nn.Embedding(c["max_seq_len"], c["d_model"])
        else:
            self.pos_encoding = PositionalEncoding(c["d_model"], c["max_seq_len"])
        self.decoder_layers = nn.ModuleList([
            DecoderBlock(c["d_model"], c["num_heads"], None if attention_only else c.get("d_ff"), c.get("moe"),
                         c.get("activation", "relu"), attention_only, eps)
            for _ in range(c["num_layers"])
        ])
        self.ln_f = nn.LayerNorm(c["d_model"], eps=eps)
        if not self.tie_embeddings:
            self.lm_head = nn.Linear(c["d_model"], c["vocab_size"], bias=False)

    def forward(self, ids, kv_cache: Optional[List[Dict[str, torch.Tensor]]] = None):
        """ids [B, T]. With kv_cache (a list, one dict per layer, possibly empty dicts) the new tokens are placed
        after the cached ones and the returned dict carries the updated ``kv_cache``."""
        b, t = ids.shape
        cached = 0
        if kv_cache is not None and kv_cache[0].get("k") is not None:
            cached = kv_cache[0]["k"].size(2)
        if self.learned_positions:
            if cached + t > self.config["max_seq_len"]:
                raise ValueError(f"sequence of {cached + t} positions exceeds max_seq_len {self.config['max_seq_len']}")
            x = self.token_embedding(ids) + self.position_embedding(torch.arange(cached, cached + t, device=ids.device))
        else:
            x = self.token_embedding(ids) * math.sqrt(self.d_model)
            x = self.pos_encoding(x, start=cached)
        mask = look_ahead_mask(t, cached)[None].expand(b, t, cached + t)
        attention, moe, new_cache = [], [], []
        for i, layer in enumerate(self.decoder_layers):
            x, probs, cache, record = layer(x, mask[:, None], None if kv_cache is None else kv_cache[i])
            attention.append({"kind": "decoder", "layer": i, "weights": probs})
            new_cache.append(cache)
            if record is not None:
                moe.append(record)
        h = self.ln_f(x)
        logits = F.linear(h, self.token_embedding.weight) if self.tie_embeddings else self.lm_head(h)
        out = {"logits": logits, "attention": attention, "masks": {"decoder": mask}}
        if moe:
            out["moe"] = moe
        if kv_cache is not None:
            out["kv_cache"] = new_cache
        return out


# ----------------------------------------------------------------------------------------------------------
# Llama (seed 004): RMSNorm, RoPE on adjacent pairs, GQA/MQA, SwiGLU, no biases, untied output
# ----------------------------------------------------------------------------------------------------------


def llama_ffn_hidden(d_model: int, multiple_of: int) -> int:
    hidden = int(2 * (4 * d_model) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def precompute_freqs_cis(head_dim: int, end: int, theta: float) -> torch.Tensor:
    """complex64 [end, head_dim/2]: exp(i * pos * theta^(-2j/head_dim)), float32 as the seed computes it."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: (head_dim // 2)].float() / head_dim))
    t = torch.arange(end, dtype=torch.float32)
    freqs = torch.outer(t, freqs)
    return torch.polar(torch.ones_like(freqs), freqs)


def _at_least_f32(dtype: torch.dtype) -> torch.dtype:
    """float32 for the 16-bit and 32-bit types (the seed's ``.float()``), float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, hd]; pairs (x[2j], x[2j+1]) are rotated as complex numbers by freqs_cis [T, hd/2]."""
    xc = torch.view_as_complex(x.to(_at_least_f32(x.dtype)).reshape(*x.shape[:-1], -1, 2))
    fc = freqs_cis.view(1, xc.size(1), 1, xc.size(-1)).to(xc.dtype)
    return torch.view_as_real(xc * fc).flatten(3).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.to(_at_least_f32(x.dtype))
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class LlamaAttention(nn.Module):
    def __init__(self, d_model, num_heads, num_kv_heads):
        super().__init__()
        assert d_model % num_heads == 0 and num_heads % num_kv_heads == 0
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = d_model // num_heads
        self.wq = nn.Linear(d_model, num_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(num_heads * self.head_dim, d_model, bias=False)

    def forward(self, x, freqs_cis, mask, kv_cache=None):
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.num_heads, self.head_dim)
        k = self.wk(x).view(b, t, self.num_kv_heads, self.head_dim)
        v = self.wv(x).view(b, t, self.num_kv_heads, self.head_dim)
        q = apply_rotary_emb(q, freqs_cis)
        k = apply_rotary_emb(k, freqs_cis)
        if kv_cache is not None and kv_cache.get("k") is not None:
            k = torch.cat([kv_cache["k"], k], dim=1)
            v = torch.cat([kv_cache["v"], v], dim=1)
        new_cache = {"k": k, "v": v}
        rep = self.num_heads // self.num_kv_heads
        # query head h reads KV head h // rep
        k = torch.repeat_interleave(k, rep, dim=2)
        v = torch.repeat_interleave(v, rep, dim=2)
        out, probs = scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        out = out.transpose(1, 2).contiguous().view(b, t, -1)
        return self.wo(out), probs, new_cache


class SwiGLU(nn.Module):
    def __init__(self, d_model, hidden):
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden, bias=False)  # gate
        self.w2 = nn.Linear(hidden, d_model, bias=False)  # down
        self.w3 = nn.Linear(d_model, hidden, bias=False)  # up

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LlamaBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        eps = c.get("norm_eps", 1e-6)
        self.attention = LlamaAttention(c["d_model"], c["num_heads"], c["num_kv_heads"])
        self.feed_forward = SwiGLU(c["d_model"], llama_ffn_hidden(c["d_model"], c["multiple_of"]))
        self.attention_norm = RMSNorm(c["d_model"], eps)
        self.ffn_norm = RMSNorm(c["d_model"], eps)

    def forward(self, x, freqs_cis, mask, kv_cache=None):
        a, probs, cache = self.attention(self.attention_norm(x), freqs_cis, mask, kv_cache)
        h = x + a
        return h + self.feed_forward(self.ffn_norm(h)), probs, cache


class Llama(nn.Module):
    def __init__(self, config: Dict[str, Any]):
        super().__init__()
        self.config = config
        c = config
        self.tok_embeddings = nn.Embedding(c["vocab_size"], c["d_model"])
        self.layers = nn.ModuleList([LlamaBlock(c) for _ in range(c["num_layers"])])
        self.norm = RMSNorm(c["d_model"], c.get("norm_eps", 1e-6))
        self.output = nn.Linear(c["d_model"], c["vocab_size"], bias=False)
        head_dim = c["d_model"] // c["num_heads"]
        # seed: precomputed for 2 * seq_len positions; not part of the checkpoint
        self.register_buffer("freqs_cis",
                             precompute_freqs_cis(head_dim, c["max_seq_len"] * 2, c.get("rope_theta", 10000.0)),
                             persistent=False)

    def forward(self, ids, kv_cache=None):
        b, t = ids.shape
        cached = 0
        if kv_cache is not None and kv_cache[0].get("k") is not None:
            cached = kv_cache[0]["k"].size(1)
        if cached + t > self.config["max_seq_len"]:
            raise ValueError("sequence exceeds max_seq_len")
        x = self.tok_embeddings(ids)  # no sqrt(d_model) scaling
        freqs = self.freqs_cis[cached : cached + t]
        mask = look_ahead_mask(t, cached)[None].expand(b, t, cached + t)
        attention, new_cache = [], []
        for i, layer in enumerate(self.layers):
            x, probs, cache = layer(x, freqs, mask[:, None], None if kv_cache is None else kv_cache[i])
            attention.append({"kind": "decoder", "layer": i, "weights": probs})
            new_cache.append(cache)
        logits = self.output(self.norm(x))
        logits = logits.to(_at_least_f32(logits.dtype))
        out = {"logits": logits, "attention": attention, "masks": {"decoder": mask}}
        if kv_cache is not None:
            out["kv_cache"] = new_cache
        return out


# ----------------------------------------------------------------------------------------------------------


def build_model(config: Dict[str, Any]) -> nn.Module:
    arch = config["arch"]
    if arch == "encoder_decoder":
        model = EncoderDecoder(config)
    elif arch == "decoder":
        model = DecoderLM(config)
    elif arch == "llama":
        model = Llama(config)
    else:
        raise ValueError(f"unknown arch {arch!r}")
    return model.eval()


@torch.no_grad()
def greedy_uncached(model: nn.Module, prompt: torch.Tensor, max_new_tokens: int):
    """Decoder/llama greedy: append the argmax of the last position, recomputing the whole sequence each step.
    Returns (ids [B, T0+n], list of last-position logits per step)."""
    ids = prompt
    steps = []
    for _ in range(max_new_tokens):
        last = model(ids)["logits"][:, -1, :]
        steps.append(last)
        ids = torch.cat([ids, last.argmax(dim=-1, keepdim=True)], dim=1)
    return ids, steps


@torch.no_grad()
def greedy_cached(model: nn.Module, prompt: torch.Tensor, max_new_tokens: int):
    """Same as greedy_uncached with a KV cache: prefill the prompt, then feed one token at a time."""
    cache = [{} for _ in range(model.config["num_layers"])]
    out = model(prompt, kv_cache=cache)
    ids = prompt
    steps = []
    for step in range(max_new_tokens):
        last = out["logits"][:, -1, :]
        steps.append(last)
        nxt = last.argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        if step < max_new_tokens - 1:
            out = model(nxt, kv_cache=out["kv_cache"])
    return ids, steps
