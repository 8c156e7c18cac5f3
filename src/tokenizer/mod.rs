//! Tokenizers: six kinds behind one [`Tokenizer`] enum.
//!
//! * `seed_bpe` ([`SeedBpe`]): the word-level BPE of seed 000 ("SimpleBPETokenizer"): lowercase, split on
//!   whitespace, every word is its characters plus the `</w>` end marker, merges learned by frequency.
//!   The seed's string-replace merge (which can merge across symbol boundaries) is replaced by a
//!   symbol-wise merge.
//! * `char_merges` ([`CharMerges`]): seed 004's "SimpleTokenizer": a character table `stoi` plus a
//!   `merges` map (id, id) -> id, encoded by greedy left-to-right merging that steps back one position
//!   after every merge, decoded by recursive expansion.
//! * `byte_bpe` ([`ByteBpe`]): a byte-level BPE (256 byte tokens + learned merges, applied by rank like
//!   GPT-2 / minbpe) that round-trips any UTF-8 text exactly.
//! * `chars` ([`Chars`]): a plain character table `itos` with pad/bos/eos (and optional unk) ids, one
//!   id per character, for character-level models (the date-translation encoder-decoder); optionally
//!   a separate target table ([`Chars::target`], [`Tokenizer::target_tokenizer`]).
//!
//! * `hf_bpe` ([`HfBpe`]): a Hugging Face `tokenizer.json` with a BPE model (GPT-2 and GPT-NeoX byte-level,
//!   Llama-2 / TinyLlama SentencePiece style, Llama-3 and Qwen2 byte-level with a Split regex, and the
//!   normalizers, pre-tokenizers and decoders those and BERT-style files use), read by our own code.
//! * `llama2c` ([`Llama2c`]): llama2.c's `tokenizer.bin` (pieces with scores, run.c's greedy merge).
//!
//! For these two, [`Tokenizer::encode`] gives what their own tools give by default: the tokenizer.json's
//! post-processor runs (Python's `add_special_tokens=True`, e.g. Llama's `<s>`), and llama2.c's BOS (1)
//! comes first (run.c's `encode(text, bos=1, eos=0)`); decode drops special tokens.
//!
//! All kinds serialise to JSON with a `"kind"` field (the checkpoint's `"tokenizer"` metadata), and a
//! [`StreamDecoder`] turns a stream of ids into text without ever showing half a UTF-8 character.
//!
//! Beside the kinds: `train` (incremental BPE training), `ranked` (rank-ordered merging) and
//! `workbench` (the page's BPE workbench, trained on pasted text within bounds).
//!
//! Nothing in this module panics on any input: bad ids and malformed JSON are [`TokenizerError`]s.

mod byte_bpe;
mod char_merges;
pub mod chars;
mod hf_bpe;
mod llama2c;
pub mod pretok;
mod ranked;
mod seed_bpe;
mod train;
mod unicode_classes;
pub mod workbench;

pub use byte_bpe::train_byte_bpe;
pub use byte_bpe::{pre_split_chunks, ByteBpe, PreSplit};
pub use char_merges::{train_char_merges, CharMerges};
pub use chars::Chars;
pub use hf_bpe::HfBpe;
pub use llama2c::Llama2c;
pub use seed_bpe::{train_seed_bpe, train_seed_bpe_with_report, SeedBpe, SeedBpeReport, MAX_MARKER_BYTES};

use serde::Serialize;
use std::fmt;

/// Largest byte length one token may expand to, and the total over a vocabulary (guards against
/// exponential expansion in a hostile JSON file, e.g. (a,a)->b, (b,b)->c, ..., and against quadratic
/// growth, (t,a)->t' chained). Real vocabularies spell a few MB at most (a 128k-token BPE about 1 MB),
/// so a load's memory stays within the file plus these 64 MiB.
pub const MAX_TOKEN_BYTES: usize = 1 << 20;
pub const MAX_TOTAL_TOKEN_BYTES: usize = 64 << 20;
/// Largest tokenizer JSON text [`Tokenizer::from_json`] reads (real ones are a few MB at most).
pub const MAX_JSON_BYTES: usize = 64 << 20;
/// Largest number of merges or vocabulary entries of any kind.
pub(crate) const MAX_ENTRIES: usize = 1 << 24;

/// Everything that can go wrong in this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerError {
    /// A token id at or past the vocabulary size.
    IdOutOfRange { id: u32, vocab_size: usize },
    /// An id inside the vocabulary range that no token has (a gap in a `char_merges` table).
    UnassignedId { id: u32, vocab_size: usize },
    /// The JSON text could not be parsed or does not have the expected shape.
    Json(String),
    /// The JSON parsed but describes an inconsistent tokenizer.
    Invalid(String),
    /// Training could not run with the given arguments.
    Train(String),
    /// A [`StreamDecoder`] was fed with a tokenizer of another kind than the one it was made for.
    StreamKindMismatch { expected: &'static str, got: &'static str },
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::IdOutOfRange { id, vocab_size } => {
                if *vocab_size == 0 {
                    write!(f, "token id {id} is out of range: the vocabulary is empty")
                } else {
                    write!(
                        f,
                        "token id {id} is out of range for a vocabulary of {vocab_size} tokens (valid ids are 0..={})",
                        vocab_size - 1
                    )
                }
            }
            TokenizerError::UnassignedId { id, vocab_size } => {
                write!(f, "token id {id} is not assigned to any token (vocabulary size {vocab_size})")
            }
            TokenizerError::Json(m) => write!(f, "malformed tokenizer JSON: {m}"),
            TokenizerError::Invalid(m) => write!(f, "invalid tokenizer: {m}"),
            TokenizerError::Train(m) => write!(f, "tokenizer training failed: {m}"),
            TokenizerError::StreamKindMismatch { expected, got } => {
                write!(f, "stream decoder was made for a {expected} tokenizer but was given a {got} tokenizer")
            }
        }
    }
}

impl std::error::Error for TokenizerError {}

/// The result of encoding a text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// For each token, the byte range `(start, end)` of the input text it came from. A `seed_bpe`
    /// end-of-word token has the empty range at the end of its word; a `byte_bpe` token may start or
    /// end inside a multi-byte character.
    pub spans: Vec<(usize, usize)>,
    /// Character offsets (counted in `char`s of the input) of characters the tokenizer could not
    /// represent: mapped to the space id (`char_merges`), covered by an unknown token (`seed_bpe`), or
    /// mapped to the unk id if there is one, else dropped (`chars`). Always empty for `byte_bpe`.
    pub unknown: Vec<usize>,
}

/// A display form of a token's text: space `·`, newline `⏎`, tab `→`, carriage return `␍`, other
/// C0 controls as their Control Pictures (U+2400 block), DEL `␡`.
pub fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' => out.push('·'),
            '\n' => out.push('⏎'),
            '\t' => out.push('→'),
            '\r' => out.push('␍'),
            '\u{7f}' => out.push('␡'),
            c if (c as u32) < 0x20 => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('�')),
            c => out.push(c),
        }
    }
    out
}

/// Display form of raw token bytes: valid UTF-8 runs through [`visible`], other bytes as `<0xNN>`.
pub(crate) fn visible_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(&visible(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("<0x{b:02X}>"));
        }
    }
    out
}

/// A tokenizer of any kind.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    SeedBpe(SeedBpe),
    CharMerges(CharMerges),
    ByteBpe(ByteBpe),
    Chars(Chars),
    HfBpe(Box<HfBpe>),
    Llama2c(Llama2c),
}

/// The `"kind"` of a tokenizer's JSON form, read by serde (unknown kinds get serde's "unknown variant"
/// message listing the known ones). Only this field is read in a first pass: an internally tagged enum
/// (`#[serde(tag = "kind")]` on the whole form) would buffer the entire document in serde's private
/// `Content` tree before dispatching, a copy several times the text's size for a merge list (DECISIONS.md "The tokenizer's
/// `"kind"` read in a first pass").
#[derive(serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    SeedBpe,
    CharMerges,
    ByteBpe,
    Chars,
    HfBpe,
    Llama2c,
}

impl From<SeedBpe> for Tokenizer {
    fn from(t: SeedBpe) -> Self {
        Tokenizer::SeedBpe(t)
    }
}
impl From<CharMerges> for Tokenizer {
    fn from(t: CharMerges) -> Self {
        Tokenizer::CharMerges(t)
    }
}
impl From<ByteBpe> for Tokenizer {
    fn from(t: ByteBpe) -> Self {
        Tokenizer::ByteBpe(t)
    }
}
impl From<Chars> for Tokenizer {
    fn from(t: Chars) -> Self {
        Tokenizer::Chars(t)
    }
}
impl From<HfBpe> for Tokenizer {
    fn from(t: HfBpe) -> Self {
        Tokenizer::HfBpe(Box::new(t))
    }
}
impl From<Llama2c> for Tokenizer {
    fn from(t: Llama2c) -> Self {
        Tokenizer::Llama2c(t)
    }
}

impl Tokenizer {
    /// The `"kind"` string of the JSON form: "seed_bpe", "char_merges", "byte_bpe", "chars", "hf_bpe" or
    /// "llama2c".
    pub fn kind(&self) -> &'static str {
        match self {
            Tokenizer::SeedBpe(_) => SeedBpe::KIND,
            Tokenizer::CharMerges(_) => CharMerges::KIND,
            Tokenizer::ByteBpe(_) => ByteBpe::KIND,
            Tokenizer::Chars(_) => Chars::KIND,
            Tokenizer::HfBpe(_) => HfBpe::KIND,
            Tokenizer::Llama2c(_) => Llama2c::KIND,
        }
    }

    /// Encodes a text with all merges.
    pub fn encode(&self, text: &str) -> Encoding {
        self.encode_with_first_n_merges(text, usize::MAX)
    }

    /// Encodes a text using only the first `n` merges in training order (a UI can replay training one
    /// merge at a time). `n >= num_merges()` is the same as [`Tokenizer::encode`]. `chars` has no merges
    /// and `llama2c` merges by score, not rank: both ignore `n`.
    pub fn encode_with_first_n_merges(&self, text: &str, n: usize) -> Encoding {
        match self {
            Tokenizer::SeedBpe(t) => t.encode_with_first_n_merges(text, n),
            Tokenizer::CharMerges(t) => t.encode_with_first_n_merges(text, n),
            Tokenizer::ByteBpe(t) => t.encode_with_first_n_merges(text, n),
            Tokenizer::Chars(t) => t.encode(text),
            Tokenizer::HfBpe(t) => t.encode_with(text, true, n),
            Tokenizer::Llama2c(t) => t.encode_with(text, true, false),
        }
    }

    /// Decodes ids to text. Errors name the offending id and the vocabulary size.
    /// `byte_bpe` replaces invalid UTF-8 (e.g. a lone continuation byte) with U+FFFD, exactly as
    /// `String::from_utf8_lossy`; `seed_bpe` follows the seed (`</w>` -> space, whitespace runs collapsed,
    /// trimmed); `chars` decodes pad/bos/eos to `""`.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        match self {
            Tokenizer::SeedBpe(t) => t.decode(ids),
            Tokenizer::CharMerges(t) => t.decode(ids),
            Tokenizer::ByteBpe(t) => t.decode(ids),
            Tokenizer::Chars(t) => t.decode(ids),
            Tokenizer::HfBpe(t) => t.decode(ids),
            Tokenizer::Llama2c(t) => t.decode(ids),
        }
    }

    /// The token pieces of a text (the seed's `tokenize`): `seed_bpe` vocabulary strings (with `</w>`),
    /// `char_merges` expansions, `byte_bpe` token bytes (lossy UTF-8), `chars` `itos` strings.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let enc = self.encode(text);
        enc.ids
            .iter()
            .map(|&id| match self {
                Tokenizer::SeedBpe(t) => t.piece(id).unwrap_or("").to_string(),
                Tokenizer::CharMerges(t) => t.expansion(id).unwrap_or("").to_string(),
                Tokenizer::ByteBpe(t) => String::from_utf8_lossy(t.token_bytes(id).unwrap_or(&[])).into_owned(),
                Tokenizer::Chars(t) => t.token_text(id).unwrap_or("").to_string(),
                Tokenizer::HfBpe(t) => String::from_utf8_lossy(&t.token_bytes(id).unwrap_or_default()).into_owned(),
                Tokenizer::Llama2c(t) => String::from_utf8_lossy(t.piece(id).unwrap_or(&[])).into_owned(),
            })
            .collect()
    }

    /// Number of ids (valid ids are `0..vocab_size()`).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::SeedBpe(t) => t.vocab_size(),
            Tokenizer::CharMerges(t) => t.vocab_size(),
            Tokenizer::ByteBpe(t) => t.vocab_size(),
            Tokenizer::Chars(t) => t.vocab_size(),
            Tokenizer::HfBpe(t) => t.vocab_size(),
            Tokenizer::Llama2c(t) => t.vocab_size(),
        }
    }

    /// Number of learned merges (0 for `chars` and `llama2c`).
    pub fn num_merges(&self) -> usize {
        match self {
            Tokenizer::SeedBpe(t) => t.merges().len(),
            Tokenizer::CharMerges(t) => t.merges().len(),
            Tokenizer::ByteBpe(t) => t.merges().len(),
            Tokenizer::Chars(_) | Tokenizer::Llama2c(_) => 0,
            Tokenizer::HfBpe(t) => t.num_merges(),
        }
    }

    /// A display form of one token for the page, with whitespace made visible (see [`visible`]).
    /// `byte_bpe` tokens that are not valid UTF-8 on their own show their odd bytes as `<0xNN>`.
    /// `chars` shows every id by its `itos` string, specials included (e.g. `<pad>`).
    pub fn token_str(&self, id: u32) -> Result<String, TokenizerError> {
        match self {
            Tokenizer::SeedBpe(t) => t.piece(id).map(visible),
            Tokenizer::CharMerges(t) => t.expansion(id).map(visible),
            Tokenizer::ByteBpe(t) => t.token_bytes(id).map(visible_bytes),
            Tokenizer::Chars(t) => t.token_text(id).map(visible),
            Tokenizer::HfBpe(t) => t.token_bytes(id).map(|b| visible_bytes(&b)),
            Tokenizer::Llama2c(t) => t.piece(id).map(visible_bytes),
        }
    }

    /// The JSON form (a `serde_json::Value`), with its `"kind"`.
    pub fn to_json_value(&self) -> serde_json::Value {
        match self {
            Tokenizer::SeedBpe(t) => t.to_json_value(),
            Tokenizer::CharMerges(t) => t.to_json_value(),
            Tokenizer::ByteBpe(t) => t.to_json_value(),
            Tokenizer::Chars(t) => t.to_json_value(),
            Tokenizer::HfBpe(t) => t.to_json_value(),
            Tokenizer::Llama2c(t) => t.to_json_value(),
        }
    }

    /// The JSON form as a string.
    pub fn to_json(&self) -> String {
        self.to_json_value().to_string()
    }

    /// Reads any kind from its JSON text (at most [`MAX_JSON_BYTES`]). The text is parsed straight into
    /// the kind's own form: no intermediate `serde_json::Value` and no copy of the whole document, so a
    /// load's peak memory is the text plus the tokenizer. Nesting deeper than serde_json's limit (128)
    /// is an error, not a stack overflow.
    pub fn from_json(text: &str) -> Result<Self, TokenizerError> {
        if text.len() > MAX_JSON_BYTES {
            return Err(TokenizerError::Invalid(format!(
                "the tokenizer JSON is {} bytes; the limit is {} MiB",
                text.len(),
                MAX_JSON_BYTES >> 20
            )));
        }
        if !text.trim_start().starts_with('{') {
            // Not an object (serde would read a struct from an array): say which, or why it is not JSON.
            return Err(TokenizerError::Json(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => "expected a JSON object".into(),
                Err(e) => e.to_string(),
            }));
        }
        // First only the "kind" (every other field is skipped without being stored).
        #[derive(serde::Deserialize)]
        struct Peek {
            kind: Kind,
        }
        let peek: Peek = serde_json::from_str(text).map_err(|e| TokenizerError::Json(e.to_string()))?;
        Self::from_source(peek.kind, JsonSource::Text(text))
    }

    /// Reads any kind from a parsed JSON value (e.g. a checkpoint's `"tokenizer"` metadata). The value
    /// is read in place, never cloned.
    pub fn from_json_value(v: &serde_json::Value) -> Result<Self, TokenizerError> {
        #[derive(serde::Deserialize)]
        struct Peek {
            kind: Kind,
        }
        if !v.is_object() {
            return Err(TokenizerError::Json("expected a JSON object".into()));
        }
        let peek = <Peek as serde::Deserialize>::deserialize(v).map_err(|e| TokenizerError::Json(e.to_string()))?;
        Self::from_source(peek.kind, JsonSource::Value(v))
    }

    fn from_source(kind: Kind, src: JsonSource<'_>) -> Result<Self, TokenizerError> {
        Ok(match kind {
            Kind::SeedBpe => Tokenizer::SeedBpe(SeedBpe::from_json_source(src)?),
            Kind::CharMerges => Tokenizer::CharMerges(CharMerges::from_json_source(src)?),
            Kind::ByteBpe => Tokenizer::ByteBpe(ByteBpe::from_json_source(src)?),
            Kind::Chars => Tokenizer::Chars(Chars::from_json_source(src)?),
            Kind::HfBpe => Tokenizer::HfBpe(Box::new(HfBpe::from_json_source(src)?)),
            Kind::Llama2c => Tokenizer::Llama2c(Llama2c::from_json_source(src)?),
        })
    }

    /// Reads a Hugging Face `tokenizer.json` (BPE models only; see [`HfBpe`]).
    pub fn from_hf_json(text: &str) -> Result<Self, TokenizerError> {
        Ok(Tokenizer::HfBpe(Box::new(HfBpe::from_json(text)?)))
    }

    /// Reads llama2.c's `tokenizer.bin`.
    pub fn from_llama2c_bin(bytes: &[u8]) -> Result<Self, TokenizerError> {
        Ok(Tokenizer::Llama2c(Llama2c::from_bin(bytes)?))
    }

    /// Reads any tokenizer file by its content: JSON with a `"kind"` (ours), a Hugging Face tokenizer.json
    /// (JSON with a `"model"`), else llama2.c's tokenizer.bin.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, TokenizerError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Self::from_llama2c_bin(bytes);
        }
        #[derive(serde::Deserialize)]
        struct Which {
            #[serde(default)]
            kind: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            model: Option<serde::de::IgnoredAny>,
        }
        let parsed = std::str::from_utf8(bytes)
            .map_err(|e| TokenizerError::Json(format!("the JSON is not valid UTF-8 ({e})")))
            .and_then(|text| Ok((text, serde_json::from_str::<Which>(text).map_err(|e| TokenizerError::Json(e.to_string()))?)));
        // a llama2.c tokenizer.bin whose max_token_length is 123 starts with `{` too: what does not parse as
        // JSON is read as one before the JSON error is reported
        let (text, w) = match parsed {
            Ok(p) => p,
            Err(json) => return Self::from_llama2c_bin(bytes).map_err(|_| json),
        };
        match (w.kind, w.model) {
            (None, Some(_)) => Self::from_hf_json(text),
            _ => Self::from_json(text),
        }
    }

    /// A streaming decoder for this tokenizer; feed it with [`StreamDecoder::push`].
    pub fn stream_decoder(&self) -> StreamDecoder {
        match self {
            Tokenizer::SeedBpe(t) => StreamDecoder { kind: SeedBpe::KIND, state: StreamState::Seed(t.normalizer()) },
            Tokenizer::CharMerges(_) => StreamDecoder::bytes(CharMerges::KIND),
            Tokenizer::ByteBpe(_) => StreamDecoder::bytes(ByteBpe::KIND),
            Tokenizer::Chars(_) => StreamDecoder::bytes(Chars::KIND),
            Tokenizer::HfBpe(_) => StreamDecoder { kind: HfBpe::KIND, state: StreamState::Hf(Box::default()) },
            Tokenizer::Llama2c(_) => StreamDecoder { kind: Llama2c::KIND, state: StreamState::Llama2c(Utf8Stream::default(), None) },
        }
    }

    /// The special ids `(pad, bos, eos)`: `Some` for `chars`, `None` for the other kinds.
    pub fn special_ids(&self) -> Option<(u32, u32, u32)> {
        match self {
            Tokenizer::Chars(t) => Some(t.special_ids()),
            _ => None,
        }
    }

    /// The separate target (decoder-side) tokenizer: `Some` only for a `chars` tokenizer whose JSON has
    /// a `"target"` table. When `None`, the target side uses this same tokenizer.
    pub fn target_tokenizer(&self) -> Option<Tokenizer> {
        match self {
            Tokenizer::Chars(t) if t.has_target() => Some(Tokenizer::Chars(t.target().clone())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum StreamState {
    Bytes(Utf8Stream),
    Seed(seed_bpe::SeedNormalizer),
    Hf(Box<hf_bpe::HfStream>),
    /// the bytes and the previous id
    Llama2c(Utf8Stream, Option<u32>),
}

/// Incremental decoder: fed one id at a time, returns only complete UTF-8 characters.
///
/// It owns its state only (no borrow of the tokenizer, so it can live next to one in a wasm object);
/// pass the same tokenizer to every [`push`](StreamDecoder::push). The concatenation of all `push`
/// results and [`finish`](StreamDecoder::finish) equals `decode` of all ids.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    kind: &'static str,
    state: StreamState,
}

impl StreamDecoder {
    fn bytes(kind: &'static str) -> Self {
        StreamDecoder { kind, state: StreamState::Bytes(Utf8Stream::default()) }
    }

    /// Feeds one id; returns the text that became complete (possibly empty).
    /// A bad id is an error and leaves the state unchanged.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String, TokenizerError> {
        if tok.kind() != self.kind {
            return Err(TokenizerError::StreamKindMismatch { expected: self.kind, got: tok.kind() });
        }
        match (&mut self.state, tok) {
            (StreamState::Seed(n), Tokenizer::SeedBpe(t)) => Ok(n.push(t.piece(id)?)),
            (StreamState::Bytes(s), Tokenizer::CharMerges(t)) => Ok(s.push(t.expansion(id)?.as_bytes())),
            (StreamState::Bytes(s), Tokenizer::ByteBpe(t)) => Ok(s.push(t.token_bytes(id)?)),
            (StreamState::Bytes(s), Tokenizer::Chars(t)) => Ok(s.push(t.piece(id)?.as_bytes())),
            (StreamState::Hf(s), Tokenizer::HfBpe(t)) => s.push(t, id),
            (StreamState::Llama2c(s, prev), Tokenizer::Llama2c(t)) => t.stream_push(s, prev, id),
            _ => Err(TokenizerError::StreamKindMismatch { expected: self.kind, got: tok.kind() }),
        }
    }

    /// Flushes what is held back: an incomplete UTF-8 tail becomes one U+FFFD (as
    /// `String::from_utf8_lossy` would), and the decoder is reset.
    pub fn finish(&mut self) -> String {
        match &mut self.state {
            StreamState::Bytes(s) => s.finish(),
            StreamState::Seed(n) => n.finish(),
            StreamState::Hf(s) => s.finish(),
            StreamState::Llama2c(s, prev) => {
                *prev = None;
                s.finish()
            }
        }
    }

    /// Number of bytes held back waiting for the rest of a character.
    pub fn pending_len(&self) -> usize {
        match &self.state {
            StreamState::Bytes(s) => s.pending.len(),
            StreamState::Seed(n) => n.pending_len(),
            StreamState::Hf(s) => s.pending_len(),
            StreamState::Llama2c(s, _) => s.pending.len(),
        }
    }
}

/// Byte stream -> complete UTF-8 text, with `from_utf8_lossy`'s replacement rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: from_utf8 just validated this prefix.
                    out.push_str(std::str::from_utf8(&self.pending[start..start + valid]).unwrap_or(""));
                    start += valid;
                    match e.error_len() {
                        Some(len) => {
                            out.push('\u{FFFD}');
                            start += len;
                        }
                        None => break, // incomplete tail: hold it back
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    pub(crate) fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// Python's `str.isspace` (used by the seed's `split()`, `\s` and `strip()`): Rust's White_Space plus
/// the information separators U+001C..U+001F.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Hash maps keyed by ids, pair keys and strings. rustc-hash 2's FxHasher ends with a rotation that
/// brings the product's well-mixed high bits down to the bucket bits, so keys `(a, b)` sharing `b` do not
/// pile into one probe sequence (tests/tokenizer_bounds.rs has a million such merges).
pub(crate) use rustc_hash::FxHashMap;

#[inline]
pub(crate) fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

#[inline]
pub(crate) fn unpair(k: u64) -> (u32, u32) {
    ((k >> 32) as u32, k as u32)
}

/// Helper for JSON errors with a path.
pub(crate) fn json_err(kind: &str, e: serde_json::Error) -> TokenizerError {
    TokenizerError::Json(format!("{kind}: {e}"))
}

/// Where a kind's JSON form comes from: text (parsed straight into the typed form) or an already
/// parsed value (read by reference).
#[derive(Clone, Copy)]
pub(crate) enum JsonSource<'a> {
    Text(&'a str),
    Value(&'a serde_json::Value),
}

impl JsonSource<'_> {
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(self, kind: &str) -> Result<T, TokenizerError> {
        match self {
            JsonSource::Text(t) => serde_json::from_str(t),
            JsonSource::Value(v) => T::deserialize(v),
        }
        .map_err(|e| json_err(kind, e))
    }
}

/// At most `max` characters of `s` (with "…" when cut), for quoting user data in one-line errors.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
