//! `FastCpuBackend`: the model's CPU product path (the page's and the CLI's `cpu`), beside the
//! reference `CpuBackend` that stays the oracle. Same op semantics; f32 kernels from this module.

use std::cell::{Ref, RefCell, RefMut};

use crate::cpu::{self, AttnShape, EwOp, RopeShape, SampleParams};
use crate::error::{Result, TfError};
use crate::fastcpu::{act, attention, matmul, norm};
use crate::model::backend::Backend;

/// A tensor of the fast backend: f32 values (u32 ids stored by their bits, viewed as u32 without a
/// copy). A matrix used as a matmul weight keeps its packed panels from its first use; a write to
/// the tensor drops them.
pub struct FastTensor {
    pub shape: Vec<usize>,
    data: RefCell<Vec<f32>>,
    packed: RefCell<Option<matmul::Packed>>,
}

impl FastTensor {
    fn r(&self, op: &'static str) -> Result<Ref<'_, Vec<f32>>> {
        self.data.try_borrow().map_err(|_| TfError::Shape { op, msg: "an input aliases the output".into() })
    }
    fn w(&self, op: &'static str) -> Result<RefMut<'_, Vec<f32>>> {
        self.data.try_borrow_mut().map_err(|_| TfError::Shape { op, msg: "the output aliases an input".into() })
    }
    /// The packed panels of this (N, K) weight, made on first use.
    fn packed(&self) -> Result<Ref<'_, matmul::Packed>> {
        if self.packed.borrow().is_none() {
            let (n, k) = match self.shape[..] {
                [n, k] => (n, k),
                _ => return Err(TfError::Shape { op: "matmul", msg: format!("W must be (N, K), got {:?}", self.shape) }),
            };
            let p = matmul::Packed::new(&self.r("matmul")?, n, k)?;
            *self.packed.borrow_mut() = Some(p);
        }
        Ok(Ref::map(self.packed.borrow(), |p| p.as_ref().expect("packed just above")))
    }
}

fn need(op: &'static str, have: usize, want: usize, what: &str) -> Result<()> {
    if have < want {
        return Err(TfError::Shape { op, msg: format!("{what} holds {have} values, needs {want}") });
    }
    Ok(())
}

fn as_u32(v: &[f32]) -> &[u32] {
    bytemuck::cast_slice(v)
}
fn as_u32_mut(v: &mut [f32]) -> &mut [u32] {
    bytemuck::cast_slice_mut(v)
}

fn alloc(shape: &[usize]) -> Result<Vec<f32>> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| TfError::Limit(format!("shape {shape:?} overflows")))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| TfError::Limit(format!("cannot allocate {n} floats for shape {shape:?}")))?;
    v.resize(n, 0.0);
    Ok(v)
}

#[derive(Default)]
pub struct FastCpuBackend;

impl Backend for FastCpuBackend {
    type T = FastTensor;
    fn kind(&self) -> &'static str {
        "cpu"
    }
    fn weight_copies(&self) -> crate::model::memory::WeightCopies {
        crate::model::memory::WeightCopies::Panels(matmul::NR)
    }
    fn tensor(&self, shape: &[usize], data: &[f32], label: &str) -> Result<FastTensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(TfError::Shape { op: "upload", msg: format!("{label}: shape {shape:?} holds {n} values, got {}", data.len()) });
        }
        let mut v = alloc(shape)?;
        v.copy_from_slice(data);
        Ok(FastTensor { shape: shape.to_vec(), data: RefCell::new(v), packed: RefCell::new(None) })
    }
    fn zeros(&self, shape: &[usize], _label: &str) -> Result<FastTensor> {
        Ok(FastTensor { shape: shape.to_vec(), data: RefCell::new(alloc(shape)?), packed: RefCell::new(None) })
    }
    fn zeros_u32(&self, shape: &[usize], label: &str) -> Result<FastTensor> {
        self.zeros(shape, label) // 0.0 has the bits of 0u32
    }
    fn write_f32(&mut self, t: &FastTensor, offset: usize, data: &[f32]) -> Result<()> {
        let mut d = t.w("write")?;
        need("write", d.len(), offset + data.len(), "tensor")?;
        d[offset..offset + data.len()].copy_from_slice(data);
        *t.packed.borrow_mut() = None;
        Ok(())
    }
    fn write_u32(&mut self, t: &FastTensor, offset: usize, data: &[u32]) -> Result<()> {
        self.write_f32(t, offset, bytemuck::cast_slice(data))
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
        let xd = x.r("matmul")?;
        let bd = b.map(|b| b.r("matmul")).transpose()?;
        let mut od = out.w("matmul")?;
        need("matmul", xd.len(), x_off + m * k, "x")?;
        need("matmul", od.len(), out_off + m * n, "out")?;
        matmul::matmul(&mut od[out_off..out_off + m * n], &xd[x_off..x_off + m * k], &pw, bd.as_deref().map(|v| &v[..]), m)
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
        let (qd, kd, vd) = (q.r("attention")?, k.r("attention")?, v.r("attention")?);
        let md = mask.map(|m| m.r("attention")).transpose()?;
        let (mut od, mut pd) = (out.w("attention")?, probs.w("attention")?);
        let on = s.tq * s.nh * s.hs;
        let pn = s.nh * s.tq * s.tk;
        need("attention", od.len(), on, "out")?;
        need("attention", pd.len(), pn, "probs")?;
        let mask_slice = md.as_deref().map(|m| &m[..s.tq * s.tk.min(m.len() / s.tq.max(1))]);
        attention::attention(&mut od[..on], &mut pd[..pn], &qd, &kd, &vd, mask_slice, s)
    }
    fn layernorm(&mut self, out: &FastTensor, x: &FastTensor, g: &FastTensor, b: &FastTensor, rows: usize, eps: f32) -> Result<()> {
        let (xd, gd, bd) = (x.r("layernorm")?, g.r("layernorm")?, b.r("layernorm")?);
        let c = gd.len();
        let mut od = out.w("layernorm")?;
        need("layernorm", xd.len().min(od.len()), rows * c, "x/out")?;
        need("layernorm", bd.len(), c, "beta")?;
        norm::layernorm(&mut od[..rows * c], &xd[..rows * c], &gd, &bd[..c], c, eps);
        Ok(())
    }
    fn rmsnorm(&mut self, out: &FastTensor, x: &FastTensor, w: &FastTensor, rows: usize, eps: f32) -> Result<()> {
        let (xd, wd) = (x.r("rmsnorm")?, w.r("rmsnorm")?);
        let c = wd.len();
        let mut od = out.w("rmsnorm")?;
        need("rmsnorm", xd.len().min(od.len()), rows * c, "x/out")?;
        norm::rmsnorm(&mut od[..rows * c], &xd[..rows * c], &wd, c, eps);
        Ok(())
    }
    fn elementwise(&mut self, out: &FastTensor, a: &FastTensor, b: Option<&FastTensor>, n: usize, op: EwOp) -> Result<()> {
        let ad = a.r("elementwise")?;
        let bd = b.map(|b| b.r("elementwise")).transpose()?;
        let mut od = out.w("elementwise")?;
        need("elementwise", ad.len().min(od.len()), n, "a/out")?;
        if let Some(bd) = &bd {
            need("elementwise", bd.len(), n, "b")?;
        }
        act::elementwise(&mut od[..n], &ad[..n], bd.as_deref().map(|v| &v[..n]), op);
        Ok(())
    }
    fn inplace(&mut self, x: &FastTensor, y: Option<&FastTensor>, n: usize, op: EwOp) -> Result<()> {
        let yd = y.map(|y| y.r("inplace")).transpose()?;
        let mut xd = x.w("inplace")?;
        need("inplace", xd.len(), n, "x")?;
        if let Some(yd) = &yd {
            need("inplace", yd.len(), n, "y")?;
        }
        act::inplace(&mut xd[..n], yd.as_deref().map(|v| &v[..n]), op);
        Ok(())
    }
    fn rope(&mut self, x: &FastTensor, table: &FastTensor, s: &RopeShape) -> Result<()> {
        let td = table.r("rope")?;
        let mut xd = x.w("rope")?;
        need("rope", td.len(), (s.start_pos + s.t) * s.hs, "table")?;
        if s.t > 0 {
            need("rope", xd.len(), s.offset + (s.t - 1) * s.row_stride + s.nh * s.hs, "x")?;
        }
        // already f32 and a few hundred values per token: the reference loop is the fast one
        cpu::rope(&mut xd, &td, s.t, s.nh, s.hs, s.start_pos, s.row_stride, s.offset);
        Ok(())
    }
    fn embedding(&mut self, out: &FastTensor, table: &FastTensor, ids: &FastTensor, t: usize, scale: f32) -> Result<()> {
        let (td, id) = (table.r("embedding")?, ids.r("embedding")?);
        let c = table.shape[1];
        let mut od = out.w("embedding")?;
        need("embedding", od.len(), t * c, "out")?;
        need("embedding", id.len(), t, "ids")?;
        cpu::embedding(&mut od[..t * c], &td, as_u32(&id[..t]), c, scale);
        Ok(())
    }
    fn add_rows(&mut self, x: &FastTensor, table: &FastTensor, t: usize, start: usize) -> Result<()> {
        let td = table.r("add_rows")?;
        let c = table.shape[1];
        let mut xd = x.w("add_rows")?;
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
        // T x E values: the reference's loops, run over this backend's buffers without copies
        let ld = logits.r("moe_router")?;
        let (mut pd, mut ed, mut wd) = (probs.w("moe_router")?, experts.w("moe_router")?, weights.w("moe_router")?);
        need("moe_router", ld.len().min(pd.len()), t * e, "logits/probs")?;
        need("moe_router", ed.len().min(wd.len()), t * k, "experts/weights")?;
        cpu::moe_router(&mut pd[..t * e], as_u32_mut(&mut ed[..t * k]), &mut wd[..t * k], &ld[..t * e], t, e, k);
        Ok(())
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
        let (ed, wd) = (experts.r("moe_capacity")?, weights.r("moe_capacity")?);
        let (mut gd, mut kd) = (gate.w("moe_capacity")?, kept.w("moe_capacity")?);
        need("moe_capacity", gd.len(), t * e, "gate")?;
        need("moe_capacity", ed.len().min(wd.len()).min(kd.len()), t * k, "experts/weights/kept")?;
        cpu::moe_capacity(&mut gd[..t * e], as_u32_mut(&mut kd[..t * k]), as_u32(&ed[..t * k]), &wd[..t * k], t, e, k, capacity);
        Ok(())
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
        let (yd, gd) = (ys.r("moe_combine")?, gate.r("moe_combine")?);
        let mut od = out.w("moe_combine")?;
        need("moe_combine", od.len(), t * c, "out")?;
        need("moe_combine", gd.len(), t * e, "gate")?;
        if t > 0 {
            need("moe_combine", yd.len(), ((e - 1) * ys_rows + t) * c, "ys")?;
        }
        cpu::moe_combine(&mut od[..t * c], &yd, &gd, t, e, c, ys_rows);
        Ok(())
    }
    fn sample(&mut self, out: &FastTensor, logits: &FastTensor, row: usize, p: &SampleParams, u: f32) -> Result<()> {
        let v = *logits.shape.last().unwrap_or(&0);
        let ld = logits.r("sample")?;
        need("sample", ld.len(), (row + 1) * v, "logits")?;
        let row = &ld[row * v..(row + 1) * v];
        let mut od = out.w("sample")?;
        need("sample", od.len(), 2, "out")?;
        od[..2].copy_from_slice(&cpu::sample_record(row, p, u));
        Ok(())
    }
    fn submit(&mut self) -> Result<()> {
        Ok(())
    }
    async fn read_f32(&mut self, t: &FastTensor, offset: usize, count: usize) -> Result<Vec<f32>> {
        let d = t.r("read")?;
        need("read", d.len(), offset + count, "tensor")?;
        Ok(d[offset..offset + count].to_vec())
    }
    async fn read_u32(&mut self, t: &FastTensor, offset: usize, count: usize) -> Result<Vec<u32>> {
        let d = t.r("read")?;
        need("read", d.len(), offset + count, "tensor")?;
        Ok(as_u32(&d[offset..offset + count]).to_vec())
    }
    async fn read_batch(&mut self, reqs: &[(&FastTensor, usize, usize)]) -> Result<Vec<Vec<u32>>> {
        let mut out = Vec::with_capacity(reqs.len());
        for (t, off, n) in reqs {
            out.push(self.read_u32(t, *off, *n).await?);
        }
        Ok(out)
    }
    fn len(t: &FastTensor) -> usize {
        t.data.borrow().len()
    }
}
