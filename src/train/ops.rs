//! The training ops: what a backend adds to its forward (`Backend`) so that it can train. Each
//! kernel family gains its backward here (matmul, norm, act, attention, rope, embedding), plus the
//! fused softmax + cross-entropy and the optimizer's two ops (the gradient's squared norm and the
//! AdamW update). The reference is `crate::cpu::backward` (f64 accumulation, the oracle); the fast
//! CPU backend implements it in `crate::fastcpu::backward`.
//!
//! Conventions, so that every backend can own each output and sum in a fixed order (no float
//! atomics; the same seed gives the same bits):
//! - a parameter's gradient (`dw`, `db`, `dg`, `dtable`) is *added to* (`+=`): the step's
//!   gradients start at zero and collect every use (a tied embedding, micro-batches);
//! - an activation's gradient is *written* (`=`), except where the op says `+=` (a norm's `dx`
//!   adds to the residual stream's gradient, and `matmul_backward`'s `dx` when `acc`);
//! - batched ops take B sequences of T rows stacked as B*T rows.

use crate::error::Result;
use crate::model::backend::Backend;
use crate::ops::{EwOp, RopeShape};

/// The shape of a batched attention: B sequences, Tq query rows and Tk key rows each; q (B*Tq,
/// NH*HS), k and v (B*Tk, NKV*HS), out (B*Tq, NH*HS), probs (B, NH, Tq, Tk). Query i of sequence
/// b may see key j iff `keys[b, j]` is 1 (when a key mask is given) and, when `causal`, j <= i.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchAttn {
    pub b: usize,
    pub tq: usize,
    pub tk: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hs: usize,
    pub causal: bool,
    pub scale: f32,
}

impl BatchAttn {
    pub fn new(b: usize, tq: usize, tk: usize, (nh, nkv, hs): (usize, usize, usize), causal: bool) -> BatchAttn {
        BatchAttn { b, tq, tk, nh, nkv, hs, causal, scale: 1.0 / (hs as f32).sqrt() }
    }
    /// The values each tensor must hold: (q and out, k and v, probs, key mask).
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.b * self.tq * self.nh * self.hs,
            self.b * self.tk * self.nkv * self.hs,
            self.b * self.nh * self.tq * self.tk,
            self.b * self.tk,
        )
    }
}

/// One AdamW update, as torch.optim.AdamW does it (bias-corrected moments, decoupled weight
/// decay), after scaling the gradient by the global-norm clip.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 0 for tensors of fewer than 2 dimensions (norm gains, biases)
    pub weight_decay: f32,
    /// the optimizer step, counted from 1 (bias correction 1 - beta^step)
    pub step: u32,
    /// the clip threshold on the global gradient norm (None: no clipping)
    pub clip: Option<f32>,
    /// how many partial squared norms `norms` holds (their sum is the global norm squared)
    pub parts: usize,
}

#[allow(clippy::too_many_arguments, async_fn_in_trait)]
pub trait Train: Backend {
    /// Batched masked attention forward: see [`BatchAttn`]. keys (B, Tk) 1 / 0, or None for all
    /// keys. A query with no key left gives zero probabilities and a zero output.
    fn attention_batch(
        &mut self,
        out: &Self::T,
        probs: &Self::T,
        q: &Self::T,
        k: &Self::T,
        v: &Self::T,
        keys: Option<&Self::T>,
        s: &BatchAttn,
    ) -> Result<()>;
    /// The attention's backward from the forward's probabilities: dq (=), dk and dv (=; a
    /// key/value head sums the gradients of its NH/NKV query heads).
    fn attention_backward(
        &mut self,
        dq: &Self::T,
        dk: &Self::T,
        dv: &Self::T,
        dout: &Self::T,
        probs: &Self::T,
        q: &Self::T,
        k: &Self::T,
        v: &Self::T,
        s: &BatchAttn,
    ) -> Result<()>;
    /// x[r, :] += table[r % t, :] for r < rows: positions added to B stacked sequences of T.
    fn add_positions(&mut self, x: &Self::T, table: &Self::T, rows: usize, t: usize) -> Result<()>;
    /// dtable[j, :] += sum over r with r % t == j of dx[r, :] (in order of r).
    fn positions_backward(&mut self, dtable: &Self::T, dx: &Self::T, rows: usize, t: usize) -> Result<()>;
    /// For the M rows of `matmul(out = x @ W^T + b)`, W (N, K): dx (M, K) = dy @ W (written, or
    /// added when `acc`), dw (N, K) += dy^T @ x, db (N,) += the column sums of dy.
    fn matmul_backward(
        &mut self,
        dx: Option<(&Self::T, bool)>,
        dw: &Self::T,
        db: Option<&Self::T>,
        dy: &Self::T,
        x: &Self::T,
        w: &Self::T,
        m: usize,
    ) -> Result<()>;
    /// LayerNorm's backward from its input x: dx += , dg += , db += . x, dy (rows, C).
    fn layernorm_backward(
        &mut self,
        dx: &Self::T,
        dg: &Self::T,
        db: &Self::T,
        dy: &Self::T,
        x: &Self::T,
        g: &Self::T,
        rows: usize,
        eps: f32,
    ) -> Result<()>;
    /// RMSNorm's backward from its input x: dx += , dw += .
    fn rmsnorm_backward(&mut self, dx: &Self::T, dw: &Self::T, dy: &Self::T, x: &Self::T, w: &Self::T, rows: usize, eps: f32)
        -> Result<()>;
    /// dx[..n] = dy * act'(h) for an activation (ReLU, GELU, GELU-tanh) of the pre-activation h.
    fn act_backward(&mut self, dx: &Self::T, dy: &Self::T, h: &Self::T, n: usize, op: EwOp) -> Result<()>;
    /// SwiGLU's product y = silu(gate) * up: dgate (=), dup (=).
    fn swiglu_backward(&mut self, dgate: &Self::T, dup: &Self::T, dy: &Self::T, gate: &Self::T, up: &Self::T, n: usize) -> Result<()>;
    /// RoPE's backward in place: the inverse rotation of `rope` with the same shape.
    fn rope_backward(&mut self, dx: &Self::T, table: &Self::T, s: &RopeShape) -> Result<()>;
    /// dtable[ids[r], :] += dout[r, :] * scale for r < rows (each row of the table sums its tokens in order).
    fn embedding_backward(&mut self, dtable: &Self::T, dout: &Self::T, ids: &Self::T, rows: usize, scale: f32) -> Result<()>;
    /// Softmax + cross-entropy per row, fused: losses[r] = -log softmax(logits[r])[targets[r]], and
    /// logits[r] is replaced by its gradient scale * (softmax - onehot). A row whose target is
    /// `ignore` gets loss 0 and gradient 0. logits (rows, V), targets (rows,) u32, losses (rows,).
    fn cross_entropy(
        &mut self,
        losses: &Self::T,
        logits: &Self::T,
        targets: &Self::T,
        rows: usize,
        scale: f32,
        ignore: Option<u32>,
    ) -> Result<()>;
    /// norms[part] = the sum of g[..n]^2 (a partial of the global gradient norm).
    fn sum_squares(&mut self, norms: &Self::T, part: usize, g: &Self::T, n: usize) -> Result<()>;
    /// The halt guard of an optimizer step: if `norms[parts]` is 0 and the global norm (the sum of
    /// `norms[..parts]`) is not finite, `norms[parts] = step` and `norms[parts + 1]` = the first
    /// part that is not finite (`parts` when every part is finite and only their sum overflows).
    /// Once set, the slot stays: every later `adamw` is skipped, so the parameters stay those
    /// before the first bad step, and a step that reads nothing back still stops the run at the
    /// next read.
    fn guard_finite(&mut self, norms: &Self::T, parts: usize, step: u32) -> Result<()>;
    /// The AdamW update of p[..n] from g (scaled by min(1, clip / (norm + 1e-6)), the norm the
    /// square root of the sum of `norms[..parts]`), moments m and v updated in place; nothing
    /// changes when the halt slot `norms[parts]` is not 0 (see `guard_finite`).
    fn adamw(&mut self, p: &Self::T, g: &Self::T, m: &Self::T, v: &Self::T, norms: &Self::T, n: usize, a: &AdamStep) -> Result<()>;
    /// The backward of `moe_combine` (out (T, C) = sum over e of gate[t, e] * ys[e, t, :]) for
    /// expert `x`: dy (T, C) = gate[t, x] * dout[t, :] (=; zero on the tokens x did not keep), and
    /// column x of dgate (T, E): dgate[t, x] = dout[t, :] . ys[x, t, :] (=; the other columns are
    /// left as they are). ys (E, ys_rows, C).
    fn moe_combine_backward(
        &mut self,
        dy: &Self::T,
        dgate: &Self::T,
        dout: &Self::T,
        ys: &Self::T,
        gate: &Self::T,
        x: usize,
        t: usize,
        e: usize,
        c: usize,
        ys_rows: usize,
    ) -> Result<()>;
    /// The backward of `moe_router` + `moe_capacity` to the router logits (T, E), written. Token t's
    /// chosen experts experts[t, r] (T, K) carry weights w_r = p_r / S with p_r = probs[t,
    /// experts[t, r]] and S = the sum of its K p_r; a kept slot (kept[t, r] = 1) receives dw_r =
    /// dgate[t, experts[t, r]], a dropped one 0. So dprobs[t, experts[t, r]] = (dw_r - sum_j dw_j
    /// w_j) / S (w_j from `weights`), 0 on the experts not chosen; plus the load-balancing term
    /// `aux` * E * f_i / T on every expert i, where f_i = (assignments to i in `experts`, before
    /// capacity) / (T K): `aux` is the weight of `moe_aux_loss` in the objective. Then the softmax:
    /// dlogits[t, i] = p_i (dprobs[t, i] - sum_j p_j dprobs[t, j]). probs, dgate (T, E); weights
    /// (T, K); experts, kept (T, K) u32.
    fn moe_router_backward(
        &mut self,
        dlogits: &Self::T,
        dgate: &Self::T,
        probs: &Self::T,
        experts: &Self::T,
        weights: &Self::T,
        kept: &Self::T,
        t: usize,
        e: usize,
        k: usize,
        aux: f32,
    ) -> Result<()>;
    /// The Switch load-balancing loss of one router over T tokens: out[slot] = E * sum over i of
    /// f_i * P_i, with f_i = (assignments to expert i in experts (T, K) u32, before capacity) /
    /// (T K) and P_i = the mean over tokens of probs[t, i] (T, E).
    fn moe_aux_loss(&mut self, out: &Self::T, slot: usize, probs: &Self::T, experts: &Self::T, t: usize, e: usize, k: usize) -> Result<()>;
    /// x[..n] = 0.
    fn fill_zero(&mut self, x: &Self::T, n: usize) -> Result<()>;
    /// dst[..n] = src[..n].
    fn copy(&mut self, dst: &Self::T, src: &Self::T, n: usize) -> Result<()>;
    /// out[..n] = op(x[..n]) for an activation (ReLU, GELU, GELU-tanh, SiLU), x kept (the FFN's
    /// pre-activation, which the backward reads). The default is `copy`, then `inplace`; the fast
    /// CPU backend does it in one pass.
    fn activation(&mut self, out: &Self::T, x: &Self::T, n: usize, op: EwOp) -> Result<()> {
        self.copy(out, x, n)?;
        self.inplace(out, None, n, op)
    }
}
