//! Constrained decoding: which next output tokens keep the output well-formed.
//!
//! A checkpoint declares a constraint with `__metadata__["output_constraint"]`; the only one is
//! `"iso_date"`: the output is a valid calendar date `YYYY-MM-DD` with a year 1000..=2999 (proleptic
//! Gregorian, leap years by the Gregorian rule), then EOS. Generation sets the logits of every other
//! token to -inf before sampling (see `run::Model::next_token`), so greedy decoding picks the most
//! likely token among those that can still end in a valid date.

use crate::error::{Result, TfError};
use crate::tokenizer::Tokenizer;

/// Metadata key that names a checkpoint's output constraint.
pub const METADATA_KEY: &str = "output_constraint";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    vocab: usize,
    /// ids of '0'..='9'
    digits: [u32; 10],
    dash: u32,
    eos: u32,
}

pub fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

pub fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl Constraint {
    /// The constraint named `name` for an output tokenizer. An unknown name, or a tokenizer that
    /// cannot write the form (no digit, '-' or EOS token), is a one-line error.
    pub fn from_name(name: &str, out: &Tokenizer, vocab: usize) -> Result<Constraint> {
        if name != "iso_date" {
            return Err(TfError::Checkpoint(format!(
                "unknown output constraint {} in the metadata (the only one is \"iso_date\")",
                crate::error::quote(name)
            )));
        }
        let (_, _, eos) = out
            .special_ids()
            .ok_or_else(|| TfError::Checkpoint("output constraint \"iso_date\" needs a tokenizer with an EOS id".into()))?;
        let find = |c: char| -> Result<u32> {
            let want = c.to_string();
            (0..out.vocab_size().min(vocab) as u32)
                .find(|&id| id != eos && out.decode(&[id]).map(|s| s == want).unwrap_or(false))
                .ok_or_else(|| TfError::Checkpoint(format!("output constraint \"iso_date\": the output tokenizer has no token {c:?}")))
        };
        let mut digits = [0u32; 10];
        for (d, slot) in digits.iter_mut().enumerate() {
            *slot = find(char::from(b'0' + d as u8))?;
        }
        let dash = find('-')?;
        if eos as usize >= vocab {
            return Err(TfError::Checkpoint(format!("output constraint \"iso_date\": EOS id {eos} is outside the vocabulary of {vocab}")));
        }
        Ok(Constraint { vocab, digits, dash, eos })
    }

    fn digit_of(&self, id: u32) -> Option<u32> {
        self.digits.iter().position(|&d| d == id).map(|d| d as u32)
    }

    /// The ids allowed after the generated `prefix` (ascending). Empty when the prefix is not a
    /// prefix of a valid date or the date is complete with EOS.
    pub fn allowed(&self, prefix: &[u32]) -> Vec<u32> {
        let mut ds = Vec::with_capacity(8);
        for (i, &id) in prefix.iter().enumerate() {
            let ok = match i {
                4 | 7 => id == self.dash,
                10 => return vec![],
                _ => self.digit_of(id).map(|d| ds.push(d)).is_some(),
            };
            if !ok {
                return vec![];
            }
        }
        let digit_range = |lo: u32, hi: u32| -> Vec<u32> {
            let mut v: Vec<u32> = (lo..=hi).map(|d| self.digits[d as usize]).collect();
            v.sort_unstable();
            v
        };
        let num = |a: usize, b: usize| ds[a..b].iter().fold(0, |n, &d| n * 10 + d);
        match prefix.len() {
            0 => digit_range(1, 2),
            1..=3 => digit_range(0, 9),
            4 | 7 => vec![self.dash],
            5 => digit_range(0, 1),
            6 => {
                if ds[4] == 0 {
                    digit_range(1, 9)
                } else {
                    digit_range(0, 2)
                }
            }
            8 => {
                let dim = days_in_month(num(0, 4), num(4, 6));
                digit_range(0, dim / 10)
            }
            9 => {
                let dim = days_in_month(num(0, 4), num(4, 6));
                let tens = ds[6] * 10;
                let lo = if tens == 0 { 1 } else { 0 };
                let hi = (dim - tens).min(9);
                digit_range(lo, hi)
            }
            _ => vec![self.eos],
        }
    }

    /// Sets the logits of the tokens not allowed after `prefix` to -inf. Errors when nothing is
    /// allowed (the prefix came from outside the constraint).
    pub fn mask(&self, prefix: &[u32], logits: &mut [f32]) -> Result<()> {
        let allowed = self.allowed(prefix);
        if allowed.is_empty() || logits.len() != self.vocab {
            return Err(TfError::Input("the output so far cannot continue as a valid date (iso_date constraint)".into()));
        }
        let mut keep = vec![false; logits.len()];
        allowed.iter().for_each(|&i| keep[i as usize] = true);
        logits.iter_mut().zip(keep).filter(|(_, k)| !k).for_each(|(l, _)| *l = f32::NEG_INFINITY);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> Tokenizer {
        let itos: Vec<&str> = vec!["<pad>", "<bos>", "<eos>", " ", "-", "/", "9", "8", "7", "6", "5", "4", "3", "2", "1", "0", "A"];
        let j = serde_json::json!({"kind": "chars", "itos": itos, "pad": 0, "bos": 1, "eos": 2});
        Tokenizer::from_json(&j.to_string()).unwrap()
    }

    fn ids(c: &Constraint, s: &str) -> Vec<u32> {
        s.chars().map(|ch| if ch == '-' { c.dash } else { c.digits[ch.to_digit(10).unwrap() as usize] }).collect()
    }

    fn text(c: &Constraint, ids: &[u32]) -> String {
        ids.iter().map(|&i| if i == c.dash { '-' } else { char::from(b'0' + c.digit_of(i).unwrap() as u8) }).collect()
    }

    /// Every string the constraint accepts, by walking all allowed continuations.
    fn reachable(c: &Constraint) -> Vec<String> {
        let mut out = vec![];
        let mut stack = vec![vec![]];
        while let Some(p) = stack.pop() {
            for id in c.allowed(&p) {
                if id == c.eos {
                    assert_eq!(p.len(), 10, "EOS allowed early after {}", text(c, &p));
                    out.push(text(c, &p));
                } else {
                    let mut q = p.clone();
                    q.push(id);
                    stack.push(q);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn leap_years_and_month_lengths() {
        assert!(!is_leap(1900) && is_leap(2000) && is_leap(2024) && !is_leap(2023) && !is_leap(2100));
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2021, 4), 30);
        assert_eq!(days_in_month(2021, 12), 31);
    }

    #[test]
    fn prefixes_of_valid_dates_allowed_invalid_refused() {
        let c = Constraint::from_name("iso_date", &tok(), 17).unwrap();
        for date in ["2021-04-30", "1000-01-01", "2999-12-31", "2000-02-29", "1776-07-04"] {
            let d = ids(&c, date);
            for i in 0..d.len() {
                assert!(c.allowed(&d[..i]).contains(&d[i]), "{date}: char {i} refused");
            }
            assert_eq!(c.allowed(&d), vec![c.eos], "{date}: EOS must follow");
        }
        for (prefix, bad) in [
            ("", '0'),
            ("", '3'),
            ("2021-04-3", '1'),
            ("1900-02-2", '9'),
            ("2021-1", '3'),
            ("2021-0", '0'),
            ("2021-02-", '3'),
            ("2021-06-0", '0'),
            ("2021-01-3", '2'),
        ] {
            let p = ids(&c, prefix);
            let b = ids(&c, &bad.to_string())[0];
            assert!(!c.allowed(&p).contains(&b), "{prefix:?} + {bad:?} allowed");
        }
        assert_eq!(c.allowed(&ids(&c, "2021")), vec![c.dash]);
        assert!(!c.allowed(&ids(&c, "2021-0")).contains(&c.eos));
        assert!(c.allowed(&ids(&c, "2000-02-2")).contains(&ids(&c, "9")[0]));
        // a prefix that is not a date prefix allows nothing; mask says so
        assert!(c.allowed(&[16]).is_empty());
        let mut l = vec![0.0; 17];
        assert!(c.mask(&[16], &mut l).is_err());
        c.mask(&ids(&c, "2021-04-3"), &mut l).unwrap();
        let finite: Vec<usize> = (0..17).filter(|&i| l[i].is_finite()).collect();
        assert_eq!(finite, vec![c.digits[0] as usize]);
    }

    #[test]
    fn exactly_the_valid_dates_1000_2999_are_reachable() {
        let c = Constraint::from_name("iso_date", &tok(), 17).unwrap();
        let mut want = vec![];
        for y in 1000..=2999 {
            for m in 1..=12 {
                for d in 1..=days_in_month(y, m) {
                    want.push(format!("{y:04}-{m:02}-{d:02}"));
                }
            }
        }
        want.sort();
        assert_eq!(want.len(), 730485);
        assert_eq!(reachable(&c), want);
    }

    #[test]
    fn unknown_name_or_missing_tokens_are_errors() {
        let e = Constraint::from_name("us_date", &tok(), 17).unwrap_err().to_string();
        assert!(e.contains("unknown output constraint") && e.contains("us_date"), "{e}");
        let j = serde_json::json!({"kind": "chars", "itos": ["<pad>", "<bos>", "<eos>", "1", "2"], "pad": 0, "bos": 1, "eos": 2});
        let t = Tokenizer::from_json(&j.to_string()).unwrap();
        let e = Constraint::from_name("iso_date", &t, 5).unwrap_err().to_string();
        assert!(e.contains("no token"), "{e}");
    }
}
