//! `chars`: a plain character table with special ids, for character-level models (the date-translation
//! encoder-decoder).
//!
//! JSON: `{"kind": "chars", "itos": ["<pad>", "<bos>", "<eos>", "0", "1", ...], "pad": 0, "bos": 1, "eos": 2}`.
//! `itos[i]` is the text of id `i`. Optional fields: `"unk"` (the id unknown characters map to) and
//! `"target": {"itos": [...], "pad": 0, "bos": 1, "eos": 2, "unk": ...}`, a separate table for the
//! decoder side of a model (see [`Chars::target`]). Unknown fields are ignored.
//!
//! * Encode: one id per character of the text, looked up among the entries of `itos` that are exactly
//!   one character and are not a special id (pad, bos, eos, unk), so encode never produces pad, bos or
//!   eos. A character not in the table is reported in [`Encoding::unknown`] (its char offset) and
//!   maps to `unk` if the table has one, else it is dropped. Spans are the byte range of each
//!   character.
//! * Decode: the concatenation of the `itos` strings of the ids; pad, bos and eos decode to `""`; the
//!   unk id (when it is not also pad/bos/eos) decodes to its `itos` string. An id `>= itos.len()` is
//!   [`TokenizerError::IdOutOfRange`].
//! * Entries that are not exactly one character (other than the specials) are accepted; they decode
//!   to their string but encode never produces them.
//! * No merges: `num_merges` is 0 and encoding with the first `n` merges is plain encoding.

use super::{Encoding, FxHashMap, JsonSource, TokenizerError};
use serde::Deserialize;

/// Largest table a `chars` JSON may have.
const MAX_VOCAB: usize = 1 << 24;

/// A character table with pad/bos/eos (and optional unk) ids, and an optional separate target table.
#[derive(Debug, Clone)]
pub struct Chars {
    itos: Vec<String>,
    stoi: FxHashMap<char, u32>,
    pad: u32,
    bos: u32,
    eos: u32,
    unk: Option<u32>,
    /// A separate table for the target (decoder) side; never itself has a target.
    target: Option<Box<Chars>>,
}

#[derive(Deserialize)]
struct TableJson {
    itos: Vec<String>,
    pad: u32,
    bos: u32,
    eos: u32,
    #[serde(default)]
    unk: Option<u32>,
}

#[derive(Deserialize)]
struct CharsJson {
    kind: String,
    itos: Vec<String>,
    pad: u32,
    bos: u32,
    eos: u32,
    #[serde(default)]
    unk: Option<u32>,
    #[serde(default)]
    target: Option<TableJson>,
}

impl Chars {
    pub const KIND: &'static str = "chars";

    /// Builds a table from `itos` (id -> text) and the special ids. Errors if a special id is out of
    /// range, the table is empty or too large, or a one-character non-special entry appears twice.
    pub fn new(itos: Vec<String>, pad: u32, bos: u32, eos: u32, unk: Option<u32>) -> Result<Self, TokenizerError> {
        let n = itos.len();
        if n == 0 {
            return Err(TokenizerError::Invalid("chars: \"itos\" is empty".into()));
        }
        if n > MAX_VOCAB {
            return Err(TokenizerError::Invalid(format!("chars: \"itos\" has {n} entries (max {MAX_VOCAB})")));
        }
        for (name, id) in [("pad", Some(pad)), ("bos", Some(bos)), ("eos", Some(eos)), ("unk", unk)] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(TokenizerError::Invalid(format!("chars: {name} id {id} is out of range for a table of {n} entries")));
                }
            }
        }
        let mut stoi = FxHashMap::default();
        for (i, s) in itos.iter().enumerate() {
            let id = i as u32;
            if id == pad || id == bos || id == eos || Some(id) == unk {
                continue;
            }
            let mut cs = s.chars();
            if let (Some(c), None) = (cs.next(), cs.next()) {
                if let Some(prev) = stoi.insert(c, id) {
                    return Err(TokenizerError::Invalid(format!("chars: character {c:?} appears twice (ids {prev} and {id})")));
                }
            }
        }
        Ok(Chars { itos, stoi, pad, bos, eos, unk, target: None })
    }

    /// Convenience: `["<pad>", "<bos>", "<eos>"]` (ids 0, 1, 2) followed by the characters of
    /// `alphabet` in order, no unk. Errors if a character repeats.
    pub fn from_alphabet(alphabet: &str) -> Result<Self, TokenizerError> {
        let itos = ["<pad>", "<bos>", "<eos>"].iter().map(|s| s.to_string()).chain(alphabet.chars().map(String::from)).collect();
        Chars::new(itos, 0, 1, 2, None)
    }

    /// This table with `target` as its separate target table (the target's own target, if any, is dropped).
    pub fn with_target(mut self, mut target: Chars) -> Self {
        target.target = None;
        self.target = Some(Box::new(target));
        self
    }

    /// The target (decoder-side) table: the separate one if the JSON had `"target"`, else `self`.
    pub fn target(&self) -> &Chars {
        self.target.as_deref().unwrap_or(self)
    }

    /// Whether a separate target table exists.
    pub fn has_target(&self) -> bool {
        self.target.is_some()
    }

    /// Number of ids (`itos.len()`).
    pub fn vocab_size(&self) -> usize {
        self.itos.len()
    }
    /// The id -> text table.
    pub fn itos(&self) -> &[String] {
        &self.itos
    }
    pub fn pad(&self) -> u32 {
        self.pad
    }
    pub fn bos(&self) -> u32 {
        self.bos
    }
    pub fn eos(&self) -> u32 {
        self.eos
    }
    /// The id unknown characters map to, if any.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    /// (pad, bos, eos).
    pub fn special_ids(&self) -> (u32, u32, u32) {
        (self.pad, self.bos, self.eos)
    }
    /// Whether `id` is pad, bos or eos (these decode to `""`).
    pub fn is_special(&self, id: u32) -> bool {
        id == self.pad || id == self.bos || id == self.eos
    }
    /// The id of a character, if the table encodes it.
    pub fn id_of(&self, c: char) -> Option<u32> {
        self.stoi.get(&c).copied()
    }

    /// The `itos` string of an id (specials by their display string, e.g. `"<pad>"`).
    pub fn token_text(&self, id: u32) -> Result<&str, TokenizerError> {
        self.itos.get(id as usize).map(String::as_str).ok_or(TokenizerError::IdOutOfRange { id, vocab_size: self.itos.len() })
    }

    /// The text an id decodes to: `""` for pad/bos/eos, else its `itos` string.
    pub fn piece(&self, id: u32) -> Result<&str, TokenizerError> {
        let s = self.token_text(id)?;
        Ok(if self.is_special(id) { "" } else { s })
    }

    pub fn encode(&self, text: &str) -> Encoding {
        let mut enc = Encoding::default();
        for (ci, (bi, c)) in text.char_indices().enumerate() {
            let id = match self.stoi.get(&c) {
                Some(&id) => Some(id),
                None => {
                    enc.unknown.push(ci);
                    self.unk
                }
            };
            if let Some(id) = id {
                enc.ids.push(id);
                enc.spans.push((bi, bi + c.len_utf8()));
            }
        }
        enc
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut out = String::new();
        for &id in ids {
            out.push_str(self.piece(id)?);
        }
        Ok(out)
    }

    fn table_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("itos".into(), serde_json::Value::from(self.itos.clone()));
        m.insert("pad".into(), serde_json::Value::from(self.pad));
        m.insert("bos".into(), serde_json::Value::from(self.bos));
        m.insert("eos".into(), serde_json::Value::from(self.eos));
        if let Some(u) = self.unk {
            m.insert("unk".into(), serde_json::Value::from(u));
        }
        m
    }

    pub fn to_json_value(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), serde_json::Value::from(Self::KIND));
        m.extend(self.table_json());
        if let Some(t) = &self.target {
            m.insert("target".into(), serde_json::Value::Object(t.table_json()));
        }
        serde_json::Value::Object(m)
    }

    pub fn from_json_value(v: &serde_json::Value) -> Result<Self, TokenizerError> {
        Self::from_json_source(JsonSource::Value(v))
    }

    pub(crate) fn from_json_source(src: JsonSource<'_>) -> Result<Self, TokenizerError> {
        let j: CharsJson = src.parse(Self::KIND)?;
        if j.kind != Self::KIND {
            return Err(TokenizerError::Json(format!("expected kind \"chars\", got {:?}", j.kind)));
        }
        let mut t = Chars::new(j.itos, j.pad, j.bos, j.eos, j.unk)?;
        if let Some(tj) = j.target {
            let target = Chars::new(tj.itos, tj.pad, tj.bos, tj.eos, tj.unk).map_err(|e| match e {
                TokenizerError::Invalid(m) => TokenizerError::Invalid(format!("target table: {m}")),
                e => e,
            })?;
            t = t.with_target(target);
        }
        Ok(t)
    }
}
