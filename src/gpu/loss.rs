//! The loss family: softmax + cross-entropy per row, fused (shaders/loss.wgsl, an invocation per
//! row): its params, its pipeline and its dispatch sizing. It is its own backward: the logits are
//! replaced by the loss's gradient.

use crate::error::Result;
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{DType, GpuTensor, Recorder};

crate::params! {
    /// The uniform params of shaders/loss.wgsl (their WGSL `struct` is written from this declaration).
    pub struct LossParams {
        pub rows: u32,
        pub v: u32,
        pub has_ignore: u32,
        pub ignore: u32,
        pub scale: f32,
        pub _p: [u32; 3],
    }
}

/// shaders/loss.wgsl's entry.
pub struct LossKernels {
    pub cross_entropy: Kernel,
}

impl LossKernels {
    pub fn new(device: &wgpu::Device) -> LossKernels {
        let m = wgsl::module(device, "loss", &[LossParams::wgsl()], &[files::LOSS]);
        LossKernels { cross_entropy: Kernel::new(device, "cross_entropy", &m, "cross_entropy") }
    }
}

/// losses[r] = -log softmax(logits[r])[targets[r]], and logits[r] replaced by scale * (softmax -
/// onehot) (`Train::cross_entropy`). logits (rows, V), targets (rows,) u32, losses (rows,). A row
/// whose target is `ignore` gets loss 0 and gradient 0; a target >= V gets a NaN loss (the
/// training graph checks the targets it feeds).
pub fn cross_entropy(
    rec: &mut Recorder,
    losses: &GpuTensor,
    logits: &GpuTensor,
    targets: &GpuTensor,
    rows: usize,
    scale: f32,
    ignore: Option<u32>,
) -> Result<()> {
    let op = "cross_entropy";
    let v = logits.last_dim();
    logits.need(op, DType::F32, rows * v, "logits")?;
    targets.need(op, DType::U32, rows, "targets")?;
    losses.need(op, DType::F32, rows, "losses")?;
    let p =
        LossParams { rows: rows as u32, v: v as u32, has_ignore: ignore.is_some() as u32, ignore: ignore.unwrap_or(0), scale, _p: [0; 3] };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.loss.cross_entropy, &p, &[&targets.buf, &logits.buf, &losses.buf], gpu.grid_1d((rows as u32).div_ceil(64)))
}
