//! `Train` for `GpuBackend`: the training ops recorded as WGSL dispatches in the same submission
//! as the forward, each delegating to its kernel family (matmul, norm, act, rope, embed,
//! attention, moe; loss and optim for the training-only ops). Every kernel owns its outputs and sums
//! in a fixed order, so a run repeats bit for bit. The scratch that two-pass backwards share (a
//! norm's row statistics, the attention's row sums, the router's assignment counts) is one buffer
//! kept by the backend.

use crate::error::{Result, TfError};
use crate::gpu::backend::GpuBackend;
use crate::gpu::norm::NormBackward;
use crate::gpu::{self, GpuTensor, Recorder};
use crate::ops::{EwOp, RopeShape};
use crate::train::ops::{AdamStep, BatchAttn, Train};

impl GpuBackend {
    /// The recorder and the scratch buffer, grown to at least `n` values first (after flushing the
    /// recorded work that binds the old one).
    fn with_scratch(&mut self, n: usize) -> Result<(&mut Recorder, &GpuTensor)> {
        if self.scratch.as_ref().is_none_or(|s| s.len() < n) {
            self.rec.flush();
            let want = n.checked_next_power_of_two().ok_or_else(|| TfError::Limit(format!("a scratch of {n} values")))?;
            self.scratch = Some(self.gpu.zeros(&[want.max(64)], "training scratch")?);
        }
        let s = self.scratch.as_ref().ok_or_else(|| TfError::Internal("the training scratch was not made".into()))?;
        Ok((&mut self.rec, s))
    }
}

impl Train for GpuBackend {
    fn attention_batch(
        &mut self,
        out: &GpuTensor,
        probs: &GpuTensor,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        keys: Option<&GpuTensor>,
        s: &BatchAttn,
    ) -> Result<()> {
        gpu::attention::attention_batch(&mut self.rec, out, probs, [q, k, v], keys, s)
    }
    fn attention_backward(
        &mut self,
        dq: &GpuTensor,
        dk: &GpuTensor,
        dv: &GpuTensor,
        dout: &GpuTensor,
        probs: &GpuTensor,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        s: &BatchAttn,
    ) -> Result<()> {
        let (rec, dots) = self.with_scratch(s.b * s.nh * s.tq)?;
        gpu::attention::attention_backward(rec, [dq, dk, dv], dout, probs, [q, k, v], dots, s)
    }
    fn add_positions(&mut self, x: &GpuTensor, table: &GpuTensor, rows: usize, t: usize) -> Result<()> {
        gpu::embed::add_positions(&mut self.rec, x, table, rows, t)
    }
    fn positions_backward(&mut self, dtable: &GpuTensor, dx: &GpuTensor, rows: usize, t: usize) -> Result<()> {
        gpu::embed::positions_backward(&mut self.rec, dtable, dx, rows, t)
    }
    fn matmul_backward(
        &mut self,
        dx: Option<(&GpuTensor, bool)>,
        dw: &GpuTensor,
        db: Option<&GpuTensor>,
        dy: &GpuTensor,
        x: &GpuTensor,
        w: &GpuTensor,
        m: usize,
    ) -> Result<()> {
        gpu::matmul::matmul_backward(&mut self.rec, dx, (dw, db), dy, x, w, m)
    }
    fn layernorm_backward(
        &mut self,
        dx: &GpuTensor,
        dg: &GpuTensor,
        db: &GpuTensor,
        dy: &GpuTensor,
        x: &GpuTensor,
        g: &GpuTensor,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let kind = self.norm_kind_for(rows);
        let (rec, stats) = self.with_scratch(2 * rows)?;
        gpu::norm::norm_backward(rec, &NormBackward { dx, dg, db: Some(db), dy, x, g, stats }, rows, eps, kind)
    }
    fn rmsnorm_backward(
        &mut self,
        dx: &GpuTensor,
        dw: &GpuTensor,
        dy: &GpuTensor,
        x: &GpuTensor,
        w: &GpuTensor,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let kind = self.norm_kind_for(rows);
        let (rec, stats) = self.with_scratch(rows)?;
        gpu::norm::norm_backward(rec, &NormBackward { dx, dg: dw, db: None, dy, x, g: w, stats }, rows, eps, kind)
    }
    fn act_backward(&mut self, dx: &GpuTensor, dy: &GpuTensor, h: &GpuTensor, n: usize, op: EwOp) -> Result<()> {
        gpu::act::act_backward(&mut self.rec, dx, dy, h, n, op)
    }
    fn swiglu_backward(
        &mut self,
        dgate: &GpuTensor,
        dup: &GpuTensor,
        dy: &GpuTensor,
        gate: &GpuTensor,
        up: &GpuTensor,
        n: usize,
    ) -> Result<()> {
        gpu::act::swiglu_backward(&mut self.rec, dgate, dup, dy, gate, up, n)
    }
    fn rope_backward(&mut self, dx: &GpuTensor, table: &GpuTensor, s: &RopeShape) -> Result<()> {
        gpu::rope::rope_backward(&mut self.rec, dx, table, s)
    }
    fn embedding_backward(&mut self, dtable: &GpuTensor, dout: &GpuTensor, ids: &GpuTensor, rows: usize, scale: f32) -> Result<()> {
        gpu::embed::embedding_backward(&mut self.rec, dtable, dout, ids, rows, scale)
    }
    fn cross_entropy(
        &mut self,
        losses: &GpuTensor,
        logits: &GpuTensor,
        targets: &GpuTensor,
        rows: usize,
        scale: f32,
        ignore: Option<u32>,
    ) -> Result<()> {
        gpu::loss::cross_entropy(&mut self.rec, losses, logits, targets, rows, scale, ignore)
    }
    fn sum_squares(&mut self, norms: &GpuTensor, part: usize, g: &GpuTensor, n: usize) -> Result<()> {
        gpu::optim::sum_squares(&mut self.rec, norms, part, g, n)
    }
    fn adamw(
        &mut self,
        p: &GpuTensor,
        g: &GpuTensor,
        m: &GpuTensor,
        v: &GpuTensor,
        norms: &GpuTensor,
        n: usize,
        a: &AdamStep,
    ) -> Result<()> {
        gpu::optim::adamw(&mut self.rec, p, g, [m, v], norms, n, a)
    }
    fn moe_combine_backward(
        &mut self,
        dy: &GpuTensor,
        dgate: &GpuTensor,
        dout: &GpuTensor,
        ys: &GpuTensor,
        gate: &GpuTensor,
        x: usize,
        t: usize,
        e: usize,
        c: usize,
        ys_rows: usize,
    ) -> Result<()> {
        gpu::moe::moe_combine_backward(&mut self.rec, [dy, dgate], dout, ys, gate, x, (t, e, c, ys_rows))
    }
    fn moe_router_backward(
        &mut self,
        dlogits: &GpuTensor,
        dgate: &GpuTensor,
        probs: &GpuTensor,
        experts: &GpuTensor,
        weights: &GpuTensor,
        kept: &GpuTensor,
        t: usize,
        e: usize,
        k: usize,
        aux: f32,
    ) -> Result<()> {
        let (rec, counts) = self.with_scratch(e)?;
        gpu::moe::moe_router_backward(rec, dlogits, dgate, [probs, experts, weights, kept], counts, (t, e, k), aux)
    }
    fn moe_aux_loss(
        &mut self,
        out: &GpuTensor,
        slot: usize,
        probs: &GpuTensor,
        experts: &GpuTensor,
        t: usize,
        e: usize,
        k: usize,
    ) -> Result<()> {
        gpu::moe::moe_aux_loss(&mut self.rec, out, slot, probs, experts, (t, e, k))
    }
    fn guard_finite(&mut self, norms: &GpuTensor, parts: usize, step: u32) -> Result<()> {
        gpu::optim::guard_finite(&mut self.rec, norms, parts, step)
    }
    fn fill_zero(&mut self, x: &GpuTensor, n: usize) -> Result<()> {
        gpu::optim::fill_zero(&mut self.rec, x, n)
    }
    fn copy(&mut self, dst: &GpuTensor, src: &GpuTensor, n: usize) -> Result<()> {
        gpu::optim::copy(&mut self.rec, dst, src, n)
    }
}
