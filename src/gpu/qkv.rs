//! The q/k/v family: attention's three projections in one GEMV dispatch (few-row passes), with
//! the biases or RoPE in its epilogue. It owns its params, its pipelines (vec4, scalar and 16-bit
//! GEMVs and the barrier-free `rows` forms), their dispatch sizing and the choice among them by the
//! matmul family's [`MatmulKind`]. Backward: not yet.

use crate::error::{ensure, Result};
use crate::gpu::context::Kernel;
use crate::gpu::matmul::{check, vec4_ok, MatmulKind, GEMV_OUTS, ROWS_WG};
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::ops::RopeShape;

/// shaders/qkv.wgsl's entries (over half.wgsl).
pub struct QkvKernels {
    /// `main4`, `main1`, `main16`: the GEMV over vec4 f32, scalar f32 and 16-bit weights
    pub gemv4: Kernel,
    pub gemv1: Kernel,
    pub gemv16: Kernel,
    /// `rows4`, `rows1`: one invocation per pair of outputs, no barriers (MatmulKind::Rows)
    pub rows4: Kernel,
    pub rows1: Kernel,
}

impl QkvKernels {
    pub fn new(device: &wgpu::Device) -> QkvKernels {
        let m = wgsl::module(device, "qkv", &[QkvParams::wgsl()], &[files::HALF, files::QKV]);
        QkvKernels {
            gemv4: Kernel::new(device, "gemv_qkv4", &m, "main4"),
            gemv1: Kernel::new(device, "gemv_qkv1", &m, "main1"),
            gemv16: Kernel::new(device, "gemv_qkv16", &m, "main16"),
            rows4: Kernel::new(device, "qkv_rows4", &m, "rows4"),
            rows1: Kernel::new(device, "qkv_rows1", &m, "rows1"),
        }
    }
}

crate::params! {
    /// The uniform params of shaders/qkv.wgsl (their WGSL `struct` is written from this declaration).
    pub struct QkvParams {
        pub m: u32,
        pub k: u32,
        pub nq: u32,
        pub nkv: u32,
        pub x_offset: u32,
        pub kv_offset: u32,
        /// bit 0: biases in `aux`; bit 1: RoPE with the table in `aux`
        pub flags: u32,
        /// 16-bit weights: 0 f16, 1 bf16
        pub wfmt: u32,
        pub hs: u32,
        pub start_pos: u32,
        pub table_off: u32,
        pub _p: u32,
    }
}

/// RoPE in the q/k/v GEMV's epilogue: q and the new k rows rotated by the (cos, sin) table
/// (max_pos, HS/2, 2) from cpu::rope_table, row r of the pass at position `start_pos + r`.
#[derive(Clone, Copy)]
pub struct QkvRope<'a> {
    pub table: &'a GpuTensor,
    pub hs: usize,
    pub start_pos: usize,
}

/// q (M, NQ) = x (M, K) @ W_q^T + b_q; k[kv_off..], v[kv_off..] (M, NKV) = x @ W_k^T + b_k,
/// x @ W_v^T + b_v: the three projections of attention in one GEMV dispatch (few-row passes; f32
/// or 16-bit weights, all three of one dtype), then RoPE on q and k when `rope` is given.
/// `biases` is b_q, b_k, b_v concatenated (NQ + 2 NKV,), f32. The bias and the rotation are in
/// the epilogue, except both together: the kernel binds one of them (8 storage buffers, WebGPU's
/// default limit), so that case adds the two rope dispatches after the biased GEMV.
/// The kernel is `kind`'s: [`MatmulKind::Rows`] takes the `rows*` entries of shaders/qkv.wgsl (one
/// invocation per pair of outputs, no barriers; f32 weights), every other kind the GEMV. 16-bit
/// weights always take the 16-bit GEMV.
#[allow(clippy::too_many_arguments)]
pub fn qkv_kind(
    rec: &mut Recorder,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    kv_off: usize,
    x: &GpuTensor,
    m: usize,
    [w_q, w_k, w_v]: [&GpuTensor; 3],
    biases: Option<&GpuTensor>,
    rope: Option<QkvRope>,
    kind: MatmulKind,
) -> Result<()> {
    let (nq, kk) = check(q, 0, x, 0, m, w_q)?;
    let (nkv, _) = check(k, kv_off, x, 0, m, w_k)?;
    check(v, kv_off, x, 0, m, w_v)?;
    ensure(w_k.shape[1] == kk && w_v.shape == w_k.shape, "gemv_qkv", || {
        format!("W_q {:?}, W_k {:?}, W_v {:?} must share K", w_q.shape, w_k.shape, w_v.shape)
    })?;
    ensure(w_k.dtype == w_q.dtype && w_v.dtype == w_q.dtype, "gemv_qkv", || {
        format!("W_q, W_k, W_v are {:?}, {:?}, {:?}: one dtype", w_q.dtype, w_k.dtype, w_v.dtype)
    })?;
    if let Some(b) = biases {
        ensure(b.len() == nq + 2 * nkv && b.dtype == DType::F32, "gemv_qkv", || {
            format!("the biases {:?} ({:?}) must be NQ + 2 NKV = {} f32 values", b.shape, b.dtype, nq + 2 * nkv)
        })?;
    }
    let mut p = QkvParams {
        m: m as u32,
        k: kk as u32,
        nq: nq as u32,
        nkv: nkv as u32,
        x_offset: 0,
        kv_offset: kv_off as u32,
        flags: 0,
        wfmt: w_q.dtype.wfmt(),
        hs: 0,
        start_pos: 0,
        table_off: 0,
        _p: 0,
    };
    let gpu = rec.gpu.clone();
    let mut aux = &gpu.dummy;
    if let Some(b) = biases {
        p.flags |= 1;
        aux = &b.buf;
    }
    // the rotation in the epilogue, or (with biases) two rope dispatches after it
    let mut after = None;
    if let Some(r) = rope {
        let hs = r.hs;
        ensure(hs > 0 && hs.is_multiple_of(2) && nq.is_multiple_of(hs) && nkv.is_multiple_of(hs), "gemv_qkv", || {
            format!("RoPE needs an even head size dividing NQ = {nq} and NKV = {nkv}, got {hs}")
        })?;
        let max_pos = r.table.len() / hs;
        ensure(r.start_pos + m <= max_pos, "gemv_qkv", || {
            format!("positions {}..{} exceed the RoPE table's {max_pos}", r.start_pos, r.start_pos + m)
        })?;
        if biases.is_some() {
            after = Some(r);
        } else {
            (p.flags, p.hs, p.start_pos) = (p.flags | 2, hs as u32, r.start_pos as u32);
            aux = &r.table.buf;
        }
    }
    let rows = kind == MatmulKind::Rows && !w_q.dtype.is_16bit();
    let kernel = if w_q.dtype.is_16bit() {
        &gpu.k.qkv.gemv16
    } else if rows && vec4_ok(kk, 0) {
        &gpu.k.qkv.rows4
    } else if rows {
        &gpu.k.qkv.rows1
    } else if vec4_ok(kk, 0) {
        &gpu.k.qkv.gemv4
    } else {
        &gpu.k.qkv.gemv1
    };
    let total = (nq + 2 * nkv) as u32;
    let groups = if rows { [total.div_ceil(2).div_ceil(ROWS_WG), m as u32, 1] } else { [total.div_ceil(GEMV_OUTS), m as u32, 1] };
    rec.dispatch(kernel, &p, &[&x.buf, &w_q.buf, &w_k.buf, &w_v.buf, &q.buf, &k.buf, &v.buf, aux], groups)?;
    if let Some(r) = after {
        let hs = r.hs;
        crate::gpu::rope::rope(rec, q, r.table, &RopeShape { t: m, nh: nq / hs, hs, start_pos: r.start_pos, row_stride: nq, offset: 0 })?;
        let s = RopeShape { t: m, nh: nkv / hs, hs, start_pos: r.start_pos, row_stride: nkv, offset: kv_off };
        crate::gpu::rope::rope(rec, k, r.table, &s)?;
    }
    Ok(())
}
