//! The element-wise family (activations, SwiGLU's product, the residual add): its params, its
//! pipelines and their dispatch sizing. Backward: not yet.

use crate::error::{ensure, Result};
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{GpuTensor, Recorder};
use crate::ops::EwOp;

crate::params! {
    /// The uniform params of shaders/elementwise.wgsl (their WGSL `struct` is written from this declaration).
    pub struct EwParams {
        pub n: u32,
        pub op: u32,
        pub _p: [u32; 2],
    }
}

/// shaders/elementwise.wgsl's entries.
pub struct EwKernels {
    pub binary: Kernel,
    pub inplace: Kernel,
}

impl EwKernels {
    pub fn new(device: &wgpu::Device) -> EwKernels {
        let m = wgsl::module(device, "elementwise", &[EwParams::wgsl()], &[files::ELEMENTWISE]);
        EwKernels { binary: Kernel::new(device, "ew_binary", &m, "binary"), inplace: Kernel::new(device, "ew_inplace", &m, "inplace") }
    }
}

/// out = op(a, b) element-wise over the first n values; b is required for binary ops (SwiGLU, Add, Mul). All (N,).
pub fn elementwise(rec: &mut Recorder, out: &GpuTensor, a: &GpuTensor, b: Option<&GpuTensor>, n: usize, op: EwOp) -> Result<()> {
    ensure(a.len() >= n && out.len() >= n, "elementwise", || format!("{op:?}: a {:?} and out {:?} differ in size", a.shape, out.shape))?;
    ensure(b.is_some() == op.is_binary(), "elementwise", || format!("{op:?} takes {} input(s)", if op.is_binary() { 2 } else { 1 }))?;
    if let Some(b) = b {
        ensure(b.len() >= n, "elementwise", || format!("{op:?}: b {:?} and out {:?} differ in size", b.shape, out.shape))?;
    }
    let gpu = rec.gpu.clone();
    let bb = b.map_or(&gpu.dummy, |b| &b.buf);
    let p = EwParams { n: n as u32, op: op as u32, _p: [0; 2] };
    rec.dispatch(&gpu.k.ew.binary, &p, &[&a.buf, bb, &out.buf], gpu.grid_1d((n as u32).div_ceil(256)))
}

/// x = op(x, y) in place: the residual add `x += y`, or an activation (y = None).
pub fn inplace(rec: &mut Recorder, x: &GpuTensor, y: Option<&GpuTensor>, n: usize, op: EwOp) -> Result<()> {
    ensure(x.len() >= n, "inplace", || format!("{op:?}: x {:?} holds fewer than {n} values", x.shape))?;
    ensure(y.is_some() == op.is_binary(), "inplace", || format!("{op:?} takes {} input(s)", if op.is_binary() { 2 } else { 1 }))?;
    if let Some(y) = y {
        ensure(y.len() >= n, "inplace", || format!("{op:?}: x {:?} and y {:?} differ in size", x.shape, y.shape))?;
    }
    let gpu = rec.gpu.clone();
    let yb = y.map_or(&gpu.dummy, |y| &y.buf);
    let p = EwParams { n: n as u32, op: op as u32, _p: [0; 2] };
    rec.dispatch(&gpu.k.ew.inplace, &p, &[&gpu.dummy, yb, &x.buf], gpu.grid_1d((n as u32).div_ceil(256)))
}
