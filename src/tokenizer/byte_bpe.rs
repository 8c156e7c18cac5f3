//! `byte_bpe`: byte-level BPE. Ids 0..256 are the bytes; merge `k` (a pair of ids) creates id `256 + k`.
//!
//! Encode: optional pre-split into chunks (merges never cross a chunk boundary), then the merges are
//! applied by rank, lowest first, as GPT-2 / minbpe do (heap over a linked list, O(n log n) per chunk;
//! repeated chunks are cached). Any UTF-8 text round-trips exactly.
//!
//! Pre-split `"words"` (a simplified GPT-2 rule, no regex), the default: a chunk is
//!   * an optional single leading ' ' followed by a maximal run of letters (`char::is_alphabetic`), or of
//!     digits (`char::is_numeric`), or of other non-whitespace characters;
//!   * or a run of whitespace; when such a run of 2+ characters is followed by a non-whitespace character
//!     and ends with ' ', that last ' ' is left to start the next chunk.
//!
//! Pre-split `"none"`: the whole text is one chunk.
//!
//! Training ([`train_byte_bpe`]): distinct chunks weighted by their counts; the most frequent adjacent
//! pair is merged (pairs counted with overlap, merged left to right); tie-break: smallest pair (a, b).

use super::ranked::{merge_ranked, Piece, RankTable};
use super::train::train_merges;
use super::{Encoding, FxHashMap, JsonSource, TokenizerError, MAX_TOKEN_BYTES, MAX_TOTAL_TOKEN_BYTES};
use serde::{Deserialize, Serialize};

/// How the text is cut into chunks before merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PreSplit {
    /// One chunk: merges may cross words.
    None,
    /// Words with their leading space, digit runs, punctuation runs, whitespace runs (module docs).
    #[default]
    Words,
}

/// Byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct ByteBpe {
    merges: Vec<(u32, u32)>,
    pre_split: PreSplit,
    table: RankTable,
    token_bytes: Vec<Vec<u8>>,
}

#[derive(Deserialize)]
struct ByteJson {
    kind: String,
    #[serde(default)]
    pre_split: PreSplit,
    merges: Vec<(u32, u32)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Other,
}

fn class(c: char) -> Class {
    if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Digit
    } else {
        Class::Other
    }
}

/// Byte ranges of the chunks of `text` under `mode` (they tile the text).
pub fn pre_split_chunks(text: &str, mode: PreSplit) -> Vec<(usize, usize)> {
    if text.is_empty() {
        return Vec::new();
    }
    if mode == PreSplit::None {
        return vec![(0, text.len())];
    }
    let cs: Vec<(usize, char)> = text.char_indices().collect();
    let n = cs.len();
    let at = |k: usize| if k < n { cs[k].0 } else { text.len() };
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let c = cs[i].1;
        let k = if c == ' ' && i + 1 < n && !cs[i + 1].1.is_whitespace() {
            i + 1
        } else if c.is_whitespace() {
            let mut j = i;
            while j < n && cs[j].1.is_whitespace() {
                j += 1;
            }
            if j < n && j - i >= 2 && cs[j - 1].1 == ' ' {
                j -= 1;
            }
            out.push((at(i), at(j)));
            i = j;
            continue;
        } else {
            i
        };
        let cl = class(cs[k].1);
        let mut m = k + 1;
        while m < n && !cs[m].1.is_whitespace() && class(cs[m].1) == cl {
            m += 1;
        }
        out.push((at(i), at(m)));
        i = m;
    }
    out
}

/// Trains a byte-level BPE to `vocab_size` ids (at least 256). Stops early if no pair is left.
pub fn train_byte_bpe(text: &str, vocab_size: usize, pre_split: PreSplit) -> Result<ByteBpe, TokenizerError> {
    if vocab_size < 256 {
        return Err(TokenizerError::Train(format!("byte_bpe vocabulary size {vocab_size} is below 256")));
    }
    if vocab_size > (1 << 24) {
        return Err(TokenizerError::Train(format!("byte_bpe vocabulary size {vocab_size} is too large")));
    }
    let mut counts: FxHashMap<&str, u32> = FxHashMap::default();
    let mut order: Vec<&str> = Vec::new();
    for (a, b) in pre_split_chunks(text, pre_split) {
        let s = &text[a..b];
        let e = counts.entry(s).or_insert(0);
        if *e == 0 {
            order.push(s);
        }
        *e = e.saturating_add(1);
    }
    let seqs: Vec<(Vec<u32>, u32)> = order.iter().map(|s| (s.bytes().map(|b| b as u32).collect(), counts[s])).collect();
    let merges = train_merges(&seqs, 256, vocab_size - 256);
    ByteBpe::new(merges, pre_split)
}

impl ByteBpe {
    pub const KIND: &'static str = "byte_bpe";

    /// Builds from merges (merge `k` creates id `256 + k`; its parts must be ids below `256 + k`, and
    /// no pair may appear twice).
    pub fn new(merges: Vec<(u32, u32)>, pre_split: PreSplit) -> Result<Self, TokenizerError> {
        if merges.len() > (1 << 24) {
            return Err(TokenizerError::Invalid("byte_bpe has too many merges".into()));
        }
        let mut token_bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut seen: FxHashMap<u64, usize> = FxHashMap::default();
        let mut total = 256usize;
        for (k, &(a, b)) in merges.iter().enumerate() {
            let id = 256 + k as u32;
            if a >= id || b >= id {
                return Err(TokenizerError::Invalid(format!(
                    "byte_bpe merge {k} ({a}, {b}) -> {id} uses an id that is not defined before it"
                )));
            }
            if let Some(prev) = seen.insert(super::pair_key(a, b), k) {
                return Err(TokenizerError::Invalid(format!("byte_bpe pair ({a}, {b}) is merged twice (merges {prev} and {k})")));
            }
            let len = token_bytes[a as usize].len() + token_bytes[b as usize].len();
            total += len;
            if len > MAX_TOKEN_BYTES || total > MAX_TOTAL_TOKEN_BYTES {
                return Err(TokenizerError::Invalid(format!("byte_bpe token {id} expands to too many bytes")));
            }
            let mut t = token_bytes[a as usize].clone();
            t.extend_from_slice(&token_bytes[b as usize]);
            token_bytes.push(t);
        }
        let table = RankTable::new(merges.iter().enumerate().map(|(k, &p)| (p, 256 + k as u32)));
        Ok(ByteBpe { merges, pre_split, table, token_bytes })
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }
    /// Merges in rank order; merge `k` creates id `256 + k`.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }
    pub fn pre_split(&self) -> PreSplit {
        self.pre_split
    }

    /// The bytes of one id.
    pub fn token_bytes(&self, id: u32) -> Result<&[u8], TokenizerError> {
        self.token_bytes
            .get(id as usize)
            .map(|v| v.as_slice())
            .ok_or(TokenizerError::IdOutOfRange { id, vocab_size: self.token_bytes.len() })
    }

    pub fn encode(&self, text: &str) -> Encoding {
        self.encode_with_first_n_merges(text, usize::MAX)
    }

    /// Encodes with only the merges of rank `< n`.
    pub fn encode_with_first_n_merges(&self, text: &str, n: usize) -> Encoding {
        let mut enc = Encoding::default();
        let mut cache: FxHashMap<&str, Vec<Piece>> = FxHashMap::default();
        let mut scratch: Vec<Piece> = Vec::new();
        for (a, b) in pre_split_chunks(text, self.pre_split) {
            let chunk = &text[a..b];
            let fill = |scratch: &mut Vec<Piece>| {
                scratch.clear();
                scratch.extend(chunk.bytes().enumerate().map(|(k, x)| Piece { id: x as u32, lo: k, hi: k + 1 }));
                merge_ranked(scratch, &self.table, n);
            };
            // Cache short chunks (words repeat); long ones are merged directly.
            let pieces: &[Piece] = if chunk.len() <= 64 {
                cache.entry(chunk).or_insert_with(|| {
                    let mut v = Vec::new();
                    fill(&mut v);
                    v
                })
            } else {
                fill(&mut scratch);
                &scratch
            };
            for p in pieces {
                enc.ids.push(p.id);
                enc.spans.push((a + p.lo, a + p.hi));
            }
        }
        enc
    }

    /// Decodes ids; bytes that are not valid UTF-8 become U+FFFD (`String::from_utf8_lossy`).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// Decodes ids to raw bytes.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }

    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": Self::KIND,
            "pre_split": self.pre_split,
            "merges": self.merges,
        })
    }

    pub fn from_json_value(v: &serde_json::Value) -> Result<Self, TokenizerError> {
        Self::from_json_source(JsonSource::Value(v))
    }

    pub(crate) fn from_json_source(src: JsonSource<'_>) -> Result<Self, TokenizerError> {
        let j: ByteJson = src.parse(Self::KIND)?;
        if j.kind != Self::KIND {
            return Err(TokenizerError::Json(format!("expected kind \"byte_bpe\", got {:?}", j.kind)));
        }
        ByteBpe::new(j.merges, j.pre_split)
    }
}
