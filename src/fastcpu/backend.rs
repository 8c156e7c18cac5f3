//! `FastCpuBackend`: the model's CPU product path (the page's and the CLI's `cpu`), beside the
//! reference `CpuBackend` that stays the oracle. Same op semantics and the same host tensors
//! (`CpuTensor`, with the same guards); f32 kernels from this module for the ops that cost, the
//! reference's ops for the rest (rope, embedding, MoE routing, sampling: already f32 or tiny).

use std::cell::{Cell, Ref, RefCell};

use crate::cpu::guards::{attention_with, inplace_with, layernorm_with, rmsnorm_with};
use crate::error::{Result, TfError};
use crate::fastcpu::{act, attention, matmul, norm};
use crate::model::backend::tensor::need;
use crate::model::backend::{Backend, CpuBackend, CpuTensor};
use crate::ops::{AttnShape, EwOp, RopeShape, SampleParams};

/// A tensor of the fast backend: a `CpuTensor` (f32 values or u32 ids). A matrix used as a matmul
/// weight keeps its packed panels from its first use; a write to the tensor drops them.
pub struct FastTensor {
    pub host: CpuTensor,
    packed: RefCell<Option<matmul::Packed>>,
    /// the panels no longer hold the values (a training update): repacked, in their allocation, on next use
    stale: Cell<bool>,
}

impl FastTensor {
    fn new(host: CpuTensor) -> FastTensor {
        FastTensor { host, packed: RefCell::new(None), stale: Cell::new(false) }
    }
    /// Marks the packed panels stale (the values are about to change: a training update); the next
    /// matmul repacks them into the same allocation (no fresh pages every step).
    pub fn unpack(&self) {
        self.stale.set(true);
    }
    /// The packed panels of this (N, K) weight, made on first use and after an update.
    fn packed(&self) -> Result<Ref<'_, matmul::Packed>> {
        let stale = self.stale.replace(false);
        if stale || self.packed.borrow().is_none() {
            let (n, k) = match self.host.shape[..] {
                [n, k] => (n, k),
                _ => return Err(TfError::Shape { op: "matmul", msg: format!("W must be (N, K), got {:?}", self.host.shape) }),
            };
            let old = self.packed.borrow_mut().take().map(|p| p.data).unwrap_or_default();
            let p = matmul::Packed::new_in(old, &self.host.f32s("matmul")?, n, k)?;
            *self.packed.borrow_mut() = Some(p);
        }
        Ok(Ref::map(self.packed.borrow(), |p| p.as_ref().expect("packed just above")))
    }
}

/// The fast CPU backend; `threads`: where its large products run (`--threads`, matmul::Threads).
#[derive(Default, Clone, Debug)]
pub struct FastCpuBackend {
    pub threads: matmul::Threads,
}

impl Backend for FastCpuBackend {
    type T = FastTensor;
    fn kind(&self) -> &'static str {
        "cpu"
    }
    fn weight_copies(&self) -> crate::model::memory::WeightCopies {
        crate::model::memory::WeightCopies::Panels(matmul::NR)
    }
    fn tensor(&self, shape: &[usize], data: &[f32], label: &str) -> Result<FastTensor> {
        Ok(FastTensor::new(CpuTensor::from_f32(shape, data, label)?))
    }
    fn zeros(&self, shape: &[usize], label: &str) -> Result<FastTensor> {
        Ok(FastTensor::new(CpuTensor::zeros(shape, label)?))
    }
    fn zeros_u32(&self, shape: &[usize], label: &str) -> Result<FastTensor> {
        Ok(FastTensor::new(CpuTensor::zeros_u32(shape, label)?))
    }
    fn write_f32(&mut self, t: &FastTensor, offset: usize, data: &[f32]) -> Result<()> {
        t.host.write_f32(offset, data)?;
        *t.packed.borrow_mut() = None;
        Ok(())
    }
    fn write_u32(&mut self, t: &FastTensor, offset: usize, data: &[u32]) -> Result<()> {
        t.host.write_u32(offset, data)
    }
    fn matmul(
        &mut self,
        out: &FastTensor,
        out_off: usize,
        x: &FastTensor,
        x_off: usize,
        m: usize,
        w: &FastTensor,
        b: Option<&FastTensor>,
    ) -> Result<()> {
        let pw = w.packed()?;
        let (n, k) = (pw.n, pw.k);
        let xd = x.host.f32s("matmul")?;
        let bd = b.map(|b| b.host.f32s("matmul")).transpose()?;
        let mut od = out.host.f32s_mut("matmul")?;
        need("matmul", xd.len(), x_off + m * k, "x")?;
        need("matmul", od.len(), out_off + m * n, "out")?;
        matmul::matmul_on(&self.threads, &mut od[out_off..out_off + m * n], &xd[x_off..x_off + m * k], &pw, bd.as_deref(), m)
    }
    fn attention(
        &mut self,
        out: &FastTensor,
        probs: &FastTensor,
        q: &FastTensor,
        k: &FastTensor,
        v: &FastTensor,
        mask: Option<&FastTensor>,
        s: &AttnShape,
    ) -> Result<()> {
        attention_with(&out.host, &probs.host, &q.host, &k.host, &v.host, mask.map(|m| &m.host), s, attention::attention)
    }
    fn layernorm(&mut self, out: &FastTensor, x: &FastTensor, g: &FastTensor, b: &FastTensor, rows: usize, eps: f32) -> Result<()> {
        layernorm_with(&out.host, &x.host, &g.host, &b.host, rows, eps, norm::layernorm)
    }
    fn rmsnorm(&mut self, out: &FastTensor, x: &FastTensor, w: &FastTensor, rows: usize, eps: f32) -> Result<()> {
        rmsnorm_with(&out.host, &x.host, &w.host, rows, eps, norm::rmsnorm)
    }
    fn add_norm(
        &mut self,
        x: &FastTensor,
        y: &FastTensor,
        out: Option<&FastTensor>,
        w: &FastTensor,
        b: Option<&FastTensor>,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        // one pass per row for the add and the norm's statistics (norm::add_norm); same guards as the ops it fuses
        let op = "add_norm";
        let (wd, bd, yd) = (w.host.f32s(op)?, b.map(|b| b.host.f32s(op)).transpose()?, y.host.f32s(op)?);
        let c = wd.len();
        let n = rows * c;
        let mut xd = x.host.f32s_mut(op)?;
        let mut od = out.map(|o| o.host.f32s_mut(op)).transpose()?;
        need(op, xd.len().min(yd.len()), n, "x/y")?;
        if let Some(od) = &od {
            need(op, od.len(), n, "out")?;
        }
        if let Some(bd) = &bd {
            need(op, bd.len(), c, "beta")?;
        }
        norm::add_norm(&mut xd[..n], &yd[..n], od.as_deref_mut().map(|o| &mut o[..n]), &wd, bd.as_deref(), c, eps);
        Ok(())
    }
    fn inplace(&mut self, x: &FastTensor, y: Option<&FastTensor>, n: usize, op: EwOp) -> Result<()> {
        inplace_with(&x.host, y.map(|y| &y.host), n, op, act::inplace)
    }
    fn rope(&mut self, x: &FastTensor, table: &FastTensor, s: &RopeShape) -> Result<()> {
        CpuBackend.rope(&x.host, &table.host, s)
    }
    fn embedding(&mut self, out: &FastTensor, table: &FastTensor, ids: &FastTensor, t: usize, scale: f32) -> Result<()> {
        CpuBackend.embedding(&out.host, &table.host, &ids.host, t, scale)
    }
    fn add_rows(&mut self, x: &FastTensor, table: &FastTensor, t: usize, start: usize) -> Result<()> {
        let td = table.host.f32s("add_rows")?;
        let c = table.host.shape[1];
        let mut xd = x.host.f32s_mut("add_rows")?;
        need("add_rows", td.len(), (start + t) * c, "table")?;
        need("add_rows", xd.len(), t * c, "x")?;
        act::inplace(&mut xd[..t * c], Some(&td[start * c..(start + t) * c]), EwOp::Add);
        Ok(())
    }
    fn moe_router(
        &mut self,
        probs: &FastTensor,
        experts: &FastTensor,
        weights: &FastTensor,
        logits: &FastTensor,
        t: usize,
        e: usize,
        k: usize,
    ) -> Result<()> {
        CpuBackend.moe_router(&probs.host, &experts.host, &weights.host, &logits.host, t, e, k)
    }
    fn moe_capacity(
        &mut self,
        gate: &FastTensor,
        kept: &FastTensor,
        experts: &FastTensor,
        weights: &FastTensor,
        t: usize,
        e: usize,
        k: usize,
        capacity: Option<usize>,
    ) -> Result<()> {
        CpuBackend.moe_capacity(&gate.host, &kept.host, &experts.host, &weights.host, t, e, k, capacity)
    }
    fn moe_combine(
        &mut self,
        out: &FastTensor,
        ys: &FastTensor,
        gate: &FastTensor,
        t: usize,
        e: usize,
        c: usize,
        ys_rows: usize,
    ) -> Result<()> {
        CpuBackend.moe_combine(&out.host, &ys.host, &gate.host, t, e, c, ys_rows)
    }
    fn sample(&mut self, out: &FastTensor, logits: &FastTensor, row: usize, p: &SampleParams, u: f32) -> Result<()> {
        CpuBackend.sample(&out.host, &logits.host, row, p, u)
    }
    fn submit(&mut self) -> Result<()> {
        Ok(())
    }
    async fn read_f32(&mut self, t: &FastTensor, offset: usize, count: usize) -> Result<Vec<f32>> {
        t.host.read_f32(offset, count)
    }
    async fn read_u32(&mut self, t: &FastTensor, offset: usize, count: usize) -> Result<Vec<u32>> {
        t.host.read_u32(offset, count)
    }
    async fn read_batch(&mut self, reqs: &[(&FastTensor, usize, usize)]) -> Result<Vec<Vec<u32>>> {
        reqs.iter().map(|(t, off, n)| t.host.read_bits(*off, *n)).collect()
    }
}
