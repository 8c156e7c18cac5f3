"""Tiny Hugging Face model directories and their expected outputs, for the foreign-format loader tests.

    python train/hf_fixtures.py

No Hub access is needed: the `transformers` package builds each model from a config with random weights
(norm weights and biases randomised too, so that a loader that drops them fails), `save_pretrained` writes
the directory, and the same model in float32 with `attn_implementation="eager"` computes what the Rust loader
must reproduce. Written under tests/fixtures/hf_models/<name>/:

- config.json, generation_config.json, model.safetensors (or shards + model.safetensors.index.json),
  tokenizer.json + tokenizer_config.json (a small tokenizer trained here with the `tokenizers` package on the
  repository's Shakespeare text, in the form that model family uses);
- expected.json: `ids` (the prompt), `logits` [position][vocab] for every row, `attention`
  [layer][head][query][key] (softmax probabilities), `greedy` (the prompt plus 8 greedy tokens, argmax with
  no EOS stop), `text` and `text_ids` (a sentence and its ids under tokenizer.json).

The models:
- gpt2: GPT2LMHeadModel, learned positions, Conv1D, fused c_attn, gelu_new, lm_head tied to wte.
- llama_tied: LlamaForCausalLM with GQA (4 query heads, 2 KV heads), tie_word_embeddings, rope_theta 10000;
  also exported as llama2.c's legacy model.bin (llama_tied/model.bin: the 7-int32 header, f32 weights in its
  order, wq/wk permuted back from HF's rotate-half layout to Meta's adjacent pairs). Same expected.json.
- llama_untied_bf16: untied lm_head, rope_theta 500000, stored in bfloat16 and sharded (index + 2 files); its
  expected values come from the bf16 weights widened to float32, as the engine computes.
- qwen2: Qwen2ForCausalLM (Llama plus q/k/v biases), untied.
"""

from __future__ import annotations

import json
import lzma
import os
import struct

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers, Regex
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf_models")
VOCAB = 384
PROMPT_LEN = 10
NEW = 8
TEXT = "ROMEO:\nBut, soft! what light through yonder window breaks?"


def corpus(n=200_000):
    with lzma.open(os.path.join(ROOT, "data", "shakespeare.txt.xz"), "rt", encoding="utf-8") as f:
        return f.read(n)


def byte_level_tokenizer(text, llama3_split=False):
    """GPT-2 byte-level BPE; with llama3_split, the Llama-3 / Qwen2 form (a Split regex, then ByteLevel
    without its own regex)."""
    tok = Tokenizer(models.BPE())
    if llama3_split:
        # Qwen2's own tokenizer.json normalizes NFC (the corpus is ASCII, so the trained vocabulary is the same)
        tok.normalizer = normalizers.NFC()
        pat = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 8, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer)
    return tok, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}


def sentencepiece_tokenizer(text):
    """Llama-2 / TinyLlama form: "▁" for spaces (Prepend + Replace normalizer), byte fallback <0xXX> tokens
    at ids 3..258 after <unk> <s> </s>, decoder Replace + ByteFallback + Fuse + Strip."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 8, special_tokens=["<unk>", "<s>", "</s>"] + bytes_,
                                  show_progress=False)
    tok.train_from_iterator([text.replace(" ", "\u2581")], trainer)
    # The byte tokens are ordinary vocabulary entries in Llama's tokenizer.json, not added tokens.
    data = json.loads(tok.to_str())
    data["added_tokens"] = [a for a in data["added_tokens"] if a["content"] in ("<unk>", "<s>", "</s>")]
    tok = Tokenizer.from_str(json.dumps(data))
    return tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def randomise(model, seed):
    """Random norm weights and biases (HF initialises them to 1 and 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))


def expected(model, tok, vocab_used):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab_used, (1, PROMPT_LEN), generator=g)
    model.eval()
    with torch.no_grad():
        out = model(ids, output_attentions=True)
        seq = ids
        for _ in range(NEW):
            nxt = model(seq).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    r = lambda t: [round(float(x), 6) for x in t]  # noqa: E731
    return {
        "ids": ids[0].tolist(),
        "logits": [r(row) for row in out.logits[0]],
        "attention": [[[r(q) for q in h] for h in layer[0]] for layer in out.attentions],
        "greedy": seq[0].tolist(),
        "text": TEXT,
        "text_ids": tok.encode(TEXT).ids,
    }


def save(name, model, tok, tok_extra, dtype=None, shard=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    fp32 = model
    if dtype is not None:
        model = model.to(dtype)
        # what the engine computes: the stored 16-bit weights, widened to f32
        fp32 = model.to(torch.float32)
        model = fp32.to(dtype)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(d, safe_serialization=True, **kw)
    model.generation_config.save_pretrained(d)
    PreTrainedTokenizerFast(tokenizer_object=tok, **tok_extra).save_pretrained(d)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    exp = expected(fp32.to(torch.float32), tok, tok.get_vocab_size())
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f, separators=(",", ":"))
        f.write("\n")
    return fp32


def unpermute(w, n_heads):
    """HF's rotate-half layout back to Meta's adjacent pairs (the inverse of convert_llama_weights_to_hf's
    permute)."""
    dim1, dim2 = w.shape
    return w.view(n_heads, 2, dim1 // n_heads // 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def export_llama2c(model, path):
    """karpathy/llama2.c export.py legacy_export, from a HF LlamaForCausalLM."""
    c = model.config
    sd = {k: v.detach().to(torch.float32) for k, v in model.state_dict().items()}
    L = c.num_hidden_layers
    shared = c.tie_word_embeddings
    head_dim = c.hidden_size // c.num_attention_heads
    with open(path, "wb") as f:
        f.write(struct.pack("iiiiiii", c.hidden_size, c.intermediate_size, L, c.num_attention_heads,
                            c.num_key_value_heads, c.vocab_size if shared else -c.vocab_size,
                            c.max_position_embeddings))

        def w(t):
            f.write(t.contiguous().view(-1).numpy().astype("<f4").tobytes())
        w(sd["model.embed_tokens.weight"])
        for i in range(L):
            w(sd[f"model.layers.{i}.input_layernorm.weight"])
        for i in range(L):
            w(unpermute(sd[f"model.layers.{i}.self_attn.q_proj.weight"], c.num_attention_heads))
        for i in range(L):
            w(unpermute(sd[f"model.layers.{i}.self_attn.k_proj.weight"], c.num_key_value_heads))
        for i in range(L):
            w(sd[f"model.layers.{i}.self_attn.v_proj.weight"])
        for i in range(L):
            w(sd[f"model.layers.{i}.self_attn.o_proj.weight"])
        for i in range(L):
            w(sd[f"model.layers.{i}.post_attention_layernorm.weight"])
        for i in range(L):
            w(sd[f"model.layers.{i}.mlp.gate_proj.weight"])
        for i in range(L):
            w(sd[f"model.layers.{i}.mlp.down_proj.weight"])
        for i in range(L):
            w(sd[f"model.layers.{i}.mlp.up_proj.weight"])
        w(sd["model.norm.weight"])
        # freq_cis_real / freq_cis_imag, [seq_len, head_dim / 2] (run.c ignores them and computes RoPE itself)
        freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        ang = torch.outer(torch.arange(c.max_position_embeddings).float(), freqs)
        w(torch.cos(ang))
        w(torch.sin(ang))
        if not shared:
            w(sd["lm_head.weight"])


def llama2c_logits(path, ids):
    """A transcription of llama2.c's run.c forward (RoPE on adjacent pairs, theta 10000) over `ids`, all rows:
    the check that model.bin holds the same model as the HF directory after the permutation."""
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, L, nh, nkv, vocab, seq_len = struct.unpack("iiiiiii", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    data = torch.frombuffer(bytearray(raw[28:]), dtype=torch.float32)
    hd = dim // nh
    off = 0

    def take(*shape):
        nonlocal off
        n = 1
        for s in shape:
            n *= s
        t = data[off:off + n].view(*shape)
        off += n
        return t
    emb = take(vocab, dim)
    att_norm = take(L, dim)
    wq, wk, wv, wo = take(L, dim, dim), take(L, nkv * hd, dim), take(L, nkv * hd, dim), take(L, dim, dim)
    ffn_norm = take(L, dim)
    w1, w2, w3 = take(L, hidden, dim), take(L, dim, hidden), take(L, hidden, dim)
    norm = take(dim)
    take(seq_len, hd // 2)
    take(seq_len, hd // 2)
    wcls = emb if shared else take(vocab, dim)
    assert off == data.numel(), (off, data.numel())
    T = len(ids)
    x = emb[torch.tensor(ids)]
    rms = lambda v, w: v * torch.rsqrt((v * v).mean(-1, keepdim=True) + 1e-5) * w  # noqa: E731
    pos = torch.arange(T).float()[:, None]
    freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
    cos, sin = torch.cos(pos * freq), torch.sin(pos * freq)

    def rope(t):  # [T, heads, hd], adjacent pairs (2i, 2i+1)
        a, b = t[..., 0::2], t[..., 1::2]
        out = torch.empty_like(t)
        out[..., 0::2] = a * cos[:, None] - b * sin[:, None]
        out[..., 1::2] = a * sin[:, None] + b * cos[:, None]
        return out
    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(L):
        h = rms(x, att_norm[i])
        q = rope((h @ wq[i].T).view(T, nh, hd))
        k = rope((h @ wk[i].T).view(T, nkv, hd)).repeat_interleave(nh // nkv, dim=1)
        v = (h @ wv[i].T).view(T, nkv, hd).repeat_interleave(nh // nkv, dim=1)
        att = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / hd ** 0.5 + mask, -1)
        x = x + torch.einsum("hqk,khd->qhd", att, v).reshape(T, dim) @ wo[i].T
        h = rms(x, ffn_norm[i])
        x = x + (torch.nn.functional.silu(h @ w1[i].T) * (h @ w3[i].T)) @ w2[i].T
    return rms(x, norm) @ wcls.T


def main():
    torch.manual_seed(0)
    text = corpus()
    common = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0)

    tok, extra = byte_level_tokenizer(text)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=64, n_layer=2, n_head=4, activation_function="gelu_new",
                                      layer_norm_epsilon=1e-5, attn_implementation="eager", **common))
    randomise(gpt2, 10)
    save("gpt2", gpt2, tok, extra)

    sp, sp_extra = sentencepiece_tokenizer(text)
    llama_kw = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
                    bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    tied = LlamaForCausalLM(LlamaConfig(rope_theta=10000.0, tie_word_embeddings=True, **llama_kw))
    randomise(tied, 11)
    tied = save("llama_tied", tied, sp, sp_extra)
    export_llama2c(tied, os.path.join(OUT, "llama_tied", "model.bin"))
    exp = json.load(open(os.path.join(OUT, "llama_tied", "expected.json")))
    got = llama2c_logits(os.path.join(OUT, "llama_tied", "model.bin"), exp["ids"])
    err = (got - torch.tensor(exp["logits"])).abs().max().item()
    assert err < 1e-4, f"llama2.c transcription differs from transformers by {err}"
    print(f"llama2.c model.bin: run.c's forward matches transformers' logits within {err:.1e}")

    untied = LlamaForCausalLM(LlamaConfig(rope_theta=500000.0, tie_word_embeddings=False, **llama_kw))
    randomise(untied, 12)
    save("llama_untied_bf16", untied, sp, sp_extra, dtype=torch.bfloat16, shard="100KB")

    qtok, qextra = byte_level_tokenizer(text, llama3_split=True)
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
                                        use_sliding_window=False, bos_token_id=0, eos_token_id=0,
                                        attn_implementation="eager"))
    randomise(qwen, 13)
    save("qwen2", qwen, qtok, qextra)
    for name in sorted(os.listdir(OUT)):
        files = sorted(os.listdir(os.path.join(OUT, name)))
        size = sum(os.path.getsize(os.path.join(OUT, name, f)) for f in files)
        print(f"{name}: {size // 1024} KiB: {', '.join(files)}")


if __name__ == "__main__":
    main()
