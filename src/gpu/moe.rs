use bytemuck::{Pod, Zeroable};

use crate::error::{ensure, Result};
use crate::gpu::{DType, GpuTensor, Recorder};

/// Mirrors `MoeParams` in shaders/moe.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct MoeParams {
    pub t: u32,
    pub e: u32,
    pub k: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<MoeParams>() == 16);

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
    let p = MoeParams { t: t as u32, e: e as u32, k: k as u32, _pad: 0 };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.moe_router, &p, &[&logits.buf, &probs.buf, &experts.buf, &weights.buf], gpu.grid_1d((t as u32).div_ceil(64)))
}
