//! The page's training lab (www/views/train.js, through src/wasm/lab.rs): a run built from a
//! preset and its editable settings, stepped in chunks so the worker answers pause and stop
//! between them. A lab run is the CLI's run: the same config (`fresh::fresh_config`), init seed,
//! data (`Source`) and optimizer as `tinyformer train` with the flags [`LabPlan::cli_args`]
//! gives, so the page's loss at a step can be checked against the CLI's.
//!
//! Presets ([`PRESETS`]):
//! - `induction`: a 2-layer attention-only decoder (`--arch attn-only`: untied head, GPT-2 init;
//!   batch 32, constant lr 1e-3) on the induction task (each row a random segment repeated to
//!   fill it): an induction head forms on the last layer by step ~1,100;
//! - `shakespeare`: nanoGPT's baby config (4 layers, 4 heads, 128 dims, context 64, batch 12,
//!   lr 1e-3 with 100 warmup steps and cosine to 1e-4, betas 0.9/0.99) on a text, character-level;
//! - `llama`: the same sizes and text as a Llama-style decoder (RMSNorm, RoPE, SwiGLU, two query
//!   heads per key/value head);
//! - `moe`: the same as the seed's decoder with a 4-expert, top-2 mixture-of-experts FFN and the
//!   Switch load-balancing loss (weight 0.01);
//! - `dates`: the seed's encoder-decoder (2 layers, 4 heads, 64 dims) on the date task, validated
//!   on held-out days.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TfError};
use crate::model::config::ModelConfig;
use crate::model::forward::weights::Declared;
use crate::tokenizer::Tokenizer;
use crate::train::data::Source;
use crate::train::dates;
use crate::train::fresh::{char_tokenizer, fresh_config, FreshArch, Sizes};
use crate::train::memory::TrainMemory;
use crate::train::ops::Train;
use crate::train::optim::{Optim, Schedule};
use crate::train::params::{checkpoint_bytes, Init, Params};
use crate::train::run::{Shape, StepLog, Trainer};

/// The most steps a lab run may be set to.
pub const MAX_STEPS: u32 = 1_000_000;

/// The settings the page may change (every field optional: the preset's value otherwise).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    pub preset: String,
    pub layers: Option<usize>,
    pub heads: Option<usize>,
    pub dim: Option<usize>,
    pub context: Option<usize>,
    /// the induction task's vocabulary (a text's is its characters)
    pub vocab: Option<usize>,
    pub batch: Option<usize>,
    pub lr: Option<f32>,
    pub steps: Option<u32>,
    pub seed: Option<u64>,
    /// evaluate on held-out data every N steps (0: never)
    pub eval_every: Option<u32>,
}

/// A run's settings, every one decided.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabSettings {
    pub preset: String,
    pub layers: usize,
    pub heads: usize,
    pub dim: usize,
    pub context: usize,
    pub vocab: usize,
    pub batch: usize,
    pub lr: f32,
    pub min_lr: f32,
    pub warmup: u32,
    pub schedule: &'static str,
    pub weight_decay: f32,
    pub betas: (f32, f32),
    pub init: &'static str,
    pub steps: u32,
    pub seed: u64,
    pub eval_every: u32,
    pub eval_batches: u32,
    /// key/value heads (llama: half the heads where they divide evenly; the others: the heads)
    pub kv_heads: usize,
    /// experts per MoE layer, and the experts each token is routed to (moe; 0 otherwise)
    pub experts: usize,
    pub top_k: usize,
    /// the weight of the MoE load-balancing loss (moe; 0 otherwise)
    pub aux_loss: f32,
}

/// What a preset trains on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Data {
    Induction,
    /// a text, character-level
    Text,
    /// the date-translation task (`train::dates`)
    Dates,
}

struct Preset {
    arch: FreshArch,
    init: Init,
    data: Data,
    s: LabSettings,
}

/// The presets' names, in the page's order.
pub const PRESETS: [&str; 5] = ["induction", "shakespeare", "llama", "moe", "dates"];

fn preset(name: &str) -> Result<Preset> {
    let base = |preset: &str| LabSettings {
        preset: preset.to_string(),
        layers: 2,
        heads: 4,
        dim: 64,
        context: 32,
        vocab: 64,
        batch: 32,
        lr: 1e-3,
        min_lr: 1e-3,
        warmup: 0,
        schedule: "constant",
        weight_decay: 0.0,
        betas: (0.9, 0.95),
        init: "gpt2",
        steps: 2000,
        seed: 1337,
        eval_every: 100,
        eval_batches: 4,
        kv_heads: 4,
        experts: 0,
        top_k: 0,
        aux_loss: 0.0,
    };
    // nanoGPT's baby Shakespeare config, character-level
    let baby = |preset: &str| LabSettings {
        layers: 4,
        heads: 4,
        kv_heads: 4,
        dim: 128,
        context: 64,
        vocab: 0,
        batch: 12,
        lr: 1e-3,
        min_lr: 1e-4,
        warmup: 100,
        schedule: "cosine",
        weight_decay: 0.1,
        betas: (0.9, 0.99),
        eval_every: 250,
        ..base(preset)
    };
    let p = |arch, data, s| Ok(Preset { arch, init: Init::Gpt2, data, s });
    match name {
        "induction" => p(FreshArch::AttnOnly, Data::Induction, base(name)),
        "shakespeare" => p(FreshArch::Gpt, Data::Text, baby(name)),
        "llama" => p(FreshArch::Llama, Data::Text, LabSettings { kv_heads: 2, ..baby(name) }),
        "moe" => p(FreshArch::Moe, Data::Text, LabSettings { experts: 4, top_k: 2, aux_loss: 0.01, ..baby(name) }),
        "dates" => p(
            FreshArch::Encdec,
            Data::Dates,
            LabSettings {
                context: crate::train::dates::SRC_LEN,
                vocab: 0,
                min_lr: 1e-4,
                warmup: 100,
                schedule: "cosine",
                weight_decay: 0.01,
                betas: (0.9, 0.98),
                steps: 3000,
                eval_every: 250,
                ..base(name)
            },
        ),
        _ => Err(TfError::Input(format!("no training preset {}: choose {}", crate::error::quote(name), PRESETS.join(", ")))),
    }
}

/// Everything a run needs, decided before anything is allocated: its settings, model, data and
/// memory.
pub struct LabPlan {
    pub settings: LabSettings,
    pub arch: FreshArch,
    pub init: Init,
    pub cfg: ModelConfig,
    pub config_json: String,
    pub tokenizer: Option<Tokenizer>,
    pub data: Source,
    pub memory: TrainMemory,
}

fn within<T: PartialOrd + std::fmt::Display + Copy>(v: T, lo: T, hi: T, what: &str) -> Result<T> {
    if v < lo || v > hi {
        return Err(TfError::Input(format!("{what} must be between {lo} and {hi}, got {v}")));
    }
    Ok(v)
}

impl LabPlan {
    /// The plan of `spec` (a text preset trains on `text`).
    pub fn new(spec: &LabSpec, text: Option<&str>) -> Result<LabPlan> {
        let p = preset(&spec.preset)?;
        let mut s = p.s.clone();
        s.layers = within(spec.layers.unwrap_or(s.layers), 1, 48, "layers")?;
        s.heads = within(spec.heads.unwrap_or(s.heads), 1, 64, "heads")?;
        s.dim = within(spec.dim.unwrap_or(s.dim), 4, 4096, "the width")?;
        s.context = within(spec.context.unwrap_or(s.context), 2, 4096, "the context")?;
        s.batch = within(spec.batch.unwrap_or(s.batch), 1, 4096, "the batch")?;
        s.steps = within(spec.steps.unwrap_or(s.steps), 1, MAX_STEPS, "the steps")?;
        s.seed = spec.seed.unwrap_or(s.seed);
        s.eval_every = spec.eval_every.unwrap_or(s.eval_every);
        if let Some(lr) = spec.lr {
            if !(lr.is_finite() && lr > 0.0 && lr <= 1.0) {
                return Err(TfError::Input(format!("the learning rate must be above 0 and at most 1, got {lr}")));
            }
            // the schedule's floor keeps its ratio to the peak
            s.min_lr = s.min_lr / s.lr * lr;
            s.lr = lr;
        }
        if s.dim % s.heads != 0 {
            return Err(TfError::Input(format!("the width ({}) must be a multiple of the heads ({})", s.dim, s.heads)));
        }
        if p.arch == FreshArch::Llama {
            // grouped-query attention: two query heads per key/value head where the heads divide evenly
            s.kv_heads = if s.heads % 2 == 0 { s.heads / 2 } else { s.heads };
        } else {
            s.kv_heads = s.heads;
        }
        let (tokenizer, data) = match p.data {
            Data::Text => {
                let text = text.ok_or_else(|| TfError::Input("this preset trains on a text: give one".into()))?;
                if text.trim().is_empty() {
                    return Err(TfError::Input("the text is empty: paste or drop some text to train on".into()));
                }
                let tok = char_tokenizer(text, "the text")?;
                let ids = tok.encode(text).ids;
                let data = Source::text(ids, None, s.context)
                    .map_err(|e| TfError::Input(e.to_string().replace("lower --context", "lower the context")))?;
                s.vocab = tok.vocab_size();
                (Some(tok), data)
            }
            Data::Induction => {
                s.vocab = within(spec.vocab.unwrap_or(s.vocab), 2, 65536, "the vocabulary")?;
                (None, Source::Induction { vocab: s.vocab as u32 })
            }
            Data::Dates => {
                if s.context < dates::SRC_LEN {
                    return Err(TfError::Input(format!(
                        "the dates task feeds {} source characters: the context must be at least {}",
                        dates::SRC_LEN,
                        dates::SRC_LEN
                    )));
                }
                let tok = dates::tokenizer()?;
                s.vocab = tok.vocab_size();
                (Some(tok), Source::Dates)
            }
        };
        let sizes = Sizes {
            layers: s.layers,
            heads: s.heads,
            kv_heads: Some(s.kv_heads),
            dim: s.dim,
            ff: None,
            experts: s.experts,
            top_k: s.top_k,
            context: s.context,
        };
        let v = fresh_config(p.arch, &sizes, s.vocab);
        let cfg = ModelConfig::from_value(&v).map_err(|e| TfError::Input(format!("these sizes make an invalid model: {e}")))?;
        let memory = TrainMemory::of(&cfg, s.batch, data.target_len().unwrap_or(s.context), data.source_len())?;
        Ok(LabPlan { settings: s, arch: p.arch, init: p.init, cfg, config_json: v.to_string(), tokenizer, data, memory })
    }

    /// The optimizer of the run (the CLI's from the same flags).
    pub fn optim(&self) -> Optim {
        let s = &self.settings;
        Optim {
            lr: s.lr,
            min_lr: s.min_lr,
            warmup: s.warmup,
            schedule: if s.schedule == "cosine" { Schedule::Cosine } else { Schedule::Constant },
            steps: s.steps,
            weight_decay: s.weight_decay,
            betas: s.betas,
            eps: 1e-8,
            clip: Some(1.0),
        }
    }

    /// `tinyformer train`'s arguments for the same run (a text preset reads `text_file`).
    pub fn cli_args(&self, text_file: &str) -> Vec<String> {
        let s = &self.settings;
        let mut a: Vec<String> = vec!["train".into(), "--arch".into(), self.arch.as_str().into()];
        match self.data {
            Source::Text { .. } => a.extend(["--text".into(), text_file.into()]),
            Source::Dates => a.extend(["--task".into(), "dates".into()]),
            _ => a.extend(["--task".into(), "induction".into(), "--vocab".into(), s.vocab.to_string()]),
        }
        for (flag, v) in [
            ("--layers", s.layers.to_string()),
            ("--heads", s.heads.to_string()),
            ("--kv-heads", s.kv_heads.to_string()),
            ("--experts", s.experts.to_string()),
            ("--top-k", s.top_k.to_string()),
            ("--aux-loss", s.aux_loss.to_string()),
            ("--dim", s.dim.to_string()),
            ("--context", s.context.to_string()),
            ("--batch", s.batch.to_string()),
            ("--init", s.init.to_string()),
            ("--lr", s.lr.to_string()),
            ("--min-lr", s.min_lr.to_string()),
            ("--warmup", s.warmup.to_string()),
            ("--schedule", s.schedule.to_string()),
            ("--weight-decay", s.weight_decay.to_string()),
            ("--betas", format!("{},{}", s.betas.0, s.betas.1)),
            ("--steps", s.steps.to_string()),
            ("--seed", s.seed.to_string()),
        ] {
            // the flags that apply to this architecture only
            let applies = match flag {
                "--kv-heads" => self.arch == FreshArch::Llama,
                "--experts" | "--top-k" | "--aux-loss" => self.arch == FreshArch::Moe,
                _ => true,
            };
            if applies {
                a.extend([flag.to_string(), v]);
            }
        }
        a
    }

    /// Checks the run's memory against `budget` bytes and, on a GPU, its largest buffer against
    /// the largest a kernel binds: one line when it does not fit.
    pub fn check_memory(&self, budget: u64, max_binding: u64) -> Result<()> {
        self.memory.check(budget).map_err(|e| {
            TfError::Memory(
                e.to_string()
                    .replace(" (--memory-budget)", "")
                    .replace("--batch or --context", "the batch or the context")
                    .replace("--dim or --layers", "the width or the layers"),
            )
        })?;
        if self.memory.largest.1 > max_binding {
            return Err(TfError::Memory(format!(
                "training's largest buffer ({}, {}) is over this GPU's limit of {} per buffer: lower the batch or the context, or train on the CPU",
                self.memory.largest.0,
                crate::model::memory::human_bytes(self.memory.largest.1),
                crate::model::memory::human_bytes(max_binding)
            )));
        }
        Ok(())
    }
}

/// A lab run on a backend.
pub struct Lab<B: Train> {
    pub tr: Trainer<B>,
    pub plan: LabPlan,
    /// every logged step, in order
    pub log: Vec<StepLog>,
    /// seconds spent in steps so far (pauses excluded), and (that time, the step) at the last log
    busy: f64,
    last_log: (f64, u32),
}

impl<B: Train> Lab<B> {
    pub fn new(be: B, plan: LabPlan) -> Result<Lab<B>> {
        let values = Params::<()>::init_values(&plan.cfg, plan.init, plan.settings.seed)?;
        Lab::with_values(be, plan, values)
    }

    fn with_values(be: B, plan: LabPlan, values: Vec<Vec<f32>>) -> Result<Lab<B>> {
        let context = plan.data.target_len().unwrap_or(plan.settings.context);
        let shape = Shape { batch: plan.settings.batch, context, source: plan.data.source_len(), accum: 1 };
        let mut tr = Trainer::new(be, &plan.cfg, values, plan.optim(), shape)?;
        if plan.settings.aux_loss > 0.0 {
            tr = tr.with_aux_loss(plan.settings.aux_loss)?;
        }
        Ok(Lab { tr, plan, log: vec![], busy: 0.0, last_log: (0.0, 0) })
    }

    /// Whether every step of the run was taken.
    pub fn done(&self) -> bool {
        self.tr.step >= self.plan.settings.steps
    }

    /// Runs up to `k` steps (not past the run's end), reading back steps 1, 100, the run's last, the
    /// chunk's last and every `every`-th (the others read nothing: on the GPU, one submission each,
    /// and the chunk's last read bounds how far the device runs behind); a step on which an
    /// evaluation falls also gets its validation loss. `clock` gives seconds. Returns the logged steps.
    pub async fn run(&mut self, k: u32, every: u32, clock: &dyn Fn() -> f64) -> Result<Vec<StepLog>> {
        let s = self.plan.settings.clone();
        let tokens_per_step = (self.tr.shape.batch * self.tr.shape.context) as f64;
        let mut out = vec![];
        let mut t0 = clock();
        let base = self.busy;
        for i in 0..k {
            if self.done() {
                break;
            }
            let step = self.tr.step + 1;
            let eval = s.eval_every > 0 && (step.is_multiple_of(s.eval_every) || step == s.steps);
            let logged = eval || step == 1 || step == 100 || step == s.steps || step.is_multiple_of(every.max(1)) || i + 1 == k;
            let micro = self.tr.batches(&self.plan.data, s.seed, step)?;
            let (reported, lr) = self.tr.step(&micro, logged).await?;
            // the evaluation's time is not the steps': it is left out of the tokens per second
            let t_eval = clock();
            let val_loss = if eval { self.tr.evaluate(&self.plan.data, s.seed, s.eval_batches).await? } else { None };
            t0 += clock() - t_eval;
            if let Some((loss, grad_norm)) = reported {
                let now = base + (clock() - t0);
                let span = now - self.last_log.0;
                let steps = (step - self.last_log.1) as f64;
                let entry = StepLog {
                    step,
                    loss,
                    val_loss,
                    lr,
                    grad_norm,
                    tokens_per_second: if span > 0.0 { tokens_per_step * steps / span } else { 0.0 },
                    elapsed_s: now,
                };
                self.last_log = (now, step);
                self.log.push(entry.clone());
                out.push(entry);
            }
        }
        self.busy = base + (clock() - t0);
        Ok(out)
    }

    /// The mean loss over the run's evaluation batches (None: the data has no held-out part).
    pub async fn val_loss(&mut self) -> Result<Option<f64>> {
        let s = &self.plan.settings;
        let (seed, n) = (s.seed, s.eval_batches);
        self.tr.evaluate(&self.plan.data, seed, n).await
    }

    /// Sets the peak learning rate from the next step on (the schedule's floor keeps its ratio).
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        if !(lr.is_finite() && lr > 0.0 && lr <= 1.0) {
            return Err(TfError::Input(format!("the learning rate must be above 0 and at most 1, got {lr}")));
        }
        let o = &mut self.tr.optim;
        o.min_lr = o.min_lr / o.lr * lr;
        o.lr = lr;
        self.plan.settings.lr = lr;
        self.plan.settings.min_lr = o.min_lr;
        Ok(())
    }

    /// The run's state, to resume it (see [`Lab::resume`]): a safetensors file of every parameter
    /// (`p.NAME`) and both Adam moments (`m.NAME`, `v.NAME`), with the step, the settings as they
    /// are now (the learning rate may have changed), the log and the time spent in its metadata.
    pub async fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.tr.check_halt().await?;
        let values = self.tr.values().await?;
        let (m, v) = self.tr.moments().await?;
        let mut tensors = vec![];
        for (d, ((p, m), v)) in self.tr.params.decl.iter().zip(values.into_iter().zip(m).zip(v)) {
            tensors.push((format!("p.{}", d.name), d.shape.clone(), p));
            tensors.push((format!("m.{}", d.name), d.shape.clone(), m));
            tensors.push((format!("v.{}", d.name), d.shape.clone(), v));
        }
        let meta = std::collections::HashMap::from([
            ("step".to_string(), self.tr.step.to_string()),
            ("settings".to_string(), json(&self.plan.settings)?),
            ("log".to_string(), json(&self.log)?),
            ("busy".to_string(), self.busy.to_string()),
            ("last_log".to_string(), json(&self.last_log)?),
        ]);
        crate::train::params::safetensors_bytes(&tensors, meta)
    }

    /// A run resumed from a [`Lab::snapshot`] of a run with the same plan: its weights, moments,
    /// step, learning rate and log; the next step is the one after the snapshot's, with the same
    /// data as an uninterrupted run.
    pub fn resume(be: B, plan: LabPlan, snapshot: &[u8]) -> Result<Lab<B>> {
        let bad = |m: String| TfError::Input(format!("the saved run cannot be resumed: {m}"));
        let st = safetensors::SafeTensors::deserialize(snapshot).map_err(|e| bad(e.to_string()))?;
        let (_, md) = safetensors::SafeTensors::read_metadata(snapshot).map_err(|e| bad(e.to_string()))?;
        let meta = md.metadata().clone().unwrap_or_default();
        let field = |k: &str| meta.get(k).ok_or_else(|| bad(format!("it has no {k}")));
        let saved: serde_json::Value = serde_json::from_str(field("settings")?).map_err(|e| bad(e.to_string()))?;
        // the same run: every setting but the learning rate (changed while paused) as the plan's
        let without_lr = |mut v: serde_json::Value| {
            if let Some(o) = v.as_object_mut() {
                o.remove("lr");
                o.remove("min_lr");
            }
            v
        };
        // through text, as the snapshot's were (an f32 reads back as its shortest decimal)
        let mine: serde_json::Value = serde_json::from_str(&json(&plan.settings)?).map_err(|e| TfError::Internal(e.to_string()))?;
        if without_lr(saved.clone()) != without_lr(mine) {
            return Err(bad("it was made with other settings or another text".into()));
        }
        let step: u32 = field("step")?.parse().map_err(|_| bad("its step is not a number".into()))?;
        if step > plan.settings.steps {
            return Err(bad(format!("it is at step {step}, past the run's {} steps", plan.settings.steps)));
        }
        let read = |name: String| -> Result<Vec<f32>> { crate::train::params::f32_tensor(&st, &name).map_err(bad) };
        let (decl, _) = Params::<()>::declare(&plan.cfg)?;
        let values = decl.iter().map(|d| read(format!("p.{}", d.name))).collect::<Result<Vec<_>>>()?;
        for (d, v) in decl.iter().zip(&values) {
            if v.len() != d.shape.iter().product::<usize>() {
                return Err(bad(format!("p.{} has the wrong size", d.name)));
            }
        }
        let m = decl.iter().map(|d| read(format!("m.{}", d.name))).collect::<Result<Vec<_>>>()?;
        let v = decl.iter().map(|d| read(format!("v.{}", d.name))).collect::<Result<Vec<_>>>()?;
        let mut lab = Lab::with_values(be, plan, values)?;
        lab.tr.restore(step, &m, &v)?;
        if let Some(lr) = saved.get("lr").and_then(|x| x.as_f64()) {
            lab.set_lr(lr as f32)?;
        }
        lab.log = serde_json::from_str(field("log")?).map_err(|e| bad(format!("its log: {e}")))?;
        lab.busy = field("busy")?.parse().map_err(|_| bad("its time is not a number".into()))?;
        lab.last_log = serde_json::from_str(field("last_log")?).map_err(|e| bad(format!("its last log: {e}")))?;
        Ok(lab)
    }

    /// The current model as a checkpoint in our format (as `tinyformer train --out` writes it),
    /// after checking no unreported step halted the updates.
    pub async fn checkpoint(&mut self) -> Result<Vec<u8>> {
        self.tr.check_halt().await?;
        let values = self.tr.values().await?;
        let decl: &[Declared] = &self.tr.params.decl;
        checkpoint_bytes(decl, values, &self.plan.config_json, self.plan.tokenizer.as_ref())
    }
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| TfError::Internal(e.to_string()))
}

/// The induction scores of a model's last layer, as the Inspect view measures them (its Induction
/// test: min(32, context / 2) random tokens repeated twice, seed 0, the head detectors of
/// `model::analysis::inspect`), on the fast CPU backend.
#[derive(Clone, Debug, Serialize)]
pub struct InductionScore {
    /// the largest among the last layer's heads
    pub best: f32,
    pub head: usize,
    /// every head of the last layer
    pub heads: Vec<f32>,
    /// the best previous-token score among the first layer's heads
    pub previous_token: f32,
}

/// Measures [`InductionScore`] on a checkpoint's bytes.
pub async fn induction_score(checkpoint: &[u8]) -> Result<InductionScore> {
    let budget = crate::model::memory::Budget::page();
    let mut s = crate::session::Session::load(&crate::session::Device::Cpu, checkpoint, &budget).await?;
    let n = (s.config().max_seq_len / 2).clamp(2, 32);
    Ok(InductionScore::of(&s.induction_test(n, 0, None, None).await?.head_scores))
}

impl InductionScore {
    /// The last layer's induction scores and the first layer's best previous-token score.
    fn of(h: &crate::model::inspect::HeadScores) -> InductionScore {
        let heads = h.induction.last().cloned().unwrap_or_default();
        let (head, best) = heads.iter().copied().enumerate().fold((0, 0f32), |b, (i, x)| if x > b.1 { (i, x) } else { b });
        let previous_token = h.previous_token.first().map_or(0.0, |r| r.iter().copied().fold(0f32, f32::max));
        InductionScore { best, head, heads, previous_token }
    }
}

/// One self-attention map of the probe sequence: (heads, rows, cols), row-major.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeMap {
    pub layer: usize,
    pub heads: usize,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// The dates task's exact-match accuracy on held-out days.
#[derive(Clone, Debug, Serialize)]
pub struct DatesScore {
    /// translations equal to the ISO date, of `of`
    pub exact: usize,
    pub of: usize,
    /// the first few: (input, the model's answer, the right one)
    pub examples: Vec<(String, String, String)>,
}

/// What the lab shows of a model as it trains, measured on a checkpoint's bytes on the CPU as the
/// page's views would: every head's previous-token and induction scores on the Inspect view's
/// Induction test (decoders), the self-attention maps of a probe sequence (the Induction test's for a
/// model without a tokenizer, else the prompt and its continuation, sampled at [`ProbeSample`]'s
/// temperature), that continuation, the share of routed tokens each expert took on it (MoE), and the
/// dates accuracy (encoder-decoder, always greedy).
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub induction: Option<InductionScore>,
    /// [layer][head]
    pub previous_token_heads: Vec<Vec<f32>>,
    pub induction_heads: Vec<Vec<f32>>,
    pub maps: Vec<ProbeMap>,
    /// the probe sequence's tokens as the page shows them
    pub tokens: Vec<String>,
    pub sample: Option<String>,
    /// the temperature the sample was drawn at (0 = greedy)
    pub sample_temperature: f32,
    /// [layer][expert]: the share of the kept (token, expert) assignments
    pub expert_load: Option<Vec<Vec<f32>>>,
    pub dates: Option<DatesScore>,
}

/// Held-out dates the probe translates.
pub const PROBE_DATES: usize = 32;
/// New tokens of the probe's continuation (within the context).
pub const PROBE_NEW_TOKENS: usize = 48;
/// The hottest temperature the lab's sample takes (the page's control goes 0..2).
pub const PROBE_MAX_TEMPERATURE: f32 = 2.0;

/// How the probe samples a text model's continuation: with the engine's sampler
/// (`session::generate::Sampling`, `ops::SampleParams`) at `temperature` (0 = greedy, the default)
/// and its random draws from `seed` (the lab gives the step: the same step and temperature give the
/// same sample).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProbeSample {
    pub temperature: f32,
    pub seed: u64,
}

impl ProbeSample {
    /// The generation config of the probe's continuation, or why the temperature is out of range
    /// (NaN, negative or over [`PROBE_MAX_TEMPERATURE`]).
    fn config(&self, max_new_tokens: usize) -> Result<crate::model::runtime::run::GenConfig> {
        let t = self.temperature;
        if t > PROBE_MAX_TEMPERATURE {
            return Err(TfError::Input(format!("the sample's temperature must be between 0 and {PROBE_MAX_TEMPERATURE}, got {t}")));
        }
        let sampling = crate::session::generate::Sampling { temperature: t, ..Default::default() };
        Ok(crate::model::runtime::run::GenConfig { max_new_tokens, sample: sampling.params()?, seed: self.seed, ..Default::default() })
    }
}

/// Measures [`Probe`] on a checkpoint's bytes and its tokenizer (the run's); `prompt` starts the
/// sample of a text model (default: the first token of its vocabulary after the specials), drawn as
/// `sample` says.
pub async fn probe(checkpoint: &[u8], tok: Option<&Tokenizer>, prompt: Option<&str>, sample: ProbeSample) -> Result<Probe> {
    use crate::model::config::Arch;
    use crate::model::map_kind::MapKind;
    use crate::model::runtime::run::GenConfig;
    let budget = crate::model::memory::Budget::page();
    // a bad temperature is refused before the model is loaded
    sample.config(0)?;
    let mut s = crate::session::Session::load(&crate::session::Device::Cpu, checkpoint, &budget).await?;
    let cfg = s.config().clone();
    let ctx = cfg.max_seq_len;
    let mut out = Probe {
        induction: None,
        previous_token_heads: vec![],
        induction_heads: vec![],
        maps: vec![],
        tokens: vec![],
        sample: None,
        sample_temperature: sample.temperature,
        expert_load: None,
        dates: None,
    };
    if cfg.arch == Arch::EncoderDecoder {
        let tok = tok.ok_or_else(|| TfError::Internal("the dates model has no tokenizer".into()))?;
        let batch = dates::batch(&mut crate::rng::Rng::new(0x5eed_da7e), PROBE_DATES, true)?;
        let (mut exact, mut examples) = (0, vec![]);
        for i in 0..PROBE_DATES {
            let src: Vec<u32> =
                batch.src[i * dates::SRC_LEN..(i + 1) * dates::SRC_LEN].iter().copied().filter(|&x| x != dates::PAD).collect();
            let want: Vec<u32> =
                batch.targets[i * dates::TGT_LEN..(i + 1) * dates::TGT_LEN].iter().copied().filter(|&x| x != dates::EOS).collect();
            let cfg = GenConfig { max_new_tokens: dates::TGT_LEN, ..GenConfig::default() };
            let got: Vec<u32> = s.generate(&[], Some(&src), cfg).await?.into_iter().filter(|&x| x > dates::EOS).collect();
            exact += (got == want) as usize;
            if examples.len() < 4 {
                let text = |ids: &[u32]| tok.decode(ids).unwrap_or_default();
                examples.push((text(&src), text(&got), text(&want)));
            }
        }
        out.dates = Some(DatesScore { exact, of: PROBE_DATES, examples });
        return Ok(out);
    }
    // the Inspect view's Induction test: every head's scores
    let it = s.induction_test((ctx / 2).clamp(2, 32), 0, None, None).await?;
    out.induction = Some(InductionScore::of(&it.head_scores));
    out.previous_token_heads = it.head_scores.previous_token.clone();
    out.induction_heads = it.head_scores.induction.clone();
    // the probe sequence
    let seq: Vec<u32> = match &tok {
        None => [it.half.clone(), it.half.clone()].concat(),
        Some(t) => {
            let mut start = prompt.map(|p| t.encode(p).ids).unwrap_or_default();
            if start.is_empty() {
                start = vec![(t.special_ids().map_or(0, |(_, _, eos)| eos) + 1).min(cfg.vocab_size as u32 - 1)];
            }
            start.truncate(ctx / 2);
            let room = (ctx - start.len()).min(PROBE_NEW_TOKENS);
            let ids = s.generate(&start, None, sample.config(room)?).await?;
            out.sample = Some(t.decode(&ids).unwrap_or_default());
            ids
        }
    };
    out.tokens = match &tok {
        Some(t) => seq.iter().map(|&i| t.token_str(i).unwrap_or_else(|_| i.to_string())).collect(),
        None => seq.iter().map(|i| i.to_string()).collect(),
    };
    let f = s.forward(&seq, None).await?;
    out.maps = f
        .attention
        .into_iter()
        .filter(|m| m.kind == MapKind::Decoder)
        .map(|m| ProbeMap { layer: m.layer, heads: m.heads, rows: m.rows, cols: m.cols, data: m.data })
        .collect();
    if let Some(moe) = &cfg.moe {
        let load = f
            .moe
            .iter()
            .map(|r| {
                let mut c = vec![0f32; moe.num_experts];
                for (e, k) in r.experts.iter().flatten().zip(r.kept.iter().flatten()) {
                    if *k != 0 && (*e as usize) < c.len() {
                        c[*e as usize] += 1.0;
                    }
                }
                let total = c.iter().sum::<f32>().max(1.0);
                c.iter().map(|x| x / total).collect()
            })
            .collect();
        out.expert_load = Some(load);
    }
    Ok(out)
}
