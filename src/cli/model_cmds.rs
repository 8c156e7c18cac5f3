//! `tinyformer info | forward | generate | eval | bench generate`: the models from the command line.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::cli::args::Args;
use crate::cpu::SampleParams;
use crate::error::{Result, TfError};
use crate::gpu::{matmul::MatmulKind, Gpu};
use crate::model::checkpoint::Checkpoint;
use crate::model::config::Arch;
use crate::model::run::{GenConfig, BOS_ID};
use crate::model::{Backend, CpuBackend, GpuBackend, Model};
use crate::tokenizer::Tokenizer;

fn read_model_file(a: &Args) -> Result<(String, Vec<u8>)> {
    let path = a.str("model")?.ok_or_else(|| TfError::Input("--model FILE is required".into()))?;
    let bytes = std::fs::read(&path).map_err(|e| TfError::Input(format!("cannot read model file '{path}': {e}")))?;
    Ok((path, bytes))
}

enum Which {
    Gpu(GpuBackend),
    Cpu(CpuBackend),
}

fn backend(a: &Args) -> Result<Which> {
    match a.str("backend")?.as_deref().unwrap_or("gpu") {
        "gpu" => Ok(Which::Gpu(GpuBackend::new(Arc::new(pollster::block_on(Gpu::new())?)))),
        "cpu" => Ok(Which::Cpu(CpuBackend)),
        other => Err(TfError::Input(format!("--backend must be gpu or cpu, got '{other}'"))),
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

pub fn info(a: &Args) -> Result<String> {
    let (path, bytes) = read_model_file(a)?;
    a.finish()?;
    let ck = Checkpoint::from_bytes(&bytes)?;
    let tok = ck.tokenizer.as_deref().map(Tokenizer::from_json);
    let tok_json = match tok {
        None => Value::Null,
        Some(Ok(t)) => json!({"kind": t.kind(), "vocab_size": t.vocab_size(), "merges": t.num_merges()}),
        Some(Err(e)) => json!({"error": e.to_string()}),
    };
    Ok(serde_json::to_string_pretty(&json!({
        "file": path,
        "bytes": bytes.len(),
        "dtype": ck.dtype().map(|d| d.as_str()),
        "config": ck.config,
        "parameters": ck.config.param_count(),
        "tokenizer": tok_json,
    }))
    .unwrap_or_default())
}

fn input_ids<B: Backend>(m: &Model<B>, a: &Args, ids_flag: &str) -> Result<Option<Vec<u32>>> {
    let ids: Option<Vec<u32>> = a.list(ids_flag)?;
    let prompt = a.str("prompt")?;
    match (ids, prompt) {
        (Some(_), Some(_)) => Err(TfError::Input(format!("give either --{ids_flag} or --prompt, not both"))),
        (Some(ids), None) => Ok(Some(ids)),
        (None, Some(p)) => Ok(Some(text_ids(m, &p)?)),
        (None, None) => Ok(None),
    }
}

async fn forward_with<B: Backend>(b: &mut B, bytes: &[u8], a: &Args) -> Result<Value> {
    let mut m = Model::load(b, bytes)?;
    let ids = input_ids(&m, a, "ids")?.ok_or_else(|| TfError::Input("--ids 3,1,4 or --prompt TEXT is required".into()))?;
    let tgt: Option<Vec<u32>> = a.list("tgt-ids")?;
    a.finish()?;
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
    m.free(b);
    Ok(v)
}

pub fn forward(a: &Args) -> Result<String> {
    let (_, bytes) = read_model_file(a)?;
    let out_file = a.str("out")?;
    let v = match backend(a)? {
        Which::Gpu(mut b) => pollster::block_on(forward_with(&mut b, &bytes, a))?,
        Which::Cpu(mut b) => pollster::block_on(forward_with(&mut b, &bytes, a))?,
    };
    let s = serde_json::to_string(&v).unwrap_or_default();
    match out_file {
        Some(f) => {
            std::fs::write(&f, s).map_err(|e| TfError::Input(format!("cannot write '{f}': {e}")))?;
            Ok(String::new())
        }
        None => Ok(s),
    }
}

fn gen_config(a: &Args) -> Result<GenConfig> {
    let greedy = a.flag("greedy")?;
    let temperature: Option<f32> = a.get("temperature")?;
    let top_k: Option<u32> = a.get("top-k")?;
    let top_p: Option<f32> = a.get("top-p")?;
    let seed: Option<u64> = a.get("seed")?;
    let max_new: usize = a.get("max-new-tokens")?.ok_or_else(|| TfError::Input("--max-new-tokens N is required".into()))?;
    if greedy && (temperature.is_some() || top_k.is_some() || top_p.is_some()) {
        return Err(TfError::Input("--greedy cannot be combined with --temperature, --top-k or --top-p".into()));
    }
    let t = temperature.unwrap_or(if greedy || (top_k.is_none() && top_p.is_none()) { 0.0 } else { 1.0 });
    if !(t >= 0.0 && t.is_finite()) {
        return Err(TfError::Input(format!("--temperature must be >= 0, got {t}")));
    }
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(TfError::Input(format!("--top-p must be in (0, 1], got {p}")));
        }
    }
    let sample = if t == 0.0 {
        SampleParams::greedy()
    } else {
        SampleParams { temperature: t, top_k: top_k.unwrap_or(0), top_p: top_p.unwrap_or(1.0) }
    };
    Ok(GenConfig { max_new_tokens: max_new, sample, seed: seed.unwrap_or(0), kv_cache: !a.flag("no-kv-cache")?, ..GenConfig::default() })
}

async fn generate_with<B: Backend>(b: &mut B, bytes: &[u8], a: &Args) -> Result<Value> {
    let mut m = Model::load(b, bytes)?;
    let cfg = gen_config(a)?;
    let encdec = m.cfg.arch == Arch::EncoderDecoder;
    let (start, src) = if encdec {
        let src: Option<Vec<u32>> = a.list("src-ids")?;
        let prompt = a.str("prompt")?;
        let src = match (src, prompt) {
            (Some(_), Some(_)) => return Err(TfError::Input("give either --src-ids or --prompt, not both".into())),
            (Some(s), None) => s,
            (None, Some(p)) => text_ids(&m, &p)?,
            (None, None) => return Err(TfError::Input("an encoder_decoder model needs --src-ids or --prompt (the source)".into())),
        };
        (a.list("ids")?.unwrap_or_else(|| vec![BOS_ID]), Some(src))
    } else {
        if a.str("src-ids")?.is_some() {
            return Err(TfError::Input(format!("--src-ids is only for encoder_decoder models; this one is {}", m.cfg.arch.as_str())));
        }
        (input_ids(&m, a, "ids")?.ok_or_else(|| TfError::Input("--ids 3,1,4 or --prompt TEXT is required".into()))?, None)
    };
    a.finish()?;
    if start.len() + cfg.max_new_tokens > m.cfg.max_seq_len {
        return Err(TfError::Input(format!(
            "{} start tokens + {} new tokens exceed the model's context of {} tokens",
            start.len(),
            cfg.max_new_tokens,
            m.cfg.max_seq_len
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
    m.free(b);
    Ok(v)
}

pub fn generate(a: &Args) -> Result<String> {
    let (_, bytes) = read_model_file(a)?;
    let v = match backend(a)? {
        Which::Gpu(mut b) => pollster::block_on(generate_with(&mut b, &bytes, a))?,
        Which::Cpu(mut b) => pollster::block_on(generate_with(&mut b, &bytes, a))?,
    };
    Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
}

async fn eval_with<B: Backend>(b: &mut B, bytes: &[u8], text: &str) -> Result<Value> {
    let mut m = Model::load(b, bytes)?;
    let ids = text_ids(&m, text)?;
    let (loss, n) = m.eval_loss(b, &ids).await?;
    // Per character: the total loss over the predicted tokens divided by the text's characters, so
    // models with different tokenizers can be compared (= loss per token / characters per token, up
    // to the first token, which is not predicted). train/train.py uses the same convention.
    let chars = text.chars().count() as f64;
    let per_char = loss * n as f64 / chars.max(1.0);
    m.free(b);
    Ok(
        json!({"tokens": ids.len(), "predicted_tokens": n, "chars": chars as u64, "chars_per_token": chars / ids.len() as f64, "total_nats": loss * n as f64, "loss_per_token": loss, "loss_per_char": per_char, "backend": b.kind()}),
    )
}

pub fn eval(a: &Args) -> Result<String> {
    let (_, bytes) = read_model_file(a)?;
    let path = a.str("text-file")?.ok_or_else(|| TfError::Input("--text-file FILE is required".into()))?;
    let text = std::fs::read_to_string(&path).map_err(|e| TfError::Input(format!("cannot read text file '{path}': {e}")))?;
    let v = match backend(a)? {
        Which::Gpu(mut b) => {
            a.finish()?;
            pollster::block_on(eval_with(&mut b, &bytes, &text))?
        }
        Which::Cpu(mut b) => {
            a.finish()?;
            pollster::block_on(eval_with(&mut b, &bytes, &text))?
        }
    };
    Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
}

/// tokens/s of greedy generation: cached vs uncached, GPU sampling vs logits readback, in one run.
pub fn bench_generate(a: &Args) -> Result<String> {
    let (path, bytes) = read_model_file(a)?;
    let n: usize = a.get("tokens")?.unwrap_or(64);
    let reps: usize = a.get("reps")?.unwrap_or(3);
    a.finish()?;
    let gpu = Arc::new(pollster::block_on(Gpu::new())?);
    let mut b = GpuBackend::new(gpu.clone());
    let mut m = Model::load(&b, &bytes)?;
    let (start, src) = if m.cfg.arch == Arch::EncoderDecoder { (vec![BOS_ID], Some(vec![3u32; 8])) } else { (vec![1u32; 4], None) };
    let n = n.min(m.cfg.max_seq_len - start.len());
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
    m.free(&b);
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
