//! The op guards both CPU backends share (the reference `CpuBackend` and the fast
//! `fastcpu::FastCpuBackend`): each checks that its `CpuTensor`s hold the rows the op uses, borrows
//! their values, and then runs the kernel it is given (the reference loop or the fast one).

use crate::error::Result;
use crate::model::backend::tensor::need;
use crate::model::backend::CpuTensor;
use crate::ops::{AttnShape, EwOp};

/// The attention op's guards over CPU tensors, then `kernel` (the reference loop or the fast one)
/// on their values. out (Tq, NH*HS), probs (NH, Tq, Tk), mask (Tq, Tk) of a larger buffer.
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    out: &CpuTensor,
    probs: &CpuTensor,
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    mask: Option<&CpuTensor>,
    s: &AttnShape,
    kernel: fn(&mut [f32], &mut [f32], &[f32], &[f32], &[f32], Option<&[f32]>, &AttnShape) -> Result<()>,
) -> Result<()> {
    let (qd, kd, vd) = (q.f32s("attention")?, k.f32s("attention")?, v.f32s("attention")?);
    let md = mask.map(|m| m.f32s("attention")).transpose()?;
    let (mut od, mut pd) = (out.f32s_mut("attention")?, probs.f32s_mut("attention")?);
    let on = s.tq * s.nh * s.hs;
    let pn = s.nh * s.tq * s.tk;
    need("attention", od.len(), on, "out")?;
    need("attention", pd.len(), pn, "probs")?;
    let mask_slice = md.as_deref().map(|m| &m[..s.tq * s.tk.min(m.len() / s.tq.max(1))]);
    kernel(&mut od[..on], &mut pd[..pn], &qd, &kd, &vd, mask_slice, s)
}

/// The layernorm op's guards, then `kernel(out, x, gamma, beta, C, eps)` on the first `rows` rows.
pub fn layernorm_with(
    out: &CpuTensor,
    x: &CpuTensor,
    g: &CpuTensor,
    b: &CpuTensor,
    rows: usize,
    eps: f32,
    kernel: fn(&mut [f32], &[f32], &[f32], &[f32], usize, f32),
) -> Result<()> {
    let (xd, gd, bd) = (x.f32s("layernorm")?, g.f32s("layernorm")?, b.f32s("layernorm")?);
    let c = gd.len();
    let mut od = out.f32s_mut("layernorm")?;
    need("layernorm", xd.len().min(od.len()), rows * c, "x/out")?;
    need("layernorm", bd.len(), c, "beta")?;
    kernel(&mut od[..rows * c], &xd[..rows * c], &gd, &bd[..c], c, eps);
    Ok(())
}

/// The rmsnorm op's guards, then `kernel(out, x, weight, C, eps)` on the first `rows` rows.
pub fn rmsnorm_with(
    out: &CpuTensor,
    x: &CpuTensor,
    w: &CpuTensor,
    rows: usize,
    eps: f32,
    kernel: fn(&mut [f32], &[f32], &[f32], usize, f32),
) -> Result<()> {
    let (xd, wd) = (x.f32s("rmsnorm")?, w.f32s("rmsnorm")?);
    let c = wd.len();
    let mut od = out.f32s_mut("rmsnorm")?;
    need("rmsnorm", xd.len().min(od.len()), rows * c, "x/out")?;
    kernel(&mut od[..rows * c], &xd[..rows * c], &wd, c, eps);
    Ok(())
}

/// The inplace op's guards, then `kernel(x, y, op)` on the first `n` values.
pub fn inplace_with(x: &CpuTensor, y: Option<&CpuTensor>, n: usize, op: EwOp, kernel: fn(&mut [f32], Option<&[f32]>, EwOp)) -> Result<()> {
    let yd = y.map(|y| y.f32s("inplace")).transpose()?;
    let mut xd = x.f32s_mut("inplace")?;
    need("inplace", xd.len(), n, "x")?;
    if let Some(yd) = &yd {
        need("inplace", yd.len(), n, "y")?;
    }
    kernel(&mut xd[..n], yd.as_deref().map(|v| &v[..n]), op);
    Ok(())
}
