//! The mixture-of-experts FFN in training: its buffers, its forward over the B*T rows of the whole
//! batch at once (router, softmax, top-k, capacity over all B*T tokens in flattened order, every
//! expert on every token, the gated sum) and its backward (each expert through the tokens it kept,
//! the router through the kept renormalised top-k weights and the softmax), with the Switch
//! load-balancing loss E * sum_e f_e P_e of each layer (its gradient through P only).
//!
//! Each expert's hidden activation is recomputed in the backward instead of kept, so a layer keeps
//! one expert's hidden rows however many experts it has.

use crate::error::{Result, TfError};
use crate::model::config::ModelConfig;
use crate::model::forward::weights::Linear;
use crate::ops::{moe_capacity_for, EwOp};
use crate::train::graph::{Acts, Alloc, Graph, LayerActs};
use crate::train::ops::Train;
use crate::train::params::Params;

/// What one MoE layer keeps for the backward, over N = B*T rows.
pub struct MoeLayerActs<T> {
    /// the layer's index (its slot in [`MoeActs::aux`])
    pub layer: usize,
    /// the router's softmax (N, E), its top-k experts (N, K) u32 and their renormalised weights (N, K)
    pub probs: T,
    pub experts: T,
    pub weights: T,
    /// the kept weight of each expert for each token (N, E), and whether each top-k slot was kept (N, K) u32
    pub gate: T,
    pub kept: T,
    /// every expert's output on every token (E, N, C)
    pub ys: T,
}

impl<T> MoeLayerActs<T> {
    /// Layer `li`'s MoE buffers over `rows` tokens, or None for a model without experts.
    pub fn declare<A: Alloc<T>>(cfg: &ModelConfig, rows: usize, li: usize, a: &mut A) -> Result<Option<MoeLayerActs<T>>> {
        let Some(m) = &cfg.moe else { return Ok(None) };
        let (e, k, c) = (m.num_experts, m.top_k, cfg.d_model);
        let l = |n: &str| format!("layer {li} {n}");
        Ok(Some(MoeLayerActs {
            layer: li,
            probs: a.f32(&l("router probabilities"), &[rows, e])?,
            experts: a.u32(&l("router experts"), &[rows, k])?,
            weights: a.f32(&l("router weights"), &[rows, k])?,
            gate: a.f32(&l("moe gate"), &[rows, e])?,
            kept: a.u32(&l("moe kept"), &[rows, k])?,
            ys: a.f32(&l("expert outputs"), &[e, rows, c])?,
        }))
    }
}

/// The MoE buffers every layer shares.
pub struct MoeActs<T> {
    /// the router logits (N, E), then their gradient
    pub logits: T,
    /// the gradient of the gate (N, E) and of one expert's output (N, C)
    pub dgate: T,
    pub dy: T,
    /// each layer's load-balancing loss (L,)
    pub aux: T,
    /// the weight of each layer's load-balancing loss in the objective the next backward
    /// differentiates (see [`Graph::set_aux_weight`])
    pub aux_weight: f32,
}

impl<T> MoeActs<T> {
    /// The shared MoE buffers over `rows` tokens, or None for a model without experts.
    pub fn declare<A: Alloc<T>>(cfg: &ModelConfig, rows: usize, a: &mut A) -> Result<Option<MoeActs<T>>> {
        let Some(m) = &cfg.moe else { return Ok(None) };
        Ok(Some(MoeActs {
            logits: a.f32("router logits", &[rows, m.num_experts])?,
            dgate: a.f32("grad moe gate", &[rows, m.num_experts])?,
            dy: a.f32("grad expert output", &[rows, cfg.d_model])?,
            aux: a.f32("moe load-balancing losses", &[cfg.num_layers])?,
            aux_weight: 0.0,
        }))
    }
}

/// The buffers a MoE layer runs on.
fn parts<'a, T>(acts: &'a Acts<T>, la: &'a LayerActs<T>) -> Result<(&'a MoeActs<T>, &'a MoeLayerActs<T>)> {
    match (&acts.moe, &la.moe) {
        (Some(s), Some(l)) => Ok((s, l)),
        _ => Err(TfError::Internal("MoE layer without its buffers".into())),
    }
}

impl<B: Train> Graph<B> {
    /// Sets the weight of every layer's load-balancing loss in the objective the next backward
    /// differentiates: the run's aux-loss weight times the share of the step this batch is (the
    /// backward's loss scale times the batch's rows). No effect on a model without experts.
    pub fn set_aux_weight(&mut self, w: f32) {
        if let Some(m) = self.acts.moe.as_mut() {
            m.aux_weight = w;
        }
    }

    /// Each MoE layer's load-balancing loss of the last forward (empty without experts).
    pub async fn aux_losses(&self, be: &mut B) -> Result<Vec<f32>> {
        match &self.acts.moe {
            Some(m) => be.read_f32(&m.aux, 0, self.cfg.num_layers).await,
            None => Ok(vec![]),
        }
    }

    /// Expert `l1`'s hidden rows for the layer's FFN input: la.h = the pre-activation, la.a = GELU of it.
    fn expert_hidden(&self, be: &mut B, ps: &Params<B::T>, l1: &Linear<usize>, la: &LayerActs<B::T>, d: usize) -> Result<()> {
        let rows = self.acts.b * self.acts.t;
        be.matmul(&la.h, 0, &la.xn2, 0, rows, &ps.p[l1.w], l1.b.map(|b| &ps.p[b]))?;
        be.activation(&la.a, &la.h, rows * d, EwOp::Gelu)
    }

    /// out (N, C) = the MoE FFN of the layer's FFN input `la.xn2`, its routing kept in the layer's
    /// MoE buffers and its load-balancing loss in `aux`.
    pub(crate) fn moe_forward(
        &self,
        be: &mut B,
        ps: &Params<B::T>,
        router: &Linear<usize>,
        experts: &[(Linear<usize>, Linear<usize>)],
        la: &LayerActs<B::T>,
        out: &B::T,
    ) -> Result<()> {
        let m = self.cfg.moe.as_ref().ok_or_else(|| TfError::Internal("MoE weights without a moe config".into()))?;
        let (shared, ml) = parts(&self.acts, la)?;
        let (rows, e, k, c) = (self.acts.b * self.acts.t, m.num_experts, m.top_k, self.cfg.d_model);
        be.matmul(&shared.logits, 0, &la.xn2, 0, rows, &ps.p[router.w], router.b.map(|b| &ps.p[b]))?;
        be.moe_router(&ml.probs, &ml.experts, &ml.weights, &shared.logits, rows, e, k)?;
        let capacity = moe_capacity_for(m.capacity_factor, rows, k, e);
        be.moe_capacity(&ml.gate, &ml.kept, &ml.experts, &ml.weights, rows, e, k, Some(capacity))?;
        be.moe_aux_loss(&shared.aux, ml.layer, &ml.probs, &ml.experts, rows, e, k)?;
        for (x, (l1, l2)) in experts.iter().enumerate() {
            self.expert_hidden(be, ps, l1, la, m.expert_dim)?;
            be.matmul(&ml.ys, x * rows * c, &la.a, 0, rows, &ps.p[l2.w], l2.b.map(|b| &ps.p[b]))?;
        }
        be.moe_combine(out, &ml.ys, &ml.gate, rows, e, c, rows)
    }

    /// With `acts.dres` = the gradient of the MoE FFN's output: `acts.dxn` = the gradient of its
    /// input (written), every expert's and the router's parameter gradients added.
    pub(crate) fn moe_backward(
        &self,
        be: &mut B,
        ps: &Params<B::T>,
        router: &Linear<usize>,
        experts: &[(Linear<usize>, Linear<usize>)],
        la: &LayerActs<B::T>,
    ) -> Result<()> {
        let m = self.cfg.moe.as_ref().ok_or_else(|| TfError::Internal("MoE weights without a moe config".into()))?;
        let a = &self.acts;
        let (shared, ml) = parts(a, la)?;
        let (rows, e, k, c) = (a.b * a.t, m.num_experts, m.top_k, self.cfg.d_model);
        let (p, g) = (|i: usize| &ps.p[i], |i: usize| &ps.g[i]);
        let gb = |b: Option<usize>| b.map(|i| &ps.g[i]);
        for (x, (l1, l2)) in experts.iter().enumerate() {
            // only the tokens x kept have a nonzero dy: the others add nothing to its gradients
            be.moe_combine_backward(&shared.dy, &shared.dgate, &a.dres, &ml.ys, &ml.gate, x, rows, e, c, rows)?;
            self.expert_hidden(be, ps, l1, la, m.expert_dim)?;
            be.matmul_backward(Some((&a.da, false)), g(l2.w), gb(l2.b), &shared.dy, &la.a, p(l2.w), rows)?;
            be.act_backward(&a.dh, &a.da, &la.h, rows * m.expert_dim, EwOp::Gelu)?;
            be.matmul_backward(Some((&a.dxn, x > 0)), g(l1.w), gb(l1.b), &a.dh, &la.xn2, p(l1.w), rows)?;
        }
        be.moe_router_backward(
            &shared.logits,
            &shared.dgate,
            &ml.probs,
            &ml.experts,
            &ml.weights,
            &ml.kept,
            rows,
            e,
            k,
            shared.aux_weight,
        )?;
        be.matmul_backward(Some((&a.dxn, !experts.is_empty())), g(router.w), gb(router.b), &shared.logits, &la.xn2, p(router.w), rows)
    }
}
