//! Fast LayerNorm / RMSNorm over the last dimension, f32 with 8-lane sums. Twin: crate::cpu::norm.

use crate::fastcpu::isa::{multiversion, Isa};
use crate::fastcpu::simd::{hsum, lanes_sum, L};

multiversion!(
    /// out = (x - mean) / sqrt(var + eps) * gamma + beta per row. x, out (rows, C); gamma, beta (C,).
    pub fn layernorm(out: &mut [f32], x: &[f32], gamma: &[f32], beta: &[f32], c: usize, eps: f32) => layernorm_impl
);
multiversion!(
    /// out = x * rsqrt(mean(x^2) + eps) * weight per row. x, out (rows, C); weight (C,).
    pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], c: usize, eps: f32) => rmsnorm_impl
);

#[inline(always)]
fn layernorm_impl<S: Isa>(out: &mut [f32], x: &[f32], gamma: &[f32], beta: &[f32], c: usize, eps: f32) {
    for (o, r) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let mean = lanes_sum(r, |v| v) / c as f32;
        let var = lanes_sum(r, |v| (v - mean) * (v - mean)) / c as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..c {
            o[i] = S::fmadd((r[i] - mean) * inv, gamma[i], beta[i]);
        }
    }
}

#[inline(always)]
fn rmsnorm_impl<S: Isa>(out: &mut [f32], x: &[f32], weight: &[f32], c: usize, eps: f32) {
    for (o, r) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let ms = lanes_sum(r, |v| v * v) / c as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for i in 0..c {
            o[i] = r[i] * inv * weight[i];
        }
    }
}

multiversion!(
    /// The residual add fused with the norm after it (`Backend::add_norm`), one row of C at a time:
    /// x = x + y in the same pass that sums the row (LayerNorm's mean, RMSNorm's mean square; the
    /// LayerNorm variance is a second pass over the row, now in L1), then out = norm(x) (`out` given:
    /// pre-norm) or x = norm(x) (`out` None: post-norm; y is left as it was). `beta` Some: LayerNorm
    /// with gamma = `w`; None: RMSNorm with weight `w`. x, y, out (rows, C); w, beta (C,). Same lanes
    /// and formulas as the add, then `layernorm` / `rmsnorm`: the same values, one pass fewer.
    pub fn add_norm(x: &mut [f32], y: &[f32], out: Option<&mut [f32]>, w: &[f32], beta: Option<&[f32]>, c: usize, eps: f32) => add_norm_impl
);

/// r = r + y, returning the sum over the new r of f(r[i]), 8 lanes (as `lanes_sum`).
#[inline(always)]
fn add_sum_by(r: &mut [f32], y: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; L];
    let mut ch = r.chunks_exact_mut(L);
    let mut yc = y.chunks_exact(L);
    for (c, d) in (&mut ch).zip(&mut yc) {
        for l in 0..L {
            c[l] += d[l];
            acc[l] += f(c[l]);
        }
    }
    let mut s = hsum(&acc);
    let mut t = 0f32;
    for (v, d) in ch.into_remainder().iter_mut().zip(yc.remainder()) {
        *v += d;
        t += f(*v);
    }
    s += t;
    s
}

#[inline(always)]
fn add_norm_impl<S: Isa>(x: &mut [f32], y: &[f32], mut out: Option<&mut [f32]>, w: &[f32], beta: Option<&[f32]>, c: usize, eps: f32) {
    if c == 0 {
        return;
    }
    let (w, beta) = (&w[..c], beta.map(|b| &b[..c]));
    for (r, (xr, yr)) in x.chunks_exact_mut(c).zip(y.chunks_exact(c)).enumerate() {
        let dst = out.as_deref_mut().map(|o| &mut o[r * c..(r + 1) * c]);
        match beta {
            Some(b) => {
                let mean = add_sum_by(xr, yr, |v| v) / c as f32;
                let var = lanes_sum(xr, |v| (v - mean) * (v - mean)) / c as f32;
                let inv = 1.0 / (var + eps).sqrt();
                let f = |v: f32, i: usize| S::fmadd((v - mean) * inv, w[i], b[i]);
                match dst {
                    Some(o) => (0..c).for_each(|i| o[i] = f(xr[i], i)),
                    None => (0..c).for_each(|i| xr[i] = f(xr[i], i)),
                }
            }
            None => {
                let ms = add_sum_by(xr, yr, |v| v * v) / c as f32;
                let inv = 1.0 / (ms + eps).sqrt();
                match dst {
                    Some(o) => (0..c).for_each(|i| o[i] = xr[i] * inv * w[i]),
                    None => (0..c).for_each(|i| xr[i] = xr[i] * inv * w[i]),
                }
            }
        }
    }
}
