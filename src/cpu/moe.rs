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
