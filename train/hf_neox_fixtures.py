"""Tiny GPT-NeoX (Pythia) model directories and their expected outputs, made like train/hf_fixtures.py's (random
weights, norm weights and biases randomised, `save_pretrained`, a small byte-level tokenizer, expected.json
computed by transformers in float32 with eager attention), in a script of their own so that the other
fixtures are not regenerated.

    python train/hf_neox_fixtures.py

Written under tests/fixtures/hf_models/<name>/:

- pythia_parallel: GPTNeoXForCausalLM as the Hub's Pythia checkpoints are: use_parallel_residual true,
  rotary_pct 0.25 (4 of each head's 16 dims rotate), rotary_emb_base 10000, attention biases, hidden_act "gelu"
  (the erf form), untied embed_out, float16 weights, a config.json in the pre-transformers-5 spelling
  (rotary_pct / rotary_emb_base / rope_scaling null, no rope_parameters) and a vocabulary of 400 padded above
  the tokenizer's 376 (Pythia: 50,304 vs 50,277). Its model.safetensors also holds the buffers older exports
  saved beside the weights: per layer attention.bias (BOOL causal mask, (1, 1, 64, 64)), attention.masked_bias
  (F32 scalar) and attention.rotary_emb.inv_freq (F32). expected.json comes from the directory reloaded by
  transformers (so its reading of the old config and the f16 weights widened to f32 is what is checked).
- pythia_sequential: use_parallel_residual false (the usual sequential pre-norm block), rotary_pct 0.5 (8 of
  16 dims), rope_theta 1000, attention_bias false, 3 layers, float32, config.json as transformers 5 writes it
  (rope_parameters {partial_rotary_factor, rope_theta, rope_type}).

expected.json holds what hf_fixtures.py's does: ids, logits of every row, attention maps, greedy (8 tokens); and what
the Inspect view must reproduce (`look_inside`): the top id of the logit lens after each attention half, and the last
row of logits with two heads zeroed.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_fixtures import OUT, VOCAB, byte_level_tokenizer, corpus, expected, randomise, save  # noqa: E402

CONTEXT = 64


def neox(vocab, layers, pct, theta, parallel, bias):
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=CONTEXT, rotary_pct=pct, rotary_emb_base=theta,
                        use_parallel_residual=parallel, attention_bias=bias, hidden_act="gelu", layer_norm_eps=1e-5,
                        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    return GPTNeoXForCausalLM(cfg)


def sharpen(model, scale=5.0):
    """Matmul weights 5x transformers' init (std 0.1): attention that is far from uniform and MLP pre-activations of
    order 1, so that the logits tell the erf GELU from the tanh one and partial rotary from full (see `sensitive`)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed_in" not in name:
                p.mul_(scale)


def sensitive(model, ids, min_ratio=3.0):
    """Each thing the loader must get right moves some logit by more than `min_ratio` times the Rust tests' tolerance
    (1e-4 + 1e-4 |want|, tests/hf_models.rs): the activation (erf vs tanh GELU: the smallest, ~6x; their values
    differ by at most ~2e-4), the rotary dims (partial vs the whole head), the residual form (parallel vs not)."""
    from transformers.activations import ACT2FN
    model.eval()
    with torch.no_grad():
        base = model(ids).logits
        ratio = lambda: ((model(ids).logits - base).abs() / (1e-4 + 1e-4 * base.abs())).max().item()  # noqa: E731
        layers = model.gpt_neox.layers
        acts = [layer.mlp.act for layer in layers]
        for layer in layers:
            layer.mlp.act = ACT2FN["gelu_new"]
        r_act = ratio()
        for layer, a in zip(layers, acts):
            layer.mlp.act = a
        rot = model.gpt_neox.rotary_emb
        inv, hd = rot.inv_freq.clone(), model.config.hidden_size // model.config.num_attention_heads
        rot.inv_freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        r_rot = ratio()
        rot.inv_freq = inv
        for layer in layers:
            layer.use_parallel_residual = not layer.use_parallel_residual
        r_par = ratio()
        for layer in layers:
            layer.use_parallel_residual = not layer.use_parallel_residual
    print(f"  logit change / tolerance: tanh GELU {r_act:.1f}, full rotary {r_rot:.0f}, other residual form {r_par:.0f}")
    assert min(r_act, r_rot, r_par) > min_ratio, (r_act, r_rot, r_par)


ABLATE = [(0, 1), (1, 2)]


def look_inside(model, ids):
    """What the page's Inspect view computes, by transformers' hooks: `lens_mid_top1` [layer][position], the top id of
    the logit lens (final norm, then embed_out) of the residual after each block's attention half (the block's input
    plus its attention output: for the parallel block too, the FFN half not yet added); `ablated_last`, the last row
    of logits with heads ABLATE (layer, head) zeroed before the attention's output projection `dense`."""
    model.eval()
    inner, hd = model.gpt_neox, model.config.hidden_size // model.config.num_attention_heads
    mids, hooks = [], []
    for layer in inner.layers:
        def pre(mod, args, kwargs):
            mod._x = args[0] if args else kwargs["hidden_states"]
        hooks.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        hooks.append(layer.attention.register_forward_hook(lambda m, a, out, layer=layer: mids.append(layer._x + out[0])))
    with torch.no_grad():
        model(ids)
        lens = [model.get_output_embeddings()(inner.final_layer_norm(m))[0].argmax(-1).tolist() for m in mids]
    for h in hooks:
        h.remove()

    def ablate(layer_index):
        def zero(mod, args):
            x = args[0].clone()
            for (l, h) in ABLATE:
                if l == layer_index:
                    x[..., h * hd:(h + 1) * hd] = 0
            return (x,)
        return zero
    hooks = [layer.attention.dense.register_forward_pre_hook(ablate(i)) for i, layer in enumerate(inner.layers)]
    with torch.no_grad():
        last = model(ids).logits[0, -1]
    for h in hooks:
        h.remove()
    return {"lens_mid_top1": lens, "ablate": ABLATE, "ablated_last": [round(float(x), 6) for x in last]}


def hub_style(d, layers, rot):
    """The config.json and buffers of a Hub Pythia checkpoint (transformers 4.x era)."""
    path = os.path.join(d, "config.json")
    c = json.load(open(path))
    rp = c.pop("rope_parameters")
    c["rotary_pct"] = rp["partial_rotary_factor"]
    c["rotary_emb_base"] = int(rp["rope_theta"])
    c["rope_scaling"] = None
    c["torch_dtype"] = "float16"
    c.pop("dtype", None)
    c["transformers_version"] = "4.24.0"
    with open(path, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")
    st = os.path.join(d, "model.safetensors")
    sd = load_file(st)
    inv_freq = 1.0 / (c["rotary_emb_base"] ** (torch.arange(0, rot, 2).float() / rot))
    for i in range(layers):
        p = f"gpt_neox.layers.{i}.attention"
        sd[f"{p}.bias"] = torch.tril(torch.ones(CONTEXT, CONTEXT, dtype=torch.bool)).view(1, 1, CONTEXT, CONTEXT)
        sd[f"{p}.masked_bias"] = torch.tensor(-1e9)
        sd[f"{p}.rotary_emb.inv_freq"] = inv_freq.clone()
    save_file(sd, st, metadata={"format": "pt"})


def main():
    torch.manual_seed(0)
    tok, extra = byte_level_tokenizer(corpus())

    # Pythia as the Hub has it
    m = neox(vocab=400, layers=2, pct=0.25, theta=10000, parallel=True, bias=True)
    randomise(m, 20)
    sharpen(m)
    save("pythia_parallel", m, tok, extra, dtype=torch.float16)
    d = os.path.join(OUT, "pythia_parallel")
    hub_style(d, layers=2, rot=4)
    # expected.json from what transformers reads back: the old config spelling, the extra buffers, f16 -> f32
    back = GPTNeoXForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32)
    assert back.config.use_parallel_residual and back.config.rope_parameters["partial_rotary_factor"] == 0.25
    assert back.gpt_neox.layers[0].attention.rotary_ndims == 4
    exp = expected(back, tok, tok.get_vocab_size())
    exp.update(look_inside(back, torch.tensor([exp["ids"]])))
    sensitive(back, torch.tensor([exp["ids"]]))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f, separators=(",", ":"))
        f.write("\n")

    m = neox(vocab=VOCAB, layers=3, pct=0.5, theta=1000, parallel=False, bias=False)
    randomise(m, 21)
    sharpen(m)
    save("pythia_sequential", m, tok, extra)
    back = GPTNeoXForCausalLM.from_pretrained(os.path.join(OUT, "pythia_sequential"), attn_implementation="eager")
    assert not back.config.use_parallel_residual and back.gpt_neox.layers[0].attention.rotary_ndims == 8
    path = os.path.join(OUT, "pythia_sequential", "expected.json")
    exp = json.load(open(path))
    exp.update(look_inside(back, torch.tensor([exp["ids"]])))
    with open(path, "w") as f:
        json.dump(exp, f, separators=(",", ":"))
        f.write("\n")
    sensitive(back, torch.tensor([exp["ids"]]))
    for name in ("pythia_parallel", "pythia_sequential"):
        files = sorted(os.listdir(os.path.join(OUT, name)))
        size = sum(os.path.getsize(os.path.join(OUT, name, f)) for f in files)
        print(f"{name}: {size // 1024} KiB: {', '.join(files)}")


if __name__ == "__main__":
    main()
