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
use crate::fastcpu::simd::{erf, exp, gelu, gelu_tanh, hsum, lanes_sum, max, silu, softmax, L};
use crate::ops::EwOp;
use crate::train::ops::{AdamStep, BatchAttn};

// ---------------------------------------------------------------------------------------------
// Scratch buffers

const SLOTS: usize = 6;

thread_local! {
    /// Each thread's scratch buffers, kept between steps: a step's large temporaries would otherwise
    /// be fresh pages every time (allocations above malloc's mmap threshold are returned to the OS).
    static SCRATCH: std::cell::RefCell<[Vec<f32>; SLOTS]> = const { std::cell::RefCell::new([const { Vec::new() }; SLOTS]) };
}

/// This thread's scratch buffer `slot` (< 6), `len` zeros; hand it back with [`give_back`].
pub(crate) fn scratch(slot: usize, len: usize) -> Vec<f32> {
    let mut v = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut()[slot % SLOTS]));
    v.clear();
    v.resize(len, 0.0);
    v
}

/// [`scratch`] for a buffer its user writes in full before reading: `len` values, left as they were
/// (no pass of zeros over it).
pub(crate) fn scratch_any(slot: usize, len: usize) -> Vec<f32> {
    let mut v = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut()[slot % SLOTS]));
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
// Attention, forward and backward, per sequence

/// A strided operand of the attention's small products: element (r, p) at `off + r * rs + p * cs`.
#[derive(Clone, Copy)]
struct Strided<'a> {
    d: &'a [f32],
    off: usize,
    rs: usize,
    cs: usize,
}

/// A row-major operand: row p's values from `off + p * ld`, contiguous.
#[derive(Clone, Copy)]
struct Rows<'a> {
    d: &'a [f32],
    off: usize,
    ld: usize,
}

/// Where a small product's rows go: row i's values from `off + i * ld`.
struct Out<'a> {
    d: &'a mut [f32],
    off: usize,
    ld: usize,
}

/// out[i, c] (= or, with `acc`, +=) sum over p in span(i0, i1) of a(i, p) b(p, c) for rows
/// i < `m` and columns c < `n`; `span(i0, i1)` gives the p range of the row block i0..i1 (the keys
/// or queries the block's rows can see: a(i, p) must be 0 for the p in it that row i cannot). The
/// attention's four products and its scores, on the GEMM's register tiles: a block of rows x up
/// to 4 vectors of columns in accumulators, one broadcast of a and one load of b per product, each
/// value summed over p in order. Columns past the last vector: one scalar sum each.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn small_gemm<S: Isa>(o: &mut Out, a: Strided, b: Rows, m: usize, n: usize, acc: bool, span: impl Fn(usize, usize) -> (usize, usize)) {
    // 3 rows x 4 vectors = 12 accumulators where the ISA has 16 registers for them (AVX2);
    // 2 x 4 = 8 elsewhere (simd128 in V8, the portable build's pairs of SSE registers)
    if block_rows::<S>() == 3 {
        rows_of::<S, 3>(o, a, b, m, n, acc, &span)
    } else {
        rows_of::<S, 2>(o, a, b, m, n, acc, &span)
    }
}

/// The rows of `small_gemm`'s register tile.
#[inline(always)]
fn block_rows<S: Isa>() -> usize {
    if S::MR >= 6 {
        3
    } else {
        2
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_of<S: Isa, const R: usize>(
    o: &mut Out,
    a: Strided,
    b: Rows,
    m: usize,
    n: usize,
    acc: bool,
    span: &impl Fn(usize, usize) -> (usize, usize),
) {
    let l = S::LANES;
    let mut i0 = 0;
    while i0 < m {
        let valid = R.min(m - i0);
        let (p0, p1) = span(i0, i0 + valid);
        let p1 = p1.max(p0);
        // every index read or written below lies inside its slice (checked once for the block)
        if p1 > p0 {
            assert!(a.off + (i0 + valid - 1) * a.rs + (p1 - 1) * a.cs < a.d.len(), "attention product: a");
            assert!(b.off + (p1 - 1) * b.ld + n <= b.d.len(), "attention product: b");
        }
        assert!(o.off + (i0 + valid - 1) * o.ld + n <= o.d.len(), "attention product: out");
        let mut c = 0;
        while c + 4 * l <= n {
            block::<S, R, 4>(o, a, b, i0, valid, c, p0, p1, acc);
            c += 4 * l;
        }
        if c + 2 * l <= n {
            block::<S, R, 2>(o, a, b, i0, valid, c, p0, p1, acc);
            c += 2 * l;
        }
        if c + l <= n {
            block::<S, R, 1>(o, a, b, i0, valid, c, p0, p1, acc);
            c += l;
        }
        for c in c..n {
            for i in i0..i0 + valid {
                let dst = o.off + i * o.ld + c;
                let mut s = if acc { o.d[dst] } else { 0.0 };
                for p in p0..p1 {
                    s = S::fmadd(a.d[a.off + i * a.rs + p * a.cs], b.d[b.off + p * b.ld + c], s);
                }
                o.d[dst] = s;
            }
        }
        i0 += valid;
    }
}

/// The register tile of `small_gemm`: rows i0..i0+valid (of R; the missing rows repeat the last
/// one and are not stored), columns c..c + NV LANES, products p0..p1.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<S: Isa, const R: usize, const NV: usize>(
    o: &mut Out,
    a: Strided,
    b: Rows,
    i0: usize,
    valid: usize,
    c: usize,
    p0: usize,
    p1: usize,
    acc: bool,
) {
    let l = S::LANES;
    let mut t = [[S::zero(); NV]; R];
    let op = o.d.as_mut_ptr();
    // SAFETY: rows_of's asserts: rows i0..i0+valid of out, of a (products p0..p1) and rows p0..p1
    // of b lie inside their slices, columns up to c + NV LANES <= n
    unsafe {
        if acc {
            for (r, t) in t.iter_mut().enumerate().take(valid) {
                for (v, t) in t.iter_mut().enumerate() {
                    *t = S::load(op.add(o.off + (i0 + r) * o.ld + c + v * l));
                }
            }
        }
        let ap: [*const f32; R] = std::array::from_fn(|r| a.d.as_ptr().add(a.off + (i0 + r.min(valid - 1)) * a.rs));
        let bp = b.d.as_ptr().add(b.off + c);
        for p in p0..p1 {
            let bv: [S::V; NV] = std::array::from_fn(|v| S::load(bp.add(p * b.ld + v * l)));
            for (t, ap) in t.iter_mut().zip(&ap) {
                let s = S::splat(*ap.add(p * a.cs));
                for (t, bv) in t.iter_mut().zip(&bv) {
                    *t = S::madd(s, *bv, *t);
                }
            }
        }
        for (r, t) in t.iter().enumerate().take(valid) {
            for (v, t) in t.iter().enumerate() {
                S::store(op.add(o.off + (i0 + r) * o.ld + c + v * l), *t);
            }
        }
    }
}

/// x (rows, hs) at `off`, row stride `ld`, transposed into t (hs, ld_t), zeros past `rows`.
fn transpose_into(t: &mut [f32], x: &[f32], off: usize, ld: usize, rows: usize, hs: usize, ld_t: usize) {
    for (d, tr) in t.chunks_exact_mut(ld_t).take(hs).enumerate() {
        for (j, o) in tr[..rows].iter_mut().enumerate() {
            *o = x[off + j * ld + d];
        }
        tr[rows..].fill(0.0);
    }
}

/// Row i's visible keys end here (causal: the keys up to i).
#[inline(always)]
fn key_end(s: &BatchAttn, i: usize) -> usize {
    if s.causal {
        (i + 1).min(s.tk)
    } else {
        s.tk
    }
}

/// The first query row that sees key j (causal: row j).
#[inline(always)]
fn query_start(s: &BatchAttn, j: usize) -> usize {
    if s.causal {
        j.min(s.tq)
    } else {
        0
    }
}

multiversion!(
    /// The attention forward of one sequence of the batch (`Train::attention_batch`): out (Tq,
    /// NH*HS) and probs (NH, Tq, Tk) written from q (Tq, NH*HS), k, v (Tk, NKV*HS); `keys` this
    /// sequence's key mask (Tk,), 1 = visible. Per head: the scores Q K^T (over K transposed) on
    /// `small_gemm`'s tiles, each causal block of rows stopping at its last visible key; each row's
    /// softmax as the inference kernel's (`simd::softmax`: a blocked key's probability is exactly
    /// 0, a row with no visible key all zeros); then out = P V on the same tiles.
    pub fn attention_forward_seq(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], keys: Option<&[f32]>, s: &BatchAttn) => attention_forward_seq_impl
);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_forward_seq_impl<S: Isa>(
    out: &mut [f32],
    probs: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    keys: Option<&[f32]>,
    s: &BatchAttn,
) {
    let (tq, tk, hs) = (s.tq, s.tk, s.hs);
    let (qw, kw, group) = (s.nh * hs, s.nkv * hs, s.nh / s.nkv);
    let l = S::LANES;
    let tkp = tk.div_ceil(l) * l;
    // K transposed (each value written by transpose_into) and the scores (read where written)
    let mut kt = scratch_any(4, hs * tkp);
    let mut sc = scratch_any(5, tq * tkp);
    let r = block_rows::<S>();
    for h in 0..s.nh {
        let g = h / group;
        if h % group == 0 {
            transpose_into(&mut kt, k, g * hs, kw, tk, hs, tkp);
        }
        // the scores Q K^T up to each row block's last visible key (whole vectors)
        let qa = Strided { d: q, off: h * hs, rs: qw, cs: 1 };
        let ktr = Rows { d: &kt, off: 0, ld: tkp };
        let mut i0 = 0;
        while i0 < tq {
            let i1 = (i0 + r).min(tq);
            let mut ob = Out { d: &mut sc[i0 * tkp..], off: 0, ld: tkp };
            let qb = Strided { off: qa.off + i0 * qw, ..qa };
            small_gemm::<S>(&mut ob, qb, ktr, i1 - i0, key_end(s, i1 - 1).div_ceil(l) * l, false, |_, _| (0, hs));
            i0 = i1;
        }
        let ph = &mut probs[h * tq * tk..][..tq * tk];
        for i in 0..tq {
            let end = key_end(s, i);
            let (prow, srow) = (&mut ph[i * tk..][..tk], &sc[i * tkp..][..end]);
            for (p, &x) in prow[..end].iter_mut().zip(srow) {
                *p = x * s.scale;
            }
            if let Some(m) = keys {
                for (p, &allowed) in prow[..end].iter_mut().zip(m) {
                    if allowed == 0.0 {
                        *p = f32::NEG_INFINITY;
                    }
                }
            }
            prow[end..].fill(0.0);
            softmax::<S>(&mut prow[..end]);
        }
        // out = P V: a row block sums over the keys its last row sees (the others' are 0)
        let mut o = Out { d: out, off: h * hs, ld: qw };
        let pa = Strided { d: ph, off: 0, rs: tk, cs: 1 };
        let vr = Rows { d: v, off: g * hs, ld: kw };
        small_gemm::<S>(&mut o, pa, vr, tq, hs, false, |_, i1| (0, key_end(s, i1 - 1)));
    }
    give_back(4, kt);
    give_back(5, sc);
}

multiversion!(
    /// The attention backward of one sequence of the batch (`Train::attention_backward`): dq (Tq,
    /// NH*HS) written, dk and dv (Tk, NKV*HS) written; dout, q (Tq, NH*HS), k, v (Tk, NKV*HS), probs
    /// (NH, Tq, Tk) of this sequence. dS = P (dP - rowsum(dP P)) scale with dP = dO V^T over the
    /// visible keys; dQ = dS K; dK = dS^T Q and dV = P^T dO, a key/value head summing its query heads
    /// in order. Each product on `small_gemm`'s register tiles (dP over V transposed, dK and dV
    /// reading dS and P down their columns), a causal block stopping at its last visible key (dP,
    /// dQ) or starting at its first query (dK, dV).
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
    let l = S::LANES;
    let tkp = tk.div_ceil(l) * l;
    let (dk, dv) = (&mut dk[..tk * kw], &mut dv[..tk * kw]);
    dk.fill(0.0);
    dv.fill(0.0);
    // V transposed, and dS (every row written in full: dP, then dS up to the row's end, 0 past it)
    let mut vt = scratch_any(4, hs * tkp);
    let mut ds = scratch_any(5, tq * tkp);
    let r = block_rows::<S>();
    for h in 0..s.nh {
        let g = h / group;
        if h % group == 0 {
            transpose_into(&mut vt, v, g * hs, kw, tk, hs, tkp);
        }
        let ph = &probs[h * tq * tk..][..tq * tk];
        // dP = dO V^T up to each row block's last visible key (whole vectors)
        let da = Strided { d: dout, off: h * hs, rs: qw, cs: 1 };
        let vtr = Rows { d: &vt, off: 0, ld: tkp };
        let mut i0 = 0;
        while i0 < tq {
            let i1 = (i0 + r).min(tq);
            let mut ob = Out { d: &mut ds[i0 * tkp..], off: 0, ld: tkp };
            let db = Strided { off: da.off + i0 * qw, ..da };
            small_gemm::<S>(&mut ob, db, vtr, i1 - i0, key_end(s, i1 - 1).div_ceil(l) * l, false, |_, _| (0, hs));
            i0 = i1;
        }
        // dS = P (dP - sum_j P dP) scale over the visible keys, 0 past them
        for i in 0..tq {
            let end = key_end(s, i);
            let (prow, dsrow) = (&ph[i * tk..][..end], &mut ds[i * tkp..][..tkp]);
            let dot = dot_lanes(prow, &dsrow[..end]);
            for (o, &p) in dsrow[..end].iter_mut().zip(prow) {
                *o = p * (*o - dot) * s.scale;
            }
            dsrow[end..].fill(0.0);
        }
        // dQ = dS K over the keys the block's last row sees
        let dsa = Strided { d: &ds, off: 0, rs: tkp, cs: 1 };
        let kr = Rows { d: k, off: g * hs, ld: kw };
        small_gemm::<S>(&mut Out { d: dq, off: h * hs, ld: qw }, dsa, kr, tq, hs, false, |_, i1| (0, key_end(s, i1 - 1)));
        // dK += dS^T Q and dV += P^T dO over the rows that see the block's first key
        let dst = Strided { d: &ds, off: 0, rs: 1, cs: tkp };
        let qr = Rows { d: q, off: h * hs, ld: qw };
        small_gemm::<S>(&mut Out { d: dk, off: g * hs, ld: kw }, dst, qr, tk, hs, true, |j0, _| (query_start(s, j0), tq));
        let pt = Strided { d: ph, off: 0, rs: 1, cs: tk };
        let dr = Rows { d: dout, off: h * hs, ld: qw };
        small_gemm::<S>(&mut Out { d: dv, off: g * hs, ld: kw }, pt, dr, tk, hs, true, |j0, _| (query_start(s, j0), tq));
    }
    give_back(4, vt);
    give_back(5, ds);
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
    /// out = op(x) for ReLU, GELU, GELU-tanh or SiLU (`op` checked by the caller): the training
    /// forward's activation beside its input, in one pass; the same formulas (`simd::gelu` ...) and
    /// so the same values as `act::inplace` on a copy.
    pub fn act_forward(out: &mut [f32], x: &[f32], op: EwOp) => act_forward_impl
);

#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)] // S: the ISA multiversion! compiles it for (LLVM vectorises)
fn act_forward_impl<S: Isa>(out: &mut [f32], x: &[f32], op: EwOp) {
    let n = out.len().min(x.len());
    let (out, x) = (&mut out[..n], &x[..n]);
    // one plain loop per op (a `for_each` closure may be compiled outside the ISA's function)
    macro_rules! each {
        ($f:expr) => {
            for i in 0..n {
                out[i] = $f(x[i]);
            }
        };
    }
    match op {
        EwOp::Relu => each!(relu),
        EwOp::Gelu => each!(gelu),
        EwOp::GeluTanh => each!(gelu_tanh),
        _ => each!(silu),
    }
}

/// ReLU as `act::inplace` computes it.
#[inline(always)]
fn relu(v: f32) -> f32 {
    v.max(0.0)
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
