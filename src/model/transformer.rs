//! The forward passes. One `Model` runs all three architectures of the seeds over any `Backend`:
//! - decoder (seed 000 decoder-only LLM): pre-norm LayerNorm blocks, ReLU or MoE FFN, sinusoidal PE;
//! - llama (seed 004): pre-norm RMSNorm blocks, RoPE, grouped-query attention, SwiGLU;
//! - encoder_decoder (seed 000): post-norm encoder and decoder with cross-attention.
//! Keys and values are written into the per-layer cache at their absolute position, so a pass over
//! T new tokens after `pos` cached ones reads like the seed's KV-cache code.

use crate::cpu::{moe_capacity_for, AttnShape, EwOp, RopeShape};
use crate::error::{Result, TfError};
use crate::mask::PAD_ID;
use crate::model::backend::Backend;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::{Arch, ModelConfig};
use crate::model::inspect::{HookPoint, Hooks};
use crate::model::memory::{self, Budget};
use crate::model::state::{LayerState, RunState, Scratch};
use crate::model::weights::{AttnW, Ffn, Layer, Norm, Weights};
use crate::tokenizer::Tokenizer;

pub struct Model<B: Backend> {
    pub cfg: ModelConfig,
    pub tokenizer: Option<Tokenizer>,
    /// the tokenizer of the output ids (see output_tokenizer)
    out_tokenizer: Option<Tokenizer>,
    /// the output constraint the checkpoint declares (`__metadata__["output_constraint"]`); generation
    /// applies it unless `GenConfig::constraint` says otherwise
    pub constraint: Option<crate::model::constraint::Constraint>,
    pub w: Weights<B::T>,
    pub st: RunState<B::T>,
    pub params: u64,
    /// encoder-decoder: the source of the last `encode`
    pub src: Vec<u32>,
    /// look-inside hooks: ablation and the inspection captures (model::inspect)
    pub hooks: Hooks<B::T>,
}

/// Which rows of logits a pass computes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Logits {
    All,
    Last,
}

impl<B: Backend> Model<B> {
    /// Parses and validates a checkpoint (tokenizer included), then uploads it. On error nothing is
    /// kept: tensors already uploaded are destroyed when they drop, and so is every buffer of a
    /// model when it drops (`GpuTensor`'s Drop destroys its buffer, in the browser too).
    pub fn load(b: &B, bytes: &[u8]) -> Result<Model<B>> {
        Self::load_within(b, bytes, &Budget::default())
    }

    /// [`Model::load`], refusing a model whose memory demand (model::memory::demand: weights,
    /// activations, KV caches, attention maps, logits, MoE buffers, masks) is over `budget`, before
    /// anything is converted or allocated.
    pub fn load_within(b: &B, bytes: &[u8], budget: &Budget) -> Result<Model<B>> {
        let mut ck = Checkpoint::from_bytes_checked(bytes, |cfg| memory::demand_with(cfg, b.weight_copies()).check(budget))?;
        let cfg = ck.config.clone();
        let tokenizer = match &ck.tokenizer {
            None => None,
            Some(j) => {
                Some(Tokenizer::from_json(j).map_err(|e| TfError::Checkpoint(format!("the tokenizer in the metadata is invalid: {e}")))?)
            }
        };
        if let Some(t) = &tokenizer {
            let v = if cfg.arch == Arch::EncoderDecoder { cfg.src_vocab_size } else { cfg.vocab_size };
            if t.vocab_size() > v {
                return Err(TfError::Checkpoint(format!("the tokenizer has {} tokens but the model's vocabulary is {v}", t.vocab_size())));
            }
        }
        // Made once here: generation decodes every token with it.
        let out_tokenizer = tokenizer.as_ref().map(|t| t.target_tokenizer().unwrap_or_else(|| t.clone()));
        let constraint = match ck.metadata.get(crate::model::constraint::METADATA_KEY) {
            None => None,
            Some(name) => {
                let t = out_tokenizer
                    .as_ref()
                    .ok_or_else(|| TfError::Checkpoint(format!("output constraint {name:?} needs a tokenizer in the metadata")))?;
                Some(crate::model::constraint::Constraint::from_name(name, t, cfg.tgt_vocab_size)?)
            }
        };
        let params = ck.param_count();
        let w = Weights::load(b, &cfg, &mut ck)?;
        let st = RunState::new(b, &cfg)?;
        Ok(Model { cfg, tokenizer, out_tokenizer, constraint, w, st, params, src: vec![], hooks: Hooks::default() })
    }

    /// The tokenizer that writes the model's output: the target table of a two-table tokenizer
    /// (the date model), else the tokenizer itself.
    pub fn output_tokenizer(&self) -> Option<&Tokenizer> {
        self.out_tokenizer.as_ref()
    }

    /// Output ids as text, special ids (PAD / BOS / EOS of a chars table) left out.
    pub fn decode_output(&self, ids: &[u32]) -> Result<String> {
        let t = self.output_tokenizer().ok_or_else(|| TfError::Input("this model has no tokenizer".into()))?;
        let ids: Vec<u32> = match t.special_ids() {
            Some((p, b, e)) => ids.iter().copied().filter(|&i| i != p && i != b && i != e).collect(),
            None => ids.to_vec(),
        };
        t.decode(&ids).map_err(|e| TfError::Input(e.to_string()))
    }

    /// Vocabulary of the (decoder) input ids and of the logits.
    pub fn in_vocab(&self) -> usize {
        if self.cfg.arch == Arch::EncoderDecoder {
            self.cfg.tgt_vocab_size
        } else {
            self.cfg.vocab_size
        }
    }
    pub fn out_vocab(&self) -> usize {
        self.in_vocab()
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
        Ok(())
    }

    fn norm(b: &mut B, n: &Norm<B::T>, out: &B::T, x: &B::T, rows: usize) -> Result<()> {
        match &n.b {
            Some(beta) => b.layernorm(out, x, &n.w, beta, rows, n.eps),
            None => b.rmsnorm(out, x, &n.w, rows, n.eps),
        }
    }

    /// Self-attention of T tokens at positions pos..pos+T over the cache: sc.tmp = W_o(attn(xin)).
    #[allow(clippy::too_many_arguments)]
    fn self_attention(
        &self,
        b: &mut B,
        aw: &AttnW<B::T>,
        ls: &LayerState<B::T>,
        sc: &Scratch<B::T>,
        xin: &B::T,
        t: usize,
        pos: usize,
        mask: Option<&B::T>,
        hook_layer: Option<usize>,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let (nh, nkv, hs) = (cfg.num_heads, cfg.kv_heads(), cfg.head_dim());
        let kvw = nkv * hs;
        // q = x W_q^T; k, v = x W_k^T, x W_v^T written into the cache at rows pos..pos+T
        b.qkv(
            &sc.q,
            &ls.k,
            &ls.v,
            pos * kvw,
            xin,
            t,
            [(&aw.q.w, aw.q.b.as_ref()), (&aw.k.w, aw.k.b.as_ref()), (&aw.v.w, aw.v.b.as_ref())],
        )?;
        if let Some(table) = &self.st.rope {
            b.rope(&sc.q, table, &RopeShape { t, nh, hs, start_pos: pos, row_stride: nh * hs, offset: 0 })?;
            b.rope(&ls.k, table, &RopeShape { t, nh: nkv, hs, start_pos: pos, row_stride: kvw, offset: pos * kvw })?;
        }
        // softmax(q k^T / sqrt(HS) + mask) v over every cached key; causal unless a mask is given
        let mut s = AttnShape::packed(t, pos + t, nh, nkv, hs);
        if mask.is_none() {
            s = s.with_causal(pos);
        }
        b.attention(&sc.att, &ls.probs, &sc.q, &ls.k, &ls.v, mask, &s)?;
        if let Some(l) = hook_layer {
            self.hook_heads(b, l, &sc.att, t, pos)?; // capture / ablate heads before W_o
        }
        b.matmul(&sc.tmp, 0, &sc.att, 0, t, &aw.o.w, aw.o.b.as_ref())
    }

    /// sc.tmp = FFN(xin) for T rows.
    fn ffn(&self, b: &mut B, f: &Ffn<B::T>, ls: &LayerState<B::T>, sc: &Scratch<B::T>, xin: &B::T, t: usize) -> Result<()> {
        match f {
            Ffn::Relu { l1, l2 } => {
                // h = relu(x W_1^T + b_1), the ReLU in the matmul's epilogue
                b.matmul_act(&sc.h, xin, t, &l1.w, l1.b.as_ref(), self.cfg.d_ff, EwOp::Relu)?;
                b.matmul(&sc.tmp, 0, &sc.h, 0, t, &l2.w, l2.b.as_ref())
            }
            Ffn::SwiGlu { w1, w2, w3 } => {
                let hidden = self.cfg.llama_hidden_dim();
                let h2 = sc.h2.as_ref().ok_or_else(|| TfError::Input("SwiGLU buffers missing".into()))?;
                // h = silu(x W_1^T) * (x W_3^T): gate and up in one pass where the backend can
                b.matmul_swiglu(&sc.h, h2, xin, t, &w1.w, &w3.w, hidden)?;
                b.matmul(&sc.tmp, 0, &sc.h, 0, t, &w2.w, None)
            }
            Ffn::Moe { router, experts } => {
                let m = self.cfg.moe.as_ref().ok_or_else(|| TfError::Input("MoE weights without a moe config".into()))?;
                let (e, k, c, s) = (m.num_experts, m.top_k, self.cfg.d_model, self.cfg.max_seq_len);
                let (rl, gate, ys) = (sc.router_logits.as_ref(), sc.gate.as_ref(), sc.ys.as_ref());
                let (Some(rl), Some(gate), Some(ys), Some(ms)) = (rl, gate, ys, ls.moe.as_ref()) else {
                    return Err(TfError::Input("MoE buffers missing".into()));
                };
                // router: softmax(x W_r^T + b_r), top-k, renormalised; capacity in token order
                b.matmul(rl, 0, xin, 0, t, &router.w, router.b.as_ref())?;
                if let Some(li) = self.st.layers.iter().position(|l| std::ptr::eq(l, ls)) {
                    self.hook_router(b, li, rl, t, e)?; // experts removed from routing (model::inspect)
                }
                b.moe_router(&ms.probs, &ms.experts, &ms.weights, rl, t, e, k)?;
                b.moe_capacity(gate, &ms.kept, &ms.experts, &ms.weights, t, e, k, Some(moe_capacity_for(m.capacity_factor, t, k, e)))?;
                // every expert on every token (dense: tiny models are bound by dispatches, not FLOPs)
                for (i, (l1, l2)) in experts.iter().enumerate() {
                    b.matmul_act(&sc.h, xin, t, &l1.w, l1.b.as_ref(), m.expert_dim, EwOp::Gelu)?;
                    b.matmul(ys, i * s * c, &sc.h, 0, t, &l2.w, l2.b.as_ref())?;
                }
                b.moe_combine(&sc.tmp, ys, gate, t, e, c, s)
            }
        }
    }

    /// Decoder / llama: runs T = ids.len() new tokens at positions pos..pos+T (keys and values of
    /// 0..pos must be in the cache) and computes the logits of all rows or of the last one.
    pub fn run_lm(&self, b: &mut B, ids: &[u32], pos: usize, which: Logits) -> Result<()> {
        let cfg = &self.cfg;
        let t = ids.len();
        if t == 0 {
            return Err(TfError::Input("the prompt is empty: give at least one token".into()));
        }
        self.check_len(pos + t, "this pass")?;
        self.check_ids(ids, cfg.vocab_size, "input")?;
        let sc = &self.st.dec;
        let c = cfg.d_model;
        b.write_u32(&sc.ids, 0, ids)?;
        // x = embed(ids) (* sqrt(C) for the seed-000 decoder) (+ PE at positions pos..)
        let scale = if cfg.arch == Arch::Llama { 1.0 } else { (c as f32).sqrt() };
        b.embedding(&sc.x, &self.w.embed, &sc.ids, t, scale)?;
        if let Some(pe) = &self.st.pe {
            b.add_rows(&sc.x, pe, t, pos)?;
        }
        self.hook_resid(b, HookPoint::Embed, &sc.x, &sc.xn, t, pos)?;
        let fnorm = self.w.final_norm.as_ref().ok_or_else(|| TfError::Input("no final norm".into()))?;
        // Each residual add is fused with the norm after it: xn = norm(x += sublayer(xn)).
        if let Some(first) = self.w.layers.first() {
            Self::norm(b, &first.norm_attn, &sc.xn, &sc.x, t)?;
        } else {
            Self::norm(b, fnorm, &sc.xn, &sc.x, t)?;
        }
        let layers = &self.w.layers;
        // causal, or an explicit mask with cells blocked by an ablation (model::inspect)
        let mask = self.hook_mask(b, t, pos)?;
        for (li, (layer, ls)) in layers.iter().zip(&self.st.layers).enumerate() {
            // x = x + attn(norm1(x)); xn = norm2(x)
            self.self_attention(b, &layer.attn, ls, sc, &sc.xn, t, pos, mask, Some(li))?;
            Self::add_then_norm(b, &layer.norm_ffn, sc, t)?;
            // an inspect hook that used xn for its lens gives it back: xn = norm2(x) again
            if self.hook_resid(b, HookPoint::Mid(li), &sc.x, &sc.xn, t, pos)? {
                Self::norm(b, &layer.norm_ffn, &sc.xn, &sc.x, t)?;
            }
            // x = x + ffn(norm2(x)); xn = the next layer's norm1(x), or the final norm(x)
            self.ffn(b, &layer.ffn, ls, sc, &sc.xn, t)?;
            let next = layers.get(li + 1).map_or(fnorm, |l| &l.norm_attn);
            Self::add_then_norm(b, next, sc, t)?;
            if self.hook_resid(b, HookPoint::Block(li), &sc.x, &sc.xn, t, pos)? {
                Self::norm(b, next, &sc.xn, &sc.x, t)?;
            }
        }
        self.head(b, &sc.xn, t, which)
    }

    fn head(&self, b: &mut B, x: &B::T, t: usize, which: Logits) -> Result<()> {
        let c = self.cfg.d_model;
        let h = &self.w.head;
        match which {
            Logits::All => b.matmul(&self.st.logits, 0, x, 0, t, &h.w, h.b.as_ref()),
            Logits::Last => b.matmul(&self.st.logits, 0, x, (t - 1) * c, 1, &h.w, h.b.as_ref()),
        }
    }

    /// Pre-norm residual: x = x + tmp; xn = norm(x).
    fn add_then_norm(b: &mut B, n: &Norm<B::T>, sc: &Scratch<B::T>, t: usize) -> Result<()> {
        b.add_norm(&sc.x, &sc.tmp, Some(&sc.xn), &n.w, n.b.as_ref(), t, n.eps)
    }

    /// Post-norm residual: x = norm(x + tmp).
    fn add_norm(b: &mut B, n: &Norm<B::T>, sc: &Scratch<B::T>, t: usize) -> Result<()> {
        b.add_norm(&sc.x, &sc.tmp, None, &n.w, n.b.as_ref(), t, n.eps)
    }

    /// Encoder-decoder: encodes the source once and fills every decoder layer's cross keys/values.
    pub fn encode(&mut self, b: &mut B, src: &[u32]) -> Result<()> {
        let cfg = self.cfg.clone();
        let ts = src.len();
        if ts == 0 {
            return Err(TfError::Input("the source is empty: give at least one token".into()));
        }
        self.check_len(ts, "the source")?;
        self.check_ids(src, cfg.src_vocab_size, "source")?;
        let (Some(sc), Some(emb)) = (self.st.enc.as_ref(), self.w.enc_embed.as_ref()) else {
            return Err(TfError::Input(format!("a {} model has no encoder", cfg.arch.as_str())));
        };
        let c = cfg.d_model;
        let mask = sc.mask.as_ref().ok_or_else(|| TfError::Input("the encoder's mask buffer is missing".into()))?;
        b.write_f32(mask, 0, &crate::mask::padding(ts, src).data)?;
        b.write_u32(&sc.ids, 0, src)?;
        b.embedding(&sc.x, emb, &sc.ids, ts, (c as f32).sqrt())?;
        if let Some(pe) = &self.st.pe {
            b.add_rows(&sc.x, pe, ts, 0)?;
        }
        for (layer, ls) in self.w.enc_layers.iter().zip(&self.st.enc_layers) {
            // x = norm1(x + self_attn(x, src padding)); x = norm2(x + ffn(x))
            self.self_attention(b, &layer.attn, ls, sc, &sc.x, ts, 0, Some(mask), None)?;
            Self::add_norm(b, &layer.norm_attn, sc, ts)?;
            self.ffn(b, &layer.ffn, ls, sc, &sc.x, ts)?;
            Self::add_norm(b, &layer.norm_ffn, sc, ts)?;
        }
        // cross-attention keys and values of every decoder layer, once per source
        for (layer, ls) in self.w.layers.iter().zip(&self.st.layers) {
            let (Some((cw, _)), Some(ck), Some(cv)) = (layer.cross.as_ref(), ls.cross_k.as_ref(), ls.cross_v.as_ref()) else { continue };
            b.matmul(ck, 0, &sc.x, 0, ts, &cw.k.w, cw.k.b.as_ref())?;
            b.matmul(cv, 0, &sc.x, 0, ts, &cw.v.w, cw.v.b.as_ref())?;
        }
        self.src = src.to_vec();
        Ok(())
    }

    /// Encoder-decoder decoder: the target tokens tgt[pos..] are new, tgt[..pos] are in the cache.
    pub fn run_decoder(&self, b: &mut B, tgt: &[u32], pos: usize, which: Logits) -> Result<()> {
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
        let sc = &self.st.dec;
        let (c, nh, hs, ts) = (cfg.d_model, cfg.num_heads, cfg.head_dim(), self.src.len());
        // Host writes first, so the whole pass goes out in one submission.
        // self: target key padding AND look-ahead over cached + new; cross: source key padding
        // (minus any cells an ablation blocks, model::inspect)
        let (cells, xcells) = (&self.hooks.mask_cells, &self.hooks.cross_cells);
        let self_mask = crate::mask::Mask::from_fn(t, pos + t, |i, j| j <= pos + i && tgt[j] != PAD_ID && !cells.contains(&(pos + i, j)));
        let cross = crate::mask::Mask::from_fn(t, self.src.len(), |i, j| self.src[j] != PAD_ID && !xcells.contains(&(pos + i, j)));
        let (Some(mask), Some(cross_mask)) = (sc.mask.as_ref(), sc.cross_mask.as_ref()) else {
            return Err(TfError::Input("the decoder's mask buffers are missing".into()));
        };
        b.write_f32(mask, 0, &self_mask.data)?;
        b.write_f32(cross_mask, 0, &cross.data)?;
        b.write_u32(&sc.ids, 0, &tgt[pos..])?;
        b.embedding(&sc.x, &self.w.embed, &sc.ids, t, (c as f32).sqrt())?;
        if let Some(pe) = &self.st.pe {
            b.add_rows(&sc.x, pe, t, pos)?;
        }
        self.hook_resid(b, HookPoint::Embed, &sc.x, &sc.xn, t, pos)?;
        for (li, (layer, ls)) in self.w.layers.iter().zip(&self.st.layers).enumerate() {
            // x = norm1(x + self_attn(x))
            self.self_attention(b, &layer.attn, ls, sc, &sc.x, t, pos, Some(mask), Some(li))?;
            Self::add_norm(b, &layer.norm_attn, sc, t)?;
            self.hook_resid(b, HookPoint::Mid(li), &sc.x, &sc.xn, t, pos)?;
            // x = norm2(x + cross_attn(x, encoder output))
            let (Some((cw, cn)), Some(ck), Some(cv), Some(cp)) =
                (layer.cross.as_ref(), ls.cross_k.as_ref(), ls.cross_v.as_ref(), ls.cross_probs.as_ref())
            else {
                return Err(TfError::Input("decoder layer without cross-attention".into()));
            };
            b.matmul(&sc.q, 0, &sc.x, 0, t, &cw.q.w, cw.q.b.as_ref())?;
            b.attention(&sc.att, cp, &sc.q, ck, cv, Some(cross_mask), &AttnShape::packed(t, ts, nh, nh, hs))?;
            b.matmul(&sc.tmp, 0, &sc.att, 0, t, &cw.o.w, cw.o.b.as_ref())?;
            Self::add_norm(b, cn, sc, t)?;
            // x = norm3(x + ffn(x))
            self.ffn(b, &layer.ffn, ls, sc, &sc.x, t)?;
            Self::add_norm(b, &layer.norm_ffn, sc, t)?;
            self.hook_resid(b, HookPoint::Block(li), &sc.x, &sc.xn, t, pos)?;
        }
        self.head(b, &sc.x, t, which)
    }

    pub fn layers(&self) -> &[Layer<B::T>] {
        &self.w.layers
    }
}
