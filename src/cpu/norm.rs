//! LayerNorm and RMSNorm over the last dimension.

/// out = (x - mean) / sqrt(var + eps) * gamma + beta, per row. x, out (rows, C); gamma, beta (C,).
/// Biased variance, as torch.nn.LayerNorm.
pub fn layernorm(out: &mut [f32], x: &[f32], gamma: &[f32], beta: &[f32], c: usize, eps: f32) {
    for (o, r) in out.chunks_mut(c).zip(x.chunks(c)) {
        let mean = r.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for i in 0..c {
            o[i] = ((r[i] as f64 - mean) * inv * gamma[i] as f64 + beta[i] as f64) as f32;
        }
    }
}

/// out = x * rsqrt(mean(x^2) + eps) * weight, per row (seed 004's RMSNorm). x, out (rows, C); weight (C,).
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], c: usize, eps: f32) {
    for (o, r) in out.chunks_mut(c).zip(x.chunks(c)) {
        let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / c as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..c {
            o[i] = (r[i] as f64 * inv * weight[i] as f64) as f32;
        }
    }
}
