//! The element-wise family (activations, SwiGLU's product, the residual add): its params, its
//! pipelines and their dispatch sizing. Backward: [`act_backward`] (ReLU, GELU, GELU-tanh, SiLU)
//! and [`swiglu_backward`] (shaders/act_bw.wgsl, one thread per element).

use crate::error::{ensure, Result};
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{DType, GpuTensor, Recorder};
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
    /// shaders/act_bw.wgsl's entries
    pub act_bw: Kernel,
    pub swiglu_bw: Kernel,
}

impl EwKernels {
    pub fn new(device: &wgpu::Device) -> EwKernels {
        let m = wgsl::module(device, "elementwise", &[EwParams::wgsl()], &[files::ELEMENTWISE]);
        let bw = wgsl::module(device, "act_bw", &[EwParams::wgsl()], &[files::ACT_BW]);
        EwKernels {
            binary: Kernel::new(device, "ew_binary", &m, "binary"),
            inplace: Kernel::new(device, "ew_inplace", &m, "inplace"),
            act_bw: Kernel::new(device, "act_bw", &bw, "act"),
            swiglu_bw: Kernel::new(device, "swiglu_bw", &bw, "swiglu"),
        }
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

/// dx[..n] = dy * act'(h) for an activation (ReLU, GELU, GELU-tanh, SiLU) of the pre-activation
/// h (`Train::act_backward`).
pub fn act_backward(rec: &mut Recorder, dx: &GpuTensor, dy: &GpuTensor, h: &GpuTensor, n: usize, op: EwOp) -> Result<()> {
    let name = "act_backward";
    ensure(matches!(op, EwOp::Relu | EwOp::Gelu | EwOp::GeluTanh | EwOp::Silu), name, || format!("{op:?} is not an activation"))?;
    for (t, what) in [(dx, "dx"), (dy, "dy"), (h, "h")] {
        t.need(name, DType::F32, n, what)?;
    }
    let gpu = rec.gpu.clone();
    let p = EwParams { n: n as u32, op: op as u32, _p: [0; 2] };
    rec.dispatch(&gpu.k.ew.act_bw, &p, &[&dy.buf, &h.buf, &gpu.dummy, &dx.buf], gpu.grid_1d((n as u32).div_ceil(256)))
}

/// SwiGLU's product y = silu(gate) * up: dgate[..n] = dy up silu'(gate), dup[..n] = dy silu(gate)
/// (`Train::swiglu_backward`).
pub fn swiglu_backward(
    rec: &mut Recorder,
    dgate: &GpuTensor,
    dup: &GpuTensor,
    dy: &GpuTensor,
    gate: &GpuTensor,
    up: &GpuTensor,
    n: usize,
) -> Result<()> {
    for (t, what) in [(dgate, "dgate"), (dup, "dup"), (dy, "dy"), (gate, "gate"), (up, "up")] {
        t.need("swiglu_backward", DType::F32, n, what)?;
    }
    let gpu = rec.gpu.clone();
    let p = EwParams { n: n as u32, op: EwOp::SwiGlu as u32, _p: [0; 2] };
    let bufs = [&dy.buf, &gate.buf, &up.buf, &dgate.buf, &dup.buf];
    rec.dispatch(&gpu.k.ew.swiglu_bw, &p, &bufs, gpu.grid_1d((n as u32).div_ceil(256)))
}
