//! `tinyformer train`: trains a model on the engine's own backward passes and AdamW, from a
//! checkpoint or a fresh architecture, on a text, the induction task, the date-translation task
//! (an encoder-decoder) or a fixed batches file;
//! logs JSON lines, writes the checkpoint (and the optimizer state beside it, for `--resume`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use clap::{Args, ValueEnum};
use serde_json::json;

use crate::cli::args::BackendChoice;
use crate::cli::{read_input, read_text};
use crate::error::{quote, Result, TfError};
use crate::fastcpu::FastCpuBackend;
use crate::model::backend::{CpuBackend, GpuBackend};
use crate::model::checkpoint::Checkpoint;
use crate::model::config::{Arch, ModelConfig};
use crate::model::forward::weights::Declared;
use crate::tokenizer::Tokenizer;
use crate::train::data::{batches_file, Batch, Source, MAX_BATCHES_BYTES};
use crate::train::dates;
use crate::train::fresh::{char_tokenizer, FreshArch, Sizes};
use crate::train::ops::Train;
use crate::train::optim::{Optim, Schedule};
use crate::train::params::{checkpoint_bytes, safetensors_bytes, Init, Params};
use crate::train::run::{Shape, StepLog, Trainer};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchChoice {
    /// GPT-2 style decoder: LayerNorm, learned positions, GELU-tanh, head tied to the embedding
    Gpt,
    /// Llama style: RMSNorm, RoPE, grouped-query attention, SwiGLU
    Llama,
    /// GPT-style blocks of attention only (no feed-forward network): the induction-head experiment
    AttnOnly,
    /// the seed's encoder-decoder (post-norm, sinusoidal positions, ReLU): --task dates or --batches
    Encdec,
    /// the seed's decoder with a mixture-of-experts FFN (--experts, --top-k; expert width --ff)
    Moe,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskChoice {
    /// random tokens, each row a random segment (3 to half the row long) repeated to fill it
    Induction,
    /// human-written dates to ISO dates (an encoder-decoder; validation on held-out days)
    Dates,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleChoice {
    Cosine,
    Constant,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitChoice {
    Gpt2,
    Wide,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// start from this model: a tinyformer .safetensors checkpoint, a Hugging Face model directory
    /// (config.json, model.safetensors or shards, tokenizer.json) or its model.safetensors, or a
    /// llama2.c .bin (tokenizer.bin beside it); --out is written in tinyformer's format
    #[arg(long, value_name = "PATH", conflicts_with = "arch")]
    pub model: Option<String>,
    /// or a fresh model of this architecture
    #[arg(long, value_enum)]
    pub arch: Option<ArchChoice>,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// key/value heads (llama); default: --heads
    #[arg(long)]
    pub kv_heads: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// FFN hidden width (gpt, encdec; default 4 x --dim) or each expert's (moe; default 2 x --dim)
    #[arg(long)]
    pub ff: Option<usize>,
    /// experts per MoE layer (moe)
    #[arg(long, default_value_t = 4)]
    pub experts: usize,
    /// experts each token is routed to (moe)
    #[arg(long, default_value_t = 2)]
    pub top_k: usize,
    /// the sequence length trained on (and the model's context when --arch makes one; --task dates
    /// trains on 48 source and 11 target tokens, so it needs at least 48)
    #[arg(long, default_value_t = 64)]
    pub context: usize,
    /// vocabulary of a fresh model (default: the tokenizer's, or 64 for --task induction)
    #[arg(long)]
    pub vocab: Option<usize>,
    /// train on this text (char-level, or --tokenizer's tokens)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["task", "batches"])]
    pub text: Option<String>,
    /// validate on this text instead of the last 10% of --text
    #[arg(long, value_name = "FILE", requires = "text")]
    pub val: Option<String>,
    /// tokenize --text with this tokenizer file (ours or a tokenizer.json); with --task induction,
    /// the tokenizer the checkpoint carries (its vocabulary is the model's)
    #[arg(long, value_name = "FILE", conflicts_with = "batches")]
    pub tokenizer: Option<String>,
    /// a synthetic task instead of a text
    #[arg(long, value_enum, conflicts_with = "batches")]
    pub task: Option<TaskChoice>,
    /// every step's data, fixed: {"steps": [{"inputs": [[...]], "targets": [[...]]}, ...]}
    #[arg(long, value_name = "FILE")]
    pub batches: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub steps: u32,
    /// sequences per micro-batch
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// the cosine schedule's floor (default lr / 10)
    #[arg(long)]
    pub min_lr: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub warmup: u32,
    #[arg(long, value_enum, default_value_t = ScheduleChoice::Cosine)]
    pub schedule: ScheduleChoice,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f32,
    /// Adam's betas, B1,B2
    #[arg(long, default_value = "0.9,0.95")]
    pub betas: String,
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f32,
    /// clip the global gradient norm to this (0: no clipping)
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// micro-batches per optimizer step
    #[arg(long, default_value_t = 1)]
    pub accum: u32,
    /// weight W of the experts' load-balancing loss (MoE models): the objective is cross-entropy +
    /// W x the sum over MoE layers of the Switch loss E * sum_e f_e P_e
    #[arg(long, value_name = "W", default_value_t = 0.0)]
    pub aux_loss: f32,
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = InitChoice::Gpt2)]
    pub init: InitChoice,
    /// evaluate on held-out data every N steps and at the last (0: never)
    #[arg(long, default_value_t = 0)]
    pub eval_every: u32,
    /// batches of held-out data each evaluation draws (--text, --task)
    #[arg(long, default_value_t = 8)]
    pub eval_batches: u32,
    /// a fixed validation set, in the --batches format and the training batch's shape: each
    /// evaluation (--eval-every) is the mean of its batches' losses, so runs (and other engines) are
    /// scored on the same data; with --text, --task or --batches
    #[arg(long, value_name = "FILE", conflicts_with_all = ["val", "eval_batches"])]
    pub val_batches: Option<String>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
    /// threads of the fast CPU backend (native)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// write the trained model here
    #[arg(long, value_name = "MODEL.safetensors")]
    pub out: Option<String>,
    /// one JSON object per logged step
    #[arg(long, value_name = "LOG.jsonl")]
    pub log: Option<String>,
    /// the first step's gradients (before clipping), under the checkpoint's names
    #[arg(long, value_name = "G.safetensors")]
    pub dump_grads: Option<String>,
    /// the most memory training may take (weights, gradients, Adam moments, activations)
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = crate::model::memory::parse_bytes)]
    pub memory_budget: u64,
    /// continue the run saved in --out (its optimizer state beside it, OUT.optim.safetensors) to
    /// --steps: the same command line plus --resume (the model comes from --out, not --model / --arch)
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// also save --out (and its optimizer state) every N steps (0: at evaluations and the end)
    #[arg(long, default_value_t = 0)]
    pub save_every: u32,
    /// log every N steps (every step with --batches)
    #[arg(long, default_value_t = 10)]
    pub log_every: u32,
}

/// The model a run starts from: its config (as JSON text, kept for the output's metadata), the
/// tokenizer, and the initial values.
struct Start {
    config_json: String,
    cfg: ModelConfig,
    tokenizer: Option<Tokenizer>,
    values: Vec<Vec<f32>>,
}

fn fresh_config(a: &TrainArgs, vocab: usize) -> Result<serde_json::Value> {
    let arch = a.arch.ok_or_else(|| TfError::Input("give --model INIT.safetensors or --arch gpt|llama|attn-only|encdec|moe".into()))?;
    let arch = match arch {
        ArchChoice::Gpt => FreshArch::Gpt,
        ArchChoice::Llama => FreshArch::Llama,
        ArchChoice::AttnOnly => FreshArch::AttnOnly,
        ArchChoice::Encdec => FreshArch::Encdec,
        ArchChoice::Moe => FreshArch::Moe,
    };
    let sizes = Sizes {
        layers: a.layers,
        heads: a.heads,
        kv_heads: a.kv_heads,
        dim: a.dim,
        ff: a.ff,
        experts: a.experts,
        top_k: a.top_k,
        context: a.context,
    };
    Ok(crate::train::fresh::fresh_config(arch, &sizes, vocab))
}

/// The dates task's tokenizer: its own, or a checkpoint's when that is the same table.
fn dates_tokenizer(a: &TrainArgs, from_checkpoint: Option<Tokenizer>) -> Result<Tokenizer> {
    let own = dates::tokenizer()?;
    if a.vocab.is_some_and(|v| v != own.vocab_size()) {
        return Err(TfError::Input(format!("--vocab does not apply to --task dates: its vocabulary is {} characters", own.vocab_size())));
    }
    match from_checkpoint {
        Some(t) if t.to_json_value().get("itos") != own.to_json_value().get("itos") => {
            Err(TfError::Input("--task dates needs the dates vocabulary, and the --model checkpoint's tokenizer is another".into()))
        }
        _ => Ok(own),
    }
}

/// Refuses data the model cannot train on: the dates task needs an encoder-decoder whose context
/// holds its sources; an encoder-decoder trains on the dates task or a batches file.
fn fits_data(cfg: &ModelConfig, data: &Source) -> Result<()> {
    let encdec = cfg.arch == Arch::EncoderDecoder;
    match data {
        Source::Dates if !encdec => Err(TfError::Input(format!(
            "--task dates trains an encoder-decoder: give --arch encdec or an encoder_decoder --model (this one is {})",
            cfg.arch.as_str()
        ))),
        Source::Dates if cfg.max_seq_len < dates::SRC_LEN => Err(TfError::Input(format!(
            "--task dates feeds {} source tokens, more than the model's context of {}: raise --context",
            dates::SRC_LEN,
            cfg.max_seq_len
        ))),
        Source::Dates if cfg.src_vocab_size.min(cfg.tgt_vocab_size) < dates::itos().len() => Err(TfError::Input(format!(
            "--task dates needs a vocabulary of {} on both sides; the model has {} and {}",
            dates::itos().len(),
            cfg.src_vocab_size,
            cfg.tgt_vocab_size
        ))),
        Source::Text { .. } | Source::Induction { .. } if encdec => Err(TfError::Input(
            "an encoder-decoder trains on --task dates or --batches FILE ({\"src\", \"tgt_in\", \"tgt_out\"} steps), not --text or --task induction".into(),
        )),
        _ => Ok(()),
    }
}

fn betas(s: &str) -> Result<(f32, f32)> {
    let bad = || TfError::Input(format!("--betas must be two numbers B1,B2 like 0.9,0.95, got {}", quote(s)));
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    Ok((a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?))
}

/// `--val-batches`: the fixed validation set, checked against the run before any step (its shape
/// the training batch's, its ids in the model's vocabularies).
fn val_batches(a: &TrainArgs, cfg: &ModelConfig, shape: &Shape) -> Result<Option<Vec<Batch>>> {
    let Some(p) = &a.val_batches else { return Ok(None) };
    if a.eval_every == 0 {
        return Err(TfError::Input("--val-batches is evaluated every --eval-every N steps: give --eval-every".into()));
    }
    let bytes = read_input(p, "--val-batches", MAX_BATCHES_BYTES, "batches files are capped at 256 MiB")?;
    let v = batches_file(&String::from_utf8_lossy(&bytes), "--val-batches")?;
    let (b, t, ts) = (v[0].b, v[0].t, v[0].ts);
    if (b, t, ts) != (shape.batch, shape.context, shape.source) {
        let dims = |b: usize, t: usize, ts: usize| if ts > 0 { format!("{b} x ({ts} source, {t} target)") } else { format!("{b} x {t}") };
        return Err(TfError::Input(format!(
            "--val-batches holds batches of {} ids; the run trains on {}: give validation batches of the training shape",
            dims(b, t, ts),
            dims(shape.batch, shape.context, shape.source)
        )));
    }
    for (i, x) in v.iter().enumerate() {
        for (ids, vocab) in [(&x.ids, cfg.tgt_vocab_size), (&x.targets, cfg.tgt_vocab_size), (&x.src, cfg.src_vocab_size)] {
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(TfError::Input(format!(
                    "step {} of --val-batches: token id {bad} is out of range: the vocabulary has {vocab} tokens",
                    i + 1
                )));
            }
        }
    }
    Ok(Some(v))
}

/// Reads the data and the starting model.
fn prepare(a: &TrainArgs) -> Result<(Start, Source)> {
    // The tokenizer: the checkpoint's, --tokenizer's, or built from the text's characters.
    let from = if a.resume { a.out.as_ref() } else { a.model.as_ref() };
    let mut foreign_tokenizer = None;
    let mut ck = match from {
        Some(p) if !a.resume => match foreign(p, a)? {
            Some((c, t)) => {
                foreign_tokenizer = t;
                Some(c)
            }
            None => Some(
                Checkpoint::from_bytes(&read_input(p, "--model", 4 << 30, "checkpoints are capped at 4 GiB")?).map_err(TfError::from)?,
            ),
        },
        Some(p) => Some(
            Checkpoint::from_bytes(&read_input(p, if a.resume { "--out" } else { "--model" }, 4 << 30, "checkpoints are capped at 4 GiB")?)
                .map_err(TfError::from)?,
        ),
        None => None,
    };
    if a.tokenizer.is_some() && a.text.is_none() && a.task != Some(TaskChoice::Induction) && a.model.is_none() {
        return Err(TfError::Input("--tokenizer applies to --text, --task induction or a Hugging Face / llama2.c --model".into()));
    }
    let text = a.text.as_deref().map(|p| read_text(p, "--text")).transpose()?;
    let mut tokenizer = match (&a.tokenizer, &ck) {
        // a foreign model's: --tokenizer's when given (read and checked against the model once, by `foreign`)
        (_, Some(_)) if foreign_tokenizer.is_some() => foreign_tokenizer,
        (Some(p), _) => Some(
            Tokenizer::from_file_bytes(&read_input(p, "--tokenizer", crate::cli::MAX_TOKENIZER_BYTES, "tokenizers are capped at 256 MiB")?)
                .map_err(|e| TfError::Input(format!("--tokenizer {}: {e}", quote(p))))?,
        ),
        (None, Some(c)) => crate::session::text::ModelText::from_checkpoint(c)?.tokenizer,
        (None, None) => None,
    };
    if let (Some(t), None) = (&text, &tokenizer) {
        tokenizer = Some(char_tokenizer(t, "--text")?);
    }
    if a.task == Some(TaskChoice::Dates) {
        tokenizer = Some(dates_tokenizer(a, tokenizer)?);
    }
    let encode = |t: &Tokenizer, s: &str| -> Result<Vec<u32>> { Ok(t.encode(s).ids) };
    let data = match (&text, a.task, &a.batches) {
        (Some(s), _, _) => {
            let tok = tokenizer.as_ref().ok_or_else(|| TfError::Internal("no tokenizer for the text".into()))?;
            let val = a.val.as_deref().map(|p| read_text(p, "--val")).transpose()?.map(|v| encode(tok, &v)).transpose()?;
            Source::text(encode(tok, s)?, val, a.context)?
        }
        (None, Some(TaskChoice::Induction), _) => Source::Induction { vocab: 0 },
        (None, Some(TaskChoice::Dates), _) => Source::Dates,
        (None, None, Some(p)) => Source::batches_json(&String::from_utf8_lossy(&read_input(
            p,
            "--batches",
            MAX_BATCHES_BYTES,
            "batches files are capped at 256 MiB",
        )?))?,
        (None, None, None) => return Err(TfError::Input("give the data: --text FILE, --task induction|dates or --batches FILE".into())),
    };
    let start = match ck.as_mut() {
        Some(c) => Start {
            config_json: c.metadata.get("config").cloned().unwrap_or_default(),
            cfg: c.config.clone(),
            tokenizer,
            values: Params::<()>::checkpoint_values(c)?,
        },
        None => {
            let vocab = a.vocab.or(tokenizer.as_ref().map(|t| t.vocab_size())).unwrap_or(64);
            let v = fresh_config(a, vocab)?;
            let cfg = ModelConfig::from_value(&v).map_err(|e| TfError::Input(format!("the model flags make an invalid model: {e}")))?;
            let init = match a.init {
                InitChoice::Gpt2 => Init::Gpt2,
                InitChoice::Wide => Init::Wide,
            };
            let values = Params::<()>::init_values(&cfg, init, a.seed)?;
            Start { config_json: v.to_string(), cfg, tokenizer, values }
        }
    };
    let data = match data {
        Source::Induction { .. } => Source::Induction { vocab: start.cfg.vocab_size as u32 },
        d => d,
    };
    fits_data(&start.cfg, &data)?;
    Ok((start, data))
}

/// `--model` as a Hugging Face directory or a llama2.c .bin (None: one of our checkpoints): its
/// checkpoint in our names and its tokenizer (--tokenizer instead, when given). The weights, their
/// gradients and both moments are checked against --memory-budget before a tensor is read.
fn foreign(path: &str, a: &TrainArgs) -> Result<Option<(Checkpoint, Option<Tokenizer>)>> {
    let m = crate::cli::args::ModelArgs { model: path.to_string(), tokenizer: a.tokenizer.clone(), memory_budget: a.memory_budget };
    let crate::cli::model_cmds::ModelPath::Files { dir, names } = crate::cli::model_cmds::model_path(&m)? else { return Ok(None) };
    let tok_bytes = a
        .tokenizer
        .as_ref()
        .map(|t| read_input(t, "--tokenizer", crate::cli::MAX_TOKENIZER_BYTES, "tokenizers are capped at 256 MiB"))
        .transpose()?;
    let tok = a.tokenizer.as_deref().zip(tok_bytes.as_deref()).map(|(name, bytes)| crate::session::TokenizerFile { name, bytes });
    let budget = a.memory_budget;
    let (ck, t) = crate::session::open_foreign(&dir, &names, tok, |cfg| {
        let weights = cfg.param_count() as u64 * 4;
        if weights.saturating_mul(4) > budget {
            return Err(format!(
                "the model's weights, their gradients and both Adam moments need {} but --memory-budget is {}: raise it or train a smaller model",
                crate::model::memory::human_bytes(weights * 4),
                crate::model::memory::human_bytes(budget)
            ));
        }
        Ok(())
    })?;
    Ok(Some((ck, t)))
}

pub fn train(a: &TrainArgs) -> Result<String> {
    let (start, data) = prepare(a)?;
    let optim = Optim {
        lr: a.lr,
        min_lr: a.min_lr.unwrap_or(a.lr / 10.0),
        warmup: a.warmup,
        schedule: if a.schedule == ScheduleChoice::Constant { Schedule::Constant } else { Schedule::Cosine },
        steps: a.steps,
        weight_decay: a.weight_decay,
        betas: betas(&a.betas)?,
        eps: a.eps,
        clip: (a.clip > 0.0).then_some(a.clip),
    };
    let (batch, context) = data.shape().unwrap_or((a.batch, data.target_len().unwrap_or(a.context)));
    if matches!(data, Source::Fixed(_)) && a.accum != 1 {
        return Err(TfError::Input("--accum does not apply to --batches: each step of the file is one whole batch".into()));
    }
    let shape = Shape { batch, context, source: data.source_len(), accum: a.accum };
    crate::train::memory::TrainMemory::of(&start.cfg, batch, context, shape.source)?.check(a.memory_budget)?;
    let val = val_batches(a, &start.cfg, &shape)?;
    let data = Data { train: &data, val: val.as_deref() };
    match a.backend {
        BackendChoice::Reference => {
            let tr = Trainer::new(CpuBackend, &start.cfg, start.values.clone(), optim, shape)?.with_aux_loss(a.aux_loss)?;
            run(a, tr, &start, data)
        }
        BackendChoice::Cpu => {
            let be = FastCpuBackend { threads: crate::fastcpu::matmul::Threads::new(a.threads)? };
            run(a, Trainer::new(be, &start.cfg, start.values.clone(), optim, shape)?.with_aux_loss(a.aux_loss)?, &start, data)
        }
        BackendChoice::Gpu => {
            let gpu = std::sync::Arc::new(pollster::block_on(crate::gpu::Gpu::new())?);
            run(a, Trainer::new(GpuBackend::new(gpu), &start.cfg, start.values.clone(), optim, shape)?, &start, data)
        }
    }
}

/// A run's data: the training source and the fixed validation set of --val-batches, if any.
#[derive(Clone, Copy)]
struct Data<'a> {
    train: &'a Source,
    val: Option<&'a [Batch]>,
}

fn write_file(path: &str, what: &str, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| TfError::Input(format!("cannot write {what} {}: {e}", quote(path))))
}

fn checkpoint(decl: &[Declared], values: Vec<Vec<f32>>, start: &Start) -> Result<Vec<u8>> {
    checkpoint_bytes(decl, values, &start.config_json, start.tokenizer.as_ref())
}

/// The optimizer state's file beside a checkpoint: X.safetensors -> X.optim.safetensors.
pub fn optim_path(out: &str) -> String {
    match out.strip_suffix(".safetensors") {
        Some(stem) => format!("{stem}.optim.safetensors"),
        None => format!("{out}.optim.safetensors"),
    }
}

/// Set by Ctrl-C: the loop saves and stops after the step under way.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn catch_ctrl_c() {
    static ONCE: Once = Once::new();
    // a second handler (another run in the same process) keeps the first, which sets the same flag
    ONCE.call_once(|| drop(ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))));
}

/// Writes --out and the optimizer state after step `step` (each written whole, then renamed).
fn save<B: Train>(a: &TrainArgs, tr: &mut Trainer<B>, start: &Start, step: u32) -> Result<()> {
    let Some(out) = &a.out else { return Ok(()) };
    let values = pollster::block_on(tr.values())?;
    let (m, v) = pollster::block_on(tr.moments())?;
    let mut tensors = vec![];
    for (d, (m, v)) in tr.params.decl.iter().zip(m.into_iter().zip(v)) {
        tensors.push((format!("m.{}", d.name), d.shape.clone(), m));
        tensors.push((format!("v.{}", d.name), d.shape.clone(), v));
    }
    let meta = HashMap::from([("step".to_string(), step.to_string()), ("seed".to_string(), a.seed.to_string())]);
    let optim = optim_path(out);
    for (path, what, bytes) in [
        (out.clone(), "--out", checkpoint(&tr.params.decl, values, start)?),
        (optim.clone(), "the optimizer state", safetensors_bytes(&tensors, meta)?),
    ] {
        let tmp = format!("{path}.partial");
        write_file(&tmp, what, &bytes)?;
        std::fs::rename(&tmp, &path).map_err(|e| TfError::Input(format!("cannot write {what} {}: {e}", quote(&path))))?;
    }
    Ok(())
}

/// Restores the optimizer state saved beside --out; returns the step it was saved after.
fn resume<B: Train>(a: &TrainArgs, tr: &mut Trainer<B>) -> Result<u32> {
    let out = a.out.as_deref().ok_or_else(|| TfError::Input("--resume needs --out".into()))?;
    let path = optim_path(out);
    let bytes = read_input(&path, "the optimizer state", 16 << 30, "optimizer states are capped at 16 GiB")?;
    let bad = |m: String| TfError::Input(format!("the optimizer state {}: {m}", quote(&path)));
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = md.metadata().clone().unwrap_or_default();
    let step: u32 = meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| bad("it names no step".into()))?;
    if meta.get("seed").map(String::as_str) != Some(a.seed.to_string().as_str()) {
        return Err(bad(format!(
            "it was saved by a run with another --seed; give the same seed ({})",
            meta.get("seed").cloned().unwrap_or_default()
        )));
    }
    let read = |name: String| -> Result<Vec<f32>> { crate::train::params::f32_tensor(&st, &name).map_err(bad) };
    let names: Vec<String> = tr.params.decl.iter().map(|d| d.name.clone()).collect();
    let m = names.iter().map(|n| read(format!("m.{n}"))).collect::<Result<Vec<_>>>()?;
    let v = names.iter().map(|n| read(format!("v.{n}"))).collect::<Result<Vec<_>>>()?;
    tr.restore(step, &m, &v)?;
    Ok(step)
}

fn run<B: Train>(a: &TrainArgs, mut tr: Trainer<B>, start: &Start, Data { train: data, val }: Data) -> Result<String> {
    let fixed = matches!(data, Source::Fixed(_));
    let first = if a.resume { resume(a, &mut tr)? + 1 } else { 1 };
    if first > a.steps {
        return Err(TfError::Input(format!("the run in --out already took {} steps: raise --steps to continue it", first - 1)));
    }
    let mut log = match &a.log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(a.resume)
                .truncate(!a.resume)
                .open(p)
                .map_err(|e| TfError::Input(format!("cannot write --log {}: {e}", quote(p))))?,
        ),
        None => None,
    };
    catch_ctrl_c();
    let mut saved: Option<u32> = a.resume.then_some(first - 1);
    let kept = |saved: Option<u32>| saved.map_or(String::new(), |s| format!("; --out keeps the model after step {s}"));
    let t0 = std::time::Instant::now();
    let mut last = None;
    let tokens_per_step = (tr.shape.batch * tr.shape.context) as f64 * tr.shape.accum as f64;
    let mut since = (t0, first - 1);
    // seconds of evaluations and saves since `since`: left out of the next logged tokens/s
    let mut paused = 0.0;
    let mut interrupted = None;
    for s in first..=a.steps {
        let micro = tr.batches(data, a.seed, s)?;
        let eval = a.eval_every > 0 && (s % a.eval_every == 0 || s == a.steps);
        // only a logged step reads anything back; the others go out as one submission each
        let logged = fixed || eval || s % a.log_every.max(1) == 0 || s == a.steps || s == 1;
        let (reported, lr) = if s == 1 && a.dump_grads.is_some() {
            let r = pollster::block_on(tr.gradients(&micro)).map_err(|e| TfError::Input(format!("{e}{}", kept(saved))))?;
            if let Some(p) = &a.dump_grads {
                let grads = pollster::block_on(tr.params.read(&mut tr.be, true))?;
                write_file(p, "--dump-grads", &checkpoint(&tr.params.decl, grads, start)?)?;
            }
            (Some(r), tr.update()?)
        } else {
            pollster::block_on(tr.step(&micro, logged)).map_err(|e| TfError::Input(format!("{e}{}", kept(saved))))?
        };
        let evaluating = std::time::Instant::now();
        let val_loss = match (eval, val) {
            (false, _) => None,
            (true, Some(v)) => pollster::block_on(tr.evaluate_batches(v))?,
            (true, None) => pollster::block_on(tr.evaluate(data, a.seed, a.eval_batches))?,
        };
        paused += evaluating.elapsed().as_secs_f64();
        if let Some((loss, grad_norm)) = reported {
            let now = std::time::Instant::now();
            let span = now.duration_since(since.0).as_secs_f64() - paused;
            let entry = StepLog {
                step: s,
                loss,
                val_loss,
                lr,
                grad_norm,
                tokens_per_second: if span > 0.0 { tokens_per_step * (s - since.1) as f64 / span } else { 0.0 },
                elapsed_s: now.duration_since(t0).as_secs_f64(),
            };
            since = (now, s);
            paused = 0.0;
            if let Some(f) = log.as_mut() {
                let line = serde_json::to_string(&entry).map_err(|e| TfError::Internal(e.to_string()))?;
                writeln!(f, "{line}").map_err(|e| TfError::Input(format!("cannot write --log: {e}")))?;
            }
            last = Some(entry);
        }
        let stop = INTERRUPTED.swap(false, Ordering::SeqCst);
        if eval || s == a.steps || stop || (a.save_every > 0 && s % a.save_every == 0) {
            // an unreported step may have halted the updates (a gradient not finite): never save
            // parameters frozen at an earlier step under this step's number
            let saving = std::time::Instant::now();
            pollster::block_on(tr.check_halt()).map_err(|e| TfError::Input(format!("{e}{}", kept(saved))))?;
            save(a, &mut tr, start, s)?;
            saved = Some(s);
            paused += saving.elapsed().as_secs_f64();
        }
        if stop {
            interrupted = Some(s);
            break;
        }
    }
    let summary = json!({
        "steps": a.steps, "params": tr.cfg.param_count(), "backend": tr.be.kind(), "last": last,
        "elapsed_s": t0.elapsed().as_secs_f64(), "out": a.out, "interrupted_after": interrupted,
    });
    Ok(serde_json::to_string_pretty(&summary).unwrap_or_default())
}
