//! `llama2c`: karpathy's llama2.c `tokenizer.bin` (a SentencePiece BPE exported with scores).
//!
//! File: `max_token_length` (i32 LE), then per token `score` (f32 LE), `len` (i32 LE), `len` bytes. The
//! vocabulary size is not stored: every entry up to the end of the file is read (run.c takes the size
//! from model.bin's header; compare [`Llama2c::vocab_size`] with it).
//!
//! Encode is run.c's `encode(text, bos=1, eos=0)`: BOS (id 1), the dummy-prefix piece `" "` when the
//! text is not empty, then each UTF-8 character looked up whole, else its bytes as ids `byte + 3`
//! (`<0x00>` is id 3 in a Llama vocabulary); then, repeatedly, the adjacent pair whose concatenation is
//! the vocabulary piece with the highest score (the leftmost on ties, scores above -1e10) is merged. run.c
//! rescans all pairs per merge (quadratic); a heap over a linked list gives the same merges in
//! O(n log n). Pieces are C strings in run.c (cut at a NUL byte); ours are too. One deviation: run.c
//! stops reading the text at a NUL byte, we encode it like any other byte.
//!
//! Decode is run.c's `decode` per token: after BOS a leading space is dropped, `<0xXX>` pieces are the
//! raw byte; the bytes are read as UTF-8 with U+FFFD for invalid sequences. BOS (1) and EOS (2)
//! themselves decode to nothing (run.c never prints them).

use super::{Encoding, FxHashMap, TokenizerError, Utf8Stream, MAX_TOKEN_BYTES, MAX_TOTAL_TOKEN_BYTES};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

const BOS: u32 = 1;
const EOS: u32 = 2;

/// llama2.c tokenizer.
#[derive(Debug, Clone)]
pub struct Llama2c {
    max_token_length: u32,
    pieces: Vec<Vec<u8>>,
    scores: Vec<f32>,
    /// piece -> lowest id with that piece
    lookup: FxHashMap<Vec<u8>, u32>,
    /// the raw byte of a `<0xXX>` piece
    byte_of: Vec<Option<u8>>,
}

#[derive(Serialize, Deserialize)]
struct Llama2cJson {
    kind: String,
    max_token_length: u32,
    scores: Vec<f32>,
    /// pieces as byte arrays (they need not be UTF-8)
    pieces: Vec<Vec<u8>>,
}

/// run.c's `sscanf(piece, "<0x%02hhX>", &byte)`: "<0x" and one or two hex digits.
fn byte_piece(p: &[u8]) -> Option<u8> {
    let rest = p.strip_prefix(b"<0x")?;
    let n = rest.iter().take(2).take_while(|b| b.is_ascii_hexdigit()).count();
    if n == 0 {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(&rest[..n]).ok()?, 16).ok()
}

impl Llama2c {
    pub const KIND: &'static str = "llama2c";

    /// Builds from pieces and scores (pieces are cut at their first NUL byte, as C strings).
    pub fn new(max_token_length: u32, pieces: Vec<Vec<u8>>, scores: Vec<f32>) -> Result<Self, TokenizerError> {
        if pieces.len() != scores.len() {
            return Err(TokenizerError::Invalid(format!("llama2c: {} pieces but {} scores", pieces.len(), scores.len())));
        }
        if pieces.len() > super::MAX_ENTRIES {
            return Err(TokenizerError::Invalid(format!("llama2c: {} tokens (max {})", pieces.len(), super::MAX_ENTRIES)));
        }
        let mut total = 0usize;
        let mut pieces = pieces;
        for p in pieces.iter_mut() {
            if p.len() > MAX_TOKEN_BYTES {
                return Err(TokenizerError::Invalid(format!("llama2c: a token of {} bytes (max {MAX_TOKEN_BYTES})", p.len())));
            }
            total += p.len();
            if let Some(z) = p.iter().position(|&b| b == 0) {
                p.truncate(z);
            }
        }
        if total > MAX_TOTAL_TOKEN_BYTES {
            return Err(TokenizerError::Invalid(format!("llama2c: {total} bytes of token text (max {MAX_TOTAL_TOKEN_BYTES})")));
        }
        let mut lookup = FxHashMap::default();
        lookup.reserve(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            lookup.entry(p.clone()).or_insert(i as u32);
        }
        let byte_of = pieces.iter().map(|p| byte_piece(p)).collect();
        Ok(Llama2c { max_token_length, pieces, scores, lookup, byte_of })
    }

    /// Reads a `tokenizer.bin`. A header or lengths that disagree with the file size are one-line errors;
    /// nothing is allocated beyond what the file holds.
    pub fn from_bin(bytes: &[u8]) -> Result<Self, TokenizerError> {
        let bad = |m: String| TokenizerError::Invalid(format!("llama2c tokenizer.bin: {m}"));
        if bytes.len() < 4 {
            return Err(bad(format!("{} bytes, too short for the 4-byte header", bytes.len())));
        }
        let max_len = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if max_len <= 0 || max_len as usize > MAX_TOKEN_BYTES {
            return Err(bad(format!("max_token_length {max_len} is not in 1..={MAX_TOKEN_BYTES}")));
        }
        let mut pieces = Vec::new();
        let mut scores = Vec::new();
        let mut at = 4usize;
        while at < bytes.len() {
            let i = pieces.len();
            if bytes.len() - at < 8 {
                return Err(bad(format!(
                    "token {i} at byte {at}: the file ends inside its 8-byte score and length ({} bytes left)",
                    bytes.len() - at
                )));
            }
            let score = f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
            let len = i32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
            at += 8;
            if len < 0 || len > max_len {
                return Err(bad(format!("token {i} has length {len}, outside 0..={max_len} (max_token_length)")));
            }
            let len = len as usize;
            if bytes.len() - at < len {
                return Err(bad(format!("token {i} has length {len} but only {} bytes are left: the file is truncated", bytes.len() - at)));
            }
            pieces.push(bytes[at..at + len].to_vec());
            scores.push(score);
            at += len;
        }
        if pieces.len() < 3 {
            return Err(bad(format!("{} tokens; a llama2.c vocabulary has at least <unk>, <s>, </s>", pieces.len())));
        }
        Self::new(max_len as u32, pieces, scores)
    }

    /// The `tokenizer.bin` bytes.
    pub fn to_bin(&self) -> Vec<u8> {
        let mut out = (self.max_token_length as i32).to_le_bytes().to_vec();
        for (p, s) in self.pieces.iter().zip(&self.scores) {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&(p.len() as i32).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The piece of an id (run.c's `vocab[id]`).
    pub fn piece(&self, id: u32) -> Result<&[u8], TokenizerError> {
        self.pieces.get(id as usize).map(|p| p.as_slice()).ok_or(TokenizerError::IdOutOfRange { id, vocab_size: self.pieces.len() })
    }

    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// BOS and EOS (run.c's fixed 1 and 2).
    pub fn bos_eos(&self) -> (u32, u32) {
        (BOS, EOS)
    }

    /// run.c's `encode(text, bos, eos)`; see the module docs.
    pub fn encode_with(&self, text: &str, bos: bool, eos: bool) -> Encoding {
        let bytes = text.as_bytes();
        let mut toks: Vec<(u32, usize, usize)> = Vec::with_capacity(bytes.len() + 2);
        if bos {
            toks.push((BOS, 0, 0));
        }
        if !bytes.is_empty() {
            if let Some(&sp) = self.lookup.get(&b" "[..]) {
                toks.push((sp, 0, 0));
            }
        }
        let mut i = 0;
        while i < bytes.len() {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] & 0xC0 == 0x80 && j - i < 4 {
                j += 1;
            }
            match self.lookup.get(&bytes[i..j]) {
                Some(&id) => toks.push((id, i, j)),
                None => toks.extend((i..j).map(|k| (bytes[k] as u32 + 3, i, j))),
            }
            i = j;
        }
        self.merge(&mut toks);
        if eos {
            toks.push((EOS, bytes.len(), bytes.len()));
        }
        Encoding { ids: toks.iter().map(|t| t.0).collect(), spans: toks.iter().map(|t| (t.1, t.2)).collect(), unknown: Vec::new() }
    }

    /// The id of the concatenation of two pieces and its score, if it is a piece scoring above -1e10.
    fn pair(&self, a: u32, b: u32, buf: &mut Vec<u8>) -> Option<(f32, u32)> {
        let (pa, pb) = (self.pieces.get(a as usize)?, self.pieces.get(b as usize)?);
        buf.clear();
        buf.extend_from_slice(pa);
        buf.extend_from_slice(pb);
        let &id = self.lookup.get(buf.as_slice())?;
        let s = self.scores[id as usize];
        (s > -1e10).then_some((s, id))
    }

    /// run.c's merge loop: the best-scoring pair first, the leftmost among equal scores.
    fn merge(&self, toks: &mut Vec<(u32, usize, usize)>) {
        #[derive(PartialEq)]
        struct Cand {
            score: f32,
            pos: usize,
            left: u32,
            right: u32,
            id: u32,
        }
        impl Eq for Cand {}
        impl PartialOrd for Cand {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Cand {
            fn cmp(&self, o: &Self) -> Ordering {
                // scores are never NaN here (NaN > -1e10 is false); higher score, then lower position
                self.score.total_cmp(&o.score).then(o.pos.cmp(&self.pos))
            }
        }
        let n = toks.len();
        if n < 2 {
            return;
        }
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        let mut buf = Vec::new();
        for i in 0..n - 1 {
            if let Some((score, id)) = self.pair(toks[i].0, toks[i + 1].0, &mut buf) {
                heap.push(Cand { score, pos: i, left: toks[i].0, right: toks[i + 1].0, id });
            }
        }
        while let Some(c) = heap.pop() {
            let i = c.pos;
            let j = next[i];
            if !alive[i] || j >= n || toks[i].0 != c.left || toks[j].0 != c.right {
                continue;
            }
            toks[i] = (c.id, toks[i].1, toks[j].2);
            alive[j] = false;
            next[i] = next[j];
            if next[i] < n {
                prev[next[i]] = i;
                let k = next[i];
                if let Some((score, id)) = self.pair(toks[i].0, toks[k].0, &mut buf) {
                    heap.push(Cand { score, pos: i, left: toks[i].0, right: toks[k].0, id });
                }
            }
            let p = prev[i];
            if p < n {
                if let Some((score, id)) = self.pair(toks[p].0, toks[i].0, &mut buf) {
                    heap.push(Cand { score, pos: p, left: toks[p].0, right: toks[i].0, id });
                }
            }
        }
        let mut w = 0;
        for k in 0..n {
            if alive[k] {
                toks[w] = toks[k];
                w += 1;
            }
        }
        toks.truncate(w);
    }

    /// The bytes run.c's `decode(prev, id)` gives for one token.
    pub(crate) fn token_output(&self, prev: Option<u32>, id: u32) -> Result<&[u8], TokenizerError> {
        let mut p = self.piece(id)?;
        if id == BOS || id == EOS {
            return Ok(&[]);
        }
        if prev == Some(BOS) && p.first() == Some(&b' ') {
            p = &p[1..];
        }
        if self.byte_of[id as usize].is_some() {
            return Ok(byte_slice(self.byte_of[id as usize].unwrap_or(0)));
        }
        Ok(p)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut out = Vec::new();
        let mut prev = None;
        for &id in ids {
            out.extend_from_slice(self.token_output(prev, id)?);
            prev = Some(id);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    pub(crate) fn stream_push(&self, s: &mut Utf8Stream, prev: &mut Option<u32>, id: u32) -> Result<String, TokenizerError> {
        let b = self.token_output(*prev, id)?;
        let out = s.push(b);
        *prev = Some(id);
        Ok(out)
    }

    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(Llama2cJson {
            kind: Self::KIND.into(),
            max_token_length: self.max_token_length,
            scores: self.scores.clone(),
            pieces: self.pieces.clone(),
        })
        .unwrap_or(serde_json::Value::Null)
    }

    pub(crate) fn from_json_source(src: super::JsonSource<'_>) -> Result<Self, TokenizerError> {
        let j: Llama2cJson = src.parse(Self::KIND)?;
        if j.kind != Self::KIND {
            return Err(TokenizerError::Json(format!("kind {:?} is not {:?}", super::clip(&j.kind, 64), Self::KIND)));
        }
        Self::new(j.max_token_length, j.pieces, j.scores)
    }
}

/// A one-byte slice with a static lifetime.
fn byte_slice(b: u8) -> &'static [u8] {
    static ALL: [u8; 256] = {
        let mut a = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            a[i] = i as u8;
            i += 1;
        }
        a
    };
    &ALL[b as usize..b as usize + 1]
}
