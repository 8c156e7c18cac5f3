//! The attention family: its params, its pipelines (a workgroup per query row and head, or an
//! invocation per row and head), their dispatch sizing and the choice between them (`RowKind`).
//! Backward: not yet.

use crate::error::{ensure, Result};
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{GpuTensor, Recorder, RowKind};
use crate::ops::AttnShape;

crate::params! {
    /// The uniform params of shaders/attention.wgsl (their WGSL `struct` is written from this declaration).
    pub struct AttnParams {
        pub tq: u32,
        pub tk: u32,
        pub nh: u32,
        pub nkv: u32,
        pub hs: u32,
        pub has_mask: u32,
        pub is_causal: u32,
        pub causal_offset: u32,
        pub q_offset: u32,
        pub q_stride: u32,
        pub k_offset: u32,
        pub k_stride: u32,
        pub v_offset: u32,
        pub v_stride: u32,
        pub scale: f32,
        pub _pad: u32,
    }
}

/// shaders/attention.wgsl's entries.
pub struct AttentionKernels {
    /// `main`: a workgroup per (query row, head) (RowKind::Workgroup)
    pub main: Kernel,
    /// `rows`: one invocation per (row, head), barrier-free (RowKind::Invocation)
    pub rows: Kernel,
}

impl AttentionKernels {
    pub fn new(device: &wgpu::Device) -> AttentionKernels {
        let m = wgsl::module(device, "attention", &[AttnParams::wgsl()], &[files::ATTENTION]);
        AttentionKernels { main: Kernel::new(device, "attention", &m, "main"), rows: Kernel::new(device, "attention_rows", &m, "rows") }
    }
}

/// Largest head size the kernel stages in workgroup memory.
pub const MAX_HS: usize = 256;

/// out (Tq, NH*HS), probs (NH, Tq, Tk) = masked softmax(Q K^T * scale) V, per head, GQA-aware.
/// mask (Tq, Tk) with 1 = may attend, optional; the causal rule comes from `s.causal`.
pub fn attention(
    rec: &mut Recorder,
    out: &GpuTensor,
    probs: &GpuTensor,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    mask: Option<&GpuTensor>,
    s: &AttnShape,
) -> Result<()> {
    attention_kind(rec, out, probs, q, k, v, mask, s, RowKind::Workgroup)
}

/// [`attention`] with the kernel chosen: `Workgroup` is shaders/attention.wgsl's `main`, `Invocation`
/// its `rows` (an invocation per query row and head).
#[allow(clippy::too_many_arguments)]
pub fn attention_kind(
    rec: &mut Recorder,
    out: &GpuTensor,
    probs: &GpuTensor,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    mask: Option<&GpuTensor>,
    s: &AttnShape,
    kind: RowKind,
) -> Result<()> {
    s.check("attention", q.len(), k.len(), v.len(), mask.map(|m| m.len()))?;
    ensure(s.hs <= MAX_HS, "attention", || format!("head size {} exceeds the kernel's maximum {MAX_HS}", s.hs))?;
    ensure(out.len() >= s.tq * s.nh * s.hs, "attention", || {
        format!("out {:?} is smaller than Tq*NH*HS = {}*{}*{}", out.shape, s.tq, s.nh, s.hs)
    })?;
    ensure(probs.len() >= s.nh * s.tq * s.tk, "attention", || {
        format!("probs {:?} is smaller than NH*Tq*Tk = {}*{}*{}", probs.shape, s.nh, s.tq, s.tk)
    })?;
    let p = AttnParams {
        tq: s.tq as u32,
        tk: s.tk as u32,
        nh: s.nh as u32,
        nkv: s.nkv as u32,
        hs: s.hs as u32,
        has_mask: mask.is_some() as u32,
        is_causal: s.causal.is_some() as u32,
        causal_offset: s.causal.unwrap_or(0) as u32,
        q_offset: s.q_offset as u32,
        q_stride: s.q_stride as u32,
        k_offset: s.k_offset as u32,
        k_stride: s.k_stride as u32,
        v_offset: s.v_offset as u32,
        v_stride: s.v_stride as u32,
        scale: s.scale,
        _pad: 0,
    };
    let gpu = rec.gpu.clone();
    let m = mask.map_or(&gpu.dummy, |m| &m.buf);
    let bufs = [&q.buf, &k.buf, &v.buf, m, &out.buf, &probs.buf];
    match kind {
        RowKind::Workgroup => rec.dispatch(&gpu.k.attention.main, &p, &bufs, [s.tq as u32, s.nh as u32, 1]),
        RowKind::Invocation => rec.dispatch(&gpu.k.attention.rows, &p, &bufs, [(s.tq as u32).div_ceil(64), s.nh as u32, 1]),
    }
}
