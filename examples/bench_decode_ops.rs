//! Per-op cost of the GPU decode loop's kernels at the shipped models' shapes: each op
//! dispatched `reps` times in one submission, waited for, best of 3; microseconds per dispatch, as
//! JSON. On a GPU emulated on the CPU (llvmpipe) this says where a token's time goes.
//!   cargo run --release --example bench_decode_ops [d_model] [hidden] [vocab] [context]
use std::sync::Arc;

use tinyformer::gpu::{attention, embed, matmul, norm, qkv, sample, Gpu, GpuTensor, Recorder, RowKind};
use tinyformer::ops::{AttnShape, SampleParams};

fn main() -> tinyformer::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (d, hidden, vocab, ctx) =
        (*args.first().unwrap_or(&192), *args.get(1).unwrap_or(&512), *args.get(2).unwrap_or(&512), *args.get(3).unwrap_or(&32));
    let gpu = Arc::new(pollster::block_on(Gpu::new())?);
    let mut rng = tinyformer::rng::Rng::new(3);
    let up = |shape: &[usize], rng: &mut tinyformer::rng::Rng| gpu.upload(shape, &rng.vec_normal(shape.iter().product(), 0.1), "t");
    let x = up(&[d], &mut rng)?;
    let xh = up(&[hidden], &mut rng)?;
    let w_dd = up(&[d, d], &mut rng)?;
    let w_hd = up(&[hidden, d], &mut rng)?;
    let w_hd2 = up(&[hidden, d], &mut rng)?;
    let w_dh = up(&[d, hidden], &mut rng)?;
    let w_vd = gpu.upload_weight(&[vocab, d], &rng.vec_normal(vocab * d, 0.1), "w_vd")?;
    let (nh, nkv, hs) = (6, 2, d / 6);
    let w_k = up(&[nkv * hs, d], &mut rng)?;
    let q = gpu.zeros(&[d], "q")?;
    let kc = up(&[ctx, nkv * hs], &mut rng)?;
    let vc = up(&[ctx, nkv * hs], &mut rng)?;
    let out_d = gpu.zeros(&[d], "o")?;
    let out_h = gpu.zeros(&[hidden], "o")?;
    let logits = up(&[vocab], &mut rng)?;
    let probs = gpu.zeros(&[nh, ctx], "p")?;
    let g = up(&[d], &mut rng)?;
    let ids = gpu.upload_u32(&[1], &[3], "ids")?;
    let sampled = gpu.zeros_u32(&[2], "s")?;
    let table = gpu.upload_weight(&[vocab, d], &rng.vec_normal(vocab * d, 0.1), "table")?;
    let rope = gpu.upload(&[ctx, hs / 2, 2], &vec![0.5; ctx * hs], "rope")?;
    let reps = std::env::var("REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(100);
    let time = |f: &dyn Fn(&mut Recorder) -> tinyformer::Result<()>| -> tinyformer::Result<f64> {
        let run = |n: usize| -> tinyformer::Result<f64> {
            let mut rec = Recorder::new(&gpu);
            for _ in 0..n {
                f(&mut rec)?;
            }
            let t = std::time::Instant::now();
            rec.submit()?;
            gpu.poll_wait();
            gpu.check()?;
            Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
        };
        run(2)?;
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            best = best.min(run(reps)?);
        }
        Ok((best * 10.0).round() / 10.0)
    };
    use matmul::MatmulKind::{Gemv, Rows};
    let mut r = serde_json::Map::new();
    let mm = |w: &GpuTensor, xx: &GpuTensor, o: &GpuTensor, kind| time(&|rec| matmul::matmul(rec, o, 0, xx, 0, 1, w, None, kind));
    for (name, kind) in [("gemv", Gemv), ("rows", Rows)] {
        r.insert(format!("{name}_dxd_us"), mm(&w_dd, &x, &out_d, kind)?.into());
        r.insert(format!("{name}_hidden_x_d_us"), mm(&w_hd, &x, &out_h, kind)?.into());
        r.insert(format!("{name}_d_x_hidden_us"), mm(&w_dh, &xh, &out_d, kind)?.into());
        r.insert(format!("{name}_vocab_x_d_us"), mm(&w_vd, &x, &logits, kind)?.into());
        let rp = qkv::QkvRope { table: &rope, hs, start_pos: 3 };
        r.insert(
            format!("{name}_qkv_rope_us"),
            time(&|rec| qkv::qkv_kind(rec, &q, &kc, &vc, 3 * nkv * hs, &x, 1, [&w_dd, &w_k, &w_k], None, Some(rp), kind))?.into(),
        );
    }
    r.insert("gemv_swiglu_us".into(), time(&|rec| matmul::gemv_swiglu(rec, &out_h, &x, 1, &w_hd, &w_hd2))?.into());
    r.insert("rows_swiglu_us".into(), time(&|rec| matmul::rows_swiglu(rec, &out_h, &x, 1, &w_hd, &w_hd2))?.into());
    let mut s = AttnShape::packed(1, ctx, nh, nkv, hs);
    s.causal = Some(ctx - 1);
    r.insert(format!("attention_ctx{ctx}_us"), time(&|rec| attention::attention(rec, &out_d, &probs, &q, &kc, &vc, None, &s))?.into());
    r.insert(
        format!("attention_rows_ctx{ctx}_us"),
        time(&|rec| attention::attention_kind(rec, &out_d, &probs, &q, &kc, &vc, None, &s, RowKind::Invocation))?.into(),
    );
    r.insert(
        "add_norm_rows_us".into(),
        time(&|rec| norm::add_norm_kind(rec, &x, &out_d, Some(&q), &g, None, 1, 1e-5, RowKind::Invocation))?.into(),
    );
    r.insert(
        "sample_greedy1_us".into(),
        time(&|rec| sample::sample_one_invocation(rec, &sampled, &logits, 0, &SampleParams::greedy(), 0.5))?.into(),
    );
    r.insert("add_norm_us".into(), time(&|rec| norm::add_norm(rec, &x, &out_d, Some(&q), &g, None, 1, 1e-5))?.into());
    r.insert("rmsnorm_us".into(), time(&|rec| norm::rmsnorm(rec, &q, &x, &g, 1, 1e-5))?.into());
    r.insert("embedding_us".into(), time(&|rec| embed::embedding(rec, &q, &table, &ids, 1, 1.0))?.into());
    r.insert("sample_greedy_us".into(), time(&|rec| sample::sample(rec, &sampled, &logits, 0, &SampleParams::greedy(), 0.5))?.into());
    let sp = SampleParams { temperature: 0.8, top_k: 40, top_p: 0.9 };
    r.insert("sample_topk_topp_us".into(), time(&|rec| sample::sample(rec, &sampled, &logits, 0, &sp, 0.5))?.into());
    let out = serde_json::json!({"bench": "decode ops", "adapter": gpu.summary.name, "d_model": d, "hidden": hidden, "vocab": vocab, "context": ctx, "reps": reps, "us_per_dispatch": r});
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}
