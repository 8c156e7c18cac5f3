//! The optimizer family (shaders/optim.wgsl): the gradient's partial squared norms, the AdamW
//! update that takes its clip factor from them on the device (no read-back), zero fills and
//! copies; their params, pipelines and dispatch sizing.

use crate::error::{ensure, Result};
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::train::ops::AdamStep;

crate::params! {
    /// The uniform params of shaders/optim.wgsl (their WGSL `struct` is written from this declaration).
    pub struct OptimParams {
        pub n: u32,
        /// sum_squares: the part written
        pub part: u32,
        /// adamw, guard: how many parts the global norm sums (the halt slot follows them)
        pub parts: u32,
        pub has_clip: u32,
        pub clip: f32,
        pub beta1: f32,
        pub beta2: f32,
        pub eps: f32,
        /// lr / (1 - beta1^step)
        pub step_size: f32,
        /// 1 / sqrt(1 - beta2^step)
        pub inv_sqrt_bc2: f32,
        /// 1 - lr * weight_decay
        pub decay: f32,
        /// guard: the step written to the halt slot
        pub step: u32,
    }
}

/// shaders/optim.wgsl's entries.
pub struct OptimKernels {
    pub sum_squares: Kernel,
    pub adamw: Kernel,
    pub guard: Kernel,
    pub fill_zero: Kernel,
}

impl OptimKernels {
    pub fn new(device: &wgpu::Device) -> OptimKernels {
        let m = wgsl::module(device, "optim", &[OptimParams::wgsl()], &[files::OPTIM]);
        OptimKernels {
            sum_squares: Kernel::new(device, "sum_squares", &m, "sum_squares"),
            adamw: Kernel::new(device, "adamw", &m, "adamw"),
            guard: Kernel::new(device, "guard_finite", &m, "guard_finite"),
            fill_zero: Kernel::new(device, "fill_zero", &m, "fill_zero"),
        }
    }
}

fn params(n: usize) -> OptimParams {
    OptimParams {
        n: n as u32,
        part: 0,
        parts: 0,
        has_clip: 0,
        clip: 0.0,
        beta1: 0.0,
        beta2: 0.0,
        eps: 0.0,
        step_size: 0.0,
        inv_sqrt_bc2: 0.0,
        decay: 1.0,
        step: 0,
    }
}

/// norms[part] = the sum of g[..n]^2 (`Train::sum_squares`): one workgroup, strided partial sums
/// reduced in a fixed tree.
pub fn sum_squares(rec: &mut Recorder, norms: &GpuTensor, part: usize, g: &GpuTensor, n: usize) -> Result<()> {
    g.need("sum_squares", DType::F32, n, "g")?;
    norms.need("sum_squares", DType::F32, part + 1, "norms")?;
    let p = OptimParams { part: part as u32, ..params(n) };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.optim.sum_squares, &p, &[&g.buf, &norms.buf], [1, 1, 1])
}

/// The AdamW update of p[..n] (`Train::adamw`, torch.optim.AdamW after the global-norm clip): each
/// invocation sums norms[..parts] in order for the clip factor. Bias corrections and the decay
/// factor are taken on the host in f64. The moments [m, v] are updated in place.
pub fn adamw(
    rec: &mut Recorder,
    p: &GpuTensor,
    g: &GpuTensor,
    [m, v]: [&GpuTensor; 2],
    norms: &GpuTensor,
    n: usize,
    a: &AdamStep,
) -> Result<()> {
    let op = "adamw";
    for (t, what) in [(p, "p"), (g, "g"), (m, "m"), (v, "v")] {
        t.need(op, DType::F32, n, what)?;
    }
    norms.need(op, DType::F32, a.parts + 1, "norms")?;
    ensure(a.step >= 1, op, || "the optimizer step counts from 1".to_string())?;
    let bc1 = 1.0 - (a.beta1 as f64).powi(a.step as i32);
    let bc2 = 1.0 - (a.beta2 as f64).powi(a.step as i32);
    let prm = OptimParams {
        parts: a.parts as u32,
        has_clip: a.clip.is_some() as u32,
        clip: a.clip.unwrap_or(0.0),
        beta1: a.beta1,
        beta2: a.beta2,
        eps: a.eps,
        step_size: (a.lr as f64 / bc1) as f32,
        inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
        decay: (1.0 - a.lr as f64 * a.weight_decay as f64) as f32,
        ..params(n)
    };
    let gpu = rec.gpu.clone();
    let bufs = [&g.buf, &norms.buf, &p.buf, &m.buf, &v.buf];
    rec.dispatch(&gpu.k.optim.adamw, &prm, &bufs, gpu.grid_1d((n as u32).div_ceil(256)))
}

/// The halt guard (`Train::guard_finite`): one thread sums norms[..parts] in order and sets the
/// halt slot norms[parts] (and the part norms[parts + 1]) when it is 0 and the sum is not finite.
pub fn guard_finite(rec: &mut Recorder, norms: &GpuTensor, parts: usize, step: u32) -> Result<()> {
    norms.need("guard_finite", DType::F32, parts + 2, "norms")?;
    ensure((1..1 << 24).contains(&step), "guard_finite", || format!("step {step} is not in 1..2^24 (the slot is an f32)"))?;
    let p = OptimParams { parts: parts as u32, step, ..params(0) };
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.optim.guard, &p, &[&gpu.dummy, &norms.buf], [1, 1, 1])
}

/// x[..n] = 0 (`Train::fill_zero`).
pub fn fill_zero(rec: &mut Recorder, x: &GpuTensor, n: usize) -> Result<()> {
    x.need("fill_zero", DType::F32, n, "x")?;
    let gpu = rec.gpu.clone();
    rec.dispatch(&gpu.k.optim.fill_zero, &params(n), &[&gpu.dummy, &gpu.dummy, &x.buf], gpu.grid_1d((n as u32).div_ceil(256)))
}

/// dst[..n] = src[..n] (`Train::copy`): a buffer copy recorded in order with the dispatches.
pub fn copy(rec: &mut Recorder, dst: &GpuTensor, src: &GpuTensor, n: usize) -> Result<()> {
    dst.need("copy", DType::F32, n, "dst")?;
    src.need("copy", DType::F32, n, "src")?;
    if dst.buf != src.buf {
        rec.copy(&src.buf, 0, &dst.buf, 0, n);
    }
    Ok(())
}
