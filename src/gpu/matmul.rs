//! The matmul family: out = act(x @ W^T + b) over f32 or 16-bit weights, and SwiGLU's fused gate
//! and up GEMV. It owns the params, the pipelines (tiles, register blocks, GEMVs, the barrier-free
//! `rows` forms and the 16-bit forms), their dispatch sizing, and the choice among them: which
//! [`MatmulKind`] a pass of M rows takes ([`MatmulKind::for_rows`]) and which pipeline a kind,
//! a weight dtype and a shape run ([`MatmulKernels::select`]). The q/k/v projection is its own
//! family (gpu::qkv). Backward: [`matmul_backward`] (shaders/matmul_bw.wgsl: dx and dW in
//! register blocks, db an invocation per value, every sum in order).

use crate::error::{ensure, Result};
use crate::gpu::context::{Kernel, RowChunk};
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::ops::EwOp;

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
        /// out's row stride: N, or the whole N of a weight bound by rows ([`matmul_act`] over
        /// `Gpu::row_chunks`), whose range of N columns starts at `out_offset`
        pub ldo: u32,
        /// where b's N values start (a weight bound by rows: its first row)
        pub b_offset: u32,
        pub _p: [u32; 2],
    }
}

impl MatmulParams {
    /// A pass of M rows against W (N, K) with weight format `wfmt`: no bias, no offsets, no
    /// activation, out's row stride N.
    fn plain(m: usize, k: usize, n: usize, wfmt: u32) -> MatmulParams {
        MatmulParams {
            m: m as u32,
            k: k as u32,
            n: n as u32,
            has_bias: 0,
            x_offset: 0,
            out_offset: 0,
            act: 0,
            wfmt,
            ldo: n as u32,
            b_offset: 0,
            _p: [0; 2],
        }
    }
}

/// Serialised by the names the page, the benchmarks and `gpu::policy` use: "naive", "tiled",
/// "tiled4", "gemv", "gemv_subgroup", "reg", "rows".
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// register-blocked, no workgroup memory and no barriers: an invocation computes an 8x8 output
    /// block (8x4 for 16-bit weights) straight from memory with vec4 loads; for CPU-emulated GPUs
    /// (SwiftShader, llvmpipe) where barriers are slow. Falls back to Tiled where K % 4 != 0 or the
    /// x offset is not a multiple of 4
    Reg,
    /// one invocation per output, K walked whole with vec4 loads, no workgroup memory or barriers
    /// (shaders/rows.wgsl): few-row passes on GPUs emulated on the CPU (SwiftShader, llvmpipe),
    /// where barriers are costly. f32 weights; 16-bit weights take the 16-bit GEMV
    Rows,
}

/// Passes with fewer rows than this take the few-row kernel (`few` of [`MatmulKind::for_rows`]):
/// a 64-row tile would compute 63 wasted rows for the one-row passes of cached decoding.
pub const SMALL_M: usize = 8;

impl MatmulKind {
    /// The kind of a pass of `m` rows: `few` below [`SMALL_M`] rows, where the GEMV reduces in
    /// subgroup operations if `subgroups` is asked and the device has them (the kernels have
    /// `gemv4_sg`), `many` from there.
    pub fn for_rows(m: usize, many: MatmulKind, few: MatmulKind, subgroups: bool, k: &MatmulKernels) -> MatmulKind {
        if m >= SMALL_M {
            return many;
        }
        match few {
            MatmulKind::Gemv if subgroups && k.gemv4_sg.is_some() => MatmulKind::GemvSubgroup,
            kind => kind,
        }
    }
}

/// shaders/matmul.wgsl, gemv.wgsl with rows.wgsl, gemv_sg.wgsl and matmul16.wgsl (over
/// half.wgsl): every pipeline of the family.
pub struct MatmulKernels {
    pub naive: Kernel,
    pub tiled: Kernel,
    pub tiled4: Kernel,
    /// matmul.wgsl `reg4`: register-blocked (8x8 blocks), barrier-free (MatmulKind::Reg)
    pub reg4: Kernel,
    pub gemv: Kernel,
    pub gemv4: Kernel,
    pub gemv_swiglu: Kernel,
    pub gemv4_swiglu: Kernel,
    /// shaders/gemv_sg.wgsl: gemv4 with a subgroup reduction; only where the device has subgroups
    pub gemv4_sg: Option<Kernel>,
    /// shaders/rows.wgsl: few-row matmuls with one invocation per output and no barriers
    /// (MatmulKind::Rows; GPUs emulated on the CPU)
    pub rows4: Kernel,
    pub rows1: Kernel,
    pub rows4_swiglu: Kernel,
    pub rows1_swiglu: Kernel,
    /// shaders/matmul16.wgsl: the tiles and the GEMV over 16-bit weights (packed pairs)
    pub tiled16: Kernel,
    pub tiled4_16: Kernel,
    /// matmul16.wgsl `reg8`: register-blocked, barrier-free (MatmulKind::Reg)
    pub reg8_16: Kernel,
    pub gemv16: Kernel,
    pub gemv16_swiglu: Kernel,
    /// shaders/matmul_bw.wgsl: the backward's dx and dW as register blocks, 8x8 with vec4 loads
    /// (`bw_dx4`: K % 4 == 0; `bw_dw4`: K and N % 4 == 0) or 4x4 with scalar loads (any shape), and db
    pub bw_dx4: Kernel,
    pub bw_dw4: Kernel,
    pub bw_dx: Kernel,
    pub bw_dw: Kernel,
    pub bw_db: Kernel,
}

impl MatmulKernels {
    pub fn new(device: &wgpu::Device, subgroups: bool) -> MatmulKernels {
        let p = [MatmulParams::wgsl()];
        let matmul = wgsl::module(device, "matmul", &p, &[files::MATMUL]);
        // rows.wgsl's barrier-free entries share gemv.wgsl's params and bindings
        let gemv = wgsl::module(device, "gemv", &p, &[files::GEMV, files::ROWS]);
        // (naga 30 takes subgroup builtins with the device feature alone: no `enable subgroups;`)
        let gemv_sg = subgroups.then(|| wgsl::module(device, "gemv_sg", &p, &[files::GEMV_SG]));
        let m16 = wgsl::module(device, "matmul16", &p, &[files::HALF, files::MATMUL16]);
        let bw = wgsl::module(device, "matmul_bw", &[MatmulBwParams::wgsl()], &[files::MATMUL_BW]);
        let mk = |name: &'static str, m: &wgsl::Module, entry: &str| Kernel::new(device, name, m, entry);
        MatmulKernels {
            naive: mk("matmul_naive", &matmul, "naive"),
            tiled: mk("matmul_tiled", &matmul, "tiled"),
            tiled4: mk("matmul_tiled4", &matmul, "tiled4"),
            reg4: mk("matmul_reg4", &matmul, "reg4"),
            gemv: mk("gemv", &gemv, "gemv"),
            gemv4: mk("gemv4", &gemv, "gemv4"),
            gemv_swiglu: mk("gemv_swiglu", &gemv, "gemv_swiglu"),
            gemv4_swiglu: mk("gemv4_swiglu", &gemv, "gemv4_swiglu"),
            gemv4_sg: gemv_sg.as_ref().map(|m| mk("gemv4_sg", m, "gemv4")),
            rows4: mk("rows4", &gemv, "rows4"),
            rows1: mk("rows1", &gemv, "rows1"),
            rows4_swiglu: mk("rows4_swiglu", &gemv, "rows4_swiglu"),
            rows1_swiglu: mk("rows1_swiglu", &gemv, "rows1_swiglu"),
            tiled16: mk("matmul16_tiled", &m16, "tiled"),
            tiled4_16: mk("matmul16_tiled4", &m16, "tiled4"),
            reg8_16: mk("matmul16_reg8", &m16, "reg8"),
            gemv16: mk("gemv16", &m16, "gemv"),
            gemv16_swiglu: mk("gemv16_swiglu", &m16, "gemv_swiglu"),
            bw_dx4: mk("matmul_bw_dx4", &bw, "dx4"),
            bw_dw4: mk("matmul_bw_dw4", &bw, "dw4"),
            bw_dx: mk("matmul_bw_dx", &bw, "dx"),
            bw_dw: mk("matmul_bw_dw", &bw, "dw"),
            bw_db: mk("matmul_bw_db", &bw, "db"),
        }
    }

    /// The pipeline and workgroup grid of an (M, K) x (N, K)^T product for `kind`: 16-bit weights
    /// take matmul16.wgsl (the GEMV for the few-row kinds, the vec4 tile where Tiled4 would be, the
    /// 8x4 register block for Reg, the scalar tile otherwise: Naive has no 16-bit form); the vec4
    /// forms need [`vec4_ok`] and fall back to their scalar twins (Tiled4 and Reg to the tile).
    pub fn select(&self, kind: MatmulKind, w16: bool, m: usize, k: usize, n: usize, x_off: usize) -> (&Kernel, [u32; 3]) {
        let (m32, n32) = (m as u32, n as u32);
        let tiles = [n32.div_ceil(64), m32.div_ceil(64), 1];
        let v4 = vec4_ok(k, x_off);
        if w16 {
            return match kind {
                MatmulKind::Gemv | MatmulKind::GemvSubgroup | MatmulKind::Rows => (&self.gemv16, [n32.div_ceil(GEMV_OUTS), m32, 1]),
                MatmulKind::Tiled4 if v4 => (&self.tiled4_16, tiles),
                MatmulKind::Reg if v4 => (&self.reg8_16, [n32.div_ceil(32), m32.div_ceil(64), 1]),
                _ => (&self.tiled16, tiles),
            };
        }
        match kind {
            MatmulKind::Naive => (&self.naive, [n32.div_ceil(16), m32.div_ceil(16), 1]),
            MatmulKind::Tiled4 if v4 => (&self.tiled4, tiles),
            MatmulKind::Reg if v4 => (&self.reg4, [n32.div_ceil(32), m32.div_ceil(32), 1]),
            MatmulKind::Tiled | MatmulKind::Tiled4 | MatmulKind::Reg => (&self.tiled, tiles),
            MatmulKind::Gemv | MatmulKind::GemvSubgroup => {
                let sg = self.gemv4_sg.as_ref().filter(|_| kind == MatmulKind::GemvSubgroup && v4);
                let kernel = match sg {
                    Some(sg) => sg,
                    None if v4 => &self.gemv4,
                    None => &self.gemv,
                };
                (kernel, [n32.div_ceil(GEMV_OUTS), m32, 1])
            }
            MatmulKind::Rows => (if v4 { &self.rows4 } else { &self.rows1 }, [n32.div_ceil(ROWS_WG), m32, 1]),
        }
    }
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

pub(crate) fn check(out: &GpuTensor, out_off: usize, x: &GpuTensor, x_off: usize, m: usize, w: &GpuTensor) -> Result<(usize, usize)> {
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
        has_bias: b.is_some() as u32,
        x_offset: x_off as u32,
        out_offset: out_off as u32,
        act: act as u32,
        ..MatmulParams::plain(m, k, n, w.dtype.wfmt())
    };
    let gpu = rec.gpu.clone();
    let bias = b.map_or(&gpu.dummy, |b| &b.buf);
    let w_chunks = gpu.chunks(w, "the matmul's W")?;
    let out_segs = out_segments(&gpu, out, out_off, m, n)?;
    if w_chunks.is_none() && out_segs.is_none() {
        let (kernel, groups) = gpu.k.matmul.select(kind, w.dtype.is_16bit(), m, k, n, x_off);
        return rec.dispatch(kernel, &p, &[&x.buf, &w.buf, bias, &out.buf], groups);
    }
    // W over the binding limit (a large head): one dispatch per range of its rows, each writing
    // its columns of out's rows of N; out over it (the logits of a long pass): one per range of
    // out's rows, bound alone, reading the matching rows of x
    let whole_w = [RowChunk { row0: 0, rows: n, offset: 0, size: 0 }];
    let out_whole = [OutSegment { range: None, first: 0, rows: m, out_offset: out_off }];
    for seg in out_segs.as_deref().unwrap_or(&out_whole) {
        for c in w_chunks.as_deref().unwrap_or(&whole_w) {
            let x_off = x_off + seg.first * k;
            let p = MatmulParams {
                m: seg.rows as u32,
                n: c.rows as u32,
                x_offset: x_off as u32,
                out_offset: (seg.out_offset + c.row0) as u32,
                b_offset: c.row0 as u32,
                ..p
            };
            let w_range = w_chunks.is_some().then_some((c.offset, c.size));
            let (kernel, groups) = gpu.k.matmul.select(kind, w.dtype.is_16bit(), seg.rows, k, c.rows, x_off);
            rec.dispatch_ranges(kernel, &p, &[(&x.buf, None), (&w.buf, w_range), (bias, None), (&out.buf, seg.range)], groups)?;
        }
    }
    Ok(())
}

/// Rows `first..first + rows` of a pass, written into a binding of out (`range`: `(offset, size)`
/// bytes, `None`: the whole buffer) from its element `out_offset`.
struct OutSegment {
    range: Option<(u64, u64)>,
    first: usize,
    rows: usize,
    out_offset: usize,
}

/// How the M rows of N values written into `out` from `out_off` are bound: `None` when out fits
/// one binding, else out's rows of N cut as `Gpu::row_chunks` cuts a weight (whole rows, aligned
/// offsets), each range with the pass's rows that land in it.
fn out_segments(gpu: &crate::gpu::Gpu, out: &GpuTensor, out_off: usize, m: usize, n: usize) -> Result<Option<Vec<OutSegment>>> {
    let bytes = out.len() as u64 * 4;
    if bytes <= gpu.limits.max_storage_buffer_binding_size || m == 0 || n == 0 {
        return Ok(None);
    }
    ensure(out_off.is_multiple_of(n) && out.len().is_multiple_of(n), "matmul", || {
        format!("out {:?} is over the binding limit, so it is bound by rows of N = {n}, but offset {out_off} is not at a row", out.shape)
    })?;
    let Some(chunks) = gpu.row_chunks(bytes, out.len() / n, n as u64 * 4, "the matmul's out")? else { return Ok(None) };
    let (lo, hi) = (out_off / n, out_off / n + m);
    Ok(Some(
        chunks
            .iter()
            .filter(|c| c.row0 < hi && c.row0 + c.rows > lo)
            .map(|c| {
                let (a, b) = (c.row0.max(lo), (c.row0 + c.rows).min(hi));
                OutSegment { range: Some((c.offset, c.size)), first: a - lo, rows: b - a, out_offset: (a - c.row0) * n }
            })
            .collect(),
    ))
}

/// Invocations per workgroup of the one-invocation-per-output kernels (shaders/rows.wgsl and the
/// `rows*` entries of shaders/qkv.wgsl).
pub(crate) const ROWS_WG: u32 = 64;

/// Outputs per GEMV workgroup (OUTS in shaders/gemv.wgsl).
pub(crate) const GEMV_OUTS: u32 = 32;

/// The vec4 GEMV reads x and W as vec4: rows of W and the start of x must be 16-byte aligned.
pub(crate) fn vec4_ok(k: usize, x_off: usize) -> bool {
    k.is_multiple_of(4) && x_off.is_multiple_of(4)
}

/// out (M, N) = silu(x (M, K) @ W_gate^T) * (x @ W_up^T): SwiGLU's gate and up projections and
/// their product in one GEMV dispatch (few-row passes). W_gate, W_up (N, K), no biases.
pub fn gemv_swiglu(rec: &mut Recorder, out: &GpuTensor, x: &GpuTensor, m: usize, w_gate: &GpuTensor, w_up: &GpuTensor) -> Result<()> {
    let (n, k) = check(out, 0, x, 0, m, w_gate)?;
    ensure(w_up.shape == w_gate.shape, "gemv_swiglu", || format!("W_up {:?} must have W_gate's shape {:?}", w_up.shape, w_gate.shape))?;
    ensure(w_up.dtype == w_gate.dtype, "gemv_swiglu", || format!("W_up is {:?} but W_gate {:?}", w_up.dtype, w_gate.dtype))?;
    let p = MatmulParams::plain(m, k, n, w_gate.dtype.wfmt());
    let gpu = rec.gpu.clone();
    let kernel = if w_gate.dtype.is_16bit() {
        &gpu.k.matmul.gemv16_swiglu
    } else if vec4_ok(k, 0) {
        &gpu.k.matmul.gemv4_swiglu
    } else {
        &gpu.k.matmul.gemv_swiglu
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
    let p = MatmulParams::plain(m, k, n, 0);
    let gpu = rec.gpu.clone();
    let kernel = if vec4_ok(k, 0) { &gpu.k.matmul.rows4_swiglu } else { &gpu.k.matmul.rows1_swiglu };
    rec.dispatch(kernel, &p, &[&x.buf, &w_gate.buf, &w_up.buf, &out.buf], [(n as u32).div_ceil(ROWS_WG), m as u32, 1])
}

/// Outputs along each side of a matmul_bw.wgsl dx or dW workgroup (4x4 invocations of 8x8 blocks,
/// or 8x8 of 4x4).
const BW_TILE: u32 = 32;

crate::params! {
    /// The uniform params of shaders/matmul_bw.wgsl (their WGSL `struct` is written from this declaration).
    pub struct MatmulBwParams {
        pub m: u32,
        pub n: u32,
        pub k: u32,
        /// dx is added to (1) or written (0)
        pub acc: u32,
    }
}

/// The backward of `out = x @ W^T + b` over M rows, W (N, K), f32: dx (M, K) = dy @ W (written,
/// or added when its flag is set), and the parameters' gradients (dw, db): dw (N, K) += dy^T @ x,
/// db (N,) += the column sums of dy. Each output value is summed in order by one invocation, which
/// computes an 8x8 block of dx or dW (vec4 loads; 4x4 of scalar loads where K, or N for dW, is not
/// a multiple of 4), so the sums and their bits are those of one invocation per value
/// (`Train::matmul_backward`).
pub fn matmul_backward(
    rec: &mut Recorder,
    dx: Option<(&GpuTensor, bool)>,
    (dw, db): (&GpuTensor, Option<&GpuTensor>),
    dy: &GpuTensor,
    x: &GpuTensor,
    w: &GpuTensor,
    m: usize,
) -> Result<()> {
    let op = "matmul_backward";
    ensure(w.shape.len() == 2 && w.dtype == DType::F32, op, || format!("W must be (N, K) f32, got {:?} {:?}", w.shape, w.dtype))?;
    let (n, k) = (w.shape[0], w.shape[1]);
    dy.need(op, DType::F32, m * n, "dy")?;
    x.need(op, DType::F32, m * k, "x")?;
    dw.need(op, DType::F32, n * k, "dw")?;
    if let Some((d, _)) = dx {
        d.need(op, DType::F32, m * k, "dx")?;
    }
    if let Some(b) = db {
        b.need(op, DType::F32, n, "db")?;
    }
    let gpu = rec.gpu.clone();
    let grid = |count: usize| gpu.grid_1d((count as u32).div_ceil(256));
    // 32x32 outputs a workgroup, x along the output's columns (K)
    let blocks = |rows: usize| [(k as u32).div_ceil(BW_TILE), (rows as u32).div_ceil(BW_TILE), 1];
    let p = |acc: bool| MatmulBwParams { m: m as u32, n: n as u32, k: k as u32, acc: acc as u32 };
    let kn = &gpu.k.matmul;
    if let Some((d, acc)) = dx {
        let kernel = if k.is_multiple_of(4) { &kn.bw_dx4 } else { &kn.bw_dx };
        rec.dispatch(kernel, &p(acc), &[&dy.buf, &gpu.dummy, &w.buf, &d.buf], blocks(m))?;
    }
    let kernel = if k.is_multiple_of(4) && n.is_multiple_of(4) { &kn.bw_dw4 } else { &kn.bw_dw };
    rec.dispatch(kernel, &p(true), &[&dy.buf, &x.buf, &gpu.dummy, &dw.buf], blocks(n))?;
    if let Some(b) = db {
        rec.dispatch(&gpu.k.matmul.bw_db, &p(true), &[&dy.buf, &gpu.dummy, &gpu.dummy, &b.buf], grid(n))?;
    }
    Ok(())
}
