"""Fixtures for opening foreign models from the page and the CLI with a text prompt.

train/hf_fixtures.py records each tiny model's greedy continuation of fixed ids (expected.json `greedy`). A
person types text instead, so this records, with transformers on the same saved models:

* llama_tied/tokenizer.bin: llama2.c's tokenizer.bin for llama_tied's tokenizer.json, written as llama2.c's
  tokenizer.py does (`export_llama2c_bin` of train/hf_tokenizer_fixtures.py), so that llama_tied/model.bin and
  tokenizer.bin make the pair a llama2.c user has;
* hf_models/page.json: for the GPT-2 directory (tokenizer.json) and for model.bin + tokenizer.bin (run.c's
  encode with BOS, `llama2c_encode`), the prompt text, its ids and the greedy continuation of
  `new_tokens` tokens (transformers' `generate(do_sample=False)`, the ids of the prompt then the new ones).

    python train/hf_page_fixtures.py        # after train/hf_fixtures.py
"""

from __future__ import annotations

import json
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_tokenizer_fixtures import export_llama2c_bin, llama2c_encode  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf_models")
PROMPT = "ROMEO:\nBut, soft! what light"
NEW_TOKENS = 8


def greedy(model_dir: str, ids: list[int]) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    return out[0].tolist()


def main():
    page = {"prompt": PROMPT, "new_tokens": NEW_TOKENS}
    gpt2 = os.path.join(OUT, "gpt2")
    ids = Tokenizer.from_file(os.path.join(gpt2, "tokenizer.json")).encode(PROMPT).ids
    page["gpt2"] = {"ids": ids, "greedy": greedy(gpt2, ids)}

    llama = os.path.join(OUT, "llama_tied")
    pieces, scores = export_llama2c_bin(Tokenizer.from_file(os.path.join(llama, "tokenizer.json")),
                                        os.path.join(llama, "tokenizer.bin"))
    ids = llama2c_encode(pieces, scores, PROMPT.encode("utf-8"), bos=True, eos=False)
    page["llama2c"] = {"ids": ids, "greedy": greedy(llama, ids)}
    with open(os.path.join(OUT, "page.json"), "w") as f:
        json.dump(page, f, indent=1)
    print(json.dumps(page))


if __name__ == "__main__":
    main()
