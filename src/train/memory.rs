//! The training plan's memory, from the declarations that allocate it: the weights, their
//! gradients and both Adam moments (`Params::declare`), and every buffer of a step
//! (`Acts::declare` or `EncDecActs::declare`, walked with a counting [`Alloc`]). Checked against the budget before
//! anything is allocated; over it, one line naming the largest part and what to lower.

use crate::error::{Result, TfError};
use crate::model::config::{Arch, ModelConfig};
use crate::model::memory::human_bytes;
use crate::train::encdec::EncDecActs;
use crate::train::graph::{Acts, Alloc};
use crate::train::params::Params;

/// The bytes of a training step, by part.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrainMemory {
    pub weights: u64,
    pub gradients: u64,
    pub adam_moments: u64,
    /// activations kept for the backward, their gradients, the logits and the batch
    pub activations: u64,
    pub total: u64,
    /// the largest single activation buffer: (label, bytes)
    pub largest: (String, u64),
}

#[derive(Default)]
struct Tally {
    bytes: u64,
    largest: (String, u64),
}

impl Alloc<()> for Tally {
    fn f32(&mut self, label: &str, shape: &[usize]) -> Result<()> {
        let b = shape.iter().fold(4u64, |a, &d| a.saturating_mul(d as u64));
        self.bytes = self.bytes.saturating_add(b);
        if b > self.largest.1 {
            self.largest = (label.to_string(), b);
        }
        Ok(())
    }
    fn u32(&mut self, label: &str, shape: &[usize]) -> Result<()> {
        self.f32(label, shape)
    }
}

impl TrainMemory {
    /// The memory of training `cfg` on batches of B x T (an encoder-decoder: T target and `ts`
    /// source tokens).
    pub fn of(cfg: &ModelConfig, b: usize, t: usize, ts: usize) -> Result<TrainMemory> {
        let (decl, _) = Params::<()>::declare(cfg)?;
        let weights = decl.iter().map(|d| d.shape.iter().fold(4u64, |a, &x| a.saturating_mul(x as u64))).fold(0u64, u64::saturating_add);
        let mut tally = Tally::default();
        match cfg.arch {
            Arch::EncoderDecoder => drop(EncDecActs::<()>::declare(cfg, b, ts, t, &mut tally)?),
            _ => drop(Acts::<()>::declare(cfg, b, t, &mut tally)?),
        }
        let total = weights.saturating_mul(4).saturating_add(tally.bytes);
        Ok(TrainMemory {
            weights,
            gradients: weights,
            adam_moments: weights.saturating_mul(2),
            activations: tally.bytes,
            total,
            largest: tally.largest,
        })
    }

    /// An error naming the largest part when the total is over `budget` bytes.
    pub fn check(&self, budget: u64) -> Result<()> {
        if self.total <= budget {
            return Ok(());
        }
        let hint = if self.activations >= self.weights.saturating_mul(4) {
            format!(
                "the activations ({}; the largest {} of {}): lower --batch or --context",
                human_bytes(self.activations),
                self.largest.0,
                human_bytes(self.largest.1)
            )
        } else {
            format!(
                "the weights with their gradients and Adam moments ({}): lower --dim or --layers",
                human_bytes(self.weights.saturating_mul(4))
            )
        };
        Err(TfError::Memory(format!(
            "training needs {} of memory, over the budget of {} (--memory-budget); the largest part is {hint}",
            human_bytes(self.total),
            human_bytes(budget)
        )))
    }
}
