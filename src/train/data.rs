//! Where a run's batches come from: a text (random windows of its tokens, 90/10 train/val split
//! or a separate validation text), the induction task (random tokens with a repeated segment),
//! the date-translation task (an encoder-decoder's pairs, see `dates`), or a batches file that fixes every step's data exactly, so a run can be compared with another
//! engine's. A step's batch depends only on (seed, step), so a resumed run sees the same data as
//! an uninterrupted one.

use serde::Deserialize;

use crate::error::{Result, TfError};
use crate::rng::Rng;
use crate::train::dates;

/// One batch: B rows of T input ids and their targets, row-major; for an encoder-decoder also B
/// rows of Ts source ids (the inputs are then the decoder's input, the targets its output).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub b: usize,
    pub t: usize,
    pub ids: Vec<u32>,
    pub targets: Vec<u32>,
    pub ts: usize,
    pub src: Vec<u32>,
}

/// Where batches come from.
pub enum Source {
    /// a token stream: training windows from `train`, evaluation windows from `val`
    Text { train: Vec<u32>, val: Vec<u32> },
    /// random tokens in 0..vocab, each row a random segment (3 to half the row) repeated to fill it
    Induction { vocab: u32 },
    /// date-translation pairs for an encoder-decoder (`dates`): B rows of `dates::SRC_LEN` source
    /// and `dates::TGT_LEN` target ids, evaluation pairs on held-out days
    Dates,
    /// every step's batch given (a batches file)
    Fixed(Vec<Batch>),
}

/// Largest batches file read.
pub const MAX_BATCHES_BYTES: u64 = 256 << 20;

#[derive(Deserialize)]
struct BatchesFile {
    steps: Vec<StepJson>,
}

/// A decoder's step {"inputs", "targets"} or an encoder-decoder's {"src", "tgt_in", "tgt_out"}.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepJson {
    inputs: Option<Vec<Vec<u32>>>,
    targets: Option<Vec<Vec<u32>>>,
    src: Option<Vec<Vec<u32>>>,
    tgt_in: Option<Vec<Vec<u32>>>,
    tgt_out: Option<Vec<Vec<u32>>>,
}

/// Rows of equal length: (rows, length). `file` names the batches file in errors.
fn rect(rows: &[Vec<u32>], what: &str, step: usize, file: &str) -> Result<(usize, usize)> {
    let t = rows.first().map_or(0, |r| r.len());
    if rows.is_empty() || t == 0 {
        return Err(TfError::Input(format!("step {step} of {file} has no {what} tokens")));
    }
    if rows.iter().any(|r| r.len() != t) {
        return Err(TfError::Input(format!("step {step} of {file}: every {what} row must hold {t} ids")));
    }
    Ok((rows.len(), t))
}

/// The batches of a batches file (see [`Source::batches_json`]); `what` names the file in errors
/// ("the batches file", "--val-batches").
pub fn batches_file(text: &str, what: &str) -> Result<Vec<Batch>> {
    let f: BatchesFile = serde_json::from_str(text).map_err(|e| TfError::Input(format!("{what} is not valid: {e}")))?;
    let mut out = Vec::with_capacity(f.steps.len());
    for (i, s) in f.steps.into_iter().enumerate() {
        let step = i + 1;
        let batch = match (s.inputs, s.targets, s.src, s.tgt_in, s.tgt_out) {
            (Some(inp), Some(tgt), None, None, None) => {
                let (b, t) = rect(&inp, "input", step, what)?;
                if rect(&tgt, "target", step, what)? != (b, t) {
                    return Err(TfError::Input(format!("step {step} of {what}: every input and target row must hold {t} ids, {b} rows each")));
                }
                Batch { b, t, ids: inp.concat(), targets: tgt.concat(), ..Batch::default() }
            }
            (None, None, Some(src), Some(tin), Some(tout)) => {
                let (b, ts) = rect(&src, "src", step, what)?;
                let (bt, t) = rect(&tin, "tgt_in", step, what)?;
                if bt != b || rect(&tout, "tgt_out", step, what)? != (b, t) {
                    return Err(TfError::Input(format!("step {step} of {what}: src, tgt_in and tgt_out must hold {b} rows, tgt_in and tgt_out rows of {t} ids")));
                }
                Batch { b, t, ids: tin.concat(), targets: tout.concat(), ts, src: src.concat() }
            }
            _ => {
                return Err(TfError::Input(format!(
                    "step {step} of {what} must hold \"inputs\" and \"targets\" (decoders) or \"src\", \"tgt_in\" and \"tgt_out\" (encoder-decoders)"
                )))
            }
        };
        if let Some(first) = out.first().map(|x: &Batch| (x.b, x.t, x.ts)) {
            if first != (batch.b, batch.t, batch.ts) {
                return Err(TfError::Input(format!("step {step} of {what} is shaped unlike the first step")));
            }
        }
        out.push(batch);
    }
    if out.is_empty() {
        return Err(TfError::Input(format!("{what} holds no steps")));
    }
    Ok(out)
}

fn stream_rng(seed: u64, stream: u64, i: u64) -> Rng {
    Rng::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

impl Source {
    /// A token stream split 90/10 into training and validation (or `val` given). Refuses streams
    /// too short for one window of `t + 1` tokens, or of one symbol.
    pub fn text(tokens: Vec<u32>, val: Option<Vec<u32>>, t: usize) -> Result<Source> {
        if tokens.is_empty() {
            return Err(TfError::Input("the training text is empty".into()));
        }
        let first = tokens[0];
        if tokens.iter().all(|&x| x == first) {
            return Err(TfError::Input("the training text is one symbol repeated: there is nothing to learn".into()));
        }
        let (train, val) = match val {
            Some(v) => (tokens, v),
            None => {
                let cut = tokens.len() - tokens.len() / 10;
                (tokens[..cut].to_vec(), tokens[cut..].to_vec())
            }
        };
        for (what, s) in [("training", &train), ("validation", &val)] {
            if s.len() < t + 1 {
                return Err(TfError::Input(format!(
                    "the {what} text has {} tokens, fewer than one window of the context ({t}) plus one: lower --context or give more text",
                    s.len()
                )));
            }
        }
        Ok(Source::Text { train, val })
    }

    /// Parses a batches file: `{"steps": [{"inputs": [[ids], ...], "targets": [[ids], ...]}, ...]}`,
    /// every step of the same B x T.
    pub fn batches_json(text: &str) -> Result<Source> {
        Ok(Source::Fixed(batches_file(text, "the batches file")?))
    }

    /// The (B, T) a fixed source dictates.
    pub fn shape(&self) -> Option<(usize, usize)> {
        match self {
            Source::Fixed(v) => v.first().map(|x| (x.b, x.t)),
            _ => None,
        }
    }

    /// The source length Ts of an encoder-decoder source (0 otherwise).
    pub fn source_len(&self) -> usize {
        match self {
            Source::Fixed(v) => v.first().map_or(0, |x| x.ts),
            Source::Dates => dates::SRC_LEN,
            _ => 0,
        }
    }

    /// The target length T a source dictates (a fixed source's, the dates task's).
    pub fn target_len(&self) -> Option<usize> {
        match self {
            Source::Fixed(v) => v.first().map(|x| x.t),
            Source::Dates => Some(dates::TGT_LEN),
            _ => None,
        }
    }

    /// The training batch of step `step` (from 1), micro-batch `micro`.
    pub fn train_batch(&self, seed: u64, step: u32, micro: u32, b: usize, t: usize) -> Result<Batch> {
        let i = ((step as u64) << 16) | micro as u64;
        match self {
            Source::Text { train, .. } => Ok(windows(train, &mut stream_rng(seed, 1, i), b, t)),
            Source::Induction { vocab } => Ok(induction(*vocab, &mut stream_rng(seed, 2, i), b, t)),
            Source::Dates => dates_batch(&mut stream_rng(seed, 5, i), b, t, false),
            Source::Fixed(v) => v
                .get(step as usize - 1)
                .cloned()
                .ok_or_else(|| TfError::Input(format!("the batches file holds {} steps; step {step} has no data", v.len()))),
        }
    }

    /// Evaluation batch `i` (None when the source has no held-out data).
    pub fn val_batch(&self, seed: u64, i: u32, b: usize, t: usize) -> Option<Batch> {
        match self {
            Source::Text { val, .. } => Some(windows(val, &mut stream_rng(seed, 3, i as u64), b, t)),
            Source::Induction { vocab } => Some(induction(*vocab, &mut stream_rng(seed, 4, i as u64), b, t)),
            Source::Dates => dates_batch(&mut stream_rng(seed, 6, i as u64), b, t, true).ok(),
            Source::Fixed(_) => None,
        }
    }
}

/// B date pairs; the target length is the task's own, so `t` must be it.
fn dates_batch(rng: &mut Rng, b: usize, t: usize, validation: bool) -> Result<Batch> {
    if t != dates::TGT_LEN {
        return Err(TfError::Internal(format!("the dates task's targets hold {} ids, not {t}", dates::TGT_LEN)));
    }
    dates::batch(rng, b, validation)
}

/// B random windows of t + 1 tokens: inputs the first t, targets the last t.
fn windows(s: &[u32], rng: &mut Rng, b: usize, t: usize) -> Batch {
    let (mut ids, mut targets) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
    let starts = (s.len() - t) as u32;
    for _ in 0..b {
        let at = rng.below(starts) as usize;
        ids.extend_from_slice(&s[at..at + t]);
        targets.extend_from_slice(&s[at + 1..at + t + 1]);
    }
    Batch { b, t, ids, targets, ..Batch::default() }
}

/// B rows of t + 1 tokens: a random segment of 3 to (t + 1) / 2 tokens (its length drawn per
/// row), repeated until the row is full. Every token after the first period is predictable only
/// by finding the last occurrence of the token before it and copying what followed: the period
/// varies per row, so no fixed position holds the answer. Measured on the 2-layer attention-only
/// model (the lab's preset: d 64, 4 heads, context 32, vocabulary 64, batch 32, lr 1e-3, untied
/// head) with `tinyformer train`: a previous-token head forms in layer 0 and an induction head in
/// layer 1 (Inspect score >= 0.4 by step 1,500 in 3 of 3 seeds; 0.37-0.38 at step 600). A
/// shortest period of 8 gave no head; a higher lr (2e-3) learns to copy by position instead. Two
/// earlier forms taught shortcuts: a segment repeated once right after itself (a layer-0 head
/// copies from a fixed distance back), and a segment copied once to a random later place among
/// noise (too sparse a signal: no head in 2,000 steps).
fn induction(vocab: u32, rng: &mut Rng, b: usize, t: usize) -> Batch {
    let (mut ids, mut targets) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
    let longest = ((t + 1) / 2).max(3) as u32;
    for _ in 0..b {
        let period = 3 + rng.below(longest - 2) as usize;
        let seg: Vec<u32> = (0..period).map(|_| rng.below(vocab)).collect();
        let row: Vec<u32> = seg.iter().cycle().take(t + 1).copied().collect();
        ids.extend_from_slice(&row[..t]);
        targets.extend_from_slice(&row[1..]);
    }
    Batch { b, t, ids, targets, ..Batch::default() }
}
