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
    check(out, x, w, b, m)?;
    if m == 1 {
        gemv(out, x, w, b, 0..w.n.div_ceil(NR));
    } else {
        gemm(out, x, w, b, m);
    }
    Ok(())
}

fn check(out: &[f32], x: &[f32], w: &Packed, b: Option<&[f32]>, m: usize) -> Result<()> {
    let (n, k) = (w.n, w.k);
    ensure(x.len() == m * k, "matmul", || format!("x has {} values, expected M*K = {m}*{k}", x.len()))?;
    ensure(out.len() == m * n, "matmul", || format!("out has {} values, expected M*N = {m}*{n}", out.len()))?;
    if let Some(b) = b {
        ensure(b.len() == n, "matmul", || format!("bias has {} values, expected N = {n}", b.len()))?;
    }
    Ok(())
}

pub use threads::{matmul_on, matmul_split, tasks_for, Threads, MAX_THREADS, PAR_MIN_FLOP};

/// Native threads for the fast backend (issue 11 §2): the same kernels on disjoint parts of the output,
/// so every output value is computed by the same instructions in the same order as on one thread
/// (bitwise the same results, tests/fastcpu_threads.rs).
/// - GEMM (M >= 2): split over rows, in blocks of `ROW_ALIGN` rows so that every task runs the same
///   register tiles as one thread would (a tile's rows are independent: no row's value depends on
///   which tile it was in). Each task reads all of W (the panels are shared through L3) and writes a
///   contiguous block of `out`: no unsafe code, no reduction.
/// - GEMV (M = 1): split over the 16-column panels (contiguous in `out`).
///
/// The work goes to a dedicated rayon pool of n - 1 workers owned by the backend (not rayon's global
/// pool) while the calling thread runs the first part itself: one wake-up per fork-join.
/// Below [`PAR_MIN_FLOP`] a product runs on the calling thread alone (a fork-join costs ~5-20 µs).
/// The page is single-threaded: there `Threads` is always one thread (BENCHMARKS.md "Threads").
mod threads {
    #[cfg(not(target_arch = "wasm32"))]
    use super::{check, gemm, gemv};
    use super::{matmul, Packed, NR};
    use crate::error::{Result, TfError};

    /// The most threads `--threads` accepts.
    pub const MAX_THREADS: usize = 64;
    /// Products of fewer FLOPs (2 M N K) run on one thread. A fork-join measured 10-25 µs on the loaded
    /// 2-core dev machine (`cargo run --release --example bench_cpu -- threads`, BENCHMARKS.md "Threads");
    /// splitting W µs of work in two saves W / 2, so it needs W of at least twice that: 4 MFLOP is ~36 µs
    /// at the AVX2 tile's ~110 GFLOP/s. On the shipped models every prefill-128 product but llama's
    /// (128, 192) x (64, 192) K/V projections is above it; no decode product is.
    pub const PAR_MIN_FLOP: usize = 4_000_000;
    /// GEMM row blocks are a multiple of every tile height (AVX2 6, portable 4, simd128 3 and 2).
    const ROW_ALIGN: usize = 12;

    /// One thread (the default), or a dedicated pool.
    #[derive(Clone, Default)]
    pub struct Threads {
        #[cfg(not(target_arch = "wasm32"))]
        pool: Option<std::sync::Arc<rayon::ThreadPool>>,
    }

    impl Threads {
        /// The calling thread only.
        pub const ONE: Threads = Threads {
            #[cfg(not(target_arch = "wasm32"))]
            pool: None,
        };

        /// `n` threads in all: the caller and a pool of n - 1 workers (1..=MAX_THREADS; the page: 1).
        pub fn new(n: usize) -> Result<Threads> {
            if n == 0 || n > MAX_THREADS {
                return Err(TfError::Input(format!("the thread count must be between 1 and {MAX_THREADS}, got {n}")));
            }
            if n == 1 {
                return Ok(Threads::ONE);
            }
            Threads::pool(n)
        }

        #[cfg(not(target_arch = "wasm32"))]
        fn pool(n: usize) -> Result<Threads> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n - 1)
                .thread_name(|i| format!("tinyformer-cpu-{i}"))
                .build()
                .map_err(|e| TfError::Input(format!("cannot start {} CPU threads: {e}", n - 1)))?;
            Ok(Threads { pool: Some(std::sync::Arc::new(pool)) })
        }

        #[cfg(target_arch = "wasm32")]
        fn pool(n: usize) -> Result<Threads> {
            Err(TfError::Input(format!("the page's CPU path runs on one thread, {n} were asked for")))
        }

        /// Threads in all, the caller included.
        pub fn count(&self) -> usize {
            #[cfg(not(target_arch = "wasm32"))]
            if let Some(p) = &self.pool {
                return p.current_num_threads() + 1;
            }
            1
        }
    }

    impl std::fmt::Debug for Threads {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Threads({})", self.count())
        }
    }

    /// The parts `matmul_on` splits (M, K) @ (N, K)^T into on `threads`: 1 below [`PAR_MIN_FLOP`] or where
    /// the output has too few row blocks (GEMM) or panels (GEMV) to share.
    pub fn tasks_for(threads: &Threads, m: usize, n: usize, k: usize) -> usize {
        if 2 * m * n * k < PAR_MIN_FLOP {
            return 1;
        }
        let units = if m == 1 { n.div_ceil(NR) } else { m.div_ceil(ROW_ALIGN) };
        threads.count().min(units)
    }

    /// [`matmul`](super::matmul) on `threads`, split as [`tasks_for`] says. Same results, bit for bit.
    pub fn matmul_on(threads: &Threads, out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, m: usize) -> Result<()> {
        matmul_split(threads, out, x, w, b, m, tasks_for(threads, m, w.n, w.k))
    }

    /// [`matmul`](super::matmul) split into (at most) `tasks` parts on `threads`, whatever the size
    /// (the benchmark's crossover measurement and the tests; `matmul_on` is the product's entry).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_split(
        threads: &Threads,
        out: &mut [f32],
        x: &[f32],
        w: &Packed,
        b: Option<&[f32]>,
        m: usize,
        tasks: usize,
    ) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        if let (Some(pool), true) = (&threads.pool, tasks > 1) {
            check(out, x, w, b, m)?;
            let (n, k) = (w.n, w.k);
            // the kernels pick their build per thread (simd::force_portable is thread-local): the
            // workers run the caller's
            let portable = !crate::fastcpu::simd::avx2_fma();
            let build = move || crate::fastcpu::simd::force_portable(portable);
            if m == 1 {
                let panels = n.div_ceil(NR);
                let per = panels.div_ceil(tasks);
                let mut parts = out.chunks_mut(per * NR).enumerate();
                let (_, first) = parts.next().expect("N >= 1");
                pool.in_place_scope(|s| {
                    for (t, o) in parts {
                        let q0 = t * per;
                        s.spawn(move |_| {
                            build();
                            gemv(o, x, w, b, q0..(q0 + per).min(panels))
                        });
                    }
                    gemv(first, x, w, b, 0..per.min(panels));
                });
            } else {
                let rows = m.div_ceil(tasks).div_ceil(ROW_ALIGN) * ROW_ALIGN;
                let mut parts = out.chunks_mut(rows * n).zip(x.chunks(rows * k));
                let (first, x0) = parts.next().expect("M >= 2");
                pool.in_place_scope(|s| {
                    for (o, xs) in parts {
                        s.spawn(move |_| {
                            build();
                            gemm(o, xs, w, b, xs.len() / k)
                        });
                    }
                    gemm(first, x0, w, b, x0.len() / k);
                });
            }
            return Ok(());
        }
        let _ = (threads, tasks);
        matmul(out, x, w, b, m)
    }
}
multiversion!(fn gemv(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, panels: std::ops::Range<usize>) => gemv_impl);
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
/// The panels `panels` of the GEMV; `out` starts at the first one's columns.
fn gemv_impl<const FMA: bool>(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        simd128::gemv(out, x, w, b, panels);
        return;
    }
    let (n, k) = (w.n, w.k);
    let x = &x[..k];
    let base = panels.start * NR;
    for q in panels {
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
            out[n0 - base + j] = acc.iter().map(|a| a[j]).sum::<f32>() + bias[j];
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
        if cols == NR {
            // a whole panel: straight to the output rows (a copy_from_slice of a variable length is a
            // memory.copy, which V8 runs as a call: a few % of prefill over ~7,000 tiles a layer)
            let op = out.as_mut_ptr();
            for i in 0..R {
                for c in 0..C {
                    // SAFETY: row i's columns n0..n0+NR lie inside out (the assert above, cols = NR)
                    unsafe { v128_store(op.add(i * n + n0 + 4 * c) as *mut v128, acc[i][c]) };
                }
            }
            return;
        }
        let mut t = [0f32; NR];
        for i in 0..R {
            for c in 0..C {
                unsafe { v128_store(t.as_mut_ptr().add(4 * c) as *mut v128, acc[i][c]) };
            }
            out[i * n + n0..i * n + n0 + cols].copy_from_slice(&t[..cols]);
        }
    }

    /// y[panel] += x[p] * panel[p, :] with two accumulator sets over K.
    pub fn gemv(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
        let (n, k) = (w.n, w.k);
        let base = panels.start * NR;
        assert!(x.len() >= k && out.len() >= n.min(panels.end * NR) - base);
        for q in panels {
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
            if cols == NR {
                let op = out[n0 - base..n0 - base + NR].as_mut_ptr();
                for c in 0..C {
                    // SAFETY: op points at NR values of out (the slice just above)
                    unsafe { v128_store(op.add(4 * c) as *mut v128, f32x4_add(a0[c], a1[c])) };
                }
                continue;
            }
            let mut t = [0f32; NR];
            for c in 0..C {
                unsafe { v128_store(t.as_mut_ptr().add(4 * c) as *mut v128, f32x4_add(a0[c], a1[c])) };
            }
            out[n0 - base..n0 - base + cols].copy_from_slice(&t[..cols]);
        }
    }
}
