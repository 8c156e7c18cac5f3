//! `CpuBackend`: the reference, the ops run at once by the plain loops of this module (f64
//! accumulation) over `CpuTensor`s, behind the guards both CPU backends share (`guards.rs`). The
//! oracle tests compare the GPU and the fast CPU backend with. The fast backend reuses the ops
//! whose reference loops are already its fast ones (rope, embedding, the MoE routing, sampling) by
//! calling them here on its tensors' host data.

use crate::cpu;
use crate::cpu::guards::{attention_with, inplace_with, layernorm_with, rmsnorm_with};
use crate::error::Result;
use crate::model::backend::tensor::need;
use crate::model::backend::{add_then_norm, Backend, CpuTensor};
use crate::ops::{AttnShape, EwOp, RopeShape, SampleParams};

#[derive(Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type T = CpuTensor;
    fn kind(&self) -> &'static str {
        "cpu"
    }
    fn tensor(&self, shape: &[usize], data: &[f32], label: &str) -> Result<CpuTensor> {
        CpuTensor::from_f32(shape, data, label)
    }
    fn zeros(&self, shape: &[usize], label: &str) -> Result<CpuTensor> {
        CpuTensor::zeros(shape, label)
    }
    fn zeros_u32(&self, shape: &[usize], label: &str) -> Result<CpuTensor> {
        CpuTensor::zeros_u32(shape, label)
    }
    fn write_f32(&mut self, t: &CpuTensor, offset: usize, data: &[f32]) -> Result<()> {
        t.write_f32(offset, data)
    }
    fn write_u32(&mut self, t: &CpuTensor, offset: usize, data: &[u32]) -> Result<()> {
        t.write_u32(offset, data)
    }
    fn matmul(
        &mut self,
        out: &CpuTensor,
        out_off: usize,
        x: &CpuTensor,
        x_off: usize,
        m: usize,
        w: &CpuTensor,
        b: Option<&CpuTensor>,
    ) -> Result<()> {
        let (n, k) = match w.shape[..] {
            [n, k] => (n, k),
            _ => return Err(crate::error::TfError::Shape { op: "matmul", msg: format!("W must be (N, K), got {:?}", w.shape) }),
        };
        let (xd, wd) = (x.f32s("matmul")?, w.f32s("matmul")?);
        let bd = b.map(|b| b.f32s("matmul")).transpose()?;
        let mut od = out.f32s_mut("matmul")?;
        need("matmul", xd.len(), x_off + m * k, "x")?;
        need("matmul", od.len(), out_off + m * n, "out")?;
        cpu::matmul(&mut od[out_off..out_off + m * n], &xd[x_off..x_off + m * k], &wd, bd.as_deref(), m, k, n)
    }
    fn attention(
        &mut self,
        out: &CpuTensor,
        probs: &CpuTensor,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        mask: Option<&CpuTensor>,
        s: &AttnShape,
    ) -> Result<()> {
        attention_with(out, probs, q, k, v, mask, s, cpu::attention)
    }
    fn layernorm(&mut self, out: &CpuTensor, x: &CpuTensor, g: &CpuTensor, b: &CpuTensor, rows: usize, eps: f32) -> Result<()> {
        layernorm_with(out, x, g, b, rows, eps, cpu::layernorm)
    }
    fn rmsnorm(&mut self, out: &CpuTensor, x: &CpuTensor, w: &CpuTensor, rows: usize, eps: f32) -> Result<()> {
        rmsnorm_with(out, x, w, rows, eps, cpu::rmsnorm)
    }
    fn add_norm(
        &mut self,
        x: &CpuTensor,
        y: &CpuTensor,
        out: Option<&CpuTensor>,
        w: &CpuTensor,
        b: Option<&CpuTensor>,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        add_then_norm(self, x, y, out, w, b, rows, w.len(), eps)
    }
    fn inplace(&mut self, x: &CpuTensor, y: Option<&CpuTensor>, n: usize, op: EwOp) -> Result<()> {
        inplace_with(x, y, n, op, cpu::inplace)
    }
    fn rope(&mut self, x: &CpuTensor, table: &CpuTensor, s: &RopeShape) -> Result<()> {
        let td = table.f32s("rope")?;
        let mut xd = x.f32s_mut("rope")?;
        need("rope", td.len(), (s.start_pos + s.t) * s.hs, "table")?;
        if s.t > 0 {
            need("rope", xd.len(), s.offset + (s.t - 1) * s.row_stride + s.nh * s.hs, "x")?;
        }
        cpu::rope(&mut xd, &td, s.t, s.nh, s.hs, s.start_pos, s.row_stride, s.offset);
        Ok(())
    }
    fn embedding(&mut self, out: &CpuTensor, table: &CpuTensor, ids: &CpuTensor, t: usize, scale: f32) -> Result<()> {
        let (td, id) = (table.f32s("embedding")?, ids.u32s("embedding")?);
        let c = table.shape[1];
        let mut od = out.f32s_mut("embedding")?;
        need("embedding", od.len(), t * c, "out")?;
        need("embedding", id.len(), t, "ids")?;
        cpu::embedding(&mut od[..t * c], &td, &id[..t], c, scale);
        Ok(())
    }
    fn add_rows(&mut self, x: &CpuTensor, table: &CpuTensor, t: usize, start: usize) -> Result<()> {
        let td = table.f32s("add_rows")?;
        let c = table.shape[1];
        let mut xd = x.f32s_mut("add_rows")?;
        need("add_rows", td.len(), (start + t) * c, "table")?;
        need("add_rows", xd.len(), t * c, "x")?;
        cpu::add_rows(&mut xd[..t * c], &td, c, start);
        Ok(())
    }
    fn moe_router(
        &mut self,
        probs: &CpuTensor,
        experts: &CpuTensor,
        weights: &CpuTensor,
        logits: &CpuTensor,
        t: usize,
        e: usize,
        k: usize,
    ) -> Result<()> {
        let ld = logits.f32s("moe_router")?;
        let (mut pd, mut ed, mut wd) = (probs.f32s_mut("moe_router")?, experts.u32s_mut("moe_router")?, weights.f32s_mut("moe_router")?);
        need("moe_router", ld.len().min(pd.len()), t * e, "logits/probs")?;
        need("moe_router", ed.len().min(wd.len()), t * k, "experts/weights")?;
        cpu::moe_router(&mut pd[..t * e], &mut ed[..t * k], &mut wd[..t * k], &ld[..t * e], t, e, k);
        Ok(())
    }
    fn moe_capacity(
        &mut self,
        gate: &CpuTensor,
        kept: &CpuTensor,
        experts: &CpuTensor,
        weights: &CpuTensor,
        t: usize,
        e: usize,
        k: usize,
        capacity: Option<usize>,
    ) -> Result<()> {
        let (ed, wd) = (experts.u32s("moe_capacity")?, weights.f32s("moe_capacity")?);
        let (mut gd, mut kd) = (gate.f32s_mut("moe_capacity")?, kept.u32s_mut("moe_capacity")?);
        need("moe_capacity", gd.len(), t * e, "gate")?;
        need("moe_capacity", ed.len().min(wd.len()).min(kd.len()), t * k, "experts/weights/kept")?;
        cpu::moe_capacity(&mut gd[..t * e], &mut kd[..t * k], &ed[..t * k], &wd[..t * k], t, e, k, capacity);
        Ok(())
    }
    fn moe_combine(
        &mut self,
        out: &CpuTensor,
        ys: &CpuTensor,
        gate: &CpuTensor,
        t: usize,
        e: usize,
        c: usize,
        ys_rows: usize,
    ) -> Result<()> {
        let (yd, gd) = (ys.f32s("moe_combine")?, gate.f32s("moe_combine")?);
        let mut od = out.f32s_mut("moe_combine")?;
        need("moe_combine", od.len(), t * c, "out")?;
        need("moe_combine", gd.len(), t * e, "gate")?;
        if t > 0 {
            need("moe_combine", yd.len(), ((e - 1) * ys_rows + t) * c, "ys")?;
        }
        cpu::moe_combine(&mut od[..t * c], &yd, &gd, t, e, c, ys_rows);
        Ok(())
    }
    fn sample(&mut self, out: &CpuTensor, logits: &CpuTensor, row: usize, p: &SampleParams, u: f32) -> Result<()> {
        let v = *logits.shape.last().unwrap_or(&0);
        let ld = logits.f32s("sample")?;
        need("sample", ld.len(), (row + 1) * v, "logits")?;
        let row = &ld[row * v..(row + 1) * v];
        let mut od = out.u32s_mut("sample")?;
        need("sample", od.len(), 2, "out")?;
        od[..2].copy_from_slice(&cpu::sample_record(row, p, u));
        Ok(())
    }
    fn submit(&mut self) -> Result<()> {
        Ok(())
    }
    async fn read_f32(&mut self, t: &CpuTensor, offset: usize, count: usize) -> Result<Vec<f32>> {
        t.read_f32(offset, count)
    }
    async fn read_u32(&mut self, t: &CpuTensor, offset: usize, count: usize) -> Result<Vec<u32>> {
        t.read_u32(offset, count)
    }
    async fn read_batch(&mut self, reqs: &[(&CpuTensor, usize, usize)]) -> Result<Vec<Vec<u32>>> {
        reqs.iter().map(|(t, off, n)| t.read_bits(*off, *n)).collect()
    }
}
