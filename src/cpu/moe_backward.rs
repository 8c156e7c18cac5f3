//! The reference backward of the mixture-of-experts FFN's routing (`cpu::moe`): the combine's
//! gradients to one expert's output and to the gate, the router's gradient to its logits through
//! the kept renormalised top-k weights and the softmax, and the Switch load-balancing loss with its
//! gradient. Plain loops with f64 accumulation in a fixed order. Semantics: `crate::train::ops`.

use crate::error::{ensure, Result};

/// The share of the T*K top-k assignments (before capacity) that go to each of the E experts.
fn assignment_shares(experts: &[u32], e: usize) -> Result<Vec<f64>> {
    let mut f = vec![0f64; e];
    for &x in experts {
        ensure((x as usize) < e, "moe_router_backward", || format!("expert {x} is outside the {e} experts"))?;
        f[x as usize] += 1.0;
    }
    let n = experts.len().max(1) as f64;
    Ok(f.into_iter().map(|c| c / n).collect())
}

/// A router's forward over T tokens as `moe_router` and `moe_capacity` left it: probs (T, E),
/// experts, weights and kept (T, K), with E experts and top-k K.
pub struct Routing<'a> {
    pub probs: &'a [f32],
    pub experts: &'a [u32],
    pub weights: &'a [f32],
    pub kept: &'a [u32],
    pub e: usize,
    pub k: usize,
}

/// Expert x's part of `moe_combine`'s backward over (T, E, C, ys_rows): dy (T, C) = gate[t, x]
/// dout[t], dgate[t, x] = dout[t] . ys[x, t]; ys (E, ys_rows, C).
pub fn moe_combine_backward(
    dy: &mut [f32],
    dgate: &mut [f32],
    dout: &[f32],
    ys: &[f32],
    gate: &[f32],
    x: usize,
    (t_len, e, c, ys_rows): (usize, usize, usize, usize),
) {
    for t in 0..t_len {
        let g = gate[t * e + x] as f64;
        let d = &dout[t * c..][..c];
        let y = &ys[(x * ys_rows + t) * c..][..c];
        for (o, &v) in dy[t * c..][..c].iter_mut().zip(d) {
            *o = (g * v as f64) as f32;
        }
        dgate[t * e + x] = d.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32;
    }
}

/// The router's backward to its logits (`Train::moe_router_backward`) over the T tokens of `r`.
pub fn moe_router_backward(dlogits: &mut [f32], dgate: &[f32], r: &Routing, aux: f32) -> Result<()> {
    let Routing { probs, experts, weights, kept, e, k } = *r;
    let t_len = probs.len() / e.max(1);
    ensure(experts.len() >= t_len * k && weights.len() >= t_len * k && kept.len() >= t_len * k, "moe_router_backward", || {
        format!("experts / weights / kept must hold T*K = {} values", t_len * k)
    })?;
    let f = assignment_shares(&experts[..t_len * k], e)?;
    let aux_term: Vec<f64> = f.iter().map(|fi| aux as f64 * e as f64 * fi / t_len.max(1) as f64).collect();
    let mut dp = vec![0f64; e];
    for t in 0..t_len {
        let (p, ex, w) = (&probs[t * e..][..e], &experts[t * k..][..k], &weights[t * k..][..k]);
        let dw: Vec<f64> = (0..k).map(|r| if kept[t * k + r] != 0 { dgate[t * e + ex[r] as usize] as f64 } else { 0.0 }).collect();
        let sum: f64 = ex.iter().map(|&x| p[x as usize] as f64).sum();
        let dot: f64 = dw.iter().zip(w).map(|(d, w)| d * *w as f64).sum();
        dp.copy_from_slice(&aux_term);
        for (r, &x) in ex.iter().enumerate() {
            dp[x as usize] += (dw[r] - dot) / sum;
        }
        let pdp: f64 = p.iter().zip(&dp).map(|(p, d)| *p as f64 * d).sum();
        for (i, o) in dlogits[t * e..][..e].iter_mut().enumerate() {
            *o = (p[i] as f64 * (dp[i] - pdp)) as f32;
        }
    }
    Ok(())
}

/// The Switch load-balancing loss E * sum_i f_i P_i (`Train::moe_aux_loss`).
pub fn moe_aux_loss(probs: &[f32], experts: &[u32], t_len: usize, e: usize, k: usize) -> Result<f32> {
    let f = assignment_shares(&experts[..t_len * k], e)?;
    let mut acc = 0f64;
    for (i, fi) in f.iter().enumerate() {
        let mean = (0..t_len).map(|t| probs[t * e + i] as f64).sum::<f64>() / t_len.max(1) as f64;
        acc += fi * mean;
    }
    Ok((e as f64 * acc) as f32)
}
