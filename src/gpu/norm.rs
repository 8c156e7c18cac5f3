//! The norm family: LayerNorm, RMSNorm and the residual add + norm, their params, their pipelines
//! (a workgroup per row over rowsum.wgsl, or an invocation per row over rowsum1.wgsl), dispatch
//! sizing and the choice between the two forms (`RowKind`). Backward: [`norm_backward`]
//! (shaders/norm_bw.wgsl: dx a row at a time in either form, writing each
//! row's statistics to a scratch buffer, then the gain and shift gradients a column at a time).

use crate::error::{ensure, Result};
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{DType, GpuTensor, Recorder, RowKind};

crate::params! {
    /// The uniform params of shaders/norm.wgsl (their WGSL `struct` is written from this declaration).
    pub struct NormParams {
        pub rows: u32,
        pub c: u32,
        pub eps: f32,
        pub _pad: u32,
    }
}

/// shaders/norm.wgsl and addnorm.wgsl, each over rowsum.wgsl (a workgroup per row) and, the `1`
/// forms, over rowsum1.wgsl (an invocation per row: RowKind::Invocation).
pub struct NormKernels {
    pub layernorm: Kernel,
    pub rmsnorm: Kernel,
    pub add_norm: Kernel,
    pub layernorm1: Kernel,
    pub rmsnorm1: Kernel,
    pub add_norm1: Kernel,
    /// shaders/norm_bw.wgsl: dx per row (over rowsum.wgsl, and the `1` forms over rowsum1.wgsl),
    /// then the gain (and shift) gradients per column
    pub layernorm_dx: Kernel,
    pub rmsnorm_dx: Kernel,
    pub layernorm_dx1: Kernel,
    pub rmsnorm_dx1: Kernel,
    pub layernorm_dgdb: Kernel,
    pub rmsnorm_dw: Kernel,
}

impl NormKernels {
    pub fn new(device: &wgpu::Device) -> NormKernels {
        let (np, ap) = ([NormParams::wgsl()], [AddNormParams::wgsl()]);
        let norm = wgsl::module(device, "norm", &np, &[files::ROWSUM, files::NORM]);
        let addnorm = wgsl::module(device, "addnorm", &ap, &[files::ROWSUM, files::ADDNORM]);
        let norm1 = wgsl::module(device, "norm1", &np, &[files::ROWSUM1, files::NORM]);
        let addnorm1 = wgsl::module(device, "addnorm1", &ap, &[files::ROWSUM1, files::ADDNORM]);
        let bw = wgsl::module(device, "norm_bw", &np, &[files::ROWSUM, files::NORM_BW]);
        let bw1 = wgsl::module(device, "norm_bw1", &np, &[files::ROWSUM1, files::NORM_BW]);
        NormKernels {
            layernorm: Kernel::new(device, "layernorm", &norm, "layernorm"),
            rmsnorm: Kernel::new(device, "rmsnorm", &norm, "rmsnorm"),
            add_norm: Kernel::new(device, "add_norm", &addnorm, "main"),
            layernorm1: Kernel::new(device, "layernorm1", &norm1, "layernorm"),
            rmsnorm1: Kernel::new(device, "rmsnorm1", &norm1, "rmsnorm"),
            add_norm1: Kernel::new(device, "add_norm1", &addnorm1, "main"),
            layernorm_dx: Kernel::new(device, "layernorm_dx", &bw, "layernorm_dx"),
            rmsnorm_dx: Kernel::new(device, "rmsnorm_dx", &bw, "rmsnorm_dx"),
            layernorm_dx1: Kernel::new(device, "layernorm_dx1", &bw1, "layernorm_dx"),
            rmsnorm_dx1: Kernel::new(device, "rmsnorm_dx1", &bw1, "rmsnorm_dx"),
            layernorm_dgdb: Kernel::new(device, "layernorm_dgdb", &bw, "layernorm_dgdb"),
            rmsnorm_dw: Kernel::new(device, "rmsnorm_dw", &bw, "rmsnorm_dw"),
        }
    }
}

fn check(op: &'static str, out: &GpuTensor, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, rows: usize) -> Result<usize> {
    let c = w.len();
    ensure(x.len() >= rows * c && out.len() >= rows * c, op, || {
        format!("x {:?} and out {:?} must hold {rows} rows of C = {c} (weight {:?})", x.shape, out.shape, w.shape)
    })?;
    if let Some(b) = b {
        ensure(b.len() == c, op, || format!("bias {:?} must have C = {c} values like the weight", b.shape))?;
    }
    Ok(c)
}

/// out = LayerNorm(x) * gamma + beta over the last dim, first `rows` rows. x, out (rows, C); gamma, beta (C,)
pub fn layernorm(
    rec: &mut Recorder,
    out: &GpuTensor,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    rows: usize,
    eps: f32,
) -> Result<()> {
    layernorm_kind(rec, out, x, gamma, beta, rows, eps, RowKind::Workgroup)
}

/// [`layernorm`] with the kernel chosen (a workgroup or an invocation per row).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_kind(
    rec: &mut Recorder,
    out: &GpuTensor,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    rows: usize,
    eps: f32,
    kind: RowKind,
) -> Result<()> {
    let c = check("layernorm", out, x, gamma, Some(beta), rows)?;
    let p = NormParams { rows: rows as u32, c: c as u32, eps, _pad: 0 };
    let gpu = rec.gpu.clone();
    let k = if kind == RowKind::Invocation { &gpu.k.norm.layernorm1 } else { &gpu.k.norm.layernorm };
    rec.dispatch(k, &p, &[&x.buf, &gamma.buf, &beta.buf, &out.buf], gpu.grid_1d(rows as u32))
}

/// out = x * rsqrt(mean(x^2) + eps) * weight over the last dim, first `rows` rows. x, out (rows, C); weight (C,)
pub fn rmsnorm(rec: &mut Recorder, out: &GpuTensor, x: &GpuTensor, weight: &GpuTensor, rows: usize, eps: f32) -> Result<()> {
    rmsnorm_kind(rec, out, x, weight, rows, eps, RowKind::Workgroup)
}

/// [`rmsnorm`] with the kernel chosen (a workgroup or an invocation per row).
pub fn rmsnorm_kind(
    rec: &mut Recorder,
    out: &GpuTensor,
    x: &GpuTensor,
    weight: &GpuTensor,
    rows: usize,
    eps: f32,
    kind: RowKind,
) -> Result<()> {
    let c = check("rmsnorm", out, x, weight, None, rows)?;
    let p = NormParams { rows: rows as u32, c: c as u32, eps, _pad: 0 };
    let gpu = rec.gpu.clone();
    let k = if kind == RowKind::Invocation { &gpu.k.norm.rmsnorm1 } else { &gpu.k.norm.rmsnorm };
    rec.dispatch(k, &p, &[&x.buf, &weight.buf, &gpu.dummy, &out.buf], gpu.grid_1d(rows as u32))
}

crate::params! {
    /// The uniform params of shaders/addnorm.wgsl (their WGSL `struct` is written from this declaration).
    pub struct AddNormParams {
        pub rows: u32,
        pub c: u32,
        pub eps: f32,
        pub layernorm: u32,
        pub in_place: u32,
        pub _p: [u32; 3],
    }
}

/// The residual add and the norm after it, in one dispatch. x, y, out (rows, C); gamma, beta (C,).
/// x = x + y, then out = norm(x) (`out` given: pre-norm blocks) or x = norm(x) (`out` None:
/// post-norm blocks). The norm is LayerNorm with `beta`, RMSNorm without.
#[allow(clippy::too_many_arguments)]
pub fn add_norm(
    rec: &mut Recorder,
    x: &GpuTensor,
    y: &GpuTensor,
    out: Option<&GpuTensor>,
    gamma: &GpuTensor,
    beta: Option<&GpuTensor>,
    rows: usize,
    eps: f32,
) -> Result<()> {
    add_norm_kind(rec, x, y, out, gamma, beta, rows, eps, RowKind::Workgroup)
}

/// [`add_norm`] with the kernel chosen (a workgroup or an invocation per row).
#[allow(clippy::too_many_arguments)]
pub fn add_norm_kind(
    rec: &mut Recorder,
    x: &GpuTensor,
    y: &GpuTensor,
    out: Option<&GpuTensor>,
    gamma: &GpuTensor,
    beta: Option<&GpuTensor>,
    rows: usize,
    eps: f32,
    kind: RowKind,
) -> Result<()> {
    let c = check("add_norm", out.unwrap_or(x), x, gamma, beta, rows)?;
    ensure(y.len() >= rows * c, "add_norm", || format!("y {:?} must hold {rows} rows of C = {c}", y.shape))?;
    let p =
        AddNormParams { rows: rows as u32, c: c as u32, eps, layernorm: beta.is_some() as u32, in_place: out.is_none() as u32, _p: [0; 3] };
    let gpu = rec.gpu.clone();
    let beta = beta.map_or(&gpu.dummy, |b| &b.buf);
    let out = out.map_or(&gpu.dummy_rw, |o| &o.buf);
    let k = if kind == RowKind::Invocation { &gpu.k.norm.add_norm1 } else { &gpu.k.norm.add_norm };
    rec.dispatch(k, &p, &[&y.buf, &gamma.buf, beta, &x.buf, out], gpu.grid_1d(rows as u32))
}

/// A norm's backward tensors: dx += , dg += and, for LayerNorm, db += , from dy at the norm's
/// input x with the gain g. x, dy, dx (rows, C); g, dg, db (C,); `stats` a scratch of 2 values
/// a row for LayerNorm (mean, 1/std), 1 for RMSNorm (1/rms).
pub struct NormBackward<'a> {
    pub dx: &'a GpuTensor,
    pub dg: &'a GpuTensor,
    /// the shift's gradient: LayerNorm; None: RMSNorm
    pub db: Option<&'a GpuTensor>,
    pub dy: &'a GpuTensor,
    pub x: &'a GpuTensor,
    pub g: &'a GpuTensor,
    pub stats: &'a GpuTensor,
}

/// LayerNorm's (`t.db` given) or RMSNorm's backward from its input (`Train::layernorm_backward`,
/// `Train::rmsnorm_backward`): dx a row at a time in the form `kind` says (a workgroup or an
/// invocation per row), then the gain (and shift) gradients a column at a time.
pub fn norm_backward(rec: &mut Recorder, t: &NormBackward, rows: usize, eps: f32, kind: RowKind) -> Result<()> {
    let layer = t.db.is_some();
    let op = if layer { "layernorm_backward" } else { "rmsnorm_backward" };
    let c = t.g.len();
    t.g.need(op, DType::F32, c, "the gain")?;
    for (x, what) in [(t.dx, "dx"), (t.dy, "dy"), (t.x, "x")] {
        x.need(op, DType::F32, rows * c, what)?;
    }
    for g in [Some(t.dg), t.db].into_iter().flatten() {
        g.need(op, DType::F32, c, "a gain or shift gradient")?;
    }
    t.stats.need(op, DType::F32, rows * (1 + layer as usize), "the scratch")?;
    let p = NormParams { rows: rows as u32, c: c as u32, eps, _pad: 0 };
    let gpu = rec.gpu.clone();
    let nk = &gpu.k.norm;
    let k = match (layer, kind) {
        (true, RowKind::Invocation) => &nk.layernorm_dx1,
        (true, RowKind::Workgroup) => &nk.layernorm_dx,
        (false, RowKind::Invocation) => &nk.rmsnorm_dx1,
        (false, RowKind::Workgroup) => &nk.rmsnorm_dx,
    };
    rec.dispatch(k, &p, &[&t.dy.buf, &t.x.buf, &t.g.buf, &t.stats.buf, &t.dx.buf], gpu.grid_1d(rows as u32))?;
    let cols = gpu.grid_1d((c as u32).div_ceil(256));
    let d = &gpu.dummy;
    match t.db {
        Some(db) => rec.dispatch(&nk.layernorm_dgdb, &p, &[&t.dy.buf, &t.x.buf, d, &t.stats.buf, d, &t.dg.buf, &db.buf], cols),
        None => rec.dispatch(&nk.rmsnorm_dw, &p, &[&t.dy.buf, &t.x.buf, d, &t.stats.buf, d, &t.dg.buf], cols),
    }
}
