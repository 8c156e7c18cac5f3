//! Benchmarks print JSON; ratios are measured in one run on one device.

use crate::cli::args::BenchMatmulArgs;
use crate::error::Result;
use crate::gpu::{matmul::MatmulKind, Gpu, Recorder};
use crate::rng::Rng;

fn time_ms(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = std::time::Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// `tinyformer bench matmul`: GFLOP/s of the naive, the tiled and the vec4 tiled kernel on square M=K=N problems.
/// Each timing is `reps` dispatches in one submission, waited for, after one warm-up submission.
pub fn matmul(a: &BenchMatmulArgs) -> Result<String> {
    a.validate()?;
    let (sizes, reps) = (&a.sizes, a.reps);
    let gpu = std::sync::Arc::new(pollster::block_on(Gpu::new())?);
    let mut rng = Rng::new(1);
    let mut rows = Vec::new();
    for &s in sizes {
        let x = gpu.upload(&[s, s], &rng.vec_normal(s * s, 1.0), "x")?;
        let w = gpu.upload(&[s, s], &rng.vec_normal(s * s, 1.0), "w")?;
        let b = gpu.upload(&[s], &rng.vec_normal(s, 1.0), "b")?;
        let out = gpu.zeros(&[s, s], "out")?;
        let flop = 2.0 * (s as f64).powi(3);
        // Enough repetitions for ~50 ms of work at 1 GFLOP/s (llvmpipe), at least 3.
        let reps = reps.unwrap_or(((5e7 / flop) as usize).clamp(3, 200));
        let mut result = serde_json::Map::new();
        result.insert("size".into(), s.into());
        result.insert("reps".into(), reps.into());
        for (kind, key) in [(MatmulKind::Naive, "naive"), (MatmulKind::Tiled, "tiled"), (MatmulKind::Tiled4, "tiled4")] {
            let run = |n: usize| -> Result<()> {
                let mut rec = Recorder::new(&gpu);
                for _ in 0..n {
                    crate::gpu::matmul::matmul(&mut rec, &out, 0, &x, 0, s, &w, Some(&b), kind)?;
                }
                rec.submit()?;
                gpu.poll_wait();
                gpu.check()
            };
            run(1)?; // warm-up: first binding and driver compilation
            let ms = time_ms(|| run(reps))?;
            let gflops = flop * reps as f64 / (ms * 1e-3) / 1e9;
            result.insert(format!("{key}_ms"), (ms / reps as f64).into());
            result.insert(format!("{key}_gflops"), ((gflops * 100.0).round() / 100.0).into());
        }
        let ratio = result["tiled_gflops"].as_f64().unwrap_or(0.0) / result["naive_gflops"].as_f64().unwrap_or(1.0).max(1e-12);
        result.insert("tiled_over_naive".into(), ((ratio * 100.0).round() / 100.0).into());
        let ratio4 = result["tiled4_gflops"].as_f64().unwrap_or(0.0) / result["tiled_gflops"].as_f64().unwrap_or(1.0).max(1e-12);
        result.insert("tiled4_over_tiled".into(), ((ratio4 * 100.0).round() / 100.0).into());
        // One-row passes (cached decoding): out (1, N) = x (1, K) @ W^T + b with K = N = size.
        let m1 = |kind: MatmulKind| -> Result<f64> {
            let reps = (reps * 8).clamp(8, 400);
            let run = |n: usize| -> Result<()> {
                let mut rec = Recorder::new(&gpu);
                for _ in 0..n {
                    crate::gpu::matmul::matmul(&mut rec, &out, 0, &x, 0, 1, &w, Some(&b), kind)?;
                }
                rec.submit()?;
                gpu.poll_wait();
                gpu.check()
            };
            run(1)?;
            Ok(time_ms(|| run(reps))? / reps as f64)
        };
        let (naive1, gemv1) = (m1(MatmulKind::Naive)?, m1(MatmulKind::Gemv)?);
        result.insert("m1_naive_ms".into(), naive1.into());
        result.insert("m1_gemv_ms".into(), gemv1.into());
        result.insert("m1_gemv_over_naive".into(), (((naive1 / gemv1.max(1e-12)) * 100.0).round() / 100.0).into());
        rows.push(serde_json::Value::Object(result));
    }
    let out = serde_json::json!({
        "bench": "matmul",
        "op": "out = x @ W^T + b, M = K = N = size",
        "adapter": gpu.summary.name,
        "backend": gpu.summary.backend,
        "device_type": gpu.summary.device_type,
        "results": rows,
    });
    Ok(serde_json::to_string_pretty(&out).unwrap_or_default())
}
