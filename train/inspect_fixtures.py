"""Expected values for the look-inside tools (logit lens, head scores, ablation), computed by train/reference.py with PyTorch hooks.

    python train/inspect_fixtures.py

For each reference fixture checkpoint in tests/fixtures/models/ it writes tests/fixtures/inspect/<name>.json with:
- the inputs (`ids`, or `src_ids` + `tgt_ids` for the encoder-decoder: everything refers to the decoder);
- `lens_probs` / `lens_mid_probs`: [layer][position][vocab] softmax of the unembedded residual (final norm first
  for the pre-norm stacks) after each block / after each attention half (forward hooks on the blocks and norms);
- `residual_norms` [1 + layers][position] (index 0: the embedding output, positional encoding included);
- `head_scores` {previous_token, duplicate_token, induction} [layer][head], TransformerLens head_detector "mul"
  measure with no exclusions: sum(A * D) / sum(A);
- `attention_entropy` [layer][head][position] in nats; `surprise` [position] (0 at position 0);
- `ablations`: a zero and a mean ablation (forward pre-hooks on the output projections that zero a head's
  columns, or set them to the head's mean over the sequence from the clean run), and for the MoE models two
  experts removed from routing (a forward hook adding -1e9 to their router logits), each with `logits_last` and
  `kl_last` = KL(clean || ablated) of the last position's next-token distribution; and one with `mask_cells`:
  (query, key) cells of the decoder self-attention blocked on top of its causal / look-ahead mask (the
  reference's look_ahead_mask patched to zero them; row 0 is blocked entirely, so it attends nothing); and for
  the encoder-decoder one with `cross_cells`: (query, source key) cells of the cross mask blocked (its masks()
  patched on the instance).
Everything in float32 as the Rust core runs, except the reductions (f64 in numpy).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from export import load_checkpoint  # noqa: E402
import reference  # noqa: E402
from reference import build_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "inspect")

NAMES = ["decoder_a", "decoder_b", "moe_a", "moe_b", "llama_gqa", "llama_mqa", "encdec_a", "encdec_b"]
# repeated tokens, so that duplicate-token and induction scores are not trivially zero
LM_IDS = [5, 9, 3, 7, 12, 5, 9, 3, 7, 12, 5]
ENCDEC_TGT = [1, 4, 8, 6, 4, 8, 6]


def parts(model, arch):
    """(blocks, embedding-output module, mid hook (module, 'pre'|'post'), W_o of each block, lens fn)."""
    if arch == "decoder":
        blocks = list(model.decoder_layers)
        return (blocks, model.pos_encoding, [(b.norm2, "pre") for b in blocks], [b.self_attn.w_o for b in blocks],
                lambda x: model.lm_head(model.ln_f(x)))
    if arch == "llama":
        blocks = list(model.layers)
        return (blocks, model.tok_embeddings, [(b.ffn_norm, "pre") for b in blocks], [b.attention.wo for b in blocks],
                lambda x: model.output(model.norm(x)))
    blocks = list(model.decoder.layers)
    return (blocks, model.decoder.pos_encoding, [(b.norm1, "post") for b in blocks],
            [b.self_attention.W_o for b in blocks], lambda x: model.final_layer(x))


def run(model, arch, inputs, ablate=None, experts=(), cells=(), xcells=()):
    """One forward with hooks. ablate: (kind, {layer: [heads]}, means [layer][NH*HS]) or None; experts:
    (layer, expert) pairs removed from routing (-1e9 added to their router logits); cells: (query, key)
    self-attention cells blocked (the causal mask that every decoder stack builds has 0 there); xcells:
    (query, source key) cells of the encoder-decoder's cross mask blocked (0 on top of the source padding)."""
    if xcells:
        plain_masks = model.masks

        def masks(src, tgt):
            m = plain_masks(src, tgt)
            c = m["cross"].clone()
            for q, k in xcells:
                c[:, q, k] = 0.0
            return {**m, "cross": c}
        model.masks = masks
        try:
            return run(model, arch, inputs, ablate, experts, cells)
        finally:
            del model.masks
    if cells:
        plain = reference.look_ahead_mask

        def blocked(seq_len, cached_len=0):
            m = plain(seq_len, cached_len).clone()
            for q, k in cells:
                m[q - cached_len, k] = 0.0
            return m
        reference.look_ahead_mask = blocked
        try:
            return run(model, arch, inputs, ablate, experts)
        finally:
            reference.look_ahead_mask = plain
    blocks, emb, mids, w_os, lens = parts(model, arch)
    nh = model.config["num_heads"]
    cap = {"resid": [None] * (len(blocks) + 1), "mid": [None] * len(blocks), "heads": [None] * len(blocks)}
    hooks = [emb.register_forward_hook(lambda m, i, o: cap["resid"].__setitem__(0, o.detach().clone()))]
    for li, b in enumerate(blocks):
        hooks.append(b.register_forward_hook(lambda m, i, o, li=li: cap["resid"].__setitem__(li + 1, o[0].detach().clone())))
        mod, when = mids[li]
        if when == "pre":
            hooks.append(mod.register_forward_pre_hook(lambda m, i, li=li: cap["mid"].__setitem__(li, i[0].detach().clone())))
        else:
            hooks.append(mod.register_forward_hook(lambda m, i, o, li=li: cap["mid"].__setitem__(li, o.detach().clone())))

        def pre_wo(m, i, li=li):
            x = i[0]
            cap["heads"][li] = x.detach().clone()
            if ablate is None or li not in ablate[1]:
                return None
            x = x.clone()
            hs = x.shape[-1] // nh
            for h in ablate[1][li]:
                if ablate[0] == "zero":
                    x[..., h * hs:(h + 1) * hs] = 0.0
                else:
                    x[..., h * hs:(h + 1) * hs] = torch.tensor(ablate[2][li][h * hs:(h + 1) * hs])
            return (x,)

        hooks.append(w_os[li].register_forward_pre_hook(pre_wo))
        removed = [e for (l, e) in experts if l == li]
        if removed:
            def router_out(m, i, o, removed=removed):
                o = o.clone()
                o[..., removed] += -1e9
                return o
            hooks.append(b.feed_forward.router.register_forward_hook(router_out))
    try:
        with torch.no_grad():
            out = model(*inputs)
            lens_post = [lens(r) for r in cap["resid"][1:]]
            lens_mid = [lens(r) for r in cap["mid"]]
    finally:
        for h in hooks:
            h.remove()
    maps = [a["weights"][0].double().numpy() for a in out["attention"] if a["kind"] == "decoder"]
    return out["logits"][0].double().numpy(), maps, cap, lens_post, lens_mid


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def detection(kind, ids):
    t = len(ids)
    d = np.zeros((t, t))
    for i in range(t):
        for j in range(t):
            if kind == "previous_token":
                d[i, j] = i >= 1 and j == i - 1
            elif kind == "duplicate_token":
                d[i, j] = j < i and ids[j] == ids[i]
            else:
                d[i, j] = 1 <= j <= i and ids[j - 1] == ids[i]
    return d


def r(x, n=7):
    return np.round(np.asarray(x, dtype=np.float64), n).tolist()


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    for name in NAMES:
        tensors, config, _ = load_checkpoint(os.path.join(MODELS, f"{name}.safetensors"))
        model = build_model(config)
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        assert not [k for k in missing if not k.endswith("freqs_cis")], missing
        arch = config["arch"]
        if arch == "encoder_decoder":
            src = json.load(open(os.path.join(MODELS, f"{name}.json")))["inputs"]["src_ids"]
            ids = ENCDEC_TGT
            inputs = (torch.tensor([src]), torch.tensor([ids]))
        else:
            src = None
            ids = LM_IDS
            inputs = (torch.tensor([ids]),)
        logits, maps, cap, lens_post, lens_mid = run(model, arch, inputs)
        t, nh = len(ids), config["num_heads"]
        lp = log_softmax(logits)
        surprise = [0.0] + [float(-lp[i - 1, ids[i]]) for i in range(1, t)]
        scores = {}
        for kind in ["previous_token", "duplicate_token", "induction"]:
            d = detection(kind, ids)
            scores[kind] = [[float((m[h] * d).sum() / m[h].sum()) for h in range(nh)] for m in maps]
        entropy = [[(-(np.where(m[h] > 0, m[h] * np.log(np.where(m[h] > 0, m[h], 1.0)), 0.0)).sum(-1)).tolist()
                    for h in range(nh)] for m in maps]
        norms = [np.linalg.norm(x[0].double().numpy(), axis=-1).tolist() for x in cap["resid"]]
        lens_probs = [np.exp(log_softmax(x[0].double().numpy())) for x in lens_post]
        mid_probs = [np.exp(log_softmax(x[0].double().numpy())) for x in lens_mid]
        means = [h[0].double().numpy().mean(0).tolist() for h in cap["heads"]]
        ablations = []
        cases = [("zero", [(1, 0)], []), ("mean", [(0, nh - 1), (1, 0)], [])]
        if config.get("moe"):
            cases.append(("zero", [], [(0, 1), (1, 2)]))  # experts removed from routing, no head
        cases.append(("zero", [], [], [(t - 1, 1), (t - 1, 2), (4, 0), (0, 0)]))  # mask cells blocked, no head
        if src is not None:  # cross-attention cells blocked, no head: the last row sees only source 2 and 3
            cases.append(("zero", [], [], [], [(t - 1, 0), (t - 1, 1), (2, 3), (0, 0)]))
        for kind, heads, experts, *more in cases:
            cells = more[0] if more else []
            xcells = more[1] if len(more) > 1 else []
            per = {}
            for li, h in heads:
                per.setdefault(li, []).append(h)
            ab_logits, ab_maps, *_ = run(model, arch, inputs, (kind, per, means), experts, cells, xcells)
            a, b = log_softmax(logits[-1]), log_softmax(ab_logits[-1])
            case = {"kind": kind, "heads": heads, "experts": experts, "logits_last": r(ab_logits[-1]),
                    "kl_last": float((np.exp(a) * (a - b)).sum())}
            if cells:
                for m in ab_maps:
                    assert all(m[:, q, k].max() == 0.0 for q, k in cells) and m[:, 0].max() == 0.0
                case["mask_cells"] = cells
            if xcells:
                case["cross_cells"] = xcells
            ablations.append(case)
        out = {
            "name": name, "arch": arch, "ids": ids, "logits": r(logits),
            "lens_probs": [r(x) for x in lens_probs], "lens_mid_probs": [r(x) for x in mid_probs],
            "residual_norms": r(norms, 6), "head_scores": {k: r(v) for k, v in scores.items()},
            "attention_entropy": r(entropy), "surprise": r(surprise), "ablations": ablations,
        }
        if src is not None:
            out["src_ids"] = src
            out["tgt_ids"] = ids
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(out, f, separators=(",", ":"))
            f.write("\n")
        print(name, "ok")


if __name__ == "__main__":
    main()
