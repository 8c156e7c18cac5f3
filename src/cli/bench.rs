//! Benchmarks print JSON; ratios are measured in one run on one device.

use std::sync::Arc;

use serde_json::json;

use crate::cli::args::{BenchGenerateArgs, BenchMatmulArgs};
use crate::cli::model_cmds::open_on;
use crate::error::{Result, TfError};
use crate::gpu::{matmul::MatmulKind, Gpu, Recorder};
use crate::model::config::Arch;
use crate::model::run::{GenConfig, BOS_ID};
use crate::model::GpuBackend;
use crate::rng::Rng;
use crate::session::{Device, Session};

fn time_ms(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = std::time::Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// `tinyformer bench matmul`: GFLOP/s of the naive, the tiled, the vec4 tiled and the register-blocked (no barriers)
/// kernel on square M=K=N problems, and of the (vec4 where K allows) tile, the register-blocked kernel and the
/// one-row GEMV over bf16 weights (`tiled16_*`, `reg16_*`, `m1_gemv16_ms`).
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
        for (kind, key) in
            [(MatmulKind::Naive, "naive"), (MatmulKind::Tiled, "tiled"), (MatmulKind::Tiled4, "tiled4"), (MatmulKind::Reg, "reg")]
        {
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
        // the register-blocked kernel without barriers (for CPU-emulated GPUs) against the vec4 tile
        let ratio_reg = result["reg_gflops"].as_f64().unwrap_or(0.0) / result["tiled4_gflops"].as_f64().unwrap_or(1.0).max(1e-12);
        result.insert("reg_over_tiled4".into(), ((ratio_reg * 100.0).round() / 100.0).into());
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
        if gpu.k.matmul.gemv4_sg.is_some() {
            result.insert("m1_gemv_subgroup_ms".into(), m1(MatmulKind::GemvSubgroup)?.into());
        }
        result.insert("m1_gemv_over_naive".into(), (((naive1 / gemv1.max(1e-12)) * 100.0).round() / 100.0).into());
        // the same W as bf16 bits on the GPU (shaders/matmul16.wgsl): the tile and the one-row GEMV
        let bits: Vec<u16> = rng.vec_normal(s * s, 1.0).iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
        let w16 = gpu.upload16(&[s, s], &bits, crate::gpu::DType::BF16, "w16")?;
        let time16 = |m: usize, kind: MatmulKind, reps: usize| -> Result<f64> {
            let run = |n: usize| -> Result<()> {
                let mut rec = Recorder::new(&gpu);
                for _ in 0..n {
                    crate::gpu::matmul::matmul(&mut rec, &out, 0, &x, 0, m, &w16, Some(&b), kind)?;
                }
                rec.submit()?;
                gpu.poll_wait();
                gpu.check()
            };
            run(1)?;
            Ok(time_ms(|| run(reps))? / reps as f64)
        };
        let ms16 = time16(s, MatmulKind::Tiled4, reps)?;
        result.insert("tiled16_ms".into(), ms16.into());
        result.insert("tiled16_gflops".into(), ((flop / (ms16 * 1e-3) / 1e9 * 100.0).round() / 100.0).into());
        let reg16 = time16(s, MatmulKind::Reg, reps)?;
        result.insert("reg16_ms".into(), reg16.into());
        result.insert("reg16_gflops".into(), ((flop / (reg16 * 1e-3) / 1e9 * 100.0).round() / 100.0).into());
        result.insert("reg16_over_tiled16".into(), (((ms16 / reg16.max(1e-12)) * 100.0).round() / 100.0).into());
        let gemv16 = time16(1, MatmulKind::Gemv, (reps * 8).clamp(8, 400))?;
        result.insert("m1_gemv16_ms".into(), gemv16.into());
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

fn gpu_backend(s: &mut Session) -> Result<&mut GpuBackend> {
    s.gpu_backend().ok_or_else(|| TfError::Gpu("the benchmark's model is not on the GPU".into()))
}

/// `tinyformer bench generate`: tokens/s of greedy generation: cached vs uncached, GPU sampling vs
/// logits readback, fused vs unfused kernels, in one run.
pub fn generate(a: &BenchGenerateArgs) -> Result<String> {
    a.validate()?;
    let path = &a.model.model;
    let reps = a.reps;
    let gpu = Arc::new(pollster::block_on(Gpu::new())?);
    // our checkpoints, Hugging Face directories and llama2.c .bin files alike
    let mut s = open_on(&Device::Gpu(gpu.clone()), &a.model)?;
    // Where the device widens 16-bit weights to f32 at load (a GPU emulated on the CPU:
    // Gpu::widens16), the same checkpoint loaded a second time with its weights kept 16-bit, for the
    // `w16_*` variants below (the decode loop before the widening).
    let widened = gpu.widens16();
    let mut s16 = if widened {
        gpu.set_widen16(false);
        let r = open_on(&Device::Gpu(gpu.clone()), &a.model);
        gpu.set_widen16(true);
        Some(r?)
    } else {
        None
    };
    let (arch, ctx, layers) = (s.config().arch, s.config().max_seq_len, s.config().num_layers);
    let (start, src) = if arch == Arch::EncoderDecoder { (vec![BOS_ID], Some(vec![3u32; 8])) } else { (vec![1u32; 4], None) };
    let room = ctx.checked_sub(start.len()).filter(|&r| r > 0).ok_or_else(|| {
        TfError::Input(format!("the benchmark's prompt of {} tokens leaves no room in the model's context of {ctx} tokens", start.len()))
    })?;
    let n = a.tokens.min(room);
    let mut results = serde_json::Map::new();
    // (name, kv cache, GPU sampling, fused kernels, the kernel of few-row matmuls, tokens per
    // submission); "cached_unfused*" are the decode loop before the fused ops: no fusion, and one thread
    // per output; "cached_chained" is K = --tokens-per-submit tokens per submission (model::chain),
    // against "cached_gpu_sampling", the same loop at K = 1; "cached_chained_one_in_flight" the same
    // without submitting the next batch before reading the current one.
    let k = a.tokens_per_submit;
    let variants = [
        ("cached_gpu_sampling", true, true, true, MatmulKind::Gemv, 1),
        ("uncached_gpu_sampling", false, true, true, MatmulKind::Gemv, 1),
        ("cached_logits_readback", true, false, true, MatmulKind::Gemv, 1),
        ("cached_unfused", true, true, false, MatmulKind::Gemv, 1),
        ("cached_unfused_naive", true, true, false, MatmulKind::Naive, 1),
        ("cached_chained", true, true, true, MatmulKind::Gemv, k),
        ("cached_chained_one_in_flight", true, true, true, MatmulKind::Gemv, k),
        // fused, but biases and RoPE outside the q/k/v GEMV (the step to 8 dispatches a layer, before the epilogue made it 7)
        ("cached_qkv_no_epilogue", true, true, true, MatmulKind::Gemv, 1),
        // the GEMV's reduction in subgroup operations where the device has them (the same as
        // cached_gpu_sampling where it has none)
        ("cached_subgroups", true, true, true, MatmulKind::Gemv, 1),
        // one invocation per output, no barriers (shaders/rows.wgsl; MatmulKind::Rows): for GPUs
        // emulated on the CPU
        ("cached_rows", true, true, true, MatmulKind::Rows, 1),
        ("cached_rows_chained", true, true, true, MatmulKind::Rows, k),
        // on the checkpoint's weights kept 16-bit (s16), where this device widens them
        ("w16_cached_gpu_sampling", true, true, true, MatmulKind::Gemv, 1),
        ("w16_cached_chained", true, true, true, MatmulKind::Gemv, k),
    ];
    // warm-up: pipelines' first use and buffer first-binding
    pollster::block_on(s.generate(&start, src.as_deref(), GenConfig { max_new_tokens: 4.min(n), ..GenConfig::default() }))?;
    if let Some(s16) = s16.as_mut() {
        pollster::block_on(s16.generate(&start, src.as_deref(), GenConfig { max_new_tokens: 4.min(n), ..GenConfig::default() }))?;
    }
    // Repetitions outside, variants inside: on a shared machine every variant's best run is drawn
    // from the same stretch of time.
    let mut best = vec![f64::INFINITY; variants.len()];
    let mut produced = vec![0usize; variants.len()];
    for _ in 0..reps {
        for (i, &(name, kv, gs, fused, small, k)) in variants.iter().enumerate() {
            let s = match (name.starts_with("w16_"), s16.as_mut()) {
                (true, Some(s16)) => s16,
                (true, None) => continue, // the weights are not widened here: the same as cached_*
                (false, _) => &mut s,
            };
            let b = gpu_backend(s)?;
            (b.fused, b.small_matmul_kind) = (fused, small);
            b.qkv_epilogue = name != "cached_qkv_no_epilogue";
            b.subgroups = name == "cached_subgroups";
            let (d0, s0, l0) = (b.dispatches(), b.submits(), b.layer_dispatches);
            let t0 = std::time::Instant::now();
            let pipeline = name != "cached_chained_one_in_flight";
            let cfg =
                GenConfig { max_new_tokens: n, kv_cache: kv, gpu_sampling: gs, tokens_per_submit: k, pipeline, ..GenConfig::default() };
            let ids = pollster::block_on(s.generate(&start, src.as_deref(), cfg))?;
            best[i] = best[i].min(t0.elapsed().as_secs_f64());
            produced[i] = ids.len() - start.len();
            let b = gpu_backend(s)?;
            let (d, sub, l) = (b.dispatches() - d0, b.submits() - s0, b.layer_dispatches - l0);
            results.insert(format!("{name}_dispatches_per_token"), json!(d as f64 / produced[i].max(1) as f64));
            // inside the layer loop only (no embedding, first norm, head or sampling)
            let in_layers = l as f64 / produced[i].max(1) as f64 / layers.max(1) as f64;
            results.insert(format!("{name}_dispatches_per_layer_in_loop"), json!((in_layers * 100.0).round() / 100.0));
            results.insert(format!("{name}_submissions_per_token"), json!(sub as f64 / produced[i].max(1) as f64));
        }
    }
    for (i, &(name, ..)) in variants.iter().enumerate() {
        if best[i].is_finite() {
            results.insert(format!("{name}_tokens_per_second"), json!(produced[i] as f64 / best[i]));
        }
    }
    drop(s16);
    // Prefill: a 128-token prompt (or the context less one) and one new token, per kernel set of the
    // passes of 8 rows or more (matmul, attention), interleaved within each repetition: the vec4 tile
    // (the default), the scalar tile, and the barrier-free kernels for CPU-emulated GPUs: the
    // register-blocked matmul, then with the attention, then also the norms an invocation per row.
    if src.is_none() {
        use crate::gpu::RowKind;
        let prompt = vec![1u32; 128.min(ctx - 1)];
        let sets = [
            ("tiled4", MatmulKind::Tiled4, RowKind::Workgroup, RowKind::Workgroup),
            ("tiled", MatmulKind::Tiled, RowKind::Workgroup, RowKind::Workgroup),
            ("tiled4_rows", MatmulKind::Tiled4, RowKind::Invocation, RowKind::Invocation),
            ("reg", MatmulKind::Reg, RowKind::Workgroup, RowKind::Workgroup),
            ("reg_attn_rows", MatmulKind::Reg, RowKind::Invocation, RowKind::Workgroup),
            ("reg_rows", MatmulKind::Reg, RowKind::Invocation, RowKind::Invocation),
        ];
        let b = gpu_backend(&mut s)?;
        let before = (b.matmul_kind, b.attention_kind, b.norm_kind);
        let mut best = [f64::INFINITY; 6];
        for _ in 0..reps {
            for (i, &(_, kind, attn, norm)) in sets.iter().enumerate() {
                let b = gpu_backend(&mut s)?;
                (b.matmul_kind, b.attention_kind, b.norm_kind) = (kind, attn, norm);
                let t0 = std::time::Instant::now();
                pollster::block_on(s.generate(&prompt, None, GenConfig { max_new_tokens: 1, ..GenConfig::default() }))?;
                best[i] = best[i].min(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        let b = gpu_backend(&mut s)?;
        (b.matmul_kind, b.attention_kind, b.norm_kind) = before;
        results.insert("prefill_tokens".into(), json!(prompt.len()));
        for (i, &(name, ..)) in sets.iter().enumerate() {
            results.insert(format!("prefill_ms_{name}"), json!(best[i]));
        }
        // the barrier-free set (matmul, attention, norms) against the default vec4 tile
        results.insert("prefill_reg_rows_over_tiled4".into(), json!(((best[0] / best[5].max(1e-12)) * 100.0).round() / 100.0));
        // this adapter's default (GpuBackend::new: the barrier-free set where the device type is Cpu)
        let name = |k: RowKind| if k == RowKind::Invocation { "rows" } else { "workgroup" };
        results.insert(
            "prefill_default".into(),
            json!(format!("{:?} matmul, {} attention, {} norms", before.0, name(before.1), name(before.2))),
        );
    }
    let b = gpu_backend(&mut s)?;
    let default_few_rows = GpuBackend::new(gpu.clone()).small_matmul_kind;
    (b.fused, b.small_matmul_kind, b.qkv_epilogue, b.subgroups) = (true, default_few_rows, true, false);
    for k in ["cached_gpu_sampling", "cached_unfused_naive", "cached_qkv_no_epilogue"] {
        let d = results[&format!("{k}_dispatches_per_token")].as_f64().unwrap_or(0.0);
        results.insert(format!("{k}_dispatches_per_layer"), json!((d / layers.max(1) as f64 * 100.0).round() / 100.0));
    }
    let tps = |k: &str| results[&format!("{k}_tokens_per_second")].as_f64().unwrap_or(0.0);
    let fused_over_unfused = tps("cached_gpu_sampling") / tps("cached_unfused_naive").max(1e-12);
    let cached_over_uncached = tps("cached_gpu_sampling") / tps("uncached_gpu_sampling").max(1e-12);
    let gpu_over_readback = tps("cached_gpu_sampling") / tps("cached_logits_readback").max(1e-12);
    let chained_over_k1 = tps("cached_chained") / tps("cached_gpu_sampling").max(1e-12);
    let qkv_epilogue_gain = tps("cached_gpu_sampling") / tps("cached_qkv_no_epilogue").max(1e-12);
    let subgroup_gain = tps("cached_subgroups") / tps("cached_gpu_sampling").max(1e-12);
    let rows_chained_over_k1 = tps("cached_rows_chained") / tps("cached_rows").max(1e-12);
    let rows_over_gemv = tps("cached_rows") / tps("cached_gpu_sampling").max(1e-12);
    let w16 = |k: &str| results.get(&format!("w16_{k}_tokens_per_second")).and_then(|v| v.as_f64());
    let widened_over_16bit = w16("cached_gpu_sampling").map(|t| tps("cached_gpu_sampling") / t.max(1e-12));
    Ok(serde_json::to_string_pretty(&json!({
        "bench": "generate",
        "model": path,
        "arch": arch.as_str(),
        "parameters": s.parameters(),
        "adapter": gpu.summary.name,
        "backend": gpu.summary.backend,
        "new_tokens": n,
        "reps": reps,
        "results": results,
        "cached_over_uncached": cached_over_uncached,
        "gpu_sampling_over_logits_readback": gpu_over_readback,
        "fused_gemv_over_unfused_naive": fused_over_unfused,
        "tokens_per_submit": k,
        "chained_over_k1": chained_over_k1,
        "qkv_epilogue_over_none": qkv_epilogue_gain,
        "subgroups": gpu.k.matmul.gemv4_sg.is_some(),
        "subgroups_over_workgroup_reduction": subgroup_gain,
        "rows_over_gemv": rows_over_gemv,
        "rows_chained_over_rows_k1": rows_chained_over_k1,
        "weights_widened_to_f32": widened,
        "widened_over_16bit": widened_over_16bit,
        "default_few_rows": format!("{default_few_rows:?}"),
        "layers": layers,
    }))
    .unwrap_or_default())
}
