//! Masked scaled dot-product attention per head, with grouped-query attention.

use crate::error::{ensure, Result};
use crate::ops::AttnShape;

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
