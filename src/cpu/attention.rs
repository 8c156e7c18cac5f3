//! Masked scaled dot-product attention per head, with grouped-query attention.

use crate::error::{ensure, Result};

/// Where Q, K, V live and which keys each query may see. Strides and offsets are in floats, so the
/// same op reads q/k/v from a fused QKV buffer or from a KV cache.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    /// Tq: query rows; Tk: key rows
    pub tq: usize,
    pub tk: usize,
    /// NH query heads, NKV key/value heads (NH % NKV == 0), HS head size
    pub nh: usize,
    pub nkv: usize,
    pub hs: usize,
    /// Some(offset): causal, query i may see key j iff j <= i + offset (offset = cached length).
    pub causal: Option<usize>,
    /// 1 / sqrt(HS) normally
    pub scale: f32,
    pub q_offset: usize,
    pub q_stride: usize,
    pub k_offset: usize,
    pub k_stride: usize,
    pub v_offset: usize,
    pub v_stride: usize,
}

impl AttnShape {
    /// Packed q (Tq, NH*HS), k and v (Tk, NKV*HS), each in its own buffer.
    pub fn packed(tq: usize, tk: usize, nh: usize, nkv: usize, hs: usize) -> Self {
        AttnShape {
            tq,
            tk,
            nh,
            nkv,
            hs,
            causal: None,
            scale: 1.0 / (hs as f32).sqrt(),
            q_offset: 0,
            q_stride: nh * hs,
            k_offset: 0,
            k_stride: nkv * hs,
            v_offset: 0,
            v_stride: nkv * hs,
        }
    }
    pub fn with_causal(mut self, offset: usize) -> Self {
        self.causal = Some(offset);
        self
    }
    /// Query head h reads KV head h / (NH / NKV).
    pub fn kv_head(&self, h: usize) -> usize {
        h / (self.nh / self.nkv)
    }
    pub fn allowed(&self, mask: Option<&[f32]>, i: usize, j: usize) -> bool {
        let m = mask.is_none_or(|m| m[i * self.tk + j] != 0.0);
        let c = self.causal.is_none_or(|off| j <= i + off);
        m && c
    }
    pub fn check(&self, op: &'static str, q: usize, k: usize, v: usize, mask: Option<usize>) -> Result<()> {
        let s = self;
        ensure(s.nh > 0 && s.nkv > 0 && s.hs > 0 && s.tq > 0 && s.tk > 0, op, || format!("empty shape {s:?}"))?;
        ensure(s.nh.is_multiple_of(s.nkv), op, || format!("num_heads {} is not a multiple of num_kv_heads {}", s.nh, s.nkv))?;
        let need = |off: usize, stride: usize, rows: usize, width: usize| off + (rows - 1) * stride + width;
        ensure(q >= need(s.q_offset, s.q_stride, s.tq, s.nh * s.hs), op, || {
            format!("q has {q} values, too few for Tq={} NH={} HS={} stride {}", s.tq, s.nh, s.hs, s.q_stride)
        })?;
        ensure(k >= need(s.k_offset, s.k_stride, s.tk, s.nkv * s.hs), op, || {
            format!("k has {k} values, too few for Tk={} NKV={} HS={} stride {}", s.tk, s.nkv, s.hs, s.k_stride)
        })?;
        ensure(v >= need(s.v_offset, s.v_stride, s.tk, s.nkv * s.hs), op, || {
            format!("v has {v} values, too few for Tk={} NKV={} HS={} stride {}", s.tk, s.nkv, s.hs, s.v_stride)
        })?;
        if let Some(m) = mask {
            ensure(m >= s.tq * s.tk, op, || format!("mask has {m} values, fewer than Tq*Tk = {}*{}", s.tq, s.tk))?;
        }
        Ok(())
    }
}

/// out (Tq, NH*HS) = softmax(mask(Q K^T * scale)) V per head; probs (NH, Tq, Tk) receives the
/// attention probabilities. Blocked keys get exactly 0; a row with no allowed key gives all-zero
/// probabilities and a zero output (never NaN, never uniform).
pub fn attention(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, s: &AttnShape) -> Result<()> {
    s.check("attention", q.len(), k.len(), v.len(), mask.map(|m| m.len()))?;
    ensure(out.len() == s.tq * s.nh * s.hs, "attention", || format!("out has {} values, expected Tq*NH*HS", out.len()))?;
    ensure(probs.len() == s.nh * s.tq * s.tk, "attention", || format!("probs has {} values, expected NH*Tq*Tk", probs.len()))?;
    let mut scores = vec![0f64; s.tk];
    for h in 0..s.nh {
        let g = s.kv_head(h);
        for i in 0..s.tq {
            let qi = &q[s.q_offset + i * s.q_stride + h * s.hs..][..s.hs];
            let mut mx = f64::NEG_INFINITY;
            for j in 0..s.tk {
                if s.allowed(mask, i, j) {
                    let kj = &k[s.k_offset + j * s.k_stride + g * s.hs..][..s.hs];
                    let d: f64 = qi.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum();
                    scores[j] = d * s.scale as f64;
                    mx = mx.max(scores[j]);
                }
            }
            let prow = &mut probs[(h * s.tq + i) * s.tk..][..s.tk];
            let orow = &mut out[i * s.nh * s.hs + h * s.hs..][..s.hs];
            if mx == f64::NEG_INFINITY {
                prow.fill(0.0);
                orow.fill(0.0);
                continue;
            }
            let mut z = 0f64;
            for j in 0..s.tk {
                scores[j] = if s.allowed(mask, i, j) { (scores[j] - mx).exp() } else { 0.0 };
                z += scores[j];
            }
            for (p, sc) in prow.iter_mut().zip(&scores) {
                *p = (sc / z) as f32;
            }
            for d in 0..s.hs {
                let mut acc = 0f64;
                for j in 0..s.tk {
                    acc += scores[j] / z * v[s.v_offset + j * s.v_stride + g * s.hs + d] as f64;
                }
                orow[d] = acc as f32;
            }
        }
    }
    Ok(())
}
