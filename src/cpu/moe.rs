//! The mixture-of-experts router: softmax over experts, top-k, renormalised weights.

/// logits (T, E) -> probs (T, E), experts (T, K) chosen in descending probability (ties go to the
/// lower index), weights (T, K) = the chosen probabilities renormalised to sum to 1.
pub fn moe_router(probs: &mut [f32], experts: &mut [u32], weights: &mut [f32], logits: &[f32], t_len: usize, e: usize, k: usize) {
    for t in 0..t_len {
        let l = &logits[t * e..(t + 1) * e];
        let mx = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = l.iter().map(|&x| (x as f64 - mx).exp()).sum();
        let p = &mut probs[t * e..(t + 1) * e];
        for i in 0..e {
            p[i] = ((l[i] as f64 - mx).exp() / z) as f32;
        }
        let mut taken = vec![false; e];
        let mut sum = 0f64;
        for r in 0..k {
            let mut best = usize::MAX;
            for i in 0..e {
                if !taken[i] && (best == usize::MAX || p[i] > p[best]) {
                    best = i;
                }
            }
            taken[best] = true;
            experts[t * k + r] = best as u32;
            sum += p[best] as f64;
        }
        for r in 0..k {
            weights[t * k + r] = (p[experts[t * k + r] as usize] as f64 / sum) as f32;
        }
    }
}

/// Deterministic expert capacity: each expert keeps its first `capacity` assignments in token order
/// (None = no limit). experts, weights (T, K) -> gate (T, E) holding the kept weight of expert e for
/// token t (0 when not chosen or dropped), kept (T, K) 1 / 0. Dropped weights are not renormalised.
#[allow(clippy::too_many_arguments)]
pub fn moe_capacity(
    gate: &mut [f32],
    kept: &mut [u32],
    experts: &[u32],
    weights: &[f32],
    t_len: usize,
    e: usize,
    k: usize,
    capacity: Option<usize>,
) {
    let mut count = vec![0usize; e];
    gate[..t_len * e].fill(0.0);
    for t in 0..t_len {
        for r in 0..k {
            let ex = experts[t * k + r] as usize;
            if ex >= e {
                kept[t * k + r] = 0;
                continue;
            }
            if capacity.is_none_or(|c| count[ex] < c) {
                gate[t * e + ex] = weights[t * k + r];
                kept[t * k + r] = 1;
                count[ex] += 1;
            } else {
                kept[t * k + r] = 0;
            }
        }
    }
}

/// out (T, C) = sum_e gate[t, e] * ys[e, t, :], with ys laid out (E, ys_rows, C).
pub fn moe_combine(out: &mut [f32], ys: &[f32], gate: &[f32], t_len: usize, e: usize, c: usize, ys_rows: usize) {
    for t in 0..t_len {
        for j in 0..c {
            let mut acc = 0f64;
            for x in 0..e {
                let g = gate[t * e + x];
                if g != 0.0 {
                    acc += g as f64 * ys[(x * ys_rows + t) * c + j] as f64;
                }
            }
            out[t * c + j] = acc as f32;
        }
    }
}
