//! The forward: `Model`, loaded from a checkpoint, and its passes. One `Model` runs all three
//! architectures of the seeds over any `Backend`:
//! - decoder (seed 000 decoder-only LLM): pre-norm LayerNorm blocks, ReLU or MoE FFN, sinusoidal PE
//!   (GPT-2: learned positions; GPT-NeoX / Pythia: RoPE on part of each head and, optionally, the
//!   parallel residual x = x + attn(norm1(x)) + ffn(norm2(x)));
//! - llama (seed 004): pre-norm RMSNorm blocks, RoPE, grouped-query attention, SwiGLU;
//! - encoder_decoder (seed 000): post-norm encoder and decoder with cross-attention.
//!
//! Keys and values are written into the per-layer cache at their absolute position, so a pass over
//! T new tokens after `pos` cached ones reads like the seed's KV-cache code.
//!
//! Each block's weights, their loader and its forward sit side by side: `attention`, `ffn`, `norm`;
//! `weights` declares and loads a whole architecture from them. `Model` holds the network only (config,
//! weights, run state, hooks); its text in and out is the session's (session::text::ModelText).

pub mod attention;
pub mod ffn;
pub mod norm;
pub mod weights;

use crate::error::{Result, TfError};
use crate::mask::PAD_ID;
use crate::model::analysis::hooks::{HookPoint, Hooks, XnAfterHook};
use crate::model::backend::Backend;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::{Arch, ModelConfig};
use crate::model::forward::weights::{TensorSource, Weights};
use crate::model::map_kind::{MapKind, Stack};
use crate::model::memory::{self, Budget};
use crate::model::state::{LayerState, Plan, RunState};
use crate::ops::{AttnShape, EwOp};

pub struct Model<B: Backend> {
    pub cfg: ModelConfig,
    pub weights: Weights<B::T>,
    /// activations, KV caches and attention maps, allocated for a plan (state::Plan): small at load,
    /// grown when a pass or a generation needs more
    pub state: RunState<B::T>,
    pub params: u64,
    /// encoder-decoder: the source of the last `encode`
    pub src: Vec<u32>,
    /// look-inside hooks: ablation and the inspection captures (analysis::hooks)
    pub hooks: Hooks<B::T>,
    /// which weights hold NaN or Inf (`Checkpoint::non_finite`): such a model loads, and a pass
    /// whose logits are non-finite names them
    pub non_finite_weights: Option<String>,
}

/// Where a pass's new token ids come from (model::chain).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Feed {
    /// the host writes them (and the encoder-decoder's masks) before the pass
    Host,
    /// already in the ids buffer: a chained step reads the id the previous step's sampler wrote
    /// there (the ids passed in are only counted), and the encoder-decoder's masks were written
    /// for the whole batch
    Device,
}

/// Which rows of logits a pass computes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Logits {
    All,
    Last,
}

impl<B: Backend> Model<B> {
    /// Parses and validates a checkpoint, then uploads it. On error nothing is kept: tensors already
    /// uploaded are destroyed when they drop, and so is every buffer of a model when it drops
    /// (`GpuTensor`'s Drop destroys its buffer, in the browser too). The network only: the tokenizer
    /// and the output constraint the checkpoint carries are the session's (session::text).
    pub fn load(backend: &B, bytes: &[u8]) -> Result<Model<B>> {
        Self::load_within(backend, bytes, &Budget::default())
    }

    /// [`Model::load`], refusing a model whose memory demand (model::memory::demand: weights,
    /// activations, KV caches, attention maps, logits, MoE buffers, masks) is over `budget`, before
    /// anything is converted or allocated.
    pub fn load_within(backend: &B, bytes: &[u8], budget: &Budget) -> Result<Model<B>> {
        Self::from_checkpoint(backend, Self::checkpoint_within(backend, bytes, budget)?, budget)
    }

    /// The checkpoint of [`Model::load_within`], parsed and validated, its memory demand on `backend`
    /// checked against `budget` before any tensor is converted.
    pub fn checkpoint_within(backend: &B, bytes: &[u8], budget: &Budget) -> Result<Checkpoint> {
        // the run state starts small (state::Plan::at_load) and grows per request (Model::plan_for)
        Ok(Checkpoint::from_bytes_in16(bytes, &crate::model::checkpoint::Canonical, |cfg, w16| {
            memory::demand_of(cfg, backend.weight_copies(), &Plan::at_load(cfg), w16 && backend.keeps_16bit()).check(budget)
        })?)
    }

    /// Builds the model from a checkpoint already parsed: ours (`Checkpoint::from_bytes*`) or a
    /// foreign one (`formats::open`, which checks the budget before reading any tensor). The config
    /// is checked against `budget` again here (cheap, for the run state a load allocates), then the
    /// weights are uploaded and the run state allocated.
    pub fn from_checkpoint(backend: &B, mut ck: Checkpoint, budget: &Budget) -> Result<Model<B>> {
        let w16 = backend.keeps_16bit() && ck.weights16();
        memory::demand_of(&ck.config, backend.weight_copies(), &Plan::at_load(&ck.config), w16).check(budget).map_err(TfError::Memory)?;
        let cfg = ck.config.clone();
        let params = ck.param_count();
        let non_finite_weights = ck.non_finite();
        let weights = Weights::load(backend, &cfg, &mut ck)?;
        let mut state = RunState::new(backend, &cfg, &Plan::at_load(&cfg))?;
        state.budget = *budget;
        Ok(Model { cfg, weights, state, params, src: vec![], hooks: Hooks::default(), non_finite_weights })
    }

    /// [`Model::from_checkpoint`] with the tensors taken from `src` one at a time (a foreign checkpoint
    /// read as it uploads: `formats::open16_lazy`): `cfg` and `weights16` are the opened checkpoint's.
    /// The file's tensors are never all in memory beside the backend's copies.
    pub fn from_source(backend: &B, cfg: ModelConfig, src: &mut dyn TensorSource, weights16: bool, budget: &Budget) -> Result<Model<B>> {
        let w16 = backend.keeps_16bit() && weights16;
        memory::demand_of(&cfg, backend.weight_copies(), &Plan::at_load(&cfg), w16).check(budget).map_err(TfError::Memory)?;
        let params = cfg.param_count();
        let weights = Weights::load_from(backend, &cfg, src)?;
        let non_finite_weights = src.non_finite();
        let mut state = RunState::new(backend, &cfg, &Plan::at_load(&cfg))?;
        state.budget = *budget;
        Ok(Model { cfg, weights, state, params, src: vec![], hooks: Hooks::default(), non_finite_weights })
    }

    /// The vocabulary of the (decoder) input ids, which is also the width V of the logits.
    pub fn in_vocab(&self) -> usize {
        if self.cfg.arch == Arch::EncoderDecoder {
            self.cfg.tgt_vocab_size
        } else {
            self.cfg.vocab_size
        }
    }

    pub fn check_ids(&self, ids: &[u32], vocab: usize, what: &str) -> Result<()> {
        if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(TfError::Input(format!(
                "{what} token id {id} at position {i} is out of range: the vocabulary has {vocab} tokens (ids 0..={})",
                vocab - 1
            )));
        }
        Ok(())
    }

    fn check_len(&self, end: usize, what: &str) -> Result<()> {
        if end > self.cfg.max_seq_len {
            return Err(TfError::Input(format!("{what} needs {end} positions but the model's context is {} tokens", self.cfg.max_seq_len)));
        }
        if end > self.state.plan.context {
            return Err(TfError::Internal(format!(
                "{what} needs {end} rows but the run state holds {} (Model::plan_for)",
                self.state.plan.context
            )));
        }
        Ok(())
    }

    /// The caches of layer `li` of `stack`.
    pub(super) fn layer_state(&self, (stack, li): (Stack, usize)) -> Result<&LayerState<B::T>> {
        let layers = match stack {
            Stack::Encoder => &self.state.enc_layers,
            Stack::Decoder => &self.state.layers,
        };
        layers.get(li).ok_or_else(|| TfError::Internal(format!("no layer {li} in the run state")))
    }

    /// Decoder / llama: runs T = ids.len() new tokens at positions pos..pos+T (keys and values of
    /// 0..pos must be in the cache) and computes the logits of all rows or of the last one.
    pub fn run_lm(&self, backend: &mut B, ids: &[u32], pos: usize, which: Logits) -> Result<()> {
        self.run_lm_fed(backend, ids, pos, which, Feed::Host)
    }

    /// [`Model::run_lm`] with the new ids written by the host or already on the device.
    pub fn run_lm_fed(&self, backend: &mut B, ids: &[u32], pos: usize, which: Logits, feed: Feed) -> Result<()> {
        let cfg = &self.cfg;
        let t = ids.len();
        if t == 0 {
            return Err(TfError::Input("the prompt is empty: give at least one token".into()));
        }
        self.check_len(pos + t, "this pass")?;
        self.check_ids(ids, cfg.vocab_size, "input")?;
        let scratch = &self.state.dec;
        if feed == Feed::Host {
            backend.write_u32(&scratch.ids, 0, ids)?;
        }
        // x = embed(ids) (* sqrt(C) for the seed-000 decoder) (+ sinusoidal or learned positions pos..)
        backend.embedding(&scratch.x, &self.weights.embed, &scratch.ids, t, cfg.embed_scale())?;
        if let Some(pe) = self.weights.pos_embed.as_ref().or(self.state.pe.as_ref()) {
            backend.add_rows(&scratch.x, pe, t, pos)?;
        }
        self.hook_resid(backend, HookPoint::Embed, &scratch.x, &scratch.xn, t, pos)?;
        let final_norm = self.weights.final_norm.as_ref().ok_or_else(|| TfError::Internal("no final norm".into()))?;
        // Each residual add is fused with the norm after it: xn = norm(x += sublayer(xn)).
        if let Some(first) = self.weights.layers.first() {
            Self::norm(backend, &first.norm_attn, &scratch.xn, &scratch.x, t)?;
        } else {
            Self::norm(backend, final_norm, &scratch.xn, &scratch.x, t)?;
        }
        let layers = &self.weights.layers;
        // causal, or an explicit mask with cells blocked by an ablation (analysis::hooks)
        let mask = self.hook_mask(backend, t, pos)?;
        backend.layers_mark(true);
        for (li, (layer, layer_state)) in layers.iter().zip(&self.state.layers).enumerate() {
            // x = x + attn(norm1(x)); xn = norm2(x)
            self.self_attention(backend, (Stack::Decoder, li), &layer.attn, layer_state, scratch, &scratch.xn, t, pos, mask)?;
            let next = layers.get(li + 1).map_or(final_norm, |l| &l.norm_attn);
            if cfg.parallel_residual {
                // GPT-NeoX: x = x + attn(norm1(x)) + ffn(norm2(x)), both halves reading the block's input x.
                // norm2(x) goes into `att` (free once W_o has read it), then x += attn: the residual after
                // the attention half, which the Mid hook sees (its lens may use xn: nothing reads it again)
                let f = layer.ffn_block()?;
                Self::norm(backend, &f.norm, &scratch.att, &scratch.x, t)?;
                backend.inplace(&scratch.x, Some(&scratch.tmp), t * cfg.d_model, EwOp::Add)?;
                self.hook_resid(backend, HookPoint::Mid(li), &scratch.x, &scratch.xn, t, pos)?;
                // x = x + ffn(norm2(block input)); xn = the next layer's norm1(x), or the final norm(x)
                self.ffn(backend, (Stack::Decoder, li), &f.net, scratch, &scratch.att, t)?;
                Self::residual_pre_norm(backend, next, scratch, t)?;
                if self.hook_resid(backend, HookPoint::Block(li), &scratch.x, &scratch.xn, t, pos)? == XnAfterHook::Overwritten {
                    Self::norm(backend, next, &scratch.xn, &scratch.x, t)?;
                }
                continue;
            }
            // attention-only: the block ends here, xn = the next norm(x), and its middle is its end
            let norm2 = layer.ffn.as_ref().map_or(next, |f| &f.norm);
            Self::residual_pre_norm(backend, norm2, scratch, t)?;
            // an inspect hook that used xn for its lens gives it back: xn = norm2(x) again
            if self.hook_resid(backend, HookPoint::Mid(li), &scratch.x, &scratch.xn, t, pos)? == XnAfterHook::Overwritten {
                Self::norm(backend, norm2, &scratch.xn, &scratch.x, t)?;
            }
            // x = x + ffn(norm2(x)); xn = the next layer's norm1(x), or the final norm(x)
            if let Some(f) = &layer.ffn {
                self.ffn(backend, (Stack::Decoder, li), &f.net, scratch, &scratch.xn, t)?;
                Self::residual_pre_norm(backend, next, scratch, t)?;
            }
            if self.hook_resid(backend, HookPoint::Block(li), &scratch.x, &scratch.xn, t, pos)? == XnAfterHook::Overwritten {
                Self::norm(backend, next, &scratch.xn, &scratch.x, t)?;
            }
        }
        backend.layers_mark(false);
        self.head(backend, &scratch.xn, t, which)
    }

    fn head(&self, backend: &mut B, x: &B::T, t: usize, which: Logits) -> Result<()> {
        let c = self.cfg.d_model;
        let (w, b) = self.weights.head();
        match which {
            Logits::All => backend.matmul(&self.state.logits, 0, x, 0, t, w, b),
            Logits::Last => backend.matmul(&self.state.logits, 0, x, (t - 1) * c, 1, w, b),
        }
    }

    /// Encoder-decoder: encodes the source once and fills every decoder layer's cross keys/values.
    pub fn encode(&mut self, backend: &mut B, src: &[u32]) -> Result<()> {
        let cfg = self.cfg.clone();
        let ts = src.len();
        if ts == 0 {
            return Err(TfError::Input("the source is empty: give at least one token".into()));
        }
        self.check_len(ts, "the source")?;
        self.check_ids(src, cfg.src_vocab_size, "source")?;
        let (Some(scratch), Some(emb)) = (self.state.enc.as_ref(), self.weights.enc_embed.as_ref()) else {
            return Err(TfError::Input(format!("a {} model has no encoder", cfg.arch.as_str())));
        };
        let c = cfg.d_model;
        let mask = scratch.mask.as_ref().ok_or_else(|| TfError::Internal("the encoder's mask buffer is missing".into()))?;
        backend.write_f32(mask, 0, &crate::mask::padding(ts, src).data)?;
        backend.write_u32(&scratch.ids, 0, src)?;
        backend.embedding(&scratch.x, emb, &scratch.ids, ts, (c as f32).sqrt())?;
        if let Some(pe) = &self.state.pe {
            backend.add_rows(&scratch.x, pe, ts, 0)?;
        }
        for (li, (layer, layer_state)) in self.weights.enc_layers.iter().zip(&self.state.enc_layers).enumerate() {
            // x = norm1(x + self_attn(x, src padding)); x = norm2(x + ffn(x))
            self.self_attention(backend, (Stack::Encoder, li), &layer.attn, layer_state, scratch, &scratch.x, ts, 0, Some(mask))?;
            Self::residual_post_norm(backend, &layer.norm_attn, scratch, ts)?;
            let f = layer.ffn_block()?;
            self.ffn(backend, (Stack::Encoder, li), &f.net, scratch, &scratch.x, ts)?;
            Self::residual_post_norm(backend, &f.norm, scratch, ts)?;
        }
        // cross-attention keys and values of every decoder layer, once per source
        for (layer, layer_state) in self.weights.layers.iter().zip(&self.state.layers) {
            let (Some((cw, _)), Some(ck), Some(cv)) = (layer.cross.as_ref(), layer_state.cross_k.as_ref(), layer_state.cross_v.as_ref())
            else {
                continue;
            };
            backend.matmul(ck, 0, &scratch.x, 0, ts, &cw.k.w, cw.k.b.as_ref())?;
            backend.matmul(cv, 0, &scratch.x, 0, ts, &cw.v.w, cw.v.b.as_ref())?;
        }
        self.src = src.to_vec();
        Ok(())
    }

    /// Encoder-decoder decoder: the target tokens tgt[pos..] are new, tgt[..pos] are in the cache.
    pub fn run_decoder(&self, backend: &mut B, tgt: &[u32], pos: usize, which: Logits) -> Result<()> {
        self.run_decoder_fed(backend, tgt, pos, which, Feed::Host)
    }

    /// [`Model::run_decoder`] with the new ids (and the masks) written by the host or already on the device.
    pub fn run_decoder_fed(&self, backend: &mut B, tgt: &[u32], pos: usize, which: Logits, feed: Feed) -> Result<()> {
        let cfg = &self.cfg;
        let t = tgt.len().saturating_sub(pos);
        if t == 0 {
            return Err(TfError::Input("the decoder input is empty: start it with BOS".into()));
        }
        if self.src.is_empty() {
            return Err(TfError::Input("encode a source before decoding".into()));
        }
        self.check_len(tgt.len(), "the target")?;
        self.check_ids(tgt, cfg.tgt_vocab_size, "target")?;
        let scratch = &self.state.dec;
        let (c, nh, hs, ts) = (cfg.d_model, cfg.num_heads, cfg.head_dim(), self.src.len());
        // Host writes first, so the whole pass goes out in one submission.
        // self: target key padding AND look-ahead over cached + new; cross: source key padding
        // (minus any cells an ablation blocks, analysis::hooks)
        let (cells, xcells) = (&self.hooks.mask_cells, &self.hooks.cross_cells);
        let self_mask = crate::mask::Mask::from_fn(t, pos + t, |i, j| j <= pos + i && tgt[j] != PAD_ID && !cells.contains(&(pos + i, j)));
        let cross = crate::mask::Mask::from_fn(t, self.src.len(), |i, j| self.src[j] != PAD_ID && !xcells.contains(&(pos + i, j)));
        let (Some(mask), Some(cross_mask)) = (scratch.mask.as_ref(), scratch.cross_mask.as_ref()) else {
            return Err(TfError::Internal("the decoder's mask buffers are missing".into()));
        };
        if feed == Feed::Host {
            backend.write_f32(mask, 0, &self_mask.data)?;
            backend.write_f32(cross_mask, 0, &cross.data)?;
            backend.write_u32(&scratch.ids, 0, &tgt[pos..])?;
        }
        backend.embedding(&scratch.x, &self.weights.embed, &scratch.ids, t, (c as f32).sqrt())?;
        if let Some(pe) = &self.state.pe {
            backend.add_rows(&scratch.x, pe, t, pos)?;
        }
        self.hook_resid(backend, HookPoint::Embed, &scratch.x, &scratch.xn, t, pos)?;
        backend.layers_mark(true);
        for (li, (layer, layer_state)) in self.weights.layers.iter().zip(&self.state.layers).enumerate() {
            // x = norm1(x + self_attn(x))
            self.self_attention(backend, (Stack::Decoder, li), &layer.attn, layer_state, scratch, &scratch.x, t, pos, Some(mask))?;
            Self::residual_post_norm(backend, &layer.norm_attn, scratch, t)?;
            self.hook_resid(backend, HookPoint::Mid(li), &scratch.x, &scratch.xn, t, pos)?;
            // x = norm2(x + cross_attn(x, encoder output))
            let (Some((cw, cn)), Some(ck), Some(cv), Ok(cp)) = (
                layer.cross.as_ref(),
                layer_state.cross_k.as_ref(),
                layer_state.cross_v.as_ref(),
                self.state.maps.target(MapKind::Cross, li),
            ) else {
                return Err(TfError::Internal("decoder layer without cross-attention".into()));
            };
            backend.matmul(&scratch.q, 0, &scratch.x, 0, t, &cw.q.w, cw.q.b.as_ref())?;
            backend.attention(&scratch.att, cp, &scratch.q, ck, cv, Some(cross_mask), &AttnShape::packed(t, ts, nh, nh, hs))?;
            backend.matmul(&scratch.tmp, 0, &scratch.att, 0, t, &cw.o.w, cw.o.b.as_ref())?;
            Self::residual_post_norm(backend, cn, scratch, t)?;
            // x = norm3(x + ffn(x))
            let f = layer.ffn_block()?;
            self.ffn(backend, (Stack::Decoder, li), &f.net, scratch, &scratch.x, t)?;
            Self::residual_post_norm(backend, &f.norm, scratch, t)?;
            self.hook_resid(backend, HookPoint::Block(li), &scratch.x, &scratch.xn, t, pos)?;
        }
        backend.layers_mark(false);
        self.head(backend, &scratch.x, t, which)
    }
}
