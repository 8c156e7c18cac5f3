//! The date-translation task of the shipped dates model (`--task dates`): (human-written date, ISO
//! date) pairs generated here with train/dates.py's conventions, for training an encoder-decoder.
//!
//! * Days: 1000-01-01 ..= 2999-12-31, proleptic Gregorian; a day is its index from 1000-01-01. The
//!   weekday is computed from the day count (1970-01-01 was a Thursday).
//! * Formats: the 40 of [`FORMATS`], templates over the fields d, dd, do (3rd), dw (third), m, mm,
//!   M (March), Mon (Mar), W (Wednesday), Wd (Wed), Y, yy. Slashes with the year last are month first
//!   unless written by a day-first format ([`DAY_FIRST_SLASH`]), which writes only days over 12; a
//!   two-digit-year format writes only 1950..=2049 (00..49 -> 2000s, 50..99 -> 1900s). [`can_write`]
//!   says which days a format may write. A pair draws its format uniformly, then a day uniformly
//!   among those the format can write, then the case: as written (6 in 10), lowercase (2 in 10) or
//!   uppercase (2 in 10).
//! * Split: a day is a validation day iff a fixed hash of its index (SplitMix64 of the index xor
//!   [`SPLIT_SALT`], the same for every seed) is 0 modulo 20, or it is one of the days of train/dates.py's
//!   hand-written examples ([`EXTRA_DAYS`]). Training pairs are drawn only from the other days,
//!   evaluation pairs only from validation days, so they share no date and no input string.
//! * Vocabulary (source and target): id 0 = `<pad>`, 1 = `<bos>`, 2 = `<eos>`, then the sorted
//!   characters of the month, weekday and ordinal names (any case), the digits and ` ',-./`: the
//!   shipped model's 65 entries, stored as the `chars` tokenizer.
//! * A batch row: the source is the input's characters right-padded with 0 to [`SRC_LEN`] (48: the
//!   longest input is 47 characters), the decoder input BOS + the 10 ISO characters, the target the
//!   10 ISO characters + EOS ([`TGT_LEN`] = 11 each).

use std::sync::OnceLock;

use crate::error::{Result, TfError};
use crate::rng::Rng;
use crate::tokenizer::chars::Chars;
use crate::tokenizer::Tokenizer;
use crate::train::data::Batch;

/// Source length of every batch (the longest input, 47 characters, plus one).
pub const SRC_LEN: usize = 48;
/// Decoder input and target length: BOS + 10 ISO characters, or 10 ISO characters + EOS.
pub const TGT_LEN: usize = 11;
pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
/// The days 1000-01-01 ..= 2999-12-31.
pub const NUM_DAYS: u32 = 730_485;
/// Mixed into the split's hash of a day index.
pub const SPLIT_SALT: u64 = 0x6461_7465_735F_7631;
/// One day in this many (by the hash) is a validation day.
pub const SPLIT_BUCKETS: u64 = 20;

/// The formats, as train/dates.py writes them (the same order).
pub const FORMATS: [&str; 40] = [
    "{do} of {M} {Y}",
    "the {do} of {M}, {Y}",
    "{mm}/{dd}/{yy}",
    "{m}/{d}/{Y}",
    "{mm}/{dd}/{Y}",
    "{M} {d}, {Y}",
    "{M} {do} {Y}",
    "{M} {do}, {Y}",
    "{Mon} {d}, {Y}",
    "{Mon}. {d}, {Y}",
    "{Wd} {d} {Mon} {Y}",
    "{Wd}, {Mon} {d}, {Y}",
    "{Wd}, {Mon} {d} '{yy}",
    "{W}, {M} {d}, {Y}",
    "{W} {d} {M} {Y}",
    "{W}, the {do} of {M} {Y}",
    "{Y}.{m}.{d}",
    "{Y}-{mm}-{dd}",
    "{Y}/{mm}/{dd}",
    "{Y}{mm}{dd}",
    "{d} {Mon} {Y}",
    "{d} {M} {Y}",
    "{dd} {Mon} {Y}",
    "{d}-{Mon}-{Y}",
    "{dd}-{Mon}-{yy}",
    "{dd}.{mm}.{Y}",
    "{d}.{m}.{Y}",
    "{dd}-{mm}-{Y}",
    "{Mon} {Y}, {d}",
    "{M} the {do}, {Y}",
    "{d}/{m}/{Y}",
    "{dd}/{mm}/{Y}",
    "{dd}/{mm}/{yy}",
    "{Y}/{m}/{d}",
    "{Y}-{m}-{d}",
    "{M} {d} {Y}",
    "the {dw} of {M} {Y}",
    "{dw} of {M}, {Y}",
    "{M} {dw}, {Y}",
    "{W}, the {dw} of {M} {Y}",
];

/// The slashed formats with the year last that are day first: they write only days over 12.
pub const DAY_FIRST_SLASH: [&str; 3] = ["{d}/{m}/{Y}", "{dd}/{mm}/{Y}", "{dd}/{mm}/{yy}"];

/// The days of train/dates.py's hand-written examples, held out of training.
pub const EXTRA_DAYS: [(i32, u32, u32); 10] = [
    (1776, 7, 4),
    (1999, 12, 31),
    (2150, 11, 11),
    (1988, 1, 15),
    (2021, 3, 3),
    (1789, 7, 14),
    (1000, 1, 1),
    (2999, 12, 31),
    (2400, 2, 29),
    (1307, 10, 13),
];

pub const MONTHS: [&str; 12] =
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
pub const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const ORDINAL_WORDS: [&str; 31] = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
    "twentieth",
    "twenty-first",
    "twenty-second",
    "twenty-third",
    "twenty-fourth",
    "twenty-fifth",
    "twenty-sixth",
    "twenty-seventh",
    "twenty-eighth",
    "twenty-ninth",
    "thirtieth",
    "thirty-first",
];

/// Days from 1970-01-01 to y-m-d (proleptic Gregorian; Hinnant's algorithm).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = y as i64 - (m <= 2) as i64;
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The day 1000-01-01, in days from 1970-01-01.
fn first_day() -> i64 {
    days_from_civil(1000, 1, 1)
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn month_len(y: i32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A calendar day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// The day `i` days after 1000-01-01.
    pub fn from_index(i: u32) -> Date {
        // Hinnant's civil_from_days
        let z = first_day() + i as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + (month <= 2) as i64) as i32;
        Date { year, month, day }
    }

    /// The day's index from 1000-01-01; None for a day that does not exist or is outside the range.
    pub fn index(self) -> Option<u32> {
        if !(1000..=2999).contains(&self.year) || !(1..=12).contains(&self.month) || self.day == 0 {
            return None;
        }
        if self.day > month_len(self.year, self.month) {
            return None;
        }
        Some((days_from_civil(self.year, self.month, self.day) - first_day()) as u32)
    }

    /// Parses "YYYY-MM-DD" naming a day of the range.
    pub fn from_iso(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = s.get(r)?;
            part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
        };
        let d = Date { year: num(0..4)? as i32, month: num(5..7)?, day: num(8..10)? };
        d.index().map(|_| d)
    }

    pub fn iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// 0 = Monday .. 6 = Sunday.
    pub fn weekday(self) -> usize {
        // 1970-01-01 was a Thursday (3)
        (days_from_civil(self.year, self.month, self.day) + 3).rem_euclid(7) as usize
    }
}

/// How an input's letters are cased.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    AsIs,
    Lower,
    Upper,
}

fn ordinal(n: u32) -> String {
    let suf = if (10..=20).contains(&(n % 100)) {
        "th"
    } else {
        match n % 10 {
            1 => "st",
            2 => "nd",
            3 => "rd",
            _ => "th",
        }
    };
    format!("{n}{suf}")
}

fn two_digit_year(fmt: &str) -> bool {
    fmt.contains("{yy}")
}

/// Whether format `fmt` (an index into [`FORMATS`]) writes `d` with the reading the conventions give it.
pub fn can_write(fmt: usize, d: Date) -> bool {
    let f = FORMATS[fmt];
    if two_digit_year(f) && !(1950..=2049).contains(&d.year) {
        return false;
    }
    !(DAY_FIRST_SLASH.contains(&f) && d.day <= 12)
}

/// The input that format `fmt` writes for `d` in case `case`.
pub fn render(d: Date, fmt: usize, case: Case) -> String {
    let (m, wd) = (MONTHS[d.month as usize - 1], DAYS[d.weekday()]);
    let field = |k: &str| -> String {
        match k {
            "d" => d.day.to_string(),
            "dd" => format!("{:02}", d.day),
            "do" => ordinal(d.day),
            "dw" => ORDINAL_WORDS[d.day as usize - 1].to_string(),
            "m" => d.month.to_string(),
            "mm" => format!("{:02}", d.month),
            "M" => m.to_string(),
            "Mon" => m[..3].to_string(),
            "W" => wd.to_string(),
            "Wd" => wd[..3].to_string(),
            "Y" => d.year.to_string(),
            _ => format!("{:02}", d.year.rem_euclid(100)),
        }
    };
    let mut out = String::new();
    let mut rest = FORMATS[fmt];
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        out.push_str(&field(&rest[open + 1..close]));
        rest = rest.get(close + 1..).unwrap_or("");
    }
    out.push_str(rest);
    match case {
        Case::AsIs => out,
        Case::Lower => out.to_ascii_lowercase(),
        Case::Upper => out.to_ascii_uppercase(),
    }
}

/// Whether day `i` is held out for validation (see the module's opening).
pub fn is_validation(i: u32) -> bool {
    let h = Rng::new(i as u64 ^ SPLIT_SALT).next_u64();
    h % SPLIT_BUCKETS == 0 || EXTRA_DAYS.iter().any(|&(year, month, day)| Date { year, month, day }.index() == Some(i))
}

/// The characters after the three specials, sorted (train/dates.py's VOCAB_CHARS).
fn vocab_chars() -> &'static [char] {
    static CHARS: OnceLock<Vec<char>> = OnceLock::new();
    CHARS.get_or_init(|| {
        let names: String = MONTHS.iter().chain(&DAYS).chain(&ORDINAL_WORDS).copied().collect();
        let all = format!(" ',-./0123456789{}{}{names}stndrdtheSTNDRDTHE", names.to_lowercase(), names.to_uppercase());
        let mut v: Vec<char> = all.chars().collect();
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// The vocabulary: `<pad>`, `<bos>`, `<eos>`, then the characters.
pub fn itos() -> Vec<String> {
    ["<pad>", "<bos>", "<eos>"].iter().map(|s| s.to_string()).chain(vocab_chars().iter().map(|c| c.to_string())).collect()
}

/// The `chars` tokenizer of the vocabulary (pad 0, bos 1, eos 2).
pub fn tokenizer() -> Result<Tokenizer> {
    Ok(Tokenizer::Chars(Chars::new(itos(), PAD, BOS, EOS, None).map_err(|e| TfError::Internal(format!("the dates vocabulary: {e}")))?))
}

/// The id of a character of the vocabulary.
fn char_id(c: char) -> Result<u32> {
    vocab_chars().binary_search(&c).map(|i| i as u32 + 3).map_err(|_| TfError::Internal(format!("the dates vocabulary has no {c:?}")))
}

/// The days format `fmt` may be drawn from: (first index, count).
fn day_range(fmt: usize) -> (u32, u32) {
    if two_digit_year(FORMATS[fmt]) {
        let lo = (days_from_civil(1950, 1, 1) - first_day()) as u32;
        let hi = (days_from_civil(2049, 12, 31) - first_day()) as u32;
        (lo, hi - lo + 1)
    } else {
        (0, NUM_DAYS)
    }
}

/// One (input, day) pair: a uniform format, a uniform day among those it can write on the
/// validation side (`validation`) or the training side of the split, and a case.
pub fn pair(rng: &mut Rng, validation: bool) -> (String, Date) {
    let fmt = rng.below(FORMATS.len() as u32) as usize;
    let (lo, n) = day_range(fmt);
    let d = loop {
        let i = lo + rng.below(n);
        let d = Date::from_index(i);
        if can_write(fmt, d) && is_validation(i) == validation {
            break d;
        }
    };
    let case = match rng.below(10) {
        0..=5 => Case::AsIs,
        6 | 7 => Case::Lower,
        _ => Case::Upper,
    };
    (render(d, fmt, case), d)
}

/// A batch of `b` pairs: sources of [`SRC_LEN`], decoder inputs and targets of [`TGT_LEN`].
pub fn batch(rng: &mut Rng, b: usize, validation: bool) -> Result<Batch> {
    let (mut src, mut ids, mut targets) =
        (Vec::with_capacity(b * SRC_LEN), Vec::with_capacity(b * TGT_LEN), Vec::with_capacity(b * TGT_LEN));
    for _ in 0..b {
        let (input, d) = pair(rng, validation);
        let row = input.chars().map(char_id).collect::<Result<Vec<u32>>>()?;
        if row.len() > SRC_LEN {
            return Err(TfError::Internal(format!("the date input {input:?} is longer than {SRC_LEN} characters")));
        }
        src.extend_from_slice(&row);
        src.resize(src.len() + SRC_LEN - row.len(), PAD);
        let iso = d.iso().chars().map(char_id).collect::<Result<Vec<u32>>>()?;
        ids.push(BOS);
        ids.extend_from_slice(&iso);
        targets.extend_from_slice(&iso);
        targets.push(EOS);
    }
    Ok(Batch { b, t: TGT_LEN, ids, targets, ts: SRC_LEN, src })
}
