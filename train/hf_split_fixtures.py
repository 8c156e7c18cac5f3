"""Two Hugging Face directories whose embedding and head are the largest tensors by far, for the tests of
tables split across storage bindings (tests/hf_models.rs, tests/browser/split.test.mjs):

    python train/hf_split_fixtures.py

Made as train/hf_fixtures.py makes its models (same tokenizers, `randomise`, `save`, expected.json), with a
vocabulary of 1000 over a width of 64 and a context of 24, so that a binding limit of 100,000 bytes holds every
other buffer (the largest: the logits, 24 x 1000 f32 = 96,000 bytes) while the tables span several bindings:

- gpt2_wide: GPT2LMHeadModel, f32, lm_head tied to wte (1000 x 64 f32 = 256,000 bytes).
- llama_wide_f16: LlamaForCausalLM, float16, untied lm_head (each 1000 x 64: 128,000 bytes kept 16-bit,
  256,000 widened to f32).
"""

import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import hf_fixtures as hf

VOCAB = 1000


def main():
    torch.manual_seed(0)
    hf.VOCAB = VOCAB  # the tokenizers are trained to this vocabulary
    text = hf.corpus()
    tok, extra = hf.byte_level_tokenizer(text)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=24, n_embd=64, n_layer=2, n_head=4,
                                      activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=0,
                                      eos_token_id=0, attn_implementation="eager"))
    hf.randomise(gpt2, 20)
    hf.save("gpt2_wide", gpt2, tok, extra)

    sp, sp_extra = hf.sentencepiece_tokenizer(text)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=24,
                                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                                         bos_token_id=1, eos_token_id=2, attn_implementation="eager"))
    hf.randomise(llama, 21)
    hf.save("llama_wide_f16", llama, sp, sp_extra, dtype=torch.float16)
    for name in ("gpt2_wide", "llama_wide_f16"):
        d = os.path.join(hf.OUT, name)
        files = sorted(os.listdir(d))
        print(f"{name}: {sum(os.path.getsize(os.path.join(d, f)) for f in files) // 1024} KiB: {', '.join(files)}")


if __name__ == "__main__":
    main()
