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
use crate::fastcpu::isa::{multiversion, Isa};
use crate::fastcpu::simd::{dot4, pv, softmax};
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
fn attend_impl<S: Isa>(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, s: &AttnShape) {
    S::attend(out, probs, q, k, v, mask, s)
}

/// The attention one query row at a time (every ISA's; the page's prefill has its own tiles,
/// `isa::wasm_tiles`).
#[inline(always)]
pub(crate) fn attend_rows<S: Isa>(
    out: &mut [f32],
    probs: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
    s: &AttnShape,
) {
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
                let d = dot4::<S>(qi, [krow(j), krow(j + 1), krow(j + 2), krow(j + 3)]);
                for u in 0..4 {
                    prow[j + u] = d[u] * s.scale;
                }
                j += 4;
            }
            if j < end {
                // the last 1-3 keys: repeat the last key in the unused slots
                let d = dot4::<S>(qi, std::array::from_fn(|u| krow((j + u).min(end - 1))));
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
            if !softmax::<S>(&mut prow[..end]) {
                orow.fill(0.0);
                continue;
            }
            pv::<S>(orow, &prow[..end], v, s.v_offset + g * hs, s.v_stride);
        }
    }
}
