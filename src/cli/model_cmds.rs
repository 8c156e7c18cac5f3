//! `tinyformer info | forward | generate | eval | bench generate`: the models from the command line.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::cli::args::{BackendChoice, BenchGenerateArgs, EvalArgs, ForwardArgs, GenerateArgs, InfoArgs, ModelArgs};
use crate::cpu::SampleParams;
use crate::error::{Result, TfError};
use crate::fastcpu::FastCpuBackend;
use crate::gpu::{matmul::MatmulKind, Gpu};
use crate::model::checkpoint::Checkpoint;
use crate::model::config::Arch;
use crate::model::memory::{self, Budget};
use crate::model::run::{GenConfig, BOS_ID};
use crate::model::{Backend, CpuBackend, GpuBackend, Model};
use crate::tokenizer::Tokenizer;

/// The checkpoint's bytes: a regular file no larger than the memory budget (it is read whole).
pub(crate) fn read_model_file(a: &ModelArgs) -> Result<Vec<u8>> {
    crate::cli::read_input(&a.model, "--model", a.memory_budget, "the memory budget; raise it with --memory-budget")
}

pub(crate) fn budget(a: &ModelArgs) -> Budget {
    Budget::cli(a.memory_budget)
}

pub(crate) enum Which {
    Gpu(GpuBackend),
    /// the fast CPU backend (src/fastcpu)
    Cpu(FastCpuBackend),
    /// the CPU reference twin (src/cpu), the oracle the fast one is tested against
    Reference(CpuBackend),
}

pub(crate) fn backend(choice: BackendChoice) -> Result<Which> {
    match choice {
        BackendChoice::Gpu => Ok(Which::Gpu(GpuBackend::new(Arc::new(pollster::block_on(Gpu::new())?)))),
        BackendChoice::Cpu => Ok(Which::Cpu(FastCpuBackend)),
        BackendChoice::Reference => Ok(Which::Reference(CpuBackend)),
    }
}

/// The tokenizer that reads the user's text: for the encoder-decoder, the source side.
pub fn source_tokenizer<B: Backend>(m: &Model<B>) -> Option<&Tokenizer> {
    m.tokenizer.as_ref()
}

fn text_ids<B: Backend>(m: &Model<B>, text: &str) -> Result<Vec<u32>> {
    let t = source_tokenizer(m).ok_or_else(|| TfError::Input("this checkpoint has no tokenizer: pass --ids instead of --prompt".into()))?;
    let enc = t.encode(text);
    if !enc.unknown.is_empty() {
        let chars: Vec<char> = text.chars().collect();
        let shown: String = enc.unknown.iter().take(8).filter_map(|&i| chars.get(i)).map(|c| format!("{c:?} ")).collect();
        eprintln!("tinyformer: warning: {} character(s) are not in the tokenizer's table: {shown}", enc.unknown.len());
    }
    Ok(enc.ids)
}

pub fn info(a: &InfoArgs) -> Result<String> {
    let bytes = read_model_file(&a.model)?;
    let ck = Checkpoint::from_bytes(&bytes)?;
    let tok = ck.tokenizer.as_deref().map(Tokenizer::from_json);
    let tok_json = match tok {
        None => Value::Null,
        Some(Ok(t)) => json!({"kind": t.kind(), "vocab_size": t.vocab_size(), "merges": t.num_merges()}),
        Some(Err(e)) => json!({"error": crate::error::one_line(&e.to_string())}),
    };
    let demand = memory::demand(&ck.config);
    Ok(serde_json::to_string_pretty(&json!({
        "file": a.model.model,
        "bytes": bytes.len(),
        "dtype": ck.dtype().map(|d| d.as_str()),
        "config": ck.config,
        "parameters": ck.config.param_count(),
        "memory": {"total_bytes": demand.total_bytes, "fits_budget": demand.check(&budget(&a.model)).is_ok(), "buffers": demand.items},
        "tokenizer": tok_json,
    }))
    .unwrap_or_default())
}

/// (--ids | --prompt) for the model's input.
pub(crate) fn input_ids<B: Backend>(
    m: &Model<B>,
    ids: &Option<crate::cli::args::Ids>,
    prompt: &Option<String>,
) -> Result<Option<Vec<u32>>> {
    match (ids, prompt) {
        (Some(_), Some(_)) => Err(TfError::Input("give either --ids or --prompt, not both".into())),
        (Some(ids), None) => Ok(Some(ids.0.clone())),
        (None, Some(p)) => Ok(Some(text_ids(m, p)?)),
        (None, None) => Ok(None),
    }
}

async fn forward_with<B: Backend>(b: &mut B, bytes: &[u8], a: &ForwardArgs) -> Result<Value> {
    let mut m = Model::load_within(b, bytes, &budget(&a.model))?;
    let ids = input_ids(&m, &a.ids, &a.prompt)?.ok_or_else(|| TfError::Input("--ids 3,1,4 or --prompt TEXT is required".into()))?;
    let tgt: Option<Vec<u32>> = a.tgt_ids.as_ref().map(|t| t.0.clone());
    let out = m.forward(b, &ids, tgt.as_deref()).await?;
    let logits: Vec<Vec<f32>> = out.logits.chunks(out.vocab).map(|r| r.to_vec()).collect();
    let attention: Vec<Value> =
        out.attention.iter().map(|mp| json!({"kind": mp.kind, "layer": mp.layer, "weights": mp.nested()})).collect();
    let masks: serde_json::Map<String, Value> = out.masks.iter().map(|(k, mk)| (k.to_string(), json!(mk.rows_vec()))).collect();
    let mut v =
        json!({"arch": m.cfg.arch.as_str(), "backend": b.kind(), "ids": ids, "logits": logits, "attention": attention, "masks": masks});
    if let Some(t) = tgt {
        v["tgt_ids"] = json!(t);
    }
    if !out.moe.is_empty() {
        v["moe"] = json!(out.moe);
    }
    Ok(v)
}

pub fn forward(a: &ForwardArgs) -> Result<String> {
    let bytes = read_model_file(&a.model)?;
    let v = match backend(a.backend)? {
        Which::Gpu(mut b) => pollster::block_on(forward_with(&mut b, &bytes, a))?,
        Which::Cpu(mut b) => pollster::block_on(forward_with(&mut b, &bytes, a))?,
        Which::Reference(mut b) => pollster::block_on(forward_with(&mut b, &bytes, a))?,
    };
    let s = serde_json::to_string(&v).unwrap_or_default();
    match &a.out {
        Some(f) => {
            std::fs::write(f, s).map_err(|e| TfError::Input(format!("cannot write {}: {e}", crate::error::quote(f))))?;
            Ok(String::new())
        }
        None => Ok(s),
    }
}

/// The generation settings, checked before the model is read.
fn gen_config(a: &GenerateArgs) -> Result<GenConfig> {
    let s = a.sampling()?;
    let sample = if s.temperature == 0.0 {
        SampleParams::greedy()
    } else {
        SampleParams { temperature: s.temperature, top_k: s.top_k, top_p: s.top_p }
    };
    Ok(GenConfig { max_new_tokens: a.max_new_tokens, sample, seed: a.seed.unwrap_or(0), kv_cache: !a.no_kv_cache, ..GenConfig::default() })
}

async fn generate_with<B: Backend>(b: &mut B, bytes: &[u8], a: &GenerateArgs, cfg: GenConfig) -> Result<Value> {
    let mut m = Model::load_within(b, bytes, &budget(&a.model))?;
    let encdec = m.cfg.arch == Arch::EncoderDecoder;
    let (start, src) = if encdec {
        let src = match (&a.src_ids, &a.prompt) {
            (Some(_), Some(_)) => return Err(TfError::Input("give either --src-ids or --prompt, not both".into())),
            (Some(s), None) => s.0.clone(),
            (None, Some(p)) => text_ids(&m, p)?,
            (None, None) => return Err(TfError::Input("an encoder_decoder model needs --src-ids or --prompt (the source)".into())),
        };
        (a.ids.as_ref().map(|i| i.0.clone()).unwrap_or_else(|| vec![BOS_ID]), Some(src))
    } else {
        if a.src_ids.is_some() {
            return Err(TfError::Input(format!("--src-ids is only for encoder_decoder models; this one is {}", m.cfg.arch.as_str())));
        }
        (input_ids(&m, &a.ids, &a.prompt)?.ok_or_else(|| TfError::Input("--ids 3,1,4 or --prompt TEXT is required".into()))?, None)
    };
    let ctx = m.cfg.max_seq_len;
    if start.len().checked_add(cfg.max_new_tokens).is_none_or(|end| end > ctx) {
        return Err(TfError::Input(format!(
            "{} start tokens + {} new tokens exceed the model's context of {ctx} tokens",
            start.len(),
            cfg.max_new_tokens
        )));
    }
    let t0 = std::time::Instant::now();
    let ids = m.generate(b, &start, src.as_deref(), cfg).await?;
    let secs = t0.elapsed().as_secs_f64();
    let new = ids.len() - start.len();
    let mut v =
        json!({"ids": ids, "new_tokens": new, "tokens_per_second": if secs > 0.0 { new as f64 / secs } else { 0.0 }, "backend": b.kind()});
    if let Some(s) = &src {
        v["src_ids"] = json!(s);
    }
    if let Ok(text) = m.decode_output(&ids) {
        v["text"] = json!(text);
    }
    Ok(v)
}

pub fn generate(a: &GenerateArgs) -> Result<String> {
    let cfg = gen_config(a)?;
    let bytes = read_model_file(&a.model)?;
    let v = match backend(a.backend)? {
        Which::Gpu(mut b) => pollster::block_on(generate_with(&mut b, &bytes, a, cfg))?,
        Which::Cpu(mut b) => pollster::block_on(generate_with(&mut b, &bytes, a, cfg))?,
        Which::Reference(mut b) => pollster::block_on(generate_with(&mut b, &bytes, a, cfg))?,
    };
    Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
}

async fn eval_with<B: Backend>(b: &mut B, bytes: &[u8], text: &str, budget: &Budget) -> Result<Value> {
    let mut m = Model::load_within(b, bytes, budget)?;
    let ids = text_ids(&m, text)?;
    let (loss, n) = m.eval_loss(b, &ids).await?;
    // Per character: the total loss over the predicted tokens divided by the text's characters, so
    // models with different tokenizers can be compared (= loss per token / characters per token, up
    // to the first token, which is not predicted). train/train.py uses the same convention.
    let chars = text.chars().count() as f64;
    let per_char = loss * n as f64 / chars.max(1.0);
    Ok(
        json!({"tokens": ids.len(), "predicted_tokens": n, "chars": chars as u64, "chars_per_token": chars / ids.len() as f64, "total_nats": loss * n as f64, "loss_per_token": loss, "loss_per_char": per_char, "backend": b.kind()}),
    )
}

pub fn eval(a: &EvalArgs) -> Result<String> {
    let text = crate::cli::read_text(&a.text_file, "--text-file")?;
    let bytes = read_model_file(&a.model)?;
    let v = match backend(a.backend)? {
        Which::Gpu(mut b) => pollster::block_on(eval_with(&mut b, &bytes, &text, &budget(&a.model)))?,
        Which::Cpu(mut b) => pollster::block_on(eval_with(&mut b, &bytes, &text, &budget(&a.model)))?,
        Which::Reference(mut b) => pollster::block_on(eval_with(&mut b, &bytes, &text, &budget(&a.model)))?,
    };
    Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
}

/// tokens/s of greedy generation: cached vs uncached, GPU sampling vs logits readback, in one run.
pub fn bench_generate(a: &BenchGenerateArgs) -> Result<String> {
    a.validate()?;
    let path = &a.model.model;
    let bytes = read_model_file(&a.model)?;
    let reps = a.reps;
    let gpu = Arc::new(pollster::block_on(Gpu::new())?);
    let mut b = GpuBackend::new(gpu.clone());
    let mut m = Model::load_within(&b, &bytes, &budget(&a.model))?;
    let (start, src) = if m.cfg.arch == Arch::EncoderDecoder { (vec![BOS_ID], Some(vec![3u32; 8])) } else { (vec![1u32; 4], None) };
    let room = m.cfg.max_seq_len.checked_sub(start.len()).filter(|&r| r > 0).ok_or_else(|| {
        TfError::Input(format!(
            "the benchmark's prompt of {} tokens leaves no room in the model's context of {} tokens",
            start.len(),
            m.cfg.max_seq_len
        ))
    })?;
    let n = a.tokens.min(room);
    let mut results = serde_json::Map::new();
    // (name, kv cache, GPU sampling, fused kernels, the kernel of few-row matmuls); the last two
    // are the decode loop before issue 12: no fusion, and one thread per output.
    let variants = [
        ("cached_gpu_sampling", true, true, true, MatmulKind::Gemv),
        ("uncached_gpu_sampling", false, true, true, MatmulKind::Gemv),
        ("cached_logits_readback", true, false, true, MatmulKind::Gemv),
        ("cached_unfused", true, true, false, MatmulKind::Gemv),
        ("cached_unfused_naive", true, true, false, MatmulKind::Naive),
    ];
    let mut runs: Vec<(String, f64, usize)> = Vec::new();
    // warm-up: pipelines' first use and buffer first-binding
    pollster::block_on(m.generate(&mut b, &start, src.as_deref(), GenConfig { max_new_tokens: 4.min(n), ..GenConfig::default() }))?;
    // Repetitions outside, variants inside: on a shared machine every variant's best run is drawn
    // from the same stretch of time.
    let mut best = [f64::INFINITY; 5];
    let mut produced = [0usize; 5];
    for _ in 0..reps {
        for (i, &(name, kv, gs, fused, small)) in variants.iter().enumerate() {
            (b.fused, b.small_matmul_kind) = (fused, small);
            let d0 = b.dispatches();
            let t0 = std::time::Instant::now();
            let ids = pollster::block_on(m.generate(
                &mut b,
                &start,
                src.as_deref(),
                GenConfig { max_new_tokens: n, kv_cache: kv, gpu_sampling: gs, ..GenConfig::default() },
            ))?;
            best[i] = best[i].min(t0.elapsed().as_secs_f64());
            produced[i] = ids.len() - start.len();
            results.insert(format!("{name}_dispatches_per_token"), json!((b.dispatches() - d0) as f64 / produced[i].max(1) as f64));
        }
    }
    for (i, &(name, ..)) in variants.iter().enumerate() {
        results.insert(format!("{name}_tokens_per_second"), json!(produced[i] as f64 / best[i]));
        runs.push((name.to_string(), best[i], produced[i]));
    }
    // Prefill: a 128-token prompt (or the context less one) and one new token, vec4 tiled vs tiled.
    if src.is_none() {
        let prompt = vec![1u32; 128.min(m.cfg.max_seq_len - 1)];
        let mut prefill = |kind: MatmulKind| -> Result<f64> {
            b.matmul_kind = kind;
            let mut best = f64::INFINITY;
            for _ in 0..reps {
                let t0 = std::time::Instant::now();
                pollster::block_on(m.generate(&mut b, &prompt, None, GenConfig { max_new_tokens: 1, ..GenConfig::default() }))?;
                best = best.min(t0.elapsed().as_secs_f64() * 1e3);
            }
            Ok(best)
        };
        let (t4, t1) = (prefill(MatmulKind::Tiled4)?, prefill(MatmulKind::Tiled)?);
        b.matmul_kind = MatmulKind::Tiled4;
        results.insert("prefill_tokens".into(), json!(prompt.len()));
        results.insert("prefill_ms_tiled4".into(), json!(t4));
        results.insert("prefill_ms_tiled".into(), json!(t1));
    }
    (b.fused, b.small_matmul_kind) = (true, MatmulKind::Gemv);
    let layers = (m.cfg.num_layers).max(1) as f64;
    for k in ["cached_gpu_sampling", "cached_unfused_naive"] {
        let d = results[&format!("{k}_dispatches_per_token")].as_f64().unwrap_or(0.0);
        results.insert(format!("{k}_dispatches_per_layer"), json!((d / layers * 100.0).round() / 100.0));
    }
    let tps = |k: &str| results[&format!("{k}_tokens_per_second")].as_f64().unwrap_or(0.0);
    let fused_over_unfused = tps("cached_gpu_sampling") / tps("cached_unfused_naive").max(1e-12);
    let cached_over_uncached = tps("cached_gpu_sampling") / tps("uncached_gpu_sampling").max(1e-12);
    let gpu_over_readback = tps("cached_gpu_sampling") / tps("cached_logits_readback").max(1e-12);
    Ok(serde_json::to_string_pretty(&json!({
        "bench": "generate",
        "model": path,
        "arch": m.cfg.arch.as_str(),
        "parameters": m.params,
        "adapter": gpu.summary.name,
        "backend": gpu.summary.backend,
        "new_tokens": n,
        "reps": reps,
        "results": results,
        "cached_over_uncached": cached_over_uncached,
        "gpu_sampling_over_logits_readback": gpu_over_readback,
        "fused_gemv_over_unfused_naive": fused_over_unfused,
        "layers": m.cfg.num_layers,
    }))
    .unwrap_or_default())
}
