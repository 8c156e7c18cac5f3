//! Token sampling: greedy argmax, and temperature + top-k + top-p driven by one uniform number.
//!
//! The GPU kernel (shaders/sample.wgsl) runs in one workgroup of `SAMPLE_WG` threads, thread t
//! owning the chunk [t*C, (t+1)*C) of the vocabulary, C = ceil(V / SAMPLE_WG). This twin sums in
//! exactly that order (sequential inside a chunk, then a tree over the chunk sums), so both pick
//! the same token for the same random number except where exp() differs in the last bit at a
//! boundary.
//!
//! Semantics (documented for users in ARCHITECTURE.md):
//! - top-k keeps every token whose logit is >= the k-th largest logit (ties at the boundary are
//!   kept, as nanoGPT's `logits[logits < v[-1]] = -inf`);
//! - top-p keeps every token whose probability is >= tau, tau the largest value for which the kept
//!   mass is >= top_p (the nucleus; ties at the boundary kept);
//! - the token is the first index, in vocabulary order, whose cumulative kept mass exceeds u * Z.

use crate::ops::SampleParams;

pub const SAMPLE_WG: usize = 256;

/// Order-preserving map of f32 to u32 (a < b  <=>  key(a) < key(b)).
pub fn order_key(f: f32) -> u32 {
    let b = f.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Index of the largest logit; ties go to the lowest index. logits (V,)
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn tree_sum(mut partial: Vec<f32>) -> f32 {
    let mut s = SAMPLE_WG / 2;
    while s > 0 {
        for t in 0..s {
            partial[t] += partial[t + s];
        }
        s /= 2;
    }
    partial[0]
}

fn chunk_sums(p: &[f32], keep: impl Fn(usize) -> bool) -> Vec<f32> {
    let c = p.len().div_ceil(SAMPLE_WG);
    (0..SAMPLE_WG)
        .map(|t| {
            let mut acc = 0f32;
            for i in (t * c).min(p.len())..((t + 1) * c).min(p.len()) {
                if keep(i) {
                    acc += p[i];
                }
            }
            acc
        })
        .collect()
}

/// Samples one token. logits (V,), u in [0, 1).
/// What a CPU backend's `sample` op writes: [id, count of non-finite logits], the layout of the GPU
/// sampler's output (a count other than 0 makes the step an error).
pub fn sample_record(logits: &[f32], params: &SampleParams, u: f32) -> [u32; 2] {
    [sample(logits, params, u), count_non_finite(logits)]
}

/// How many values are NaN or Inf (what the GPU sampler writes to out[1]).

pub fn count_non_finite(x: &[f32]) -> u32 {
    x.iter().filter(|v| !v.is_finite()).count() as u32
}

pub fn sample(logits: &[f32], params: &SampleParams, u: f32) -> u32 {
    let v = logits.len();
    if params.is_greedy() || v == 0 {
        return argmax(logits);
    }
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    // top-k: the key of the k-th largest logit, found bit by bit from the top.
    let mut kth = 0u32;
    if params.top_k > 0 && (params.top_k as usize) < v {
        for bit in (0..32).rev() {
            let cand = kth | (1 << bit);
            let count = logits.iter().filter(|&&l| order_key(l) >= cand).count();
            if count >= params.top_k as usize {
                kth = cand;
            }
        }
    }
    let p: Vec<f32> = logits.iter().map(|&l| if order_key(l) >= kth { ((l - m) / params.temperature).exp() } else { 0.0 }).collect();
    let z = tree_sum(chunk_sums(&p, |_| true));
    // top-p: the largest tau whose kept mass is >= top_p * Z.
    let mut tau_bits = 0u32;
    if params.top_p < 1.0 {
        let need = params.top_p * z;
        for bit in (0..31).rev() {
            let cand = tau_bits | (1 << bit);
            let tau = f32::from_bits(cand);
            let mass = tree_sum(chunk_sums(&p, |i| p[i] >= tau));
            if mass >= need {
                tau_bits = cand;
            }
        }
    }
    let tau = f32::from_bits(tau_bits);
    let kept = |i: usize| p[i] > 0.0 && p[i] >= tau;
    let cs = chunk_sums(&p, kept);
    let z2 = tree_sum(cs.clone());
    let target = u * z2;
    let c = v.div_ceil(SAMPLE_WG);
    let mut acc = 0f32;
    for (t, &s) in cs.iter().enumerate() {
        if acc + s > target {
            let residual = target - acc;
            let mut acc2 = 0f32;
            for i in (t * c).min(v)..((t + 1) * c).min(v) {
                if kept(i) {
                    acc2 += p[i];
                    if acc2 > residual {
                        return i as u32;
                    }
                }
            }
            break;
        }
        acc += s;
    }
    // Rounding put the target past the last kept token: take the last kept token.
    (0..v).rev().find(|&i| kept(i)).unwrap_or(0) as u32
}
