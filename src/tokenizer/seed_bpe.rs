//! `seed_bpe`: the word-level BPE of seed 000 (class SimpleBPETokenizer), with a correct merge.
//!
//! * Text is lowercased (`str::to_lowercase`, like Python's `str.lower`) and split on whitespace
//!   (Python's `str.split()`: Unicode White_Space plus U+001C..U+001F).
//! * Every word is its characters followed by the end marker `</w>`.
//! * Training: the initial vocabulary is the set of all symbols; `vocab_size - initial` merges are run
//!   (as the seed does; `<UNK>` is added afterwards, so a full training ends with `vocab_size + 1`
//!   tokens). Each merge takes the most frequent adjacent pair, counted over the distinct words weighted
//!   by word frequency. Tie-break, as the seed's `Counter.most_common(1)` does it: the pair that occurs
//!   first, scanning the distinct words in order of first appearance in the text and each word left to
//!   right. The merge is done symbol-wise (the seed's `str.replace` can glue the tail of one symbol to
//!   the head of the next; here it cannot).
//! * Ids: the vocabulary (symbols, merged tokens, `<UNK>`) sorted by code point, as the seed does.
//! * Encode: merges applied in training order (each merge to all its occurrences, left to right);
//!   tokens not in the vocabulary become `<UNK>`.
//! * Decode: pieces joined, `</w>` replaced by a space, whitespace runs collapsed to one space, trimmed.

use super::ranked::{merge_ranked, Piece, RankTable};
use super::train::{train_merges_with, TieBreak};
use super::{clip, is_py_space, Encoding, FxHashMap, JsonSource, TokenizerError, MAX_ENTRIES, MAX_TOKEN_BYTES, MAX_TOTAL_TOKEN_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) const DEFAULT_UNK: &str = "<UNK>";
pub(crate) const DEFAULT_END: &str = "</w>";
/// Longest end marker or unknown token (the seed's are 4 and 5 bytes).
pub const MAX_MARKER_BYTES: usize = 64 << 10;
/// Symbol id of a character that is not in the vocabulary (never merges, encodes as `<UNK>`).
const UNKNOWN_SYM: u32 = u32::MAX;

/// The seed's word-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct SeedBpe {
    vocab: Vec<String>,
    token_to_id: HashMap<String, u32>,
    char_ids: FxHashMap<char, u32>,
    merges: Vec<(String, String)>,
    table: RankTable,
    unk_token: String,
    unk_id: u32,
    end_token: String,
    end_id: Option<u32>,
    end_matcher: Arc<EndMatcher>,
}

#[derive(Serialize, Deserialize)]
struct SeedJson {
    kind: String,
    vocab: Vec<String>,
    merges: Vec<(String, String)>,
    #[serde(default = "default_unk")]
    unk_token: String,
    #[serde(default = "default_end")]
    end_token: String,
}

fn default_unk() -> String {
    DEFAULT_UNK.to_string()
}
fn default_end() -> String {
    DEFAULT_END.to_string()
}

/// Splits like Python's `str.split()`: yields (byte start, word, char index of the word's start).
fn split_words(text: &str) -> Vec<(usize, &str, usize)> {
    let mut out = Vec::new();
    let mut start: Option<(usize, usize)> = None;
    for (nchar, (b, c)) in text.char_indices().enumerate() {
        if is_py_space(c) {
            if let Some((sb, sc)) = start.take() {
                out.push((sb, &text[sb..b], sc));
            }
        } else if start.is_none() {
            start = Some((b, nchar));
        }
    }
    if let Some((sb, sc)) = start {
        out.push((sb, &text[sb..], sc));
    }
    out
}

/// Trains a `seed_bpe` tokenizer on `text` (see the module docs for the exact rules).
pub fn train_seed_bpe(text: &str, vocab_size: usize) -> SeedBpe {
    train_seed_bpe_with_report(text, vocab_size).0
}

/// What a `seed_bpe` training did with the vocabulary size it was asked for: the learned vocabulary is
/// `initial_symbols + merges_learned - duplicate_merges + 1` (`<UNK>`), which differs from `asked`
/// when `<UNK>` is added after the merges (as the seed does), when training runs out of pairs, or
/// when a merge produces a token that already exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeedBpeReport {
    pub asked: usize,
    /// distinct characters of the lowercased words, plus `</w>`
    pub initial_symbols: usize,
    pub merges_asked: usize,
    pub merges_learned: usize,
    /// merges whose result was already in the vocabulary (they add no token)
    pub duplicate_merges: usize,
    /// training stopped because the vocabulary would spell more text than the caps allow
    pub capped: bool,
    pub vocab_size: usize,
}

impl SeedBpeReport {
    /// One or two sentences saying why the vocabulary has `vocab_size` tokens and not `asked`
    /// (empty when they are equal).
    pub fn explain(&self) -> String {
        if self.vocab_size == self.asked {
            return String::new();
        }
        let mut parts = vec![format!(
            "The vocabulary has {} tokens, not {}: {} symbols (the text's characters and </w>) + {} new tokens from {} merges + <UNK>.",
            self.vocab_size,
            self.asked,
            self.initial_symbols,
            self.merges_learned - self.duplicate_merges,
            self.merges_learned
        )];
        if self.asked <= self.initial_symbols {
            parts.push(format!(
                "The text alone has {} symbols, as many as or more than the {} asked, so no merge was learned.",
                self.initial_symbols, self.asked
            ));
        } else if self.capped {
            parts.push(format!(
                "Training stopped after {} of the {} merges the size asks for: the tokens would spell more text than the workbench's cap.",
                self.merges_learned, self.merges_asked
            ));
        } else if self.merges_learned < self.merges_asked {
            parts.push(format!(
                "Training stopped after {} of the {} merges the size asks for: no two symbols are left side by side (every word of the text is one token), so there was nothing more to merge.",
                self.merges_learned, self.merges_asked
            ));
        } else {
            parts.push(
                "As in the seed, the size counts the symbols and the merges, and <UNK> is added afterwards: one more than asked.".into(),
            );
        }
        if self.duplicate_merges > 0 {
            parts.push(format!(
                "{} merge{} produced a token that was already in the vocabulary, which adds nothing.",
                self.duplicate_merges,
                if self.duplicate_merges == 1 { "" } else { "s" }
            ));
        }
        parts.join(" ")
    }
}

/// `train_seed_bpe` and its report (see `SeedBpeReport`).
pub fn train_seed_bpe_with_report(text: &str, vocab_size: usize) -> (SeedBpe, SeedBpeReport) {
    let mut interner: HashMap<String, u32> = HashMap::new();
    let mut strs: Vec<String> = Vec::new();
    let intern = |s: String, interner: &mut HashMap<String, u32>, strs: &mut Vec<String>| -> u32 {
        if let Some(&id) = interner.get(&s) {
            return id;
        }
        let id = strs.len() as u32;
        interner.insert(s.clone(), id);
        strs.push(s);
        id
    };

    // Distinct words in order of first appearance, with counts.
    let mut word_index: HashMap<String, usize> = HashMap::new();
    let mut words: Vec<(Vec<u32>, u64)> = Vec::new();
    let mut lowered: Vec<String> = Vec::new();
    for (_, w, _) in split_words(text) {
        let lw = w.to_lowercase();
        match word_index.get(&lw) {
            Some(&k) => words[k].1 += 1,
            None => {
                word_index.insert(lw.clone(), words.len());
                lowered.push(lw);
                words.push((Vec::new(), 1));
            }
        }
    }
    for (k, lw) in lowered.iter().enumerate() {
        let mut syms: Vec<u32> = lw.chars().map(|c| intern(c.to_string(), &mut interner, &mut strs)).collect();
        syms.push(intern(DEFAULT_END.to_string(), &mut interner, &mut strs));
        words[k].0 = syms;
    }
    drop(lowered);

    // Incremental counts (train.rs): O(N log N) in the text, whatever the number of merges. The merged
    // string is interned, so two pairs that spell the same string make the same token, as in the seed.
    let initial = strs.len();
    let num_merges = vocab_size.saturating_sub(initial);
    let seqs: Vec<(Vec<u32>, u32)> = words.into_iter().map(|(syms, f)| (syms, u32::try_from(f).unwrap_or(u32::MAX))).collect();
    let mut total_bytes: usize = strs.iter().map(String::len).sum();
    let mut duplicate_merges = 0;
    let mut capped = false;
    let pairs = train_merges_with(&seqs, num_merges, TieBreak::FirstOccurrence, |a, b| {
        let len = strs[a as usize].len() + strs[b as usize].len();
        total_bytes += len;
        if len > MAX_TOKEN_BYTES || total_bytes > MAX_TOTAL_TOKEN_BYTES {
            capped = true;
            return None; // the vocabulary would spell too much text: stop here
        }
        let merged = format!("{}{}", strs[a as usize], strs[b as usize]);
        let before = strs.len();
        let m = intern(merged, &mut interner, &mut strs);
        if strs.len() == before {
            duplicate_merges += 1;
        }
        Some(m)
    });
    drop(seqs);
    let merges: Vec<(String, String)> = pairs.iter().map(|&(a, b)| (strs[a as usize].clone(), strs[b as usize].clone())).collect();

    let mut vocab: Vec<String> = strs;
    vocab.push(DEFAULT_UNK.to_string());
    vocab.sort();
    vocab.dedup();
    let merges_learned = merges.len();
    // Cannot fail: every merge part and result is in the vocabulary, and <UNK> is there.
    let t = match SeedBpe::new(vocab, merges, DEFAULT_UNK.to_string(), DEFAULT_END.to_string()) {
        Ok(t) => t,
        Err(_) => SeedBpe::empty(),
    };
    let report = SeedBpeReport {
        asked: vocab_size,
        initial_symbols: initial,
        merges_asked: num_merges,
        merges_learned,
        duplicate_merges,
        capped,
        vocab_size: t.vocab_size(),
    };
    (t, report)
}

impl SeedBpe {
    pub const KIND: &'static str = "seed_bpe";

    fn empty() -> Self {
        SeedBpe::new(vec![DEFAULT_UNK.to_string()], vec![], DEFAULT_UNK.to_string(), DEFAULT_END.to_string())
            .expect("a vocabulary of just <UNK> is valid")
    }

    /// Builds a tokenizer from an explicit vocabulary (index = id) and merge list. Every merge part and
    /// merge result must be in the vocabulary, and so must `unk_token`.
    pub fn new(vocab: Vec<String>, merges: Vec<(String, String)>, unk_token: String, end_token: String) -> Result<Self, TokenizerError> {
        if vocab.len() > MAX_ENTRIES {
            return Err(TokenizerError::Invalid(format!("seed_bpe vocabulary has {} entries (max {MAX_ENTRIES})", vocab.len())));
        }
        if merges.len() > MAX_ENTRIES {
            return Err(TokenizerError::Invalid(format!("seed_bpe has {} merges (max {MAX_ENTRIES})", merges.len())));
        }
        if end_token.is_empty() {
            return Err(TokenizerError::Invalid("seed_bpe end_token must not be empty".into()));
        }
        for (name, t) in [("end_token", &end_token), ("unk_token", &unk_token)] {
            if t.len() > MAX_MARKER_BYTES {
                return Err(TokenizerError::Invalid(format!("seed_bpe {name} is {} bytes long (max {MAX_MARKER_BYTES})", t.len())));
            }
        }
        if let Some(t) = vocab.iter().find(|t| t.len() > MAX_TOKEN_BYTES) {
            return Err(TokenizerError::Invalid(format!("seed_bpe has a token of {} bytes (max {MAX_TOKEN_BYTES})", t.len())));
        }
        let mut token_to_id = HashMap::with_capacity(vocab.len());
        let mut char_ids = FxHashMap::default();
        for (i, t) in vocab.iter().enumerate() {
            if token_to_id.insert(t.clone(), i as u32).is_some() {
                return Err(TokenizerError::Invalid(format!("seed_bpe vocabulary has {:?} twice", clip(t, 80))));
            }
            let mut cs = t.chars();
            if let (Some(c), None) = (cs.next(), cs.next()) {
                char_ids.insert(c, i as u32);
            }
        }
        let unk_id = *token_to_id
            .get(&unk_token)
            .ok_or_else(|| TokenizerError::Invalid(format!("seed_bpe unk_token {:?} is not in the vocabulary", clip(&unk_token, 80))))?;
        let end_id = token_to_id.get(&end_token).copied();
        let mut ranked = Vec::with_capacity(merges.len());
        for (k, (a, b)) in merges.iter().enumerate() {
            let look = |s: &str| {
                token_to_id.get(s).copied().ok_or_else(|| {
                    TokenizerError::Invalid(format!(
                        "seed_bpe merge {k} ({:?}, {:?}) uses {:?}, which is not in the vocabulary",
                        clip(a, 80),
                        clip(b, 80),
                        clip(s, 80)
                    ))
                })
            };
            let ia = look(a)?;
            let ib = look(b)?;
            let im = look(&format!("{a}{b}"))?;
            ranked.push(((ia, ib), im));
        }
        let end_matcher = Arc::new(EndMatcher::new(&end_token));
        Ok(SeedBpe {
            table: RankTable::new(ranked),
            vocab,
            token_to_id,
            char_ids,
            merges,
            unk_token,
            unk_id,
            end_token,
            end_id,
            end_matcher,
        })
    }

    /// Vocabulary, index = id.
    pub fn vocab(&self) -> &[String] {
        &self.vocab
    }
    /// Learned merges in training order (replay them with `encode_with_first_n_merges`).
    pub fn merges(&self) -> &[(String, String)] {
        &self.merges
    }
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }
    pub fn unk_token(&self) -> &str {
        &self.unk_token
    }
    pub fn end_token(&self) -> &str {
        &self.end_token
    }
    /// A fresh streaming decode clean-up for this tokenizer's end marker.
    pub(crate) fn normalizer(&self) -> SeedNormalizer {
        SeedNormalizer::new(Arc::clone(&self.end_matcher))
    }
    /// Id of a vocabulary string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.token_to_id.get(token).copied()
    }

    /// The vocabulary string of an id.
    pub fn piece(&self, id: u32) -> Result<&str, TokenizerError> {
        self.vocab.get(id as usize).map(|s| s.as_str()).ok_or(TokenizerError::IdOutOfRange { id, vocab_size: self.vocab.len() })
    }

    pub fn encode(&self, text: &str) -> Encoding {
        self.encode_with_first_n_merges(text, usize::MAX)
    }

    /// Encodes with only the first `n` merges.
    pub fn encode_with_first_n_merges(&self, text: &str, n: usize) -> Encoding {
        let mut enc = Encoding::default();
        let mut cache: FxHashMap<String, Vec<Piece>> = FxHashMap::default();
        // per symbol: (byte start, byte end, char index or usize::MAX for the end marker)
        let mut src: Vec<(usize, usize, usize)> = Vec::new();
        for (wb, word, wc) in split_words(text) {
            let lw = word.to_lowercase();
            src.clear();
            // Map each lowercase char back to its source char. Per-char lowercasing gives the same
            // number of chars as whole-word lowercasing (only final sigma differs, 1 char either way).
            for (ci, (b, c)) in word.char_indices().enumerate() {
                let k = c.to_lowercase().count();
                for _ in 0..k {
                    src.push((wb + b, wb + b + c.len_utf8(), wc + ci));
                }
            }
            let nl = lw.chars().count();
            if src.len() != nl {
                // Should not happen; fall back to pointing every symbol at the whole word.
                src.clear();
                src.resize(nl, (wb, wb + word.len(), wc));
            }
            let wend = wb + word.len();
            src.push((wend, wend, usize::MAX));
            let pieces = cache.entry(lw).or_insert_with_key(|lw| {
                let mut p: Vec<Piece> = lw
                    .chars()
                    .enumerate()
                    .map(|(k, c)| Piece { id: self.char_ids.get(&c).copied().unwrap_or(UNKNOWN_SYM), lo: k, hi: k + 1 })
                    .collect();
                let k = p.len();
                p.push(Piece { id: self.end_id.unwrap_or(UNKNOWN_SYM), lo: k, hi: k + 1 });
                merge_ranked(&mut p, &self.table, n);
                p
            });
            for p in pieces.iter() {
                let (start, _, _) = src[p.lo];
                let (_, end, _) = src[p.hi - 1];
                if p.id == UNKNOWN_SYM {
                    enc.ids.push(self.unk_id);
                    for s in &src[p.lo..p.hi] {
                        if s.2 != usize::MAX && enc.unknown.last() != Some(&s.2) {
                            enc.unknown.push(s.2);
                        }
                    }
                } else {
                    enc.ids.push(p.id);
                }
                enc.spans.push((start, end.max(start)));
            }
        }
        enc
    }

    /// Decodes ids (see the module docs); an id past the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut norm = self.normalizer();
        let mut out = String::new();
        for &id in ids {
            out.push_str(&norm.push(self.piece(id)?));
        }
        out.push_str(&norm.finish());
        Ok(out)
    }

    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": Self::KIND,
            "vocab": self.vocab,
            "merges": self.merges,
            "unk_token": self.unk_token,
            "end_token": self.end_token,
        })
    }

    pub fn from_json_value(v: &serde_json::Value) -> Result<Self, TokenizerError> {
        Self::from_json_source(JsonSource::Value(v))
    }

    pub(crate) fn from_json_source(src: JsonSource<'_>) -> Result<Self, TokenizerError> {
        let j: SeedJson = src.parse(Self::KIND)?;
        if j.kind != Self::KIND {
            return Err(TokenizerError::Json(format!("expected kind \"seed_bpe\", got {:?}", j.kind)));
        }
        SeedBpe::new(j.vocab, j.merges, j.unk_token, j.end_token)
    }
}

/// The end marker as a KMP automaton over its bytes: `fail[i]` is the length of the longest proper
/// border of `end[..=i]`. Shared (an `Arc`) by the tokenizer and its stream decoders.
#[derive(Debug)]
pub(crate) struct EndMatcher {
    end: String,
    fail: Vec<u32>,
}

impl EndMatcher {
    pub(crate) fn new(end: &str) -> Self {
        let p = end.as_bytes();
        let mut fail = vec![0u32; p.len()];
        let mut k = 0usize;
        for i in 1..p.len() {
            while k > 0 && p[i] != p[k] {
                k = fail[k - 1] as usize;
            }
            if p[i] == p[k] {
                k += 1;
            }
            fail[i] = k as u32;
        }
        EndMatcher { end: end.to_string(), fail }
    }
}

/// Streaming form of the seed's decode clean-up: `</w>` -> " ", then `re.sub(r'\s+', ' ', t).strip()`,
/// as the seed does on the whole joined text (leftmost, non-overlapping replacement).
/// Holds back the longest suffix that is a proper prefix of the end marker (the KMP state, so the held
/// text is `end[..state]` and is never stored or rescanned: linear in the input, whatever the marker's
/// length) and a trailing space.
#[derive(Debug, Clone)]
pub(crate) struct SeedNormalizer {
    end: Arc<EndMatcher>,
    state: usize,
    started: bool,
    pending_space: bool,
}

impl SeedNormalizer {
    pub(crate) fn new(end: Arc<EndMatcher>) -> Self {
        SeedNormalizer { end, state: 0, started: false, pending_space: false }
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.state + self.pending_space as usize
    }

    fn emit(&mut self, s: &str, out: &mut String) {
        for c in s.chars() {
            if is_py_space(c) {
                if self.started {
                    self.pending_space = true;
                }
            } else {
                if self.pending_space {
                    out.push(' ');
                    self.pending_space = false;
                }
                out.push(c);
                self.started = true;
            }
        }
    }

    pub(crate) fn push(&mut self, piece: &str) -> String {
        let matcher = Arc::clone(&self.end);
        let p = matcher.end.as_bytes();
        let mut out = String::new();
        if p.is_empty() {
            self.emit(piece, &mut out);
            return out;
        }
        // Bytes leaving the match window, in order, with " " for each full match. They end where the
        // held prefix starts, which is a character boundary (the marker starts with one), so they are
        // whole UTF-8 characters.
        let mut released: Vec<u8> = Vec::with_capacity(piece.len() + 1);
        for &c in piece.as_bytes() {
            let held = self.state;
            let mut s = held;
            while s > 0 && p[s] != c {
                s = matcher.fail[s - 1] as usize;
            }
            if p[s] == c {
                s += 1;
            }
            // (end[..held] + c) now keeps only its suffix end[..s]; the rest is released.
            let n = held + 1 - s;
            if n <= held {
                released.extend_from_slice(&p[..n]);
            } else {
                released.extend_from_slice(&p[..held]);
                released.push(c);
            }
            if s == p.len() {
                released.push(b' ');
                s = 0;
            }
            self.state = s;
        }
        let text = String::from_utf8_lossy(&released);
        self.emit(&text, &mut out);
        out
    }

    pub(crate) fn finish(&mut self) -> String {
        let matcher = Arc::clone(&self.end);
        let held = String::from_utf8_lossy(&matcher.end.as_bytes()[..self.state]).into_owned();
        let mut out = String::new();
        self.emit(&held, &mut out);
        self.state = 0;
        self.started = false;
        self.pending_space = false;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The previous trainer, kept as the reference: a full recount of every pair for every merge, ties
    /// to the first occurrence (the seed's Counter.most_common(1)).
    fn slow_train(text: &str, vocab_size: usize) -> Vec<(String, String)> {
        let mut strs: Vec<String> = Vec::new();
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut intern = |s: String, strs: &mut Vec<String>| -> u32 {
            *ids.entry(s.clone()).or_insert_with(|| {
                strs.push(s);
                strs.len() as u32 - 1
            })
        };
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut words: Vec<(Vec<u32>, u64)> = Vec::new();
        let mut lowered = Vec::new();
        for (_, w, _) in split_words(text) {
            let lw = w.to_lowercase();
            match index.get(&lw) {
                Some(&k) => words[k].1 += 1,
                None => {
                    index.insert(lw.clone(), words.len());
                    lowered.push(lw);
                    words.push((vec![], 1));
                }
            }
        }
        for (k, lw) in lowered.iter().enumerate() {
            let mut syms: Vec<u32> = lw.chars().map(|c| intern(c.to_string(), &mut strs)).collect();
            syms.push(intern(DEFAULT_END.to_string(), &mut strs));
            words[k].0 = syms;
        }
        let mut merges = Vec::new();
        for _ in 0..vocab_size.saturating_sub(strs.len()) {
            let mut counts: Vec<((u32, u32), u64)> = Vec::new();
            let mut at: HashMap<(u32, u32), usize> = HashMap::new();
            for (syms, f) in &words {
                for p in syms.windows(2) {
                    let k = *at.entry((p[0], p[1])).or_insert_with(|| {
                        counts.push(((p[0], p[1]), 0));
                        counts.len() - 1
                    });
                    counts[k].1 += f;
                }
            }
            // first maximum in insertion order
            let Some(&((a, b), _)) = counts.iter().rev().max_by_key(|(_, c)| *c) else { break };
            let m = intern(format!("{}{}", strs[a as usize], strs[b as usize]), &mut strs);
            for (syms, _) in words.iter_mut() {
                let mut out = Vec::new();
                let mut i = 0;
                while i < syms.len() {
                    if i + 1 < syms.len() && syms[i] == a && syms[i + 1] == b {
                        out.push(m);
                        i += 2;
                    } else {
                        out.push(syms[i]);
                        i += 1;
                    }
                }
                *syms = out;
            }
            merges.push((strs[a as usize].clone(), strs[b as usize].clone()));
        }
        merges
    }

    fn rng(mut s: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        }
    }

    #[test]
    fn incremental_training_matches_the_recount() {
        let mut r = rng(0x1234_5678_9abc_def1);
        // Small alphabets make ties, repeated words, merged strings that already exist ("ab"+"c" and
        // "a"+"bc") and pairs that come back after their merge.
        let alphabet = ['a', 'b', 'c', 'A', ' ', ' ', '\n'];
        for case in 0..400 {
            let len = r(60) as usize;
            let text: String = (0..len).map(|_| alphabet[r(alphabet.len() as u64) as usize]).collect();
            let vocab = r(30) as usize;
            let got = train_seed_bpe(&text, vocab);
            assert_eq!(got.merges(), slow_train(&text, vocab).as_slice(), "case {case}: {text:?} vocab {vocab}");
        }
    }

    /// The seed's decode: join, replace the end marker, collapse whitespace, strip.
    fn seed_decode(pieces: &[&str], end: &str) -> String {
        let joined = pieces.concat().replace(end, " ");
        joined.split(is_py_space).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn streaming_clean_up_matches_the_whole_text_replace() {
        let mut r = rng(0x0bad_cafe_f00d_1234);
        let ends = ["</w>", "aa", "aba", "abab", "é", "xé", "a", " x", "ab ab"];
        let alphabet = ["a", "b", "x", " ", "é", "<", "/", "w", ">", "</w>", "ab", "\n"];
        for case in 0..3000 {
            let end = ends[r(ends.len() as u64) as usize];
            let n = r(12) as usize;
            let pieces: Vec<String> =
                (0..n).map(|_| (0..1 + r(3)).map(|_| alphabet[r(alphabet.len() as u64) as usize]).collect()).collect();
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let mut norm = SeedNormalizer::new(Arc::new(EndMatcher::new(end)));
            let mut got = String::new();
            for p in &refs {
                got.push_str(&norm.push(p));
            }
            got.push_str(&norm.finish());
            assert_eq!(got, seed_decode(&refs, end), "case {case}: end {end:?} pieces {refs:?}");
        }
    }
}
