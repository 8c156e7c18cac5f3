//! The feed-forward networks: their weights (`Ffn`: dense with its activation, SwiGLU, or a mixture
//! of experts), their loaders, and their forward.

use crate::error::{Result, TfError};
use crate::model::backend::Backend;
use crate::model::config::MoeConfig;
use crate::model::forward::weights::{linear, Linear, Sink, VarBuilder};
use crate::model::forward::Model;
use crate::model::map_kind::Stack;
use crate::model::state::Scratch;
use crate::ops::{moe_capacity_for, EwOp};

/// The feed-forward half of a block.
pub enum Ffn<T> {
    /// linear2(act(linear1(x))): two dense matrices and the activation between them (the seed's
    /// ReLU, or GPT-2's GELU-tanh)
    Dense { l1: Linear<T>, l2: Linear<T>, act: EwOp },
    /// w2(silu(w1 x) * w3 x)
    SwiGlu { w1: Linear<T>, w2: Linear<T>, w3: Linear<T> },
    /// router -> softmax -> top-k; experts are Linear -> GELU -> Linear
    Moe { router: Linear<T>, experts: Vec<(Linear<T>, Linear<T>)> },
}

/// Seed 000's FeedForward: linear1 (H, C), `act`, linear2 (C, H).
pub(super) fn dense_ffn<S: Sink>(mut vb: VarBuilder<S>, c: usize, hidden: usize, act: EwOp) -> Result<Ffn<S::T>> {
    Ok(Ffn::Dense { l1: linear(vb.pp("linear1"), hidden, c, true)?, l2: linear(vb.pp("linear2"), c, hidden, true)?, act })
}

/// Seed 000's MoE: `router` (E, C), and per expert nn.Sequential(Linear, GELU, Linear) (indices 0
/// and 2): (expert_dim, C), (C, expert_dim).
pub(super) fn moe_ffn<S: Sink>(mut vb: VarBuilder<S>, c: usize, m: &MoeConfig) -> Result<Ffn<S::T>> {
    let router = linear(vb.pp("router"), m.num_experts, c, true)?;
    let mut experts = Vec::with_capacity(m.num_experts);
    for e in 0..m.num_experts {
        let mut x = vb.pp(format_args!("experts.{e}"));
        experts.push((linear(x.pp(0), m.expert_dim, c, true)?, linear(x.pp(2), c, m.expert_dim, true)?));
    }
    Ok(Ffn::Moe { router, experts })
}

/// Llama's FeedForward: w1 and w3 (H, C), w2 (C, H), no biases.
pub(super) fn swiglu_ffn<S: Sink>(mut vb: VarBuilder<S>, c: usize, hidden: usize) -> Result<Ffn<S::T>> {
    Ok(Ffn::SwiGlu {
        w1: linear(vb.pp("w1"), hidden, c, false)?,
        w2: linear(vb.pp("w2"), c, hidden, false)?,
        w3: linear(vb.pp("w3"), hidden, c, false)?,
    })
}

impl<B: Backend> Model<B> {
    /// scratch.tmp = FFN(input) for T rows of layer `at`.
    pub(super) fn ffn(
        &self,
        backend: &mut B,
        at: (Stack, usize),
        f: &Ffn<B::T>,
        scratch: &Scratch<B::T>,
        input: &B::T,
        t: usize,
    ) -> Result<()> {
        match f {
            Ffn::Dense { l1, l2, act } => {
                // h = act(x W_1^T + b_1) (ReLU, or GPT-2's GELU-tanh), the activation in the matmul's epilogue
                backend.matmul_act(&scratch.h, input, t, &l1.w, l1.b.as_ref(), self.cfg.d_ff, *act)?;
                backend.matmul(&scratch.tmp, 0, &scratch.h, 0, t, &l2.w, l2.b.as_ref())
            }
            Ffn::SwiGlu { w1, w2, w3 } => {
                let hidden = self.cfg.llama_hidden_dim();
                let h2 = scratch.h2.as_ref().ok_or_else(|| TfError::Internal("SwiGLU buffers missing".into()))?;
                // h = silu(x W_1^T) * (x W_3^T): gate and up in one pass where the backend can
                backend.matmul_swiglu(&scratch.h, h2, input, t, &w1.w, &w3.w, hidden)?;
                backend.matmul(&scratch.tmp, 0, &scratch.h, 0, t, &w2.w, None)
            }
            Ffn::Moe { router, experts } => {
                let m = self.cfg.moe.as_ref().ok_or_else(|| TfError::Internal("MoE weights without a moe config".into()))?;
                let (e, k, c, s) = (m.num_experts, m.top_k, self.cfg.d_model, self.state.plan.context);
                let (router_logits, gate, expert_out) = (scratch.router_logits.as_ref(), scratch.gate.as_ref(), scratch.ys.as_ref());
                let (Some(router_logits), Some(gate), Some(expert_out), Some(moe_state)) =
                    (router_logits, gate, expert_out, self.layer_state(at)?.moe.as_ref())
                else {
                    return Err(TfError::Internal("MoE buffers missing".into()));
                };
                // router: softmax(x W_r^T + b_r), top-k, renormalised; capacity in token order
                backend.matmul(router_logits, 0, input, 0, t, &router.w, router.b.as_ref())?;
                self.hook_router(backend, at, router_logits, t, e)?; // experts removed from routing (analysis::hooks)
                backend.moe_router(&moe_state.probs, &moe_state.experts, &moe_state.weights, router_logits, t, e, k)?;
                backend.moe_capacity(
                    gate,
                    &moe_state.kept,
                    &moe_state.experts,
                    &moe_state.weights,
                    t,
                    e,
                    k,
                    Some(moe_capacity_for(m.capacity_factor, t, k, e)),
                )?;
                // every expert on every token (dense: tiny models are bound by dispatches, not FLOPs)
                for (i, (l1, l2)) in experts.iter().enumerate() {
                    backend.matmul_act(&scratch.h, input, t, &l1.w, l1.b.as_ref(), m.expert_dim, EwOp::Gelu)?;
                    backend.matmul(expert_out, i * s * c, &scratch.h, 0, t, &l2.w, l2.b.as_ref())?;
                }
                backend.moe_combine(&scratch.tmp, expert_out, gate, t, e, c, s)
            }
        }
    }
}
