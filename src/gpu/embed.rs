//! The embedding family (token lookup, added position rows) over f32 or 16-bit tables: its
//! params, its pipelines, their dispatch sizing and the choice by the table's dtype. Backward:
//! [`embedding_backward`] and [`positions_backward`], with the training graph's [`add_positions`]
//! (shaders/embed_bw.wgsl: a thread per table value, each summing its rows in order).

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
    /// shaders/embed_bw.wgsl's entries
    pub backward: Kernel,
    pub positions_backward: Kernel,
    pub add_positions: Kernel,
}

impl EmbedKernels {
    pub fn new(device: &wgpu::Device) -> EmbedKernels {
        let p = [EmbedParams::wgsl()];
        let m = wgsl::module(device, "embed", &p, &[files::EMBED]);
        let m16 = wgsl::module(device, "embed16", &p, &[files::HALF, files::EMBED16]);
        let bw = wgsl::module(device, "embed_bw", &[EmbedBwParams::wgsl()], &[files::EMBED_BW]);
        EmbedKernels {
            lookup: Kernel::new(device, "embed_lookup", &m, "lookup"),
            add_rows: Kernel::new(device, "embed_add_rows", &m, "add_rows"),
            lookup16: Kernel::new(device, "embed16_lookup", &m16, "lookup"),
            add_rows16: Kernel::new(device, "embed16_add_rows", &m16, "add_rows"),
            backward: Kernel::new(device, "embedding_backward", &bw, "embedding"),
            positions_backward: Kernel::new(device, "positions_backward", &bw, "positions"),
            add_positions: Kernel::new(device, "add_positions", &bw, "add"),
        }
    }
}

/// out[t, :] = table[ids[t], :] * scale. table (V, C), ids (T,) u32, out (T, C). A table over
/// the binding limit is bound by rows (`Gpu::row_chunks`): one dispatch per range, in order.
pub fn embedding(rec: &mut Recorder, out: &GpuTensor, table: &GpuTensor, ids: &GpuTensor, t: usize, scale: f32) -> Result<()> {
    ensure(table.shape.len() == 2, "embedding", || format!("table must be (V, C), got {:?}", table.shape))?;
    ensure(ids.dtype == DType::U32 && ids.len() >= t, "embedding", || format!("ids {:?} must hold {t} u32 ids", ids.shape))?;
    let (v, c) = (table.shape[0], table.shape[1]);
    ensure(out.len() >= t * c && out.last_dim() == c, "embedding", || format!("out {:?} must be (>= {t}, {c})", out.shape))?;
    let p = EmbedParams { t: t as u32, c: c as u32, v: v as u32, start: 0, scale, wfmt: table.dtype.wfmt(), _p: [0; 2] };
    let gpu = rec.gpu.clone();
    let kernel = if table.dtype.is_16bit() { &gpu.k.embed.lookup16 } else { &gpu.k.embed.lookup };
    let groups = gpu.grid_1d(((t * c) as u32).div_ceil(256));
    let Some(chunks) = gpu.chunks(table, "the embedding table")? else {
        return rec.dispatch(kernel, &p, &[&table.buf, &ids.buf, &out.buf], groups);
    };
    // the first range writes every row (zeros where the id is in a later range), each later one
    // only the rows of its ids
    for ch in chunks {
        let p = EmbedParams { v: ch.rows as u32, start: ch.row0 as u32, ..p };
        rec.dispatch_ranges(kernel, &p, &[(&table.buf, Some((ch.offset, ch.size))), (&ids.buf, None), (&out.buf, None)], groups)?;
    }
    Ok(())
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
    if gpu.chunks(table, "the position table")?.is_some() {
        let msg = format!("a position table {:?} over this GPU's maxStorageBufferBindingSize is not split", table.shape);
        return Err(crate::error::TfError::Limit(msg));
    }
    rec.dispatch(kernel, &p, &[&table.buf, &gpu.dummy, &x.buf], gpu.grid_1d(((t * c) as u32).div_ceil(256)))
}

crate::params! {
    /// The uniform params of shaders/embed_bw.wgsl (their WGSL `struct` is written from this declaration).
    pub struct EmbedBwParams {
        pub rows: u32,
        pub c: u32,
        pub v: u32,
        /// the position table's rows: row r of the stacked sequences is position r % period
        pub period: u32,
        pub scale: f32,
        pub _p: [u32; 3],
    }
}

/// dtable[ids[r], :] += dout[r, :] * scale for r < rows, each table row summing its tokens in
/// order (`Train::embedding_backward`). dtable (V, C) f32, dout (rows, C), ids (rows,) u32; an id
/// >= V adds to no row (the training graph checks the ids it feeds).
pub fn embedding_backward(
    rec: &mut Recorder,
    dtable: &GpuTensor,
    dout: &GpuTensor,
    ids: &GpuTensor,
    rows: usize,
    scale: f32,
) -> Result<()> {
    let op = "embedding_backward";
    let c = dtable.last_dim();
    let v = dtable.rows();
    dtable.need(op, DType::F32, v * c, "dtable")?;
    dout.need(op, DType::F32, rows * c, "dout")?;
    ids.need(op, DType::U32, rows, "ids")?;
    let p = EmbedBwParams { rows: rows as u32, c: c as u32, v: v as u32, period: 1, scale, _p: [0; 3] };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.embed.backward, &p, &[&dout.buf, &ids.buf, &dtable.buf], gpu.grid_1d(((v * c) as u32).div_ceil(256)))
}

/// The guards of the position-table ops: the table holds `t` rows of C, x `rows` rows; returns C.
fn check_positions(op: &'static str, x: &GpuTensor, table: &GpuTensor, rows: usize, t: usize) -> Result<usize> {
    let c = table.last_dim();
    ensure(t > 0 || rows == 0, op, || format!("{rows} rows need a position table of at least one row"))?;
    table.need(op, DType::F32, t * c, "the table")?;
    x.need(op, DType::F32, rows * c, "x")?;
    Ok(c)
}

/// x[r, :] += table[r % t, :] for r < rows: positions added to B stacked sequences of T
/// (`Train::add_positions`). table (>= t, C) f32, x (>= rows, C).
pub fn add_positions(rec: &mut Recorder, x: &GpuTensor, table: &GpuTensor, rows: usize, t: usize) -> Result<()> {
    let c = check_positions("add_positions", x, table, rows, t)?;
    let p = EmbedBwParams { rows: rows as u32, c: c as u32, v: 0, period: t as u32, scale: 1.0, _p: [0; 3] };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.embed.add_positions, &p, &[&table.buf, &gpu.dummy, &x.buf], gpu.grid_1d(((rows * c) as u32).div_ceil(256)))
}

/// dtable[j, :] += the sum over r < rows with r % t == j of dx[r, :], in order of r
/// (`Train::positions_backward`).
pub fn positions_backward(rec: &mut Recorder, dtable: &GpuTensor, dx: &GpuTensor, rows: usize, t: usize) -> Result<()> {
    let c = check_positions("positions_backward", dx, dtable, rows, t)?;
    let p = EmbedBwParams { rows: rows as u32, c: c as u32, v: 0, period: t as u32, scale: 1.0, _p: [0; 3] };
    let gpu = rec.gpu.clone();
    let groups = gpu.grid_1d(((t * c) as u32).div_ceil(256));
    rec.dispatch(&gpu.k.embed.positions_backward, &p, &[&dx.buf, &gpu.dummy, &dtable.buf], groups)
}
