//! The training forward and backward of the seed's encoder-decoder: post-norm stacks
//! (x = norm(x + sublayer(x))), sinusoidal positions on embeddings scaled by sqrt(C), the
//! decoder's self-attention causal and blind to padded target keys, the encoder's self-attention
//! and the cross-attention blind to padded source keys, `final_layer` with its bias, and the loss
//! over the targets that are not padding. B sequences of Ts source and Tt target tokens.

use crate::error::{Result, TfError};
use crate::mask::PAD_ID;
use crate::model::config::ModelConfig;
use crate::model::forward::attention::AttnW;
use crate::model::forward::ffn::Ffn;
use crate::model::forward::norm::Norm;
use crate::model::forward::weights::Layer;
use crate::ops::EwOp;
use crate::train::graph::Alloc;
use crate::train::ops::{BatchAttn, Train};
use crate::train::params::Params;

/// What one attention sub-layer keeps: its q, k, v, probabilities and output before the output
/// projection, and the residual sum its norm reads.
pub struct AttnActs<T> {
    pub q: T,
    pub k: T,
    pub v: T,
    pub probs: T,
    pub att: T,
    pub sum: T,
}

/// What one post-norm layer keeps: its input, self-attention, cross-attention (decoder), the
/// FFN's hidden values and the sums the norms read.
pub struct PostLayer<T> {
    pub input: T,
    pub selfa: AttnActs<T>,
    /// the norm output after self-attention (decoder: the cross-attention's query input)
    pub x1: T,
    pub cross: Option<AttnActs<T>>,
    /// the norm output after cross-attention (decoder) or = x1's role for the FFN (encoder)
    pub x2: Option<T>,
    pub h: T,
    pub a: T,
    pub ffn_sum: T,
}

pub struct EncDecActs<T> {
    pub b: usize,
    pub ts: usize,
    pub tt: usize,
    pub src: T,
    pub tgt: T,
    pub targets: T,
    /// key masks: source (B, Ts) and target (B, Tt) ids that are not padding, 1 / 0
    pub src_keys: T,
    pub tgt_keys: T,
    pub enc: Vec<PostLayer<T>>,
    pub enc_out: T,
    pub dec: Vec<PostLayer<T>>,
    pub dec_out: T,
    pub logits: T,
    pub losses: T,
    pub table: T,
    /// gradients: the current point of the decoder and of the encoder, a norm's input sum, scratch
    /// for the attention output and q, k, v, the FFN's hidden values, and the encoder output's
    /// gradient gathered from every cross-attention
    pub dcur: T,
    pub dsum: T,
    pub datt: T,
    pub dq: T,
    pub dk: T,
    pub dv: T,
    pub dh: T,
    pub da: T,
    pub denc: T,
    pub dsum_enc: T,
    pub datt_enc: T,
    pub dq_enc: T,
    pub dk_enc: T,
    pub dv_enc: T,
    pub dh_enc: T,
    pub da_enc: T,
}

fn attn_acts<T, A: Alloc<T>>(
    a: &mut A,
    l: &dyn Fn(&str) -> String,
    b: usize,
    tq: usize,
    tk: usize,
    nh: usize,
    c: usize,
) -> Result<AttnActs<T>> {
    Ok(AttnActs {
        q: a.f32(&l("q"), &[b * tq, c])?,
        k: a.f32(&l("k"), &[b * tk, c])?,
        v: a.f32(&l("v"), &[b * tk, c])?,
        probs: a.f32(&l("attention probabilities"), &[b, nh, tq, tk])?,
        att: a.f32(&l("attention output"), &[b * tq, c])?,
        sum: a.f32(&l("residual sum"), &[b * tq, c])?,
    })
}

impl<T> EncDecActs<T> {
    /// Every buffer of a step of B x (Ts, Tt), in one place.
    pub fn declare<A: Alloc<T>>(cfg: &ModelConfig, b: usize, ts: usize, tt: usize, a: &mut A) -> Result<EncDecActs<T>> {
        let (c, nh, f, v) = (cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.tgt_vocab_size);
        let mut enc = Vec::with_capacity(cfg.num_layers);
        let mut dec = Vec::with_capacity(cfg.num_layers);
        for (stack, t, list) in [("encoder", ts, &mut enc), ("decoder", tt, &mut dec)] {
            for li in 0..cfg.num_layers {
                let l = |n: &str| format!("{stack} layer {li} {n}");
                let cross = stack == "decoder";
                list.push(PostLayer {
                    input: a.f32(&l("input"), &[b * t, c])?,
                    selfa: attn_acts(a, &|n| l(&format!("self-attention {n}")), b, t, t, nh, c)?,
                    x1: a.f32(&l("norm1"), &[b * t, c])?,
                    cross: if cross { Some(attn_acts(a, &|n| l(&format!("cross-attention {n}")), b, t, ts, nh, c)?) } else { None },
                    x2: if cross { Some(a.f32(&l("norm2"), &[b * t, c])?) } else { None },
                    h: a.f32(&l("ffn pre-activation"), &[b * t, f])?,
                    a: a.f32(&l("ffn activation"), &[b * t, f])?,
                    ffn_sum: a.f32(&l("ffn residual sum"), &[b * t, c])?,
                });
            }
        }
        let (rs, rt) = (b * ts, b * tt);
        Ok(EncDecActs {
            b,
            ts,
            tt,
            src: a.u32("source ids", &[rs])?,
            tgt: a.u32("target input ids", &[rt])?,
            targets: a.u32("target output ids", &[rt])?,
            src_keys: a.f32("source key mask", &[rs])?,
            tgt_keys: a.f32("target key mask", &[rt])?,
            enc,
            enc_out: a.f32("encoder output", &[rs, c])?,
            dec,
            dec_out: a.f32("decoder output", &[rt, c])?,
            logits: a.f32("logits", &[rt, v])?,
            losses: a.f32("losses", &[rt])?,
            table: a.f32("sinusoidal table", &[cfg.max_seq_len, c])?,
            dcur: a.f32("grad decoder", &[rt, c])?,
            dsum: a.f32("grad decoder sum", &[rt, c])?,
            datt: a.f32("grad decoder attention output", &[rt, c])?,
            dq: a.f32("grad decoder q", &[rt, c])?,
            dk: a.f32("grad decoder k", &[rt.max(rs), c])?,
            dv: a.f32("grad decoder v", &[rt.max(rs), c])?,
            dh: a.f32("grad decoder ffn pre-activation", &[rt, f])?,
            da: a.f32("grad decoder ffn activation", &[rt, f])?,
            denc: a.f32("grad encoder", &[rs, c])?,
            dsum_enc: a.f32("grad encoder sum", &[rs, c])?,
            datt_enc: a.f32("grad encoder attention output", &[rs, c])?,
            dq_enc: a.f32("grad encoder q", &[rs, c])?,
            dk_enc: a.f32("grad encoder k", &[rs, c])?,
            dv_enc: a.f32("grad encoder v", &[rs, c])?,
            dh_enc: a.f32("grad encoder ffn pre-activation", &[rs, f])?,
            da_enc: a.f32("grad encoder ffn activation", &[rs, f])?,
        })
    }
}

/// The gradient scratch of one stack.
struct Grads<'a, T> {
    cur: &'a T,
    sum: &'a T,
    att: &'a T,
    q: &'a T,
    k: &'a T,
    v: &'a T,
    h: &'a T,
    a: &'a T,
}

/// The encoder-decoder's training graph at one batch shape.
pub struct EncDecGraph<B: Train> {
    pub cfg: ModelConfig,
    pub acts: EncDecActs<B::T>,
}

fn norm_of(n: &Norm<usize>) -> Result<usize> {
    n.b.ok_or_else(|| TfError::Internal("the encoder-decoder's norms are LayerNorms".into()))
}

impl<B: Train> EncDecGraph<B> {
    pub fn new(be: &mut B, cfg: &ModelConfig, b: usize, ts: usize, tt: usize) -> Result<EncDecGraph<B>> {
        if b == 0 || ts == 0 || tt == 0 {
            return Err(TfError::Input(format!("the batch must hold at least one sequence of one token (got {b} x {ts} / {tt})")));
        }
        if ts.max(tt) > cfg.max_seq_len {
            return Err(TfError::Input(format!(
                "sequences of {} tokens do not fit the model's context of {}",
                ts.max(tt),
                cfg.max_seq_len
            )));
        }
        let acts = EncDecActs::declare(cfg, b, ts, tt, &mut crate::train::graph::OnBackend(&*be))?;
        be.write_f32(&acts.table, 0, &crate::cpu::sinusoidal_table(cfg.max_seq_len, cfg.d_model))?;
        Ok(EncDecGraph { cfg: cfg.clone(), acts })
    }

    /// Writes the step's source, target input and target output ids (row-major) and the key
    /// masks; returns how many targets count (not padding).
    pub fn feed(&self, be: &mut B, src: &[u32], tgt_in: &[u32], tgt_out: &[u32]) -> Result<usize> {
        let a = &self.acts;
        if src.len() != a.b * a.ts || tgt_in.len() != a.b * a.tt || tgt_out.len() != a.b * a.tt {
            return Err(TfError::Input(format!("a batch of {} x ({}, {}) needs that many source and target ids", a.b, a.ts, a.tt)));
        }
        for (ids, v, what) in [
            (src, self.cfg.src_vocab_size, "source"),
            (tgt_in, self.cfg.tgt_vocab_size, "target"),
            (tgt_out, self.cfg.tgt_vocab_size, "target"),
        ] {
            if let Some(&bad) = ids.iter().find(|&&i| i as usize >= v) {
                return Err(TfError::Input(format!("{what} token id {bad} is out of range: the vocabulary has {v} tokens")));
            }
        }
        let keep = |ids: &[u32]| ids.iter().map(|&i| f32::from(u8::from(i != PAD_ID))).collect::<Vec<f32>>();
        be.write_u32(&a.src, 0, src)?;
        be.write_u32(&a.tgt, 0, tgt_in)?;
        be.write_u32(&a.targets, 0, tgt_out)?;
        be.write_f32(&a.src_keys, 0, &keep(src))?;
        be.write_f32(&a.tgt_keys, 0, &keep(tgt_in))?;
        Ok(tgt_out.iter().filter(|&&i| i != PAD_ID).count())
    }

    fn shape(&self, tq: usize, tk: usize, causal: bool) -> BatchAttn {
        BatchAttn::new(self.acts.b, tq, tk, (self.cfg.num_heads, self.cfg.num_heads, self.cfg.head_dim()), causal)
    }

    /// x (rows, C) = x + o(attention), then `out` = norm(sum): one post-norm attention sub-layer;
    /// q from `xq`, k and v from `xkv` (None: k and v already in `s`, the cross-attention's).
    #[allow(clippy::too_many_arguments)]
    fn attn_forward(
        &self,
        be: &mut B,
        ps: &Params<B::T>,
        w: &AttnW<usize>,
        s: &AttnActs<B::T>,
        xq: &B::T,
        xkv: &B::T,
        keys: &B::T,
        shape: &BatchAttn,
    ) -> Result<()> {
        let (p, pb) = (|i: usize| &ps.p[i], |b: Option<usize>| b.map(|i| &ps.p[i]));
        let (rq, rk) = (shape.b * shape.tq, shape.b * shape.tk);
        be.matmul(&s.q, 0, xq, 0, rq, p(w.q.w), pb(w.q.b))?;
        be.matmul(&s.k, 0, xkv, 0, rk, p(w.k.w), pb(w.k.b))?;
        be.matmul(&s.v, 0, xkv, 0, rk, p(w.v.w), pb(w.v.b))?;
        be.attention_batch(&s.att, &s.probs, &s.q, &s.k, &s.v, Some(keys), shape)?;
        be.matmul(&s.sum, 0, &s.att, 0, rq, p(w.o.w), pb(w.o.b))?;
        be.inplace(&s.sum, Some(xq), rq * self.cfg.d_model, EwOp::Add)
    }

    fn ln(be: &mut B, ps: &Params<B::T>, n: &Norm<usize>, out: &B::T, x: &B::T, rows: usize) -> Result<()> {
        be.layernorm(out, x, &ps.p[n.w], &ps.p[norm_of(n)?], rows, n.eps)
    }

    fn ffn_forward(
        &self,
        be: &mut B,
        ps: &Params<B::T>,
        lw: &Layer<usize>,
        la: &PostLayer<B::T>,
        x: &B::T,
        out: &B::T,
        rows: usize,
    ) -> Result<()> {
        let fb = lw.ffn_block()?;
        let Ffn::Dense { l1, l2, act } = &fb.net else { return Err(TfError::Internal("the encoder-decoder's FFN is dense".into())) };
        let (p, pb) = (|i: usize| &ps.p[i], |b: Option<usize>| b.map(|i| &ps.p[i]));
        be.matmul(&la.h, 0, x, 0, rows, p(l1.w), pb(l1.b))?;
        be.activation(&la.a, &la.h, rows * self.cfg.d_ff, *act)?;
        be.matmul(&la.ffn_sum, 0, &la.a, 0, rows, p(l2.w), pb(l2.b))?;
        be.inplace(&la.ffn_sum, Some(x), rows * self.cfg.d_model, EwOp::Add)?;
        Self::ln(be, ps, &fb.norm, out, &la.ffn_sum, rows)
    }

    /// The forward and the loss (each target's loss in `acts.losses`; the logits replaced by the
    /// loss's gradient times `scale`, 0 at padding).
    pub fn forward(&self, be: &mut B, ps: &Params<B::T>, scale: f32) -> Result<()> {
        let (a, w, c) = (&self.acts, &ps.layout, self.cfg.d_model);
        let (rs, rt) = (a.b * a.ts, a.b * a.tt);
        let emb = w.enc_embed.ok_or_else(|| TfError::Internal("no encoder embedding".into()))?;
        let sc = (c as f32).sqrt();
        // encoder: x = norm1(x + self_attn(x)); x = norm2(x + ffn(x))
        let first = a.enc.first().map_or(&a.enc_out, |l| &l.input);
        be.embedding(first, &ps.p[emb], &a.src, rs, sc)?;
        be.add_positions(first, &a.table, rs, a.ts)?;
        let enc_shape = self.shape(a.ts, a.ts, false);
        for (li, (lw, l)) in w.enc_layers.iter().zip(&a.enc).enumerate() {
            let next = a.enc.get(li + 1).map_or(&a.enc_out, |n| &n.input);
            self.attn_forward(be, ps, &lw.attn, &l.selfa, &l.input, &l.input, &a.src_keys, &enc_shape)?;
            Self::ln(be, ps, &lw.norm_attn, &l.x1, &l.selfa.sum, rs)?;
            self.ffn_forward(be, ps, lw, l, &l.x1, next, rs)?;
        }
        // decoder: y = norm1(y + self_attn(y)); y = norm2(y + cross_attn(y, enc)); y = norm3(y + ffn(y))
        let first = a.dec.first().map_or(&a.dec_out, |l| &l.input);
        be.embedding(first, &ps.p[w.embed], &a.tgt, rt, sc)?;
        be.add_positions(first, &a.table, rt, a.tt)?;
        let (self_shape, cross_shape) = (self.shape(a.tt, a.tt, true), self.shape(a.tt, a.ts, false));
        for (li, (lw, l)) in w.layers.iter().zip(&a.dec).enumerate() {
            let next = a.dec.get(li + 1).map_or(&a.dec_out, |n| &n.input);
            let (Some((cw, cn)), Some(cs), Some(x2)) = (&lw.cross, &l.cross, &l.x2) else {
                return Err(TfError::Internal("a decoder layer without cross-attention".into()));
            };
            self.attn_forward(be, ps, &lw.attn, &l.selfa, &l.input, &l.input, &a.tgt_keys, &self_shape)?;
            Self::ln(be, ps, &lw.norm_attn, &l.x1, &l.selfa.sum, rt)?;
            self.attn_forward(be, ps, cw, cs, &l.x1, &a.enc_out, &a.src_keys, &cross_shape)?;
            Self::ln(be, ps, cn, x2, &cs.sum, rt)?;
            self.ffn_forward(be, ps, lw, l, x2, next, rt)?;
        }
        let hw = w.head.as_ref().ok_or_else(|| TfError::Internal("no final layer".into()))?;
        be.matmul(&a.logits, 0, &a.dec_out, 0, rt, &ps.p[hw.w], hw.b.map(|b| &ps.p[b]))?;
        be.cross_entropy(&a.losses, &a.logits, &a.targets, rt, scale, Some(PAD_ID))
    }

    /// With g.cur = d(norm(sum)), leaves d(sum) in g.sum: the post-norm's backward.
    fn ln_backward(be: &mut B, ps: &Params<B::T>, n: &Norm<usize>, g: &Grads<B::T>, sum: &B::T, rows: usize, c: usize) -> Result<()> {
        be.fill_zero(g.sum, rows * c)?;
        be.layernorm_backward(g.sum, &ps.g[n.w], &ps.g[norm_of(n)?], g.cur, sum, &ps.p[n.w], rows, n.eps)
    }

    /// With g.sum = d(x + ffn(x)), leaves d(x) in g.cur.
    fn ffn_backward(
        &self,
        be: &mut B,
        ps: &Params<B::T>,
        lw: &Layer<usize>,
        l: &PostLayer<B::T>,
        x: &B::T,
        g: &Grads<B::T>,
        rows: usize,
    ) -> Result<()> {
        let Ffn::Dense { l1, l2, act } = &lw.ffn_block()?.net else {
            return Err(TfError::Internal("the encoder-decoder's FFN is dense".into()));
        };
        let (p, gr, gb) = (|i: usize| &ps.p[i], |i: usize| &ps.g[i], |b: Option<usize>| b.map(|i| &ps.g[i]));
        be.matmul_backward(Some((g.a, false)), gr(l2.w), gb(l2.b), g.sum, &l.a, p(l2.w), rows)?;
        be.act_backward(g.h, g.a, &l.h, rows * self.cfg.d_ff, *act)?;
        be.matmul_backward(Some((g.cur, false)), gr(l1.w), gb(l1.b), g.h, x, p(l1.w), rows)?;
        be.inplace(g.cur, Some(g.sum), rows * self.cfg.d_model, EwOp::Add)
    }

    /// With g.sum = d(xq + o(attention)), leaves d(xq) in g.cur; the gradient of xkv goes to
    /// `dkv` (+=) when given (the cross-attention's encoder output), else into g.cur with xq's.
    #[allow(clippy::too_many_arguments)]
    fn attn_backward(
        &self,
        be: &mut B,
        ps: &Params<B::T>,
        w: &AttnW<usize>,
        s: &AttnActs<B::T>,
        xq: &B::T,
        xkv: &B::T,
        dkv: Option<&B::T>,
        g: &Grads<B::T>,
        shape: &BatchAttn,
    ) -> Result<()> {
        let (p, gr, gb) = (|i: usize| &ps.p[i], |i: usize| &ps.g[i], |b: Option<usize>| b.map(|i| &ps.g[i]));
        let (rq, rk) = (shape.b * shape.tq, shape.b * shape.tk);
        be.matmul_backward(Some((g.att, false)), gr(w.o.w), gb(w.o.b), g.sum, &s.att, p(w.o.w), rq)?;
        be.attention_backward(g.q, g.k, g.v, g.att, &s.probs, &s.q, &s.k, &s.v, shape)?;
        be.matmul_backward(Some((g.cur, false)), gr(w.q.w), gb(w.q.b), g.q, xq, p(w.q.w), rq)?;
        let (dkv, acc) = match dkv {
            Some(d) => (d, true),
            None => (g.cur, true),
        };
        be.matmul_backward(Some((dkv, acc)), gr(w.k.w), gb(w.k.b), g.k, xkv, p(w.k.w), rk)?;
        be.matmul_backward(Some((dkv, true)), gr(w.v.w), gb(w.v.b), g.v, xkv, p(w.v.w), rk)?;
        be.inplace(g.cur, Some(g.sum), rq * self.cfg.d_model, EwOp::Add)
    }

    /// The backward of the last `forward`: every parameter's gradient added to `ps.g`.
    pub fn backward(&self, be: &mut B, ps: &Params<B::T>) -> Result<()> {
        let (a, w, c) = (&self.acts, &ps.layout, self.cfg.d_model);
        let (rs, rt) = (a.b * a.ts, a.b * a.tt);
        let hw = w.head.as_ref().ok_or_else(|| TfError::Internal("no final layer".into()))?;
        be.matmul_backward(Some((&a.dcur, false)), &ps.g[hw.w], hw.b.map(|b| &ps.g[b]), &a.logits, &a.dec_out, &ps.p[hw.w], rt)?;
        be.fill_zero(&a.denc, rs * c)?;
        let g = Grads { cur: &a.dcur, sum: &a.dsum, att: &a.datt, q: &a.dq, k: &a.dk, v: &a.dv, h: &a.dh, a: &a.da };
        let (self_shape, cross_shape) = (self.shape(a.tt, a.tt, true), self.shape(a.tt, a.ts, false));
        for (lw, l) in w.layers.iter().zip(&a.dec).rev() {
            let (Some((cw, cn)), Some(cs), Some(x2)) = (&lw.cross, &l.cross, &l.x2) else {
                return Err(TfError::Internal("a decoder layer without cross-attention".into()));
            };
            Self::ln_backward(be, ps, &lw.ffn_block()?.norm, &g, &l.ffn_sum, rt, c)?;
            self.ffn_backward(be, ps, lw, l, x2, &g, rt)?;
            Self::ln_backward(be, ps, cn, &g, &cs.sum, rt, c)?;
            self.attn_backward(be, ps, cw, cs, &l.x1, &a.enc_out, Some(&a.denc), &g, &cross_shape)?;
            Self::ln_backward(be, ps, &lw.norm_attn, &g, &l.selfa.sum, rt, c)?;
            self.attn_backward(be, ps, &lw.attn, &l.selfa, &l.input, &l.input, None, &g, &self_shape)?;
        }
        be.embedding_backward(&ps.g[w.embed], &a.dcur, &a.tgt, rt, (c as f32).sqrt())?;
        let g = Grads {
            cur: &a.denc,
            sum: &a.dsum_enc,
            att: &a.datt_enc,
            q: &a.dq_enc,
            k: &a.dk_enc,
            v: &a.dv_enc,
            h: &a.dh_enc,
            a: &a.da_enc,
        };
        let enc_shape = self.shape(a.ts, a.ts, false);
        for (lw, l) in w.enc_layers.iter().zip(&a.enc).rev() {
            Self::ln_backward(be, ps, &lw.ffn_block()?.norm, &g, &l.ffn_sum, rs, c)?;
            self.ffn_backward(be, ps, lw, l, &l.x1, &g, rs)?;
            Self::ln_backward(be, ps, &lw.norm_attn, &g, &l.selfa.sum, rs, c)?;
            self.attn_backward(be, ps, &lw.attn, &l.selfa, &l.input, &l.input, None, &g, &enc_shape)?;
        }
        let emb = w.enc_embed.ok_or_else(|| TfError::Internal("no encoder embedding".into()))?;
        be.embedding_backward(&ps.g[emb], &a.denc, &a.src, rs, (c as f32).sqrt())
    }
}
