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
}
const _: () = assert!(std::mem::size_of::<MatmulParams>() == 16);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKind {
    /// one thread per output: the benchmark baseline
    Naive,
    /// 64x64 workgroup tiles, 4x4 register blocks: the kernel the models use
    Tiled,
}

/// out = x @ W^T + b   x (M, K) (any leading dims), W (N, K), b (N,) -> out (M, N)
pub fn matmul(rec: &mut Recorder, out: &GpuTensor, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, kind: MatmulKind) -> Result<()> {
    let (m, k) = (x.rows(), x.last_dim());
    ensure(w.shape.len() == 2 && w.shape[1] == k, "matmul", || format!("x {:?} needs W of shape (N, {k}), got {:?}", x.shape, w.shape))?;
    let n = w.shape[0];
    ensure(out.rows() == m && out.last_dim() == n, "matmul", || {
        format!("x {:?} @ W^T {:?} gives ({m}, {n}), out is {:?}", x.shape, w.shape, out.shape)
    })?;
    if let Some(b) = b {
        ensure(b.len() == n, "matmul", || format!("bias {:?} must have N = {n} values", b.shape))?;
    }
    let p = MatmulParams { m: m as u32, k: k as u32, n: n as u32, has_bias: b.is_some() as u32 };
    let gpu = rec.gpu;
    let bias = b.map_or(&gpu.dummy, |b| &b.buf);
    let bufs = [&x.buf, &w.buf, bias, &out.buf];
    match kind {
        MatmulKind::Naive => rec.dispatch(&gpu.k.matmul_naive, &p, &bufs, [(n as u32).div_ceil(16), (m as u32).div_ceil(16), 1]),
        MatmulKind::Tiled => rec.dispatch(&gpu.k.matmul_tiled, &p, &bufs, [(n as u32).div_ceil(64), (m as u32).div_ceil(64), 1]),
    }
}
