use crate::error::{ensure, Result};
use crate::gpu::DType;
use crate::gpu::{GpuTensor, Recorder};
use crate::ops::{EwOp, RopeShape};

crate::params! {
    /// The uniform params of shaders/matmul.wgsl, gemv.wgsl (with rows.wgsl), gemv_sg.wgsl and
    /// matmul16.wgsl (their WGSL `struct` is written from this declaration).
    pub struct MatmulParams {
        pub m: u32,
        pub k: u32,
        pub n: u32,
        pub has_bias: u32,
        pub x_offset: u32,
        pub out_offset: u32,
        /// epilogue activation: 0 none, 1 ReLU, 2 GELU, 3 GELU-tanh
        pub act: u32,
        /// 16-bit weights (shaders/matmul16.wgsl): 0 f16, 1 bf16; unused by the f32 kernels
        pub wfmt: u32,
    }
}

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
    /// Gemv with the reduction in subgroup operations (shaders/gemv_sg.wgsl) where the device has
    /// them and the vec4 loads apply; Gemv otherwise
    GemvSubgroup,
    /// register-blocked, no workgroup memory and no barriers: an invocation computes a 4x4 output
    /// block (8x4 for 16-bit weights) straight from memory with vec4 loads; for CPU-emulated GPUs
    /// (SwiftShader, llvmpipe) where barriers are slow. Falls back to Tiled where K % 4 != 0 or the
    /// x offset is not a multiple of 4
    Reg,
    /// one invocation per output, K walked whole with vec4 loads, no workgroup memory or barriers
    /// (shaders/rows.wgsl): few-row passes on GPUs emulated on the CPU (SwiftShader, llvmpipe),
    /// where barriers are costly. f32 weights; 16-bit weights take the 16-bit GEMV
    Rows,
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
        wfmt: 0,
    };
    let gpu = rec.gpu.clone();
    let bias = b.map_or(&gpu.dummy, |b| &b.buf);
    let bufs = [&x.buf, &w.buf, bias, &out.buf];
    let (m32, n32) = (m as u32, n as u32);
    if w.dtype.is_16bit() {
        // 16-bit weights (shaders/matmul16.wgsl): the GEMV for few-row passes, the tile otherwise
        // (vec4 where Tiled4 would be; Naive has no 16-bit form and takes the scalar tile)
        let p = MatmulParams { wfmt: w.dtype.wfmt(), ..p };
        let tiles = [n32.div_ceil(64), m32.div_ceil(64), 1];
        return match kind {
            MatmulKind::Gemv | MatmulKind::GemvSubgroup | MatmulKind::Rows => {
                rec.dispatch(&gpu.k.gemv16, &p, &bufs, [n32.div_ceil(GEMV_OUTS), m32, 1])
            }
            MatmulKind::Tiled4 if vec4_ok(k, x_off) => rec.dispatch(&gpu.k.matmul16_tiled4, &p, &bufs, tiles),
            MatmulKind::Reg if vec4_ok(k, x_off) => rec.dispatch(&gpu.k.matmul16_reg8, &p, &bufs, [n32.div_ceil(32), m32.div_ceil(64), 1]),
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
        MatmulKind::Reg if vec4_ok(k, x_off) => rec.dispatch(&gpu.k.matmul_reg4, &p, &bufs, [n32.div_ceil(32), m32.div_ceil(32), 1]),
        MatmulKind::Reg => rec.dispatch(&gpu.k.matmul_tiled, &p, &bufs, [n32.div_ceil(64), m32.div_ceil(64), 1]),
        MatmulKind::Gemv | MatmulKind::GemvSubgroup => {
            let sg = gpu.k.gemv4_sg.as_ref().filter(|_| kind == MatmulKind::GemvSubgroup);
            let kernel = match sg {
                Some(sg) if vec4_ok(k, x_off) => sg,
                _ if vec4_ok(k, x_off) => &gpu.k.gemv4,
                _ => &gpu.k.gemv,
            };
            rec.dispatch(kernel, &p, &bufs, [n32.div_ceil(GEMV_OUTS), m32, 1])
        }
        MatmulKind::Rows => {
            let kernel = if vec4_ok(k, x_off) { &gpu.k.rows4 } else { &gpu.k.rows1 };
            rec.dispatch(kernel, &p, &bufs, [n32.div_ceil(ROWS_WG), m32, 1])
        }
    }
}

/// Invocations per workgroup of the one-invocation-per-output kernels (shaders/rows.wgsl and the
/// `rows*` entries of shaders/qkv.wgsl).
const ROWS_WG: u32 = 64;

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
        MatmulParams { m: m as u32, k: k as u32, n: n as u32, has_bias: 0, x_offset: 0, out_offset: 0, act: 0, wfmt: w_gate.dtype.wfmt() };
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

/// [`gemv_swiglu`] with one invocation per output and no barriers (shaders/rows.wgsl,
/// [`MatmulKind::Rows`]); 16-bit weights take the 16-bit GEMV.
pub fn rows_swiglu(rec: &mut Recorder, out: &GpuTensor, x: &GpuTensor, m: usize, w_gate: &GpuTensor, w_up: &GpuTensor) -> Result<()> {
    if w_gate.dtype.is_16bit() || w_up.dtype.is_16bit() {
        return gemv_swiglu(rec, out, x, m, w_gate, w_up);
    }
    let (n, k) = check(out, 0, x, 0, m, w_gate)?;
    ensure(w_up.shape == w_gate.shape, "rows_swiglu", || format!("W_up {:?} must have W_gate's shape {:?}", w_up.shape, w_gate.shape))?;
    let p = MatmulParams { m: m as u32, k: k as u32, n: n as u32, has_bias: 0, x_offset: 0, out_offset: 0, act: 0, wfmt: 0 };
    let gpu = rec.gpu.clone();
    let kernel = if vec4_ok(k, 0) { &gpu.k.rows4_swiglu } else { &gpu.k.rows1_swiglu };
    rec.dispatch(kernel, &p, &[&x.buf, &w_gate.buf, &w_up.buf, &out.buf], [(n as u32).div_ceil(ROWS_WG), m as u32, 1])
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
        &gpu.k.gemv_qkv16
    } else if rows && vec4_ok(kk, 0) {
        &gpu.k.qkv_rows4
    } else if rows {
        &gpu.k.qkv_rows1
    } else if vec4_ok(kk, 0) {
        &gpu.k.gemv_qkv4
    } else {
        &gpu.k.gemv_qkv1
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
