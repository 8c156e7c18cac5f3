//! The mixture-of-experts family (router, capacity, combine; shaders/moe.wgsl) and its backward
//! (the combine's gradients to one expert's output and to the gate, the router's gradient to its
//! logits, the Switch load-balancing loss; shaders/moe_bw.wgsl): their params, their pipelines
//! and their dispatch sizing. Every output is owned by one invocation and summed in a fixed order.

use bytemuck::Zeroable;

use crate::error::{ensure, Result, TfError};
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{DType, GpuTensor, Recorder};

crate::params! {
    /// The uniform params of shaders/moe.wgsl (their WGSL `struct` is written from this declaration).
    pub struct MoeParams {
        pub t: u32,
        pub e: u32,
        pub k: u32,
        pub capacity: u32,
        pub c: u32,
        pub ys_rows: u32,
        pub _p: [u32; 2],
    }
}

crate::params! {
    /// The uniform params of shaders/moe_bw.wgsl (their WGSL `struct` is written from this declaration).
    pub struct MoeBwParams {
        pub t: u32,
        pub e: u32,
        pub k: u32,
        pub c: u32,
        pub ys_rows: u32,
        /// combine_bw: the expert whose gradients are written
        pub x: u32,
        /// aux_loss: the value of `out` written
        pub slot: u32,
        /// router_bw: the load-balancing term per assignment, aux * E / (T K T)
        pub aux_scale: f32,
    }
}

/// shaders/moe.wgsl's and shaders/moe_bw.wgsl's entries.
pub struct MoeKernels {
    pub router: Kernel,
    pub capacity: Kernel,
    pub combine: Kernel,
    pub combine_bw: Kernel,
    pub counts: Kernel,
    pub router_bw: Kernel,
    pub aux_loss: Kernel,
}

impl MoeKernels {
    pub fn new(device: &wgpu::Device) -> MoeKernels {
        let m = wgsl::module(device, "moe", &[MoeParams::wgsl()], &[files::MOE]);
        let b = wgsl::module(device, "moe_bw", &[MoeBwParams::wgsl()], &[files::MOE_BW]);
        MoeKernels {
            router: Kernel::new(device, "moe_router", &m, "router"),
            capacity: Kernel::new(device, "moe_capacity", &m, "capacity"),
            combine: Kernel::new(device, "moe_combine", &m, "combine"),
            combine_bw: Kernel::new(device, "moe_combine_backward", &b, "combine_bw"),
            counts: Kernel::new(device, "moe_counts", &b, "counts"),
            router_bw: Kernel::new(device, "moe_router_backward", &b, "router_bw"),
            aux_loss: Kernel::new(device, "moe_aux_loss", &b, "aux_loss"),
        }
    }
}

/// Largest expert count the router kernel supports.
pub const MAX_EXPERTS: usize = 64;

/// logits (T, E) -> probs (T, E), experts (T, K) u32, weights (T, K)
#[allow(clippy::too_many_arguments)]
pub fn moe_router(
    rec: &mut Recorder,
    probs: &GpuTensor,
    experts: &GpuTensor,
    weights: &GpuTensor,
    logits: &GpuTensor,
    t: usize,
    e: usize,
    k: usize,
) -> Result<()> {
    ensure(logits.len() >= t * e, "moe_router", || format!("logits {:?} hold fewer than ({t}, {e}) values", logits.shape))?;
    ensure(e <= MAX_EXPERTS && k >= 1 && k <= e, "moe_router", || format!("{e} experts, top-{k}: need 1 <= k <= E <= {MAX_EXPERTS}"))?;
    ensure(probs.len() >= t * e, "moe_router", || format!("probs {:?} must be ({t}, {e})", probs.shape))?;
    ensure(experts.dtype == DType::U32 && experts.len() >= t * k, "moe_router", || {
        format!("experts {:?} must be ({t}, {k}) u32", experts.shape)
    })?;
    ensure(weights.len() >= t * k, "moe_router", || format!("weights {:?} must be ({t}, {k})", weights.shape))?;
    let p = MoeParams { t: t as u32, e: e as u32, k: k as u32, ..Zeroable::zeroed() };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.moe.router, &p, &[&logits.buf, &probs.buf, &experts.buf, &weights.buf], gpu.grid_1d((t as u32).div_ceil(64)))
}

/// experts, weights (T, K) -> gate (T, E) f32 and kept (T, K) u32, each expert keeping its first
/// `capacity` assignments in token order (None = no limit).
#[allow(clippy::too_many_arguments)]
pub fn moe_capacity(
    rec: &mut Recorder,
    gate: &GpuTensor,
    kept: &GpuTensor,
    experts: &GpuTensor,
    weights: &GpuTensor,
    t: usize,
    e: usize,
    k: usize,
    capacity: Option<usize>,
) -> Result<()> {
    ensure(experts.dtype == DType::U32 && experts.len() >= t * k && weights.len() >= t * k, "moe_capacity", || {
        format!("experts {:?} / weights {:?} must hold ({t}, {k})", experts.shape, weights.shape)
    })?;
    ensure(gate.len() >= t * e, "moe_capacity", || format!("gate {:?} must hold ({t}, {e})", gate.shape))?;
    ensure(kept.dtype == DType::U32 && kept.len() >= t * k, "moe_capacity", || format!("kept {:?} must hold ({t}, {k}) u32", kept.shape))?;
    let cap = capacity.map_or(u32::MAX, |c| c.min(u32::MAX as usize - 1) as u32);
    let p = MoeParams { t: t as u32, e: e as u32, k: k as u32, capacity: cap, ..Zeroable::zeroed() };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.moe.capacity, &p, &[&experts.buf, &weights.buf, &gate.buf, &kept.buf], [(e as u32).div_ceil(64), 1, 1])
}

/// out (T, C) = sum_e gate[t, e] * ys[e, t, :];  ys (E, ys_rows, C), gate (T, E)
#[allow(clippy::too_many_arguments)]
pub fn moe_combine(
    rec: &mut Recorder,
    out: &GpuTensor,
    ys: &GpuTensor,
    gate: &GpuTensor,
    t: usize,
    e: usize,
    c: usize,
    ys_rows: usize,
) -> Result<()> {
    ensure(t <= ys_rows && ys.len() >= e * ys_rows * c, "moe_combine", || {
        format!("ys {:?} must hold ({e}, {ys_rows} >= {t}, {c})", ys.shape)
    })?;
    ensure(gate.len() >= t * e && out.len() >= t * c, "moe_combine", || {
        format!("gate {:?} / out {:?} too small for T={t} E={e} C={c}", gate.shape, out.shape)
    })?;
    let p = MoeParams { t: t as u32, e: e as u32, c: c as u32, ys_rows: ys_rows as u32, ..Zeroable::zeroed() };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.moe.combine, &p, &[&gate.buf, &ys.buf, &out.buf], gpu.grid_1d(((t * c) as u32).div_ceil(256)))
}

fn bw_params(t: usize, e: usize, k: usize) -> MoeBwParams {
    MoeBwParams { t: t as u32, e: e as u32, k: k as u32, ..Zeroable::zeroed() }
}

/// The routing sizes the backward kernels index with: 1 <= k <= E <= [`MAX_EXPERTS`], and T*K,
/// T*E within a u32.
fn check_routing(op: &'static str, t: usize, e: usize, k: usize) -> Result<()> {
    ensure(e <= MAX_EXPERTS && k >= 1 && k <= e, op, || format!("{e} experts, top-{k}: need 1 <= k <= E <= {MAX_EXPERTS}"))?;
    ensure(t.checked_mul(e).is_some_and(|n| n <= u32::MAX as usize), op, || format!("{t} tokens of {e} experts overflow a u32 index"))
}

/// Expert x's part of `moe_combine`'s backward (`Train::moe_combine_backward`): dy (T, C) =
/// gate[t, x] dout[t, :] (written), dgate[t, x] = dout[t, :] . ys[x, t, :] (column x written, the
/// others left). gate, dgate (T, E); ys (E, ys_rows, C). One thread per value of dy; the first T
/// also own the dot products (columns in order).
pub fn moe_combine_backward(
    rec: &mut Recorder,
    [dy, dgate]: [&GpuTensor; 2],
    dout: &GpuTensor,
    ys: &GpuTensor,
    gate: &GpuTensor,
    x: usize,
    (t, e, c, ys_rows): (usize, usize, usize, usize),
) -> Result<()> {
    let op = "moe_combine_backward";
    ensure(x < e && t <= ys_rows, op, || format!("expert {x} of {e} over {t} tokens of {ys_rows} rows"))?;
    let n = t.checked_mul(c).filter(|&n| n <= u32::MAX as usize);
    let n = n.ok_or_else(|| TfError::Limit(format!("{op}: ({t}, {c}) values overflow a u32 index")))?;
    dy.need(op, DType::F32, n, "dy")?;
    dout.need(op, DType::F32, n, "dout")?;
    dgate.need(op, DType::F32, t * e, "dgate")?;
    gate.need(op, DType::F32, t * e, "gate")?;
    ys.need(op, DType::F32, e * ys_rows * c, "ys")?;
    let p = MoeBwParams { c: c as u32, ys_rows: ys_rows as u32, x: x as u32, ..bw_params(t, e, 0) };
    let gpu = rec.gpu.clone();
    let bufs = [&dout.buf, &ys.buf, &gate.buf, &dy.buf, &dgate.buf];
    rec.dispatch(&gpu.k.moe.combine_bw, &p, &bufs, gpu.grid_1d((n.max(t) as u32).div_ceil(256)))
}

/// The router's backward to its logits (`Train::moe_router_backward`), dlogits (T, E) written:
/// first each expert's assignment count into `counts` (E values of scratch), then a thread per
/// token. probs, dgate (T, E); experts, kept (T, K) u32; weights (T, K).
pub fn moe_router_backward(
    rec: &mut Recorder,
    dlogits: &GpuTensor,
    dgate: &GpuTensor,
    [probs, experts, weights, kept]: [&GpuTensor; 4],
    counts: &GpuTensor,
    (t, e, k): (usize, usize, usize),
    aux: f32,
) -> Result<()> {
    let op = "moe_router_backward";
    check_routing(op, t, e, k)?;
    for (x, what) in [(dlogits, "dlogits"), (dgate, "dgate"), (probs, "probs")] {
        x.need(op, DType::F32, t * e, what)?;
    }
    experts.need(op, DType::U32, t * k, "experts")?;
    kept.need(op, DType::U32, t * k, "kept")?;
    weights.need(op, DType::F32, t * k, "weights")?;
    counts.need(op, DType::F32, e, "counts")?;
    // aux E f_i / T with f_i = counts[i] / (T K), as one factor on the counts
    let aux_scale = (aux as f64 * e as f64 / ((t * k).max(1) as f64 * t.max(1) as f64)) as f32;
    let p = MoeBwParams { aux_scale, ..bw_params(t, e, k) };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.moe.counts, &p, &[&experts.buf, &counts.buf], [(e as u32).div_ceil(64), 1, 1])?;
    let bufs = [&experts.buf, &counts.buf, &probs.buf, &weights.buf, &kept.buf, &dgate.buf, &dlogits.buf];
    rec.dispatch(&gpu.k.moe.router_bw, &p, &bufs, gpu.grid_1d((t as u32).div_ceil(64)))
}

/// The Switch load-balancing loss (`Train::moe_aux_loss`): out[slot] = E sum_i f_i P_i over T
/// tokens, one workgroup with a thread per expert. probs (T, E); experts (T, K) u32.
pub fn moe_aux_loss(
    rec: &mut Recorder,
    out: &GpuTensor,
    slot: usize,
    probs: &GpuTensor,
    experts: &GpuTensor,
    (t, e, k): (usize, usize, usize),
) -> Result<()> {
    let op = "moe_aux_loss";
    check_routing(op, t, e, k)?;
    out.need(op, DType::F32, slot + 1, "out")?;
    probs.need(op, DType::F32, t * e, "probs")?;
    experts.need(op, DType::U32, t * k, "experts")?;
    let p = MoeBwParams { slot: slot as u32, ..bw_params(t, e, k) };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.moe.aux_loss, &p, &[&experts.buf, &probs.buf, &out.buf], [1, 1, 1])
}
