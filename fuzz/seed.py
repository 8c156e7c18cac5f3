#!/usr/bin/env python3
"""Seeds the fuzz corpora (fuzz/corpus/<target>/) from tests/fixtures and the shipped models' metadata.

  python3 fuzz/seed.py        (then: cd fuzz && cargo +nightly fuzz run <target>)

checkpoint, model_load_cpu: every .safetensors under tests/fixtures (the malformed cases and the reference
models). config: the "config" metadata of those files. tokenizer_json: the "tokenizer" metadata of the
fixtures and of models/*.safetensors (headers only), one small hand-written JSON per kind, and the
tokenizer.json parity fixtures (tests/fixtures/hf_tokenizers) as hf_bpe.
tokenizer_io: a few texts, one per tokenizer pick byte.
hf_plan: each Hugging Face fixture directory (tests/fixtures/hf_models) as config.json, its index and its
safetensors headers, in the target's 0xFF-separated layout (the tensor data as a count of zeros).
tokenizer_components: every normalizer, pre-tokenizer, post-processor and decoder of the tokenizer.json
fixtures (tests/fixtures/hf_tokenizers and hf_models), each behind its slot's pick byte.
"""
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def metadata(path):
    raw = path.read_bytes()[:8]
    if len(raw) < 8:
        return {}
    n = struct.unpack("<Q", raw)[0]
    if n > 100 << 20:
        return {}
    with open(path, "rb") as f:
        f.seek(8)
        head = f.read(n)
    try:
        meta = json.loads(head).get("__metadata__")
    except Exception:
        return {}
    return meta if isinstance(meta, dict) else {}


fixtures = sorted((ROOT / "tests" / "fixtures").rglob("*.safetensors"))
for p in fixtures:
    name = f"{p.parent.name}-{p.stem}"
    put("checkpoint", name, p.read_bytes())
    put("model_load_cpu", name, p.read_bytes())
    m = metadata(p)
    if isinstance(m.get("config"), str):
        put("config", name, m["config"])
    if isinstance(m.get("tokenizer"), str):
        put("tokenizer_json", name, m["tokenizer"])
for p in sorted((ROOT / "models").glob("*.safetensors")):
    m = metadata(p)
    if isinstance(m.get("tokenizer"), str):
        put("tokenizer_json", f"model-{p.stem}", m["tokenizer"])
for i, j in enumerate([
    {"kind": "seed_bpe", "vocab": ["<UNK>", "</w>", "a", "b", "ab", "ab</w>"], "merges": [["a", "b"], ["ab", "</w>"]]},
    {"kind": "char_merges", "stoi": {"a": 0, "b": 1, " ": 2}, "merges": [[0, 1, 3], [3, 2, 4]]},
    {"kind": "byte_bpe", "pre_split": "words", "merges": [[97, 98], [256, 99], [32, 257]]},
    {"kind": "byte_bpe", "pre_split": "none", "merges": [[97, 97], [256, 256]]},
    {"kind": "chars", "itos": ["<pad>", "<bos>", "<eos>", "?", "a", "b"], "pad": 0, "bos": 1, "eos": 2, "unk": 3,
     "target": {"itos": ["<pad>", "<bos>", "<eos>", "0", "1"], "pad": 0, "bos": 1, "eos": 2}},
]):
    put("tokenizer_json", f"hand-{i}", json.dumps(j))
# every tokenizer.json form the parity fixtures cover (normalizers, pre-tokenizers, decoders), as hf_bpe
for p in sorted((ROOT / "tests" / "fixtures" / "hf_tokenizers").glob("*.json")):
    if p.name != "expected.json":
        put("tokenizer_json", f"hf-{p.stem}", json.dumps({"kind": "hf_bpe", "tokenizer_json": p.read_text()}))
for pick in range(5):
    put("tokenizer_io", f"text-{pick}", bytes([pick]) + "Speak, speak. lowest newer ünïcode 😀\n".encode() + b"\xff\x00\x05\x01\x02")
# hf_plan: config.json 0xFF index 0xFF (name \n u32 zeros header)...
for d in sorted(p for p in (ROOT / "tests" / "fixtures" / "hf_models").iterdir() if p.is_dir()):
    parts = [(d / "config.json").read_bytes()]
    index = d / "model.safetensors.index.json"
    parts.append(index.read_bytes() if index.exists() else b"")
    for st in sorted(d.glob("*.safetensors")):
        raw = st.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        parts.append(st.name.encode() + b"\n" + struct.pack("<I", len(raw) - 8 - n) + raw[8:8 + n])
    put("hf_plan", f"hf-{d.name}", b"\xff".join(parts))
# tokenizer_components: the pick byte is the slot (0 normalizer, 1 pre_tokenizer, 2 post_processor, 3 decoder)
seen = set()
for p in sorted((ROOT / "tests" / "fixtures" / "hf_tokenizers").glob("*.json")) + sorted(
        (ROOT / "tests" / "fixtures" / "hf_models").glob("*/tokenizer.json")):
    try:
        j = json.loads(p.read_text())
    except Exception:
        continue
    if not isinstance(j, dict):
        continue
    for pick, slot in enumerate(["normalizer", "pre_tokenizer", "post_processor", "decoder"]):
        c = json.dumps(j.get(slot))
        if (pick, c) not in seen:
            seen.add((pick, c))
            put("tokenizer_components", f"{slot}-{len(seen)}", bytes([pick]) + c.encode())
print("seeded", {d.name: len(list(d.iterdir())) for d in sorted(CORPUS.iterdir())})
