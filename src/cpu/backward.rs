//! The reference backward of every kernel family, plain loops with f64 accumulation over f32
//! slices: the oracle the fast CPU and the WGSL backward are tested against, and itself tested
//! against central finite differences of the forward (tests/backward_ops.rs). Also the batched
//! attention forward the training graph runs, the fused softmax + cross-entropy and AdamW.
//! Semantics and conventions: `crate::train::ops`.

use crate::cpu::act::silu_scalar;
use crate::error::{ensure, Result};
use crate::ops::EwOp;
use crate::train::ops::{AdamStep, BatchAttn};

/// Whether query i of sequence b may see key j.
fn allowed(s: &BatchAttn, keys: Option<&[f32]>, b: usize, i: usize, j: usize) -> bool {
    (!s.causal || j <= i) && keys.is_none_or(|m| m[b * s.tk + j] != 0.0)
}

pub(crate) fn check_attn(op: &'static str, s: &BatchAttn, qo: usize, kv: &[usize], probs: usize, keys: Option<usize>) -> Result<()> {
    let (nq, nk, np, nm) = s.sizes();
    ensure(s.nkv > 0 && s.nh % s.nkv == 0 && s.hs > 0, op, || format!("NH {} must be a multiple of NKV {}", s.nh, s.nkv))?;
    ensure(qo >= nq, op, || format!("q / out hold {qo} values, need B*Tq*NH*HS = {nq}"))?;
    ensure(kv.iter().all(|&l| l >= nk), op, || format!("k / v hold {kv:?} values, need B*Tk*NKV*HS = {nk}"))?;
    ensure(probs >= np, op, || format!("probs hold {probs} values, need B*NH*Tq*Tk = {np}"))?;
    ensure(keys.is_none_or(|l| l >= nm), op, || format!("the key mask holds {keys:?} values, needs B*Tk = {nm}"))
}

/// Batched attention forward (`Train::attention_batch`).
pub fn attention_batch(
    out: &mut [f32],
    probs: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    keys: Option<&[f32]>,
    s: &BatchAttn,
) -> Result<()> {
    check_attn("attention_batch", s, q.len().min(out.len()), &[k.len(), v.len()], probs.len(), keys.map(|m| m.len()))?;
    let (qw, kw, group) = (s.nh * s.hs, s.nkv * s.hs, s.nh / s.nkv);
    let mut sc = vec![0f64; s.tk];
    for b in 0..s.b {
        for h in 0..s.nh {
            let g = h / group;
            for i in 0..s.tq {
                let qi = &q[(b * s.tq + i) * qw + h * s.hs..][..s.hs];
                let mut mx = f64::NEG_INFINITY;
                for (j, scj) in sc.iter_mut().enumerate() {
                    if allowed(s, keys, b, i, j) {
                        let kj = &k[(b * s.tk + j) * kw + g * s.hs..][..s.hs];
                        *scj = qi.iter().zip(kj).map(|(a, c)| *a as f64 * *c as f64).sum::<f64>() * s.scale as f64;
                        mx = mx.max(*scj);
                    }
                }
                let prow = &mut probs[((b * s.nh + h) * s.tq + i) * s.tk..][..s.tk];
                let orow = &mut out[(b * s.tq + i) * qw + h * s.hs..][..s.hs];
                if mx == f64::NEG_INFINITY {
                    prow.fill(0.0);
                    orow.fill(0.0);
                    continue;
                }
                let mut z = 0f64;
                for (j, scj) in sc.iter_mut().enumerate() {
                    *scj = if allowed(s, keys, b, i, j) { (*scj - mx).exp() } else { 0.0 };
                    z += *scj;
                }
                for (p, e) in prow.iter_mut().zip(&sc) {
                    *p = (e / z) as f32;
                }
                for (d, o) in orow.iter_mut().enumerate() {
                    let acc: f64 = (0..s.tk).map(|j| sc[j] / z * v[(b * s.tk + j) * kw + g * s.hs + d] as f64).sum();
                    *o = acc as f32;
                }
            }
        }
    }
    Ok(())
}

/// Batched attention backward (`Train::attention_backward`): dS = P (dP - rowsum(dP P)),
/// dP = dO V^T, dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    probs: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &BatchAttn,
) -> Result<()> {
    let op = "attention_backward";
    check_attn(op, s, q.len().min(dq.len()).min(dout.len()), &[k.len(), v.len(), dk.len(), dv.len()], probs.len(), None)?;
    let (qw, kw, group) = (s.nh * s.hs, s.nkv * s.hs, s.nh / s.nkv);
    let nk = s.sizes().1;
    let mut acc_k = vec![0f64; nk];
    let mut acc_v = vec![0f64; nk];
    let mut ds = vec![0f64; s.tk];
    for b in 0..s.b {
        for h in 0..s.nh {
            let g = h / group;
            for i in 0..s.tq {
                let prow = &probs[((b * s.nh + h) * s.tq + i) * s.tk..][..s.tk];
                let drow = &dout[(b * s.tq + i) * qw + h * s.hs..][..s.hs];
                let qi = &q[(b * s.tq + i) * qw + h * s.hs..][..s.hs];
                let mut dot = 0f64;
                for (j, dsj) in ds.iter_mut().enumerate() {
                    let vj = &v[(b * s.tk + j) * kw + g * s.hs..][..s.hs];
                    let dp: f64 = drow.iter().zip(vj).map(|(a, c)| *a as f64 * *c as f64).sum();
                    *dsj = dp;
                    dot += prow[j] as f64 * dp;
                }
                for (j, dsj) in ds.iter_mut().enumerate() {
                    *dsj = prow[j] as f64 * (*dsj - dot) * s.scale as f64;
                }
                let dqi = &mut dq[(b * s.tq + i) * qw + h * s.hs..][..s.hs];
                for (d, o) in dqi.iter_mut().enumerate() {
                    *o = (0..s.tk).map(|j| ds[j] * k[(b * s.tk + j) * kw + g * s.hs + d] as f64).sum::<f64>() as f32;
                }
                for j in 0..s.tk {
                    let base = (b * s.tk + j) * kw + g * s.hs;
                    for d in 0..s.hs {
                        acc_k[base + d] += ds[j] * qi[d] as f64;
                        acc_v[base + d] += prow[j] as f64 * drow[d] as f64;
                    }
                }
            }
        }
    }
    for (o, a) in dk[..nk].iter_mut().zip(&acc_k) {
        *o = *a as f32;
    }
    for (o, a) in dv[..nk].iter_mut().zip(&acc_v) {
        *o = *a as f32;
    }
    Ok(())
}

/// dx (M, K) = dy @ W (or += when `acc`), dw (N, K) += dy^T x, db += column sums of dy.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dx: Option<(&mut [f32], bool)>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    if let Some((dx, acc)) = dx {
        for r in 0..m {
            for c in 0..k {
                let s: f64 = (0..n).map(|j| dy[r * n + j] as f64 * w[j * k + c] as f64).sum();
                let o = &mut dx[r * k + c];
                *o = if acc { (*o as f64 + s) as f32 } else { s as f32 };
            }
        }
    }
    for j in 0..n {
        for c in 0..k {
            let s: f64 = (0..m).map(|r| dy[r * n + j] as f64 * x[r * k + c] as f64).sum();
            dw[j * k + c] = (dw[j * k + c] as f64 + s) as f32;
        }
    }
    if let Some(db) = db {
        for (j, o) in db.iter_mut().enumerate().take(n) {
            let s: f64 = (0..m).map(|r| dy[r * n + j] as f64).sum();
            *o = (*o as f64 + s) as f32;
        }
    }
}

/// LayerNorm backward per row from the input x: dx += rstd (dxh - mean(dxh) - xh mean(dxh xh)),
/// dg += dy xh, db += dy, with xh the normalised x and dxh = dy g.
pub fn layernorm_backward(dx: &mut [f32], dg: &mut [f32], db: &mut [f32], dy: &[f32], x: &[f32], g: &[f32], c: usize, eps: f32) {
    let mut acc_g = vec![0f64; c];
    let mut acc_b = vec![0f64; c];
    for ((dxr, dyr), xr) in dx.chunks_mut(c).zip(dy.chunks(c)).zip(x.chunks(c)) {
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        let (mut m1, mut m2) = (0f64, 0f64);
        for i in 0..c {
            let xh = (xr[i] as f64 - mean) * rstd;
            let dxh = dyr[i] as f64 * g[i] as f64;
            m1 += dxh;
            m2 += dxh * xh;
            acc_g[i] += dyr[i] as f64 * xh;
            acc_b[i] += dyr[i] as f64;
        }
        let (m1, m2) = (m1 / c as f64, m2 / c as f64);
        for i in 0..c {
            let xh = (xr[i] as f64 - mean) * rstd;
            let dxh = dyr[i] as f64 * g[i] as f64;
            dxr[i] = (dxr[i] as f64 + rstd * (dxh - m1 - xh * m2)) as f32;
        }
    }
    for i in 0..c {
        dg[i] = (dg[i] as f64 + acc_g[i]) as f32;
        db[i] = (db[i] as f64 + acc_b[i]) as f32;
    }
}

/// RMSNorm backward per row from the input x: dx += r dxh - r^3 x mean(dxh x), dw += dy x r, with
/// r = rsqrt(mean(x^2) + eps) and dxh = dy w.
pub fn rmsnorm_backward(dx: &mut [f32], dw: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], c: usize, eps: f32) {
    let mut acc_w = vec![0f64; c];
    for ((dxr, dyr), xr) in dx.chunks_mut(c).zip(dy.chunks(c)).zip(x.chunks(c)) {
        let ms = xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / c as f64;
        let r = 1.0 / (ms + eps as f64).sqrt();
        let mut dot = 0f64;
        for i in 0..c {
            dot += dyr[i] as f64 * w[i] as f64 * xr[i] as f64;
            acc_w[i] += dyr[i] as f64 * xr[i] as f64 * r;
        }
        let dot = dot / c as f64;
        for i in 0..c {
            dxr[i] = (dxr[i] as f64 + r * dyr[i] as f64 * w[i] as f64 - r * r * r * xr[i] as f64 * dot) as f32;
        }
    }
    for i in 0..c {
        dw[i] = (dw[i] as f64 + acc_w[i]) as f32;
    }
}

/// The derivative of an activation at h.
pub fn act_grad(op: EwOp, h: f32) -> Result<f64> {
    let x = h as f64;
    Ok(match op {
        EwOp::Relu => f64::from(u8::from(h > 0.0)),
        EwOp::Gelu => {
            0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        EwOp::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            let t = (k * (x + 0.044715 * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x)
        }
        EwOp::Silu => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 + x * (1.0 - s))
        }
        other => return Err(crate::error::TfError::Shape { op: "act_backward", msg: format!("{other:?} is not an activation") }),
    })
}

/// dx = dy * act'(h).
pub fn act_backward(dx: &mut [f32], dy: &[f32], h: &[f32], op: EwOp) -> Result<()> {
    for ((o, &d), &hv) in dx.iter_mut().zip(dy).zip(h) {
        *o = (d as f64 * act_grad(op, hv)?) as f32;
    }
    Ok(())
}

/// y = silu(gate) * up: dgate = dy up silu'(gate), dup = dy silu(gate).
pub fn swiglu_backward(dgate: &mut [f32], dup: &mut [f32], dy: &[f32], gate: &[f32], up: &[f32]) -> Result<()> {
    for i in 0..dy.len() {
        let d = dy[i] as f64;
        dgate[i] = (d * up[i] as f64 * act_grad(EwOp::Silu, gate[i])?) as f32;
        dup[i] = (d * silu_scalar(gate[i]) as f64) as f32;
    }
    Ok(())
}

/// The inverse rotation of `cpu::rope` (rotation by -angle), in place.
#[allow(clippy::too_many_arguments)]
pub fn rope_backward(x: &mut [f32], table: &[f32], t_len: usize, nh: usize, hs: usize, start_pos: usize, row_stride: usize, offset: usize) {
    let half = hs / 2;
    for t in 0..t_len {
        let pos = start_pos + t;
        for h in 0..nh {
            for i in 0..half {
                let (c, s) = (table[(pos * half + i) * 2], table[(pos * half + i) * 2 + 1]);
                let base = offset + t * row_stride + h * hs + 2 * i;
                let (x0, x1) = (x[base], x[base + 1]);
                x[base] = x0 * c + x1 * s;
                x[base + 1] = -x0 * s + x1 * c;
            }
        }
    }
}

/// dtable[ids[r]] += dout[r] * scale, rows in order.
pub fn embedding_backward(dtable: &mut [f32], dout: &[f32], ids: &[u32], c: usize, scale: f32) -> Result<()> {
    let v = dtable.len() / c.max(1);
    for (r, &id) in ids.iter().enumerate() {
        ensure((id as usize) < v, "embedding_backward", || format!("token id {id} is outside the table of {v} rows"))?;
        let row = &mut dtable[id as usize * c..][..c];
        for (o, &d) in row.iter_mut().zip(&dout[r * c..][..c]) {
            *o = (*o as f64 + d as f64 * scale as f64) as f32;
        }
    }
    Ok(())
}

/// dtable[r % t] += dx[r] for the rows of dx (C wide), in order of r.
pub fn positions_backward(dtable: &mut [f32], dx: &[f32], c: usize, t: usize) {
    for (r, row) in dx.chunks(c).enumerate() {
        for (o, &d) in dtable[(r % t) * c..][..c].iter_mut().zip(row) {
            *o += d;
        }
    }
}

/// Softmax + cross-entropy per row (`Train::cross_entropy`): returns each row's loss and
/// overwrites the logits with scale * (softmax - onehot).
pub fn cross_entropy(losses: &mut [f32], logits: &mut [f32], targets: &[u32], v: usize, scale: f32, ignore: Option<u32>) -> Result<()> {
    for ((row, &t), loss) in logits.chunks_mut(v).zip(targets).zip(losses.iter_mut()) {
        if Some(t) == ignore {
            row.fill(0.0);
            *loss = 0.0;
            continue;
        }
        ensure((t as usize) < v, "cross_entropy", || format!("target id {t} is outside the vocabulary of {v}"))?;
        let mx = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let z: f64 = row.iter().map(|&x| (x as f64 - mx).exp()).sum();
        let lse = mx + z.ln();
        *loss = (lse - row[t as usize] as f64) as f32;
        for (j, x) in row.iter_mut().enumerate() {
            let p = (*x as f64 - lse).exp();
            *x = ((p - f64::from(u8::from(j == t as usize))) * scale as f64) as f32;
        }
    }
    Ok(())
}

/// The gradient's clip factor: min(1, clip / (norm + 1e-6)), as torch's clip_grad_norm_.
pub fn clip_factor(norms: &[f32], clip: Option<f32>) -> f32 {
    let norm = norms.iter().map(|&x| x as f64).sum::<f64>().sqrt() as f32;
    clip.map_or(1.0, |c| (c / (norm + 1e-6)).min(1.0))
}

/// The halt guard (`Train::guard_finite`): norms holds `parts` partial squared norms, then the
/// halt slot (0, or the first step whose gradient was not finite), then that step's first part
/// that was not finite.
pub fn guard_finite(norms: &mut [f32], parts: usize, step: u32) {
    if norms[parts] != 0.0 {
        return;
    }
    let sum: f32 = norms[..parts].iter().sum();
    if !sum.is_finite() {
        norms[parts] = step as f32;
        norms[parts + 1] = norms[..parts].iter().position(|x| !x.is_finite()).unwrap_or(parts) as f32;
    }
}

/// AdamW as torch.optim.AdamW: p *= 1 - lr wd; m, v moments; p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
/// `norms` is the parts then the halt slot: nothing changes when it is set.
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], norms: &[f32], a: &AdamStep) {
    if norms[a.parts] != 0.0 {
        return;
    }
    let f = clip_factor(&norms[..a.parts], a.clip) as f64;
    let (b1, b2) = (a.beta1 as f64, a.beta2 as f64);
    let bc1 = 1.0 - b1.powi(a.step as i32);
    let bc2 = 1.0 - b2.powi(a.step as i32);
    let lr = a.lr as f64;
    for i in 0..p.len() {
        let gi = g[i] as f64 * f;
        let mi = b1 * m[i] as f64 + (1.0 - b1) * gi;
        let vi = b2 * v[i] as f64 + (1.0 - b2) * gi * gi;
        m[i] = mi as f32;
        v[i] = vi as f32;
        let pi = p[i] as f64 * (1.0 - lr * a.weight_decay as f64);
        p[i] = (pi - lr / bc1 * mi / (vi.sqrt() / bc2.sqrt() + a.eps as f64)) as f32;
    }
}
