//! `Train` for the fast CPU backend: the matmul backward on the packed f32 GEMM of `matmul.rs`
//! (dX = dY W and dW = dY^T X as products over transposed copies, on the backend's threads), the
//! other training ops (the MoE routing's included) on the reference loops over the tensors' host
//! data (`cpu::train::host`).

use crate::cpu::train::host;
use crate::error::Result;
use crate::fastcpu::matmul::{self, Packed};
use crate::fastcpu::{FastCpuBackend, FastTensor};
use crate::ops::{EwOp, RopeShape};
use crate::train::ops::{AdamStep, BatchAttn, Train};

/// a (rows, cols) row-major, transposed.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// The written parameter: a write drops a fast tensor's packed panels.
fn touched(t: &FastTensor) -> &FastTensor {
    t.unpack();
    t
}

impl Train for FastCpuBackend {
    fn attention_batch(
        &mut self,
        out: &FastTensor,
        probs: &FastTensor,
        q: &FastTensor,
        k: &FastTensor,
        v: &FastTensor,
        keys: Option<&FastTensor>,
        s: &BatchAttn,
    ) -> Result<()> {
        host::attention_batch(&out.host, &probs.host, &q.host, &k.host, &v.host, keys.map(|m| &m.host), s)
    }
    fn attention_backward(
        &mut self,
        dq: &FastTensor,
        dk: &FastTensor,
        dv: &FastTensor,
        dout: &FastTensor,
        probs: &FastTensor,
        q: &FastTensor,
        k: &FastTensor,
        v: &FastTensor,
        s: &BatchAttn,
    ) -> Result<()> {
        host::attention_backward(&dq.host, &dk.host, &dv.host, &dout.host, &probs.host, &q.host, &k.host, &v.host, s)
    }
    fn add_positions(&mut self, x: &FastTensor, table: &FastTensor, rows: usize, t: usize) -> Result<()> {
        host::add_positions(&x.host, &table.host, rows, t)
    }
    fn positions_backward(&mut self, dtable: &FastTensor, dx: &FastTensor, rows: usize, t: usize) -> Result<()> {
        host::positions_backward(&dtable.host, &dx.host, rows, t)
    }
    fn matmul_backward(
        &mut self,
        dx: Option<(&FastTensor, bool)>,
        dw: &FastTensor,
        db: Option<&FastTensor>,
        dy: &FastTensor,
        x: &FastTensor,
        w: &FastTensor,
        m: usize,
    ) -> Result<()> {
        let op = "matmul_backward";
        let (n, k) = host::matmul_dims(&w.host, &dy.host, &x.host, m)?;
        let (dyd, xd) = (dy.host.f32s(op)?, x.host.f32s(op)?);
        let (dyd, xd) = (&dyd[..m * n], &xd[..m * k]);
        if let Some((dxt, acc)) = dx {
            let wt = Packed::new(&transpose(&w.host.f32s(op)?, n, k), k, n)?;
            let mut d = dxt.host.f32s_mut(op)?;
            crate::model::backend::tensor::need(op, d.len(), m * k, "dx")?;
            if acc {
                let mut tmp = vec![0f32; m * k];
                matmul::matmul_on(&self.threads, &mut tmp, dyd, &wt, None, m)?;
                for (o, t) in d[..m * k].iter_mut().zip(&tmp) {
                    *o += t;
                }
            } else {
                matmul::matmul_on(&self.threads, &mut d[..m * k], dyd, &wt, None, m)?;
            }
        }
        let xt = Packed::new(&transpose(xd, m, k), k, m)?;
        let dyt = transpose(dyd, m, n);
        let mut tmp = vec![0f32; n * k];
        matmul::matmul_on(&self.threads, &mut tmp, &dyt, &xt, None, n)?;
        let mut dwd = touched(dw).host.f32s_mut(op)?;
        crate::model::backend::tensor::need(op, dwd.len(), n * k, "dw")?;
        for (o, t) in dwd[..n * k].iter_mut().zip(&tmp) {
            *o += t;
        }
        if let Some(db) = db {
            let mut bd = db.host.f32s_mut(op)?;
            crate::model::backend::tensor::need(op, bd.len(), n, "db")?;
            for row in dyd.chunks(n) {
                for (o, v) in bd[..n].iter_mut().zip(row) {
                    *o += v;
                }
            }
        }
        Ok(())
    }
    fn layernorm_backward(
        &mut self,
        dx: &FastTensor,
        dg: &FastTensor,
        db: &FastTensor,
        dy: &FastTensor,
        x: &FastTensor,
        g: &FastTensor,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        host::layernorm_backward(&dx.host, &dg.host, &db.host, &dy.host, &x.host, &g.host, rows, eps)
    }
    fn rmsnorm_backward(
        &mut self,
        dx: &FastTensor,
        dw: &FastTensor,
        dy: &FastTensor,
        x: &FastTensor,
        w: &FastTensor,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        host::rmsnorm_backward(&dx.host, &dw.host, &dy.host, &x.host, &w.host, rows, eps)
    }
    fn act_backward(&mut self, dx: &FastTensor, dy: &FastTensor, h: &FastTensor, n: usize, op: EwOp) -> Result<()> {
        host::act_backward(&dx.host, &dy.host, &h.host, n, op)
    }
    fn swiglu_backward(
        &mut self,
        dgate: &FastTensor,
        dup: &FastTensor,
        dy: &FastTensor,
        gate: &FastTensor,
        up: &FastTensor,
        n: usize,
    ) -> Result<()> {
        host::swiglu_backward(&dgate.host, &dup.host, &dy.host, &gate.host, &up.host, n)
    }
    fn rope_backward(&mut self, dx: &FastTensor, table: &FastTensor, s: &RopeShape) -> Result<()> {
        host::rope_backward(&dx.host, &table.host, s)
    }
    fn embedding_backward(&mut self, dtable: &FastTensor, dout: &FastTensor, ids: &FastTensor, rows: usize, scale: f32) -> Result<()> {
        host::embedding_backward(&touched(dtable).host, &dout.host, &ids.host, rows, scale)
    }
    fn cross_entropy(
        &mut self,
        losses: &FastTensor,
        logits: &FastTensor,
        targets: &FastTensor,
        rows: usize,
        scale: f32,
        ignore: Option<u32>,
    ) -> Result<()> {
        host::cross_entropy(&losses.host, &logits.host, &targets.host, rows, scale, ignore)
    }
    fn sum_squares(&mut self, norms: &FastTensor, part: usize, g: &FastTensor, n: usize) -> Result<()> {
        host::sum_squares(&norms.host, part, &g.host, n)
    }
    fn adamw(
        &mut self,
        p: &FastTensor,
        g: &FastTensor,
        m: &FastTensor,
        v: &FastTensor,
        norms: &FastTensor,
        n: usize,
        a: &AdamStep,
    ) -> Result<()> {
        host::adamw(&touched(p).host, &g.host, &m.host, &v.host, &norms.host, n, a)
    }
    fn moe_combine_backward(
        &mut self,
        dy: &FastTensor,
        dgate: &FastTensor,
        dout: &FastTensor,
        ys: &FastTensor,
        gate: &FastTensor,
        x: usize,
        t: usize,
        e: usize,
        c: usize,
        ys_rows: usize,
    ) -> Result<()> {
        host::moe_combine_backward(&dy.host, &dgate.host, &dout.host, &ys.host, &gate.host, x, (t, e, c, ys_rows))
    }
    fn moe_router_backward(
        &mut self,
        dlogits: &FastTensor,
        dgate: &FastTensor,
        probs: &FastTensor,
        experts: &FastTensor,
        weights: &FastTensor,
        kept: &FastTensor,
        t: usize,
        e: usize,
        k: usize,
        aux: f32,
    ) -> Result<()> {
        let routing = (&probs.host, &experts.host, &weights.host, &kept.host);
        host::moe_router_backward(&dlogits.host, &dgate.host, routing, (t, e, k), aux)
    }
    fn moe_aux_loss(
        &mut self,
        out: &FastTensor,
        slot: usize,
        probs: &FastTensor,
        experts: &FastTensor,
        t: usize,
        e: usize,
        k: usize,
    ) -> Result<()> {
        host::moe_aux_loss(&out.host, slot, &probs.host, &experts.host, t, e, k)
    }
    fn guard_finite(&mut self, norms: &FastTensor, parts: usize, step: u32) -> Result<()> {
        host::guard_finite(&norms.host, parts, step)
    }
    fn fill_zero(&mut self, x: &FastTensor, n: usize) -> Result<()> {
        host::fill_zero(&touched(x).host, n)
    }
    fn copy(&mut self, dst: &FastTensor, src: &FastTensor, n: usize) -> Result<()> {
        host::copy(&touched(dst).host, &src.host, n)
    }
}
