//! Look inside: the logit lens, head detectors, residual norms, attention entropy,
//! per-token surprise, and head ablation, for every architecture (the encoder-decoder on its decoder).
//!
//! Where the work runs: the forward pass and the captures run on the model's backend, in the same
//! pass, through the hooks (analysis::hooks) that the forward calls at three points of each block:
//! the residual stream, every head's output and the lens's input (the final norm of each block's
//! residual). The captures are copies made by a matmul with an identity matrix (exact: every
//! product is x*1 or x*0), so no new Backend op is needed. The lens itself (the unembedding of
//! every captured row) runs after the pass on the same backend, a block of rows at a time
//! ([`LENS_BLOCK_BYTES`] of logits), each block read back and reduced to its top 5 before the next,
//! so a long prompt over a large vocabulary never holds (L, T, V). What is O(positions) or
//! O(heads*positions^2) per layer (softmax + top-5 of the lens rows, norms, entropies, head scores,
//! surprise, KL) is computed on the CPU from the read-back lens logits, residuals and attention
//! maps; the read-back is the size of those results.

use serde::Serialize;

use crate::error::{Result, TfError};
use crate::model::backend::Backend;
use crate::model::config::Arch;
use crate::model::forward::{Logits, Model};
use crate::model::map_kind::MapKind;
use crate::model::run::BOS_ID;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AblationKind {
    /// the head's output is zero before the output projection
    Zero,
    /// the head's output is replaced by its mean over the positions of the inspected sequence
    /// (computed on the un-ablated pass and then held fixed, also during generation)
    Mean,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ablation {
    /// (layer, head) pairs
    pub heads: Vec<(usize, usize)>,
    pub kind: AblationKind,
    /// (layer, expert) pairs removed from routing (MoE models): the router never picks them
    pub experts: Vec<(usize, usize)>,
    /// (query, key) cells of the decoder self-attention blocked on top of its mask: they get
    /// exactly zero probability (a row with no allowed key gives zeros)
    pub mask_cells: Vec<(usize, usize)>,
    /// (query, key) cells of the encoder-decoder's cross-attention blocked on top of its mask
    pub cross_cells: Vec<(usize, usize)>,
}

impl Ablation {
    /// Parses "L.H,L.H" (e.g. "0.1,1.0").
    pub fn parse(s: &str, kind: AblationKind) -> Result<Ablation> {
        let heads = parse_pairs(s, "--ablate", "LAYER.HEAD")?;
        if heads.is_empty() {
            return Err(TfError::Input("--ablate needs at least one LAYER.HEAD".into()));
        }
        Ok(Ablation::heads(heads, kind))
    }
}

/// "L.X,L.X" -> [(L, X)]
pub fn parse_pairs(s: &str, flag: &str, what: &str) -> Result<Vec<(usize, usize)>> {
    let mut out = vec![];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || TfError::Input(format!("{flag}: `{part}` is not {what} (e.g. 0.1)"));
        let (l, h) = part.split_once('.').ok_or_else(bad)?;
        out.push((l.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?));
    }
    Ok(out)
}

impl Ablation {
    pub fn heads(heads: Vec<(usize, usize)>, kind: AblationKind) -> Ablation {
        Ablation { heads, kind, experts: vec![], mask_cells: vec![], cross_cells: vec![] }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LensLayer {
    pub layer: usize,
    /// [position][5]
    pub top_ids: Vec<Vec<u32>>,
    pub top_probs: Vec<Vec<f32>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HeadScores {
    /// each [layer][head]
    pub previous_token: Vec<Vec<f32>>,
    pub duplicate_token: Vec<Vec<f32>>,
    pub induction: Vec<Vec<f32>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AblationOut {
    pub heads: Vec<(usize, usize)>,
    pub experts: Vec<(usize, usize)>,
    pub mask_cells: Vec<(usize, usize)>,
    pub cross_cells: Vec<(usize, usize)>,
    pub kind: AblationKind,
    /// the last row of logits after the ablation
    pub logits_last: Vec<f32>,
    /// KL(un-ablated || ablated) of the next-token distribution, nats
    pub kl_last: f64,
    pub top1_before: u32,
    pub top1_after: u32,
    pub top1_prob_before: f32,
    pub top1_prob_after: f32,
    /// loss (nats) of every token t >= 1 after the ablation ([0] = 0), like `surprise`
    pub surprise: Vec<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// the tokens inspected (the decoder's input for the encoder-decoder)
    pub ids: Vec<u32>,
    pub layers: usize,
    pub heads: usize,
    /// after each block
    pub logit_lens: Vec<LensLayer>,
    /// after the attention half of each block
    pub logit_lens_mid: Vec<LensLayer>,
    pub head_scores: HeadScores,
    /// [1 + layers][position]
    pub residual_norms: Vec<Vec<f32>>,
    /// [layer][head][position], nats
    pub attention_entropy: Vec<Vec<Vec<f32>>>,
    /// [position], nats; [0] = 0 (nothing predicts the first token)
    pub surprise: Vec<f32>,
    /// the model's own last row of logits (un-ablated)
    #[serde(skip)]
    pub logits_last_clean: Vec<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ablation: Option<AblationOut>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InductionTest {
    /// the random half; the sequence is it twice
    pub half: Vec<u32>,
    pub head_scores: HeadScores,
    /// mean loss (nats) of tokens 1..n (first half) and n..2n (second half)
    pub loss_first_half: f64,
    pub loss_second_half: f64,
    /// the heads ranked by induction score, best first: (layer, head, score)
    pub top_induction: Vec<(usize, usize, f32)>,
    /// with an ablation: the second-half loss after it
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_second_half_ablated: Option<f64>,
}

// ------------------------------------------------------------------------------------------------
// CPU math on read-back values
// ------------------------------------------------------------------------------------------------

/// log-softmax in f64
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// The k most likely ids of a logits row with their probabilities (ties: lower id first).
pub fn top_k(row: &[f32], k: usize) -> (Vec<u32>, Vec<f32>) {
    let lp = log_softmax(row);
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    let probs = idx.iter().map(|&i| lp[i as usize].exp() as f32).collect();
    (idx, probs)
}

/// KL(p || q) in nats from two logits rows.
pub fn kl_logits(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum::<f64>().max(0.0)
}

/// Per-token loss: [0] = 0, [t] = -log p(ids[t] | ids[..t]) from logits rows (T, V).
pub fn surprise(logits: &[f32], ids: &[u32], v: usize) -> Vec<f32> {
    let mut out = vec![0f32; ids.len()];
    for t in 1..ids.len() {
        out[t] = -log_softmax(&logits[(t - 1) * v..t * v])[ids[t] as usize] as f32;
    }
    out
}

/// The detection patterns of TransformerLens's head_detector.py, (T, T) row-major, query x key.
pub fn detection_pattern(kind: &str, ids: &[u32]) -> Vec<f32> {
    let t = ids.len();
    let mut d = vec![0f32; t * t];
    for i in 0..t {
        for j in 0..t {
            let on = match kind {
                "previous_token" => i >= 1 && j == i - 1,
                "duplicate_token" => j < i && ids[j] == ids[i],
                "induction" => j >= 1 && j <= i && ids[j - 1] == ids[i],
                _ => false,
            };
            d[i * t + j] = on as u8 as f32;
        }
    }
    d
}

/// score = sum(A * D) / sum(A) (the "mul" measure, no exclusions); A and D are (T, T).
pub fn head_score(a: &[f32], d: &[f32]) -> f32 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(d) {
        num += x as f64 * y as f64;
        den += x as f64;
    }
    if den == 0.0 {
        0.0
    } else {
        (num / den) as f32
    }
}

/// Shannon entropy (nats) of a probability row.
pub fn entropy(p: &[f32]) -> f32 {
    (-p.iter().filter(|&&x| x > 0.0).map(|&x| x as f64 * (x as f64).ln()).sum::<f64>()).max(0.0) as f32
}

/// Head scores from self-attention maps [layer] of (NH, T, T).
pub fn head_scores(maps: &[Vec<f32>], nh: usize, ids: &[u32]) -> HeadScores {
    let t = ids.len();
    let score = |kind: &str| -> Vec<Vec<f32>> {
        let d = detection_pattern(kind, ids);
        maps.iter().map(|m| (0..nh).map(|h| head_score(&m[h * t * t..(h + 1) * t * t], &d)).collect()).collect()
    };
    HeadScores { previous_token: score("previous_token"), duplicate_token: score("duplicate_token"), induction: score("induction") }
}

/// (layer, head, score) sorted by score, best first.
pub fn ranked(scores: &[Vec<f32>]) -> Vec<(usize, usize, f32)> {
    let mut v: Vec<_> = scores.iter().enumerate().flat_map(|(l, r)| r.iter().enumerate().map(move |(h, &s)| (l, h, s))).collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    v
}

/// The top-5 rows of the lens, [row][5] in the order (layer, position), as `LensLayer`s.
fn lens_layers(tops: Vec<(Vec<u32>, Vec<f32>)>, t: usize) -> Vec<LensLayer> {
    let mut rows = tops.into_iter();
    let mut out = vec![];
    for layer in 0.. {
        let (ids, probs): (Vec<_>, Vec<_>) = rows.by_ref().take(t).unzip();
        if ids.is_empty() || t == 0 {
            break;
        }
        out.push(LensLayer { layer, top_ids: ids, top_probs: probs });
    }
    out
}

/// The most bytes of lens logits computed and read back at once: the lens of a long prompt over a
/// large vocabulary (GPT-2 small: 12 x 1024 x 50257 f32, 2.5 GB per hook point) goes through a
/// (rows, V) block of at most this size, under WebGPU's default binding limit of 128 MiB (a
/// device with a lower one binds the block by rows, as it does the logits).
pub const LENS_BLOCK_BYTES: u64 = 32 << 20;

impl<B: Backend> Model<B> {
    /// Sizes the run state for the passes of an inspection over `ids` (and `tgt`): every layer's
    /// maps (the head scores read them all).
    fn plan_inspection(&mut self, b: &B, ids: &[u32], tgt: Option<&[u32]>) -> Result<()> {
        if self.cfg.arch == Arch::EncoderDecoder {
            self.plan_pass(b, Some(ids.len()), tgt.map_or(1, |t| t.len()), &crate::model::state::MapLayers::All)
        } else {
            self.plan_pass(b, None, ids.len(), &crate::model::state::MapLayers::All)
        }
    }

    /// One pass over `tokens` from position 0 (the source must be encoded already for the
    /// encoder-decoder).
    fn pass_all(&self, b: &mut B, tokens: &[u32]) -> Result<()> {
        if self.cfg.arch == Arch::EncoderDecoder {
            self.run_decoder(b, tokens, 0, Logits::All)
        } else {
            self.run_lm(b, tokens, 0, Logits::All)
        }
    }

    /// Inspects one sequence. Decoder / llama: `ids` are the tokens. Encoder-decoder: `ids` is the
    /// source and `tgt` the decoder input (default [BOS]); everything refers to the decoder.
    /// With `ablation`, the sequence is run again with those heads switched off (the model's own
    /// ablation, if any, is cleared).
    pub async fn inspect(&mut self, b: &mut B, ids: &[u32], tgt: Option<&[u32]>, ablation: Option<&Ablation>) -> Result<Report> {
        self.plan_inspection(b, ids, tgt)?;
        let tokens: Vec<u32> = if self.cfg.arch == Arch::EncoderDecoder {
            self.encode(b, ids)?;
            tgt.map(|t| t.to_vec()).unwrap_or_else(|| vec![BOS_ID])
        } else {
            if tgt.is_some() {
                return Err(TfError::Input(format!(
                    "--tgt-ids is only for encoder_decoder models; this one is {}",
                    self.cfg.arch.as_str()
                )));
            }
            ids.to_vec()
        };
        if tokens.is_empty() {
            return Err(TfError::Input("nothing to inspect: give at least one token".into()));
        }
        self.check_ids(&tokens, self.in_vocab(), "input")?;
        if tokens.len() > self.cfg.max_seq_len {
            return Err(TfError::Input(format!("{} tokens do not fit the model's context of {}", tokens.len(), self.cfg.max_seq_len)));
        }
        self.clear_ablation(b);
        let r = self.inspect_inner(b, &tokens, ablation).await;
        self.free_capture(b);
        if r.is_err() {
            self.clear_ablation(b);
        }
        r
    }

    async fn inspect_inner(&mut self, b: &mut B, tokens: &[u32], ablation: Option<&Ablation>) -> Result<Report> {
        let t = tokens.len();
        let (layers, nh, d, v) = (self.cfg.num_layers, self.cfg.num_heads, self.cfg.d_model, self.in_vocab());
        let a = nh * self.cfg.head_dim();
        self.start_capture(b, t)?;
        self.pass_all(b, tokens)?;
        b.submit()?;
        let got = {
            let c = self.hooks.capture.as_ref().expect("capture set above");
            b.read_batch(&[(&self.state.logits, 0, t * v), (&c.resid, 0, (layers + 1) * t * d), (&c.att, 0, layers * t * a)]).await?
        };
        let f = |i: usize| -> Vec<f32> { bytemuck::cast_slice(&got[i]).to_vec() };
        let (logits, resid, att) = (f(0), f(1), f(2));
        let lens = self.lens_tops(b, t, false).await?;
        let lens_mid = self.lens_tops(b, t, true).await?;
        let maps: Vec<Vec<f32>> =
            self.read_attention(b, t, t, 0).await?.into_iter().filter(|m| m.kind == MapKind::Decoder).map(|m| m.data).collect();
        self.free_capture(b);

        let residual_norms = (0..=layers)
            .map(|l| {
                (0..t)
                    .map(|p| resid[(l * t + p) * d..(l * t + p + 1) * d].iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt() as f32)
                    .collect()
            })
            .collect();
        let attention_entropy = maps
            .iter()
            .map(|m| (0..nh).map(|h| (0..t).map(|q| entropy(&m[(h * t + q) * t..(h * t + q + 1) * t])).collect()).collect())
            .collect();
        let logits_last_clean = logits[(t - 1) * v..].to_vec();
        let mut report = Report {
            ids: tokens.to_vec(),
            layers,
            heads: nh,
            logit_lens: lens_layers(lens, t),
            logit_lens_mid: lens_layers(lens_mid, t),
            head_scores: head_scores(&maps, nh, tokens),
            residual_norms,
            attention_entropy,
            surprise: surprise(&logits, tokens, v),
            logits_last_clean,
            ablation: None,
        };
        if let Some(ab) = ablation {
            // every head's mean output over the sequence, for mean ablation
            let means: Vec<Vec<f32>> = (0..layers)
                .map(|l| (0..a).map(|c| ((0..t).map(|p| att[(l * t + p) * a + c] as f64).sum::<f64>() / t as f64) as f32).collect())
                .collect();
            self.set_ablation(b, ab, Some(&means))?;
            self.pass_all(b, tokens)?;
            b.submit()?;
            let ablated = b.read_f32(&self.state.logits, 0, t * v).await?;
            self.clear_ablation(b);
            let last = ablated[(t - 1) * v..].to_vec();
            let (before, pb) = top_k(&report.logits_last_clean, 1);
            let (after, pa) = top_k(&last, 1);
            report.ablation = Some(AblationOut {
                heads: ab.heads.clone(),
                experts: ab.experts.clone(),
                mask_cells: ab.mask_cells.clone(),
                cross_cells: ab.cross_cells.clone(),
                kind: ab.kind,
                kl_last: kl_logits(&report.logits_last_clean, &last),
                top1_before: before[0],
                top1_after: after[0],
                top1_prob_before: pb[0],
                top1_prob_after: pa[0],
                surprise: surprise(&ablated, tokens, v),
                logits_last: last,
            });
        }
        Ok(report)
    }

    /// The logit lens of the captured pass (`mid`: after each attention half, else after each
    /// block): the head applied to the captured (L, T, C) inputs a block of rows at a time (at most
    /// [`LENS_BLOCK_BYTES`] of logits), each block read back and reduced to its rows' top 5 before
    /// the next; (top ids, their probabilities) per row in the order (layer, position). Each
    /// layer's T rows are one matmul of T rows, as the model's own head over the pass (so the last
    /// layer's lens is its output to the bit), or, where T rows are over the block, near-equal
    /// parts of at most a block's rows.
    async fn lens_tops(&self, b: &mut B, t: usize, mid: bool) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
        let c = self.hooks.capture.as_ref().ok_or_else(|| TfError::Input("no inspection pass was captured".into()))?;
        let (layers, d, v) = (self.cfg.num_layers, self.cfg.d_model, self.in_vocab());
        let src = if mid { &c.lens_mid_in } else { &c.lens_in };
        let cap = ((LENS_BLOCK_BYTES / (v.max(1) as u64 * 4)).max(1) as usize).max(1);
        let parts = t.div_ceil(cap).max(1);
        // (first row, rows) of each matmul, in the order of the rows
        let pieces: Vec<(usize, usize)> =
            (0..layers).flat_map(|l| (0..parts).map(move |i| (l * t + i * t / parts, (i + 1) * t / parts - i * t / parts))).collect();
        let per = if parts > 1 { t.div_ceil(parts) } else { (cap / t.max(1)).max(1) * t }.min(layers * t).max(1);
        let block = b.zeros_rows(&[per, v], "inspect lens block")?;
        let (hw, hb) = self.weights.head();
        let mut tops = Vec::with_capacity(layers * t);
        let mut i = 0;
        while i < pieces.len() {
            let mut rows = 0;
            while i < pieces.len() && rows + pieces[i].1 <= per {
                let (first, n) = pieces[i];
                b.matmul(&block, rows * v, src, first * d, n, hw, hb)?;
                rows += n;
                i += 1;
            }
            b.submit()?;
            let raw = b.read_f32(&block, 0, rows * v).await?;
            tops.extend(raw.chunks(v).map(|row| top_k(row, 5)));
        }
        Ok(tops)
    }

    /// Every head's mean output (NH*HS per layer) over `tokens`, for mean ablation in generation.
    pub async fn head_means(&mut self, b: &mut B, ids: &[u32], tgt: Option<&[u32]>) -> Result<Vec<Vec<f32>>> {
        self.plan_inspection(b, ids, tgt)?;
        let tokens: Vec<u32> = if self.cfg.arch == Arch::EncoderDecoder {
            self.encode(b, ids)?;
            tgt.map(|t| t.to_vec()).unwrap_or_else(|| vec![BOS_ID])
        } else {
            ids.to_vec()
        };
        self.check_ids(&tokens, self.in_vocab(), "input")?;
        let t = tokens.len();
        let layers = self.cfg.num_layers;
        let a = self.cfg.num_heads * self.cfg.head_dim();
        self.clear_ablation(b);
        self.start_capture(b, t)?;
        let r = async {
            self.pass_all(b, &tokens)?;
            b.submit()?;
            let c = self.hooks.capture.as_ref().expect("capture set above");
            b.read_f32(&c.att, 0, layers * t * a).await
        }
        .await;
        self.free_capture(b);
        let att = r?;
        Ok((0..layers)
            .map(|l| (0..a).map(|c| ((0..t).map(|p| att[(l * t + p) * a + c] as f64).sum::<f64>() / t as f64) as f32).collect())
            .collect())
    }

    /// The standard induction test: `n` random tokens (ids 3.. to skip PAD/BOS/EOS where the
    /// vocabulary allows) repeated twice. Head scores on that sequence, and the mean loss of the
    /// first half (tokens 1..n) and of the second half (n..2n). For the encoder-decoder `src` is
    /// the source (default [BOS]).
    pub async fn induction_test(
        &mut self,
        b: &mut B,
        n: usize,
        seed: u64,
        src: Option<&[u32]>,
        ablation: Option<&Ablation>,
    ) -> Result<InductionTest> {
        let v = self.in_vocab() as u32;
        if n < 2 || 2 * n > self.cfg.max_seq_len {
            return Err(TfError::Input(format!("the induction test needs 2 <= n and 2n <= the context ({})", self.cfg.max_seq_len)));
        }
        let lo = if v > 8 { 3 } else { 0 };
        let mut rng = Rng::new(seed);
        let half: Vec<u32> = (0..n).map(|_| lo + rng.below(v - lo)).collect();
        let seq = [half.clone(), half.clone()].concat();
        let bos = [BOS_ID];
        let (ids, tgt) = if self.cfg.arch == Arch::EncoderDecoder { (src.unwrap_or(&bos), Some(&seq[..])) } else { (&seq[..], None) };
        let r = self.inspect(b, ids, tgt, ablation).await?;
        let mean = |s: &[f32]| s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
        Ok(InductionTest {
            top_induction: ranked(&r.head_scores.induction),
            loss_first_half: mean(&r.surprise[1..n]),
            loss_second_half: mean(&r.surprise[n..]),
            loss_second_half_ablated: r.ablation.as_ref().map(|a| mean(&a.surprise[n..])),
            head_scores: r.head_scores,
            half,
        })
    }
}
