//! `hf_bpe`: a Hugging Face `tokenizer.json` whose model is BPE, read and run by our own code (the
//! `tokenizers` crate's choice is in ARCHITECTURE.md). The pipeline is the library's:
//!
//! 1. added tokens with `normalized: false` are cut out of the raw text (leftmost-longest, with their
//!    `lstrip`/`rstrip`/`single_word` flags);
//! 2. each remaining piece is normalized (`Sequence`, `Prepend`, `Replace` with a string pattern, `NFC`,
//!    `NFD`, `NFKC`, `NFKD`, `Lowercase`, `Strip`, `StripAccents`), then added tokens with
//!    `normalized: true` are cut out of it. Every output character keeps the span of the input it came
//!    from; how much longer a normalizer can make a text is bounded at load (`MAX_NORMALIZER_GROWTH`);
//! 3. pre-tokenizers (`Sequence`, `ByteLevel` with or without the GPT-2 regex, `Metaspace`, `Digits`,
//!    `Punctuation`, `Whitespace`, `WhitespaceSplit`, `Split` on a regex or a string with any split
//!    behaviour) cut each piece into words;
//! 4. BPE on each word: characters looked up in the vocabulary (else `<0xXX>` byte tokens with
//!    `byte_fallback`, else `unk_token`, fused with `fuse_unk`), `ignore_merges` takes a whole word
//!    that is in the vocabulary, then the lowest-ranked pair (leftmost on ties) is merged until none is left;
//! 5. the post-processor (`TemplateProcessing`, `RobertaProcessing`, `BertProcessing`, `ByteLevel`,
//!    `Sequence`) adds BOS-like special tokens when asked.
//!
//! Decode maps ids to token strings, drops special tokens (Python's default `skip_special_tokens=True`)
//! and runs the decoders (`ByteLevel`, `Metaspace`, `Replace`, `ByteFallback`, `Fuse`, `Strip`,
//! `Sequence`; none: tokens joined by spaces). Any other type is refused at load with a one-line error
//! naming it (e.g. a `Unigram` model or a `Precompiled` normalizer).
//!
//! Regexes are not compiled: a Split regex (and ByteLevel's GPT-2 regex) must be one of the patterns
//! `pretok` knows by their exact strings (GPT-2's, Llama-3's, Qwen2's), each run by a hand-written
//! scanner (as is the Whitespace pre-tokenizer's `\w+|[^\w\s]+`); any other regex is refused at load with
//! a one-line error naming it.

use super::pretok::{class, is_punctuation, Class, Scanner, GPT2_PATTERN};
use super::{clip, Encoding, FxHashMap, TokenizerError, Utf8Stream, MAX_ENTRIES, MAX_TOKEN_BYTES, MAX_TOTAL_TOKEN_BYTES};
use aho_corasick::{AhoCorasick, MatchKind};
use serde::Deserialize;
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

fn invalid(m: String) -> TokenizerError {
    TokenizerError::Invalid(format!("tokenizer.json: {m}"))
}

fn unsupported(what: &str, ty: &str) -> TokenizerError {
    TokenizerError::Invalid(format!("tokenizer.json: the {what} type {:?} is not supported", clip(ty, 64)))
}

/// GPT-2's byte -> printable character table.
fn byte_chars() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        t[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    t
}

/// Words longer than this (bytes) are merged as independent runs (see `HfBpe::crossings`); shorter ones whole.
const LONG_WORD: usize = 256;

fn char_pair(a: char, b: char) -> u64 {
    (a as u64) << 32 | b as u64
}

// ---- the text being cut: a string with, per byte, the original byte range of its character ----------

#[derive(Debug, Clone)]
struct Seg {
    s: String,
    spans: Spans,
    /// where this piece starts in the input (Metaspace's `prepend_scheme: "first"` prepends only at 0)
    orig_start: usize,
}

/// Where each byte of a piece came from.
#[derive(Debug, Clone)]
enum Spans {
    /// the text as typed, from this input offset on: a byte's range is its character's, shifted (nothing is
    /// stored, so a long text that no normalizer changes costs no table)
    Typed(usize),
    /// per byte, the original byte range of its character
    Table { lo: Vec<usize>, hi: Vec<usize> },
}

impl Seg {
    fn new(text: &str, base: usize) -> Seg {
        Seg { s: text.to_string(), spans: Spans::Typed(base), orig_start: base }
    }

    /// A piece built byte by byte (`push`), with its own table.
    fn empty(capacity: usize, orig_start: usize) -> Seg {
        Seg { s: String::with_capacity(capacity), spans: Spans::Table { lo: Vec::new(), hi: Vec::new() }, orig_start }
    }

    /// The original range of the character that byte `i` belongs to.
    fn at(&self, i: usize) -> (usize, usize) {
        match &self.spans {
            Spans::Table { lo, hi } => (lo[i], hi[i]),
            Spans::Typed(base) => {
                let mut a = i;
                while !self.s.is_char_boundary(a) {
                    a -= 1;
                }
                let n = self.s[a..].chars().next().map_or(1, char::len_utf8);
                (base + a, base + a + n)
            }
        }
    }

    /// Appends `text`, each byte with the original range `(l, h)`.
    fn push(&mut self, text: &str, l: usize, h: usize) {
        self.s.push_str(text);
        if let Spans::Table { lo, hi } = &mut self.spans {
            lo.extend(std::iter::repeat_n(l, text.len()));
            hi.extend(std::iter::repeat_n(h, text.len()));
        }
    }

    /// Appends `other[a..b]` with its bytes' ranges.
    fn push_from(&mut self, other: &Seg, a: usize, b: usize) {
        self.s.push_str(&other.s[a..b]);
        if let Spans::Table { lo, hi } = &mut self.spans {
            match &other.spans {
                Spans::Table { lo: l2, hi: h2 } => {
                    lo.extend_from_slice(&l2[a..b]);
                    hi.extend_from_slice(&h2[a..b]);
                }
                Spans::Typed(_) => {
                    for i in a..b {
                        let (l, h) = other.at(i);
                        lo.push(l);
                        hi.push(h);
                    }
                }
            }
        }
    }

    fn slice(&self, a: usize, b: usize) -> Seg {
        let orig_start = if a < self.s.len() { self.at(a).0 } else { self.orig_start };
        match &self.spans {
            Spans::Typed(base) => Seg { s: self.s[a..b].to_string(), spans: Spans::Typed(base + a), orig_start },
            Spans::Table { lo, hi } => {
                Seg { s: self.s[a..b].to_string(), spans: Spans::Table { lo: lo[a..b].to_vec(), hi: hi[a..b].to_vec() }, orig_start }
            }
        }
    }

    fn span(&self, a: usize, b: usize) -> (usize, usize) {
        if a >= b || b > self.s.len() {
            let p = if a < self.s.len() { self.at(a).0 } else { self.orig_start };
            return (p, p);
        }
        (self.at(a).0, self.at(b - 1).1)
    }

    fn prepend(&mut self, p: &str) {
        let (l, _) = self.span(0, 0);
        let mut out = Seg::empty(p.len() + self.s.len(), self.orig_start);
        out.push(p, l, l);
        out.push_from(self, 0, self.s.len());
        *self = out;
    }

    /// The characters with the original span of their first byte.
    fn chars(&self) -> Vec<(char, usize, usize)> {
        self.s.char_indices().map(|(i, c)| (c, self.at(i).0, self.at(i).1)).collect()
    }

    fn from_chars(chars: &[(char, usize, usize)], orig_start: usize) -> Seg {
        let mut out = Seg::empty(chars.len(), orig_start);
        let mut buf = [0u8; 4];
        for &(c, l, h) in chars {
            out.push(c.encode_utf8(&mut buf), l, h);
        }
        out
    }

    /// Each character replaced by what `f` pushes, with the character's span.
    fn map_chars(&mut self, mut f: impl FnMut(char, &mut Vec<char>)) {
        let mut v = Vec::with_capacity(self.s.len());
        let mut buf = Vec::new();
        for (c, l, h) in self.chars() {
            buf.clear();
            f(c, &mut buf);
            v.extend(buf.iter().map(|&d| (d, l, h)));
        }
        *self = Seg::from_chars(&v, self.orig_start);
    }

    /// Unicode normalization (UAX #15: decomposition, canonical ordering, canonical composition) on the
    /// `unicode-normalization` crate's per-character tables, so that every output character keeps the
    /// span of what it came from (a composed character spans both of its parts).
    fn normalize(&mut self, form: Form) {
        use unicode_normalization::char::{canonical_combining_class as ccc, compose, decompose_canonical, decompose_compatible};
        if self.s.is_ascii() {
            return;
        }
        let mut v: Vec<(char, usize, usize)> = Vec::with_capacity(self.s.len());
        for (c, l, h) in self.chars() {
            let emit = |d| v.push((d, l, h));
            match form {
                Form::Nfc | Form::Nfd => decompose_canonical(c, emit),
                Form::Nfkc | Form::Nfkd => decompose_compatible(c, emit),
            }
        }
        // canonical ordering: each run of non-starters sorted by combining class (stable)
        let mut i = 0;
        while i < v.len() {
            let j = i + v[i..].iter().take_while(|x| ccc(x.0) != 0).count();
            v[i..j].sort_by_key(|x| ccc(x.0));
            i = j + 1;
        }
        if matches!(form, Form::Nfc | Form::Nfkc) {
            let mut out: Vec<(char, usize, usize)> = Vec::with_capacity(v.len());
            // the last starter's index in `out`, and the class of the last character after it
            let mut starter: Option<usize> = None;
            let mut last_class: Option<u8> = None;
            for (c, l, h) in v {
                let class = ccc(c);
                if let Some(si) = starter {
                    let blocked = last_class.is_some_and(|lc| lc == 0 || lc >= class);
                    if let Some(comp) = compose(out[si].0, c).filter(|_| !blocked) {
                        out[si] = (comp, out[si].1.min(l), out[si].2.max(h));
                        continue;
                    }
                }
                if class == 0 {
                    starter = Some(out.len());
                    last_class = None;
                } else {
                    last_class = Some(class);
                }
                out.push((c, l, h));
            }
            v = out;
        }
        *self = Seg::from_chars(&v, self.orig_start);
    }

    /// Every occurrence of `pat` (non-overlapping, left to right) replaced by `with`.
    fn replace(&mut self, pat: &str, with: &str) {
        if pat.is_empty() || !self.s.contains(pat) {
            return;
        }
        let mut out = Seg::empty(self.s.len(), self.orig_start);
        let mut last = 0;
        for (i, _) in self.s.match_indices(pat) {
            out.push_from(self, last, i);
            let (l, h) = self.span(i, i + pat.len());
            out.push(with, l, h);
            last = i + pat.len();
        }
        out.push_from(self, last, self.s.len());
        *self = out;
    }
}

// ---- components ----------------------------------------------------------------------------------

/// The most a normalizer may lengthen a text: a text of n bytes becomes at most `a·n + b` bytes, and
/// `a + b` (the bound for a one-byte piece, the worst case since every piece gets a Prepend) may not pass
/// this. Checked at load, so that a chain of Replace or Prepend steps cannot multiply a text without bound.
const MAX_NORMALIZER_GROWTH: f64 = 64.0;

/// The most NFD (or NFC) and NFKD (or NFKC) lengthen a text, in UTF-8 bytes: U+0DDD becomes three
/// characters (3x), U+FDFA eighteen (3 bytes to 33). tests/hf_tokenizers.rs checks both over every code point.
const CANONICAL_GROWTH: usize = 3;
const COMPATIBLE_GROWTH: usize = 11;

/// A Unicode normalization form (the `unicode-normalization` crate's tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
}

#[derive(Debug, Clone)]
enum Normalizer {
    Sequence(Vec<Normalizer>),
    Prepend(String),
    Replace(String, String),
    Unicode(Form),
    /// each character's `char::to_lowercase`
    Lowercase,
    /// leading and trailing `char::is_whitespace` removed
    Strip {
        left: bool,
        right: bool,
    },
    /// combining marks (`M`) removed
    StripAccents,
}

impl Normalizer {
    fn from_json(v: &Value) -> Result<Self, TokenizerError> {
        let ty = type_of(v, "normalizer")?;
        Ok(match ty {
            "Sequence" => {
                let list = v
                    .get("normalizers")
                    .and_then(|l| l.as_array())
                    .ok_or_else(|| invalid("a Sequence normalizer has no \"normalizers\" list".into()))?;
                Normalizer::Sequence(list.iter().map(Normalizer::from_json).collect::<Result<_, _>>()?)
            }
            "Prepend" => Normalizer::Prepend(str_field(v, "prepend", "Prepend normalizer")?.to_string()),
            "Replace" => {
                let (pat, content) = replace_fields(v, "Replace normalizer")?;
                Normalizer::Replace(pat, content)
            }
            "NFC" => Normalizer::Unicode(Form::Nfc),
            "NFD" => Normalizer::Unicode(Form::Nfd),
            "NFKC" => Normalizer::Unicode(Form::Nfkc),
            "NFKD" => Normalizer::Unicode(Form::Nfkd),
            "Lowercase" => Normalizer::Lowercase,
            "Strip" => Normalizer::Strip { left: bool_field(v, "strip_left", true), right: bool_field(v, "strip_right", true) },
            "StripAccents" => Normalizer::StripAccents,
            other => return Err(unsupported("normalizer", other)),
        })
    }

    /// (a, b): a text of n bytes normalizes to at most `a·n + b` bytes.
    fn growth(&self) -> (f64, f64) {
        match self {
            Normalizer::Sequence(l) => l.iter().fold((1.0, 0.0), |(a, b), n| {
                let (a2, b2) = n.growth();
                (a2 * a, a2 * b + b2)
            }),
            Normalizer::Prepend(p) => (1.0, p.len() as f64),
            Normalizer::Replace(pat, with) if !pat.is_empty() => ((with.len() as f64 / pat.len() as f64).max(1.0), 0.0),
            Normalizer::Unicode(Form::Nfc | Form::Nfd) => (CANONICAL_GROWTH as f64, 0.0),
            Normalizer::Unicode(Form::Nfkc | Form::Nfkd) => (COMPATIBLE_GROWTH as f64, 0.0),
            // U+023A and U+023E: two bytes, their lowercase three
            Normalizer::Lowercase => (1.5, 0.0),
            Normalizer::Replace(..) | Normalizer::Strip { .. } | Normalizer::StripAccents => (1.0, 0.0),
        }
    }

    fn apply(&self, seg: &mut Seg) {
        match self {
            Normalizer::Sequence(l) => l.iter().for_each(|n| n.apply(seg)),
            Normalizer::Prepend(p) => {
                if !seg.s.is_empty() {
                    seg.prepend(p)
                }
            }
            Normalizer::Replace(pat, with) => seg.replace(pat, with),
            Normalizer::Unicode(form) => seg.normalize(*form),
            Normalizer::Lowercase => {
                if seg.s.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
                    seg.map_chars(|c, out| out.extend(c.to_lowercase()))
                }
            }
            Normalizer::Strip { left, right } => {
                let mut a = 0;
                if *left {
                    a = seg.s.len() - seg.s.trim_start_matches(char::is_whitespace).len();
                }
                let mut b = seg.s.len();
                if *right {
                    b = a + seg.s[a..].trim_end_matches(char::is_whitespace).len();
                }
                if (a, b) != (0, seg.s.len()) {
                    *seg = Seg { orig_start: seg.orig_start, ..seg.slice(a, b) };
                }
            }
            Normalizer::StripAccents => {
                if !seg.s.is_ascii() {
                    seg.map_chars(|c, out| {
                        if !unicode_normalization::char::is_combining_mark(c) {
                            out.push(c)
                        }
                    })
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behavior {
    Removed,
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

#[derive(Debug, Clone)]
enum Pattern {
    Regex(Scanner),
    Str(String),
    /// every character of a class a match of its own: `Digits` (`\p{N}`), `Punctuation`, `WhitespaceSplit`
    Each(fn(char) -> bool),
}

impl Pattern {
    /// (start, end, is_match) pieces tiling `s`, as the library's `Pattern::find_matches`.
    fn find(&self, s: &str) -> Vec<(usize, usize, bool)> {
        if s.is_empty() {
            return vec![(0, 0, false)];
        }
        let mut out = Vec::new();
        let mut prev = 0;
        let mut push = |a: usize, b: usize, out: &mut Vec<(usize, usize, bool)>| {
            if prev != a {
                out.push((prev, a, false));
            }
            out.push((a, b, true));
            prev = b;
        };
        match self {
            Pattern::Regex(scanner) => {
                for (a, b) in scanner.find_iter(s) {
                    push(a, b, &mut out);
                }
            }
            Pattern::Each(is_match) => {
                for (i, c) in s.char_indices() {
                    if is_match(c) {
                        push(i, i + c.len_utf8(), &mut out);
                    }
                }
            }
            Pattern::Str(p) => {
                if !p.is_empty() {
                    for (i, _) in s.match_indices(p.as_str()) {
                        push(i, i + p.len(), &mut out);
                    }
                }
            }
        }
        if prev != s.len() {
            out.push((prev, s.len(), false));
        }
        out
    }

    /// The library's `NormalizedString::split(pattern, behavior)`, empty pieces dropped, each piece given to
    /// `f` as it is cut (the pieces of a long text are never all held at once).
    fn split(&self, seg: &Seg, behavior: Behavior, invert: bool, f: &mut dyn FnMut(Seg)) {
        let mut m = self.find(&seg.s);
        if invert {
            m.iter_mut().for_each(|x| x.2 = !x.2);
        }
        let pieces: Vec<(usize, usize)> = match behavior {
            // the common forms cut straight from the matches, with no second list
            Behavior::Isolated | Behavior::Removed => {
                for &(a, b, is_m) in &m {
                    if a < b && !(is_m && behavior == Behavior::Removed) {
                        f(seg.slice(a, b));
                    }
                }
                return;
            }
            Behavior::MergedWithPrevious => {
                let mut acc: Vec<(usize, usize)> = Vec::new();
                let mut prev_match = false;
                for &(a, b, is_m) in &m {
                    match acc.last_mut() {
                        Some(last) if is_m && !prev_match => last.1 = b,
                        _ => acc.push((a, b)),
                    }
                    prev_match = is_m;
                }
                acc
            }
            Behavior::MergedWithNext => {
                let mut acc: Vec<(usize, usize)> = Vec::new();
                let mut prev_match = false;
                for &(a, b, is_m) in m.iter().rev() {
                    match acc.last_mut() {
                        Some(last) if is_m && !prev_match => last.0 = a,
                        _ => acc.push((a, b)),
                    }
                    prev_match = is_m;
                }
                acc.reverse();
                acc
            }
            Behavior::Contiguous => {
                let mut acc: Vec<(usize, usize)> = Vec::new();
                let mut prev_match = false;
                for &(a, b, is_m) in &m {
                    match acc.last_mut() {
                        Some(last) if is_m == prev_match => last.1 = b,
                        _ => acc.push((a, b)),
                    }
                    prev_match = is_m;
                }
                acc
            }
        };
        drop(m);
        for (a, b) in pieces.into_iter().filter(|(a, b)| a < b) {
            f(seg.slice(a, b));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prepend {
    Always,
    First,
    Never,
}

#[derive(Debug, Clone)]
enum PreTokenizer {
    Sequence(Vec<PreTokenizer>),
    ByteLevel { add_prefix_space: bool, regex: Option<Scanner> },
    Metaspace { replacement: char, prepend: Prepend, split: bool },
    Split { pattern: Pattern, behavior: Behavior, invert: bool },
}

/// The scanner of a known regex (pretok); any other regex is named and refused.
fn scanner(pattern: &str, what: &str) -> Result<Scanner, TokenizerError> {
    Scanner::for_pattern(pattern).ok_or_else(|| {
        invalid(format!(
            "the {what}'s regex {:?} is not supported (only GPT-2's, Llama-3's, Qwen2's, o200k's and Tekken's split patterns are)",
            clip(pattern, 200)
        ))
    })
}

/// A `"pattern"`: (is_regex, the string).
fn pattern_json<'a>(v: &'a Value, what: &str) -> Result<(bool, &'a str), TokenizerError> {
    let p = v.get("pattern").ok_or_else(|| invalid(format!("the {what} has no \"pattern\"")))?;
    if let Some(s) = p.get("String").and_then(|s| s.as_str()) {
        Ok((false, s))
    } else if let Some(r) = p.get("Regex").and_then(|s| s.as_str()) {
        Ok((true, r))
    } else {
        Err(invalid(format!("the {what}'s \"pattern\" is neither {{\"String\": ...}} nor {{\"Regex\": ...}}")))
    }
}

fn pattern_of(v: &Value, what: &str) -> Result<Pattern, TokenizerError> {
    Ok(match pattern_json(v, what)? {
        (false, s) => Pattern::Str(s.to_string()),
        (true, r) => Pattern::Regex(scanner(r, what)?),
    })
}

/// A Split or Punctuation `"behavior"` (`default` when absent; Split's has none).
fn behavior_of(v: &Value, default: Option<Behavior>) -> Result<Behavior, TokenizerError> {
    Ok(match v.get("behavior").map(|b| b.as_str()) {
        None => default.ok_or_else(|| invalid("the Split pre-tokenizer has no \"behavior\"".into()))?,
        Some(Some("Removed")) => Behavior::Removed,
        Some(Some("Isolated")) => Behavior::Isolated,
        Some(Some("MergedWithPrevious")) => Behavior::MergedWithPrevious,
        Some(Some("MergedWithNext")) => Behavior::MergedWithNext,
        Some(Some("Contiguous")) => Behavior::Contiguous,
        Some(Some(other)) => return Err(invalid(format!("the split behavior {:?} is not supported", clip(other, 32)))),
        Some(None) => return Err(invalid("a split \"behavior\" is not a string".into())),
    })
}

fn prepend_scheme(v: &Value) -> Result<Prepend, TokenizerError> {
    match v.get("prepend_scheme").and_then(|p| p.as_str()) {
        Some("always") => Ok(Prepend::Always),
        Some("first") => Ok(Prepend::First),
        Some("never") => Ok(Prepend::Never),
        Some(other) => Err(invalid(format!("Metaspace prepend_scheme {:?} is not always, first or never", clip(other, 32)))),
        // files from before prepend_scheme: add_prefix_space
        None => Ok(if bool_field(v, "add_prefix_space", true) { Prepend::Always } else { Prepend::Never }),
    }
}

fn replacement_char(v: &Value) -> Result<char, TokenizerError> {
    let r = str_field(v, "replacement", "Metaspace")?;
    let mut cs = r.chars();
    match (cs.next(), cs.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(invalid(format!("Metaspace replacement {:?} is not one character", clip(r, 16)))),
    }
}

impl PreTokenizer {
    fn from_json(v: &Value) -> Result<Self, TokenizerError> {
        let ty = type_of(v, "pre-tokenizer")?;
        Ok(match ty {
            "Sequence" => {
                let list = v
                    .get("pretokenizers")
                    .and_then(|l| l.as_array())
                    .ok_or_else(|| invalid("a Sequence pre-tokenizer has no \"pretokenizers\" list".into()))?;
                PreTokenizer::Sequence(list.iter().map(PreTokenizer::from_json).collect::<Result<_, _>>()?)
            }
            "ByteLevel" => PreTokenizer::ByteLevel {
                add_prefix_space: bool_field(v, "add_prefix_space", true),
                regex: if bool_field(v, "use_regex", true) { Some(scanner(GPT2_PATTERN, "ByteLevel pre-tokenizer")?) } else { None },
            },
            // SmolLM2's: digits split off the text, one by one or in runs
            "Digits" => PreTokenizer::Split {
                pattern: Pattern::Each(|c| class(c) == Class::Number),
                behavior: if bool_field(v, "individual_digits", false) { Behavior::Isolated } else { Behavior::Contiguous },
                invert: false,
            },
            "Punctuation" => PreTokenizer::Split {
                pattern: Pattern::Each(is_punctuation),
                behavior: behavior_of(v, Some(Behavior::Isolated))?,
                invert: false,
            },
            // `\w+|[^\w\s]+`, the rest (whitespace) removed
            "Whitespace" => PreTokenizer::Split { pattern: Pattern::Regex(Scanner::Words), behavior: Behavior::Removed, invert: true },
            "WhitespaceSplit" => {
                PreTokenizer::Split { pattern: Pattern::Each(char::is_whitespace), behavior: Behavior::Removed, invert: false }
            }
            "Metaspace" => PreTokenizer::Metaspace {
                replacement: replacement_char(v)?,
                prepend: prepend_scheme(v)?,
                split: bool_field(v, "split", true),
            },
            "Split" => PreTokenizer::Split {
                pattern: pattern_of(v, "Split pre-tokenizer")?,
                behavior: behavior_of(v, None)?,
                invert: bool_field(v, "invert", false),
            },
            other => return Err(unsupported("pre-tokenizer", other)),
        })
    }

    /// The pre-tokenizer on one piece: each word it cuts is given to `f` as soon as it is cut, through the
    /// rest of a Sequence depth first, so a long text's words are never all held at once (every
    /// pre-tokenizer works on each piece alone, so the order and the words are the library's).
    fn apply(&self, seg: Seg, bytes: &[char; 256], f: &mut dyn FnMut(Seg)) {
        match self {
            PreTokenizer::Sequence(l) => Self::chain(l, seg, bytes, f),
            PreTokenizer::ByteLevel { add_prefix_space, regex } => {
                let mut seg = seg;
                if *add_prefix_space && !seg.s.starts_with(' ') {
                    seg.prepend(" ");
                }
                let mut emit = |s: Seg| {
                    if !s.s.is_empty() {
                        f(byte_level_map(&s, bytes))
                    }
                };
                match regex {
                    Some(re) => Pattern::Regex(*re).split(&seg, Behavior::Isolated, false, &mut emit),
                    None => emit(seg),
                }
            }
            PreTokenizer::Metaspace { replacement, prepend, split } => {
                let rep = replacement.to_string();
                let mut seg = seg;
                seg.replace(" ", &rep);
                let add = match prepend {
                    Prepend::Always => !seg.s.starts_with(*replacement),
                    Prepend::First => !seg.s.starts_with(*replacement) && seg.orig_start == 0,
                    Prepend::Never => false,
                };
                if add {
                    seg.prepend(&rep);
                }
                if *split {
                    Pattern::Str(rep).split(&seg, Behavior::MergedWithNext, false, f);
                } else if !seg.s.is_empty() {
                    f(seg);
                }
            }
            PreTokenizer::Split { pattern, behavior, invert } => pattern.split(&seg, *behavior, *invert, f),
        }
    }

    /// A Sequence's pre-tokenizers in turn, each word of one going through the next before the following word.
    fn chain(list: &[PreTokenizer], seg: Seg, bytes: &[char; 256], f: &mut dyn FnMut(Seg)) {
        match list.split_first() {
            None => f(seg),
            Some((first, rest)) => first.apply(seg, bytes, &mut |s| Self::chain(rest, s, bytes, f)),
        }
    }
}

/// Each byte of the piece as its GPT-2 printable character.
fn byte_level_map(seg: &Seg, table: &[char; 256]) -> Seg {
    let mut out = Seg::empty(seg.s.len() * 2, seg.orig_start);
    let mut buf = [0u8; 4];
    for (i, &b) in seg.s.as_bytes().iter().enumerate() {
        let (l, h) = seg.at(i);
        out.push(table[b as usize].encode_utf8(&mut buf), l, h);
    }
    out
}

#[derive(Debug, Clone)]
enum Post {
    Sequence(Vec<Post>),
    /// ids before and after the sequence
    Wrap(Vec<u32>, Vec<u32>),
    None,
}

impl Post {
    fn from_json(v: &Value) -> Result<Self, TokenizerError> {
        let ty = type_of(v, "post-processor")?;
        Ok(match ty {
            "Sequence" => {
                let list = v
                    .get("processors")
                    .and_then(|l| l.as_array())
                    .ok_or_else(|| invalid("a Sequence post-processor has no \"processors\" list".into()))?;
                Post::Sequence(list.iter().map(Post::from_json).collect::<Result<_, _>>()?)
            }
            "ByteLevel" => Post::None,
            "RobertaProcessing" | "BertProcessing" => {
                let id = |k: &str| {
                    v.get(k)
                        .and_then(|p| p.get(1))
                        .and_then(|i| i.as_u64())
                        .map(|i| i as u32)
                        .ok_or_else(|| invalid(format!("{ty} has no [token, id] {k:?}")))
                };
                Post::Wrap(vec![id("cls")?], vec![id("sep")?])
            }
            "TemplateProcessing" => {
                let single = v
                    .get("single")
                    .and_then(|s| s.as_array())
                    .ok_or_else(|| invalid("TemplateProcessing has no \"single\" list".into()))?;
                let specials = v.get("special_tokens");
                let (mut before, mut after, mut seen_a) = (Vec::new(), Vec::new(), false);
                for item in single {
                    if item.get("Sequence").is_some() {
                        seen_a = true;
                    } else if let Some(name) = item.get("SpecialToken").and_then(|s| s.get("id")).and_then(|s| s.as_str()) {
                        let ids =
                            specials.and_then(|s| s.get(name)).and_then(|s| s.get("ids")).and_then(|s| s.as_array()).ok_or_else(|| {
                                invalid(format!(
                                    "TemplateProcessing names the special token {:?} but does not list its ids",
                                    clip(name, 64)
                                ))
                            })?;
                        let ids: Vec<u32> = ids.iter().filter_map(|i| i.as_u64()).map(|i| i as u32).collect();
                        if seen_a { &mut after } else { &mut before }.extend(ids);
                    } else {
                        return Err(invalid("a TemplateProcessing item is neither Sequence nor SpecialToken".into()));
                    }
                }
                Post::Wrap(before, after)
            }
            other => return Err(unsupported("post-processor", other)),
        })
    }

    fn ids(&self, before: &mut Vec<u32>, after: &mut Vec<u32>) {
        match self {
            Post::Sequence(l) => l.iter().for_each(|p| p.ids(before, after)),
            Post::Wrap(b, a) => {
                // an outer template wraps what an inner one produced
                let mut nb = b.clone();
                nb.append(before);
                *before = nb;
                after.extend_from_slice(a);
            }
            Post::None => {}
        }
    }

    fn max_id(&self) -> Option<u32> {
        match self {
            Post::Sequence(l) => l.iter().filter_map(|p| p.max_id()).max(),
            Post::Wrap(b, a) => b.iter().chain(a).copied().max(),
            Post::None => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Decoder {
    Sequence(Vec<Decoder>),
    ByteLevel,
    Metaspace { replacement: char, prepend: bool },
    Replace(String, String),
    ByteFallback,
    Fuse,
    Strip { content: char, start: usize, stop: usize },
}

impl Decoder {
    fn from_json(v: &Value) -> Result<Self, TokenizerError> {
        let ty = type_of(v, "decoder")?;
        Ok(match ty {
            "Sequence" => {
                let list = v
                    .get("decoders")
                    .and_then(|l| l.as_array())
                    .ok_or_else(|| invalid("a Sequence decoder has no \"decoders\" list".into()))?;
                Decoder::Sequence(list.iter().map(Decoder::from_json).collect::<Result<_, _>>()?)
            }
            "ByteLevel" => Decoder::ByteLevel,
            "Metaspace" => Decoder::Metaspace { replacement: replacement_char(v)?, prepend: prepend_scheme(v)? != Prepend::Never },
            "Replace" => {
                let (p, c) = replace_fields(v, "Replace decoder")?;
                Decoder::Replace(p, c)
            }
            "ByteFallback" => Decoder::ByteFallback,
            "Fuse" => Decoder::Fuse,
            "Strip" => {
                let content = str_field(v, "content", "Strip decoder")?.chars().next().unwrap_or(' ');
                let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0).min(1 << 20) as usize;
                Decoder::Strip { content, start: n("start"), stop: n("stop") }
            }
            other => return Err(unsupported("decoder", other)),
        })
    }

    /// The library's `decode_chain`. `first`: these tokens start the text (Metaspace's first token; the
    /// stream decoder decodes later windows with `first = false`). `fused`: a Fuse (or ByteLevel) ran
    /// before, so the one token is the whole window and Strip's start applies only when it starts the text.
    fn chain(&self, tokens: Vec<String>, first: bool, table: &FxHashMap<char, u8>) -> Vec<String> {
        self.chain_from(tokens, first, false, table).0
    }

    fn chain_from(&self, tokens: Vec<String>, first: bool, fused: bool, table: &FxHashMap<char, u8>) -> (Vec<String>, bool) {
        let fused = fused || matches!(self, Decoder::Fuse | Decoder::ByteLevel);
        let out = match self {
            Decoder::Sequence(l) => {
                return l.iter().fold((tokens, fused), |(t, f), d| d.chain_from(t, first, f, table));
            }
            Decoder::ByteLevel => {
                let mut bytes = Vec::new();
                for t in &tokens {
                    let mapped: Option<Vec<u8>> = t.chars().map(|c| table.get(&c).copied()).collect();
                    match mapped {
                        Some(b) => bytes.extend(b),
                        None => bytes.extend_from_slice(t.as_bytes()),
                    }
                }
                vec![String::from_utf8_lossy(&bytes).into_owned()]
            }
            Decoder::Metaspace { replacement, prepend } => tokens
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    t.chars()
                        .filter_map(|c| {
                            if c == *replacement {
                                if i == 0 && first && *prepend {
                                    None
                                } else {
                                    Some(' ')
                                }
                            } else {
                                Some(c)
                            }
                        })
                        .collect()
                })
                .collect(),
            Decoder::Replace(p, c) => tokens.into_iter().map(|t| if p.is_empty() { t } else { t.replace(p.as_str(), c) }).collect(),
            Decoder::ByteFallback => {
                let mut out = Vec::with_capacity(tokens.len());
                let mut pending: Vec<u8> = Vec::new();
                let flush = |pending: &mut Vec<u8>, out: &mut Vec<String>| {
                    if !pending.is_empty() {
                        match String::from_utf8(std::mem::take(pending)) {
                            Ok(s) => out.push(s),
                            Err(e) => out.extend(std::iter::repeat_n("\u{FFFD}".to_string(), e.as_bytes().len())),
                        }
                    }
                };
                for t in tokens {
                    match fallback_byte(&t) {
                        Some(b) => pending.push(b),
                        None => {
                            flush(&mut pending, &mut out);
                            out.push(t);
                        }
                    }
                }
                flush(&mut pending, &mut out);
                out
            }
            Decoder::Fuse => vec![tokens.concat()],
            Decoder::Strip { content, start, stop } => tokens
                .into_iter()
                .map(|t| {
                    let chars: Vec<char> = t.chars().collect();
                    let mut a = 0;
                    if first || !fused {
                        while a < *start && a < chars.len() && chars[a] == *content {
                            a += 1;
                        }
                    }
                    let mut b = chars.len();
                    let mut k = 0;
                    while k < *stop && b > a && chars[b - 1] == *content {
                        b -= 1;
                        k += 1;
                    }
                    chars[a..b].iter().collect()
                })
                .collect(),
        };
        (out, fused)
    }
}

/// A `<0xXX>` token's byte (the ByteFallback decoder's test: exactly six characters).
fn fallback_byte(t: &str) -> Option<u8> {
    if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
        u8::from_str_radix(&t[3..5], 16).ok()
    } else {
        None
    }
}

fn type_of<'a>(v: &'a Value, what: &str) -> Result<&'a str, TokenizerError> {
    v.get("type").and_then(|t| t.as_str()).ok_or_else(|| invalid(format!("a {what} has no \"type\"")))
}

fn str_field<'a>(v: &'a Value, k: &str, what: &str) -> Result<&'a str, TokenizerError> {
    v.get(k).and_then(|t| t.as_str()).ok_or_else(|| invalid(format!("the {what} has no string {k:?}")))
}

fn bool_field(v: &Value, k: &str, default: bool) -> bool {
    v.get(k).and_then(|b| b.as_bool()).unwrap_or(default)
}

fn replace_fields(v: &Value, what: &str) -> Result<(String, String), TokenizerError> {
    let content = str_field(v, "content", what)?.to_string();
    match pattern_json(v, what)? {
        (false, s) => Ok((s.to_string(), content)),
        (true, _) => Err(invalid(format!("a {what} with a Regex pattern is not supported (only String)"))),
    }
}

// ---- the file --------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(untagged)]
enum MergeJson {
    Pair(String, String),
    Line(String),
}

#[derive(Deserialize)]
struct BpeJson {
    #[serde(default)]
    dropout: Option<f64>,
    #[serde(default)]
    unk_token: Option<String>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
    #[serde(default)]
    fuse_unk: bool,
    #[serde(default)]
    byte_fallback: bool,
    #[serde(default)]
    ignore_merges: bool,
    vocab: FxHashMap<String, u32>,
    #[serde(default)]
    merges: Vec<MergeJson>,
}

#[derive(Deserialize, Clone, Debug)]
struct AddedJson {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default = "yes")]
    normalized: bool,
    #[serde(default)]
    special: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct FileJson {
    #[serde(default)]
    added_tokens: Vec<AddedJson>,
    #[serde(default)]
    normalizer: Option<Value>,
    #[serde(default)]
    pre_tokenizer: Option<Value>,
    #[serde(default)]
    post_processor: Option<Value>,
    #[serde(default)]
    decoder: Option<Value>,
    model: BpeJson,
}

#[derive(Deserialize)]
struct PeekModel {
    #[serde(rename = "type", default)]
    ty: Option<String>,
}

#[derive(Deserialize)]
struct Peek {
    model: Option<PeekModel>,
}

/// Added tokens of one kind (`normalized` or not) and their matcher.
#[derive(Debug, Clone)]
struct AddedSet {
    tokens: Vec<AddedJson>,
    matcher: Option<AhoCorasick>,
}

impl AddedSet {
    fn new(tokens: Vec<AddedJson>) -> Result<Self, TokenizerError> {
        let tokens: Vec<AddedJson> = tokens.into_iter().filter(|t| !t.content.is_empty()).collect();
        let matcher = if tokens.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(tokens.iter().map(|t| t.content.as_str()))
                    .map_err(|e| invalid(format!("the added tokens do not build a matcher: {e}")))?,
            )
        };
        Ok(AddedSet { tokens, matcher })
    }

    /// The library's `find_matches`: (added token id or None, start, end) tiling `s`.
    fn find(&self, s: &str) -> Vec<(Option<u32>, usize, usize)> {
        let Some(m) = &self.matcher else {
            return vec![(None, 0, s.len())];
        };
        let word = |c: char| c.is_alphanumeric() || c == '_';
        let mut out = Vec::new();
        let mut at = 0;
        for mat in m.find_iter(s) {
            let t = &self.tokens[mat.pattern().as_usize()];
            let (mut a, mut b) = (mat.start(), mat.end());
            if t.single_word {
                let before = s[..a].chars().next_back().is_some_and(word);
                let after = s[b..].chars().next().is_some_and(word);
                if before || after {
                    continue;
                }
            }
            if t.lstrip {
                let trimmed = s[..a].trim_end_matches(char::is_whitespace).len();
                a = trimmed.max(at);
            }
            if t.rstrip {
                b += s[b..].len() - s[b..].trim_start_matches(char::is_whitespace).len();
            }
            if at < a {
                out.push((None, at, a));
            }
            out.push((Some(t.id), a, b));
            at = b;
        }
        if at != s.len() {
            out.push((None, at, s.len()));
        }
        out
    }
}

/// A Hugging Face BPE tokenizer.json.
#[derive(Debug, Clone)]
pub struct HfBpe {
    /// id -> token string (model vocabulary and added tokens)
    tokens: Vec<Option<Box<str>>>,
    vocab: FxHashMap<String, u32>,
    /// pair -> (rank, merged id)
    merges: FxHashMap<u64, (u32, u32)>,
    /// (last character of the left token, first of the right) of every merge: two characters of a word
    /// that are no such pair are never joined by any merge, so a long word is merged as independent runs
    crossings: rustc_hash::FxHashSet<u64>,
    num_merges: usize,
    unk: Option<u32>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    /// `<0xXX>` ids, for byte fallback
    byte_ids: Vec<Option<u32>>,
    special: Vec<bool>,
    raw_added: AddedSet,
    norm_added: AddedSet,
    normalizer: Option<Normalizer>,
    pre: Option<PreTokenizer>,
    post: Option<Post>,
    decoder: Option<Decoder>,
    byte_chars: [char; 256],
    char_bytes: FxHashMap<char, u8>,
    /// the file itself, for [`HfBpe::to_json_value`]
    source: std::sync::Arc<str>,
}

impl HfBpe {
    pub const KIND: &'static str = "hf_bpe";

    /// Reads a tokenizer.json (at most [`super::MAX_JSON_BYTES`]).
    pub fn from_json(text: &str) -> Result<Self, TokenizerError> {
        if text.len() > super::MAX_JSON_BYTES {
            return Err(invalid(format!("{} bytes; the limit is {} MiB", text.len(), super::MAX_JSON_BYTES >> 20)));
        }
        let jerr = |e: serde_json::Error| TokenizerError::Json(format!("tokenizer.json: {e}"));
        // First only the model's type (nothing else is stored), so that a Unigram or WordPiece file gets
        // a message naming it rather than a field error.
        let peek: Peek = serde_json::from_str(text).map_err(jerr)?;
        let model = peek.model.ok_or_else(|| TokenizerError::Json("tokenizer.json: missing field \"model\"".into()))?;
        match model.ty.as_deref() {
            Some("BPE") | None => {}
            Some(other) => {
                return Err(TokenizerError::Invalid(format!(
                    "tokenizer.json: the model type {:?} is not supported (only BPE: GPT-2, Llama and Llama-3 style files)",
                    clip(other, 64)
                )))
            }
        }
        let f: FileJson = serde_json::from_str(text).map_err(jerr)?;
        Self::build(f, text)
    }

    fn build(f: FileJson, text: &str) -> Result<Self, TokenizerError> {
        let m = f.model;
        if m.dropout.is_some_and(|d| d > 0.0 && d < 1.0) {
            return Err(invalid("BPE dropout is not supported (tokenization would be random)".into()));
        }
        for (k, v) in [("continuing_subword_prefix", &m.continuing_subword_prefix), ("end_of_word_suffix", &m.end_of_word_suffix)] {
            if v.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(invalid(format!("a BPE {k} is not supported")));
            }
        }
        if m.vocab.len() > MAX_ENTRIES || f.added_tokens.len() > MAX_ENTRIES || m.merges.len() > MAX_ENTRIES {
            return Err(invalid(format!("more than {MAX_ENTRIES} vocabulary entries, merges or added tokens")));
        }
        let max_id = m.vocab.values().chain(f.added_tokens.iter().map(|a| &a.id)).copied().max();
        let size = max_id.map_or(0, |i| i as usize + 1);
        if size > MAX_ENTRIES {
            return Err(invalid(format!("token id {} is past the limit of {MAX_ENTRIES} ids", size - 1)));
        }
        let mut tokens: Vec<Option<Box<str>>> = vec![None; size];
        let mut total = 0usize;
        for (t, &id) in &m.vocab {
            if t.len() > MAX_TOKEN_BYTES {
                return Err(invalid(format!("a token of {} bytes (max {MAX_TOKEN_BYTES})", t.len())));
            }
            total += t.len();
            tokens[id as usize] = Some(t.as_str().into());
        }
        for a in &f.added_tokens {
            if a.content.len() > MAX_TOKEN_BYTES {
                return Err(invalid(format!("an added token of {} bytes (max {MAX_TOKEN_BYTES})", a.content.len())));
            }
            total += a.content.len();
            tokens[a.id as usize] = Some(a.content.as_str().into());
        }
        if total > MAX_TOTAL_TOKEN_BYTES {
            return Err(invalid(format!("{total} bytes of token text (max {MAX_TOTAL_TOKEN_BYTES})")));
        }
        let mut merges: FxHashMap<u64, (u32, u32)> = FxHashMap::default();
        merges.reserve(m.merges.len());
        let mut joined = String::new();
        let mut crossings = rustc_hash::FxHashSet::default();
        for (rank, mj) in m.merges.iter().enumerate() {
            let (a, b) = match mj {
                MergeJson::Pair(a, b) => (a.as_str(), b.as_str()),
                MergeJson::Line(l) => {
                    let mut parts = l.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(b), None) => (a, b),
                        _ => return Err(invalid(format!("merge {rank} {:?} is not two tokens separated by a space", clip(l, 64)))),
                    }
                }
            };
            let id_of = |t: &str| {
                m.vocab
                    .get(t)
                    .copied()
                    .ok_or_else(|| invalid(format!("merge {rank} uses {:?}, which is not in the vocabulary", clip(t, 64))))
            };
            let (ia, ib) = (id_of(a)?, id_of(b)?);
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let new = id_of(&joined)?;
            merges.insert(super::pair_key(ia, ib), (rank as u32, new));
            if let (Some(l), Some(r)) = (a.chars().next_back(), b.chars().next()) {
                crossings.insert(char_pair(l, r));
            }
        }
        let unk = match &m.unk_token {
            Some(u) => {
                Some(m.vocab.get(u).copied().ok_or_else(|| invalid(format!("unk_token {:?} is not in the vocabulary", clip(u, 64))))?)
            }
            None => None,
        };
        let byte_ids = (0..=255u8).map(|b| m.vocab.get(&format!("<0x{b:02X}>")).copied()).collect();
        let special_strings: std::collections::HashSet<&str> =
            f.added_tokens.iter().filter(|a| a.special).map(|a| a.content.as_str()).collect();
        let special = tokens.iter().map(|t| t.as_deref().is_some_and(|t| special_strings.contains(t))).collect();
        let (norm, raw): (Vec<AddedJson>, Vec<AddedJson>) = f.added_tokens.iter().cloned().partition(|a| a.normalized);
        let normalizer = f.normalizer.as_ref().filter(|v| !v.is_null()).map(Normalizer::from_json).transpose()?;
        if let Some((a, b)) = normalizer.as_ref().map(Normalizer::growth).filter(|(a, b)| a + b > MAX_NORMALIZER_GROWTH) {
            return Err(invalid(format!(
                "the normalizer can make a text {:.0} times longer (a + {b:.0} bytes per piece); the limit is {MAX_NORMALIZER_GROWTH:.0}x",
                a.min(1e18)
            )));
        }
        let pre = f.pre_tokenizer.as_ref().filter(|v| !v.is_null()).map(PreTokenizer::from_json).transpose()?;
        let post = f.post_processor.as_ref().filter(|v| !v.is_null()).map(Post::from_json).transpose()?;
        if let Some(id) = post.as_ref().and_then(|p| p.max_id()).filter(|&id| id as usize >= size) {
            return Err(invalid(format!("the post-processor adds id {id}, past the vocabulary of {size}")));
        }
        let decoder = f.decoder.as_ref().filter(|v| !v.is_null()).map(Decoder::from_json).transpose()?;
        let byte_chars = byte_chars();
        let char_bytes = byte_chars.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        Ok(HfBpe {
            tokens,
            num_merges: m.merges.len(),
            vocab: m.vocab,
            merges,
            crossings,
            unk,
            fuse_unk: m.fuse_unk,
            byte_fallback: m.byte_fallback,
            ignore_merges: m.ignore_merges,
            byte_ids,
            special,
            raw_added: AddedSet::new(raw)?,
            norm_added: AddedSet::new(norm)?,
            normalizer,
            pre,
            post,
            decoder,
            byte_chars,
            char_bytes,
            source: text.into(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn num_merges(&self) -> usize {
        self.num_merges
    }

    /// The token string of an id (byte-level tokens in GPT-2's printable characters, SentencePiece ones with "▁").
    pub fn token(&self, id: u32) -> Result<&str, TokenizerError> {
        match self.tokens.get(id as usize) {
            Some(Some(t)) => Ok(t),
            Some(None) => Err(TokenizerError::UnassignedId { id, vocab_size: self.tokens.len() }),
            None => Err(TokenizerError::IdOutOfRange { id, vocab_size: self.tokens.len() }),
        }
    }

    /// The id of a token string, model vocabulary or added token.
    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.vocab
            .get(t)
            .copied()
            .or_else(|| self.raw_added.tokens.iter().chain(&self.norm_added.tokens).find(|a| a.content == t).map(|a| a.id))
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Whether the pre-tokenizer or decoder works on bytes (GPT-2 / Llama-3 style).
    pub fn is_byte_level(&self) -> bool {
        matches!(self.decoder, Some(Decoder::ByteLevel))
    }

    /// The bytes a token stands for, for display: byte-level tokens mapped back, "▁" as a space,
    /// `<0xXX>` as its byte; special tokens as their text.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        let t = self.token(id)?;
        if self.is_special(id) {
            return Ok(t.as_bytes().to_vec());
        }
        if self.is_byte_level() {
            let mapped: Option<Vec<u8>> = t.chars().map(|c| self.char_bytes.get(&c).copied()).collect();
            return Ok(mapped.unwrap_or_else(|| t.as_bytes().to_vec()));
        }
        if let Some(b) = fallback_byte(t).filter(|_| self.byte_fallback) {
            return Ok(vec![b]);
        }
        Ok(t.replace('\u{2581}', " ").into_bytes())
    }

    /// Encodes `text`; `add_special_tokens` runs the post-processor (Python's default is true); only
    /// merges of rank < `merge_limit` apply.
    pub fn encode_with(&self, text: &str, add_special_tokens: bool, merge_limit: usize) -> Encoding {
        let mut ids = Vec::new();
        let mut spans = Vec::new();
        let mut unknown = Vec::new();
        for (tok, a, b) in self.raw_added.find(text) {
            if let Some(id) = tok {
                if a < b {
                    ids.push(id);
                    spans.push((a, b));
                }
                continue;
            }
            if a >= b {
                continue;
            }
            let mut seg = Seg::new(&text[a..b], a);
            if let Some(n) = &self.normalizer {
                n.apply(&mut seg);
            }
            for (tok, na, nb) in self.norm_added.find(&seg.s) {
                if na >= nb {
                    continue;
                }
                if let Some(id) = tok {
                    ids.push(id);
                    spans.push(seg.span(na, nb));
                    continue;
                }
                // the whole segment when no added token cuts it: no copy of a long text
                let piece = if na == 0 && nb == seg.s.len() { std::mem::replace(&mut seg, Seg::new("", 0)) } else { seg.slice(na, nb) };
                let mut word = |w: Seg| self.bpe_word(&w, merge_limit, &mut ids, &mut spans, &mut unknown);
                match &self.pre {
                    Some(p) => p.apply(piece, &self.byte_chars, &mut word),
                    None => word(piece),
                }
            }
        }
        if add_special_tokens {
            if let Some(p) = &self.post {
                let (mut before, mut after) = (Vec::new(), Vec::new());
                p.ids(&mut before, &mut after);
                let n = before.len();
                ids.splice(0..0, before);
                spans.splice(0..0, std::iter::repeat_n((0, 0), n));
                spans.extend(std::iter::repeat_n((text.len(), text.len()), after.len()));
                ids.extend(after);
            }
        }
        // byte offsets to character counts in one walk (they come in text order; sorted to be sure)
        unknown.sort_unstable();
        let (mut at, mut chars) = (0usize, 0usize);
        let unknown = unknown
            .into_iter()
            .map(|byte: usize| {
                chars += text[at..byte].chars().count();
                at = byte;
                chars
            })
            .collect();
        Encoding { ids, spans, unknown }
    }

    /// The BPE model on one word.
    fn bpe_word(&self, w: &Seg, limit: usize, ids: &mut Vec<u32>, spans: &mut Vec<(usize, usize)>, unknown: &mut Vec<usize>) {
        if w.s.is_empty() {
            return;
        }
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(&w.s) {
                ids.push(id);
                spans.push(w.span(0, w.s.len()));
                return;
            }
        }
        // (id, lo, hi) symbols
        let mut syms: Vec<(u32, usize, usize)> = Vec::with_capacity(w.s.len().min(LONG_WORD));
        let mut pending_unk: Option<(usize, usize)> = None;
        // a long word (SentencePiece-style tokenizers leave a whole text as one) is cut where no merge can
        // join its two sides: between two characters of the vocabulary that are no merge's crossing pair
        let long = w.s.len() > LONG_WORD;
        let mut prev: Option<char> = None;
        for (i, c) in w.s.char_indices() {
            let j = i + c.len_utf8();
            let (lo, hi) = w.span(i, j);
            if let Some(&id) = self.vocab.get(&w.s[i..j]) {
                if let (Some(u), Some((ul, uh))) = (self.unk, pending_unk.take()) {
                    syms.push((u, ul, uh));
                }
                if long && prev.is_some_and(|p| !self.crossings.contains(&char_pair(p, c))) {
                    self.flush_run(&mut syms, limit, ids, spans);
                }
                prev = Some(c);
                syms.push((id, lo, hi));
                continue;
            }
            // a byte-fallback or unknown symbol is never cut off its neighbours
            prev = None;
            if self.byte_fallback {
                let b: Option<Vec<u32>> = w.s[i..j].bytes().map(|b| self.byte_ids[b as usize]).collect();
                if let Some(b) = b {
                    syms.extend(b.into_iter().map(|id| (id, lo, hi)));
                    continue;
                }
            }
            if let Some(u) = self.unk {
                unknown.push(lo);
                pending_unk = match pending_unk {
                    Some((ul, _)) if self.fuse_unk => Some((ul, hi)),
                    Some((ul, uh)) => {
                        syms.push((u, ul, uh));
                        Some((lo, hi))
                    }
                    None => Some((lo, hi)),
                };
            }
        }
        if let (Some(u), Some((ul, uh))) = (self.unk, pending_unk) {
            syms.push((u, ul, uh));
        }
        self.flush_run(&mut syms, limit, ids, spans);
    }

    /// Merges the symbols of one run and appends them to the output; `syms` is left empty.
    fn flush_run(&self, syms: &mut Vec<(u32, usize, usize)>, limit: usize, ids: &mut Vec<u32>, spans: &mut Vec<(usize, usize)>) {
        let n = self.merge_all(syms, limit);
        for &(id, lo, hi) in &syms[..n] {
            ids.push(id);
            spans.push((lo, hi));
        }
        syms.clear();
    }

    /// The library's `Word::merge_all`: the lowest (rank, position) first; stale entries skipped.
    /// The symbols left are moved to the front; returns how many.
    fn merge_all(&self, syms: &mut [(u32, usize, usize)], limit: usize) -> usize {
        let n = syms.len();
        if n < 2 || self.merges.is_empty() {
            return n;
        }
        let lookup = |a: u32, b: u32| self.merges.get(&super::pair_key(a, b)).copied().filter(|&(r, _)| (r as usize) < limit);
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32)>> = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some((r, new)) = lookup(syms[i].0, syms[i + 1].0) {
                heap.push(Reverse((r, i, new)));
            }
        }
        while let Some(Reverse((_, i, new))) = heap.pop() {
            let j = next[i];
            if !alive[i] || j >= n {
                continue;
            }
            if lookup(syms[i].0, syms[j].0).is_none_or(|(_, id)| id != new) {
                continue;
            }
            syms[i] = (new, syms[i].1, syms[j].2);
            alive[j] = false;
            next[i] = next[j];
            if next[i] < n {
                prev[next[i]] = i;
            }
            let p = prev[i];
            if p < n {
                if let Some((r, id)) = lookup(syms[p].0, syms[i].0) {
                    heap.push(Reverse((r, p, id)));
                }
            }
            let k = next[i];
            if k < n {
                if let Some((r, id)) = lookup(syms[i].0, syms[k].0) {
                    heap.push(Reverse((r, i, id)));
                }
            }
        }
        let mut w = 0;
        for k in 0..n {
            if alive[k] {
                syms[w] = syms[k];
                w += 1;
            }
        }
        w
    }

    /// Decodes ids. `skip_special_tokens` drops special added tokens (Python's default); `first`: the
    /// ids start the text.
    pub(crate) fn decode_with(&self, ids: &[u32], skip_special_tokens: bool, first: bool) -> Result<String, TokenizerError> {
        let mut toks = Vec::with_capacity(ids.len());
        for &id in ids {
            let t = self.token(id)?;
            if skip_special_tokens && self.is_special(id) {
                continue;
            }
            toks.push(t.to_string());
        }
        Ok(match &self.decoder {
            Some(d) => d.chain(toks, first, &self.char_bytes).concat(),
            None if first || toks.is_empty() => toks.join(" "),
            None => format!(" {}", toks.join(" ")),
        })
    }

    /// Decodes as Python's `decode(ids)` (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_with(ids, true, true)
    }

    /// Decodes keeping special tokens (Python's `skip_special_tokens=False`).
    pub fn decode_keep_special(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_with(ids, false, true)
    }

    /// The JSON form: `{"kind": "hf_bpe", "tokenizer_json": "<the file's text>"}`.
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::json!({"kind": Self::KIND, "tokenizer_json": &*self.source})
    }

    pub(crate) fn from_json_source(src: super::JsonSource<'_>) -> Result<Self, TokenizerError> {
        #[derive(Deserialize)]
        struct Wrapped {
            tokenizer_json: String,
        }
        let w: Wrapped = src.parse(Self::KIND)?;
        Self::from_json(&w.tokenizer_json)
    }
}

/// Stream decoding for `hf_bpe`: byte-level decoders stream bytes; the others decode windows of ids
/// that end on a token that is not a `<0xXX>` byte token (so ByteFallback groups are never cut), with
/// the first-token rules only for the first window.
#[derive(Debug, Clone, Default)]
pub(crate) struct HfStream {
    bytes: Utf8Stream,
    window: Vec<u32>,
    /// what the window decodes to if the stream ends now
    pending: String,
    started: bool,
}

impl HfStream {
    pub(crate) fn push(&mut self, t: &HfBpe, id: u32) -> Result<String, TokenizerError> {
        let tok = t.token(id)?;
        if t.is_byte_level() {
            if t.is_special(id) {
                return Ok(String::new());
            }
            let mapped: Option<Vec<u8>> = tok.chars().map(|c| t.char_bytes.get(&c).copied()).collect();
            return Ok(match mapped {
                Some(b) => self.bytes.push(&b),
                None => self.bytes.push(tok.as_bytes()),
            });
        }
        self.window.push(id);
        let out = t.decode_with(&self.window, true, !self.started)?;
        if fallback_byte(tok).is_some() && t.byte_fallback {
            self.pending = out;
            return Ok(String::new());
        }
        if self.window.iter().any(|&i| !t.is_special(i)) {
            self.started = true;
        }
        self.window.clear();
        self.pending.clear();
        Ok(out)
    }

    pub(crate) fn finish(&mut self) -> String {
        let mut s = self.bytes.finish();
        s.push_str(&std::mem::take(&mut self.pending));
        self.window.clear();
        self.started = false;
        s
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.bytes.pending.len() + self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_normalization::UnicodeNormalization;

    #[test]
    fn normalize_keeps_spans_and_agrees_with_the_crate() {
        // random texts mixing starters, combining marks out of order, Hangul jamo and compatibility forms
        let pool: Vec<char> = "aeAE oOı \u{301}\u{300}\u{316}\u{327}\u{345}\u{308}\u{1100}\u{1161}\u{11A8}\u{AC00}\u{FB01}\u{FF21}\u{FDFA}\u{212B}\u{2126}\u{0F73}\u{0DDD}\u{1D15E}\u{0B47}\u{0B3E}İẞ"
            .chars()
            .collect();
        let mut state = 7u64;
        let mut next = |n: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % n as u64) as usize
        };
        for _ in 0..20_000 {
            let len = next(12);
            let text: String = (0..len)
                .map(|_| if next(4) == 0 { char::from_u32(next(0x30000) as u32).unwrap_or('x') } else { pool[next(pool.len())] })
                .collect();
            for (form, want) in [
                (Form::Nfc, text.nfc().collect::<String>()),
                (Form::Nfd, text.nfd().collect()),
                (Form::Nfkc, text.nfkc().collect()),
                (Form::Nfkd, text.nfkd().collect()),
            ] {
                let mut seg = Seg::new(&text, 5);
                seg.normalize(form);
                assert_eq!(seg.s, want, "{form:?} of {text:?}");
                assert!(
                    (0..seg.s.len()).map(|i| seg.at(i)).all(|(l, h)| 5 <= l && l < h && h <= 5 + text.len()),
                    "{form:?} spans of {text:?}"
                );
            }
        }
    }

    #[test]
    fn growth_constants_bound_every_code_point() {
        let (mut canonical, mut compatible) = (0usize, 0usize);
        for c in (0..0x110000u32).filter_map(char::from_u32) {
            let n = c.len_utf8();
            let s = c.to_string();
            canonical = canonical.max(s.nfd().map(char::len_utf8).sum::<usize>().div_ceil(n));
            canonical = canonical.max(s.nfc().map(char::len_utf8).sum::<usize>().div_ceil(n));
            compatible = compatible.max(s.nfkd().map(char::len_utf8).sum::<usize>().div_ceil(n));
            compatible = compatible.max(s.nfkc().map(char::len_utf8).sum::<usize>().div_ceil(n));
            assert!(2 * c.to_lowercase().map(char::len_utf8).sum::<usize>() <= 3 * n, "lowercase of U+{:04X}", c as u32);
        }
        assert_eq!((canonical, compatible), (CANONICAL_GROWTH, COMPATIBLE_GROWTH));
    }
}
