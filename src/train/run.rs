//! The training loop on one backend: a step zeroes the gradients, runs forward and backward over
//! each micro-batch (gradient accumulation), checks the global gradient norm is finite, and
//! updates every parameter; evaluation runs the forward alone. What a step reports is a
//! [`StepLog`], one JSON line of `--log`.

use serde::Serialize;

use crate::error::{Result, TfError};
use crate::model::config::ModelConfig;
use crate::train::data::{Batch, Source};
use crate::train::net::Net;
use crate::train::ops::Train;
use crate::train::optim::Optim;
use crate::train::params::Params;

/// One logged step.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct StepLog {
    /// counted from 1
    pub step: u32,
    /// the objective of the step's batch, before its update: the mean cross-entropy (plus, for a
    /// MoE model trained with `--aux-loss`, the weighted load-balancing losses)
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    pub lr: f32,
    /// the global gradient norm, before clipping
    pub grad_norm: f64,
    /// over the steps since the previous entry (the CLI leaves its evaluations and saves out)
    pub tokens_per_second: f64,
    /// seconds since the run started (the CLI: the wall clock; the lab: the time spent in its steps)
    pub elapsed_s: f64,
}

/// The run's shape: B sequences of T tokens per micro-batch (an encoder-decoder: T target and
/// `source` source tokens; 0 for the others), `accum` micro-batches per step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub batch: usize,
    pub context: usize,
    pub source: usize,
    pub accum: u32,
}

/// A model being trained on a backend.
pub struct Trainer<B: Train> {
    pub be: B,
    pub cfg: ModelConfig,
    pub params: Params<B::T>,
    pub graph: Net<B>,
    pub optim: Optim,
    pub shape: Shape,
    /// one partial squared norm per parameter tensor, then the halt slot (the first step whose
    /// gradient was not finite, 0 before) and that step's first tensor that was not finite
    /// (`Train::guard_finite`): a step that reads nothing back halts the updates on the device,
    /// and the next read names the step
    norms: B::T,
    /// the last optimizer step taken (0 before the first)
    pub step: u32,
    /// the weight of the MoE layers' load-balancing loss in the objective (0: cross-entropy alone)
    aux_loss: f32,
}

impl<B: Train> Trainer<B> {
    pub fn new(mut be: B, cfg: &ModelConfig, values: Vec<Vec<f32>>, optim: Optim, shape: Shape) -> Result<Trainer<B>> {
        optim.check()?;
        if shape.accum == 0 {
            return Err(TfError::Input("--accum must be at least 1".into()));
        }
        let graph = Net::new(&mut be, cfg, shape.batch, shape.context, shape.source)?;
        let params = Params::from_values(&be, cfg, values)?;
        let norms = be.zeros(&[params.p.len() + 2], "gradient norms")?;
        Ok(Trainer { be, cfg: cfg.clone(), params, graph, optim, shape, norms, step: 0, aux_loss: 0.0 })
    }

    /// The objective becomes cross-entropy + `w` x the sum over MoE layers of their Switch
    /// load-balancing loss (`train::moe`); the logged loss is that objective.
    pub fn with_aux_loss(mut self, w: f32) -> Result<Trainer<B>> {
        if !w.is_finite() || w < 0.0 {
            return Err(TfError::Input(format!("--aux-loss must be a finite weight >= 0, got {w}")));
        }
        if w != 0.0 && self.cfg.moe.is_none() {
            return Err(TfError::Input("--aux-loss weighs the experts' load-balancing loss: the model has no experts".into()));
        }
        self.aux_loss = w;
        Ok(self)
    }

    /// The forward over one batch: its objective, the mean cross-entropy over the targets that
    /// count plus the weighted load-balancing losses (the logits become the loss gradient scaled
    /// by `1 / (counted targets x micro)`; see `Graph::forward`; the backward weighs the
    /// load-balancing losses the same way).
    async fn forward(&mut self, batch: &Batch, micro: usize) -> Result<f64> {
        let counted = self.feed(batch)?;
        self.record_forward(counted, micro)?;
        self.read_loss(batch).await
    }

    /// Writes a batch (before any op of its step is recorded: a write flushes what is recorded);
    /// returns how many targets count.
    fn feed(&mut self, batch: &Batch) -> Result<usize> {
        let counted = self.graph.feed(&mut self.be, batch)?;
        if counted == 0 {
            return Err(TfError::Input("a batch whose targets are all padding: nothing to learn from".into()));
        }
        Ok(counted)
    }

    /// Records the forward of the fed batch (its losses and the logits' gradient, see `forward`).
    fn record_forward(&mut self, counted: usize, micro: usize) -> Result<()> {
        let scale = 1.0 / (counted * micro) as f32;
        self.graph.set_aux_weight(self.aux_loss * scale * counted as f32);
        self.graph.forward(&mut self.be, &self.params, scale)
    }

    /// The objective of the batch whose forward was recorded last.
    async fn read_loss(&mut self, batch: &Batch) -> Result<f64> {
        let counted = batch.targets.iter().filter(|&&t| !self.graph.ignores(t)).count().max(1);
        let (losses, rows) = self.graph.losses();
        let losses = self.be.read_f32(losses, 0, rows).await?;
        let ce = losses.iter().map(|&x| x as f64).sum::<f64>() / counted as f64;
        if self.aux_loss == 0.0 {
            return Ok(ce);
        }
        let aux = self.graph.aux_losses(&mut self.be).await?;
        Ok(ce + self.aux_loss as f64 * aux.iter().map(|&x| x as f64).sum::<f64>())
    }

    /// One optimizer step: forward and backward of its micro-batches, the gradient norms, the
    /// update, recorded together. With `report`, the loss and gradient norm are read back (and
    /// checked finite before the update); without, nothing is read and the step goes out in one
    /// submission. Returns (the loss and norm when reported, the lr).
    pub async fn step(&mut self, micro: &[Batch], report: bool) -> Result<(Option<(f64, f64)>, f32)> {
        if report {
            let r = self.gradients(micro).await?;
            let lr = self.update()?;
            self.be.submit()?;
            return Ok((Some(r), lr));
        }
        let k = micro.len().max(1);
        for (i, batch) in micro.iter().enumerate() {
            let counted = self.feed(batch)?;
            if i == 0 {
                self.zero_grads()?;
            }
            self.record_forward(counted, k)?;
            self.graph.backward(&mut self.be, &self.params)?;
        }
        Optim::norms(&mut self.be, &self.params, &self.norms)?;
        let lr = self.update()?;
        self.be.submit()?;
        Ok((None, lr))
    }

    fn zero_grads(&mut self) -> Result<()> {
        for (i, g) in self.params.g.iter().enumerate() {
            self.be.fill_zero(g, self.params.numel(i))?;
        }
        Ok(())
    }

    /// Forward and backward of one optimizer step's micro-batches, gradients summed; the mean
    /// loss and the global gradient norm (before clipping). Parameters are not updated.
    pub async fn gradients(&mut self, micro: &[Batch]) -> Result<(f64, f64)> {
        let mut loss = 0.0;
        let k = micro.len().max(1);
        for (i, batch) in micro.iter().enumerate() {
            let counted = self.feed(batch)?;
            if i == 0 {
                self.zero_grads()?;
            }
            self.record_forward(counted, k)?;
            let l = self.read_loss(batch).await?;
            if !l.is_finite() {
                // a step before, unreported, may have halted the updates: that is the first cause
                self.halt(self.step + 1).await?;
                return Err(TfError::Input(format!("step {}: the loss is {l}; stopped before the update", self.step + 1)));
            }
            loss += l / k as f64;
            self.graph.backward(&mut self.be, &self.params)?;
        }
        Optim::norms(&mut self.be, &self.params, &self.norms)?;
        let n = self.params.p.len();
        let read = self.be.read_f32(&self.norms, 0, n + 2).await?;
        let (parts, halt) = read.split_at(n);
        if halt[0] != 0.0 {
            return Err(self.halted(halt[0] as u32, halt[1] as usize, self.step + 1));
        }
        if let Some(i) = parts.iter().position(|x| !x.is_finite()) {
            return Err(TfError::Input(format!(
                "step {}: the gradient of {} is not finite; stopped before the update",
                self.step + 1,
                self.params.decl[i].name
            )));
        }
        Ok((loss, parts.iter().map(|&x| x as f64).sum::<f64>().sqrt()))
    }

    /// The error of a run whose step `bad` (not read back) had a gradient that was not finite in
    /// tensor `part` (`parts`: the tensors' norms overflowed only in their sum), found by the read
    /// of step `found`.
    fn halted(&self, bad: u32, part: usize, found: u32) -> TfError {
        let what = match self.params.decl.get(part) {
            Some(d) => format!("the gradient of {}", d.name),
            None => "the global gradient norm".to_string(),
        };
        TfError::Input(format!(
            "step {bad}: {what} is not finite; the parameters were not updated from that step on (found at step {found})"
        ))
    }

    /// Whether an unreported step halted the updates (`Train::guard_finite`): the error naming
    /// the step and the tensor. One small read, after step `self.step`.
    pub async fn check_halt(&mut self) -> Result<()> {
        self.halt(self.step).await
    }

    async fn halt(&mut self, found: u32) -> Result<()> {
        let n = self.params.p.len();
        let halt = self.be.read_f32(&self.norms, n, 2).await?;
        if halt[0] != 0.0 {
            return Err(self.halted(halt[0] as u32, halt[1] as usize, found));
        }
        Ok(())
    }

    /// Updates every parameter from the gradients of `gradients` (clip + AdamW); returns the lr.
    pub fn update(&mut self) -> Result<f32> {
        self.step += 1;
        self.optim.step(&mut self.be, &self.params, &self.norms, self.step)
    }

    /// The micro-batches of step `s` from `data`.
    pub fn batches(&self, data: &Source, seed: u64, s: u32) -> Result<Vec<Batch>> {
        (0..self.shape.accum).map(|m| data.train_batch(seed, s, m, self.shape.batch, self.shape.context)).collect()
    }

    /// The mean loss over `n` evaluation batches (None when the data has no held-out part).
    pub async fn evaluate(&mut self, data: &Source, seed: u64, n: u32) -> Result<Option<f64>> {
        let mut batches = Vec::with_capacity(n as usize);
        for i in 0..n {
            let Some(b) = data.val_batch(seed, i, self.shape.batch, self.shape.context) else { return Ok(None) };
            batches.push(b);
        }
        self.evaluate_batches(&batches).await
    }

    /// The mean over `batches` of each batch's loss (its mean cross-entropy over the targets that
    /// count), the parameters untouched; None for no batches. Each batch has the run's shape.
    pub async fn evaluate_batches(&mut self, batches: &[Batch]) -> Result<Option<f64>> {
        let mut sum = 0.0;
        for b in batches {
            sum += self.forward(b, 1).await?;
        }
        Ok(if batches.is_empty() { None } else { Some(sum / batches.len() as f64) })
    }

    /// The optimizer's state: both Adam moments of every tensor, in declaration order.
    pub async fn moments(&mut self) -> Result<(Vec<Vec<f32>>, Vec<Vec<f32>>)> {
        let (mut m, mut v) = (vec![], vec![]);
        for i in 0..self.params.p.len() {
            m.push(self.be.read_f32(&self.params.m[i], 0, self.params.numel(i)).await?);
            v.push(self.be.read_f32(&self.params.v[i], 0, self.params.numel(i)).await?);
        }
        Ok((m, v))
    }

    /// Continues a run after optimizer step `step` with these moments (a resumed run).
    pub fn restore(&mut self, step: u32, m: &[Vec<f32>], v: &[Vec<f32>]) -> Result<()> {
        if m.len() != self.params.p.len() || v.len() != self.params.p.len() {
            return Err(TfError::Input("the optimizer state does not hold every tensor of the model".into()));
        }
        for i in 0..self.params.p.len() {
            if m[i].len() != self.params.numel(i) || v[i].len() != self.params.numel(i) {
                return Err(TfError::Input(format!("the optimizer state of {} has the wrong size", self.params.decl[i].name)));
            }
            self.be.write_f32(&self.params.m[i], 0, &m[i])?;
            self.be.write_f32(&self.params.v[i], 0, &v[i])?;
        }
        self.step = step;
        Ok(())
    }

    /// Every parameter's values, in declaration order.
    pub async fn values(&mut self) -> Result<Vec<Vec<f32>>> {
        self.params.read(&mut self.be, false).await
    }
}
