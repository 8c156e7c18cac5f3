//! The training graph of a model, whichever its architecture: the decoder families
//! (`graph::Graph`) or the encoder-decoder (`encdec::EncDecGraph`), behind one interface for the
//! training loop.

use crate::error::Result;
use crate::model::config::{Arch, ModelConfig};
use crate::train::data::Batch;
use crate::train::encdec::EncDecGraph;
use crate::train::graph::Graph;
use crate::train::ops::Train;
use crate::train::params::Params;

pub enum Net<B: Train> {
    Decoder(Graph<B>),
    EncDec(EncDecGraph<B>),
}

impl<B: Train> Net<B> {
    /// The graph for B sequences of T tokens (an encoder-decoder: T target and `ts` source tokens).
    pub fn new(be: &mut B, cfg: &ModelConfig, b: usize, t: usize, ts: usize) -> Result<Net<B>> {
        Ok(match cfg.arch {
            Arch::EncoderDecoder => Net::EncDec(EncDecGraph::new(be, cfg, b, ts, t)?),
            _ => Net::Decoder(Graph::new(be, cfg, b, t)?),
        })
    }

    /// Writes a batch; returns how many of its targets count in the loss.
    pub fn feed(&self, be: &mut B, batch: &Batch) -> Result<usize> {
        match self {
            Net::Decoder(g) => g.feed(be, &batch.ids, &batch.targets).map(|_| batch.targets.len()),
            Net::EncDec(g) => g.feed(be, &batch.src, &batch.ids, &batch.targets),
        }
    }

    pub fn forward(&self, be: &mut B, ps: &Params<B::T>, scale: f32) -> Result<()> {
        match self {
            Net::Decoder(g) => g.forward(be, ps, scale),
            Net::EncDec(g) => g.forward(be, ps, scale),
        }
    }

    pub fn backward(&self, be: &mut B, ps: &Params<B::T>) -> Result<()> {
        match self {
            Net::Decoder(g) => g.backward(be, ps),
            Net::EncDec(g) => g.backward(be, ps),
        }
    }

    /// The weight of the load-balancing losses in the gradient (a MoE decoder; ignored by the others).
    pub fn set_aux_weight(&mut self, w: f32) {
        if let Net::Decoder(g) = self {
            g.set_aux_weight(w);
        }
    }

    /// Each MoE layer's load-balancing loss of the last forward (empty without experts).
    pub async fn aux_losses(&self, be: &mut B) -> Result<Vec<f32>> {
        match self {
            Net::Decoder(g) => g.aux_losses(be).await,
            Net::EncDec(_) => Ok(vec![]),
        }
    }

    /// Whether a target id is left out of the loss (the encoder-decoder's padding).
    pub fn ignores(&self, target: u32) -> bool {
        matches!(self, Net::EncDec(_)) && target == crate::mask::PAD_ID
    }

    /// Each target's loss after a forward, and how many rows it holds.
    pub fn losses(&self) -> (&B::T, usize) {
        match self {
            Net::Decoder(g) => (&g.acts.losses, g.acts.b * g.acts.t),
            Net::EncDec(g) => (&g.acts.losses, g.acts.b * g.acts.tt),
        }
    }
}
