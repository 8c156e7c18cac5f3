//! Fast f32 nn.Linear: out (M, N) = x (M, K) @ W^T + b, W (N, K) as PyTorch stores it.
//!
//! W is repacked once (on its first use as a weight) into panels of NR output columns laid out
//! (K, NR), so both kernels read weights contiguously:
//! - GEMM (prefill, M >= 2): an MR x NR register tile accumulates over K from one panel; the bias
//!   initialises the accumulators (fused epilogue); panels stay in L1/L2 while all M rows pass.
//! - GEMV (decode, M = 1): y[panel] += x[p] * panel[p, :], independent accumulator sets over K to
//!   hide the FMA latency; no horizontal sums.
//!
//! Builds: portable (generic over FMA; AVX2 GEMV via multiversion!), AVX2 GEMM tile (mod avx2),
//! simd128 GEMM and GEMV (mod simd128, the page). Reference twin: crate::cpu::matmul (f64).

use crate::error::{ensure, Result, TfError};
use crate::fastcpu::simd::{fmadd, multiversion};

/// Output columns per panel: two AVX registers, four simd128 registers.
pub const NR: usize = 16;
/// Rows per register tile: 4 x 16 = 8 AVX accumulators (of 16 registers). In wasm a 16-wide row is
/// four simd128 values and V8 has 16 vector registers on x64: 2 x 16 = 8 accumulators.
#[cfg(not(target_arch = "wasm32"))]
pub const MR: usize = 4;
#[cfg(target_arch = "wasm32")]
pub const MR: usize = 2;
/// GEMV: independent accumulator sets over K (FMA latency natively; register budget in wasm).
#[cfg(not(target_arch = "wasm32"))]
const GEMV_U: usize = 4;
#[cfg(target_arch = "wasm32")]
const GEMV_U: usize = 2;

/// W (N, K) as ceil(N / NR) panels of (K, NR): data[(q * K + p) * NR + j] = W[q * NR + j, p], 0 past N.
pub struct Packed {
    pub n: usize,
    pub k: usize,
    pub data: Vec<f32>,
}

impl Packed {
    pub fn new(w: &[f32], n: usize, k: usize) -> Result<Packed> {
        ensure(w.len() == n * k, "matmul", || format!("W has {} values, expected N*K = {n}*{k}", w.len()))?;
        let panels = n.div_ceil(NR);
        let len = panels * k * NR;
        let mut data = Vec::new();
        data.try_reserve_exact(len).map_err(|_| TfError::Limit(format!("cannot allocate {len} floats to pack a ({n}, {k}) weight")))?;
        data.resize(len, 0.0);
        for q in 0..panels {
            for j in 0..NR.min(n - q * NR) {
                let row = &w[(q * NR + j) * k..][..k];
                for (p, &v) in row.iter().enumerate() {
                    data[(q * k + p) * NR + j] = v;
                }
            }
        }
        Ok(Packed { n, k, data })
    }
    fn panel(&self, q: usize) -> &[f32] {
        &self.data[q * self.k * NR..(q + 1) * self.k * NR]
    }
}

/// out (M, N) = x (M, K) @ W^T + b. out, x row-major; w packed; b (N,) optional.
pub fn matmul(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, m: usize) -> Result<()> {
    let (n, k) = (w.n, w.k);
    ensure(x.len() == m * k, "matmul", || format!("x has {} values, expected M*K = {m}*{k}", x.len()))?;
    ensure(out.len() == m * n, "matmul", || format!("out has {} values, expected M*N = {m}*{n}", out.len()))?;
    if let Some(b) = b {
        ensure(b.len() == n, "matmul", || format!("bias has {} values, expected N = {n}", b.len()))?;
    }
    if m == 1 {
        gemv(out, x, w, b);
    } else {
        gemm(out, x, w, b, m);
    }
    Ok(())
}

multiversion!(fn gemv(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>) => gemv_impl);
multiversion!(fn gemm(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, m: usize) => gemm_impl);

/// The bias of columns n0..n0+NR (0 past N or without bias).
#[inline(always)]
fn bias_tile(b: Option<&[f32]>, n0: usize, n: usize) -> [f32; NR] {
    let mut t = [0f32; NR];
    if let Some(b) = b {
        let cols = NR.min(n - n0);
        t[..cols].copy_from_slice(&b[n0..n0 + cols]);
    }
    t
}

#[inline(always)]
#[allow(unreachable_code)] // the wasm simd128 build returns early
fn gemv_impl<const FMA: bool>(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        simd128::gemv(out, x, w, b);
        return;
    }
    let (n, k) = (w.n, w.k);
    let x = &x[..k];
    for q in 0..n.div_ceil(NR) {
        let panel = w.panel(q);
        let mut acc = [[0f32; NR]; GEMV_U];
        let mut rows = panel.chunks_exact(GEMV_U * NR);
        let mut xs = x.chunks_exact(GEMV_U);
        for (wr, xv) in (&mut rows).zip(&mut xs) {
            for u in 0..GEMV_U {
                let xu = xv[u];
                let wu = &wr[u * NR..(u + 1) * NR];
                for j in 0..NR {
                    acc[u][j] = fmadd::<FMA>(xu, wu[j], acc[u][j]);
                }
            }
        }
        for (wr, &xu) in rows.remainder().chunks_exact(NR).zip(xs.remainder()) {
            for j in 0..NR {
                acc[0][j] = fmadd::<FMA>(xu, wr[j], acc[0][j]);
            }
        }
        let n0 = q * NR;
        let bias = bias_tile(b, n0, n);
        let cols = NR.min(n - n0);
        for j in 0..cols {
            out[n0 + j] = acc.iter().map(|a| a[j]).sum::<f32>() + bias[j];
        }
    }
}

/// One R x NR tile: out[i, n0..n0+NR] = bias + sum_p x[i, p] * panel[p, :], i < R.
#[inline(always)]
fn tile<const FMA: bool, const R: usize>(out: &mut [f32], x: &[f32], panel: &[f32], n: usize, k: usize, n0: usize, bias: &[f32; NR]) {
    let mut acc = [*bias; R];
    let xr: [&[f32]; R] = std::array::from_fn(|i| &x[i * k..(i + 1) * k]);
    for (p, wp) in panel.chunks_exact(NR).enumerate().take(k) {
        for i in 0..R {
            // SAFETY: p < k (take(k)) and each xr[i] has k values.
            let xv = unsafe { *xr[i].get_unchecked(p) };
            for j in 0..NR {
                acc[i][j] = fmadd::<FMA>(xv, wp[j], acc[i][j]);
            }
        }
    }
    let cols = NR.min(n - n0);
    for i in 0..R {
        out[i * n + n0..i * n + n0 + cols].copy_from_slice(&acc[i][..cols]);
    }
}

#[inline(always)]
#[allow(unreachable_code)] // the AVX2 and wasm simd128 builds return early
fn gemm_impl<const FMA: bool>(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, m: usize) {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true only runs inside multiversion!'s avx2,fma function (CPU checked).
        unsafe { avx2::gemm(out, x, w, b, m) };
        return;
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        simd128::gemm(out, x, w, b, m);
        return;
    }
    let (n, k) = (w.n, w.k);
    for q in 0..n.div_ceil(NR) {
        let panel = w.panel(q);
        let n0 = q * NR;
        let bias = bias_tile(b, n0, n);
        let mut i = 0;
        while i + MR <= m {
            tile::<FMA, MR>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias);
            i += MR;
        }
        match m - i {
            0 => {}
            1 => tile::<FMA, 1>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias),
            2 => tile::<FMA, 2>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias),
            _ => tile::<FMA, 3>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias),
        }
    }
}

/// The AVX2 GEMM tile in intrinsics: LLVM did not vectorise the portable tile with fused
/// multiply-adds (it ran at 4.6 GFLOP/s against 22 for the portable SSE build; BENCHMARKS.md).
/// 6 rows x 16 columns = 12 ymm accumulators + 2 weight registers + 1 broadcast.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{bias_tile, Packed, NR};
    use std::arch::x86_64::*;

    const MR: usize = 6;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, m: usize) {
        let (n, k) = (w.n, w.k);
        assert!(x.len() >= m * k && out.len() >= m * n);
        for q in 0..n.div_ceil(NR) {
            let panel = w.panel(q);
            let n0 = q * NR;
            let bias = bias_tile(b, n0, n);
            let mut i = 0;
            while i + MR <= m {
                tile::<MR>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias);
                i += MR;
            }
            match m - i {
                0 => {}
                1 => tile::<1>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias),
                2 => tile::<2>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias),
                3 => tile::<3>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias),
                4 => tile::<4>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias),
                _ => tile::<5>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias),
            }
        }
    }

    /// out[i, n0..n0+NR] = bias + sum_p x[i, p] * panel[p, :] for i < R.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(out: &mut [f32], x: &[f32], panel: &[f32], n: usize, k: usize, n0: usize, bias: &[f32; NR]) {
        assert!(x.len() >= (R - 1) * k + k && panel.len() >= k * NR && out.len() >= (R - 1) * n + n0 + NR.min(n - n0));
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        let mut a0 = [_mm256_loadu_ps(bias.as_ptr()); R];
        let mut a1 = [_mm256_loadu_ps(bias.as_ptr().add(8)); R];
        for p in 0..k {
            // SAFETY: p < k; the asserts above bound every index
            let w0 = _mm256_loadu_ps(wp.add(p * NR));
            let w1 = _mm256_loadu_ps(wp.add(p * NR + 8));
            for i in 0..R {
                let xv = _mm256_broadcast_ss(&*xp.add(i * k + p));
                a0[i] = _mm256_fmadd_ps(xv, w0, a0[i]);
                a1[i] = _mm256_fmadd_ps(xv, w1, a1[i]);
            }
        }
        let cols = NR.min(n - n0);
        let mut t = [0f32; NR];
        for i in 0..R {
            _mm256_storeu_ps(t.as_mut_ptr(), a0[i]);
            _mm256_storeu_ps(t.as_mut_ptr().add(8), a1[i]);
            out[i * n + n0..i * n + n0 + cols].copy_from_slice(&t[..cols]);
        }
    }
}

/// The page's kernels in wasm simd128 intrinsics: LLVM left much of the portable tile scalar for
/// wasm32 (9 GFLOP/s in V8). No FMA in simd128: mul then add, or `f32x4.relaxed_madd` in the
/// relaxed-SIMD build (simd::madd4).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::{bias_tile, Packed, NR};
    use crate::fastcpu::simd::madd4;
    use core::arch::wasm32::*;

    /// 3 x 16 = 12 v128 accumulators (V8 has 16 vector registers on x64). With relaxed_madd 2 x 16
    /// (8 accumulators, 4 weights and x: 13 registers, no spills) ran 1.2-1.5x faster than 3 x 16 in a
    /// standalone V8 benchmark of the tile on the models' shapes (BENCHMARKS.md); mul + add showed no
    /// consistent difference between the two, so the plain build keeps 3.
    #[cfg(not(target_feature = "relaxed-simd"))]
    const MR: usize = 3;
    #[cfg(target_feature = "relaxed-simd")]
    const MR: usize = 2;
    const C: usize = NR / 4;

    pub fn gemm(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, m: usize) {
        let (n, k) = (w.n, w.k);
        for q in 0..n.div_ceil(NR) {
            let panel = w.panel(q);
            let n0 = q * NR;
            let bias = bias_tile(b, n0, n);
            let mut i = 0;
            while i + MR <= m {
                tile::<MR>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias);
                i += MR;
            }
            match m - i {
                0 => {}
                1 => tile::<1>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias),
                _ => tile::<2>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, &bias),
            }
        }
    }

    #[inline(always)]
    fn tile<const R: usize>(out: &mut [f32], x: &[f32], panel: &[f32], n: usize, k: usize, n0: usize, bias: &[f32; NR]) {
        assert!(x.len() >= R * k && panel.len() >= k * NR && out.len() >= (R - 1) * n + n0 + NR.min(n - n0));
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        // SAFETY: every load below is inside the slices bounded by the assert above
        let bv: [v128; C] = std::array::from_fn(|c| unsafe { v128_load(bias.as_ptr().add(4 * c) as *const v128) });
        let mut acc = [bv; R];
        for p in 0..k {
            let wv: [v128; C] = std::array::from_fn(|c| unsafe { v128_load(wp.add(p * NR + 4 * c) as *const v128) });
            for i in 0..R {
                let xv = f32x4_splat(unsafe { *xp.add(i * k + p) });
                for c in 0..C {
                    acc[i][c] = madd4(xv, wv[c], acc[i][c]);
                }
            }
        }
        let cols = NR.min(n - n0);
        let mut t = [0f32; NR];
        for i in 0..R {
            for c in 0..C {
                unsafe { v128_store(t.as_mut_ptr().add(4 * c) as *mut v128, acc[i][c]) };
            }
            out[i * n + n0..i * n + n0 + cols].copy_from_slice(&t[..cols]);
        }
    }

    /// y[panel] += x[p] * panel[p, :] with two accumulator sets over K.
    pub fn gemv(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>) {
        let (n, k) = (w.n, w.k);
        assert!(x.len() >= k && out.len() >= n);
        for q in 0..n.div_ceil(NR) {
            let panel = w.panel(q);
            let wp = panel.as_ptr();
            let n0 = q * NR;
            let bias = bias_tile(b, n0, n);
            // SAFETY: loads stay inside the panel (K * NR values) and bias (NR values)
            let mut a0: [v128; C] = std::array::from_fn(|c| unsafe { v128_load(bias.as_ptr().add(4 * c) as *const v128) });
            let mut a1 = [f32x4_splat(0.0); C];
            let mut p = 0;
            while p + 2 <= k {
                let (x0, x1) = (f32x4_splat(x[p]), f32x4_splat(x[p + 1]));
                for c in 0..C {
                    let w0 = unsafe { v128_load(wp.add(p * NR + 4 * c) as *const v128) };
                    let w1 = unsafe { v128_load(wp.add((p + 1) * NR + 4 * c) as *const v128) };
                    a0[c] = madd4(x0, w0, a0[c]);
                    a1[c] = madd4(x1, w1, a1[c]);
                }
                p += 2;
            }
            if p < k {
                let x0 = f32x4_splat(x[p]);
                for c in 0..C {
                    let w0 = unsafe { v128_load(wp.add(p * NR + 4 * c) as *const v128) };
                    a0[c] = madd4(x0, w0, a0[c]);
                }
            }
            let cols = NR.min(n - n0);
            let mut t = [0f32; NR];
            for c in 0..C {
                unsafe { v128_store(t.as_mut_ptr().add(4 * c) as *mut v128, f32x4_add(a0[c], a1[c])) };
            }
            out[n0..n0 + cols].copy_from_slice(&t[..cols]);
        }
    }
}
