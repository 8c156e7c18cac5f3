//! Passes that look inside the model: one forward pass with its attention maps, masks and MoE
//! routing, the evaluation loss, the look-inside report and the induction test (model::inspect).

use super::Session;
use crate::error::Result;
use crate::model::inspect::{Ablation, InductionTest, PageOpts, Report};
use crate::model::run::ForwardOut;

impl Session {
    /// One pass with every attention map, mask and MoE routing table. `ids` is the input (the
    /// source of the encoder-decoder, whose decoder reads `tgt`, default [BOS]).
    pub async fn forward(&mut self, ids: &[u32], tgt: Option<&[u32]>) -> Result<ForwardOut> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| m.forward(b, ids, tgt).await)
    }

    /// [`Session::forward`] keeping and reading back the attention maps of `maps` only (the layers
    /// the attention view shows).
    pub async fn forward_with(&mut self, ids: &[u32], tgt: Option<&[u32]>, maps: &crate::model::state::MapLayers) -> Result<ForwardOut> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| m.forward_with(b, ids, tgt, maps).await)
    }

    /// Mean cross-entropy per predicted token over `ids`, and how many tokens were predicted.
    pub async fn eval_loss(&mut self, ids: &[u32]) -> Result<(f64, usize)> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| m.eval_loss(b, ids).await)
    }

    /// The look-inside report (model::inspect); the ablation stays off afterwards.
    pub async fn inspect(&mut self, ids: &[u32], tgt: Option<&[u32]>, ablation: Option<&Ablation>) -> Result<Report> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| {
            let r = m.inspect(b, ids, tgt, ablation).await;
            m.clear_ablation(b);
            r
        })
    }

    /// The induction test: `n` random tokens repeated twice.
    pub async fn induction_test(&mut self, n: usize, seed: u64, src: Option<&[u32]>, ablation: Option<&Ablation>) -> Result<InductionTest> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| {
            let r = m.induction_test(b, n, seed, src, ablation).await;
            m.clear_ablation(b);
            r
        })
    }

    /// The page's Inspect request as JSON (model::inspect::inspect_json).
    pub async fn inspect_page(&mut self, ids: &[u32], tgt: Option<&[u32]>, o: &PageOpts) -> Result<serde_json::Value> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| m.inspect_json(b, ids, tgt, o).await)
    }

    /// Greedy generation with an ablation: {ids, text}.
    pub async fn generate_ablated(&mut self, ids: &[u32], o: &PageOpts) -> Result<serde_json::Value> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| m.generate_ablated_json(b, ids, o).await)
    }
}
