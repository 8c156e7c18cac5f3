//! Look inside (issue 14): the logit lens, head detectors, residual norms, attention entropy,
//! per-token surprise, and head ablation, for every architecture (the encoder-decoder on its decoder).
//!
//! Where the work runs: the forward pass, the lens (final norm + unembedding of every block's
//! residual at every position) and the captures run on the model's backend, in the same pass, through
//! `Hooks` that `transformer.rs` calls at three points of each block. The captures are copies made by
//! a matmul with an identity matrix (exact: every product is x*1 or x*0), so no new Backend op is
//! needed. What is O(positions) or O(heads*positions^2) per layer (softmax + top-5 of the lens rows,
//! norms, entropies, head scores, surprise, KL) is computed on the CPU from the read-back lens logits,
//! residuals and attention maps; the read-back is the size of those results.

use serde::Serialize;

use crate::error::{Result, TfError};
use crate::model::backend::Backend;
use crate::model::config::Arch;
use crate::model::run::BOS_ID;
use crate::model::transformer::{Logits, Model};
use crate::ops::EwOp;
use crate::rng::Rng;

/// Ablation buffers of one decoder layer: att = att * keep + add, before W_o. Each (max_seq, NH*HS).
pub struct LayerAblation<T> {
    pub keep: T,
    pub add: T,
}

/// What the inspection pass captures (rows = the pass's T tokens, from position 0).
pub struct Capture<T> {
    pub t: usize,
    eye_c: T,
    eye_a: T,
    /// (1 + L, T, C): the residual after the embedding and after each block
    resid: T,
    /// (L, T, V): the lens after each block and after each attention half
    lens: T,
    lens_mid: T,
    /// (L, T, NH*HS): every head's output before W_o (before any ablation)
    att: T,
}

/// Hook state of a model: none by default (the hooks then cost one branch per block).
pub struct Hooks<T> {
    /// per decoder layer (empty = no ablation)
    pub ablate: Vec<Option<LayerAblation<T>>>,
    /// per decoder layer of a MoE model: (max_seq, E) added to the router logits (-1e9 on removed experts)
    pub router: Vec<Option<T>>,
    pub capture: Option<Capture<T>>,
    /// (query, key) cells blocked on top of the decoder self-attention mask (causal for
    /// decoder-only models, look-ahead + padding for the encoder-decoder's decoder)
    pub mask_cells: Vec<(usize, usize)>,
    /// (query, key) cells blocked on top of the encoder-decoder's cross mask (source padding)
    pub cross_cells: Vec<(usize, usize)>,
    /// (max_seq, max_seq): the explicit self-attention mask of a decoder-only model with blocked cells
    pub mask: Option<T>,
}

impl<T> Default for Hooks<T> {
    fn default() -> Self {
        Hooks { ablate: vec![], router: vec![], capture: None, mask_cells: vec![], cross_cells: vec![], mask: None }
    }
}

/// Where in a block a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    /// after the embedding (and positional encoding)
    Embed,
    /// after the attention half of block l (pre-norm: the residual add; post-norm: its norm)
    Mid(usize),
    /// after block l
    Block(usize),
}

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

fn lens_layers(raw: &[f32], layers: usize, t: usize, v: usize) -> Vec<LensLayer> {
    (0..layers)
        .map(|l| {
            let (mut ids, mut probs) = (vec![], vec![]);
            for p in 0..t {
                let o = (l * t + p) * v;
                let (i, pr) = top_k(&raw[o..o + v], 5);
                ids.push(i);
                probs.push(pr);
            }
            LensLayer { layer: l, top_ids: ids, top_probs: probs }
        })
        .collect()
}

fn identity(n: usize) -> Vec<f32> {
    let mut m = vec![0f32; n * n];
    (0..n).for_each(|i| m[i * n + i] = 1.0);
    m
}

// ------------------------------------------------------------------------------------------------
// Hooks (called by transformer.rs) and the inspection pass
// ------------------------------------------------------------------------------------------------

impl<B: Backend> Model<B> {
    /// Called after the attention of decoder layer `layer` wrote every head's output into `att`
    /// (T rows at positions pos..): captures it (inspection pass) and applies the ablation.
    pub(crate) fn hook_heads(&self, b: &mut B, layer: usize, att: &B::T, t: usize, pos: usize) -> Result<()> {
        let a = self.cfg.num_heads * self.cfg.head_dim();
        if let Some(c) = &self.hooks.capture {
            if pos == 0 && t == c.t {
                b.matmul(&c.att, layer * t * a, att, 0, t, &c.eye_a, None)?;
            }
        }
        if let Some(Some(ab)) = self.hooks.ablate.get(layer) {
            b.inplace(att, Some(&ab.keep), t * a, EwOp::Mul)?;
            b.inplace(att, Some(&ab.add), t * a, EwOp::Add)?;
        }
        Ok(())
    }

    /// Called with the residual stream `x` (T rows from position `pos`) at `at`; `xn` is scratch.
    /// Captures the residual stream and its logit lens at `at`. Returns whether `xn` was used as the
    /// lens's scratch (the caller norms it again where it holds a sublayer's input).
    pub(crate) fn hook_resid(&self, b: &mut B, at: HookPoint, x: &B::T, xn: &B::T, t: usize, pos: usize) -> Result<bool> {
        let Some(c) = &self.hooks.capture else { return Ok(false) };
        if pos != 0 || t != c.t {
            return Ok(false);
        }
        let (d, v) = (self.cfg.d_model, self.in_vocab());
        let (lens, l) = match at {
            HookPoint::Embed => return b.matmul(&c.resid, 0, x, 0, t, &c.eye_c, None).map(|()| false),
            HookPoint::Mid(l) => (&c.lens_mid, l),
            HookPoint::Block(l) => {
                b.matmul(&c.resid, (l + 1) * t * d, x, 0, t, &c.eye_c, None)?;
                (&c.lens, l)
            }
        };
        // the lens: the final norm (pre-norm stacks; the post-norm decoder ends on a norm already)
        // and the unembedding, exactly as the model's own head
        let (hw, hb) = self.weights.head();
        match &self.weights.final_norm {
            Some(n) => {
                match &n.b {
                    Some(beta) => b.layernorm(xn, x, &n.w, beta, t, n.eps)?,
                    None => b.rmsnorm(xn, x, &n.w, t, n.eps)?,
                }
                b.matmul(lens, l * t * v, xn, 0, t, hw, hb)?;
                Ok(true)
            }
            None => b.matmul(lens, l * t * v, x, 0, t, hw, hb).map(|()| false),
        }
    }

    fn start_capture(&mut self, b: &B, t: usize) -> Result<()> {
        self.free_capture(b);
        let (layers, d, v) = (self.cfg.num_layers, self.cfg.d_model, self.in_vocab());
        let a = self.cfg.num_heads * self.cfg.head_dim();
        self.hooks.capture = Some(Capture {
            t,
            eye_c: b.tensor(&[d, d], &identity(d), "inspect eye C")?,
            eye_a: b.tensor(&[a, a], &identity(a), "inspect eye A")?,
            resid: b.zeros(&[layers + 1, t, d], "inspect residuals")?,
            lens: b.zeros(&[layers, t, v], "inspect lens")?,
            lens_mid: b.zeros(&[layers, t, v], "inspect lens mid")?,
            att: b.zeros(&[layers, t, a], "inspect head outputs")?,
        });
        Ok(())
    }

    /// Drops the capture buffers (a GpuTensor destroys its buffer when it drops).
    fn free_capture(&mut self, _b: &B) {
        self.hooks.capture = None;
    }

    /// Removes any ablation (its buffers are freed as they drop).
    pub fn clear_ablation(&mut self, _b: &B) {
        self.hooks.ablate.clear();
        self.hooks.router.clear();
        self.hooks.mask = None;
        self.hooks.mask_cells.clear();
        self.hooks.cross_cells.clear();
    }

    /// Decoder-only models: the explicit self-attention mask of T rows at positions pos.. (causal,
    /// minus the blocked cells), written into the hook's buffer; None when no cell is blocked.
    pub(crate) fn hook_mask(&self, b: &mut B, t: usize, pos: usize) -> Result<Option<&B::T>> {
        let Some(m) = &self.hooks.mask else { return Ok(None) };
        let cells = &self.hooks.mask_cells;
        let mask = crate::mask::Mask::from_fn(t, pos + t, |i, j| j <= pos + i && !cells.contains(&(pos + i, j)));
        b.write_f32(m, 0, &mask.data)?;
        Ok(Some(m))
    }

    /// Called after the router logits (T rows, E columns) of decoder layer `layer` are computed:
    /// removed experts get -1e9, so softmax gives them 0 and top-k never picks them.
    pub(crate) fn hook_router(&self, b: &mut B, layer: usize, logits: &B::T, t: usize, e: usize) -> Result<()> {
        if let Some(Some(add)) = self.hooks.router.get(layer) {
            b.inplace(logits, Some(add), t * e, EwOp::Add)?;
        }
        Ok(())
    }

    /// Switches heads off for every following pass (generation included) until `clear_ablation`.
    /// Mean ablation needs `means[layer]` (NH*HS): every head's mean output over a sequence (see
    /// `Report`/`head_means`).
    pub fn set_ablation(&mut self, b: &B, ab: &Ablation, means: Option<&[Vec<f32>]>) -> Result<()> {
        let (layers, nh, hs) = (self.cfg.num_layers, self.cfg.num_heads, self.cfg.head_dim());
        let (a, s) = (nh * hs, self.cfg.max_seq_len);
        for &(l, h) in &ab.heads {
            if l >= layers || h >= nh {
                return Err(TfError::Input(format!(
                    "cannot ablate head {l}.{h}: the model has {layers} layers of {nh} heads (0.0 to {}.{})",
                    layers - 1,
                    nh - 1
                )));
            }
        }
        let (num_e, top_k) = self.cfg.moe.as_ref().map(|m| (m.num_experts, m.top_k)).unwrap_or((0, 0));
        for &(l, e) in &ab.experts {
            if num_e == 0 {
                return Err(TfError::Input("only mixture-of-experts models have experts to remove".into()));
            }
            if l >= layers || e >= num_e {
                return Err(TfError::Input(format!("cannot remove expert {l}.{e}: the model has {layers} layers of {num_e} experts")));
            }
        }
        for l in 0..layers {
            let n = ab.experts.iter().filter(|x| x.0 == l).count();
            if num_e > 0 && num_e.saturating_sub(n) < top_k {
                return Err(TfError::Input(format!(
                    "layer {l} would keep {} experts but routes every token to {top_k}",
                    num_e.saturating_sub(n)
                )));
            }
        }
        let encdec = self.cfg.arch == Arch::EncoderDecoder;
        for &(q, k) in &ab.mask_cells {
            if q >= s || k >= s {
                return Err(TfError::Input(format!(
                    "cannot block mask cell {q}.{k}: the model's context is {s} positions (0 to {})",
                    s - 1
                )));
            }
            if k > q {
                return Err(TfError::Input(format!("mask cell {q}.{k} is already blocked: query {q} never sees the later key {k}")));
            }
        }
        if !ab.cross_cells.is_empty() && !encdec {
            return Err(TfError::Input("only encoder_decoder models have a cross mask to block cells of".into()));
        }
        for &(q, k) in &ab.cross_cells {
            if q >= s || k >= s {
                return Err(TfError::Input(format!(
                    "cannot block cross cell {q}.{k}: the model's context is {s} positions (0 to {})",
                    s - 1
                )));
            }
        }
        if ab.heads.is_empty() && ab.experts.is_empty() && ab.mask_cells.is_empty() && ab.cross_cells.is_empty() {
            return Err(TfError::Input("nothing to ablate: choose a head, an expert or a mask cell".into()));
        }
        if ab.kind == AblationKind::Mean
            && !ab.heads.is_empty()
            && means.is_none_or(|m| m.len() != layers || m.iter().any(|r| r.len() != a))
        {
            return Err(TfError::Input("mean ablation needs every head's mean output".into()));
        }
        self.clear_ablation(b);
        let mut per = vec![];
        for l in 0..layers {
            let heads: Vec<usize> = ab.heads.iter().filter(|x| x.0 == l).map(|x| x.1).collect();
            if heads.is_empty() {
                per.push(None);
                continue;
            }
            let (mut keep, mut add) = (vec![1f32; a], vec![0f32; a]);
            for &h in &heads {
                for c in h * hs..(h + 1) * hs {
                    keep[c] = 0.0;
                    if let (AblationKind::Mean, Some(m)) = (ab.kind, means) {
                        add[c] = m[l][c];
                    }
                }
            }
            let (keep, add) = (keep.repeat(s), add.repeat(s));
            per.push(Some(LayerAblation {
                keep: b.tensor(&[s, a], &keep, "ablation keep")?,
                add: b.tensor(&[s, a], &add, "ablation add")?,
            }));
        }
        self.hooks.ablate = per;
        self.hooks.mask_cells = ab.mask_cells.clone();
        self.hooks.cross_cells = ab.cross_cells.clone();
        if !encdec && !ab.mask_cells.is_empty() {
            self.hooks.mask = Some(b.zeros(&[s, s], "blocked-cell mask")?);
        }
        if !ab.experts.is_empty() {
            self.hooks.router = (0..layers)
                .map(|l| {
                    let removed: Vec<usize> = ab.experts.iter().filter(|x| x.0 == l).map(|x| x.1).collect();
                    if removed.is_empty() {
                        return Ok(None);
                    }
                    let row: Vec<f32> = (0..num_e).map(|e| if removed.contains(&e) { -1e9 } else { 0.0 }).collect();
                    b.tensor(&[s, num_e], &row.repeat(s), "expert removal").map(Some)
                })
                .collect::<Result<_>>()?;
        }
        Ok(())
    }

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
            b.read_batch(&[
                (&self.state.logits, 0, t * v),
                (&c.resid, 0, (layers + 1) * t * d),
                (&c.lens, 0, layers * t * v),
                (&c.lens_mid, 0, layers * t * v),
                (&c.att, 0, layers * t * a),
            ])
            .await?
        };
        let f = |i: usize| -> Vec<f32> { bytemuck::cast_slice(&got[i]).to_vec() };
        let (logits, resid, lens, lens_mid, att) = (f(0), f(1), f(2), f(3), f(4));
        let maps: Vec<Vec<f32>> =
            self.read_attention(b, t, t, 0).await?.into_iter().filter(|m| m.kind == "decoder").map(|m| m.data).collect();
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
            logit_lens: lens_layers(&lens, layers, t, v),
            logit_lens_mid: lens_layers(&lens_mid, layers, t, v),
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
