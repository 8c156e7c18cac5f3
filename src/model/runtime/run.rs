//! What callers use: a full forward pass with every attention map and mask, step-by-step
//! generation (one submission and an 8-byte readback per token: the id and the count of NaN/Inf logits), and evaluation loss.

use serde::Serialize;

use crate::cpu;
use crate::error::{Result, TfError};
use crate::mask::{self, Mask};
use crate::model::backend::Backend;
use crate::model::config::Arch;
use crate::model::forward::{Logits, Model};
use crate::model::map_kind::MapKind;
use crate::model::state::{MapLayers, Plan};
use crate::ops::SampleParams;
use crate::rng::step_uniform;

pub const BOS_ID: u32 = 1;
pub const EOS_ID: u32 = 2;

/// One attention tensor: (heads, rows, cols) probabilities, rows = queries, cols = keys.
#[derive(Clone, Debug, Serialize)]
pub struct AttnMap {
    pub kind: MapKind,
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
    /// (the attention it masks, mask with 1 = may attend)
    pub masks: Vec<(MapKind, Mask)>,
    pub moe: Vec<MoeRecord>,
}

fn rows<T: Copy>(v: &[T], cols: usize) -> Vec<Vec<T>> {
    v.chunks(cols.max(1)).map(|r| r.to_vec()).collect()
}

impl<B: Backend> Model<B> {
    /// The (tensor, kind, layer, rows, cols) of every attention map the last pass kept (the layers
    /// of the run state's plan): `t` query rows over `tk` keys (cross: over the source); encoder
    /// maps only for a pass from position 0.
    pub(crate) fn map_specs(&self, t: usize, tk: usize, row_offset: usize) -> Vec<(&B::T, MapKind, usize, usize, usize)> {
        let mut specs = Vec::new();
        let maps = &self.state.maps;
        if row_offset == 0 && self.cfg.arch == Arch::EncoderDecoder {
            let ts = self.src.len();
            for (i, m) in maps.encoder.iter().enumerate() {
                if let Some(m) = m {
                    specs.push((m, MapKind::Encoder, i, ts, ts));
                }
            }
        }
        for (i, m) in maps.decoder.iter().enumerate() {
            if let Some(m) = m {
                specs.push((m, MapKind::Decoder, i, t, tk));
            }
            if let Some(Some(cp)) = maps.cross.get(i) {
                specs.push((cp, MapKind::Cross, i, t, self.src.len()));
            }
        }
        specs
    }

    /// Reads `extra` and every attention map of the last pass in one submission and one map.
    async fn read_with_maps(
        &self,
        b: &mut B,
        extra: &[(&B::T, usize, usize)],
        t: usize,
        tk: usize,
        row_offset: usize,
    ) -> Result<(Vec<Vec<u32>>, Vec<AttnMap>)> {
        let heads = self.cfg.num_heads;
        let specs = self.map_specs(t, tk, row_offset);
        let mut reqs: Vec<(&B::T, usize, usize)> = extra.to_vec();
        reqs.extend(specs.iter().map(|(tensor, _, _, r, c)| (*tensor, 0, heads * r * c)));
        let mut got = b.read_batch(&reqs).await?;
        let maps_raw = got.split_off(extra.len());
        let maps = specs
            .iter()
            .zip(maps_raw)
            .map(|((_, kind, layer, rows, cols), raw)| AttnMap {
                kind: *kind,
                layer: *layer,
                heads,
                rows: *rows,
                cols: *cols,
                row_offset,
                data: bytemuck::cast_vec(raw),
            })
            .collect();
        Ok((got, maps))
    }

    /// Attention maps of the last pass: `t` query rows over `tk` keys (cross: over the source).
    pub async fn read_attention(&self, b: &mut B, t: usize, tk: usize, row_offset: usize) -> Result<Vec<AttnMap>> {
        Ok(self.read_with_maps(b, &[], t, tk, row_offset).await?.1)
    }

    async fn read_moe(&self, b: &mut B, t: usize) -> Result<Vec<MoeRecord>> {
        let reqs = self.moe_requests(t);
        let got = b.read_batch(&reqs).await?;
        Ok(self.moe_records(&got))
    }

    /// The reads of the MoE routing of the last pass over `t` tokens: four per MoE layer.
    pub(crate) fn moe_requests(&self, t: usize) -> Vec<(&B::T, usize, usize)> {
        let Some(m) = self.cfg.moe.as_ref() else { return vec![] };
        let (e, k) = (m.num_experts, m.top_k);
        let layers = self.state.layers.iter().filter_map(|ls| ls.moe.as_ref());
        layers.flat_map(|ms| [(&ms.probs, 0, t * e), (&ms.experts, 0, t * k), (&ms.weights, 0, t * k), (&ms.kept, 0, t * k)]).collect()
    }

    /// [`Model::moe_requests`]' values as records.
    pub(crate) fn moe_records(&self, got: &[Vec<u32>]) -> Vec<MoeRecord> {
        let Some(m) = self.cfg.moe.as_ref() else { return vec![] };
        let (e, k) = (m.num_experts, m.top_k);
        let layers: Vec<usize> = self.state.layers.iter().enumerate().filter(|(_, ls)| ls.moe.is_some()).map(|(i, _)| i).collect();
        layers
            .iter()
            .zip(got.chunks(4))
            .map(|(i, g)| MoeRecord {
                layer: *i,
                router_probs: rows(bytemuck::cast_slice::<u32, f32>(&g[0]), e),
                experts: rows(&g[1], k),
                weights: rows(bytemuck::cast_slice::<u32, f32>(&g[2]), k),
                kept: rows(&g[3], k),
            })
            .collect()
    }

    /// A full pass from position 0 (no cache reuse): logits of every row, every attention map,
    /// the masks, and MoE routing. For the encoder-decoder `ids` is the source and `tgt` the
    /// decoder input (default [BOS]).
    pub async fn forward(&mut self, b: &mut B, ids: &[u32], tgt: Option<&[u32]>) -> Result<ForwardOut> {
        self.forward_with(b, ids, tgt, &MapLayers::All).await
    }

    /// [`Model::forward`] keeping and reading back the attention maps of `maps` only.
    pub async fn forward_with(&mut self, b: &mut B, ids: &[u32], tgt: Option<&[u32]>, maps: &MapLayers) -> Result<ForwardOut> {
        let (t, tk, masks) = if self.cfg.arch == Arch::EncoderDecoder {
            let tgt = tgt.map(|t| t.to_vec()).unwrap_or_else(|| vec![BOS_ID]);
            self.plan_pass(b, Some(ids.len()), tgt.len(), maps)?;
            self.encode(b, ids)?;
            self.run_decoder(b, &tgt, 0, Logits::All)?;
            let masks = vec![
                (MapKind::Encoder, mask::padding(ids.len(), ids)),
                (MapKind::Decoder, mask::decoder_self(&tgt)),
                (MapKind::Cross, mask::padding(tgt.len(), ids)),
            ];
            (tgt.len(), tgt.len(), masks)
        } else {
            if tgt.is_some() {
                return Err(TfError::Input(format!(
                    "--tgt-ids is only for encoder_decoder models; this one is {}",
                    self.cfg.arch.as_str()
                )));
            }
            self.plan_pass(b, None, ids.len(), maps)?;
            self.run_lm(b, ids, 0, Logits::All)?;
            (ids.len(), ids.len(), vec![(MapKind::Decoder, mask::kv_cache(0, ids.len()))])
        };
        b.submit()?;
        let vocab = self.in_vocab();
        let (mut got, attention) = self.read_with_maps(b, &[(&self.state.logits, 0, t * vocab)], t, tk, 0).await?;
        let logits: Vec<f32> = bytemuck::cast_vec(got.remove(0));
        if let Some(i) = logits.iter().position(|x| !x.is_finite()) {
            return Err(self.non_finite_error(b, t, 0, i / vocab.max(1)).await);
        }
        let moe = self.read_moe(b, t).await?;
        Ok(ForwardOut { logits, rows: t, vocab, attention, masks, moe })
    }

    /// The error for NaN/Inf logits after a pass over `t` tokens at `pos`. It names the first
    /// layer whose keys (rows pos..pos+t of its cache, written by this pass) are already non-finite:
    /// one extra read, on the error path only.
    /// A model whose weights hold NaN or Inf (it loads) gets a line that says so instead, naming
    /// the position `row` of the first non-finite row of logits.
    pub(crate) async fn non_finite_error(&self, b: &mut B, t: usize, pos: usize, row: usize) -> TfError {
        if let Some(w) = &self.non_finite_weights {
            return TfError::Numeric(format!(
                "the model's logits at position {row} are not finite (NaN or Inf): its weights hold NaN or infinite values ({w})"
            ));
        }
        let kv_width = self.cfg.num_kv_heads * self.cfg.head_dim();
        let n = self.state.layers.len();
        let reqs: Vec<(&B::T, usize, usize)> = self.state.layers.iter().map(|layer| (&layer.k, pos * kv_width, t * kv_width)).collect();
        let place = match b.read_batch(&reqs).await {
            Ok(rows) => match rows.iter().position(|r| r.iter().any(|&x| !f32::from_bits(x).is_finite())) {
                Some(l) => format!("they first appear in the attention keys of layer {l} (of {n})"),
                None => format!("the attention keys of all {n} layers are finite, so they appear after the last layer's attention (its feed-forward, the final norm or the output head)"),
            },
            Err(_) => "where they first appear could not be read".to_string(),
        };
        TfError::Numeric(format!(
            "the model produced non-finite values (NaN or Inf) instead of logits: {place}; its weights overflow f32 on this input"
        ))
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
        let v = self.in_vocab();
        let ctx = self.cfg.max_seq_len;
        if ctx < 2 {
            // a window must hold a token and its target, or the loop below would not advance
            return Err(TfError::Input(format!("eval needs a context of at least 2 tokens; this model's context is {ctx}")));
        }
        let (mut total, mut n) = (0f64, 0usize);
        let mut start = 0;
        while start + 1 < ids.len() {
            let end = (start + ctx).min(ids.len());
            let win = &ids[start..end];
            self.plan_pass(b, None, win.len(), &MapLayers::None)?;
            self.run_lm(b, win, 0, Logits::All)?;
            b.submit()?;
            let logits = b.read_f32(&self.state.logits, 0, win.len() * v).await?;
            if let Some(i) = logits.iter().position(|x| !x.is_finite()) {
                return Err(self.non_finite_error(b, win.len(), 0, start + i / v.max(1)).await);
            }
            for (i, &target) in win[1..].iter().enumerate() {
                let row = &logits[i * v..(i + 1) * v];
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
                total += lse - row[target as usize] as f64;
                n += 1;
            }
            start = end - 1; // end >= start + 2 (ctx >= 2, start + 1 < len): the loop advances
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
    /// sample on the GPU and read back 8 bytes, the id and the NaN/Inf count (true), or read the
    /// logits back and sample on the CPU
    pub gpu_sampling: bool,
    /// read back the attention rows of every step
    pub attention: bool,
    /// the layers whose rows `attention` reads back (the others keep no maps)
    pub map_layers: MapLayers,
    /// also read the logits back and report the 10 most likely next tokens
    pub top: usize,
    /// past the context, keep going on the newest tokens that fit (see `sliding_window_start`):
    /// a prompt longer than the context is cut to its tail, and a full sequence forgets its oldest
    /// token at every step. Off: a prompt longer than the context is an error, and generation stops
    /// when the sequence fills the context.
    pub sliding_window: bool,
    /// constrained decoding (model::constraint): the tokens it refuses get -inf logits and the logits
    /// are read back and sampled on the CPU. None: none (the session passes the one the checkpoint
    /// declares: session::text).
    pub constraint: Option<crate::model::constraint::Constraint>,
    /// generation steps recorded per GPU submission (model::chain): the sampled id
    /// stays on the GPU and feeds the next step; 1 = one submission and one readback per token
    pub tokens_per_submit: usize,
    /// chained decoder-only batches: submit the next batch before reading the current one (off:
    /// one batch at a time, for benchmarks)
    pub pipeline: bool,
    /// read back each step's MoE routing
    pub moe: bool,
    /// ids that end the generation when produced (a foreign model's EOS; the session sets them)
    pub stop_ids: Vec<u32>,
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
            map_layers: MapLayers::All,
            top: 0,
            sliding_window: false,
            constraint: None,
            tokens_per_submit: 1,
            pipeline: true,
            moe: false,
            stop_ids: Vec::new(),
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max_new_tokens` were generated
    MaxNewTokens,
    /// the sequence filled the model's context (and the window does not slide)
    Context,
    /// the encoder-decoder produced EOS, or the model one of `GenConfig::stop_ids`
    Eos,
}

/// The first of `len` tokens that a model with a context of `ctx` tokens reads to predict the next
/// one when the window slides: 0 while `len < ctx`, else `len - (ctx - 1)`, so that the newest
/// `ctx - 1` tokens and the token they predict fill the context, as at the last step of a
/// generation that does not slide. A prompt longer than the context is cut at the same place.
pub fn sliding_window_start(len: usize, ctx: usize) -> usize {
    if len < ctx {
        0
    } else {
        len - ctx.saturating_sub(1).max(1)
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
    /// why the generation ended (None while it runs)
    pub stop_reason: Option<StopReason>,
    /// how many of the caller's prompt tokens were left out because they did not fit the context
    /// (only with `sliding_window`; `ids` starts after them)
    pub prompt_cut: usize,
    /// tokens computed in a chained batch and not handed out yet, and batches in flight
    pub(crate) chain: crate::model::runtime::chain::ChainState,
}

pub struct StepOut {
    pub id: u32,
    /// the first index in `Generation::ids` (before this token was pushed) that the pass read:
    /// 0 unless the sliding window has dropped older tokens
    pub window_start: usize,
    pub attention: Vec<AttnMap>,
    /// (id, probability) after temperature / top-k / top-p, most likely first
    pub top: Vec<(u32, f32)>,
    /// this step's MoE routing (GenConfig::moe)
    pub moe: Vec<MoeRecord>,
    /// how many generation steps the submission that computed this token held (model::chain)
    pub batch: usize,
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

/// The n most likely next tokens (id, probability) after temperature / top-k / top-p.
pub fn top_candidates(logits: &[f32], p: &SampleParams, n: usize) -> Vec<(u32, f32)> {
    let probs = candidate_probs(logits, p);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]).then(a.cmp(&b)));
    idx.into_iter().take(n).map(|i| (i, probs[i as usize])).collect()
}

impl<B: Backend> Model<B> {
    /// The maps a generation's steps keep: those it reads back, or none.
    fn step_maps(cfg: &GenConfig) -> MapLayers {
        if cfg.attention {
            cfg.map_layers.clone()
        } else {
            MapLayers::None
        }
    }

    /// Sizes the run state for a generation from `prompt` tokens (and a source of `src`): the
    /// context in use is the prompt plus `max_new_tokens`, at most the model's (exactly that: the
    /// state shrinks or grows, as the generation starts from an empty cache); the attention
    /// buffers hold the prompt's pass and one-row steps over that context (every step re-reads the
    /// whole window without the KV cache or once a sliding window is full).
    fn plan_generation(&mut self, b: &B, prompt: usize, src: Option<usize>, cfg: &GenConfig) -> Result<()> {
        let s = self.cfg.max_seq_len;
        let ctx = prompt.saturating_add(cfg.max_new_tokens).min(s).max(prompt.min(s));
        let ts = src.unwrap_or(0);
        let slides_full = cfg.sliding_window && prompt.saturating_add(cfg.max_new_tokens) > s;
        let steps = if cfg.kv_cache && !slides_full { ctx } else { ctx * ctx };
        let area = steps.max(prompt.min(s).pow(2)).max(ts * ts).max(ctx * ts);
        let maps = Self::step_maps(cfg);
        maps.check(self.cfg.num_layers)?;
        // exactly this: a generation starts from an empty cache, so nothing is lost
        self.replan(b, Plan::new(&self.cfg, ctx.max(ts), maps, area))
    }

    /// Starts a generation. Decoder / llama: `start` is the prompt. Encoder-decoder: `src` is
    /// encoded once and `start` is the decoder's start (default [BOS]). Checks the context first
    /// and sizes the run state for it (`plan_generation`).
    pub fn start_generation(&mut self, b: &mut B, start: &[u32], src: Option<&[u32]>, cfg: GenConfig) -> Result<Generation> {
        let start = if self.cfg.arch == Arch::EncoderDecoder {
            let src = src.ok_or_else(|| TfError::Input("an encoder_decoder model needs a source (--src-ids or --prompt)".into()))?;
            let n = if start.is_empty() { 1 } else { start.len() };
            self.plan_generation(b, n, Some(src.len()), &cfg)?;
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
        let slide = cfg.sliding_window && self.cfg.arch != Arch::EncoderDecoder;
        let mut start = start;
        let mut prompt_cut = 0;
        if start.len() > ctx {
            if !slide {
                return Err(TfError::Input(format!("the prompt has {} tokens but the model's context is {ctx}", start.len())));
            }
            prompt_cut = sliding_window_start(start.len(), ctx);
            start.drain(..prompt_cut);
        }
        // max_new_tokens is not cut to the room left: next_token stops at a full context and says so.
        let cfg = GenConfig { sliding_window: slide, ..cfg };
        if self.cfg.arch != Arch::EncoderDecoder {
            self.plan_generation(b, start.len(), None, &cfg)?;
        }
        b.queue_abandon(); // a batch an earlier generation left in flight (model::chain)
        Ok(Generation {
            start_len: start.len(),
            ids: start,
            cached: 0,
            step: 0,
            done: false,
            cfg,
            stop_reason: None,
            prompt_cut,
            chain: Default::default(),
        })
    }

    /// Produces the next token, or None when the generation is over (max tokens, context full, EOS).
    pub async fn next_token(&mut self, b: &mut B, g: &mut Generation) -> Result<Option<StepOut>> {
        // K tokens per submission where the step allows it (model::chain)
        if let Some(out) = self.next_chained(b, g).await? {
            return Ok(out);
        }
        let ctx = self.cfg.max_seq_len;
        let full = g.ids.len() >= ctx;
        let reason = if g.ids.len() - g.start_len >= g.cfg.max_new_tokens {
            Some(StopReason::MaxNewTokens)
        } else if full && !g.cfg.sliding_window {
            Some(StopReason::Context)
        } else {
            None
        };
        if g.done || reason.is_some() {
            g.done = true;
            g.stop_reason = g.stop_reason.or(reason);
            return Ok(None);
        }
        // A full context with a sliding window: the newest tokens that fit, from position 0 (their
        // positions changed, so nothing in the KV cache can be reused).
        let window_start = if full { sliding_window_start(g.ids.len(), ctx) } else { 0 };
        let mut pos = if g.cfg.kv_cache && !full { g.cached } else { 0 };
        let maps = Self::step_maps(&g.cfg);
        let (end, src) = (g.ids.len() - window_start, self.src.len());
        if !self.state.plan.holds(end.max(src), (end - pos) * end.max(src), &maps) {
            // past what start_generation planned (a caller that changed the GenConfig): grow; a
            // new state holds no cached keys, so this step re-reads the window from position 0
            let context_before = self.state.plan.context;
            let need = end.max(src).max(context_before.saturating_mul(2)).min(ctx.max(src)); // doubling: few regrowths
            self.plan_for(b, need, need * need, &maps)?;
            if self.state.plan.context != context_before {
                pos = 0;
                if self.cfg.arch == Arch::EncoderDecoder {
                    let src = self.src.clone();
                    self.encode(b, &src)?;
                }
            }
        }
        let t = g.ids.len() - window_start - pos;
        if self.cfg.arch == Arch::EncoderDecoder {
            self.run_decoder(b, &g.ids, pos, Logits::Last)?;
        } else {
            self.run_lm(b, &g.ids[window_start + pos..], pos, Logits::Last)?;
        }
        let u = step_uniform(g.cfg.seed, g.step);
        let v = self.in_vocab();
        let mut top = Vec::new();
        let mut attention = vec![];
        let (id, non_finite) = if g.cfg.gpu_sampling && g.cfg.top == 0 && g.cfg.constraint.is_none() {
            // the pass, the sampler and the 8-byte copy (id, NaN/Inf count) go out in one submission
            // (read flushes); when the page asks for attention rows they come back in the same map
            b.sample(&self.state.next, &self.state.logits, 0, &g.cfg.sample, u)?;
            let got = if g.cfg.attention {
                let (got, maps) = self.read_with_maps(b, &[(&self.state.next, 0, 2)], t, pos + t, pos).await?;
                attention = maps;
                got.into_iter().next().unwrap_or_default()
            } else {
                b.read_u32(&self.state.next, 0, 2).await?
            };
            (got.first().copied().unwrap_or(0), got.get(1).copied().unwrap_or(0))
        } else {
            // logits (and the attention rows when asked) in one submission and one map, through a
            // reused staging buffer
            let (got, maps) = if g.cfg.attention {
                self.read_with_maps(b, &[(&self.state.logits, 0, v)], t, pos + t, pos).await?
            } else {
                (b.read_batch(&[(&self.state.logits, 0, v)]).await?, vec![])
            };
            attention = maps;
            let mut logits: Vec<f32> = bytemuck::cast_vec(got.into_iter().next().unwrap_or_default());
            let non_finite = cpu::count_non_finite(&logits);
            if let (Some(c), 0) = (&g.cfg.constraint, non_finite) {
                c.mask(&g.ids[g.start_len..], &mut logits)?;
            }
            if g.cfg.top > 0 && non_finite == 0 {
                top = top_candidates(&logits, &g.cfg.sample, g.cfg.top);
            }
            (cpu::sample(&logits, &g.cfg.sample, u), non_finite)
        };
        if non_finite > 0 {
            g.done = true;
            return Err(self.non_finite_error(b, t, pos, window_start + pos + t - 1).await);
        }
        let moe = if g.cfg.moe { self.read_moe(b, t).await? } else { vec![] };
        if g.cfg.kv_cache && !full {
            g.cached = g.ids.len();
        }
        g.ids.push(id);
        g.step += 1;
        if (self.cfg.arch == Arch::EncoderDecoder && id == EOS_ID) || g.cfg.stop_ids.contains(&id) {
            g.done = true;
            g.stop_reason = Some(StopReason::Eos);
        }
        Ok(Some(StepOut { id, window_start, attention, top, moe, batch: 1 }))
    }

    /// Runs a generation to the end.
    pub async fn generate(&mut self, b: &mut B, start: &[u32], src: Option<&[u32]>, cfg: GenConfig) -> Result<Vec<u32>> {
        let mut g = self.start_generation(b, start, src, cfg)?;
        while self.next_token(b, &mut g).await?.is_some() {}
        Ok(g.ids)
    }
}
