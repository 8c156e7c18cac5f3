//! `char_merges`: seed 004's SimpleTokenizer (a character table `stoi` plus merges (id, id) -> id).
//!
//! Encode, exactly as the seed: map every character to its id (a character not in the table maps to
//! the id of ' ', and is reported in [`Encoding::unknown`]; if the table has no ' ' the character is
//! dropped, and still reported); then scan left to right with an index `i`: if (t[i], t[i+1]) is a
//! merge, replace it by the merged id and step back one position (unless at 0), otherwise advance.
//! This runs in linear time with a stack (the tokens left of `i`) and one held-back token.
//!
//! Decode: recursive expansion of merged ids (precomputed per id).
//!
//! Training ([`train_char_merges`]): base vocabulary = the distinct characters of the text, sorted by
//! code point, ids 0..k; then merges of the most frequent adjacent id pair over the whole text (pairs
//! counted with overlap, merged left to right), new ids k, k+1, ... until the vocabulary size.
//! Tie-break: the smallest pair (a, b) by ids. Incremental counts, see `train.rs`.

use super::train::train_merges;
use super::{pair_key, Encoding, FxHashMap, JsonSource, TokenizerError, MAX_TOKEN_BYTES, MAX_TOTAL_TOKEN_BYTES};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Largest id a `char_merges` JSON may use (keeps a hostile file from allocating gigabytes).
const MAX_ID: u32 = 1 << 20;

/// Seed 004's character + merges tokenizer.
#[derive(Debug, Clone)]
pub struct CharMerges {
    char_ids: FxHashMap<char, u32>,
    /// (a, b, new id), sorted by new id (= training order).
    merges: Vec<(u32, u32, u32)>,
    /// pair -> (new id, rank)
    pair_map: FxHashMap<u64, (u32, u32)>,
    /// id -> text (None for an unassigned id)
    expansions: Vec<Option<String>>,
    space_id: Option<u32>,
}

#[derive(Deserialize)]
struct CharJson {
    kind: String,
    stoi: BTreeMap<String, u32>,
    merges: Vec<(u32, u32, u32)>,
}

/// Trains a `char_merges` tokenizer to `vocab_size` ids (see the module docs). Errors if the text has
/// more distinct characters than `vocab_size`. Stops early if no pair is left to merge.
pub fn train_char_merges(text: &str, vocab_size: usize) -> Result<CharMerges, TokenizerError> {
    let mut chars: Vec<char> = text.chars().collect::<std::collections::BTreeSet<char>>().into_iter().collect();
    chars.sort_unstable();
    let k = chars.len();
    if k > vocab_size {
        return Err(TokenizerError::Train(format!("the text has {k} distinct characters, more than the vocabulary size {vocab_size}")));
    }
    if vocab_size > MAX_ID as usize {
        return Err(TokenizerError::Train(format!("vocabulary size {vocab_size} is too large (max {MAX_ID})")));
    }
    let ids: FxHashMap<char, u32> = chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
    let seq: Vec<u32> = text.chars().map(|c| ids[&c]).collect();
    let learned = train_merges(&[(seq, 1)], k as u32, vocab_size - k);
    let stoi: Vec<(char, u32)> = chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
    let merges = learned.iter().enumerate().map(|(r, &(a, b))| (a, b, (k + r) as u32)).collect();
    CharMerges::new(stoi, merges)
}

impl CharMerges {
    pub const KIND: &'static str = "char_merges";

    /// Builds from the seed's two tables: `stoi` (char -> id) and merges (a, b) -> new id.
    /// Ids must be distinct and below 2^24; merge parts must be assigned ids; no cycles.
    pub fn new(stoi: Vec<(char, u32)>, merges: Vec<(u32, u32, u32)>) -> Result<Self, TokenizerError> {
        let mut max_id: Option<u32> = None;
        for &(_, id) in &stoi {
            max_id = max_id.max(Some(id));
        }
        for &(_, _, m) in &merges {
            max_id = max_id.max(Some(m));
        }
        if let Some(m) = max_id {
            if m >= MAX_ID {
                return Err(TokenizerError::Invalid(format!("char_merges id {m} is too large (max {})", MAX_ID - 1)));
            }
        }
        let n = max_id.map_or(0, |m| m as usize + 1);
        let mut expansions: Vec<Option<String>> = vec![None; n];
        let mut char_ids = FxHashMap::default();
        for &(c, id) in &stoi {
            if expansions[id as usize].is_some() {
                return Err(TokenizerError::Invalid(format!("char_merges id {id} is used twice")));
            }
            if char_ids.insert(c, id).is_some() {
                return Err(TokenizerError::Invalid(format!("char_merges character {c:?} appears twice")));
            }
            expansions[id as usize] = Some(c.to_string());
        }
        let mut merges = merges;
        merges.sort_by_key(|&(_, _, m)| m);
        let mut pair_map = FxHashMap::default();
        let mut is_merge = vec![false; n];
        for (r, &(a, b, m)) in merges.iter().enumerate() {
            if expansions[m as usize].is_some() || is_merge[m as usize] {
                return Err(TokenizerError::Invalid(format!("char_merges id {m} is used twice")));
            }
            is_merge[m as usize] = true;
            if pair_map.insert(pair_key(a, b), (m, r as u32)).is_some() {
                return Err(TokenizerError::Invalid(format!("char_merges pair ({a}, {b}) is merged twice")));
            }
        }
        // Expand merges in dependency order (Kahn's algorithm): a merge is expanded once both parts are,
        // so a chain listed backwards costs O(merges), not one pass per link.
        let mut total: usize = n;
        let part_ok = |p: u32| (p as usize) < n;
        // waiting on each id: CSR lists of merge indices (a merge waits once per distinct unexpanded part)
        let mut unresolved: Vec<u8> = vec![0; merges.len()];
        let mut wait_start: Vec<u32> = vec![0; n + 1];
        let parts = |&(a, b, _): &(u32, u32, u32)| if a == b { [Some(a), None] } else { [Some(a), Some(b)] };
        for &mg in &merges {
            for p in parts(&mg).into_iter().flatten() {
                if part_ok(p) && expansions[p as usize].is_none() {
                    wait_start[p as usize + 1] += 1;
                }
            }
        }
        for i in 0..n {
            wait_start[i + 1] += wait_start[i];
        }
        let mut fill = wait_start.clone();
        let mut waiting: Vec<u32> = vec![0; wait_start[n] as usize];
        let mut ready: Vec<u32> = Vec::new();
        for (r, mg) in merges.iter().enumerate() {
            let mut missing = 0u8;
            let mut never = false;
            for p in parts(mg).into_iter().flatten() {
                if !part_ok(p) {
                    never = true; // an id past every table: never resolvable
                } else if expansions[p as usize].is_none() {
                    waiting[fill[p as usize] as usize] = r as u32;
                    fill[p as usize] += 1;
                    missing += 1;
                }
            }
            unresolved[r] = if never { u8::MAX } else { missing };
            if unresolved[r] == 0 {
                ready.push(r as u32);
            }
        }
        drop(fill);
        let mut done = 0usize;
        while let Some(r) = ready.pop() {
            let (a, b, m) = merges[r as usize];
            let (Some(x), Some(y)) = (&expansions[a as usize], &expansions[b as usize]) else { continue };
            let len = x.len() + y.len();
            total += len;
            if len > MAX_TOKEN_BYTES || total > MAX_TOTAL_TOKEN_BYTES {
                return Err(TokenizerError::Invalid(format!("char_merges token {m} expands to too much text")));
            }
            let s = format!("{x}{y}");
            expansions[m as usize] = Some(s);
            done += 1;
            for &w in &waiting[wait_start[m as usize] as usize..wait_start[m as usize + 1] as usize] {
                let u = &mut unresolved[w as usize];
                if *u != u8::MAX {
                    *u -= 1;
                    if *u == 0 {
                        ready.push(w);
                    }
                }
            }
        }
        if done < merges.len() {
            let &(a, b, m) = merges.iter().find(|&&(_, _, m)| expansions[m as usize].is_none()).unwrap_or(&merges[0]);
            return Err(TokenizerError::Invalid(format!(
                "char_merges merge ({a}, {b}) -> {m} uses an id that is neither a character nor a merge result (or the merges form a cycle)"
            )));
        }
        let space_id = char_ids.get(&' ').copied();
        Ok(CharMerges { char_ids, merges, pair_map, expansions, space_id })
    }

    /// Number of ids: the largest id + 1 (the seed's `len(stoi) + len(merges)` when ids are dense).
    pub fn vocab_size(&self) -> usize {
        self.expansions.len()
    }
    /// Merges (a, b, new id) in training order.
    pub fn merges(&self) -> &[(u32, u32, u32)] {
        &self.merges
    }
    /// The character table, sorted by id.
    pub fn stoi(&self) -> Vec<(char, u32)> {
        let mut v: Vec<(char, u32)> = self.char_ids.iter().map(|(&c, &i)| (c, i)).collect();
        v.sort_by_key(|&(_, i)| i);
        v
    }
    /// The id unknown characters map to (the id of ' '), if the table has a space.
    pub fn space_id(&self) -> Option<u32> {
        self.space_id
    }

    /// Text of one id.
    pub fn expansion(&self, id: u32) -> Result<&str, TokenizerError> {
        match self.expansions.get(id as usize) {
            Some(Some(s)) => Ok(s),
            Some(None) => Err(TokenizerError::UnassignedId { id, vocab_size: self.expansions.len() }),
            None => Err(TokenizerError::IdOutOfRange { id, vocab_size: self.expansions.len() }),
        }
    }

    pub fn encode(&self, text: &str) -> Encoding {
        self.encode_with_first_n_merges(text, usize::MAX)
    }

    /// Encodes with only the first `n` merges (by new id).
    pub fn encode_with_first_n_merges(&self, text: &str, n: usize) -> Encoding {
        let limit = n.min(self.merges.len()) as u32;
        let mut unknown = Vec::new();
        // (id, byte lo, byte hi)
        let mut stack: Vec<(u32, usize, usize)> = Vec::with_capacity(text.len() / 2 + 1);
        let mut back: Option<(u32, usize, usize)> = None;
        let mut input = text.char_indices().enumerate();
        loop {
            let b = match back.take() {
                Some(t) => t,
                None => {
                    let mut got = None;
                    for (ci, (bi, c)) in input.by_ref() {
                        let hi = bi + c.len_utf8();
                        match self.char_ids.get(&c) {
                            Some(&id) => {
                                got = Some((id, bi, hi));
                                break;
                            }
                            None => {
                                unknown.push(ci);
                                if let Some(sp) = self.space_id {
                                    got = Some((sp, bi, hi));
                                    break;
                                }
                            }
                        }
                    }
                    match got {
                        Some(t) => t,
                        None => break,
                    }
                }
            };
            if let Some(&a) = stack.last() {
                if let Some(&(m, r)) = self.pair_map.get(&pair_key(a.0, b.0)) {
                    if r < limit {
                        stack.pop();
                        let merged = (m, a.1, b.2);
                        if stack.is_empty() {
                            stack.push(merged);
                        } else {
                            back = Some(merged);
                        }
                        continue;
                    }
                }
            }
            stack.push(b);
        }
        Encoding { ids: stack.iter().map(|t| t.0).collect(), spans: stack.iter().map(|t| (t.1, t.2)).collect(), unknown }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut out = String::new();
        for &id in ids {
            out.push_str(self.expansion(id)?);
        }
        Ok(out)
    }

    pub fn to_json_value(&self) -> serde_json::Value {
        let mut stoi = serde_json::Map::new();
        for (c, id) in self.stoi() {
            stoi.insert(c.to_string(), serde_json::Value::from(id));
        }
        serde_json::json!({
            "kind": Self::KIND,
            "stoi": stoi,
            "merges": self.merges,
        })
    }

    pub fn from_json_value(v: &serde_json::Value) -> Result<Self, TokenizerError> {
        Self::from_json_source(JsonSource::Value(v))
    }

    pub(crate) fn from_json_source(src: JsonSource<'_>) -> Result<Self, TokenizerError> {
        let j: CharJson = src.parse(Self::KIND)?;
        if j.kind != Self::KIND {
            return Err(TokenizerError::Json(format!("expected kind \"char_merges\", got {:?}", j.kind)));
        }
        let mut stoi = Vec::with_capacity(j.stoi.len());
        for (s, id) in j.stoi {
            let mut cs = s.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) => stoi.push((c, id)),
                _ => return Err(TokenizerError::Json(format!("char_merges: stoi key {s:?} must be exactly one character"))),
            }
        }
        CharMerges::new(stoi, j.merges)
    }
}
