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
use super::{is_py_space, json_err, pair_key, Encoding, FxHashMap, TokenizerError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub(crate) const DEFAULT_UNK: &str = "<UNK>";
pub(crate) const DEFAULT_END: &str = "</w>";
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

    let initial = strs.len();
    let num_merges = vocab_size.saturating_sub(initial);
    let mut merges: Vec<(String, String)> = Vec::new();
    let mut duplicate_merges = 0;
    for _ in 0..num_merges {
        // (count, order of first occurrence)
        let mut counts: FxHashMap<u64, (u64, u32)> = FxHashMap::default();
        let mut order = 0u32;
        for (syms, f) in &words {
            for p in syms.windows(2) {
                let e = counts.entry(pair_key(p[0], p[1])).or_insert_with(|| {
                    order += 1;
                    (0, order)
                });
                e.0 += *f;
            }
        }
        let Some((&best, _)) = counts.iter().max_by(|x, y| x.1 .0.cmp(&y.1 .0).then(y.1 .1.cmp(&x.1 .1))) else {
            break;
        };
        let (a, b) = super::unpair(best);
        let merged = format!("{}{}", strs[a as usize], strs[b as usize]);
        let before = strs.len();
        let m = intern(merged, &mut interner, &mut strs);
        if strs.len() == before {
            duplicate_merges += 1;
        }
        for (syms, _) in words.iter_mut() {
            if syms.len() < 2 {
                continue;
            }
            let mut w = 0;
            let mut i = 0;
            let n = syms.len();
            while i < n {
                if i + 1 < n && syms[i] == a && syms[i + 1] == b {
                    syms[w] = m;
                    i += 2;
                } else {
                    syms[w] = syms[i];
                    i += 1;
                }
                w += 1;
            }
            syms.truncate(w);
        }
        merges.push((strs[a as usize].clone(), strs[b as usize].clone()));
    }

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
        if vocab.len() > u32::MAX as usize - 2 {
            return Err(TokenizerError::Invalid("seed_bpe vocabulary is too large".into()));
        }
        if end_token.is_empty() {
            return Err(TokenizerError::Invalid("seed_bpe end_token must not be empty".into()));
        }
        let mut token_to_id = HashMap::with_capacity(vocab.len());
        let mut char_ids = FxHashMap::default();
        for (i, t) in vocab.iter().enumerate() {
            if token_to_id.insert(t.clone(), i as u32).is_some() {
                return Err(TokenizerError::Invalid(format!("seed_bpe vocabulary has {t:?} twice")));
            }
            let mut cs = t.chars();
            if let (Some(c), None) = (cs.next(), cs.next()) {
                char_ids.insert(c, i as u32);
            }
        }
        let unk_id = *token_to_id
            .get(&unk_token)
            .ok_or_else(|| TokenizerError::Invalid(format!("seed_bpe unk_token {unk_token:?} is not in the vocabulary")))?;
        let end_id = token_to_id.get(&end_token).copied();
        let mut ranked = Vec::with_capacity(merges.len());
        for (k, (a, b)) in merges.iter().enumerate() {
            let look = |s: &str| {
                token_to_id.get(s).copied().ok_or_else(|| {
                    TokenizerError::Invalid(format!("seed_bpe merge {k} ({a:?}, {b:?}) uses {s:?}, which is not in the vocabulary"))
                })
            };
            let ia = look(a)?;
            let ib = look(b)?;
            let im = look(&format!("{a}{b}"))?;
            ranked.push(((ia, ib), im));
        }
        Ok(SeedBpe { table: RankTable::new(ranked), vocab, token_to_id, char_ids, merges, unk_token, unk_id, end_token, end_id })
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
        let mut norm = SeedNormalizer::new(&self.end_token);
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
        let j: SeedJson = serde_json::from_value(v.clone()).map_err(|e| json_err(Self::KIND, e))?;
        if j.kind != Self::KIND {
            return Err(TokenizerError::Json(format!("expected kind \"seed_bpe\", got {:?}", j.kind)));
        }
        SeedBpe::new(j.vocab, j.merges, j.unk_token, j.end_token)
    }
}

/// Streaming form of the seed's decode clean-up: `</w>` -> " ", then `re.sub(r'\s+', ' ', t).strip()`.
/// Holds back a possible start of the end marker and a trailing space.
#[derive(Debug, Clone)]
pub(crate) struct SeedNormalizer {
    end: String,
    held: String,
    started: bool,
    pending_space: bool,
}

impl SeedNormalizer {
    pub(crate) fn new(end: &str) -> Self {
        SeedNormalizer { end: end.to_string(), held: String::new(), started: false, pending_space: false }
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.held.len() + self.pending_space as usize
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
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(piece);
        let mut out = String::new();
        let replaced = if self.end.is_empty() { buf } else { buf.replace(&self.end, " ") };
        // Hold back the longest suffix that is a proper prefix of the end marker.
        let mut keep = 0;
        for (i, _) in self.end.char_indices().skip(1) {
            if replaced.ends_with(&self.end[..i]) {
                keep = i;
            }
        }
        let cut = replaced.len() - keep;
        let (now, later) = replaced.split_at(cut);
        self.emit(now, &mut out);
        self.held = later.to_string();
        out
    }

    pub(crate) fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        let mut out = String::new();
        self.emit(&held, &mut out);
        self.started = false;
        self.pending_space = false;
        out
    }
}
