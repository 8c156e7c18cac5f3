//! Fast masked attention over the KV cache, f32. Reference twin: crate::cpu::attention.
//!
//! Per (head, query row) the probabilities row of `probs` is the only scratch: it receives the
//! scores, then e^(s - max), then the probabilities, so the (NH, Tq, Tk) maps the page asks for
//! come for free and nothing else is materialised (no score matrix, no allocation). Causal rows
//! stop at the last visible key; the keys past it are written as 0 without being read.
//!
//! Blocked over keys: the scores come four keys per pass over the query row (`simd::dot4`: q loaded
//! once, four independent accumulators reduced together) and P·V keeps each slice of the output row
//! in registers across all keys (`simd::pv`), instead of one dot and one axpy per key.

use crate::error::{ensure, Result};
use crate::fastcpu::simd::{dot4, multiversion, pv, softmax};
use crate::ops::AttnShape;

/// out (Tq, NH*HS) = softmax(mask(Q K^T * scale)) V; probs (NH, Tq, Tk). Blocked keys get 0; a row
/// with no visible key gives zero probabilities and a zero output.
pub fn attention(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, s: &AttnShape) -> Result<()> {
    s.check("attention", q.len(), k.len(), v.len(), mask.map(|m| m.len()))?;
    ensure(out.len() == s.tq * s.nh * s.hs, "attention", || format!("out has {} values, expected Tq*NH*HS", out.len()))?;
    ensure(probs.len() == s.nh * s.tq * s.tk, "attention", || format!("probs has {} values, expected NH*Tq*Tk", probs.len()))?;
    attend(out, probs, q, k, v, mask, s);
    Ok(())
}

multiversion!(fn attend(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, s: &AttnShape) => attend_impl);

#[inline(always)]
#[allow(unreachable_code)] // the wasm simd128 build returns early for several query rows
fn attend_impl<const FMA: bool>(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, s: &AttnShape) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if s.tq >= 2 {
        tiled::attend(out, probs, q, k, v, mask, s);
        return;
    }
    let hs = s.hs;
    for h in 0..s.nh {
        let g = s.kv_head(h);
        for i in 0..s.tq {
            let qi = &q[s.q_offset + i * s.q_stride + h * hs..][..hs];
            let prow = &mut probs[(h * s.tq + i) * s.tk..][..s.tk];
            let orow = &mut out[i * s.nh * hs + h * hs..][..hs];
            // keys j < end may be visible
            let end = s.causal.map_or(s.tk, |off| (i + off + 1).min(s.tk));
            let mrow = mask.map(|m| &m[i * s.tk..][..s.tk]);
            // scores, then blocked keys to -inf; separate loops so each one vectorises
            let krow = |j: usize| &k[s.k_offset + j * s.k_stride + g * hs..][..hs];
            let mut j = 0;
            while j + 4 <= end {
                let d = dot4::<FMA>(qi, [krow(j), krow(j + 1), krow(j + 2), krow(j + 3)]);
                for u in 0..4 {
                    prow[j + u] = d[u] * s.scale;
                }
                j += 4;
            }
            if j < end {
                // the last 1-3 keys: repeat the last key in the unused slots
                let d = dot4::<FMA>(qi, std::array::from_fn(|u| krow((j + u).min(end - 1))));
                for (u, p) in prow[j..end].iter_mut().enumerate() {
                    *p = d[u] * s.scale;
                }
            }
            if let Some(m) = mrow {
                for (p, &allowed) in prow[..end].iter_mut().zip(m) {
                    if allowed == 0.0 {
                        *p = f32::NEG_INFINITY;
                    }
                }
            }
            prow[end..].fill(0.0);
            // e^(s - max) / sum: a blocked key's -inf gives exactly 0; no visible key: zeros
            if !softmax(&mut prow[..end]) {
                orow.fill(0.0);
                continue;
            }
            pv::<FMA>(orow, &prow[..end], v, s.v_offset + g * hs, s.v_stride);
        }
    }
}

/// The page's attention over several query rows (prefill) as register tiles, like its GEMM
/// (matmul.rs `mod simd128`): per head, the keys are packed once into panels of 16 (HS, 16), and
/// two query rows x 16 keys of scores accumulate over HS in 8 v128 registers (a splat of each q
/// value, 4 loads of keys, 8 multiply-adds per step); after the softmax, two rows of P·V x 16
/// output values accumulate over the keys the same way, V's rows read in place. Causal rows stop at
/// the pair's last visible key (the probabilities past a row's end are 0, so the shorter row adds
/// zeros). The per-row form (dot4, pv) spent ~9 of its 15-20% of the gpt's prefill reloading q, p
/// and v per 4 values and reducing lanes (BENCHMARKS.md). One row (decode) keeps the per-row form.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod tiled {
    use crate::fastcpu::simd::{madd4, pv, softmax};
    use crate::ops::AttnShape;
    use core::arch::wasm32::*;

    /// keys per panel, as v128 (4 lanes each)
    const KB: usize = 16;
    const C: usize = KB / 4;

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
                softmax(&mut prow[..end]);
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
                        pv::<false>(orow, &ph[(i + r) * tk..][..end_of(i + r)], v, vo, s.v_stride);
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
        let mut acc = [[f32x4_splat(0.0); C]; 2];
        for d in 0..hs {
            // SAFETY: d < HS; the panel has HS * 16 values (asserted)
            let wv: [v128; C] = std::array::from_fn(|c| unsafe { v128_load(w.add(d * KB + 4 * c) as *const v128) });
            let x = [f32x4_splat(unsafe { *a.add(d) }), f32x4_splat(unsafe { *b.add(d) })];
            for r in 0..2 {
                for c in 0..C {
                    acc[r][c] = madd4(x[r], wv[c], acc[r][c]);
                }
            }
        }
        let sv = f32x4_splat(scale);
        let mut o = [[0f32; KB]; 2];
        for r in 0..2 {
            for c in 0..C {
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
        let mut acc = [[f32x4_splat(0.0); C]; 2];
        for j in 0..n {
            // SAFETY: j < n; row j's 16 values lie inside v (asserted)
            let wv: [v128; C] = std::array::from_fn(|c| unsafe { v128_load(vp.add(j * stride + 4 * c) as *const v128) });
            let x = [f32x4_splat(p0[j]), f32x4_splat(p1[j])];
            for r in 0..2 {
                for c in 0..C {
                    acc[r][c] = madd4(x[r], wv[c], acc[r][c]);
                }
            }
        }
        let mut o = [[0f32; KB]; 2];
        for r in 0..2 {
            for c in 0..C {
                // SAFETY: 4c + 4 <= 16
                unsafe { v128_store(o[r].as_mut_ptr().add(4 * c) as *mut v128, acc[r][c]) };
            }
        }
        o
    }
}
