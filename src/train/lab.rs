//! The page's training lab (www/views/train.js, through src/wasm/lab.rs): a run built from a
//! preset and its editable settings, stepped in chunks so the worker answers pause and stop
//! between them. A lab run is the CLI's run: the same config (`fresh::fresh_config`), init seed,
//! data (`Source`) and optimizer as `tinyformer train` with the flags [`LabPlan::cli_args`]
//! gives, so the page's loss at a step can be checked against the CLI's.
//!
//! Presets:
//! - `induction`: a 2-layer attention-only decoder (`--arch attn-only --init wide`) on the
//!   induction task (each row a random segment repeated to fill it);
//! - `shakespeare`: nanoGPT's baby config (4 layers, 4 heads, 128 dims, context 64, batch 12,
//!   lr 1e-3 with 100 warmup steps and cosine to 1e-4, betas 0.9/0.99) on a text, character-level.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TfError};
use crate::model::config::ModelConfig;
use crate::model::forward::weights::Declared;
use crate::tokenizer::Tokenizer;
use crate::train::data::Source;
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
}

struct Preset {
    arch: FreshArch,
    init: Init,
    text: bool,
    s: LabSettings,
}

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
    };
    match name {
        "induction" => Ok(Preset { arch: FreshArch::AttnOnly, init: Init::Gpt2, text: false, s: base(name) }),
        "shakespeare" => Ok(Preset {
            arch: FreshArch::Gpt,
            init: Init::Gpt2,
            text: true,
            s: LabSettings {
                layers: 4,
                heads: 4,
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
                init: "gpt2",
                steps: 2000,
                eval_every: 250,
                eval_batches: 4,
                ..base(name)
            },
        }),
        _ => Err(TfError::Input(format!("no training preset {}: choose induction or shakespeare", crate::error::quote(name)))),
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
        let (tokenizer, data) = if p.text {
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
        } else {
            s.vocab = within(spec.vocab.unwrap_or(s.vocab), 2, 65536, "the vocabulary")?;
            (None, Source::Induction { vocab: s.vocab as u32 })
        };
        let sizes =
            Sizes { layers: s.layers, heads: s.heads, kv_heads: None, dim: s.dim, ff: None, experts: 4, top_k: 2, context: s.context };
        let v = fresh_config(p.arch, &sizes, s.vocab);
        let cfg = ModelConfig::from_value(&v).map_err(|e| TfError::Input(format!("these sizes make an invalid model: {e}")))?;
        let memory = TrainMemory::of(&cfg, s.batch, s.context, 0)?;
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
        if matches!(self.data, Source::Text { .. }) {
            a.extend(["--text".into(), text_file.into()]);
        } else {
            a.extend(["--task".into(), "induction".into(), "--vocab".into(), s.vocab.to_string()]);
        }
        for (flag, v) in [
            ("--layers", s.layers.to_string()),
            ("--heads", s.heads.to_string()),
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
            a.extend([flag.to_string(), v]);
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
        let shape = Shape { batch: plan.settings.batch, context: plan.settings.context, source: 0, accum: 1 };
        let tr = Trainer::new(be, &plan.cfg, values, plan.optim(), shape)?;
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
        let tokens_per_step = (s.batch * s.context) as f64;
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

    /// The current model as a checkpoint in our format (as `tinyformer train --out` writes it),
    /// after checking no unreported step halted the updates.
    pub async fn checkpoint(&mut self) -> Result<Vec<u8>> {
        self.tr.check_halt().await?;
        let values = self.tr.values().await?;
        let decl: &[Declared] = &self.tr.params.decl;
        checkpoint_bytes(decl, values, &self.plan.config_json, self.plan.tokenizer.as_ref())
    }
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
    let it = s.induction_test(n, 0, None, None).await?;
    let heads = it.head_scores.induction.last().cloned().unwrap_or_default();
    let (head, best) = heads.iter().copied().enumerate().fold((0, 0f32), |b, (i, x)| if x > b.1 { (i, x) } else { b });
    let previous_token = it.head_scores.previous_token.first().map_or(0.0, |r| r.iter().copied().fold(0f32, f32::max));
    Ok(InductionScore { best, head, heads, previous_token })
}
