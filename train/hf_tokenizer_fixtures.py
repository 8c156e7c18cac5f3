"""Fixtures for the Hugging Face tokenizer.json and llama2.c tokenizer.bin readers.

Trains small BPE tokenizers with the Python `tokenizers` library on the start of the Shakespeare corpus
(data/shakespeare.txt.xz), one per common tokenizer.json form, and records what that library gives for a
test corpus, so that tests/hf_tokenizers.rs can assert exact parity:

* gpt2.json         GPT-2 byte-level: ByteLevel pre-tokenizer (GPT-2 regex) and decoder, <|endoftext|>,
                    plus a special <mask> with lstrip (RoBERTa style) and a plain added token.
* llama2.json       Llama-2 SentencePiece style: Metaspace "▁" (prepend_scheme "first", split false),
                    byte fallback (<0x00>..<0xFF> in the vocabulary), <unk>/<s>/</s>, the Llama decoder
                    sequence (Replace, ByteFallback, Fuse, Strip) and a "<s> $A" template.
* tinyllama.json    the older TinyLlama form of the same: a Prepend("▁") + Replace(" ", "▁") normalizer and
                    no pre-tokenizer. Its byte tokens <0xF0>..<0xFF> are left out, so 4-byte characters
                    (emoji) fall to <unk>, fused (fuse_unk).
* llama3.json       Llama-3 byte-level: Split on Llama-3's regex (isolated) + ByteLevel without regex,
                    ignore_merges, <|begin_of_text|> template.
* qwen2.json        Qwen2: an NFC normalizer, Split on Qwen2's regex (one digit per piece) + ByteLevel without
                    regex, <|endoftext|>/<|im_start|>/<|im_end|>; multi-digit tokens and their merges are added
                    to the vocabulary, so a scanner that kept digits together would give other ids.
* o200k.json        OpenAI's o200k form (GPT-4o, Phi-4, gpt-oss as the Hub has them): Split on the o200k regex
                    (letters split by case, contractions after the word, up to 3 digits, `/` after punctuation)
                    + ByteLevel without regex; multi-digit tokens added as for qwen2.
* tekken.json       Mistral's Tekken form (Mistral Nemo, Pixtral): Split on the Tekken regex (o200k's without
                    contractions, one digit a piece) + ByteLevel without regex, <s> template, <unk> <s> </s>.
* pythia.json       GPT-NeoX / Pythia: NFC + the old ByteLevel pre-tokenizer (no use_regex key: the GPT-2 regex),
                    <|endoftext|> and <|padding|> first, and the runs of 2..24 spaces as non-special added
                    tokens with normalized true.
* bertlike.json     BERT's normalizers on a BPE model: Strip, NFKC, Lowercase, NFD, StripAccents; the
                    WhitespaceSplit pre-tokenizer; no decoder (tokens joined by spaces).
* metaspace.json    Metaspace with prepend_scheme "always" and split true, an NFKD normalizer, <unk> without
                    byte fallback; the Metaspace decoder.
* digits_punct.json an NFD normalizer; Whitespace, Digits(individual_digits), Punctuation pre-tokenizers;
                    byte fallback with the decoders in another order than Llama's: Strip (per token, before
                    Fuse), Replace, ByteFallback, Fuse.
* splits.json       byte-level with split behaviours: string patterns MergedWithPrevious, MergedWithNext and
                    inverted MergedWithPrevious, Punctuation Contiguous, Digits in runs, then ByteLevel with
                    add_prefix_space and without regex.
* llama2c.bin       llama2.c's tokenizer.bin, written by `export_llama2c_bin` below from llama2.json the
                    way llama2.c's tokenizer.py exports a SentencePiece model (score = -id for pieces, 0 for
                    the byte and control tokens); its expected ids come from `llama2c_encode`, a line-for-line
                    transcription of run.c's `encode` (bos=1, eos=0), and its decode from run.c's `decode`.

expected.json holds the corpus, `random` (random texts drawn from assigned Unicode, see `random_texts`)
and, per tokenizer, for each text of the corpus: `ids` (add_special_tokens=False), `ids_special` (True;
absent when it is `ids`), `decoded` (decode(ids_special), skip_special_tokens=True) and `decoded_raw`
(skip_special_tokens=False; absent when it is `decoded`); for the random texts `random_ids` and
`random_decoded`; for llama2c.bin `ids` (bos=1) and `decoded`.

    python train/hf_tokenizer_fixtures.py            # writes tests/fixtures/hf_tokenizers/
"""

from __future__ import annotations

import json
import lzma
import os
import struct

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf_tokenizers")

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
_CASED = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+C|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*C|D| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
O200K_PATTERN = _CASED.replace("C", "(?i:'s|'t|'re|'ve|'m|'ll|'d)?").replace("D", r"\p{N}{1,3}")
TEKKEN_PATTERN = _CASED.replace("C", "").replace("D", r"\p{N}")


def training_lines() -> list[str]:
    with lzma.open(os.path.join(ROOT, "data", "shakespeare.txt.xz"), "rt", encoding="utf-8") as f:
        text = f.read(400_000)
    return text.split("\n")


def corpus() -> list[str]:
    shakespeare = [
        "To be, or not to be, that is the question:",
        "Whether 'tis nobler in the mind to suffer\nThe slings and arrows of outrageous fortune,",
        "ROMEO. But soft, what light through yonder window breaks?",
        "I'll tell thee, I've seen thee; they're gone. We'd rather you'd not. She's MINE, 'TIS so.",
    ]
    whitespace = [
        "   leading spaces",
        "trailing spaces   ",
        "a  b   c    d",
        "tabs\tand\t\tmore\t\t\ttabs",
        "lines\n\nand\n\n\nblank lines\n",
        " \t \n \r\n  mixed \u00a0 nbsp\u3000ideographic space",
        "\n",
        " ",
        "    ",
    ]
    digits_punct = [
        "1 12 123 1234 12345 3.14159 1,000,000",
        "!!! ??? ... --- (a) [b] {c} <d> \"e\" 'f' `g`",
        "a+b=c; x*y/z%2; #tag @user $9.99 ^_^ ~~~ |||",
        "2024-12-01T10:20:00Z v1.2.3-rc.4",
    ]
    unicode = [
        "café naïve résumé Ångström Straße",
        "e\u0301 a\u0300\u0316 combining n\u0303o",
        "中文字符测试 日本語のテキスト 한국어",
        "Ελληνικά кириллица עברית العربية हिन्दी",
    ]
    emoji = [
        "emoji 😀 🎉 👍🏽",
        "family 👨\u200d👩\u200d👧\u200d👦 and flag 🏳️\u200d🌈",
        "🤖🤖🤖",
    ]
    specials = [
        "text with <|endoftext|> inside",
        "<s> hello </s> and <unk>",
        "<|begin_of_text|>start and <|end_of_text|>",
        "a <mask> b<mask>c",
        "plain added token: tinyformer!",
    ]
    para_words = (
        "Now is the winter of our discontent made glorious summer by this sun of York; and all the clouds "
        "that lour'd upon our house in the deep bosom of the ocean buried. 1592: naïve café, 中文, 😀! "
    )
    paragraph = (para_words * 20)[:2000]
    assert len(paragraph) == 2000
    # text that normalization changes: decomposed and precomposed accents, full-width forms, ligatures,
    # Hangul syllables and jamo, compatibility digits, dotted capital I, final sigma, a stray mark
    normalization = [
        "Cafe\u0301 vs Café, \u00c5ngstr\u00f6m vs \u212bngstro\u0308m, ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３",
        "ﬁne ﬂour ﬀ ﬃ Ⅻ ① ² ½ ™ ㎏ ﷺ",
        "\u1100\u1161\u11a8 한국어 \u1112\u1161\u11ab \uac00\u11a8",
        "İstanbul ΣΊΣΥΦΟΣ ǅ ß ẞ \u0345 \u0300leading mark   ",
        "  HELLO Wörld!\t",
    ]
    # what o200k's and Tekken's case-split letters see: camel case, capitals before lower case, title case,
    # caseless letters and marks inside words, contractions after capitals, `/` after punctuation
    cased = [
        "helloWorld HTTPServer iPhone McDonald's XMLHttpRequest getHTTPResponseCode",
        "DON'T I'M YOU'RE they'LL We'VE it'S",
        "path/to/file ./a//b ../c/\nd /\r\n/x?/",
        "ǅemo ǈubljana ʰa ᴬᴮc 々々木 שלוםAbc ABC\u0301def Ab\u0301C \u0301\u0301X",
    ]
    return shakespeare + whitespace + digits_punct + unicode + emoji + specials + normalization + cased + [paragraph, ""]


def random_texts(n: int, seed: int) -> list[str]:
    """Short random texts: ASCII, whitespace, combining marks, full-width and compatibility forms, Hangul
    jamo, and code points from all of Unicode. Left out: code points unassigned in Python's Unicode (14)
    and those where the library's older tables (its normalization and combining marks are from about
    Unicode 11, its Punctuation set from about 8) disagree with Unicode 14, since our tables are newer still."""
    import random
    import unicodedata

    nfd, nfkd, punct = normalizers.NFD(), normalizers.NFKD(), pre_tokenizers.Punctuation()
    strip_accents = normalizers.StripAccents()
    ascii_punct = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")

    def agrees(c: str) -> bool:
        if unicodedata.category(c) in ("Cn", "Cs", "Co"):
            return False
        if nfd.normalize_str(c) != unicodedata.normalize("NFD", c) or nfkd.normalize_str(c) != unicodedata.normalize("NFKD", c):
            return False
        if (strip_accents.normalize_str(c) == "") != unicodedata.category(c).startswith("M"):
            return False
        is_p = unicodedata.category(c).startswith("P") or c in ascii_punct
        return (len(punct.pre_tokenize_str("a" + c + "a")) == 3) == is_p

    rng = random.Random(seed)
    pools = [
        list(" \t\n\r'sStTdD0123456789abcxyzABC.,;:!?-_()\"#$%&*+/<=>@"),
        [chr(u) for u in [0x85, 0xA0, 0x2000, 0x2028, 0x3000, 0x200B, 0xFEFF, 0x0301, 0x0308, 0x0327, 0x0345, 0x0903,
                          0x1100, 0x1161, 0x11A8, 0xAC00, 0xFB01, 0xFF21, 0xFF41, 0xFF11, 0x2460, 0x00BD, 0x00B2, 0x0130,
                          0x03A3, 0x01C5, 0x1E9E, 0x212B, 0x2126, 0x0E31, 0xFDFA, 0x3300, 0x1F600, 0x00E9]],
    ]
    out = []
    while len(out) < n:
        text = []
        for _ in range(rng.randrange(1, 20)):
            k = rng.randrange(10)
            if k < 4:
                text.append(rng.choice(pools[0]))
            elif k < 7:
                text.append(rng.choice(pools[1]))
            else:
                c = chr(rng.randrange(0x30000 if k < 9 else 0x10000))
                if agrees(c):
                    text.append(c)
        out.append("".join(text))
    return out


def train_gpt2(lines: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tok.add_tokens([AddedToken("tinyformer", special=False)])
    return tok


def train_llama2(lines: list[str], legacy: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # Train on words (split=True), as SentencePiece does, then save with split=False, as Llama's file has.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=70, show_progress=False
    )
    tok.train_from_iterator(lines, trainer)
    j = json.loads(tok.to_str())
    # Put the 256 byte tokens after the three specials, as Llama's vocabulary has them.
    old = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = [k for k, _ in old[:3]]
    assert specials == ["<unk>", "<s>", "</s>"], specials
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    if legacy:
        byte_tokens = byte_tokens[:0xF0]
    rest = [k for k, _ in old[3:] if k not in byte_tokens]
    j["model"]["vocab"] = {k: i for i, k in enumerate(specials + byte_tokens + rest)}
    for a in j["added_tokens"]:
        a["id"] = j["model"]["vocab"][a["content"]]
    replace = {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}
    j["decoder"] = {
        "type": "Sequence",
        "decoders": [replace, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}],
    }
    if legacy:
        j["normalizer"] = {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            ],
        }
        j["pre_tokenizer"] = None
    else:
        j["normalizer"] = None
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    tok = Tokenizer.from_str(json.dumps(j))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def train_llama3(lines: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    bot = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A",
                pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                special_tokens=[("<|begin_of_text|>", bot)],
            ),
        ]
    )
    return tok


def byte_level_trainer(vocab_size: int, specials: list[str]) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )


def with_json(tok: Tokenizer, edit) -> Tokenizer:
    """The tokenizer after `edit` changed its JSON form in place (as the Hub's files differ from what
    training writes)."""
    j = json.loads(tok.to_str())
    edit(j)
    return Tokenizer.from_str(json.dumps(j))


def train_qwen2(lines: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(lines, byte_level_trainer(500, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]))

    return with_json(tok, add_digit_merges)


def add_digit_merges(j: dict) -> None:
    """Multi-digit tokens and their merges, so that a scanner keeping more digits together would give other ids."""
    vocab, merges = j["model"]["vocab"], j["model"]["merges"]
    for a, b in [("1", "2"), ("12", "3"), ("2", "0"), ("20", "2"), ("202", "4"), ("0", "0"), ("00", "0"), ("9", "9")]:
        for t in (a, b, a + b):
            vocab.setdefault(t, len(vocab))
        merges.append([a, b])


def train_cased(lines: list[str], pattern: str, specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(lines, byte_level_trainer(500, specials))
    return tok


def train_o200k(lines: list[str]) -> Tokenizer:
    return with_json(train_cased(lines, O200K_PATTERN, ["<|endoftext|>", "<|endofprompt|>"]), add_digit_merges)


def train_tekken(lines: list[str]) -> Tokenizer:
    tok = train_cased(lines, TEKKEN_PATTERN, ["<unk>", "<s>", "</s>"])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    return with_json(tok, add_digit_merges)


def train_pythia(lines: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.train_from_iterator(lines, byte_level_trainer(450, ["<|endoftext|>", "<|padding|>"]))
    tok.add_tokens([AddedToken(" " * k, normalized=True) for k in range(24, 1, -1)])

    def neox(j: dict) -> None:
        # the NeoX file's ByteLevel has no use_regex key (it predates it: the GPT-2 regex)
        for k in ("pre_tokenizer", "post_processor", "decoder"):
            j[k].pop("use_regex", None)

    return with_json(tok, neox)


def train_bertlike(lines: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Strip(), normalizers.NFKC(), normalizers.Lowercase(), normalizers.NFD(), normalizers.StripAccents()]
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]", "[CLS]", "[SEP]"], show_progress=False))
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    return tok


def train_metaspace(lines: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKD()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.train_from_iterator(
        lines, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>"], limit_alphabet=80, show_progress=False)
    )
    return tok


def train_digits_punct(lines: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.NFD()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Punctuation()]
    )
    trainer = trainers.BpeTrainer(vocab_size=250, special_tokens=["<unk>", "<s>"], limit_alphabet=60, show_progress=False)
    tok.train_from_iterator(lines, trainer)

    def byte_tokens(j: dict) -> None:
        vocab = j["model"]["vocab"]
        for b in range(256):
            vocab.setdefault(f"<0x{b:02X}>", len(vocab))

    tok = with_json(tok, byte_tokens)
    tok.decoder = decoders.Sequence(
        [decoders.Strip(content="e", left=1, right=0), decoders.Replace("t", "T"), decoders.ByteFallback(), decoders.Fuse()]
    )
    return tok


def train_splits(lines: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(",", behavior="merged_with_previous"),
            pre_tokenizers.Split(" ", behavior="merged_with_next"),
            pre_tokenizers.Split("'", behavior="merged_with_previous", invert=True),
            pre_tokenizers.Punctuation(behavior="contiguous"),
            pre_tokenizers.Digits(individual_digits=False),
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, byte_level_trainer(400, []))
    return tok


# ---- llama2.c tokenizer.bin -------------------------------------------------------------------------


def export_llama2c_bin(tok: Tokenizer, path: str) -> tuple[list[bytes], list[float]]:
    """Writes tokenizer.bin as llama2.c's tokenizer.py does for a SentencePiece model: BOS/EOS as
    "\\n<s>\\n" / "\\n</s>\\n", "▁" as " ", scores from the vocabulary order (SentencePiece BPE scores are
    -merge order; control and byte pieces score 0)."""
    vocab = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    pieces: list[bytes] = []
    scores: list[float] = []
    for piece, i in vocab:
        if piece == "<s>":
            piece = "\n<s>\n"
        elif piece == "</s>":
            piece = "\n</s>\n"
        is_byte = len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")
        scores.append(0.0 if i < 3 or is_byte else -float(i))
        pieces.append(piece.replace("▁", " ").encode("utf-8"))
    max_len = max(len(p) for p in pieces)
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max_len))
        for p, s in zip(pieces, scores):
            f.write(struct.pack("<fi", s, len(p)))
            f.write(p)
    return pieces, scores


def llama2c_encode(pieces: list[bytes], scores: list[float], text: bytes, bos: bool, eos: bool) -> list[int]:
    """run.c's `encode`, transcribed: the dummy-prefix " ", UTF-8 characters looked up whole, else their
    bytes as ids byte + 3, then the best-scoring adjacent pair (first one on ties) merged until none is left."""
    f32 = [struct.unpack("<f", struct.pack("<f", s))[0] for s in scores]
    lookup: dict[bytes, int] = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)  # bsearch over sorted pieces; our pieces have no duplicates
    tokens: list[int] = []
    if bos:
        tokens.append(1)
    if len(text) > 0:
        tokens.append(lookup[b" "])
    i = 0
    while i < len(text):
        # one UTF-8 character: a lead byte and at most 3 continuation bytes
        j = i + 1
        while j < len(text) and (text[j] & 0xC0) == 0x80 and j - i < 4:
            j += 1
        buf = text[i:j]
        if buf in lookup:
            tokens.append(lookup[buf])
        else:
            tokens.extend(b + 3 for b in buf)
        i = j
    while True:
        best_score, best_id, best_idx = -1e10, -1, -1
        for k in range(len(tokens) - 1):
            cat = pieces[tokens[k]] + pieces[tokens[k + 1]]
            tid = lookup.get(cat, -1)
            if tid != -1 and f32[tid] > best_score:
                best_score, best_id, best_idx = f32[tid], tid, k
        if best_idx == -1:
            break
        tokens[best_idx : best_idx + 2] = [best_id]
    if eos:
        tokens.append(2)
    return tokens


def llama2c_decode(pieces: list[bytes], ids: list[int]) -> str:
    """run.c's `decode` per token (prev = the previous id): a leading space dropped after BOS, <0xXX> as
    the raw byte; the bytes joined and read as UTF-8 with replacement. BOS and EOS give nothing (run.c
    never prints them)."""
    out = b""
    prev = None
    for t in ids:
        piece = b"" if t in (1, 2) else pieces[t]
        if prev == 1 and piece.startswith(b" "):
            piece = piece[1:]
        if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
            piece = bytes([int(piece[3:5], 16)])
        out += piece
        prev = t
    return out.decode("utf-8", errors="replace")


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    lines = training_lines()
    texts = corpus()
    toks = {
        "gpt2": train_gpt2(lines),
        "llama2": train_llama2(lines, legacy=False),
        "tinyllama": train_llama2(lines, legacy=True),
        "llama3": train_llama3(lines),
        "qwen2": train_qwen2(lines),
        "pythia": train_pythia(lines),
        "o200k": train_o200k(lines),
        "tekken": train_tekken(lines),
        "bertlike": train_bertlike(lines),
        "metaspace": train_metaspace(lines),
        "digits_punct": train_digits_punct(lines),
        "splits": train_splits(lines),
    }
    random = random_texts(40, 24)
    expected: dict = {"texts": texts, "random": random, "tokenizers": {}}
    for name, tok in toks.items():
        tok.save(os.path.join(OUT, f"{name}.json"), pretty=False)
        tok = Tokenizer.from_file(os.path.join(OUT, f"{name}.json"))  # what the file says, not the object
        cases = []
        for t in texts:
            ids = tok.encode(t, add_special_tokens=False).ids
            ids_special = tok.encode(t).ids
            case = {"ids": ids, "ids_special": ids_special, "decoded": tok.decode(ids_special)}
            case["decoded_raw"] = tok.decode(ids_special, skip_special_tokens=False)
            # (left out where they repeat `ids` / `decoded`, to keep the file small)
            if case["ids_special"] == ids:
                del case["ids_special"]
            if case["decoded_raw"] == case["decoded"]:
                del case["decoded_raw"]
            cases.append(case)
        random_ids = [tok.encode(t, add_special_tokens=False).ids for t in random]
        expected["tokenizers"][name] = {
            "vocab_size": tok.get_vocab_size(),
            "cases": cases,
            "random_ids": random_ids,
            "random_decoded": [tok.decode(ids) for ids in random_ids],
        }
    pieces, scores = export_llama2c_bin(toks["llama2"], os.path.join(OUT, "llama2c.bin"))
    cases = []
    for t in texts:
        ids = llama2c_encode(pieces, scores, t.encode("utf-8"), bos=True, eos=False)
        cases.append({"ids": ids, "decoded": llama2c_decode(pieces, ids)})
    expected["llama2c"] = {"vocab_size": len(pieces), "cases": cases}
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
