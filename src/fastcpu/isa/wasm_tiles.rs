//! The page's register-tiled kernels in wasm simd128 intrinsics (`Simd128`'s GEMM tile, GEMV and
//! prefill attention): LLVM left much of the portable GEMM tile scalar for wasm32 (9 GFLOP/s in V8). No FMA
//! in simd128: mul then add, or `f32x4.relaxed_madd` in the relaxed-SIMD build (`wasm::madd4`).

use core::arch::wasm32::*;

use crate::fastcpu::isa::wasm::{madd4, Simd128};
use crate::fastcpu::matmul::{bias_tile, Half, Packed, Packed16, NR};
use crate::fastcpu::simd::{pv, softmax};
use crate::ops::AttnShape;

/// v128 per panel row
const C: usize = NR / 4;

/// `Simd128::tile`: whole panels stored straight to the output rows.
#[inline(always)]
pub fn tile<const R: usize>(out: &mut [f32], x: &[f32], panel: &[f32], n: usize, k: usize, n0: usize, bias: &[f32; NR]) {
    assert!(x.len() >= R * k && panel.len() >= k * NR && out.len() >= (R - 1) * n + n0 + NR.min(n - n0));
    let (xp, wp) = (x.as_ptr(), panel.as_ptr());
    // SAFETY: every load below is inside the slices bounded by the assert above
    let bv: [v128; C] = std::array::from_fn(|c| unsafe { v128_load(bias.as_ptr().add(4 * c) as *const v128) });
    let mut acc = [bv; R];
    for p in 0..k {
        let wv: [v128; C] = std::array::from_fn(|c| unsafe { v128_load(wp.add(p * NR + 4 * c) as *const v128) });
        for i in 0..R {
            let xv = f32x4_splat(unsafe { *xp.add(i * k + p) });
            for c in 0..C {
                acc[i][c] = madd4(xv, wv[c], acc[i][c]);
            }
        }
    }
    let cols = NR.min(n - n0);
    if cols == NR {
        // a whole panel: straight to the output rows (a copy_from_slice of a variable length is a
        // memory.copy, which V8 runs as a call: a few % of prefill over ~7,000 tiles a layer)
        let op = out.as_mut_ptr();
        for i in 0..R {
            for c in 0..C {
                // SAFETY: row i's columns n0..n0+NR lie inside out (the assert above, cols = NR)
                unsafe { v128_store(op.add(i * n + n0 + 4 * c) as *mut v128, acc[i][c]) };
            }
        }
        return;
    }
    let mut t = [0f32; NR];
    for i in 0..R {
        for c in 0..C {
            unsafe { v128_store(t.as_mut_ptr().add(4 * c) as *mut v128, acc[i][c]) };
        }
        out[i * n + n0..i * n + n0 + cols].copy_from_slice(&t[..cols]);
    }
}

/// y[panel] += x[p] * panel[p, :] with two accumulator sets over K.
pub fn gemv(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
    let (n, k) = (w.n, w.k);
    let base = panels.start * NR;
    assert!(x.len() >= k && out.len() >= n.min(panels.end * NR) - base);
    for q in panels {
        let panel = w.panel(q);
        let wp = panel.as_ptr();
        let n0 = q * NR;
        let bias = bias_tile(b, n0, n);
        // SAFETY: loads stay inside the panel (K * NR values) and bias (NR values)
        let mut a0: [v128; C] = std::array::from_fn(|c| unsafe { v128_load(bias.as_ptr().add(4 * c) as *const v128) });
        let mut a1 = [f32x4_splat(0.0); C];
        let mut p = 0;
        while p + 2 <= k {
            let (x0, x1) = (f32x4_splat(x[p]), f32x4_splat(x[p + 1]));
            for c in 0..C {
                let w0 = unsafe { v128_load(wp.add(p * NR + 4 * c) as *const v128) };
                let w1 = unsafe { v128_load(wp.add((p + 1) * NR + 4 * c) as *const v128) };
                a0[c] = madd4(x0, w0, a0[c]);
                a1[c] = madd4(x1, w1, a1[c]);
            }
            p += 2;
        }
        if p < k {
            let x0 = f32x4_splat(x[p]);
            for c in 0..C {
                let w0 = unsafe { v128_load(wp.add(p * NR + 4 * c) as *const v128) };
                a0[c] = madd4(x0, w0, a0[c]);
            }
        }
        let cols = NR.min(n - n0);
        if cols == NR {
            let op = out[n0 - base..n0 - base + NR].as_mut_ptr();
            for c in 0..C {
                // SAFETY: op points at NR values of out (the slice just above)
                unsafe { v128_store(op.add(4 * c) as *mut v128, f32x4_add(a0[c], a1[c])) };
            }
            continue;
        }
        let mut t = [0f32; NR];
        for c in 0..C {
            unsafe { v128_store(t.as_mut_ptr().add(4 * c) as *mut v128, f32x4_add(a0[c], a1[c])) };
        }
        out[n0 - base..n0 - base + cols].copy_from_slice(&t[..cols]);
    }
}

/// Eight 16-bit values (a u16x8) widened to two f32x4, exactly (`matmul::widen_f16` / `widen_bf16`
/// lane by lane, in integer ops: simd128 has no f16 conversion).
#[inline(always)]
pub fn widen8(h: Half, v: v128) -> (v128, v128) {
    (widen4(h, u32x4_extend_low_u16x8(v)), widen4(h, u32x4_extend_high_u16x8(v)))
}

/// Four 16-bit values, one in each u32 lane, as f32: `matmul::widen_f16` (the exponent rebiased by an
/// integer add; a subnormal made as 2^-14 * (1 + m / 1024) less 2^-14; Inf / NaN with f32's exponent,
/// NaNs quiet) or `widen_bf16` (a shift, NaNs quiet), chosen lane by lane with masks.
#[inline(always)]
fn widen4(h: Half, x: v128) -> v128 {
    let k = u32x4_splat;
    match h {
        Half::Bf16 => {
            let nan = i32x4_gt(v128_and(x, k(0x7fff)), k(0x7f80));
            v128_or(i32x4_shl(x, 16), v128_and(nan, k(0x0040_0000)))
        }
        Half::F16 => {
            let mag = i32x4_shl(v128_and(x, k(0x7fff)), 13);
            let exp = v128_and(mag, k(0x0f80_0000));
            let normal = i32x4_add(mag, k((127 - 15) << 23));
            let sub = f32x4_sub(i32x4_add(mag, k(113 << 23)), k(113 << 23));
            let quiet = v128_andnot(k(0x0040_0000), i32x4_eq(v128_and(mag, k(0x007f_e000)), k(0)));
            let special = v128_or(v128_or(k(0x7f80_0000), mag), quiet);
            let v = v128_bitselect(sub, normal, i32x4_eq(exp, k(0)));
            let v = v128_bitselect(special, v, i32x4_eq(exp, k(0x0f80_0000)));
            v128_or(v, i32x4_shl(v128_and(x, k(0x8000)), 16))
        }
    }
}

/// [`gemv`] over 16-bit panels (finite values: `Packed16::new` refuses NaN / Inf, which the backend keeps
/// as f32 panels): each row's two u16x8 made into the four f32x4 of the f32 GEMV, then the same
/// multiply-adds in the same order, so the same bits. The widening is the cost here (decode reads half the
/// bytes, so the integer work per value decides): bf16 is a zero-extend and a shift; f16 is made in three
/// integer ops as its value times 2^-112 (sign-extend, shift the exponent and mantissa into f32's place,
/// mask: exact for every finite f16, subnormals included), and x is scaled by 2^112 instead, exactly (a power
/// of two), so each product x w is the same real number and rounds the same. Where some |x| >= 2^16 (the
/// scaled x would overflow) the exact widening ([`widen8`]) runs instead.
pub fn gemv16(out: &mut [f32], x: &[f32], w: &Packed16, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
    let k = w.k;
    assert!(x.len() >= k);
    let k32 = u32x4_splat;
    match w.half {
        Half::Bf16 => gemv16_rows(out, &x[..k], w, b, panels, |v| {
            (i32x4_shl(u32x4_extend_low_u16x8(v), 16), i32x4_shl(u32x4_extend_high_u16x8(v), 16))
        }),
        Half::F16 if x[..k].iter().all(|v| v.abs() < 65536.0) => {
            let scaled: Vec<f32> = x[..k].iter().map(|v| v * f32::from_bits((127 + 112) << 23)).collect();
            gemv16_rows(out, &scaled, w, b, panels, |v| {
                let m = k32(0x8fff_e000);
                (v128_and(i32x4_shl(i32x4_extend_low_i16x8(v), 13), m), v128_and(i32x4_shl(i32x4_extend_high_i16x8(v), 13), m))
            })
        }
        Half::F16 => gemv16_rows(out, &x[..k], w, b, panels, |v| widen8(Half::F16, v)),
    }
}

/// The GEMV of [`gemv16`] with `wide` making a u16x8 into two f32x4 (lanes 0-3, 4-7).
#[inline(always)]
fn gemv16_rows(
    out: &mut [f32],
    x: &[f32],
    w: &Packed16,
    b: Option<&[f32]>,
    panels: std::ops::Range<usize>,
    wide: impl Fn(v128) -> (v128, v128),
) {
    let (n, k) = (w.n, w.k);
    let base = panels.start * NR;
    assert!(x.len() >= k && out.len() >= n.min(panels.end * NR) - base);
    // row p of a panel: 16 u16 = two v128 at wp + 2p, made into the C = 4 f32x4 of the f32 row
    let row = |wp: *const v128, p: usize| -> [v128; C] {
        // SAFETY: the caller's p < k; the panel holds K * NR u16 = 2K v128
        let (a, b) = wide(unsafe { v128_load(wp.add(2 * p)) });
        let (c, d) = wide(unsafe { v128_load(wp.add(2 * p + 1)) });
        [a, b, c, d]
    };
    for q in panels {
        let panel = w.panel(q);
        assert!(panel.len() >= k * NR);
        let wp = panel.as_ptr() as *const v128;
        let n0 = q * NR;
        let bias = bias_tile(b, n0, n);
        // SAFETY: bias holds NR values
        let mut a0: [v128; C] = std::array::from_fn(|c| unsafe { v128_load(bias.as_ptr().add(4 * c) as *const v128) });
        let mut a1 = [f32x4_splat(0.0); C];
        let mut p = 0;
        while p + 2 <= k {
            let (x0, x1) = (f32x4_splat(x[p]), f32x4_splat(x[p + 1]));
            let (w0, w1) = (row(wp, p), row(wp, p + 1));
            for c in 0..C {
                a0[c] = madd4(x0, w0[c], a0[c]);
                a1[c] = madd4(x1, w1[c], a1[c]);
            }
            p += 2;
        }
        if p < k {
            let x0 = f32x4_splat(x[p]);
            let w0 = row(wp, p);
            for c in 0..C {
                a0[c] = madd4(x0, w0[c], a0[c]);
            }
        }
        let cols = NR.min(n - n0);
        let mut t = [0f32; NR];
        for c in 0..C {
            // SAFETY: t holds NR values
            unsafe { v128_store(t.as_mut_ptr().add(4 * c) as *mut v128, f32x4_add(a0[c], a1[c])) };
        }
        out[n0 - base..n0 - base + cols].copy_from_slice(&t[..cols]);
    }
}

/// The page's attention (`Simd128::attend`) over several query rows (prefill) as register tiles, like its GEMM
/// (above): per head, the keys are packed once into panels of 16 (HS, 16), and
/// two query rows x 16 keys of scores accumulate over HS in 8 v128 registers (a splat of each q
/// value, 4 loads of keys, 8 multiply-adds per step); after the softmax, two rows of P·V x 16
/// output values accumulate over the keys the same way, V's rows read in place. Causal rows stop at
/// the pair's last visible key (the probabilities past a row's end are 0, so the shorter row adds
/// zeros). The per-row form (dot4, pv) spent ~9 of its 15-20% of the gpt's prefill reloading q, p
/// and v per 4 values and reducing lanes (BENCHMARKS.md). One row (decode) keeps the per-row form.

/// keys per panel, as v128 (4 lanes each)
const KB: usize = 16;
const KC: usize = KB / 4;

pub fn attend(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, s: &AttnShape) {
    let (hs, tq, tk) = (s.hs, s.tq, s.tk);
    let blocks = tk.div_ceil(KB);
    // kp[(b * HS + d) * 16 + jj] = k[key b*16 + jj][d] of the current kv head, 0 past Tk
    let mut kp = vec![0f32; blocks * hs * KB];
    let mut packed = usize::MAX;
    let end_of = |i: usize| s.causal.map_or(tk, |off| (i + off + 1).min(tk));
    for h in 0..s.nh {
        let g = s.kv_head(h);
        if g != packed {
            for j in 0..tk {
                let kr = &k[s.k_offset + j * s.k_stride + g * hs..][..hs];
                let (b, jj) = (j / KB, j % KB);
                for (d, &x) in kr.iter().enumerate() {
                    kp[(b * hs + d) * KB + jj] = x;
                }
            }
            packed = g;
        }
        let ph = &mut probs[h * tq * tk..(h + 1) * tq * tk];
        // scores, two rows at a time (the last alone when Tq is odd)
        let mut i = 0;
        while i < tq {
            let rows = if i + 1 < tq { 2 } else { 1 };
            let e = end_of(i + rows - 1);
            let qr = |r: usize| &q[s.q_offset + (i + r) * s.q_stride + h * hs..][..hs];
            let (q0, q1) = (qr(0), qr(rows - 1));
            for b in 0..e.div_ceil(KB) {
                let sc = scores(q0, q1, &kp[b * hs * KB..(b + 1) * hs * KB], s.scale);
                let cols = KB.min(tk - b * KB);
                for r in 0..rows {
                    let dst = &mut ph[(i + r) * tk + b * KB..];
                    if cols == KB {
                        dst[..KB].copy_from_slice(&sc[r]); // a constant length: v128 stores, no memory.copy call
                    } else {
                        dst[..cols].copy_from_slice(&sc[r][..cols]);
                    }
                }
            }
            i += rows;
        }
        // mask, softmax per row
        for (i, prow) in ph.chunks_exact_mut(tk).enumerate() {
            let end = end_of(i);
            if let Some(m) = mask {
                for (p, &allowed) in prow[..end].iter_mut().zip(&m[i * tk..][..end]) {
                    if allowed == 0.0 {
                        *p = f32::NEG_INFINITY;
                    }
                }
            }
            prow[end..].fill(0.0);
            // no visible key: zeros, and so a zero output row below
            softmax::<Simd128>(&mut prow[..end]);
        }
        // P·V, two rows x 16 values at a time; a head size not a multiple of 16: per row
        let vo = s.v_offset + g * hs;
        let mut i = 0;
        while i < tq {
            let rows = if i + 1 < tq { 2 } else { 1 };
            let e = end_of(i + rows - 1);
            if hs % KB == 0 {
                let p0 = &ph[i * tk..][..e];
                let p1 = &ph[(i + rows - 1) * tk..][..e];
                for c0 in (0..hs).step_by(KB) {
                    let o = pv2(p0, p1, v, vo + c0, s.v_stride);
                    for r in 0..rows {
                        out[(i + r) * s.nh * hs + h * hs + c0..][..KB].copy_from_slice(&o[r]);
                    }
                }
            } else {
                for r in 0..rows {
                    let orow = &mut out[(i + r) * s.nh * hs + h * hs..][..hs];
                    pv::<Simd128>(orow, &ph[(i + r) * tk..][..end_of(i + r)], v, vo, s.v_stride);
                }
            }
            i += rows;
        }
    }
}

/// [q0 . key jj, q1 . key jj] * scale for the 16 keys of one panel (HS, 16).
#[inline(always)]
fn scores(q0: &[f32], q1: &[f32], panel: &[f32], scale: f32) -> [[f32; KB]; 2] {
    let hs = q0.len();
    assert!(q1.len() >= hs && panel.len() >= hs * KB);
    let (a, b, w) = (q0.as_ptr(), q1.as_ptr(), panel.as_ptr());
    let mut acc = [[f32x4_splat(0.0); KC]; 2];
    for d in 0..hs {
        // SAFETY: d < HS; the panel has HS * 16 values (asserted)
        let wv: [v128; KC] = std::array::from_fn(|c| unsafe { v128_load(w.add(d * KB + 4 * c) as *const v128) });
        let x = [f32x4_splat(unsafe { *a.add(d) }), f32x4_splat(unsafe { *b.add(d) })];
        for r in 0..2 {
            for c in 0..KC {
                acc[r][c] = madd4(x[r], wv[c], acc[r][c]);
            }
        }
    }
    let sv = f32x4_splat(scale);
    let mut o = [[0f32; KB]; 2];
    for r in 0..2 {
        for c in 0..KC {
            // SAFETY: 4c + 4 <= 16
            unsafe { v128_store(o[r].as_mut_ptr().add(4 * c) as *mut v128, f32x4_mul(acc[r][c], sv)) };
        }
    }
    o
}

/// [sum_j p0[j] v[j], sum_j p1[j] v[j]] over the 16 values v[off + j * stride..][..16], j < p0.len().
#[inline(always)]
fn pv2(p0: &[f32], p1: &[f32], v: &[f32], off: usize, stride: usize) -> [[f32; KB]; 2] {
    let n = p0.len();
    assert!(p1.len() >= n && (n == 0 || off + (n - 1) * stride + KB <= v.len()));
    let vp = v[off..].as_ptr();
    let mut acc = [[f32x4_splat(0.0); KC]; 2];
    for j in 0..n {
        // SAFETY: j < n; row j's 16 values lie inside v (asserted)
        let wv: [v128; KC] = std::array::from_fn(|c| unsafe { v128_load(vp.add(j * stride + 4 * c) as *const v128) });
        let x = [f32x4_splat(p0[j]), f32x4_splat(p1[j])];
        for r in 0..2 {
            for c in 0..KC {
                acc[r][c] = madd4(x[r], wv[c], acc[r][c]);
            }
        }
    }
    let mut o = [[0f32; KB]; 2];
    for r in 0..2 {
        for c in 0..KC {
            // SAFETY: 4c + 4 <= 16
            unsafe { v128_store(o[r].as_mut_ptr().add(4 * c) as *mut v128, acc[r][c]) };
        }
    }
    o
}
