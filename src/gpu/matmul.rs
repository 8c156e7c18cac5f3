use bytemuck::{Pod, Zeroable};

use crate::error::{ensure, Result};
use crate::gpu::{GpuTensor, Recorder};
use crate::ops::EwOp;

/// Mirrors `MatmulParams` in shaders/matmul.wgsl and shaders/gemv.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub k: u32,
    pub n: u32,
    pub has_bias: u32,
    pub x_offset: u32,
    pub out_offset: u32,
    /// epilogue activation: 0 none, 1 ReLU, 2 GELU, 3 GELU-tanh
    pub act: u32,
    /// shaders/matmul16.wgsl's `wfmt` (0 f16, 1 bf16); unused by the f32 kernels
    pub _p: u32,
}
const _: () = assert!(std::mem::size_of::<MatmulParams>() == 32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKind {
    /// one thread per output: the benchmark baseline
    Naive,
    /// 64x64 workgroup tiles, 4x4 register blocks: prefill (8 rows or more)
    Tiled,
    /// Tiled with vec4 loads from memory and vec4 FMAs on a transposed slab; falls back to Tiled
    /// where K % 4 != 0 or the x offset is not a multiple of 4
    Tiled4,
    /// a workgroup per 32 outputs of a row, K split over 8 lanes and reduced: few-row passes
    /// (cached decoding); vec4 loads when K % 4 == 0 and the x offset is a multiple of 4
    Gemv,
}

/// The activation applied in a matmul's epilogue (`MatmulParams.act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None = 0,
    Relu = 1,
    Gelu = 2,
    /// GPT-2's GELU-tanh
    GeluTanh = 3,
}

impl Act {
    /// The epilogue for an element-wise op, if the matmul kernels have it.
    pub fn from_ew(op: EwOp) -> Option<Act> {
        match op {
            EwOp::Relu => Some(Act::Relu),
            EwOp::Gelu => Some(Act::Gelu),
            EwOp::GeluTanh => Some(Act::GeluTanh),
            _ => None,
        }
    }
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
    matmul_act(rec, out, out_off, x, x_off, m, w, b, Act::None, kind)
}

fn check(out: &GpuTensor, out_off: usize, x: &GpuTensor, x_off: usize, m: usize, w: &GpuTensor) -> Result<(usize, usize)> {
    ensure(w.shape.len() == 2, "matmul", || format!("W must be (N, K), got {:?}", w.shape))?;
    let (n, k) = (w.shape[0], w.shape[1]);
    ensure(x.len() >= x_off + m * k, "matmul", || {
        format!("x {:?} holds fewer than {m} rows of K = {k} from offset {x_off} (W {:?})", x.shape, w.shape)
    })?;
    ensure(out.len() >= out_off + m * n, "matmul", || {
        format!("out {:?} holds fewer than {m} rows of N = {n} from offset {out_off} (W {:?})", out.shape, w.shape)
    })?;
    Ok((n, k))
}

/// out[out_off..] (M, N) = act(x[x_off..] (M, K) @ W^T + b): the matmul with its epilogue.
#[allow(clippy::too_many_arguments)]
pub fn matmul_act(
    rec: &mut Recorder,
    out: &GpuTensor,
    out_off: usize,
    x: &GpuTensor,
    x_off: usize,
    m: usize,
    w: &GpuTensor,
    b: Option<&GpuTensor>,
    act: Act,
    kind: MatmulKind,
) -> Result<()> {
    let (n, k) = check(out, out_off, x, x_off, m, w)?;
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
        act: act as u32,
        _p: 0,
    };
    let gpu = rec.gpu.clone();
    let bias = b.map_or(&gpu.dummy, |b| &b.buf);
    let bufs = [&x.buf, &w.buf, bias, &out.buf];
    let (m32, n32) = (m as u32, n as u32);
    if w.dtype.is_16bit() {
        // 16-bit weights (shaders/matmul16.wgsl): the GEMV for few-row passes, the tile otherwise
        // (vec4 where Tiled4 would be; Naive has no 16-bit form and takes the scalar tile)
        let p = MatmulParams { _p: w.dtype.wfmt(), ..p };
        let tiles = [n32.div_ceil(64), m32.div_ceil(64), 1];
        return match kind {
            MatmulKind::Gemv => rec.dispatch(&gpu.k.gemv16, &p, &bufs, [n32.div_ceil(GEMV_OUTS), m32, 1]),
            MatmulKind::Tiled4 if vec4_ok(k, x_off) => rec.dispatch(&gpu.k.matmul16_tiled4, &p, &bufs, tiles),
            _ => rec.dispatch(&gpu.k.matmul16_tiled, &p, &bufs, tiles),
        };
    }
    match kind {
        MatmulKind::Naive => rec.dispatch(&gpu.k.matmul_naive, &p, &bufs, [n32.div_ceil(16), m32.div_ceil(16), 1]),
        MatmulKind::Tiled => rec.dispatch(&gpu.k.matmul_tiled, &p, &bufs, [n32.div_ceil(64), m32.div_ceil(64), 1]),
        MatmulKind::Tiled4 => {
            let kernel = if vec4_ok(k, x_off) { &gpu.k.matmul_tiled4 } else { &gpu.k.matmul_tiled };
            rec.dispatch(kernel, &p, &bufs, [n32.div_ceil(64), m32.div_ceil(64), 1])
        }
        MatmulKind::Gemv => {
            let kernel = if vec4_ok(k, x_off) { &gpu.k.gemv4 } else { &gpu.k.gemv };
            rec.dispatch(kernel, &p, &bufs, [n32.div_ceil(GEMV_OUTS), m32, 1])
        }
    }
}

/// Outputs per GEMV workgroup (OUTS in shaders/gemv.wgsl).
const GEMV_OUTS: u32 = 32;

/// The vec4 GEMV reads x and W as vec4: rows of W and the start of x must be 16-byte aligned.
fn vec4_ok(k: usize, x_off: usize) -> bool {
    k.is_multiple_of(4) && x_off.is_multiple_of(4)
}

/// out (M, N) = silu(x (M, K) @ W_gate^T) * (x @ W_up^T): SwiGLU's gate and up projections and
/// their product in one GEMV dispatch (few-row passes). W_gate, W_up (N, K), no biases.
pub fn gemv_swiglu(rec: &mut Recorder, out: &GpuTensor, x: &GpuTensor, m: usize, w_gate: &GpuTensor, w_up: &GpuTensor) -> Result<()> {
    let (n, k) = check(out, 0, x, 0, m, w_gate)?;
    ensure(w_up.shape == w_gate.shape, "gemv_swiglu", || format!("W_up {:?} must have W_gate's shape {:?}", w_up.shape, w_gate.shape))?;
    ensure(w_up.dtype == w_gate.dtype, "gemv_swiglu", || format!("W_up is {:?} but W_gate {:?}", w_up.dtype, w_gate.dtype))?;
    let p =
        MatmulParams { m: m as u32, k: k as u32, n: n as u32, has_bias: 0, x_offset: 0, out_offset: 0, act: 0, _p: w_gate.dtype.wfmt() };
    let gpu = rec.gpu.clone();
    let kernel = if w_gate.dtype.is_16bit() {
        &gpu.k.gemv16_swiglu
    } else if vec4_ok(k, 0) {
        &gpu.k.gemv4_swiglu
    } else {
        &gpu.k.gemv_swiglu
    };
    rec.dispatch(kernel, &p, &[&x.buf, &w_gate.buf, &w_up.buf, &out.buf], [(n as u32).div_ceil(GEMV_OUTS), m as u32, 1])
}

/// Mirrors `QkvParams` in shaders/qkv.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct QkvParams {
    pub m: u32,
    pub k: u32,
    pub nq: u32,
    pub nkv: u32,
    pub x_offset: u32,
    pub kv_offset: u32,
    pub _p: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<QkvParams>() == 32);

/// Whether `gemv_qkv` takes this shape: K % 4 == 0 (vec4 loads).
pub fn qkv_ok(w_q: &GpuTensor) -> bool {
    w_q.shape.len() == 2 && w_q.shape[1].is_multiple_of(4)
}

/// q (M, NQ) = x (M, K) @ W_q^T; k[kv_off..], v[kv_off..] (M, NKV) = x @ W_k^T, x @ W_v^T: the three
/// projections of attention in one GEMV dispatch (few-row passes, no biases, K % 4 == 0).
#[allow(clippy::too_many_arguments)]
pub fn gemv_qkv(
    rec: &mut Recorder,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    kv_off: usize,
    x: &GpuTensor,
    m: usize,
    w_q: &GpuTensor,
    w_k: &GpuTensor,
    w_v: &GpuTensor,
) -> Result<()> {
    if [w_q, w_k, w_v].iter().any(|w| w.dtype.is_16bit()) {
        // 16-bit weights: three 16-bit GEMVs (qkv.wgsl reads f32 weights)
        matmul(rec, q, 0, x, 0, m, w_q, None, MatmulKind::Gemv)?;
        matmul(rec, k, kv_off, x, 0, m, w_k, None, MatmulKind::Gemv)?;
        return matmul(rec, v, kv_off, x, 0, m, w_v, None, MatmulKind::Gemv);
    }
    let (nq, kk) = check(q, 0, x, 0, m, w_q)?;
    let (nkv, _) = check(k, kv_off, x, 0, m, w_k)?;
    check(v, kv_off, x, 0, m, w_v)?;
    ensure(qkv_ok(w_q) && w_k.shape[1] == kk && w_v.shape == w_k.shape, "gemv_qkv", || {
        format!("W_q {:?}, W_k {:?}, W_v {:?} must share K, a multiple of 4", w_q.shape, w_k.shape, w_v.shape)
    })?;
    let p = QkvParams { m: m as u32, k: kk as u32, nq: nq as u32, nkv: nkv as u32, x_offset: 0, kv_offset: kv_off as u32, _p: [0; 2] };
    let gpu = rec.gpu.clone();
    let groups = [((nq + 2 * nkv) as u32).div_ceil(GEMV_OUTS), m as u32, 1];
    rec.dispatch(&gpu.k.gemv_qkv, &p, &[&x.buf, &w_q.buf, &w_k.buf, &w_v.buf, &q.buf, &k.buf, &v.buf], groups)
}
