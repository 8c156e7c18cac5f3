use bytemuck::{Pod, Zeroable};

use crate::error::{ensure, Result};
use crate::gpu::{GpuTensor, Recorder};

/// Mirrors `NormParams` in shaders/norm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct NormParams {
    pub rows: u32,
    pub c: u32,
    pub eps: f32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<NormParams>() == 16);

fn check(op: &'static str, out: &GpuTensor, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>) -> Result<usize> {
    let c = x.last_dim();
    ensure(out.shape == x.shape, op, || format!("out {:?} must have the shape of x {:?}", out.shape, x.shape))?;
    ensure(w.len() == c, op, || format!("weight {:?} must have C = {c} values for x {:?}", w.shape, x.shape))?;
    if let Some(b) = b {
        ensure(b.len() == c, op, || format!("bias {:?} must have C = {c} values for x {:?}", b.shape, x.shape))?;
    }
    Ok(c)
}

/// out = LayerNorm(x) * gamma + beta over the last dim. x, out (rows, C); gamma, beta (C,)
pub fn layernorm(rec: &mut Recorder, out: &GpuTensor, x: &GpuTensor, gamma: &GpuTensor, beta: &GpuTensor, eps: f32) -> Result<()> {
    let c = check("layernorm", out, x, gamma, Some(beta))?;
    let rows = x.rows() as u32;
    let p = NormParams { rows, c: c as u32, eps, _pad: 0 };
    let gpu = rec.gpu;
    rec.dispatch(&gpu.k.layernorm, &p, &[&x.buf, &gamma.buf, &beta.buf, &out.buf], gpu.grid_1d(rows))
}

/// out = x * rsqrt(mean(x^2) + eps) * weight over the last dim. x, out (rows, C); weight (C,)
pub fn rmsnorm(rec: &mut Recorder, out: &GpuTensor, x: &GpuTensor, weight: &GpuTensor, eps: f32) -> Result<()> {
    let c = check("rmsnorm", out, x, weight, None)?;
    let rows = x.rows() as u32;
    let p = NormParams { rows, c: c as u32, eps, _pad: 0 };
    let gpu = rec.gpu;
    rec.dispatch(&gpu.k.rmsnorm, &p, &[&x.buf, &weight.buf, &gpu.dummy, &out.buf], gpu.grid_1d(rows))
}
