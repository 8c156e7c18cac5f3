use bytemuck::{Pod, Zeroable};

use crate::error::{ensure, Result};
use crate::gpu::{GpuTensor, Recorder};

/// Mirrors `MatmulParams` in shaders/matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub k: u32,
    pub n: u32,
    pub has_bias: u32,
    pub x_offset: u32,
    pub out_offset: u32,
    pub _p: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<MatmulParams>() == 32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKind {
    /// one thread per output: the benchmark baseline
    Naive,
    /// 64x64 workgroup tiles, 4x4 register blocks: the kernel the models use
    Tiled,
}

/// out[out_off..] (M, N) = x[x_off..] (M, K) @ W^T + b;  W (N, K) as nn.Linear stores it, b (N,).
/// Offsets are in elements, so a matmul can read one row of a block or write into a KV cache.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    rec: &mut Recorder,
    out: &GpuTensor,
    out_off: usize,
    x: &GpuTensor,
    x_off: usize,
    m: usize,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
    kind: MatmulKind,
) -> Result<()> {
    ensure(w.shape.len() == 2, "matmul", || format!("W must be (N, K), got {:?}", w.shape))?;
    let (n, k) = (w.shape[0], w.shape[1]);
    ensure(x.len() >= x_off + m * k, "matmul", || {
        format!("x {:?} holds fewer than {m} rows of K = {k} from offset {x_off} (W {:?})", x.shape, w.shape)
    })?;
    ensure(out.len() >= out_off + m * n, "matmul", || {
        format!("out {:?} holds fewer than {m} rows of N = {n} from offset {out_off} (W {:?})", out.shape, w.shape)
    })?;
    if let Some(b) = b {
        ensure(b.len() == n, "matmul", || format!("bias {:?} must have N = {n} values (W {:?})", b.shape, w.shape))?;
    }
    let p = MatmulParams {
        m: m as u32,
        k: k as u32,
        n: n as u32,
        has_bias: b.is_some() as u32,
        x_offset: x_off as u32,
        out_offset: out_off as u32,
        _p: [0; 2],
    };
    let gpu = rec.gpu.clone();
    let bias = b.map_or(&gpu.dummy, |b| &b.buf);
    let bufs = [&x.buf, &w.buf, bias, &out.buf];
    match kind {
        MatmulKind::Naive => rec.dispatch(&gpu.k.matmul_naive, &p, &bufs, [(n as u32).div_ceil(16), (m as u32).div_ceil(16), 1]),
        MatmulKind::Tiled => rec.dispatch(&gpu.k.matmul_tiled, &p, &bufs, [(n as u32).div_ceil(64), (m as u32).div_ceil(64), 1]),
    }
}
