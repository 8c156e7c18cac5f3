//! The fast CPU kernels' vector algorithms, each written once over the primitives of an ISA
//! (`crate::fastcpu::isa`: portable, AVX2+FMA, wasm simd128), `#[inline(always)]` so they compile
//! inside the function `multiversion!` makes for each ISA; and the scalar math they share (a
//! branch-free exp, erf, the activations), which LLVM vectorises in loops. An ISA may replace a
//! kernel with its own algorithm (`Isa`'s provided methods): these are the default forms.

use crate::fastcpu::isa::Isa;
pub use crate::fastcpu::isa::{avx2_fma, force_portable, isa};

/// Lanes of the portable accumulators (one AVX register, two simd128 registers).
pub const L: usize = 8;

/// max over v (-inf when empty), 8 lanes.
#[inline(always)]
pub fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; L];
    let mut ch = v.chunks_exact(L);
    for c in &mut ch {
        for l in 0..L {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let m = acc.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    ch.remainder().iter().fold(m, |a, &b| if b > a { b } else { a })
}

/// sum over v, 8 lanes.
#[inline(always)]
pub fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let mut ch = v.chunks_exact(L);
    for c in &mut ch {
        for l in 0..L {
            acc[l] += c[l];
        }
    }
    hsum(&acc) + ch.remainder().iter().sum::<f32>()
}

#[inline(always)]
pub fn hsum(acc: &[f32; L]) -> f32 {
    let a = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// The sum over r of f(r[i]) in L lanes, then `hsum`, then the tail in order (the norms' mean and
/// variance, inference and training alike, so both sum in one order).
#[inline(always)]
pub fn lanes_sum(r: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; L];
    let mut ch = r.chunks_exact(L);
    for c in &mut ch {
        for l in 0..L {
            acc[l] += f(c[l]);
        }
    }
    hsum(&acc) + ch.remainder().iter().map(|&v| f(v)).sum::<f32>()
}

/// e^x in f32 without a libm call, branch-free so loops over it vectorise: x = n ln2 + r with
/// |r| <= ln2/2, e^r by Cephes' degree-6 polynomial (relative error ~2e-7 against f64 exp),
/// 2^n built in the exponent bits. Below -87.3 it returns exactly 0 (masked scores stay 0); from
/// about 88.4 it returns inf (expf overflows at 88.72). Callers pass x <= 0 (softmax, erf) or use it
/// where inf is harmless (silu: x / (1 + inf) = 0).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = x.clamp(-87.3, 88.7);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // n sits in the low mantissa bits of t (t = 1.5 * 2^23 + n)
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let pow2 = f32::from_bits(((ni + 127) << 23) as u32);
    if x < -87.3 {
        0.0
    } else {
        er * pow2
    }
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), with the fast exp.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t + 0.254_829_6) * t;
    let y = 1.0 - poly * exp(-a * a);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

/// PyTorch's exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)), in f32.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU-tanh (GPT-2's `gelu_new`): 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3),
/// branch-free over the fast exp (which saturates: e^(-2u) is 0 or huge at the ends, giving x or 0).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2 / pi)
    let u = K * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

/// x * sigmoid(x)
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The attention's softmax over one row of scores, in place: p = e^(p - max) / sum. A row whose every
/// score is -inf (no visible key) becomes zeros and the result is false; a -inf score gives exactly 0.
#[inline(always)]
pub fn softmax<S: Isa>(p: &mut [f32]) -> bool {
    S::softmax(p)
}

/// [`softmax`] over 8-lane max and sum and the scalar `exp` (the form every ISA but simd128 runs).
#[inline(always)]
pub fn softmax_lanes(p: &mut [f32]) -> bool {
    let mx = max(p);
    if mx == f32::NEG_INFINITY {
        p.fill(0.0);
        return false;
    }
    for v in p.iter_mut() {
        *v = exp(*v - mx);
    }
    let inv = 1.0 / sum(p);
    for v in p.iter_mut() {
        *v *= inv;
    }
    true
}

/// The attention's blocked kernels (src/fastcpu/attention.rs): four scores per pass over q, and the
/// P·V product of a whole probabilities row at once.
///
/// [q·k0, q·k1, q·k2, q·k3] over q's length (each k at least as long): q is loaded once for the four
/// keys, the four accumulators are independent (no FMA latency chain) and are reduced together.
#[inline(always)]
pub fn dot4<S: Isa>(q: &[f32], k: [&[f32]; 4]) -> [f32; 4] {
    let n = q.len();
    let k = k.map(|r| &r[..n]);
    let qp = q.as_ptr();
    let kp = k.map(|r| r.as_ptr());
    let mut a = [S::zero(); 4];
    let mut i = 0;
    while i + S::LANES <= n {
        // SAFETY: i + LANES <= n <= every length (k sliced to n above)
        let qv = unsafe { S::load(qp.add(i)) };
        for u in 0..4 {
            a[u] = S::madd(qv, unsafe { S::load(kp[u].add(i)) }, a[u]);
        }
        i += S::LANES;
    }
    let mut s = S::sum4(a);
    while i < n {
        for u in 0..4 {
            s[u] = S::fmadd(q[i], k[u][i], s[u]);
        }
        i += 1;
    }
    s
}

/// out[d] = sum_j p[j] * v[off + j * stride + d] for d < out.len(): the attention's P·V for one query
/// row, out written (not accumulated). Each slice of out of the ISA's lanes stays in registers across
/// all keys (`pv_four_keys`; the page's blocks of up to 32 values, `Simd128::pv`).
#[inline(always)]
pub fn pv<S: Isa>(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize) {
    if !p.is_empty() {
        // every row read below lies inside v
        assert!(off + (p.len() - 1) * stride + out.len() <= v.len(), "pv: v too short");
    }
    S::pv(out, p, v, off, stride)
}

/// [`pv`] four keys per step in independent accumulators, LANES values of out at a time (`pv` has
/// checked that v holds every row read).
#[inline(always)]
pub fn pv_four_keys<S: Isa>(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize) {
    let hs = out.len();
    let full = hs / S::LANES * S::LANES;
    let kb = p.len() / 4 * 4;
    let vp = v.as_ptr().wrapping_add(off);
    let mut c = 0;
    while c < full {
        // SAFETY: row j's lanes c..c+LANES lie inside v (pv's assert: off + (len-1)*stride + hs <= v.len()),
        // j < p.len() and c + LANES <= out.len()
        let mut a = [S::zero(); 4];
        let mut j = 0;
        while j < kb {
            for u in 0..4 {
                let pj = S::splat(unsafe { *p.get_unchecked(j + u) });
                a[u] = S::madd(pj, unsafe { S::load(vp.add((j + u) * stride + c)) }, a[u]);
            }
            j += 4;
        }
        while j < p.len() {
            let pj = S::splat(unsafe { *p.get_unchecked(j) });
            a[0] = S::madd(pj, unsafe { S::load(vp.add(j * stride + c)) }, a[0]);
            j += 1;
        }
        let s = S::add(S::add(a[0], a[1]), S::add(a[2], a[3]));
        unsafe { S::store(out.as_mut_ptr().add(c), s) };
        c += S::LANES;
    }
    pv_tail::<S>(out, p, v, off, stride, full);
}

/// out[d] for d in from..out.len(), one scalar sum over the keys each (head sizes not a multiple of the lanes).
#[inline(always)]
pub fn pv_tail<S: Isa>(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize, from: usize) {
    for d in from..out.len() {
        let mut a = 0f32;
        for (j, &pj) in p.iter().enumerate() {
            a = S::fmadd(pj, v[off + j * stride + d], a);
        }
        out[d] = a;
    }
}
