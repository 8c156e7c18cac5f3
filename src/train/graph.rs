//! The training forward, which keeps what the backward needs, and the backward, for the decoder
//! families: the seed's decoder-only LLM and GPT-2 (pre-norm LayerNorm, sinusoidal or learned
//! positions, ReLU or GELU-tanh, biases, tied or untied head) and the Llama (RMSNorm, RoPE, GQA,
//! SwiGLU). B sequences of T tokens run as B*T stacked rows; attention runs per sequence.
//!
//! Every buffer of a step is declared once, in [`Acts::declare`]: allocation and the training
//! plan's memory (`train::memory`) walk the same list.

use crate::error::{Result, TfError};
use crate::model::config::{Arch, ModelConfig, Positions};
use crate::model::forward::ffn::Ffn;
use crate::model::forward::norm::Norm;
use crate::model::forward::weights::{FfnBlock, Layer};
use crate::ops::{EwOp, RopeShape};
use crate::train::moe::{MoeActs, MoeLayerActs};
use crate::train::ops::{BatchAttn, Train};
use crate::train::params::Params;

/// Where a declared buffer goes: allocated on a backend, or counted.
pub trait Alloc<T> {
    fn f32(&mut self, label: &str, shape: &[usize]) -> Result<T>;
    fn u32(&mut self, label: &str, shape: &[usize]) -> Result<T>;
}

/// What one layer keeps for the backward.
pub struct LayerActs<T> {
    /// the residual stream at the layer's input, and after its attention (the FFN's input)
    pub res: T,
    pub mid: T,
    /// the norms' outputs (the projections' inputs)
    pub xn1: T,
    pub xn2: T,
    pub q: T,
    pub k: T,
    pub v: T,
    pub probs: T,
    /// attention output before the output projection
    pub att: T,
    /// the FFN's pre-activation (SwiGLU: the gate), its up projection (SwiGLU) and its activation
    pub h: T,
    pub up: Option<T>,
    pub a: T,
    /// a mixture-of-experts layer's routing and expert outputs (`h` and `a` are then one expert's)
    pub moe: Option<MoeLayerActs<T>>,
}

/// Every buffer of a training step over B sequences of T tokens.
pub struct Acts<T> {
    pub b: usize,
    pub t: usize,
    pub ids: T,
    pub targets: T,
    pub losses: T,
    pub layers: Vec<LayerActs<T>>,
    /// the residual stream after the last layer, the final norm's output, the logits (their
    /// gradient after the loss)
    pub res_out: T,
    pub xf: T,
    pub logits: T,
    /// gradients: of the residual stream, of a norm's output, of the attention output and of q,
    /// k, v, of the FFN's hidden activations
    pub dres: T,
    pub dxn: T,
    pub datt: T,
    pub dq: T,
    pub dk: T,
    pub dv: T,
    pub dh: T,
    pub da: T,
    pub dup: Option<T>,
    /// the sinusoidal table (S, C) or the RoPE table (S, HS/2, 2), when the model uses one
    pub table: Option<T>,
    /// the buffers the MoE layers share, when the model has experts
    pub moe: Option<MoeActs<T>>,
}

fn unsupported(cfg: &ModelConfig) -> Option<String> {
    match cfg.arch {
        Arch::EncoderDecoder => Some("the encoder-decoder trains on its own graph (train::encdec)".into()),
        _ => None,
    }
}

impl<T> Acts<T> {
    /// The buffers of a step of B x T for `cfg`, in one place.
    pub fn declare<A: Alloc<T>>(cfg: &ModelConfig, b: usize, t: usize, a: &mut A) -> Result<Acts<T>> {
        if let Some(why) = unsupported(cfg) {
            return Err(TfError::Input(why));
        }
        let (c, nh, hs, nkv) = (cfg.d_model, cfg.num_heads, cfg.head_dim(), cfg.num_kv_heads);
        let rows = b * t;
        let f = match &cfg.moe {
            Some(m) => m.expert_dim,
            None if cfg.arch == Arch::Llama => cfg.llama_hidden_dim(),
            None => cfg.d_ff,
        };
        let swiglu = cfg.arch == Arch::Llama;
        let v = cfg.vocab_size;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for li in 0..cfg.num_layers {
            let l = |n: &str| format!("layer {li} {n}");
            layers.push(LayerActs {
                res: a.f32(&l("residual"), &[rows, c])?,
                mid: a.f32(&l("residual after attention"), &[rows, c])?,
                xn1: a.f32(&l("norm1"), &[rows, c])?,
                xn2: a.f32(&l("norm2"), &[rows, if cfg.attention_only { 0 } else { c }])?,
                q: a.f32(&l("q"), &[rows, nh * hs])?,
                k: a.f32(&l("k"), &[rows, nkv * hs])?,
                v: a.f32(&l("v"), &[rows, nkv * hs])?,
                probs: a.f32(&l("attention probabilities"), &[b, nh, t, t])?,
                att: a.f32(&l("attention output"), &[rows, nh * hs])?,
                h: a.f32(&l("ffn pre-activation"), &[rows, f])?,
                up: if swiglu { Some(a.f32(&l("ffn up"), &[rows, f])?) } else { None },
                a: a.f32(&l("ffn activation"), &[rows, f])?,
                moe: MoeLayerActs::declare(cfg, rows, li, a)?,
            });
        }
        let table = match cfg.positions {
            Positions::Sinusoidal => Some(a.f32("sinusoidal table", &[cfg.max_seq_len, c])?),
            Positions::Rope => Some(a.f32("rope table", &[cfg.max_seq_len, hs / 2, 2])?),
            Positions::Learned => None,
        };
        Ok(Acts {
            b,
            t,
            ids: a.u32("ids", &[rows])?,
            targets: a.u32("targets", &[rows])?,
            losses: a.f32("losses", &[rows])?,
            layers,
            res_out: a.f32("residual out", &[rows, c])?,
            xf: a.f32("final norm", &[rows, c])?,
            logits: a.f32("logits", &[rows, v])?,
            dres: a.f32("grad residual", &[rows, c])?,
            dxn: a.f32("grad norm output", &[rows, c])?,
            datt: a.f32("grad attention output", &[rows, nh * hs])?,
            dq: a.f32("grad q", &[rows, nh * hs])?,
            dk: a.f32("grad k", &[rows, nkv * hs])?,
            dv: a.f32("grad v", &[rows, nkv * hs])?,
            dh: a.f32("grad ffn pre-activation", &[rows, f])?,
            da: a.f32("grad ffn activation", &[rows, f])?,
            dup: if swiglu { Some(a.f32("grad ffn up", &[rows, f])?) } else { None },
            table,
            moe: MoeActs::declare(cfg, rows, a)?,
        })
    }
}

/// Allocates on a backend.
pub struct OnBackend<'a, B>(pub &'a B);

impl<B: Train> Alloc<B::T> for OnBackend<'_, B> {
    fn f32(&mut self, label: &str, shape: &[usize]) -> Result<B::T> {
        self.0.zeros(shape, label)
    }
    fn u32(&mut self, label: &str, shape: &[usize]) -> Result<B::T> {
        self.0.zeros_u32(shape, label)
    }
}

/// The training graph of one model at one batch shape.
pub struct Graph<B: Train> {
    pub cfg: ModelConfig,
    pub acts: Acts<B::T>,
}

impl<B: Train> Graph<B> {
    pub fn new(be: &mut B, cfg: &ModelConfig, b: usize, t: usize) -> Result<Graph<B>> {
        if b == 0 || t == 0 {
            return Err(TfError::Input(format!("the batch must hold at least one sequence of one token (got {b} x {t})")));
        }
        if t > cfg.max_seq_len {
            return Err(TfError::Input(format!("sequences of {t} tokens do not fit the model's context of {}", cfg.max_seq_len)));
        }
        if cfg.parallel_residual {
            return Err(TfError::Input(
                "training a model with a parallel residual (GPT-NeoX's use_parallel_residual) is not supported yet".into(),
            ));
        }
        let acts = Acts::declare(cfg, b, t, &mut OnBackend(&*be))?;
        match (&acts.table, cfg.positions) {
            (Some(tab), Positions::Sinusoidal) => be.write_f32(tab, 0, &crate::cpu::sinusoidal_table(cfg.max_seq_len, cfg.d_model))?,
            (Some(tab), Positions::Rope) => be.write_f32(tab, 0, &cfg.rope_table(cfg.max_seq_len))?,
            _ => {}
        }
        Ok(Graph { cfg: cfg.clone(), acts })
    }

    fn rows(&self) -> usize {
        self.acts.b * self.acts.t
    }

    fn norm(be: &mut B, ps: &Params<B::T>, n: &Norm<usize>, out: &B::T, x: &B::T, rows: usize) -> Result<()> {
        match n.b {
            Some(bias) => be.layernorm(out, x, &ps.p[n.w], &ps.p[bias], rows, n.eps),
            None => be.rmsnorm(out, x, &ps.p[n.w], rows, n.eps),
        }
    }

    /// dx += the norm's backward of dy at input x; its gain (and shift) gradients added.
    fn norm_backward(be: &mut B, ps: &Params<B::T>, n: &Norm<usize>, dx: &B::T, dy: &B::T, x: &B::T, rows: usize) -> Result<()> {
        match n.b {
            Some(bias) => be.layernorm_backward(dx, &ps.g[n.w], &ps.g[bias], dy, x, &ps.p[n.w], rows, n.eps),
            None => be.rmsnorm_backward(dx, &ps.g[n.w], dy, x, &ps.p[n.w], rows, n.eps),
        }
    }

    fn rope_shapes(&self, nh: usize) -> impl Iterator<Item = RopeShape> {
        let (t, hs) = (self.acts.t, self.cfg.head_dim());
        (0..self.acts.b).map(move |b| RopeShape { t, nh, hs, start_pos: 0, row_stride: nh * hs, offset: b * t * nh * hs })
    }

    fn attn_shape(&self) -> BatchAttn {
        BatchAttn::new(self.acts.b, self.acts.t, self.acts.t, (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim()), true)
    }

    /// Writes the step's ids and targets (B*T each, row-major).
    pub fn feed(&self, be: &mut B, ids: &[u32], targets: &[u32]) -> Result<()> {
        let rows = self.rows();
        if ids.len() != rows || targets.len() != rows {
            return Err(TfError::Input(format!(
                "a batch of {} x {} needs {rows} ids and targets, got {} and {}",
                self.acts.b,
                self.acts.t,
                ids.len(),
                targets.len()
            )));
        }
        let v = self.cfg.vocab_size;
        if let Some(&bad) = ids.iter().chain(targets).find(|&&i| i as usize >= v) {
            return Err(TfError::Input(format!("token id {bad} is out of range: the vocabulary has {v} tokens")));
        }
        be.write_u32(&self.acts.ids, 0, ids)?;
        be.write_u32(&self.acts.targets, 0, targets)
    }

    /// The forward over the fed batch and the loss: each row's loss in `acts.losses`, and the
    /// logits replaced by the loss's gradient times `scale` (1 / the rows the step averages over).
    pub fn forward(&self, be: &mut B, ps: &Params<B::T>, scale: f32) -> Result<()> {
        let (cfg, a, w) = (&self.cfg, &self.acts, &ps.layout);
        let rows = self.rows();
        let first = a.layers.first().map_or(&a.res_out, |l| &l.res);
        be.embedding(first, &ps.p[w.embed], &a.ids, rows, cfg.embed_scale())?;
        match (cfg.positions, &a.table, w.pos_embed) {
            (Positions::Sinusoidal, Some(tab), _) => be.add_positions(first, tab, rows, a.t)?,
            (Positions::Learned, _, Some(pe)) => be.add_positions(first, &ps.p[pe], rows, a.t)?,
            _ => {}
        }
        for (li, (lw, la)) in w.layers.iter().zip(&a.layers).enumerate() {
            let next = a.layers.get(li + 1).map_or(&a.res_out, |l| &l.res);
            self.layer_forward(be, ps, lw, la, next)?;
        }
        let fnorm = w.final_norm.as_ref().ok_or_else(|| TfError::Internal("no final norm".into()))?;
        Self::norm(be, ps, fnorm, &a.xf, &a.res_out, rows)?;
        let (hw, hb) = w.head();
        be.matmul(&a.logits, 0, &a.xf, 0, rows, &ps.p[*hw], hb.map(|b| &ps.p[*b]))?;
        be.cross_entropy(&a.losses, &a.logits, &a.targets, rows, scale, None)
    }

    fn layer_forward(&self, be: &mut B, ps: &Params<B::T>, lw: &Layer<usize>, la: &LayerActs<B::T>, next: &B::T) -> Result<()> {
        let (rows, cfg) = (self.rows(), &self.cfg);
        let p = |i: usize| &ps.p[i];
        let pb = |b: Option<usize>| b.map(|i| &ps.p[i]);
        let at = &lw.attn;
        Self::norm(be, ps, &lw.norm_attn, &la.xn1, &la.res, rows)?;
        be.matmul(&la.q, 0, &la.xn1, 0, rows, p(at.q.w), pb(at.q.b))?;
        be.matmul(&la.k, 0, &la.xn1, 0, rows, p(at.k.w), pb(at.k.b))?;
        be.matmul(&la.v, 0, &la.xn1, 0, rows, p(at.v.w), pb(at.v.b))?;
        if let (Positions::Rope, Some(tab)) = (cfg.positions, &self.acts.table) {
            for s in self.rope_shapes(cfg.num_heads) {
                be.rope(&la.q, tab, &s)?;
            }
            for s in self.rope_shapes(cfg.num_kv_heads) {
                be.rope(&la.k, tab, &s)?;
            }
        }
        be.attention_batch(&la.att, &la.probs, &la.q, &la.k, &la.v, None, &self.attn_shape())?;
        be.matmul(&la.mid, 0, &la.att, 0, rows, p(at.o.w), pb(at.o.b))?;
        let n = rows * cfg.d_model;
        be.inplace(&la.mid, Some(&la.res), n, EwOp::Add)?;
        // an attention-only block ends here
        let Some(fb) = &lw.ffn else { return be.copy(next, &la.mid, n) };
        Self::norm(be, ps, &fb.norm, &la.xn2, &la.mid, rows)?;
        match &fb.net {
            Ffn::Dense { l1, l2, act } => {
                be.matmul(&la.h, 0, &la.xn2, 0, rows, p(l1.w), pb(l1.b))?;
                be.activation(&la.a, &la.h, cfg.d_ff * rows, *act)?;
                be.matmul(next, 0, &la.a, 0, rows, p(l2.w), pb(l2.b))?;
            }
            Ffn::SwiGlu { w1, w2, w3 } => {
                let up = la.up.as_ref().ok_or_else(|| TfError::Internal("SwiGLU without its up buffer".into()))?;
                be.matmul(&la.h, 0, &la.xn2, 0, rows, p(w1.w), None)?;
                be.matmul(up, 0, &la.xn2, 0, rows, p(w3.w), None)?;
                let f = cfg.llama_hidden_dim() * rows;
                be.copy(&la.a, &la.h, f)?;
                be.inplace(&la.a, Some(up), f, EwOp::SwiGlu)?;
                be.matmul(next, 0, &la.a, 0, rows, p(w2.w), None)?;
            }
            Ffn::Moe { router, experts } => self.moe_forward(be, ps, router, experts, la, next)?,
        }
        be.inplace(next, Some(&la.mid), n, EwOp::Add)
    }

    /// The backward of the last `forward`: every parameter's gradient added to `ps.g`.
    pub fn backward(&self, be: &mut B, ps: &Params<B::T>) -> Result<()> {
        let (cfg, a, w) = (&self.cfg, &self.acts, &ps.layout);
        let rows = self.rows();
        let (hw, hb) = w.head();
        be.matmul_backward(Some((&a.dxn, false)), &ps.g[*hw], hb.map(|b| &ps.g[*b]), &a.logits, &a.xf, &ps.p[*hw], rows)?;
        be.fill_zero(&a.dres, rows * cfg.d_model)?;
        let fnorm = w.final_norm.as_ref().ok_or_else(|| TfError::Internal("no final norm".into()))?;
        Self::norm_backward(be, ps, fnorm, &a.dres, &a.dxn, &a.res_out, rows)?;
        for (lw, la) in w.layers.iter().zip(&a.layers).rev() {
            self.layer_backward(be, ps, lw, la)?;
        }
        be.embedding_backward(&ps.g[w.embed], &a.dres, &a.ids, rows, cfg.embed_scale())?;
        if let (Positions::Learned, Some(pe)) = (cfg.positions, w.pos_embed) {
            be.positions_backward(&ps.g[pe], &a.dres, rows, a.t)?;
        }
        Ok(())
    }

    /// With `acts.dres` = the gradient of the layer's output, leaves the gradient of its input there.
    fn layer_backward(&self, be: &mut B, ps: &Params<B::T>, lw: &Layer<usize>, la: &LayerActs<B::T>) -> Result<()> {
        // out = mid + ffn(norm2(mid)), or out = mid (attention-only)
        if let Some(fb) = &lw.ffn {
            self.ffn_backward(be, ps, fb, la)?;
        }
        self.attention_backward(be, ps, lw, la)
    }

    /// With `acts.dres` = the gradient of out = mid + ffn(norm(mid)), leaves the gradient of mid there.
    fn ffn_backward(&self, be: &mut B, ps: &Params<B::T>, fb: &FfnBlock<usize>, la: &LayerActs<B::T>) -> Result<()> {
        let (a, cfg, rows) = (&self.acts, &self.cfg, self.rows());
        let (p, g) = (|i: usize| &ps.p[i], |i: usize| &ps.g[i]);
        let gb = |b: Option<usize>| b.map(|i| &ps.g[i]);
        match &fb.net {
            Ffn::Dense { l1, l2, act } => {
                be.matmul_backward(Some((&a.da, false)), g(l2.w), gb(l2.b), &a.dres, &la.a, p(l2.w), rows)?;
                be.act_backward(&a.dh, &a.da, &la.h, rows * cfg.d_ff, *act)?;
                be.matmul_backward(Some((&a.dxn, false)), g(l1.w), gb(l1.b), &a.dh, &la.xn2, p(l1.w), rows)?;
            }
            Ffn::SwiGlu { w1, w2, w3 } => {
                let (Some(up), Some(dup)) = (la.up.as_ref(), a.dup.as_ref()) else {
                    return Err(TfError::Internal("SwiGLU without its up buffers".into()));
                };
                be.matmul_backward(Some((&a.da, false)), g(w2.w), None, &a.dres, &la.a, p(w2.w), rows)?;
                be.swiglu_backward(&a.dh, dup, &a.da, &la.h, up, rows * cfg.llama_hidden_dim())?;
                be.matmul_backward(Some((&a.dxn, false)), g(w1.w), None, &a.dh, &la.xn2, p(w1.w), rows)?;
                be.matmul_backward(Some((&a.dxn, true)), g(w3.w), None, dup, &la.xn2, p(w3.w), rows)?;
            }
            Ffn::Moe { router, experts } => self.moe_backward(be, ps, router, experts, la)?,
        }
        Self::norm_backward(be, ps, &fb.norm, &a.dres, &a.dxn, &la.mid, rows)
    }

    /// With `acts.dres` = the gradient of mid = res + o(attention(q, k, v of norm1(res))), leaves
    /// the gradient of res there.
    fn attention_backward(&self, be: &mut B, ps: &Params<B::T>, lw: &Layer<usize>, la: &LayerActs<B::T>) -> Result<()> {
        let (a, cfg, rows) = (&self.acts, &self.cfg, self.rows());
        let (p, g) = (|i: usize| &ps.p[i], |i: usize| &ps.g[i]);
        let gb = |b: Option<usize>| b.map(|i| &ps.g[i]);
        let at = &lw.attn;
        be.matmul_backward(Some((&a.datt, false)), g(at.o.w), gb(at.o.b), &a.dres, &la.att, p(at.o.w), rows)?;
        be.attention_backward(&a.dq, &a.dk, &a.dv, &a.datt, &la.probs, &la.q, &la.k, &la.v, &self.attn_shape())?;
        if let (Positions::Rope, Some(tab)) = (cfg.positions, &a.table) {
            for s in self.rope_shapes(cfg.num_heads) {
                be.rope_backward(&a.dq, tab, &s)?;
            }
            for s in self.rope_shapes(cfg.num_kv_heads) {
                be.rope_backward(&a.dk, tab, &s)?;
            }
        }
        be.matmul_backward(Some((&a.dxn, false)), g(at.q.w), gb(at.q.b), &a.dq, &la.xn1, p(at.q.w), rows)?;
        be.matmul_backward(Some((&a.dxn, true)), g(at.k.w), gb(at.k.b), &a.dk, &la.xn1, p(at.k.w), rows)?;
        be.matmul_backward(Some((&a.dxn, true)), g(at.v.w), gb(at.v.b), &a.dv, &la.xn1, p(at.v.w), rows)?;
        Self::norm_backward(be, ps, &lw.norm_attn, &a.dres, &a.dxn, &la.res, rows)
    }
}
