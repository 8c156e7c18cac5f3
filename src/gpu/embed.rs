//! The embedding family (token lookup, added position rows) over f32 or 16-bit tables: its
//! params, its pipelines, their dispatch sizing and the choice by the table's dtype. Backward: not yet.

use crate::error::{ensure, Result};
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{DType, GpuTensor, Recorder};

crate::params! {
    /// The uniform params of shaders/embed.wgsl and embed16.wgsl (their WGSL `struct` is written from this declaration).
    pub struct EmbedParams {
        pub t: u32,
        pub c: u32,
        pub v: u32,
        pub start: u32,
        pub scale: f32,
        /// a 16-bit table (shaders/embed16.wgsl): 0 f16, 1 bf16
        pub wfmt: u32,
        pub _p: [u32; 2],
    }
}

/// shaders/embed.wgsl's entries, and embed16.wgsl's over 16-bit tables (half.wgsl).
pub struct EmbedKernels {
    pub lookup: Kernel,
    pub add_rows: Kernel,
    pub lookup16: Kernel,
    pub add_rows16: Kernel,
}

impl EmbedKernels {
    pub fn new(device: &wgpu::Device) -> EmbedKernels {
        let p = [EmbedParams::wgsl()];
        let m = wgsl::module(device, "embed", &p, &[files::EMBED]);
        let m16 = wgsl::module(device, "embed16", &p, &[files::HALF, files::EMBED16]);
        EmbedKernels {
            lookup: Kernel::new(device, "embed_lookup", &m, "lookup"),
            add_rows: Kernel::new(device, "embed_add_rows", &m, "add_rows"),
            lookup16: Kernel::new(device, "embed16_lookup", &m16, "lookup"),
            add_rows16: Kernel::new(device, "embed16_add_rows", &m16, "add_rows"),
        }
    }
}

/// out[t, :] = table[ids[t], :] * scale. table (V, C), ids (T,) u32, out (T, C)
pub fn embedding(rec: &mut Recorder, out: &GpuTensor, table: &GpuTensor, ids: &GpuTensor, t: usize, scale: f32) -> Result<()> {
    ensure(table.shape.len() == 2, "embedding", || format!("table must be (V, C), got {:?}", table.shape))?;
    ensure(ids.dtype == DType::U32 && ids.len() >= t, "embedding", || format!("ids {:?} must hold {t} u32 ids", ids.shape))?;
    let (v, c) = (table.shape[0], table.shape[1]);
    ensure(out.len() >= t * c && out.last_dim() == c, "embedding", || format!("out {:?} must be (>= {t}, {c})", out.shape))?;
    let p = EmbedParams { t: t as u32, c: c as u32, v: v as u32, start: 0, scale, wfmt: table.dtype.wfmt(), _p: [0; 2] };
    let gpu = rec.gpu.clone();
    let kernel = if table.dtype.is_16bit() { &gpu.k.embed.lookup16 } else { &gpu.k.embed.lookup };
    rec.dispatch(kernel, &p, &[&table.buf, &ids.buf, &out.buf], gpu.grid_1d(((t * c) as u32).div_ceil(256)))
}

/// x[t, :] += table[start + t, :] for t < T. x (>= T, C), table (max_len, C): the sinusoidal PE.
pub fn add_rows(rec: &mut Recorder, x: &GpuTensor, table: &GpuTensor, t: usize, start: usize) -> Result<()> {
    let c = x.last_dim();
    ensure(table.last_dim() == c, "add_rows", || format!("table {:?} and x {:?} differ in C", table.shape, x.shape))?;
    ensure(start + t <= table.rows(), "add_rows", || format!("positions {start}..{} exceed the table's {} rows", start + t, table.rows()))?;
    ensure(x.len() >= t * c, "add_rows", || format!("x {:?} holds fewer than {t} rows", x.shape))?;
    let p = EmbedParams { t: t as u32, c: c as u32, v: 0, start: start as u32, scale: 1.0, wfmt: table.dtype.wfmt(), _p: [0; 2] };
    let gpu = rec.gpu.clone();
    let kernel = if table.dtype.is_16bit() { &gpu.k.embed.add_rows16 } else { &gpu.k.embed.add_rows };
    rec.dispatch(kernel, &p, &[&table.buf, &gpu.dummy, &x.buf], gpu.grid_1d(((t * c) as u32).div_ceil(256)))
}
