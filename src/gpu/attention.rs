//! The attention family: its params, its pipelines (a workgroup per query row and head, or an
//! invocation per row and head), their dispatch sizing and the choice between them (`RowKind`).
//! The training graph's batched attention, [`attention_batch`], and its backward,
//! [`attention_backward`] (shaders/attention_bw.wgsl: dq a query row at a time, dk and dv a key
//! row at a time over its query heads and queries in order).

use crate::error::{ensure, Result, TfError};
use crate::gpu::context::Kernel;
use crate::gpu::wgsl::{self, files, Params};
use crate::gpu::{DType, GpuTensor, Recorder, RowKind};
use crate::ops::AttnShape;
use crate::train::ops::BatchAttn;

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
    /// shaders/attention_bw.wgsl: the batched forward and the backward's two passes
    pub batch: Kernel,
    pub dq: Kernel,
    pub dkv: Kernel,
}

impl AttentionKernels {
    pub fn new(device: &wgpu::Device) -> AttentionKernels {
        let m = wgsl::module(device, "attention", &[AttnParams::wgsl()], &[files::ATTENTION]);
        let bw = wgsl::module(device, "attention_bw", &[BatchAttnParams::wgsl()], &[files::ATTENTION_BW]);
        AttentionKernels {
            main: Kernel::new(device, "attention", &m, "main"),
            rows: Kernel::new(device, "attention_rows", &m, "rows"),
            batch: Kernel::new(device, "attention_batch", &bw, "forward"),
            dq: Kernel::new(device, "attention_dq", &bw, "dq"),
            dkv: Kernel::new(device, "attention_dkv", &bw, "dkv"),
        }
    }
}

/// Largest head size the kernel stages in workgroup memory.
pub const MAX_HS: usize = 256;

/// Whether `rows` (an invocation per query row and head) stays within
/// [`INVOCATION_LOOP_BUDGET`](crate::gpu::INVOCATION_LOOP_BUDGET) for this shape: its longest row
/// loops Tk times over HS twice (scores, P V) and Tk times four more (max, exp, normalise, zeros).
pub fn rows_fit(s: &AttnShape) -> bool {
    s.tk.saturating_mul(2 * s.hs + 4).saturating_add(s.hs) <= crate::gpu::INVOCATION_LOOP_BUDGET
}

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
/// its `rows` (an invocation per query row and head) where the rows are short enough ([`rows_fit`]),
/// `main` past that.
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
    let kind = if kind == RowKind::Invocation && !rows_fit(s) { RowKind::Workgroup } else { kind };
    match kind {
        RowKind::Workgroup => rec.dispatch(&gpu.k.attention.main, &p, &bufs, [s.tq as u32, s.nh as u32, 1]),
        RowKind::Invocation => rec.dispatch(&gpu.k.attention.rows, &p, &bufs, [(s.tq as u32).div_ceil(64), s.nh as u32, 1]),
    }
}

crate::params! {
    /// The uniform params of shaders/attention_bw.wgsl (their WGSL `struct` is written from this declaration).
    pub struct BatchAttnParams {
        pub b: u32,
        pub tq: u32,
        pub tk: u32,
        pub nh: u32,
        pub nkv: u32,
        pub hs: u32,
        pub causal: u32,
        pub has_keys: u32,
        pub scale: f32,
        pub _p: [u32; 3],
    }
}

/// The batched attention's guards: the shape itself, then each tensor's values (`BatchAttn::sizes`).
fn check_batch(
    op: &'static str,
    s: &BatchAttn,
    qo: &[(&GpuTensor, &str)],
    kv: &[(&GpuTensor, &str)],
    probs: &GpuTensor,
) -> Result<BatchAttnParams> {
    ensure(s.nkv > 0 && s.nh % s.nkv == 0 && s.hs > 0, op, || format!("NH {} must be a multiple of NKV {}", s.nh, s.nkv))?;
    ensure(s.hs <= MAX_HS, op, || format!("head size {} exceeds the kernel's maximum {MAX_HS}", s.hs))?;
    let (nq, nk, np, _) = s.sizes();
    for (t, what) in qo {
        t.need(op, DType::F32, nq, what)?;
    }
    for (t, what) in kv {
        t.need(op, DType::F32, nk, what)?;
    }
    probs.need(op, DType::F32, np, "probs")?;
    Ok(BatchAttnParams {
        b: s.b as u32,
        tq: s.tq as u32,
        tk: s.tk as u32,
        nh: s.nh as u32,
        nkv: s.nkv as u32,
        hs: s.hs as u32,
        causal: s.causal as u32,
        has_keys: 0,
        scale: s.scale,
        _p: [0; 3],
    })
}

/// The most loop iterations one invocation of the batched attention's kernels runs (forward, dq,
/// dkv; shaders/attention_bw.wgsl), every loop counted.
fn batch_loops(s: &BatchAttn) -> usize {
    let (tq, tk, hs, group) = (s.tq, s.tk, s.hs, s.nh / s.nkv.max(1));
    let forward = tk.saturating_mul(2 * hs + 3).saturating_add(hs);
    let dq = tk.saturating_mul(3 * hs + 2).saturating_add(2 * hs);
    let dkv = group.saturating_mul(tq.saturating_mul(2 * hs + 1).saturating_add(1)).saturating_add(2 * hs);
    forward.max(dq).max(dkv)
}

/// On a GPU emulated on the CPU, a training attention whose invocations would loop past
/// [`INVOCATION_LOOP_BUDGET`](crate::gpu::INVOCATION_LOOP_BUDGET) (where llvmpipe stops them and
/// goes on with wrong values) is refused in one line instead of training on wrong gradients.
fn check_loops(gpu: &crate::gpu::Gpu, op: &'static str, s: &BatchAttn) -> Result<()> {
    let loops = batch_loops(s);
    if gpu.is_cpu_emulated() && loops > crate::gpu::INVOCATION_LOOP_BUDGET {
        return Err(TfError::Limit(format!(
            "{op}: a context of {} with head size {} ({} query heads per key head) needs {loops} loop steps per invocation, \
             and this CPU-emulated GPU stops a kernel's loops after 65,535; use a shorter context or --backend cpu",
            s.tk,
            s.hs,
            s.nh / s.nkv.max(1)
        )));
    }
    Ok(())
}

/// The training graph's batched masked attention (`Train::attention_batch`, see [`BatchAttn`]):
/// out (B*Tq, NH*HS), probs (B, NH, Tq, Tk) from q (B*Tq, NH*HS), k and v (B*Tk, NKV*HS); keys
/// (B, Tk) 1 / 0 or None for all keys. A query with no key left gets zero probabilities and a
/// zero output. An invocation per (query, head, sequence).
pub fn attention_batch(
    rec: &mut Recorder,
    out: &GpuTensor,
    probs: &GpuTensor,
    [q, k, v]: [&GpuTensor; 3],
    keys: Option<&GpuTensor>,
    s: &BatchAttn,
) -> Result<()> {
    let op = "attention_batch";
    let mut p = check_batch(op, s, &[(q, "q"), (out, "out")], &[(k, "k"), (v, "v")], probs)?;
    if let Some(m) = keys {
        m.need(op, DType::F32, s.b * s.tk, "the key mask")?;
    }
    p.has_keys = keys.is_some() as u32;
    let gpu = rec.gpu.clone();
    check_loops(&gpu, op, s)?;
    let m = keys.map_or(&gpu.dummy, |m| &m.buf);
    let bufs = [&q.buf, &k.buf, &v.buf, m, &gpu.dummy, &probs.buf, &out.buf];
    rec.dispatch(&gpu.k.attention.batch, &p, &bufs, [(s.tq as u32).div_ceil(64), s.nh as u32, s.b as u32])
}

/// The batched attention's backward from the forward's probabilities (`Train::attention_backward`):
/// dq (=) a query row at a time, then dk and dv (=) a key row at a time, each key/value head
/// summing its query heads and their queries in order. `dots` is a scratch of B*NH*Tq values
/// (each query row's sum of P dP, written by the first pass for the second).
pub fn attention_backward(
    rec: &mut Recorder,
    [dq, dk, dv]: [&GpuTensor; 3],
    dout: &GpuTensor,
    probs: &GpuTensor,
    [q, k, v]: [&GpuTensor; 3],
    dots: &GpuTensor,
    s: &BatchAttn,
) -> Result<()> {
    let op = "attention_backward";
    let p = check_batch(op, s, &[(q, "q"), (dq, "dq"), (dout, "dout")], &[(k, "k"), (v, "v"), (dk, "dk"), (dv, "dv")], probs)?;
    dots.need(op, DType::F32, s.b * s.nh * s.tq, "the scratch")?;
    let gpu = rec.gpu.clone();
    check_loops(&gpu, op, s)?;
    let d = &gpu.dummy;
    let bufs = [d, &k.buf, &v.buf, d, &dout.buf, &probs.buf, &dq.buf, &dots.buf];
    rec.dispatch(&gpu.k.attention.dq, &p, &bufs, [(s.tq as u32).div_ceil(64), s.nh as u32, s.b as u32])?;
    let bufs = [&q.buf, d, &v.buf, d, &dout.buf, &probs.buf, d, &dots.buf, &dk.buf, &dv.buf];
    rec.dispatch(&gpu.k.attention.dkv, &p, &bufs, [(s.tk as u32).div_ceil(64), s.nkv as u32, s.b as u32])
}
