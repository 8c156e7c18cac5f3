//! Fast LayerNorm / RMSNorm over the last dimension, f32 with 8-lane sums. Twin: crate::cpu::norm.

use crate::fastcpu::simd::{fmadd, hsum, multiversion, L};

multiversion!(
    /// out = (x - mean) / sqrt(var + eps) * gamma + beta per row. x, out (rows, C); gamma, beta (C,).
    pub fn layernorm(out: &mut [f32], x: &[f32], gamma: &[f32], beta: &[f32], c: usize, eps: f32) => layernorm_impl
);
multiversion!(
    /// out = x * rsqrt(mean(x^2) + eps) * weight per row. x, out (rows, C); weight (C,).
    pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], c: usize, eps: f32) => rmsnorm_impl
);

/// sum over r of f(r[i]), 8 lanes.
#[inline(always)]
fn sum_by<const FMA: bool>(r: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; L];
    let mut ch = r.chunks_exact(L);
    for c in &mut ch {
        for l in 0..L {
            acc[l] += f(c[l]);
        }
    }
    hsum(&acc) + ch.remainder().iter().map(|&v| f(v)).sum::<f32>()
}

#[inline(always)]
fn layernorm_impl<const FMA: bool>(out: &mut [f32], x: &[f32], gamma: &[f32], beta: &[f32], c: usize, eps: f32) {
    for (o, r) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let mean = sum_by::<FMA>(r, |v| v) / c as f32;
        let var = sum_by::<FMA>(r, |v| (v - mean) * (v - mean)) / c as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..c {
            o[i] = fmadd::<FMA>((r[i] - mean) * inv, gamma[i], beta[i]);
        }
    }
}

#[inline(always)]
fn rmsnorm_impl<const FMA: bool>(out: &mut [f32], x: &[f32], weight: &[f32], c: usize, eps: f32) {
    for (o, r) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let ms = sum_by::<FMA>(r, |v| v * v) / c as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for i in 0..c {
            o[i] = r[i] * inv * weight[i];
        }
    }
}
