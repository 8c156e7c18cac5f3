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
use crate::model::checkpoint::FloatDtype;
use crate::model::forward::weights::Role;
use crate::ops::{AttnShape, EwOp, RopeShape, SampleParams};

/// A tensor of the fast backend: a `CpuTensor` (f32 values or u32 ids). A matrix used as a matmul
/// weight keeps its packed panels from its first use; a write to the tensor drops them.
///
/// A model's matmul weights (`Backend::weight`, roles Matmul, Head and the tied embedding) are packed
/// at load and kept *only* as panels, f32 or the file's 16-bit (`matmul::Packed16`): no row-major
/// copy beside them (the weights' bytes once, not twice). What reads such a weight as rows gets them
/// from the panels: the tied embedding's gather reads its rows out of the head's panels
/// ([`matmul::Weight::row_into`]); anything else (a training update, a read) unpacks the rows once
/// into `host` ([`FastTensor::host`]), after which the tensor is an ordinary one (its panels repacked,
/// f32, after a write).
pub struct FastTensor {
    host: CpuTensor,
    packed: RefCell<Option<Panels>>,
    /// the panels no longer hold the values (a training update): repacked, in their allocation, on next use
    stale: Cell<bool>,
    /// the values live only in `packed` (a weight packed at load): `host` is unfilled until asked for
    only_panels: Cell<bool>,
}

/// A weight's packed panels.
enum Panels {
    F32(matmul::Packed),
    Half(matmul::Packed16),
}

impl Panels {
    fn weight(&self) -> matmul::Weight<'_> {
        match self {
            Panels::F32(p) => matmul::Weight::F32(p),
            Panels::Half(p) => matmul::Weight::Half(p),
        }
    }
}

impl FastTensor {
    fn new(host: CpuTensor) -> FastTensor {
        FastTensor { host, packed: RefCell::new(None), stale: Cell::new(false), only_panels: Cell::new(false) }
    }
    /// A weight kept only as `panels` (its rows unpacked from them if ever asked for).
    fn panels_only(shape: &[usize], panels: Panels) -> FastTensor {
        FastTensor {
            host: CpuTensor::unfilled(shape),
            packed: RefCell::new(Some(panels)),
            stale: Cell::new(false),
            only_panels: Cell::new(true),
        }
    }
    /// The tensor's rows (values or ids). A weight kept only as panels is unpacked here first, once
    /// (from then on it holds both, as a weight that training updates does).
    pub fn host(&self) -> Result<&CpuTensor> {
        if self.only_panels.get() {
            let rows = match &*self.packed.borrow() {
                Some(p) => p.weight().unpack()?,
                None => return Err(TfError::Internal("a weight kept as panels has none".into())),
            };
            self.host.set_f32(rows)?;
            self.only_panels.set(false);
        }
        Ok(&self.host)
    }
    /// Bytes this tensor holds: its rows and its panels (tests, the memory figures).
    pub fn bytes(&self) -> usize {
        let panels = self.packed.borrow().as_ref().map_or(0, |p| p.weight().bytes());
        self.host.len() * 4 + panels
    }
    /// Marks the packed panels stale (the values are about to change: a training update); the next
    /// matmul repacks them into the same allocation (no fresh pages every step).
    pub fn unpack(&self) {
        self.stale.set(true);
    }
    /// The packed panels of this (N, K) weight, made on first use and after an update.
    fn packed(&self) -> Result<Ref<'_, Panels>> {
        // a weight kept only as panels has no rows that could have changed
        let stale = self.stale.replace(false) && !self.only_panels.get();
        if stale || self.packed.borrow().is_none() {
            let (n, k) = match self.host.shape[..] {
                [n, k] => (n, k),
                _ => return Err(TfError::Shape { op: "matmul", msg: format!("W must be (N, K), got {:?}", self.host.shape) }),
            };
            let old = match self.packed.borrow_mut().take() {
                Some(Panels::F32(p)) => p.data,
                _ => Vec::new(),
            };
            let p = matmul::Packed::new_in(old, &self.host.f32s("matmul")?, n, k)?;
            *self.packed.borrow_mut() = Some(Panels::F32(p));
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
    fn keeps_16bit(&self) -> bool {
        true
    }
    fn tensor(&self, shape: &[usize], data: &[f32], label: &str) -> Result<FastTensor> {
        Ok(FastTensor::new(CpuTensor::from_f32(shape, data, label)?))
    }
    /// A matmul weight (and the tied embedding, the head's weight) is packed now and kept only as
    /// panels; other weights as rows.
    fn weight(&self, shape: &[usize], data: &[f32], role: Role, label: &str) -> Result<FastTensor> {
        match (role, shape) {
            (Role::Matmul | Role::Head | Role::TiedEmbedding, &[n, k]) => {
                let p = matmul::Packed::new(data, n, k).map_err(|e| in_weight(e, label))?;
                Ok(FastTensor::panels_only(shape, Panels::F32(p)))
            }
            _ => self.tensor(shape, data, label),
        }
    }
    /// [`FastCpuBackend::weight`] for a 16-bit weight: a matmul weight's panels stay 16-bit (the GEMV
    /// and GEMM widen them, exactly) unless it holds NaN / Inf (then f32 panels); other weights are
    /// widened to f32 rows.
    fn weight16(&self, shape: &[usize], bits: &[u16], dtype: FloatDtype, role: Role, label: &str) -> Result<FastTensor> {
        let half = match dtype {
            FloatDtype::F16 => matmul::Half::F16,
            FloatDtype::BF16 => matmul::Half::Bf16,
            FloatDtype::F32 => return self.tensor16(shape, bits, dtype, label),
        };
        let (nan, inf) = crate::model::checkpoint::non_finite16(bits, dtype);
        match (role, shape) {
            // NaN / Inf values (a damaged file, which still loads): f32 panels, where the kernels keep them
            (Role::Matmul | Role::Head | Role::TiedEmbedding, _) if nan + inf > 0 => {
                self.weight(shape, &crate::model::checkpoint::widen16(bits, dtype), role, label)
            }
            (Role::Matmul | Role::Head | Role::TiedEmbedding, &[n, k]) => {
                let p = matmul::Packed16::new(bits, half, n, k).map_err(|e| in_weight(e, label))?;
                Ok(FastTensor::panels_only(shape, Panels::Half(p)))
            }
            _ => self.tensor16(shape, bits, dtype, label),
        }
    }
    fn zeros(&self, shape: &[usize], label: &str) -> Result<FastTensor> {
        Ok(FastTensor::new(CpuTensor::zeros(shape, label)?))
    }
    fn zeros_u32(&self, shape: &[usize], label: &str) -> Result<FastTensor> {
        Ok(FastTensor::new(CpuTensor::zeros_u32(shape, label)?))
    }
    fn write_f32(&mut self, t: &FastTensor, offset: usize, data: &[f32]) -> Result<()> {
        t.host()?.write_f32(offset, data)?;
        *t.packed.borrow_mut() = None;
        Ok(())
    }
    fn write_u32(&mut self, t: &FastTensor, offset: usize, data: &[u32]) -> Result<()> {
        t.host()?.write_u32(offset, data)
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
        let pw = pw.weight();
        let (n, k) = pw.dims();
        let xd = x.host()?.f32s("matmul")?;
        let bd = b.map(|b| b.host().and_then(|h| h.f32s("matmul"))).transpose()?;
        let mut od = out.host()?.f32s_mut("matmul")?;
        need("matmul", xd.len(), x_off + m * k, "x")?;
        need("matmul", od.len(), out_off + m * n, "out")?;
        matmul::matmul_on(&self.threads, &mut od[out_off..out_off + m * n], &xd[x_off..x_off + m * k], pw, bd.as_deref(), m)
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
        attention_with(
            out.host()?,
            probs.host()?,
            q.host()?,
            k.host()?,
            v.host()?,
            mask.map(|m| m.host()).transpose()?,
            s,
            attention::attention,
        )
    }
    fn layernorm(&mut self, out: &FastTensor, x: &FastTensor, g: &FastTensor, b: &FastTensor, rows: usize, eps: f32) -> Result<()> {
        layernorm_with(out.host()?, x.host()?, g.host()?, b.host()?, rows, eps, norm::layernorm)
    }
    fn rmsnorm(&mut self, out: &FastTensor, x: &FastTensor, w: &FastTensor, rows: usize, eps: f32) -> Result<()> {
        rmsnorm_with(out.host()?, x.host()?, w.host()?, rows, eps, norm::rmsnorm)
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
        let (wd, bd, yd) = (w.host()?.f32s(op)?, b.map(|b| b.host().and_then(|h| h.f32s(op))).transpose()?, y.host()?.f32s(op)?);
        let c = wd.len();
        let n = rows * c;
        let mut xd = x.host()?.f32s_mut(op)?;
        let mut od = out.map(|o| o.host().and_then(|h| h.f32s_mut(op))).transpose()?;
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
        inplace_with(x.host()?, y.map(|y| y.host()).transpose()?, n, op, act::inplace)
    }
    fn rope(&mut self, x: &FastTensor, table: &FastTensor, s: &RopeShape) -> Result<()> {
        CpuBackend.rope(x.host()?, table.host()?, s)
    }
    fn embedding(&mut self, out: &FastTensor, table: &FastTensor, ids: &FastTensor, t: usize, scale: f32) -> Result<()> {
        if !table.only_panels.get() {
            return CpuBackend.embedding(out.host()?, table.host()?, ids.host()?, t, scale);
        }
        // a tied table kept as the head's panels: each row gathered from them (a stride of NR), as
        // `cpu::embedding` reads it (an id past the table gives a zero row)
        let op = "embedding";
        let packed = table.packed()?;
        let w = packed.weight();
        let (v, c) = w.dims();
        let id = ids.host()?.u32s(op)?;
        let mut od = out.host()?.f32s_mut(op)?;
        need(op, od.len(), t * c, "out")?;
        need(op, id.len(), t, "ids")?;
        for (row, &i) in od[..t * c].chunks_exact_mut(c.max(1)).zip(&id[..t]) {
            if (i as usize) < v {
                w.row_into(i as usize, row);
                row.iter_mut().for_each(|x| *x *= scale);
            } else {
                row.fill(0.0);
            }
        }
        Ok(())
    }
    fn add_rows(&mut self, x: &FastTensor, table: &FastTensor, t: usize, start: usize) -> Result<()> {
        let td = table.host()?.f32s("add_rows")?;
        let c = table.host.shape[1];
        let mut xd = x.host()?.f32s_mut("add_rows")?;
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
        CpuBackend.moe_router(probs.host()?, experts.host()?, weights.host()?, logits.host()?, t, e, k)
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
        CpuBackend.moe_capacity(gate.host()?, kept.host()?, experts.host()?, weights.host()?, t, e, k, capacity)
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
        CpuBackend.moe_combine(out.host()?, ys.host()?, gate.host()?, t, e, c, ys_rows)
    }
    fn sample(&mut self, out: &FastTensor, logits: &FastTensor, row: usize, p: &SampleParams, u: f32) -> Result<()> {
        CpuBackend.sample(out.host()?, logits.host()?, row, p, u)
    }
    fn submit(&mut self) -> Result<()> {
        Ok(())
    }
    async fn read_f32(&mut self, t: &FastTensor, offset: usize, count: usize) -> Result<Vec<f32>> {
        t.host()?.read_f32(offset, count)
    }
    async fn read_u32(&mut self, t: &FastTensor, offset: usize, count: usize) -> Result<Vec<u32>> {
        t.host()?.read_u32(offset, count)
    }
    async fn read_batch(&mut self, reqs: &[(&FastTensor, usize, usize)]) -> Result<Vec<Vec<u32>>> {
        reqs.iter().map(|(t, off, n)| t.host()?.read_bits(*off, *n)).collect()
    }
}

/// A packing error of weight `label`, naming it.
fn in_weight(e: TfError, label: &str) -> TfError {
    match e {
        TfError::Limit(m) => TfError::Limit(format!("{}: {m}", crate::error::quote(label))),
        e => e,
    }
}
