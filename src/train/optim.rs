//! The optimizer: the learning-rate schedule (linear warmup, then cosine to a floor or constant)
//! and one step over every parameter (the global gradient norm, the clip, AdamW with decay on
//! tensors of 2 or more dimensions only), recorded as backend ops so that the GPU does it inside
//! the step's one submission.

use crate::error::{Result, TfError};
use crate::train::ops::{AdamStep, Train};
use crate::train::params::Params;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Cosine,
    Constant,
}

/// The optimizer's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Optim {
    pub lr: f32,
    pub min_lr: f32,
    pub warmup: u32,
    pub schedule: Schedule,
    /// the run's length (the cosine reaches `min_lr` at its end)
    pub steps: u32,
    pub weight_decay: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    pub clip: Option<f32>,
}

impl Default for Optim {
    fn default() -> Optim {
        Optim {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 100,
            schedule: Schedule::Cosine,
            steps: 1000,
            weight_decay: 0.1,
            betas: (0.9, 0.95),
            eps: 1e-8,
            clip: Some(1.0),
        }
    }
}

impl Optim {
    /// The learning rate of step `s` (counted from 1): lr * s / warmup during the warmup, then
    /// cosine from lr to min_lr over the remaining steps, or lr.
    pub fn lr_at(&self, s: u32) -> f32 {
        if self.warmup > 0 && s <= self.warmup {
            return self.lr * s as f32 / self.warmup as f32;
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
                let progress = ((s - self.warmup.min(s)) as f64 / span).min(1.0);
                (self.min_lr as f64 + 0.5 * (self.lr - self.min_lr) as f64 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
            }
        }
    }

    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(TfError::Input(m));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {}", self.lr));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return bad(format!("--min-lr must be between 0 and --lr ({}), got {}", self.lr, self.min_lr));
        }
        let (b1, b2) = self.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return bad(format!("--betas must be two numbers in [0, 1), got {b1},{b2}"));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad(format!("--eps must be positive, got {}", self.eps));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("--weight-decay must be 0 or more, got {}", self.weight_decay));
        }
        if self.clip.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return bad("--clip must be positive (0 turns clipping off)".to_string());
        }
        Ok(())
    }

    /// Records every gradient's squared norm into `norms` (one part per tensor).
    pub fn norms<B: Train>(be: &mut B, ps: &Params<B::T>, norms: &B::T) -> Result<()> {
        for (i, g) in ps.g.iter().enumerate() {
            be.sum_squares(norms, i, g, ps.numel(i))?;
        }
        Ok(())
    }

    /// Records step `s`: AdamW on every tensor, the clip applied from `norms` (filled by
    /// [`Optim::norms`]). Returns the learning rate used.
    pub fn step<B: Train>(&self, be: &mut B, ps: &Params<B::T>, norms: &B::T, s: u32) -> Result<f32> {
        let parts = ps.p.len();
        be.guard_finite(norms, parts, s)?;
        let lr = self.lr_at(s);
        for i in 0..parts {
            let a = AdamStep {
                lr,
                beta1: self.betas.0,
                beta2: self.betas.1,
                eps: self.eps,
                weight_decay: if ps.decays(i) { self.weight_decay } else { 0.0 },
                step: s,
                clip: self.clip,
                parts,
            };
            be.adamw(&ps.p[i], &ps.g[i], &ps.m[i], &ps.v[i], norms, ps.numel(i), &a)?;
        }
        Ok(lr)
    }
}
