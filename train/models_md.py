"""Refresh MODELS.md's generated sections from the sidecars in models/*.json (run after training:
`python train/models_md.py`).

The script owns one `## <name>` section per model in ORDER (from its heading to the next `## ` heading) and
the "All checkpoints together" line; it rewrites those in place and leaves every other part of MODELS.md
(the introduction, data, tokenizers, the engine-trained models, the notes, the foreign models) as written
by hand. Rerunning it on unchanged sidecars leaves the file byte for byte as it was."""

from __future__ import annotations

import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ORDER = ["shakespeare-llama", "shakespeare-gpt", "shakespeare-moe", "dates-encdec"]



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
              "in `src/model/runtime/run.rs` on every backend) sets the logits of every token that cannot continue a valid "
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


TOTAL = re.compile(r"^All checkpoints together: [0-9,]+ bytes\.$", re.M)


def splice(text, name, body):
    """Replaces the section `## name` of `text` (up to the next `## ` heading) with `body`."""
    m = re.search(rf"^## {re.escape(name)}\n", text, re.M)
    if m is None:
        raise SystemExit(f"models_md: MODELS.md has no '## {name}' section to refresh")
    nxt = re.search(r"^## ", text[m.end():], re.M)
    end = m.end() + nxt.start() if nxt else len(text)
    return text[:m.start()] + body.rstrip("\n") + "\n\n" + text[end:]


def main():
    path = os.path.join(ROOT, "MODELS.md")
    text = open(path).read()
    for name in ORDER:
        p = os.path.join(ROOT, "models", name + ".json")
        if not os.path.exists(p):
            text = splice(text, name, f"## {name}\n\nNot trained yet.\n")
            continue
        text = splice(text, name, section(json.load(open(p))))
    # every shipped checkpoint, the engine-trained ones included
    total = sum(os.path.getsize(os.path.join(ROOT, "models", f)) for f in os.listdir(os.path.join(ROOT, "models"))
                if f.endswith(".safetensors"))
    if not TOTAL.search(text):
        raise SystemExit("models_md: MODELS.md has no 'All checkpoints together' line to refresh")
    text = TOTAL.sub(f"All checkpoints together: {total:,} bytes.", text)
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
