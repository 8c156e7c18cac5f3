//! The RoPE family: its params, its pipelines and their dispatch sizing. Backward: [`rope_backward`]
//! (shaders/rope.wgsl's `backward`, the inverse rotation in place).

use crate::error::{ensure, Result};
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{GpuTensor, Recorder};

crate::params! {
    /// The uniform params of shaders/rope.wgsl (their WGSL `struct` is written from this declaration).
    pub struct RopeParams {
        pub t: u32,
        pub nh: u32,
        pub hs: u32,
        pub start_pos: u32,
        pub row_stride: u32,
        pub offset: u32,
        pub _p: [u32; 2],
    }
}

use crate::ops::RopeShape;

/// shaders/rope.wgsl's entries.
pub struct RopeKernels {
    pub rotate: Kernel,
    /// the inverse rotation (the backward)
    pub unrotate: Kernel,
}

impl RopeKernels {
    pub fn new(device: &wgpu::Device) -> RopeKernels {
        let m = wgsl::module(device, "rope", &[RopeParams::wgsl()], &[files::ROPE]);
        RopeKernels { rotate: Kernel::new(device, "rope", &m, "main"), unrotate: Kernel::new(device, "rope_backward", &m, "backward") }
    }
}

/// Rotates x in place by the (cos, sin) table (max_pos, HS/2, 2) from cpu::rope_table.
pub fn rope(rec: &mut Recorder, x: &GpuTensor, table: &GpuTensor, s: &RopeShape) -> Result<()> {
    let gpu = rec.gpu.clone();
    dispatch(rec, &gpu.k.rope.rotate, x, table, s)
}

/// RoPE's backward in place (`Train::rope_backward`): the inverse rotation of [`rope`] with the same shape.
pub fn rope_backward(rec: &mut Recorder, dx: &GpuTensor, table: &GpuTensor, s: &RopeShape) -> Result<()> {
    ensure(dx.dtype == crate::gpu::DType::F32, "rope_backward", || format!("dx must be f32, got {:?}", dx.dtype))?;
    let gpu = rec.gpu.clone();
    dispatch(rec, &gpu.k.rope.unrotate, dx, table, s)
}

fn dispatch(rec: &mut Recorder, kernel: &Kernel, x: &GpuTensor, table: &GpuTensor, s: &RopeShape) -> Result<()> {
    ensure(s.hs.is_multiple_of(2) && s.hs > 0, "rope", || format!("head size {} must be even", s.hs))?;
    let half = s.hs / 2;
    let max_pos = table.len() / (half * 2);
    ensure(s.start_pos + s.t <= max_pos, "rope", || {
        format!("positions {}..{} exceed the table's {max_pos}", s.start_pos, s.start_pos + s.t)
    })?;
    ensure(s.t == 0 || s.offset + (s.t - 1) * s.row_stride + s.nh * s.hs <= x.len(), "rope", || {
        format!("x {:?} is too small for T={} NH={} HS={} stride {} offset {}", x.shape, s.t, s.nh, s.hs, s.row_stride, s.offset)
    })?;
    let p = RopeParams {
        t: s.t as u32,
        nh: s.nh as u32,
        hs: s.hs as u32,
        start_pos: s.start_pos as u32,
        row_stride: s.row_stride as u32,
        offset: s.offset as u32,
        _p: [0; 2],
    };
    let n = (s.t * s.nh * half) as u32;
    let groups = rec.gpu.grid_1d(n.div_ceil(256));
    rec.dispatch(kernel, &p, &[&table.buf, &x.buf], groups)
}
