//! The mixture-of-experts family (router, capacity, combine): its params, its pipelines and their
//! dispatch sizing. Backward: not yet.

use bytemuck::Zeroable;

use crate::error::{ensure, Result};
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

/// shaders/moe.wgsl's entries.
pub struct MoeKernels {
    pub router: Kernel,
    pub capacity: Kernel,
    pub combine: Kernel,
}

impl MoeKernels {
    pub fn new(device: &wgpu::Device) -> MoeKernels {
        let m = wgsl::module(device, "moe", &[MoeParams::wgsl()], &[files::MOE]);
        MoeKernels {
            router: Kernel::new(device, "moe_router", &m, "router"),
            capacity: Kernel::new(device, "moe_capacity", &m, "capacity"),
            combine: Kernel::new(device, "moe_combine", &m, "combine"),
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
