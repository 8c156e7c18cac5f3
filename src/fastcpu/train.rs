//! The fast CPU training kernels, f32 over slices, each beside its reference twin in
//! `crate::cpu::backward` (f64 accumulation) and tested against it on shape sweeps
//! (tests/fastcpu_ops.rs, tolerances there). `backward.rs` runs them on the backend's tensors
//! and threads.
//!
//! Determinism: every kernel owns its outputs and sums in a fixed order; where the backend splits
//! one over threads it splits over outputs (a sequence of the batch, a row block of dW), and an
//! output is computed by the same instructions whichever part it falls in. So the same inputs give
//! the same bits on any number of threads.

use crate::error::{ensure, Result};
use crate::fastcpu::isa::{multiversion, Isa};
use crate::fastcpu::simd::{dot4, erf, exp, hsum, lanes_sum, max, pv, L};
use crate::ops::EwOp;
use crate::train::ops::{AdamStep, BatchAttn};

// ---------------------------------------------------------------------------------------------
// Scratch buffers

const SLOTS: usize = 4;

thread_local! {
    /// Each thread's scratch buffers, kept between steps: a step's large temporaries would otherwise
    /// be fresh pages every time (allocations above malloc's mmap threshold are returned to the OS).
    static SCRATCH: std::cell::RefCell<[Vec<f32>; SLOTS]> = const { std::cell::RefCell::new([const { Vec::new() }; SLOTS]) };
}

/// This thread's scratch buffer `slot` (< 4), `len` zeros; hand it back with [`give_back`].
pub(crate) fn scratch(slot: usize, len: usize) -> Vec<f32> {
    let mut v = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut()[slot % SLOTS]));
    v.clear();
    v.resize(len, 0.0);
    v
}

/// Keeps `v` as this thread's scratch buffer `slot`.
pub(crate) fn give_back(slot: usize, v: Vec<f32>) {
    SCRATCH.with(|s| s.borrow_mut()[slot % SLOTS] = v);
}

// ---------------------------------------------------------------------------------------------
// dW = dY^T X

/// Rows of dY and X per pass of the dW kernel: the pass packs X's strip of one column tile (in L1)
/// and dY's block as row-tile panels (in L2), so the register tile reads both contiguously (their
/// rows are K or N apart: strided reads that map to few L1 sets).
const DW_ROWS: usize = 256;

multiversion!(
    /// dw (R, K) += dy[:, j0..j0+R]^T @ x for the rows j0..j0+R of dW = dY^T X: dy (M, N), x (M, K),
    /// R = dw.len() / K. Each value of dw is its old value plus the M products in order of the row of
    /// dy / x (fused where the ISA fuses), whatever R and j0 are: a split of dW's rows gives the same bits.
    pub fn matmul_dw(dw: &mut [f32], dy: &[f32], x: &[f32], m: usize, n: usize, k: usize, j0: usize) => matmul_dw_impl
);

#[inline(always)]
fn matmul_dw_impl<S: Isa>(dw: &mut [f32], dy: &[f32], x: &[f32], m: usize, n: usize, k: usize, j0: usize) {
    if k == 0 {
        return;
    }
    let rows = dw.len() / k;
    assert!(j0 + rows <= n && dy.len() >= m * n && x.len() >= m * k, "matmul_dw: shapes");
    // R rows x 2 vectors of accumulators: 12 AVX2 registers (of 16), 8 portable (SSE2) or simd128 ones.
    // The page's GEMM tile has 2 or 3 rows (`Simd128::MR`); a dW tile of 2 rows x 8 columns (4
    // accumulators: half of the 8 multiply-adds the FMA units need in flight) made dW 31% of the page's
    // training step, 4 rows 25% (node's V8, the kernels 1.2-2.1x faster; BENCHMARKS.md [7]). The rows
    // do not change the sums: each value adds its M products in order, whatever R is.
    if S::MR >= 6 {
        dw_pass::<S, 6>(dw, dy, x, m, n, k, j0, rows)
    } else {
        dw_pass::<S, 4>(dw, dy, x, m, n, k, j0, rows)
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dw_pass<S: Isa, const R: usize>(dw: &mut [f32], dy: &[f32], x: &[f32], m: usize, n: usize, k: usize, j0: usize, rows: usize) {
    let w = 2 * S::LANES;
    let full = k / w * w;
    let tiles = rows.div_ceil(R);
    // dY's block as panels of R columns (p-major, zero past the rows), X's strip of w columns
    let mut ap = scratch(0, tiles * DW_ROWS * R);
    let mut xs = scratch(1, DW_ROWS * w);
    let mut p0 = 0;
    while p0 < m {
        let p1 = (p0 + DW_ROWS).min(m);
        let pb = p1 - p0;
        for t in 0..tiles {
            let cols = R.min(rows - t * R);
            let panel = &mut ap[t * DW_ROWS * R..][..pb * R];
            for (p, a) in panel.chunks_exact_mut(R).enumerate() {
                let src = &dy[(p0 + p) * n + j0 + t * R..][..cols];
                // a whole tile's R values: a copy of known size, inlined (a short copy_from_slice is
                // a memmove call each)
                if cols == R {
                    let d: &mut [f32; R] = a.try_into().expect("R values");
                    *d = src.try_into().expect("R values");
                } else {
                    a[..cols].iter_mut().zip(src).for_each(|(d, s)| *d = *s);
                }
            }
        }
        let mut c = 0;
        while c < full {
            for (p, xr) in xs[..pb * w].chunks_exact_mut(w).enumerate() {
                let src = &x[(p0 + p) * k + c..][..w];
                // SAFETY: xr and src hold w = 2 LANES values each
                unsafe {
                    S::store(xr.as_mut_ptr(), S::load(src.as_ptr()));
                    S::store(xr.as_mut_ptr().add(S::LANES), S::load(src.as_ptr().add(S::LANES)));
                }
            }
            for t in 0..tiles {
                dw_tile::<S, R>(dw, &ap[t * DW_ROWS * R..][..pb * R], &xs[..pb * w], k, t * R, R.min(rows - t * R), c);
            }
            c += w;
        }
        for i in 0..rows {
            for c in full..k {
                let mut a = dw[i * k + c];
                for p in p0..p1 {
                    a = S::fmadd(dy[p * n + j0 + i], x[p * k + c], a);
                }
                dw[i * k + c] = a;
            }
        }
        p0 = p1;
    }
    give_back(0, ap);
    give_back(1, xs);
}

/// dw[i..i+valid, c..c+2 LANES] += sum over p of a[p, ..valid]^T xs[p, :]: `a` the packed panel of
/// R columns of dY (p-major), `xs` the packed strip of X (p-major, 2 LANES wide). Rows past `valid`
/// (the panel's zeros) are computed and not stored.
#[inline(always)]
fn dw_tile<S: Isa, const R: usize>(dw: &mut [f32], a: &[f32], xs: &[f32], k: usize, i: usize, valid: usize, c: usize) {
    let w = 2 * S::LANES;
    let pb = xs.len() / w;
    assert!(valid <= R && (i + valid) * k <= dw.len() && c + w <= k && a.len() >= pb * R);
    let mut acc = [[S::zero(); 2]; R];
    let dp = dw.as_mut_ptr();
    // SAFETY: the assert above: rows i..i+valid of dw and columns c..c+2 LANES <= k; p < pb rows of
    // the panel (R values each) and of the strip (2 LANES each)
    unsafe {
        for (r, acc) in acc.iter_mut().enumerate().take(valid) {
            acc[0] = S::load(dp.add((i + r) * k + c));
            acc[1] = S::load(dp.add((i + r) * k + c + S::LANES));
        }
        let (ap, xp) = (a.as_ptr(), xs.as_ptr());
        for p in 0..pb {
            let (b0, b1) = (S::load(xp.add(p * w)), S::load(xp.add(p * w + S::LANES)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let s = S::splat(*ap.add(p * R + r));
                acc[0] = S::madd(s, b0, acc[0]);
                acc[1] = S::madd(s, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate().take(valid) {
            S::store(dp.add((i + r) * k + c), acc[0]);
            S::store(dp.add((i + r) * k + c + S::LANES), acc[1]);
        }
    }
}

/// db (N,) += the column sums of dy (M, N), rows in order.
pub fn column_sums(db: &mut [f32], dy: &[f32], n: usize) {
    for row in dy.chunks_exact(n) {
        for (o, v) in db.iter_mut().zip(row) {
            *o += v;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attention backward

multiversion!(
    /// The attention backward of one sequence of the batch (`Train::attention_backward`): dq (Tq,
    /// NH*HS) written, dk and dv (Tk, NKV*HS) written; dout, q (Tq, NH*HS), k, v (Tk, NKV*HS), probs
    /// (NH, Tq, Tk) of this sequence. dS = P (dP - rowsum(dP P)) scale with dP = dO V^T over the
    /// visible keys; dQ = dS K; dK = dS^T Q and dV = P^T dO, a key/value head summing its query heads
    /// in order.
    pub fn attention_backward_seq(dq: &mut [f32], dk: &mut [f32], dv: &mut [f32], dout: &[f32], probs: &[f32], q: &[f32], k: &[f32], v: &[f32], s: &BatchAttn) => attention_backward_seq_impl
);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_backward_seq_impl<S: Isa>(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    probs: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &BatchAttn,
) {
    let (tq, tk, hs) = (s.tq, s.tk, s.hs);
    let (qw, kw, group) = (s.nh * hs, s.nkv * hs, s.nh / s.nkv);
    let (dk, dv) = (&mut dk[..tk * kw], &mut dv[..tk * kw]);
    dk.fill(0.0);
    dv.fill(0.0);
    let mut ds = vec![0f32; tq * tk];
    let mut dst = vec![0f32; tk * tq];
    let mut pt = vec![0f32; tk * tq];
    let mut tmp = vec![0f32; hs];
    for h in 0..s.nh {
        let g = h / group;
        let vrow = |j: usize| &v[j * kw + g * hs..][..hs];
        let ph = &probs[h * tq * tk..][..tq * tk];
        for i in 0..tq {
            let end = if s.causal { (i + 1).min(tk) } else { tk };
            let prow = &ph[i * tk..][..tk];
            let drow = &dout[i * qw + h * hs..][..hs];
            let dsrow = &mut ds[i * tk..][..tk];
            // dP = dO_i . V_j, four keys at a time
            let mut j = 0;
            while j + 4 <= end {
                let d = dot4::<S>(drow, [vrow(j), vrow(j + 1), vrow(j + 2), vrow(j + 3)]);
                dsrow[j..j + 4].copy_from_slice(&d);
                j += 4;
            }
            if j < end {
                let d = dot4::<S>(drow, std::array::from_fn(|u| vrow((j + u).min(end - 1))));
                for (u, o) in dsrow[j..end].iter_mut().enumerate() {
                    *o = d[u];
                }
            }
            let dot = dot_lanes(&prow[..end], &dsrow[..end]);
            for (o, &p) in dsrow[..end].iter_mut().zip(&prow[..end]) {
                *o = p * (*o - dot) * s.scale;
            }
            dsrow[end..].fill(0.0);
            pv::<S>(&mut dq[i * qw + h * hs..][..hs], &dsrow[..end], k, g * hs, kw);
        }
        // dK_j = sum_i dS_ij Q_i and dV_j = sum_i P_ij dO_i over the rows that see key j: the
        // transposes make each a P·V product over contiguous weights
        for i in 0..tq {
            for j in 0..tk {
                dst[j * tq + i] = ds[i * tk + j];
                pt[j * tq + i] = ph[i * tk + j];
            }
        }
        for j in 0..tk {
            let start = if s.causal { j.min(tq) } else { 0 };
            if start == tq {
                continue;
            }
            pv::<S>(&mut tmp, &dst[j * tq + start..(j + 1) * tq], q, start * qw + h * hs, qw);
            add_to(&mut dk[j * kw + g * hs..][..hs], &tmp);
            pv::<S>(&mut tmp, &pt[j * tq + start..(j + 1) * tq], dout, start * qw + h * hs, qw);
            add_to(&mut dv[j * kw + g * hs..][..hs], &tmp);
        }
    }
}

#[inline(always)]
fn add_to(o: &mut [f32], t: &[f32]) {
    for (o, t) in o.iter_mut().zip(t) {
        *o += t;
    }
}

/// sum of a[i] b[i], 8 lanes.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let mut ca = a.chunks_exact(L);
    let mut cb = b.chunks_exact(L);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    hsum(&acc) + ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum::<f32>()
}

// ---------------------------------------------------------------------------------------------
// Norms

multiversion!(
    /// LayerNorm's backward per row from its input: dx += rstd (dxh - mean(dxh) - xh mean(dxh xh)),
    /// dg += dy xh, db += dy (rows in order), xh the normalised x, dxh = dy g. dx, dy, x (rows, C).
    pub fn layernorm_backward(dx: &mut [f32], dg: &mut [f32], db: &mut [f32], dy: &[f32], x: &[f32], g: &[f32], c: usize, eps: f32) => layernorm_backward_impl
);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn layernorm_backward_impl<S: Isa>(dx: &mut [f32], dg: &mut [f32], db: &mut [f32], dy: &[f32], x: &[f32], g: &[f32], c: usize, eps: f32) {
    if c == 0 {
        return;
    }
    let (dg, db, g) = (&mut dg[..c], &mut db[..c], &g[..c]);
    let mut xh = vec![0f32; c];
    for ((dxr, dyr), xr) in dx.chunks_exact_mut(c).zip(dy.chunks_exact(c)).zip(x.chunks_exact(c)) {
        let mean = lanes_sum(xr, |v| v) / c as f32;
        let var = lanes_sum(xr, |v| (v - mean) * (v - mean)) / c as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for (o, &v) in xh.iter_mut().zip(xr) {
            *o = (v - mean) * rstd;
        }
        let (mut a1, mut a2) = ([0f32; L], [0f32; L]);
        let mut i = 0;
        while i + L <= c {
            for l in 0..L {
                let d = dyr[i + l] * g[i + l];
                a1[l] += d;
                a2[l] += d * xh[i + l];
            }
            i += L;
        }
        let (mut m1, mut m2) = (hsum(&a1), hsum(&a2));
        for i in i..c {
            let d = dyr[i] * g[i];
            m1 += d;
            m2 += d * xh[i];
        }
        let (m1, m2) = (m1 / c as f32, m2 / c as f32);
        for i in 0..c {
            dxr[i] += rstd * (dyr[i] * g[i] - m1 - xh[i] * m2);
            dg[i] = S::fmadd(dyr[i], xh[i], dg[i]);
            db[i] += dyr[i];
        }
    }
}

multiversion!(
    /// RMSNorm's backward per row from its input: dx += r dxh - r^3 x mean(dxh x), dw += dy x r
    /// (rows in order), r = rsqrt(mean(x^2) + eps), dxh = dy w. dx, dy, x (rows, C).
    pub fn rmsnorm_backward(dx: &mut [f32], dw: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], c: usize, eps: f32) => rmsnorm_backward_impl
);

#[inline(always)]
fn rmsnorm_backward_impl<S: Isa>(dx: &mut [f32], dw: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], c: usize, eps: f32) {
    if c == 0 {
        return;
    }
    let (dw, w) = (&mut dw[..c], &w[..c]);
    for ((dxr, dyr), xr) in dx.chunks_exact_mut(c).zip(dy.chunks_exact(c)).zip(x.chunks_exact(c)) {
        let ms = lanes_sum(xr, |v| v * v) / c as f32;
        let r = 1.0 / (ms + eps).sqrt();
        let mut a = [0f32; L];
        let mut i = 0;
        while i + L <= c {
            for l in 0..L {
                a[l] += dyr[i + l] * w[i + l] * xr[i + l];
            }
            i += L;
        }
        let mut dot = hsum(&a);
        for i in i..c {
            dot += dyr[i] * w[i] * xr[i];
        }
        let k = r * r * r * (dot / c as f32);
        for i in 0..c {
            dxr[i] += r * dyr[i] * w[i] - k * xr[i];
            dw[i] = S::fmadd(dyr[i] * xr[i], r, dw[i]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Activations

/// The derivative of an activation at h, in f32 with the fast exp / erf.
#[inline(always)]
fn act_grad(op: EwOp, x: f32) -> f32 {
    match op {
        EwOp::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        EwOp::Gelu => {
            // 0.5 (1 + erf(x / sqrt 2)) + x e^(-x^2 / 2) / sqrt(2 pi)
            const INV_SQRT_2PI: f32 = 0.398_942_3;
            0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)) + x * exp(-0.5 * x * x) * INV_SQRT_2PI
        }
        EwOp::GeluTanh => {
            // with s = sigmoid(2u) = 0.5 (1 + tanh u): s + 2 x s (1 - s) u', u' = k (1 + 3 0.044715 x^2)
            const K: f32 = 0.797_884_6;
            let u = K * (x + 0.044_715 * x * x * x);
            let s = 1.0 / (1.0 + exp(-2.0 * u));
            s + 2.0 * x * s * (1.0 - s) * K * (1.0 + 0.134_145 * x * x)
        }
        _ => {
            // SiLU (act_backward accepts only activations)
            let s = 1.0 / (1.0 + exp(-x));
            s * (1.0 + x * (1.0 - s))
        }
    }
}

multiversion!(
    /// dx = dy * act'(h) for ReLU, GELU, GELU-tanh or SiLU (`op` checked by the caller).
    pub fn act_backward(dx: &mut [f32], dy: &[f32], h: &[f32], op: EwOp) => act_backward_impl
);

#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)] // S: the ISA multiversion! compiles it for (LLVM vectorises)
fn act_backward_impl<S: Isa>(dx: &mut [f32], dy: &[f32], h: &[f32], op: EwOp) {
    // one straight loop per op, so each vectorises
    macro_rules! each {
        ($op:expr) => {
            for ((o, &d), &x) in dx.iter_mut().zip(dy).zip(h) {
                *o = d * act_grad($op, x);
            }
        };
    }
    match op {
        EwOp::Relu => each!(EwOp::Relu),
        EwOp::Gelu => each!(EwOp::Gelu),
        EwOp::GeluTanh => each!(EwOp::GeluTanh),
        _ => each!(EwOp::Silu),
    }
}

multiversion!(
    /// y = silu(gate) * up: dgate = dy up silu'(gate), dup = dy silu(gate).
    pub fn swiglu_backward(dgate: &mut [f32], dup: &mut [f32], dy: &[f32], gate: &[f32], up: &[f32]) => swiglu_backward_impl
);

#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)] // S: the ISA multiversion! compiles it for (LLVM vectorises)
fn swiglu_backward_impl<S: Isa>(dgate: &mut [f32], dup: &mut [f32], dy: &[f32], gate: &[f32], up: &[f32]) {
    let n = dy.len().min(dgate.len()).min(dup.len()).min(gate.len()).min(up.len());
    for i in 0..n {
        let x = gate[i];
        let s = 1.0 / (1.0 + exp(-x));
        dgate[i] = dy[i] * up[i] * (s * (1.0 + x * (1.0 - s)));
        dup[i] = dy[i] * (x * s);
    }
}

// ---------------------------------------------------------------------------------------------
// Loss and optimizer

multiversion!(
    /// Softmax + cross-entropy per row (`Train::cross_entropy`) in f32: each row's loss, and the
    /// logits replaced by scale * (softmax - onehot); a row whose target is `ignore` gets 0 and 0.
    /// Every target is checked before any row is written.
    pub fn cross_entropy(losses: &mut [f32], logits: &mut [f32], targets: &[u32], v: usize, scale: f32, ignore: Option<u32>) -> Result<()> => cross_entropy_impl
);

#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)] // S: the ISA multiversion! compiles it for (LLVM vectorises)
fn cross_entropy_impl<S: Isa>(
    losses: &mut [f32],
    logits: &mut [f32],
    targets: &[u32],
    v: usize,
    scale: f32,
    ignore: Option<u32>,
) -> Result<()> {
    if let Some(&t) = targets.iter().find(|&&t| Some(t) != ignore && t as usize >= v) {
        ensure(false, "cross_entropy", || format!("target id {t} is outside the vocabulary of {v}"))?;
    }
    for ((row, &t), loss) in logits.chunks_exact_mut(v).zip(targets).zip(losses.iter_mut()) {
        if Some(t) == ignore {
            row.fill(0.0);
            *loss = 0.0;
            continue;
        }
        let t = t as usize;
        let mx = max(row);
        let xt = row[t];
        for x in row.iter_mut() {
            *x = exp(*x - mx);
        }
        let z = lanes_sum(row, |e| e);
        *loss = mx + z.ln() - xt;
        let f = scale / z;
        for x in row.iter_mut() {
            *x *= f;
        }
        row[t] -= scale;
    }
    Ok(())
}

/// The sum of g^2 in f64 (8 independent lanes, then in order).
pub fn sum_squares(g: &[f32]) -> f64 {
    let mut acc = [0f64; L];
    let mut ch = g.chunks_exact(L);
    for c in &mut ch {
        for l in 0..L {
            acc[l] += c[l] as f64 * c[l] as f64;
        }
    }
    acc.iter().sum::<f64>() + ch.remainder().iter().map(|&x| x as f64 * x as f64).sum::<f64>()
}

multiversion!(
    /// AdamW as torch.optim.AdamW in f32 (the reference: `cpu::backward::adamw` in f64), the clip
    /// factor from `norms` as the reference computes it; `norms` is the parts then the halt slot,
    /// and nothing changes once that is set.
    pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], norms: &[f32], a: &AdamStep) => adamw_impl
);

#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)] // S: the ISA multiversion! compiles it for (LLVM vectorises)
fn adamw_impl<S: Isa>(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], norms: &[f32], a: &AdamStep) {
    // norms: the parts, then the halt slot (`Train::guard_finite`): once set, nothing changes
    if norms[a.parts] != 0.0 {
        return;
    }
    let f = crate::cpu::backward::clip_factor(&norms[..a.parts], a.clip);
    let (b1, b2) = (a.beta1, a.beta2);
    let bc1 = 1.0 - (b1 as f64).powi(a.step as i32);
    let bc2 = 1.0 - (b2 as f64).powi(a.step as i32);
    let step = (a.lr as f64 / bc1) as f32;
    let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
    let decay = 1.0 - a.lr * a.weight_decay;
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i] * f;
        let mi = b1 * m[i] + (1.0 - b1) * gi;
        let vi = b2 * v[i] + (1.0 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step * mi / (vi.sqrt() * inv_sqrt_bc2 + a.eps);
    }
}

/// dtable[ids[r]] += dout[r] * scale, rows in order; an id outside the table is an error (checked
/// before any row is added).
pub fn embedding_backward(dtable: &mut [f32], dout: &[f32], ids: &[u32], c: usize, scale: f32) -> Result<()> {
    let v = dtable.len() / c.max(1);
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= v) {
        ensure(false, "embedding_backward", || format!("token id {id} is outside the table of {v} rows"))?;
    }
    for (&id, d) in ids.iter().zip(dout.chunks_exact(c.max(1))) {
        for (o, &x) in dtable[id as usize * c..][..c].iter_mut().zip(d) {
            *o += x * scale;
        }
    }
    Ok(())
}
