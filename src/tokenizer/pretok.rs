//! `pretok`: the Split regexes of the tokenizer.json files we read, as hand-written scanners instead of
//! a regex engine (fancy-regex, which the lookahead `\s+(?!\S)` needs, took the page's wasm from 1.70 to
//! 3.40 MB, nearly all of it Unicode tables and engines; ARCHITECTURE.md, "Tokenizers from other tools").
//!
//! A pattern is recognised by its exact string ([`Scanner::for_pattern`]); each scanner does what the
//! regex's leftmost-first alternation does at each position. In GPT-2's, Llama-3's, Qwen2's, o200k's and Tekken's patterns
//! every character starts a match (a letter, a number, whitespace or anything else: each has an
//! alternative), so the matches tile the text; the Whitespace pre-tokenizer's `\w+|[^\w\s]+` skips
//! whitespace. `\p{L}`, `\p{N}`, `\s` (Unicode White_Space), `\w` and `\p{P}` come from
//! `unicode_classes.rs`, generated from regex-syntax's own tables; tests/hf_tokenizers.rs checks it code
//! point by code point and compares every scanner with fancy-regex (a dev-dependency) on the parity
//! corpus and a large random Unicode corpus.

use super::unicode_classes::{CLASSES, LETTER, LOWER, MARK, NUMBER, PUNCT, SPACE, UPPER, WORD};

/// GPT-2's pre-tokenizer regex (the `ByteLevel` pre-tokenizer with `use_regex`).
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama-3's (and tiktoken cl100k's) Split regex.
pub const LLAMA3_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's Split regex: Llama-3's with one digit per number piece.
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// OpenAI's o200k Split regex (GPT-4o; Phi-4's and gpt-oss's tokenizer.json): letters split by case (an
/// upper-case run then a lower-case one, so `helloWorld` is two pieces) with the contractions after the
/// word, up to three digits a piece, and `/` kept after punctuation.
pub const O200K_PATTERN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral's Tekken Split regex (Mistral Nemo, Pixtral, Ministral): o200k's without the contractions and
/// with one digit a piece.
pub const TEKKEN_PATTERN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The Whitespace pre-tokenizer's regex (words, and runs of what is neither a word character nor whitespace).
pub const WHITESPACE_PATTERN: &str = r"\w+|[^\w\s]+";

/// What `\p{L}`, `\p{N}` and `\s` say about a character (disjoint: no character is two of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `\p{L}`
    Letter,
    /// `\p{N}`
    Number,
    /// `\s`: Unicode White_Space
    Space,
    /// `[^\s\p{L}\p{N}]`
    Other,
}

/// The class of a character, as regex-syntax's Unicode tables have it.
pub fn class(c: char) -> Class {
    let u = c as u32;
    if u < 0x80 {
        return match c {
            'a'..='z' | 'A'..='Z' => Class::Letter,
            '0'..='9' => Class::Number,
            '\t'..='\r' | ' ' => Class::Space,
            _ => Class::Other,
        };
    }
    match lookup(CLASSES, c, |&(lo, hi, _)| (lo, hi)) {
        Some(&(_, _, LETTER)) => Class::Letter,
        Some(&(_, _, NUMBER)) => Class::Number,
        Some(&(_, _, SPACE)) => Class::Space,
        _ => Class::Other,
    }
}

/// The entry of a sorted table of disjoint code point ranges that holds `c`.
fn lookup<T>(table: &[T], c: char, range: impl Fn(&T) -> (u32, u32)) -> Option<&T> {
    let u = c as u32;
    let i = table
        .binary_search_by(|e| {
            let (lo, hi) = range(e);
            if hi < u {
                std::cmp::Ordering::Less
            } else if lo > u {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .ok()?;
    table.get(i)
}

fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    lookup(table, c, |&r| r).is_some()
}

/// A letter's case as o200k's classes see it, or a mark: the regex's `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`
/// ("upper") and `[\p{Ll}\p{Lm}\p{Lo}\p{M}]` ("lower") share `Lm`, `Lo` and `M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// `Lu`, `Lt`: upper only
    Upper,
    /// `Ll`: lower only
    Lower,
    /// `Lm`, `Lo` (letters without case) and `M` (marks, which are not `\p{L}`): both
    Both,
    /// neither (numbers, whitespace, punctuation, symbols, ...)
    Neither,
}

/// The [`Case`] of a character, from regex-syntax's tables.
pub fn case(c: char) -> Case {
    if c.is_ascii() {
        return match c {
            'A'..='Z' => Case::Upper,
            'a'..='z' => Case::Lower,
            _ => Case::Neither,
        };
    }
    if in_ranges(UPPER, c) {
        Case::Upper
    } else if in_ranges(LOWER, c) {
        Case::Lower
    } else if class(c) == Class::Letter || in_ranges(MARK, c) {
        Case::Both
    } else {
        Case::Neither
    }
}

/// `\w`: Alphabetic, marks, decimal numbers, connector punctuation and Join_Control.
pub fn is_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    in_ranges(WORD, c)
}

/// The Punctuation pre-tokenizer's test: ASCII punctuation (its symbols included) or `\p{P}`.
pub fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || (!c.is_ascii() && in_ranges(PUNCT, c))
}

/// A known split pattern, run by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanner {
    /// [`GPT2_PATTERN`]
    Gpt2,
    /// [`LLAMA3_PATTERN`] (`max_digits` 3) or [`QWEN2_PATTERN`] (1)
    Llama3 { max_digits: usize },
    /// [`O200K_PATTERN`] (`contractions`, `max_digits` 3) or [`TEKKEN_PATTERN`] (neither, 1)
    Cased { contractions: bool, max_digits: usize },
    /// [`WHITESPACE_PATTERN`], as the Whitespace pre-tokenizer runs it
    Words,
}

impl Scanner {
    /// The scanner for a Split regex given by its exact string; None for any other regex. Not
    /// [`Scanner::Words`]: in a Split regex Python's `tokenizers` runs Oniguruma, whose `\w` also takes
    /// `\p{N}` (`²`), while its Whitespace pre-tokenizer's `\w` is regex-syntax's.
    pub fn for_pattern(pattern: &str) -> Option<Scanner> {
        match pattern {
            GPT2_PATTERN => Some(Scanner::Gpt2),
            LLAMA3_PATTERN => Some(Scanner::Llama3 { max_digits: 3 }),
            QWEN2_PATTERN => Some(Scanner::Llama3 { max_digits: 1 }),
            O200K_PATTERN => Some(Scanner::Cased { contractions: true, max_digits: 3 }),
            TEKKEN_PATTERN => Some(Scanner::Cased { contractions: false, max_digits: 1 }),
            _ => None,
        }
    }

    /// The regex this scanner stands for.
    pub fn pattern(&self) -> &'static str {
        match self {
            Scanner::Gpt2 => GPT2_PATTERN,
            Scanner::Llama3 { max_digits: 1 } => QWEN2_PATTERN,
            Scanner::Llama3 { .. } => LLAMA3_PATTERN,
            Scanner::Cased { contractions: true, .. } => O200K_PATTERN,
            Scanner::Cased { .. } => TEKKEN_PATTERN,
            Scanner::Words => WHITESPACE_PATTERN,
        }
    }

    /// The (start, end) byte ranges of the regex's `find_iter` over `s`: non-empty, in order (tiling `s`
    /// but for [`Scanner::Words`], which skips whitespace).
    pub fn find_iter(&self, s: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            let j = match *self {
                Scanner::Gpt2 => gpt2_match(s, i),
                Scanner::Llama3 { max_digits } => llama3_match(s, i, max_digits),
                Scanner::Cased { contractions, max_digits } => cased_match(s, i, contractions, max_digits),
                Scanner::Words => {
                    let Some(c) = at(s, i) else { break };
                    if class(c) == Class::Space {
                        i += c.len_utf8();
                        continue;
                    }
                    let word = is_word(c);
                    run(s, i, |d| is_word(d) == word && (word || class(d) != Class::Space))
                }
            };
            debug_assert!(j > i);
            out.push((i, j));
            i = j;
        }
        out
    }
}

fn at(s: &str, i: usize) -> Option<char> {
    s.get(i..).and_then(|t| t.chars().next())
}

/// The end of the run of characters from `i` on that satisfy `f`.
fn run(s: &str, i: usize, f: impl Fn(char) -> bool) -> usize {
    let mut j = i;
    for c in s[i..].chars() {
        if !f(c) {
            break;
        }
        j += c.len_utf8();
    }
    j
}

fn run_of(s: &str, i: usize, k: Class) -> usize {
    run(s, i, |c| class(c) == k)
}

/// `'s|'t|'re|'ve|'m|'ll|'d` after the apostrophe at `i - 1`, case-insensitively (`(?i:...)`: ASCII case
/// and U+017F LATIN SMALL LETTER LONG S for s, which is regex-syntax's simple case folding of these
/// letters) or not; the end of the match.
fn contraction(s: &str, i: usize, fold: bool) -> Option<usize> {
    let eq = |c: char, want: char| c == want || (fold && (c.to_ascii_lowercase() == want || (want == 's' && c == '\u{17F}')));
    let mut cs = s[i..].chars();
    let a = cs.next()?;
    let len = |c: char| c.len_utf8();
    if eq(a, 's') || eq(a, 't') || eq(a, 'm') || eq(a, 'd') {
        return Some(i + len(a));
    }
    let b = cs.next()?;
    if (eq(a, 'r') || eq(a, 'v')) && eq(b, 'e') || eq(a, 'l') && eq(b, 'l') {
        return Some(i + len(a) + len(b));
    }
    None
}

/// `\s+(?!\S)|\s+` at the whitespace character at `i`: the run, less its last character when the run is
/// longer than one character and a non-space follows it.
fn space_run(s: &str, i: usize) -> usize {
    let j = run_of(s, i, Class::Space);
    if j == s.len() {
        return j;
    }
    let last = s[i..j].char_indices().next_back().map_or(0, |(k, _)| i + k);
    if last > i {
        last
    } else {
        j
    }
}

/// The end of GPT-2's match at `i` (< s.len()).
fn gpt2_match(s: &str, i: usize) -> usize {
    let Some(c) = at(s, i) else { return s.len() };
    // 's|'t|'re|'ve|'m|'ll|'d
    if c == '\'' {
        if let Some(j) = contraction(s, i + 1, false) {
            return j;
        }
    }
    // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class
    let (start, first) = match at(s, i + 1) {
        Some(d) if c == ' ' && class(d) != Class::Space => (i + 1, d),
        _ => (i, c),
    };
    match class(first) {
        Class::Space => space_run(s, i),
        k => run_of(s, start, k),
    }
}

/// The end of Llama-3's (or Qwen2's) match at `i` (< s.len()).
fn llama3_match(s: &str, i: usize, max_digits: usize) -> usize {
    let Some(c) = at(s, i) else { return s.len() };
    let k = class(c);
    let next = at(s, i + c.len_utf8());
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c == '\'' {
        if let Some(j) = contraction(s, i + 1, true) {
            return j;
        }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if k == Class::Letter {
        return run_of(s, i, Class::Letter);
    }
    if k != Class::Number && c != '\r' && c != '\n' && next.is_some_and(|d| class(d) == Class::Letter) {
        return run_of(s, i + c.len_utf8(), Class::Letter);
    }
    number_other_space(s, i, max_digits, &['\r', '\n'])
}

/// What Llama-3's, Qwen2's, o200k's and Tekken's patterns share after their letter alternatives, at
/// the character at `i` (not a letter): `\p{N}{1,max_digits}`, then ` ?[^\s\p{L}\p{N}]+[T]*` with `trail`
/// the characters T (`\r\n`, and `/` in o200k's and Tekken's), then `\s*[\r\n]+|\s+(?!\S)|\s+`.
fn number_other_space(s: &str, i: usize, max_digits: usize, trail: &[char]) -> usize {
    let Some(c) = at(s, i) else { return s.len() };
    let k = class(c);
    if k == Class::Number {
        let mut j = i;
        for d in s[i..].chars().take(max_digits) {
            if class(d) != Class::Number {
                break;
            }
            j += d.len_utf8();
        }
        return j;
    }
    let start = match at(s, i + c.len_utf8()) {
        Some(d) if c == ' ' && class(d) == Class::Other => Some(i + 1),
        _ if k == Class::Other => Some(i),
        _ => None,
    };
    if let Some(start) = start {
        let j = run_of(s, start, Class::Other);
        return run(s, j, |d| trail.contains(&d));
    }
    // c is whitespace. `\s*[\r\n]+`: the run up to and including its last \r or \n
    let j = run_of(s, i, Class::Space);
    if let Some(p) = s[i..j].rfind(['\r', '\n']) {
        return i + p + 1;
    }
    // \s+(?!\S)|\s+
    space_run(s, i)
}

/// The end of o200k's (or Tekken's) match at `i` (< s.len()). Its letter alternatives are
/// `P? U* L+ C?` then `P? U+ L* C?`, with P = `[^\r\n\p{L}\p{N}]`, U the upper class, L the lower
/// class (U and L share `Lm`, `Lo` and marks) and C the contractions; the rest is Llama-3's but for `/`
/// after punctuation, and each alternative is taken as a backtracking engine takes it (leftmost first,
/// greedy, giving back only what the next part needs).
fn cased_match(s: &str, i: usize, contractions: bool, max_digits: usize) -> usize {
    let Some(c) = at(s, i) else { return s.len() };
    let k = class(c);
    let upper = |d: char| matches!(case(d), Case::Upper | Case::Both);
    let lower = |d: char| matches!(case(d), Case::Lower | Case::Both);
    let tail = |j: usize| {
        if contractions && s[j..].starts_with('\'') {
            contraction(s, j + 1, true).unwrap_or(j)
        } else {
            j
        }
    };
    // `U* L+` from `from`: U* takes its longest run and gives characters back until L+ can start; L+ then
    // runs on. Where U*'s whole run is followed by an L character, that is its start; otherwise the last
    // L character inside U*'s run (a caseless letter or a mark), which ends the match: the characters after
    // it in the run are upper only.
    let upper_lower = |from: usize| -> Option<usize> {
        let p = run(s, from, upper);
        if at(s, p).is_some_and(lower) {
            return Some(run(s, p, lower));
        }
        s[from..p].char_indices().rev().find(|&(_, d)| lower(d)).map(|(q, d)| from + q + d.len_utf8())
    };
    // `U+ L*`
    let upper_then = |from: usize| -> Option<usize> {
        let p = run(s, from, upper);
        (p > from).then(|| run(s, p, lower))
    };
    let prefix = k != Class::Letter && k != Class::Number && c != '\r' && c != '\n';
    let after = i + c.len_utf8();
    let alts: [&dyn Fn(usize) -> Option<usize>; 2] = [&upper_lower, &upper_then];
    for alt in alts {
        // the optional prefix is greedy: with it first, then without
        if prefix {
            if let Some(j) = alt(after) {
                return tail(j);
            }
        }
        if let Some(j) = alt(i) {
            return tail(j);
        }
    }
    number_other_space(s, i, max_digits, &['\r', '\n', '/'])
}
