//! What callers use: a full forward pass with every attention map and mask, step-by-step
//! generation (one submission and a 4-byte readback per token), and evaluation loss.

use serde::Serialize;

use crate::cpu::{self, SampleParams};
use crate::error::{Result, TfError};
use crate::mask::{self, Mask};
use crate::model::backend::Backend;
use crate::model::config::Arch;
use crate::model::transformer::{Logits, Model};
use crate::rng::step_uniform;

pub const BOS_ID: u32 = 1;
pub const EOS_ID: u32 = 2;

/// One attention tensor: (heads, rows, cols) probabilities, rows = queries, cols = keys.
#[derive(Clone, Debug, Serialize)]
pub struct AttnMap {
    /// "encoder" | "decoder" | "cross"
    pub kind: &'static str,
    pub layer: usize,
    pub heads: usize,
    pub rows: usize,
    pub cols: usize,
    /// absolute position of the first query row (the cached length when the map was made)
    pub row_offset: usize,
    #[serde(skip)]
    pub data: Vec<f32>,
}

impl AttnMap {
    /// [head][query][key]
    pub fn nested(&self) -> Vec<Vec<Vec<f32>>> {
        self.data.chunks(self.rows * self.cols).map(|h| h.chunks(self.cols).map(|r| r.to_vec()).collect()).collect()
    }
}

/// Where each token went in one MoE layer.
#[derive(Clone, Debug, Serialize)]
pub struct MoeRecord {
    pub layer: usize,
    /// (T, E) router probabilities
    pub router_probs: Vec<Vec<f32>>,
    /// (T, K) chosen experts, their renormalised weights, and whether capacity kept them
    pub experts: Vec<Vec<u32>>,
    pub weights: Vec<Vec<f32>>,
    pub kept: Vec<Vec<u32>>,
}

pub struct ForwardOut {
    /// (rows, vocab)
    pub logits: Vec<f32>,
    pub rows: usize,
    pub vocab: usize,
    pub attention: Vec<AttnMap>,
    /// ("encoder" | "decoder" | "cross", mask with 1 = may attend)
    pub masks: Vec<(&'static str, Mask)>,
    pub moe: Vec<MoeRecord>,
}

fn rows<T: Copy>(v: &[T], cols: usize) -> Vec<Vec<T>> {
    v.chunks(cols.max(1)).map(|r| r.to_vec()).collect()
}

impl<B: Backend> Model<B> {
    async fn read_map(
        &self,
        b: &mut B,
        t: &B::T,
        kind: &'static str,
        layer: usize,
        rows: usize,
        cols: usize,
        row_offset: usize,
    ) -> Result<AttnMap> {
        let heads = self.cfg.num_heads;
        let data = b.read_f32(t, 0, heads * rows * cols).await?;
        Ok(AttnMap { kind, layer, heads, rows, cols, row_offset, data })
    }

    /// Attention maps of the last pass: `t` query rows over `tk` keys (cross: over the source).
    pub async fn read_attention(&self, b: &mut B, t: usize, tk: usize, row_offset: usize) -> Result<Vec<AttnMap>> {
        let mut out = Vec::new();
        if row_offset == 0 {
            if let Some(enc) = (self.cfg.arch == Arch::EncoderDecoder).then_some(&self.st.enc_layers) {
                let ts = self.src.len();
                for (i, ls) in enc.iter().enumerate() {
                    out.push(self.read_map(b, &ls.probs, "encoder", i, ts, ts, 0).await?);
                }
            }
        }
        for (i, ls) in self.st.layers.iter().enumerate() {
            out.push(self.read_map(b, &ls.probs, "decoder", i, t, tk, row_offset).await?);
            if let Some(cp) = &ls.cross_probs {
                out.push(self.read_map(b, cp, "cross", i, t, self.src.len(), row_offset).await?);
            }
        }
        Ok(out)
    }

    async fn read_moe(&self, b: &mut B, t: usize) -> Result<Vec<MoeRecord>> {
        let Some(m) = self.cfg.moe.clone() else { return Ok(vec![]) };
        let mut out = Vec::new();
        for (i, ls) in self.st.layers.iter().enumerate() {
            let Some(ms) = &ls.moe else { continue };
            out.push(MoeRecord {
                layer: i,
                router_probs: rows(&b.read_f32(&ms.probs, 0, t * m.num_experts).await?, m.num_experts),
                experts: rows(&b.read_u32(&ms.experts, 0, t * m.top_k).await?, m.top_k),
                weights: rows(&b.read_f32(&ms.weights, 0, t * m.top_k).await?, m.top_k),
                kept: rows(&b.read_u32(&ms.kept, 0, t * m.top_k).await?, m.top_k),
            });
        }
        Ok(out)
    }

    /// A full pass from position 0 (no cache reuse): logits of every row, every attention map,
    /// the masks, and MoE routing. For the encoder-decoder `ids` is the source and `tgt` the
    /// decoder input (default [BOS]).
    pub async fn forward(&mut self, b: &mut B, ids: &[u32], tgt: Option<&[u32]>) -> Result<ForwardOut> {
        let (t, tk, masks) = if self.cfg.arch == Arch::EncoderDecoder {
            let tgt = tgt.map(|t| t.to_vec()).unwrap_or_else(|| vec![BOS_ID]);
            self.encode(b, ids)?;
            self.run_decoder(b, &tgt, 0, Logits::All)?;
            let masks = vec![
                ("encoder", mask::padding(ids.len(), ids)),
                ("decoder", mask::decoder_self(&tgt)),
                ("cross", mask::padding(tgt.len(), ids)),
            ];
            (tgt.len(), tgt.len(), masks)
        } else {
            if tgt.is_some() {
                return Err(TfError::Input(format!(
                    "--tgt-ids is only for encoder_decoder models; this one is {}",
                    self.cfg.arch.as_str()
                )));
            }
            self.run_lm(b, ids, 0, Logits::All)?;
            (ids.len(), ids.len(), vec![("decoder", mask::kv_cache(0, ids.len()))])
        };
        b.submit()?;
        let vocab = self.out_vocab();
        let logits = b.read_f32(&self.st.logits, 0, t * vocab).await?;
        let attention = self.read_attention(b, t, tk, 0).await?;
        let moe = self.read_moe(b, t).await?;
        Ok(ForwardOut { logits, rows: t, vocab, attention, masks, moe })
    }

    /// Mean cross-entropy (nats per token) of predicting ids[1..] from ids[..], in windows of the
    /// context length (each window after the first starts where the last one's targets ended).
    pub async fn eval_loss(&mut self, b: &mut B, ids: &[u32]) -> Result<(f64, usize)> {
        if self.cfg.arch == Arch::EncoderDecoder {
            return Err(TfError::Input("eval works on decoder and llama models (language models)".into()));
        }
        if ids.len() < 2 {
            return Err(TfError::Input("eval needs a text of at least two tokens".into()));
        }
        let v = self.out_vocab();
        let ctx = self.cfg.max_seq_len;
        let (mut total, mut n) = (0f64, 0usize);
        let mut start = 0;
        while start + 1 < ids.len() {
            let end = (start + ctx).min(ids.len());
            let win = &ids[start..end];
            self.run_lm(b, win, 0, Logits::All)?;
            b.submit()?;
            let logits = b.read_f32(&self.st.logits, 0, win.len() * v).await?;
            for (i, &target) in win[1..].iter().enumerate() {
                let row = &logits[i * v..(i + 1) * v];
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
                total += lse - row[target as usize] as f64;
                n += 1;
            }
            start = end - 1;
        }
        Ok((total / n as f64, n))
    }
}

#[derive(Clone, Debug)]
pub struct GenConfig {
    pub max_new_tokens: usize,
    pub sample: SampleParams,
    pub seed: u64,
    pub kv_cache: bool,
    /// sample on the GPU and read back 4 bytes (true), or read the logits back and sample on the CPU
    pub gpu_sampling: bool,
    /// read back the attention rows of every step
    pub attention: bool,
    /// also read the logits back and report the 10 most likely next tokens
    pub top: usize,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            max_new_tokens: 32,
            sample: SampleParams::greedy(),
            seed: 0,
            kv_cache: true,
            gpu_sampling: true,
            attention: false,
            top: 0,
        }
    }
}

/// A generation in progress: the ids so far (start included) and how many are in the KV cache.
pub struct Generation {
    pub ids: Vec<u32>,
    pub start_len: usize,
    pub cached: usize,
    pub step: u64,
    pub done: bool,
    pub cfg: GenConfig,
}

pub struct StepOut {
    pub id: u32,
    pub attention: Vec<AttnMap>,
    /// (id, probability) after temperature / top-k / top-p, most likely first
    pub top: Vec<(u32, f32)>,
}

/// Probabilities after temperature, top-k and top-p, as the sampler sees them (greedy: plain softmax).
pub fn candidate_probs(logits: &[f32], p: &SampleParams) -> Vec<f32> {
    let t = if p.is_greedy() { 1.0 } else { p.temperature };
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f32> = logits.iter().map(|&l| ((l - m) / t).exp()).collect();
    if !p.is_greedy() && p.top_k > 0 && (p.top_k as usize) < logits.len() {
        let mut sorted = logits.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[p.top_k as usize - 1];
        for (pr, &l) in probs.iter_mut().zip(logits) {
            if l < kth {
                *pr = 0.0;
            }
        }
    }
    let z: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= z);
    if !p.is_greedy() && p.top_p < 1.0 {
        let mut sorted = probs.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let (mut acc, mut tau) = (0f32, 0f32);
        for &x in &sorted {
            acc += x;
            tau = x;
            if acc >= p.top_p {
                break;
            }
        }
        probs.iter_mut().for_each(|x| {
            if *x < tau {
                *x = 0.0
            }
        });
        let z: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= z);
    }
    probs
}

impl<B: Backend> Model<B> {
    /// Starts a generation. Decoder / llama: `start` is the prompt. Encoder-decoder: `src` is
    /// encoded once and `start` is the decoder's start (default [BOS]). Checks the context first.
    pub fn start_generation(&mut self, b: &mut B, start: &[u32], src: Option<&[u32]>, cfg: GenConfig) -> Result<Generation> {
        let start = if self.cfg.arch == Arch::EncoderDecoder {
            let src = src.ok_or_else(|| TfError::Input("an encoder_decoder model needs a source (--src-ids or --prompt)".into()))?;
            self.encode(b, src)?;
            if start.is_empty() {
                vec![BOS_ID]
            } else {
                start.to_vec()
            }
        } else {
            if src.is_some() {
                return Err(TfError::Input(format!("a source is only for encoder_decoder models; this one is {}", self.cfg.arch.as_str())));
            }
            start.to_vec()
        };
        if start.is_empty() {
            return Err(TfError::Input("the prompt is empty: give at least one token".into()));
        }
        self.check_ids(&start, self.in_vocab(), "prompt")?;
        let ctx = self.cfg.max_seq_len;
        if start.len() > ctx {
            return Err(TfError::Input(format!("the prompt has {} tokens but the model's context is {ctx}", start.len())));
        }
        let cfg = GenConfig { max_new_tokens: cfg.max_new_tokens.min(ctx - start.len()), ..cfg };
        Ok(Generation { start_len: start.len(), ids: start, cached: 0, step: 0, done: false, cfg })
    }

    /// Produces the next token, or None when the generation is over (max tokens, context full, EOS).
    pub async fn next_token(&mut self, b: &mut B, g: &mut Generation) -> Result<Option<StepOut>> {
        if g.done || g.ids.len() - g.start_len >= g.cfg.max_new_tokens || g.ids.len() >= self.cfg.max_seq_len {
            g.done = true;
            return Ok(None);
        }
        let pos = if g.cfg.kv_cache { g.cached } else { 0 };
        let t = g.ids.len() - pos;
        if self.cfg.arch == Arch::EncoderDecoder {
            self.run_decoder(b, &g.ids, pos, Logits::Last)?;
        } else {
            self.run_lm(b, &g.ids[pos..], pos, Logits::Last)?;
        }
        let u = step_uniform(g.cfg.seed, g.step);
        let v = self.out_vocab();
        let mut top = Vec::new();
        let id = if g.cfg.gpu_sampling && g.cfg.top == 0 {
            // the pass, the sampler and the 4-byte copy go out in one submission (read flushes)
            b.sample(&self.st.next, &self.st.logits, 0, &g.cfg.sample, u)?;
            b.read_u32(&self.st.next, 0, 1).await?[0]
        } else {
            b.submit()?;
            let logits = b.read_f32(&self.st.logits, 0, v).await?;
            if g.cfg.top > 0 {
                let probs = candidate_probs(&logits, &g.cfg.sample);
                let mut idx: Vec<u32> = (0..v as u32).collect();
                idx.sort_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]).then(a.cmp(&b)));
                top = idx.into_iter().take(g.cfg.top).map(|i| (i, probs[i as usize])).collect();
            }
            cpu::sample(&logits, &g.cfg.sample, u)
        };
        let attention = if g.cfg.attention { self.read_attention(b, t, pos + t, pos).await? } else { vec![] };
        if g.cfg.kv_cache {
            g.cached = g.ids.len();
        }
        g.ids.push(id);
        g.step += 1;
        if self.cfg.arch == Arch::EncoderDecoder && id == EOS_ID {
            g.done = true;
        }
        Ok(Some(StepOut { id, attention, top }))
    }

    /// Runs a generation to the end.
    pub async fn generate(&mut self, b: &mut B, start: &[u32], src: Option<&[u32]>, cfg: GenConfig) -> Result<Vec<u32>> {
        let mut g = self.start_generation(b, start, src, cfg)?;
        while self.next_token(b, &mut g).await?.is_some() {}
        Ok(g.ids)
    }
}
