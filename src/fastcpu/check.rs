//! The fast attention against its reference twin (crate::cpu::attention, f64) over a shape sweep, as a
//! library function: the page's builds run it through the wasm export `fastcpu_attention_check`
//! (tests/browser/fastcpu.test.mjs), where the simd128 kernels of several query rows (isa/wasm_tiles.rs
//! `attend`) run; natively tests/fastcpu_ops.rs runs it as well. The tolerances are written here.

use serde::Serialize;

use crate::cpu;
use crate::fastcpu::attention;
use crate::ops::AttnShape;
use crate::rng::Rng;

/// Probabilities are f32 softmaxes of f32 dot products (HS <= 64, |q|, |k| <= 2, |v| <= 1): 1e-5
/// absolute + 1e-4 relative (tests/fastcpu_ops.rs's attention checks take them from here).
pub const ATTN_ATOL: f64 = 1e-5;
pub const ATTN_RTOL: f64 = 1e-4;

#[derive(Debug, Serialize)]
pub struct SweepResult {
    /// shapes checked (each: probabilities and output)
    pub cases: usize,
    /// the largest |fast - reference| over every value
    pub max_abs_diff: f64,
    /// one line per value outside atol + rtol * |reference| (the first of each case), or per blocked
    /// key that is not exactly 0
    pub failures: Vec<String>,
}

/// Heads (NH, NKV) with GQA / MQA, head sizes around the lanes and the 16-wide tiles (4, 8, 12, 16,
/// 17, 32, 48), query rows 1 (decode), 2, odd and many, over an empty or filled cache, causal or with
/// an explicit mask that has holes and a fully blocked query row.
pub fn attention_sweep() -> SweepResult {
    attention_sweep_over(&PAGE_SWEEP)
}

/// The shapes of a sweep: (NH, NKV) pairs, head sizes, and (query rows, cached keys) pairs; each shape is
/// checked unmasked (causal over the cache) and with an explicit mask. `seed` draws q, k, v.
pub struct Sweep<'a> {
    pub heads: &'a [(usize, usize)],
    pub head_sizes: &'a [usize],
    pub rows: &'a [(usize, usize)],
    pub seed: u64,
}

/// [`attention_sweep`]'s shapes.
pub const PAGE_SWEEP: Sweep<'static> = Sweep {
    heads: &[(1, 1), (2, 1), (6, 2), (6, 6)],
    head_sizes: &[4, 8, 12, 16, 17, 32, 48],
    rows: &[(1, 0), (1, 37), (2, 0), (3, 5), (17, 0), (40, 0), (33, 16), (128, 0)],
    seed: 11,
};

/// The fast attention against the reference over `sw`'s shapes (tolerances [`ATTN_ATOL`], [`ATTN_RTOL`]; a
/// blocked key must be exactly 0).
pub fn attention_sweep_over(sw: &Sweep) -> SweepResult {
    let mut r = Rng::new(sw.seed);
    let mut vec = |n: usize, scale: f32| (0..n).map(|_| (r.uniform() * 2.0 - 1.0) * scale).collect::<Vec<f32>>();
    let mut res = SweepResult { cases: 0, max_abs_diff: 0.0, failures: Vec::new() };
    for &(nh, nkv) in sw.heads {
        for &hs in sw.head_sizes {
            for &(tq, cached) in sw.rows {
                let tk = cached + tq;
                for masked in [false, true] {
                    let (q, k, v) = (vec(tq * nh * hs, 2.0), vec(tk * nkv * hs, 2.0), vec(tk * nkv * hs, 1.0));
                    let s = AttnShape::packed(tq, tk, nh, nkv, hs);
                    let (s, mask) = if masked {
                        let mut m: Vec<f32> = (0..tq * tk).map(|i| if (i * 7 + 3) % 5 == 0 { 0.0 } else { 1.0 }).collect();
                        m[..tk].fill(0.0);
                        (s, Some(m))
                    } else {
                        (s.with_causal(cached), None)
                    };
                    let (mut ow, mut pw) = (vec![0f32; tq * nh * hs], vec![0f32; nh * tq * tk]);
                    let (mut og, mut pg) = (vec![f32::NAN; tq * nh * hs], vec![f32::NAN; nh * tq * tk]);
                    let what = format!("NH={nh} NKV={nkv} HS={hs} Tq={tq} Tk={tk} masked={masked}");
                    if let Err(e) = cpu::attention(&mut ow, &mut pw, &q, &k, &v, mask.as_deref(), &s)
                        .and_then(|()| attention::attention(&mut og, &mut pg, &q, &k, &v, mask.as_deref(), &s))
                    {
                        res.failures.push(format!("{what}: {e}"));
                        continue;
                    }
                    res.cases += 1;
                    for (name, got, want) in [("probs", &pg, &pw), ("out", &og, &ow)] {
                        for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
                            let d = (g as f64 - w as f64).abs();
                            if d.is_nan() || d > ATTN_ATOL + ATTN_RTOL * (w as f64).abs() {
                                res.failures.push(format!("{what} {name}[{i}]: fast {g}, reference {w}"));
                                break;
                            }
                            res.max_abs_diff = res.max_abs_diff.max(d);
                        }
                    }
                    if let Some(i) = pg.iter().zip(&pw).position(|(g, w)| (*w == 0.0) != (*g == 0.0)) {
                        res.failures
                            .push(format!("{what} probs[{i}]: a blocked key must be exactly 0 (fast {}, reference {})", pg[i], pw[i]));
                    }
                }
            }
        }
    }
    res
}

/// dW = dY^T X (`train::matmul_dw`) against the reference's f64 sums: f32 multiply-adds (fused in the
/// AVX2 and relaxed-SIMD builds) over M <= 200 products of values in [-1, 1) plus dW's old value, within
/// 1e-4 + 1e-4 * |reference| (as tests/fastcpu_ops.rs's native check).
pub const DW_ATOL: f64 = 1e-4;
pub const DW_RTOL: f64 = 1e-4;

/// [`dw_sweep`]'s shapes: M (rows of dY and X), N (dW's rows: around the row tiles of 4 and 6 and a
/// split's blocks), K (dW's columns: around the 2-vector column strips, 8 in wasm and 16 natively).
const DW_M: [usize; 5] = [1, 5, 64, 129, 300];
const DW_N: [usize; 7] = [1, 3, 4, 5, 7, 13, 33];
const DW_K: [usize; 8] = [1, 3, 7, 8, 9, 16, 17, 31];

/// `train::matmul_dw` against the reference (`cpu::backward::matmul_backward`'s dW) over [`DW_M`] x
/// [`DW_N`] x [`DW_K`], whole and split into row blocks of 3 (which must give the same bits): the page's
/// builds run it through the wasm export `fastcpu_train_check` (tests/browser/fastcpu.test.mjs).
pub fn dw_sweep() -> SweepResult {
    let mut r = Rng::new(23);
    let mut vec = |n: usize| (0..n).map(|_| r.uniform() * 2.0 - 1.0).collect::<Vec<f32>>();
    let mut res = SweepResult { cases: 0, max_abs_diff: 0.0, failures: Vec::new() };
    for m in DW_M {
        for n in DW_N {
            for k in DW_K {
                let (dy, x, dw0) = (vec(m * n), vec(m * k), vec(n * k));
                let mut want = dw0.clone();
                cpu::backward::matmul_backward(None, &mut want, None, &dy, &x, &[], m, n, k);
                let mut got = dw0.clone();
                crate::fastcpu::train::matmul_dw(&mut got, &dy, &x, m, n, k, 0);
                let mut parts = dw0.clone();
                for (t, part) in parts.chunks_mut(3 * k).enumerate() {
                    crate::fastcpu::train::matmul_dw(part, &dy, &x, m, n, k, t * 3);
                }
                res.cases += 1;
                let what = format!("matmul_dw M={m} N={n} K={k}");
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let d = (g as f64 - w as f64).abs();
                    if d.is_nan() || d > DW_ATOL + DW_RTOL * (w as f64).abs() {
                        res.failures.push(format!("{what} dw[{i}]: fast {g}, reference {w}"));
                        break;
                    }
                    res.max_abs_diff = res.max_abs_diff.max(d);
                }
                if let Some(i) = parts.iter().zip(&got).position(|(a, b)| a.to_bits() != b.to_bits()) {
                    res.failures.push(format!("{what}: in blocks of 3 rows dw[{i}] is {}, whole {}", parts[i], got[i]));
                }
            }
        }
    }
    res
}

/// [`half_sweep`]'s shapes: M 1 (the GEMV) and several rows (the GEMM, over and under a tile), K and N
/// around the panels of 16 and the GEMV's accumulator sets.
const HALF_M: [usize; 5] = [1, 2, 3, 7, 40];
const HALF_K: [usize; 6] = [1, 3, 16, 17, 64, 193];
const HALF_N: [usize; 5] = [1, 15, 16, 17, 33];

/// 16-bit weights kept 16-bit (`matmul::Packed16`) against their widened f32 copies, *exactly* (no
/// tolerance: widening is exact and the kernels add the same products in the same order):
/// - the ISA's widening (`matmul::widen16_slice`) of every one of the 65,536 f16 and bf16 bit patterns
///   against the `half` crate's conversion, bit for bit (NaNs quieted as it does);
/// - the matmul (GEMV and GEMM, with and without bias) over 16-bit panels against the f32 panels of
///   the widened weight, bit for bit, on [`HALF_M`] x [`HALF_K`] x [`HALF_N`], with weights that include
///   zeros of both signs and f16 subnormals and inputs up to 10^5; and the rows read back out of the panels.
///
/// The page's builds run it through the wasm export `fastcpu_half_check` (tests/browser/fastcpu.test.mjs),
/// natively tests/fastcpu_ops.rs in both builds.
pub fn half_sweep() -> SweepResult {
    use crate::fastcpu::matmul::{self, Half, Packed, Packed16, Weight};
    let mut res = SweepResult { cases: 0, max_abs_diff: 0.0, failures: Vec::new() };
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for h in [Half::F16, Half::Bf16] {
        let mut got = vec![0f32; all.len()];
        matmul::widen16_slice(h, &all, &mut got);
        res.cases += 1;
        for (&b, &g) in all.iter().zip(&got) {
            let want = match h {
                Half::F16 => half::f16::from_bits(b).to_f32(),
                Half::Bf16 => half::bf16::from_bits(b).to_f32(),
            };
            if g.to_bits() != want.to_bits() || matmul::widen_f16_or_bf16(h, b).to_bits() != want.to_bits() {
                res.failures.push(format!("{h:?} bits {b:#06x}: widened to {:#010x}, half gives {:#010x}", g.to_bits(), want.to_bits()));
                break;
            }
        }
    }
    let mut r = Rng::new(29);
    for h in [Half::F16, Half::Bf16] {
        for m in HALF_M {
            for k in HALF_K {
                for n in HALF_N {
                    for bias in [false, true] {
                        let mut bits = Vec::with_capacity(n * k);
                        for i in 0..n * k {
                            // mostly N(0, 0.02)-sized values, some tiny (f16 subnormals) and zeros of both signs
                            let x = (r.uniform() * 2.0 - 1.0) * if i % 7 == 3 { 1e-6 } else { 0.05 };
                            let x = if i % 11 == 5 { -0.0 } else { x };
                            bits.push(match h {
                                Half::F16 => half::f16::from_f32(x).to_bits(),
                                Half::Bf16 => half::bf16::from_f32(x).to_bits(),
                            });
                        }
                        let wide: Vec<f32> = bits.iter().map(|&b| h.widen(b)).collect();
                        // x in [-1, 1), or (N = 17) up to 10^5 in places: the page's f16 GEMV scales x by
                        // 2^112 and takes the exact widening where some |x| >= 2^16
                        let big = if n == 17 { 1e5 } else { 1.0 };
                        let x: Vec<f32> = (0..m * k).map(|i| (r.uniform() * 2.0 - 1.0) * if i % 5 == 1 { big } else { 1.0 }).collect();
                        let b: Vec<f32> = (0..n).map(|_| r.uniform() * 2.0 - 1.0).collect();
                        let b = bias.then_some(&b[..]);
                        let (p16, p32) = match (Packed16::new(&bits, h, n, k), Packed::new(&wide, n, k)) {
                            (Ok(a), Ok(b)) => (a, b),
                            _ => {
                                res.failures.push(format!("{h:?} N={n} K={k}: cannot pack"));
                                continue;
                            }
                        };
                        let (mut got, mut want) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
                        let ok = matmul::matmul(&mut got, &x, &p16, b, m).and(matmul::matmul(&mut want, &x, &p32, b, m));
                        res.cases += 1;
                        let what = format!("{h:?} M={m} K={k} N={n} bias={bias}");
                        if let Err(e) = ok {
                            res.failures.push(format!("{what}: {e}"));
                            continue;
                        }
                        if let Some(i) = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits()) {
                            res.failures.push(format!("{what}: out[{i}] is {} from 16-bit panels, {} from f32 ones", got[i], want[i]));
                        }
                        match Weight::Half(&p16).unpack() {
                            Ok(rows) if rows.iter().zip(&wide).all(|(a, b)| a.to_bits() == b.to_bits()) => {}
                            _ => res.failures.push(format!("{what}: the rows read back from the 16-bit panels differ")),
                        }
                    }
                }
            }
        }
    }
    res
}
