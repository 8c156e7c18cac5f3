//! `tinyformer info | forward | generate | eval`: the models from the command line, a thin layer over
//! the session core (src/session/) that reads the flags and writes JSON.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::cli::args::{BackendChoice, EvalArgs, ForwardArgs, GenerateArgs, InfoArgs, InputArgs, ModelArgs, OutArgs, SessionArgs};
use crate::error::{quote, Result, TfError};
use crate::formats::{DirFiles, Files};
use crate::gpu::Gpu;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::Arch;
use crate::model::memory::{self, Budget};
use crate::model::run::{GenConfig, BOS_ID};
use crate::session::{Device, Session, TokenizerCard, TokenizerFile};
use crate::tokenizer::Tokenizer;

/// The checkpoint's bytes: a regular file no larger than the memory budget (it is read whole).
pub(crate) fn read_model_file(a: &ModelArgs) -> Result<Vec<u8>> {
    crate::cli::read_input(&a.model, "--model", a.memory_budget, "the memory budget; raise it with --memory-budget")
}

pub(crate) fn budget(a: &ModelArgs) -> Budget {
    Budget::cli(a.memory_budget)
}

pub(crate) fn device(choice: BackendChoice) -> Result<Device> {
    match choice {
        BackendChoice::Gpu => Ok(Device::Gpu(Arc::new(pollster::block_on(Gpu::new())?))),
        BackendChoice::Cpu => Ok(Device::Cpu),
        BackendChoice::Reference => Ok(Device::Reference),
    }
}

/// What `--model` names: one of our checkpoints (read whole), or a set of files in a directory (a Hugging
/// Face model directory, or a llama2.c .bin with the tokenizer.bin beside it).
pub(crate) enum ModelPath {
    Ours,
    Files { dir: DirFiles, names: Vec<String> },
}

/// Most files listed in a model directory.
const MAX_DIR_FILES: usize = 10_000;

/// The regular files of `dir` (plain names, not recursive); a FIFO, device or link out of it is refused.
fn list_dir(dir: &Path, shown: &str) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| TfError::Input(format!("cannot read --model {shown}: {e}")))?;
    let mut names = Vec::new();
    for entry in rd.take(MAX_DIR_FILES + 1) {
        let entry = entry.map_err(|e| TfError::Input(format!("cannot read --model {shown}: {e}")))?;
        let Some(n) = entry.file_name().to_str().filter(|n| !n.starts_with('.')).map(str::to_string) else { continue };
        // folders (an onnx/ beside the weights) are not the model's; anything else must be a regular file of the
        // folder, checked before anything is read: a FIFO, a device or a link out of the folder is refused
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        DirFiles(dir.to_path_buf()).check(&n).map_err(|e| TfError::Input(format!("--model {shown}: {e}")))?;
        names.push(n);
    }
    if names.len() > MAX_DIR_FILES {
        return Err(TfError::Input(format!("--model {shown} holds more than {MAX_DIR_FILES} files: is it a model directory?")));
    }
    names.sort();
    Ok(names)
}

/// Tells what `--model` names: a directory (its files), a `.safetensors` with config.json beside it (the
/// directory's files), a `.bin` (it and the tokenizer.bin beside it), else one of our checkpoints.
pub(crate) fn model_path(a: &ModelArgs) -> Result<ModelPath> {
    let path = Path::new(&a.model);
    let shown = quote(&a.model);
    let meta = std::fs::metadata(path).map_err(|e| TfError::Input(format!("cannot read --model {shown}: {e}")))?;
    let parent = || path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let file_name = || path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    if meta.is_dir() {
        let names = list_dir(path, &shown)?;
        crate::session::detect_files(&names).map_err(|e| TfError::Input(format!("--model {shown} is a directory: {e}")))?;
        return Ok(ModelPath::Files { names, dir: DirFiles(path.to_path_buf()) });
    }
    let lower = a.model.to_ascii_lowercase();
    // a file of a Hugging Face folder is read as the folder only when the folder reads that file (its
    // model.safetensors or a shard its index names); any other .safetensors beside a config.json (a checkpoint
    // `tinyformer train --out` wrote there) is read as itself, never swapped for model.safetensors
    if lower.ends_with(".safetensors") && parent().join("config.json").is_file() && folder_reads(&parent(), &file_name()) {
        let dir = parent();
        return Ok(ModelPath::Files { names: list_dir(&dir, &shown)?, dir: DirFiles(dir) });
    }
    if lower.ends_with(".bin") && meta.is_file() {
        let dir = parent();
        let mut names = vec![file_name()];
        if a.tokenizer.is_none() && names[0] != "tokenizer.bin" && dir.join("tokenizer.bin").is_file() {
            names.push("tokenizer.bin".into());
        }
        return Ok(ModelPath::Files { names, dir: DirFiles(dir) });
    }
    Ok(ModelPath::Ours)
}

/// Whether a Hugging Face folder's load reads `name`: its model.safetensors when it has no index, or a shard
/// that its model.safetensors.index.json names.
fn folder_reads(dir: &Path, name: &str) -> bool {
    const INDEX: &str = "model.safetensors.index.json";
    let files = DirFiles(dir.to_path_buf());
    if files.size(INDEX).is_none() {
        return name == "model.safetensors";
    }
    let Ok(bytes) = files.read_capped(INDEX, crate::formats::MAX_JSON_BYTES) else { return true };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else { return true };
    // an index that does not parse is reported by the folder's load, in its own words
    v.get("weight_map").and_then(Value::as_object).is_none_or(|m| m.values().any(|f| f.as_str() == Some(name)))
}

/// --tokenizer's bytes, when given.
fn tokenizer_bytes(a: &ModelArgs) -> Result<Option<Vec<u8>>> {
    a.tokenizer
        .as_ref()
        .map(|t| crate::cli::read_input(t, "--tokenizer", crate::cli::MAX_TOKENIZER_BYTES, "tokenizer files are capped at 256 MiB"))
        .transpose()
}

/// --tokenizer goes with foreign models only.
fn no_tokenizer_flag(m: &ModelArgs) -> Result<()> {
    match m.tokenizer {
        Some(_) => {
            Err(TfError::Input("--tokenizer is for Hugging Face and llama2.c models; a tinyformer checkpoint carries its own".into()))
        }
        None => Ok(()),
    }
}

/// Reads the model (`--model`, see [`model_path`]), then loads it where --backend says.
pub(crate) fn open(a: &SessionArgs) -> Result<Session> {
    if a.threads.is_some_and(|n| n > 1) && a.backend != BackendChoice::Cpu {
        return Err(TfError::Input("--threads is for the fast CPU backend: add --backend cpu".into()));
    }
    let mut s = open_on(&device(a.backend)?, &a.model)?;
    s.set_cpu_threads(a.threads.unwrap_or(1))?;
    Ok(s)
}

/// Reads the model (`--model`, see [`model_path`]) and loads it on `device`.
pub(crate) fn open_on(device: &Device, m: &ModelArgs) -> Result<Session> {
    match model_path(m)? {
        ModelPath::Ours => {
            no_tokenizer_flag(m)?;
            let bytes = read_model_file(m)?;
            pollster::block_on(Session::load(device, &bytes, &budget(m)))
        }
        ModelPath::Files { dir, names } => {
            let tok = tokenizer_bytes(m)?;
            let tok = tok.as_deref().zip(m.tokenizer.as_deref()).map(|(bytes, name)| TokenizerFile { name, bytes });
            pollster::block_on(Session::load_files(device, &dir, &names, tok, &budget(m)))
        }
    }
}

/// The JSON on stdout, or in --out.
pub(crate) fn emit(v: &Value, out: &OutArgs) -> Result<String> {
    let s = serde_json::to_string(v).unwrap_or_default();
    match &out.out {
        Some(f) => {
            std::fs::write(f, s).map_err(|e| TfError::Input(format!("cannot write {}: {e}", crate::error::quote(f))))?;
            Ok(String::new())
        }
        None => Ok(s),
    }
}

fn text_ids(s: &Session, text: &str) -> Result<Vec<u32>> {
    let t =
        s.source_tokenizer().ok_or_else(|| TfError::Input("this checkpoint has no tokenizer: pass --ids instead of --prompt".into()))?;
    let enc = t.encode(text);
    if !enc.unknown.is_empty() {
        let chars: Vec<char> = text.chars().collect();
        let shown: String = enc.unknown.iter().take(8).filter_map(|&i| chars.get(i)).map(|c| format!("{c:?} ")).collect();
        eprintln!("tinyformer: warning: {} character(s) are not in the tokenizer's table: {shown}", enc.unknown.len());
    }
    Ok(enc.ids)
}

/// (--ids | --prompt) for the model's input.
pub(crate) fn input_ids(s: &Session, ids: &Option<crate::cli::args::Ids>, prompt: &Option<String>) -> Result<Option<Vec<u32>>> {
    match (ids, prompt) {
        (Some(_), Some(_)) => Err(TfError::Input("give either --ids or --prompt, not both".into())),
        (Some(ids), None) => Ok(Some(ids.0.clone())),
        (None, Some(p)) => Ok(Some(text_ids(s, p)?)),
        (None, None) => Ok(None),
    }
}

pub fn info(a: &InfoArgs) -> Result<String> {
    if let ModelPath::Files { dir, names } = model_path(&a.model)? {
        return foreign_info(a, &dir, &names);
    }
    no_tokenizer_flag(&a.model)?;
    let bytes = read_model_file(&a.model)?;
    let ck = Checkpoint::from_bytes(&bytes)?;
    let tok = match ck.tokenizer.as_deref().map(Tokenizer::from_json) {
        None => Value::Null,
        Some(Ok(t)) => json!(TokenizerCard::from(&t)),
        Some(Err(e)) => json!({"error": crate::error::one_line(&e.to_string())}),
    };
    let demand = memory::demand(&ck.config);
    let at_load = memory::demand_for(&ck.config, memory::WeightCopies::None, &crate::model::state::Plan::at_load(&ck.config));
    Ok(serde_json::to_string_pretty(&json!({
        "file": a.model.model,
        "format": "tinyformer",
        "architecture": ck.config.arch.as_str(),
        "bytes": bytes.len(),
        "dtype": ck.dtype().map(|d| d.as_str()),
        "config": ck.config,
        "parameters": ck.config.param_count(),
        // total_bytes: the whole context with every attention map (the most a pass can ask for); load_bytes:
        // what a load allocates (the run state grows per request, model::state::Plan)
        "memory": {"total_bytes": demand.total_bytes, "fits_budget": demand.check(&budget(&a.model)).is_ok(), "load_bytes": at_load.total_bytes, "load_fits_budget": at_load.check(&budget(&a.model)).is_ok(), "buffers": demand.items},
        "tokenizer": tok,
    }))
    .unwrap_or_default())
}

/// `info` for a Hugging Face directory or a llama2.c .bin: the detected format and architecture, the
/// dimensions, dtype and parameters from the plan (headers only: no weight is read), our config of it and
/// its memory demand, the tokenizer and EOS.
fn foreign_info(a: &InfoArgs, dir: &DirFiles, names: &[String]) -> Result<String> {
    let tok = tokenizer_bytes(&a.model)?;
    let tok = tok.as_deref().zip(a.model.tokenizer.as_deref()).map(|(bytes, name)| TokenizerFile { name, bytes });
    let f = crate::session::plan_files(dir, names, tok)?;
    let p = &f.plan;
    let d = &p.dims;
    let files: Vec<&String> = names.iter().filter(|n| dir.size(n).is_some()).collect();
    let bytes: u64 = names.iter().filter_map(|n| dir.size(n)).sum();
    let config = crate::formats::config_of(p).map_err(|e| TfError::Checkpoint(e.to_string()))?;
    let demand = memory::demand(&config);
    let at_load = memory::demand_for(&config, memory::WeightCopies::None, &crate::model::state::Plan::at_load(&config));
    Ok(serde_json::to_string_pretty(&json!({
        "config": config,
        // total_bytes: the whole context with every attention map (the most a pass can ask for); load_bytes:
        // what a load allocates (the run state grows per request, model::state::Plan)
        "memory": {"total_bytes": demand.total_bytes, "fits_budget": demand.check(&budget(&a.model)).is_ok(), "load_bytes": at_load.total_bytes, "load_fits_budget": at_load.check(&budget(&a.model)).is_ok(), "buffers": demand.items},
        "file": a.model.model,
        "format": match p.format { crate::formats::Format::HfDirectory => "huggingface", crate::formats::Format::Llama2c => "llama2c" },
        "format_name": p.format.as_str(),
        "architecture": p.declared,
        "family": p.family.as_str(),
        "files": files,
        "bytes": bytes,
        "dtype": format!("{:?}", p.dtype).to_uppercase(),
        "parameters": p.param_count(),
        "dims": {
            "vocab_size": d.vocab_size, "d_model": d.d_model, "num_layers": d.num_layers, "num_heads": d.num_heads,
            "num_kv_heads": d.num_kv_heads, "head_dim": d.head_dim, "ffn_hidden": d.ffn_hidden, "context": d.context,
            "norm_eps": d.norm_eps, "rope_theta": d.rope_theta, "tied": d.tied, "qkv_bias": d.qkv_bias,
        },
        "tokenizer": f.tokenizer.as_ref().map(|(file, t)| json!({"file": file, "card": TokenizerCard::from(t)})),
        "eos": f.eos,
    }))
    .unwrap_or_default())
}

pub fn forward(a: &ForwardArgs) -> Result<String> {
    let InputArgs { ids, prompt, tgt_ids } = &a.input;
    if ids.is_none() && prompt.is_none() {
        return Err(TfError::Input("--ids 3,1,4 or --prompt TEXT is required".into()));
    }
    let mut s = open(&a.session)?;
    let ids = input_ids(&s, ids, prompt)?.unwrap_or_default();
    let tgt: Option<Vec<u32>> = tgt_ids.as_ref().map(|t| t.0.clone());
    let out = pollster::block_on(s.forward(&ids, tgt.as_deref()))?;
    let logits: Vec<Vec<f32>> = out.logits.chunks(out.vocab).map(|r| r.to_vec()).collect();
    let attention: Vec<Value> =
        out.attention.iter().map(|mp| json!({"kind": mp.kind, "layer": mp.layer, "weights": mp.nested()})).collect();
    let masks: serde_json::Map<String, Value> = out.masks.iter().map(|(k, mk)| (k.as_str().to_string(), json!(mk.rows_vec()))).collect();
    let mut v = json!({"arch": s.config().arch.as_str(), "backend": s.backend(), "ids": ids, "logits": logits, "attention": attention, "masks": masks});
    if let Some(t) = tgt {
        v["tgt_ids"] = json!(t);
    }
    if !out.moe.is_empty() {
        v["moe"] = json!(out.moe);
    }
    emit(&v, &a.out)
}

/// The generation settings, checked before the model is read.
fn gen_config(a: &GenerateArgs) -> Result<GenConfig> {
    let sample = a.sampling()?.params()?;
    let tokens_per_submit = crate::cli::args::tokens_per_submit_flag(a.tokens_per_submit)?;
    Ok(GenConfig {
        max_new_tokens: a.max_new_tokens,
        sample,
        seed: a.seed.unwrap_or(0),
        kv_cache: !a.no_kv_cache,
        tokens_per_submit,
        ..GenConfig::default()
    })
}

pub fn generate(a: &GenerateArgs) -> Result<String> {
    let cfg = gen_config(a)?;
    let mut s = open(&a.session)?;
    let (start, src) = if s.config().arch == Arch::EncoderDecoder {
        let src = match (&a.src_ids, &a.prompt) {
            (Some(_), Some(_)) => return Err(TfError::Input("give either --src-ids or --prompt, not both".into())),
            (Some(ids), None) => ids.0.clone(),
            (None, Some(p)) => text_ids(&s, p)?,
            (None, None) => return Err(TfError::Input("an encoder_decoder model needs --src-ids or --prompt (the source)".into())),
        };
        (a.ids.as_ref().map(|i| i.0.clone()).unwrap_or_else(|| vec![BOS_ID]), Some(src))
    } else {
        if a.src_ids.is_some() {
            return Err(TfError::Input(format!("--src-ids is only for encoder_decoder models; this one is {}", s.config().arch.as_str())));
        }
        (input_ids(&s, &a.ids, &a.prompt)?.ok_or_else(|| TfError::Input("--ids 3,1,4 or --prompt TEXT is required".into()))?, None)
    };
    let ctx = s.config().max_seq_len;
    if start.len().checked_add(cfg.max_new_tokens).is_none_or(|end| end > ctx) {
        return Err(TfError::Input(format!(
            "{} start tokens + {} new tokens exceed the model's context of {ctx} tokens",
            start.len(),
            cfg.max_new_tokens
        )));
    }
    let t0 = std::time::Instant::now();
    let ids = pollster::block_on(s.generate(&start, src.as_deref(), cfg))?;
    let secs = t0.elapsed().as_secs_f64();
    let new = ids.len() - start.len();
    let mut v = json!({"ids": ids, "new_tokens": new, "tokens_per_second": if secs > 0.0 { new as f64 / secs } else { 0.0 }, "backend": s.backend()});
    if let Some(src) = &src {
        v["src_ids"] = json!(src);
    }
    if let Ok(text) = s.decode(&ids) {
        v["text"] = json!(text);
    }
    Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
}

pub fn eval(a: &EvalArgs) -> Result<String> {
    let text = crate::cli::read_text(&a.text_file, "--text-file")?;
    let mut s = open(&a.session)?;
    let ids = text_ids(&s, &text)?;
    let (loss, n) = pollster::block_on(s.eval_loss(&ids))?;
    // Per character: the total loss over the predicted tokens divided by the text's characters, so
    // models with different tokenizers can be compared (= loss per token / characters per token, up
    // to the first token, which is not predicted). train/train.py uses the same convention.
    let chars = text.chars().count() as f64;
    let per_char = loss * n as f64 / chars.max(1.0);
    let v = json!({"tokens": ids.len(), "predicted_tokens": n, "chars": chars as u64, "chars_per_token": chars / ids.len() as f64, "total_nats": loss * n as f64, "loss_per_token": loss, "loss_per_char": per_char, "backend": s.backend()});
    Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
}
