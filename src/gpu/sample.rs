//! The sampling family: its params, its pipelines (the workgroup sampler, and greedy sampling
//! without barriers) and their dispatch sizing. Backward: none (sampling has no gradient).

use crate::error::{ensure, Result};
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::ops::SampleParams;

crate::params! {
    /// The uniform params of shaders/sample.wgsl (their WGSL `struct` is written from this declaration).
    pub struct SampleUniform {
        pub v: u32,
        pub mode: u32,
        pub top_k: u32,
        pub logits_offset: u32,
        pub temperature: f32,
        pub top_p: f32,
        pub u: f32,
        pub _pad: u32,
    }
}

/// shaders/sample.wgsl's entries.
pub struct SampleKernels {
    /// `main`: one workgroup samples the row (greedy, temperature, top-k, top-p)
    pub main: Kernel,
    /// `greedy1`: greedy sampling by one invocation, no barriers (MatmulKind::Rows devices)
    pub greedy1: Kernel,
}

impl SampleKernels {
    pub fn new(device: &wgpu::Device) -> SampleKernels {
        let m = wgsl::module(device, "sample", &[SampleUniform::wgsl()], &[files::SAMPLE]);
        SampleKernels { main: Kernel::new(device, "sample", &m, "main"), greedy1: Kernel::new(device, "sample_greedy1", &m, "greedy1") }
    }
}

/// Writes the chosen token id to out[0] and the number of NaN/Inf logits of the row to out[1]:
/// out (>= 2,) u32. Samples from the row of V logits
/// starting at `row * V` in `logits` (so the last position of a (T, V) block can be used directly).
pub fn sample(rec: &mut Recorder, out: &GpuTensor, logits: &GpuTensor, row: usize, params: &SampleParams, u: f32) -> Result<()> {
    let v = logits.last_dim();
    ensure(row < logits.rows(), "sample", || format!("row {row} is outside logits {:?}", logits.shape))?;
    ensure(out.dtype == DType::U32 && out.len() >= 2, "sample", || format!("out {:?} must be a u32 tensor of at least 2", out.shape))?;
    ensure((0.0..1.0).contains(&u), "sample", || format!("the random number {u} must be in [0, 1)"))?;
    let p = SampleUniform {
        v: v as u32,
        mode: (!params.is_greedy()) as u32,
        top_k: params.top_k,
        logits_offset: 0,
        temperature: params.temperature,
        top_p: params.top_p,
        u,
        _pad: 0,
    };
    let gpu = rec.gpu.clone();
    let (range, logits_offset) = row_binding(&gpu, logits, row)?;
    let p = SampleUniform { logits_offset, ..p };
    rec.dispatch_ranges(&gpu.k.sample.main, &p, &[(&logits.buf, range), (&out.buf, None)], [1, 1, 1])
}

/// How the sampler binds the row `row` of `logits`: the whole buffer with the row's offset, or,
/// for logits over the binding limit (a long pass over a large vocabulary, bound by rows as the
/// matmul writes them: `Gpu::chunks`), the range of whole rows that holds it.
fn row_binding(gpu: &crate::gpu::Gpu, logits: &GpuTensor, row: usize) -> Result<(Option<(u64, u64)>, u32)> {
    let v = logits.last_dim();
    Ok(match gpu.chunks(logits, "the logits")? {
        None => (None, (row * v) as u32),
        Some(chunks) => {
            let c = chunks.iter().find(|c| (c.row0..c.row0 + c.rows).contains(&row)).copied().unwrap_or(chunks[0]);
            (Some((c.offset, c.size)), ((row - c.row0) * v) as u32)
        }
    })
}

/// [`sample`] where greedy picks run in one invocation without barriers (sample.wgsl's `greedy1`,
/// the same out[0] and out[1]): GPUs emulated on the CPU (MatmulKind::Rows). Sampled picks, and rows
/// longer than [`INVOCATION_LOOP_BUDGET`](crate::gpu::INVOCATION_LOOP_BUDGET), take [`sample`]'s kernel.
pub fn sample_one_invocation(
    rec: &mut Recorder,
    out: &GpuTensor,
    logits: &GpuTensor,
    row: usize,
    params: &SampleParams,
    u: f32,
) -> Result<()> {
    let v = logits.last_dim();
    // greedy1 walks the row in one invocation's loop: past the loop budget, the workgroup form
    if !params.is_greedy() || v > crate::gpu::INVOCATION_LOOP_BUDGET {
        return sample(rec, out, logits, row, params, u);
    }
    ensure(row < logits.rows(), "sample", || format!("row {row} is outside logits {:?}", logits.shape))?;
    ensure(out.dtype == DType::U32 && out.len() >= 2, "sample", || format!("out {:?} must be a u32 tensor of at least 2", out.shape))?;
    let gpu = rec.gpu.clone();
    let (range, logits_offset) = row_binding(&gpu, logits, row)?;
    let p = SampleUniform { v: v as u32, mode: 0, top_k: 0, logits_offset, temperature: 0.0, top_p: 1.0, u, _pad: 0 };
    rec.dispatch_ranges(&gpu.k.sample.greedy1, &p, &[(&logits.buf, range), (&out.buf, None)], [1, 1, 1])
}
