use crate::error::{ensure, Result};

/// out = x @ W^T + b  (nn.Linear)
/// x (M, K), w (N, K) as PyTorch stores it, b (N,) optional -> out (M, N).
/// Accumulates in f64 so the reference is more accurate than any f32 kernel it checks.
pub fn matmul(out: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, n: usize) -> Result<()> {
    ensure(x.len() == m * k, "matmul", || format!("x has {} values, expected M*K = {m}*{k}", x.len()))?;
    ensure(w.len() == n * k, "matmul", || format!("W has {} values, expected N*K = {n}*{k}", w.len()))?;
    ensure(out.len() == m * n, "matmul", || format!("out has {} values, expected M*N = {m}*{n}", out.len()))?;
    if let Some(b) = b {
        ensure(b.len() == n, "matmul", || format!("bias has {} values, expected N = {n}", b.len()))?;
    }
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let mut acc = 0f64;
            for p in 0..k {
                acc += xr[p] as f64 * wr[p] as f64;
            }
            if let Some(b) = b {
                acc += b[j] as f64;
            }
            out[i * n + j] = acc as f32;
        }
    }
    Ok(())
}
