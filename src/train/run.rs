//! The training loop on one backend: a step zeroes the gradients, runs forward and backward over
//! each micro-batch (gradient accumulation), checks the global gradient norm is finite, and
//! updates every parameter; evaluation runs the forward alone. What a step reports is a
//! [`StepLog`], one JSON line of `--log`.

use serde::Serialize;

use crate::error::{Result, TfError};
use crate::model::config::ModelConfig;
use crate::train::data::{Batch, Source};
use crate::train::graph::Graph;
use crate::train::ops::Train;
use crate::train::optim::Optim;
use crate::train::params::Params;

/// One logged step.
#[derive(Clone, Debug, Serialize, PartialEq)]
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
    pub tokens_per_second: f64,
    pub elapsed_s: f64,
}

/// The run's shape: B sequences of T tokens per micro-batch, `accum` micro-batches per step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub batch: usize,
    pub context: usize,
    pub accum: u32,
}

/// A model being trained on a backend.
pub struct Trainer<B: Train> {
    pub be: B,
    pub cfg: ModelConfig,
    pub params: Params<B::T>,
    pub graph: Graph<B>,
    pub optim: Optim,
    pub shape: Shape,
    /// one partial squared norm per parameter tensor
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
        let graph = Graph::new(&mut be, cfg, shape.batch, shape.context)?;
        let params = Params::from_values(&be, cfg, values)?;
        let norms = be.zeros(&[params.p.len()], "gradient norms")?;
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

    /// The forward over one batch: its objective, the mean cross-entropy plus the weighted
    /// load-balancing losses (the logits become the loss gradient scaled by `scale`; see
    /// `Graph::forward`; the backward weighs the load-balancing losses the same way).
    async fn forward(&mut self, batch: &Batch, scale: f32) -> Result<f64> {
        let rows = batch.b * batch.t;
        self.graph.set_aux_weight(self.aux_loss * scale * rows as f32);
        self.graph.feed(&mut self.be, &batch.ids, &batch.targets)?;
        self.graph.forward(&mut self.be, &self.params, scale)?;
        let losses = self.be.read_f32(&self.graph.acts.losses, 0, rows).await?;
        let ce = losses.iter().map(|&x| x as f64).sum::<f64>() / rows as f64;
        if self.aux_loss == 0.0 {
            return Ok(ce);
        }
        let aux = self.graph.aux_losses(&mut self.be).await?;
        Ok(ce + self.aux_loss as f64 * aux.iter().map(|&x| x as f64).sum::<f64>())
    }

    /// Forward and backward of one optimizer step's micro-batches, gradients summed; the mean
    /// loss and the global gradient norm (before clipping). Parameters are not updated.
    pub async fn gradients(&mut self, micro: &[Batch]) -> Result<(f64, f64)> {
        for (i, g) in self.params.g.iter().enumerate() {
            self.be.fill_zero(g, self.params.numel(i))?;
        }
        let mut loss = 0.0;
        let k = micro.len().max(1);
        for batch in micro {
            let scale = 1.0 / (batch.b * batch.t * k) as f32;
            let l = self.forward(batch, scale).await?;
            if !l.is_finite() {
                return Err(TfError::Input(format!("step {}: the loss is {l}; stopped before the update", self.step + 1)));
            }
            loss += l / k as f64;
            self.graph.backward(&mut self.be, &self.params)?;
        }
        Optim::norms(&mut self.be, &self.params, &self.norms)?;
        let parts = self.be.read_f32(&self.norms, 0, self.params.p.len()).await?;
        if let Some(i) = parts.iter().position(|x| !x.is_finite()) {
            return Err(TfError::Input(format!(
                "step {}: the gradient of {} is not finite; stopped before the update",
                self.step + 1,
                self.params.decl[i].name
            )));
        }
        Ok((loss, parts.iter().map(|&x| x as f64).sum::<f64>().sqrt()))
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
        let mut sum = 0.0;
        for i in 0..n {
            let Some(b) = data.val_batch(seed, i, self.shape.batch, self.shape.context) else { return Ok(None) };
            sum += self.forward(&b, 0.0).await?;
        }
        Ok(if n == 0 { None } else { Some(sum / n as f64) })
    }

    /// Every parameter's values, in declaration order.
    pub async fn values(&mut self) -> Result<Vec<Vec<f32>>> {
        self.params.read(&mut self.be, false).await
    }
}
