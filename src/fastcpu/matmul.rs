//! Fast f32 nn.Linear: out (M, N) = x (M, K) @ W^T + b, W (N, K) as PyTorch stores it.
//!
//! W is repacked once (on its first use as a weight) into panels of NR output columns laid out
//! (K, NR), so both kernels read weights contiguously:
//! - GEMM (prefill, M >= 2): an MR x NR register tile accumulates over K from one panel; the bias
//!   initialises the accumulators (fused epilogue); panels stay in L1/L2 while all M rows pass.
//! - GEMV (decode, M = 1): y[panel] += x[p] * panel[p, :], independent accumulator sets over K to
//!   hide the FMA latency; no horizontal sums.
//!
//! The kernels below are written once over an ISA (crate::fastcpu::isa) and compiled once per ISA by
//! multiversion!; the AVX2 GEMM tile and the page's simd128 GEMM tile and GEMV are their ISA's own.
//! Reference twin: crate::cpu::matmul (f64).
//!
//! 16-bit weights (an F16 / BF16 file) stay 16-bit in their panels ([`Packed16`], the same layout of
//! u16): decode reads half the bytes. The GEMV widens each panel row in registers (`Isa::widen16`:
//! F16C natively, simd128 integer ops in the page); the GEMM widens one panel at a time into a scratch
//! panel and runs the f32 tile over it. Widening is exact ([`widen_f16`], [`widen_bf16`]: bit for bit
//! `half`'s conversion), and the kernels add the same products in the same order as on the widened f32
//! panels, so a 16-bit weight gives the same bits as its widened copy (tests/fastcpu_ops.rs).

use crate::error::{ensure, Result, TfError};
use crate::fastcpu::isa::{multiversion, Isa};

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

/// The 16-bit float formats a weight's panels may keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    F16,
    Bf16,
}

/// f16 bits as f32, exactly (`half::f16::to_f32` bit for bit, NaNs quieted as it does), with no
/// operation on a subnormal: the plain-Rust twin of the ISAs' `widen16`. The exponent is
/// rebiased by an integer add (normals); an f16 subnormal m * 2^-24 is made as the normal
/// 2^-14 * (1 + m / 1024) and 2^-14 subtracted (exact); an all-ones exponent becomes f32's (Inf, NaN).
#[inline(always)]
pub fn widen_f16(h: u16) -> f32 {
    let h = h as u32;
    let mag = (h & 0x7fff) << 13;
    let exp = mag & 0x0f80_0000;
    let normal = f32::from_bits(mag + ((127 - 15) << 23));
    let sub = f32::from_bits(mag + (113 << 23)) - f32::from_bits(113 << 23);
    let special = 0x7f80_0000 | mag | if mag & 0x007f_e000 != 0 { 0x0040_0000 } else { 0 };
    let v = if exp == 0x0f80_0000 {
        special
    } else if exp == 0 {
        sub.to_bits()
    } else {
        normal.to_bits()
    };
    f32::from_bits(v | (h & 0x8000) << 16)
}

/// bf16 bits as f32, exactly: the bits shifted up, NaNs quieted (`half::bf16::to_f32` bit for bit).
#[inline(always)]
pub fn widen_bf16(h: u16) -> f32 {
    let q = if h & 0x7fff > 0x7f80 { 0x0040_0000 } else { 0 };
    f32::from_bits((h as u32) << 16 | q)
}

/// [`widen_f16`] or [`widen_bf16`] (the checks).
pub fn widen_f16_or_bf16(h: Half, b: u16) -> f32 {
    h.widen(b)
}

impl Half {
    /// One value widened ([`widen_f16`] / [`widen_bf16`]).
    #[inline(always)]
    pub fn widen(self, h: u16) -> f32 {
        match self {
            Half::F16 => widen_f16(h),
            Half::Bf16 => widen_bf16(h),
        }
    }
}

/// A 16-bit W (N, K) in the panels of [`Packed`]: bits[(q * K + p) * NR + j] = W[q * NR + j, p], 0 past N.
pub struct Packed16 {
    pub n: usize,
    pub k: usize,
    pub half: Half,
    pub data: Vec<u16>,
}

impl Packed16 {
    /// Packs W (N, K) given as f16 / bf16 bits (row-major). Its values must be finite (the page's f16
    /// GEMV widens finite values only: `isa::wasm_tiles::gemv16`); a weight with NaN / Inf is an error
    /// here, and the backend keeps it as f32 panels instead.
    pub fn new(w: &[u16], half: Half, n: usize, k: usize) -> Result<Packed16> {
        ensure(w.len() == n * k, "matmul", || format!("W has {} values, expected N*K = {n}*{k}", w.len()))?;
        let exp = if half == Half::F16 { 0x7c00 } else { 0x7f80 };
        ensure(w.iter().all(|&v| v & exp != exp), "matmul", || "a 16-bit weight with NaN or Inf values is kept as f32 panels".into())?;
        let data = pack_rows(w, n, k, 0u16)?;
        Ok(Packed16 { n, k, half, data })
    }
    pub(crate) fn panel(&self, q: usize) -> &[u16] {
        &self.data[q * self.k * NR..(q + 1) * self.k * NR]
    }
}

/// W (N, K) row-major into ceil(N / NR) panels of (K, NR), `zero` past N.
fn pack_rows<T: Copy>(w: &[T], n: usize, k: usize, zero: T) -> Result<Vec<T>> {
    let mut data = Vec::new();
    pack_rows_in(&mut data, w, n, k, zero)?;
    Ok(data)
}

fn pack_rows_in<T: Copy>(data: &mut Vec<T>, w: &[T], n: usize, k: usize, zero: T) -> Result<()> {
    let panels = n.div_ceil(NR);
    let len = panels * k * NR;
    data.clear();
    data.try_reserve_exact(len).map_err(|_| TfError::Limit(format!("cannot allocate {len} values to pack a ({n}, {k}) weight")))?;
    data.resize(len, zero);
    for q in 0..panels {
        for j in 0..NR.min(n - q * NR) {
            let row = &w[(q * NR + j) * k..][..k];
            for (p, &v) in row.iter().enumerate() {
                data[(q * k + p) * NR + j] = v;
            }
        }
    }
    Ok(())
}

/// A matmul weight's panels: f32 ([`Packed`]) or 16-bit ([`Packed16`]).
#[derive(Clone, Copy)]
pub enum Weight<'a> {
    F32(&'a Packed),
    Half(&'a Packed16),
}

impl<'a> From<&'a Packed> for Weight<'a> {
    fn from(p: &'a Packed) -> Self {
        Weight::F32(p)
    }
}

impl<'a> From<&'a Packed16> for Weight<'a> {
    fn from(p: &'a Packed16) -> Self {
        Weight::Half(p)
    }
}

impl Weight<'_> {
    /// (N, K)
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Weight::F32(p) => (p.n, p.k),
            Weight::Half(p) => (p.n, p.k),
        }
    }
    /// Row `r` of W (K values, widened), read out of the panels (a stride of NR): the embedding
    /// gather of a tied table that is kept only as the head's panels.
    pub fn row_into(&self, r: usize, dst: &mut [f32]) {
        let (q, j) = (r / NR, r % NR);
        match self {
            Weight::F32(p) => {
                let panel = p.panel(q);
                for (pp, d) in dst.iter_mut().enumerate().take(p.k) {
                    *d = panel[pp * NR + j];
                }
            }
            Weight::Half(p) => {
                let panel = p.panel(q);
                for (pp, d) in dst.iter_mut().enumerate().take(p.k) {
                    *d = p.half.widen(panel[pp * NR + j]);
                }
            }
        }
    }
    /// W (N, K) row-major, widened: the weight's values for what reads them as a table (training,
    /// which then keeps them; tests).
    pub fn unpack(&self) -> Result<Vec<f32>> {
        let (n, k) = self.dims();
        let mut out = Vec::new();
        out.try_reserve_exact(n * k)
            .map_err(|_| TfError::Limit(format!("cannot allocate {} floats to unpack a ({n}, {k}) weight", n * k)))?;
        out.resize(n * k, 0.0);
        for (r, row) in out.chunks_exact_mut(k.max(1)).enumerate().take(n) {
            self.row_into(r, row);
        }
        Ok(out)
    }
    /// Bytes of its panels.
    pub fn bytes(&self) -> usize {
        match self {
            Weight::F32(p) => p.data.len() * 4,
            Weight::Half(p) => p.data.len() * 2,
        }
    }
}

/// W (N, K) as ceil(N / NR) panels of (K, NR): data[(q * K + p) * NR + j] = W[q * NR + j, p], 0 past N.
pub struct Packed {
    pub n: usize,
    pub k: usize,
    pub data: Vec<f32>,
}

impl Packed {
    pub fn new(w: &[f32], n: usize, k: usize) -> Result<Packed> {
        Packed::new_in(Vec::new(), w, n, k)
    }
    /// [`Packed::new`] into `data`'s allocation (the panels of an earlier version of the weight).
    pub fn new_in(mut data: Vec<f32>, w: &[f32], n: usize, k: usize) -> Result<Packed> {
        ensure(w.len() == n * k, "matmul", || format!("W has {} values, expected N*K = {n}*{k}", w.len()))?;
        pack_rows_in(&mut data, w, n, k, 0.0)?;
        Ok(Packed { n, k, data })
    }
    /// The panels of W^T (K, N) made from W (N, K) itself (no transposed copy): panel q's row p is
    /// W[p, q*NR..q*NR+NR], a contiguous run of W's row p. For dX = dY W in the matmul backward.
    pub fn transposed(w: &[f32], n: usize, k: usize) -> Result<Packed> {
        Packed::transposed_in(Vec::new(), w, n, k)
    }
    /// [`Packed::transposed`] into `data`'s allocation (a buffer kept from an earlier call).
    pub fn transposed_in(mut data: Vec<f32>, w: &[f32], n: usize, k: usize) -> Result<Packed> {
        ensure(w.len() == n * k, "matmul", || format!("W has {} values, expected N*K = {n}*{k}", w.len()))?;
        let panels = k.div_ceil(NR);
        let len = panels * n * NR;
        data.clear();
        data.try_reserve_exact(len).map_err(|_| TfError::Limit(format!("cannot allocate {len} floats to pack a ({k}, {n}) weight")))?;
        data.resize(len, 0.0);
        for q in 0..panels {
            let cols = NR.min(k - q * NR);
            for p in 0..n {
                let (dst, src) = (&mut data[(q * n + p) * NR..][..cols], &w[p * k + q * NR..][..cols]);
                if cols == NR {
                    // a whole row of the panel: a copy of known size, inlined (a short copy_from_slice
                    // is a memmove call each)
                    let d: &mut [f32; NR] = dst.try_into().expect("NR values");
                    *d = src.try_into().expect("NR values");
                } else {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
                }
            }
        }
        Ok(Packed { n: k, k: n, data })
    }
    pub(crate) fn panel(&self, q: usize) -> &[f32] {
        &self.data[q * self.k * NR..(q + 1) * self.k * NR]
    }
}

/// out (M, N) = x (M, K) @ W^T + b. out, x row-major; w packed (f32 or 16-bit); b (N,) optional.
pub fn matmul<'a>(out: &mut [f32], x: &[f32], w: impl Into<Weight<'a>>, b: Option<&[f32]>, m: usize) -> Result<()> {
    let w = w.into();
    check(out, x, w, b, m)?;
    if m == 1 {
        gemv_any(out, x, w, b, 0..w.dims().0.div_ceil(NR));
    } else {
        gemm_any(out, x, w, b, m);
    }
    Ok(())
}

/// The GEMV over `panels` of either kind of weight.
fn gemv_any(out: &mut [f32], x: &[f32], w: Weight, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
    match w {
        Weight::F32(p) => gemv(out, x, p, b, panels),
        Weight::Half(p) => gemv16(out, x, p, b, panels),
    }
}

/// The GEMM of either kind of weight.
fn gemm_any(out: &mut [f32], x: &[f32], w: Weight, b: Option<&[f32]>, m: usize) {
    match w {
        Weight::F32(p) => gemm(out, x, p, b, m),
        Weight::Half(p) => gemm16(out, x, p, b, m),
    }
}

fn check(out: &[f32], x: &[f32], w: Weight, b: Option<&[f32]>, m: usize) -> Result<()> {
    let (n, k) = w.dims();
    ensure(x.len() == m * k, "matmul", || format!("x has {} values, expected M*K = {m}*{k}", x.len()))?;
    ensure(out.len() == m * n, "matmul", || format!("out has {} values, expected M*N = {m}*{n}", out.len()))?;
    if let Some(b) = b {
        ensure(b.len() == n, "matmul", || format!("bias has {} values, expected N = {n}", b.len()))?;
    }
    Ok(())
}

pub use threads::{matmul_on, matmul_split, tasks_for, Threads, MAX_THREADS, PAR_MIN_FLOP};

/// Native threads for the fast backend: the same kernels on disjoint parts of the output,
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
/// The page is single-threaded: there `Threads` is always one thread (DECISIONS.md "Threads only for large products").
mod threads {
    #[cfg(not(target_arch = "wasm32"))]
    use super::{check, gemm_any, gemv_any};
    use super::{matmul, Weight, NR};
    use crate::error::{Result, TfError};

    /// The most threads `--threads` accepts.
    pub const MAX_THREADS: usize = 64;
    /// Products of fewer FLOPs (2 M N K) run on one thread. A fork-join measured 10-25 µs on the loaded
    /// 2-core dev machine (`cargo run --release --example bench_cpu -- threads`; DECISIONS.md "Threads only for large products");
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

        /// Runs `f` on every item, the items split into at most [`count`](Threads::count) contiguous
        /// runs (the caller runs the first), each on the calling thread's build of the kernels. What an
        /// item computes must not depend on the run it falls in (each item owns its outputs): then the
        /// results are the same bits on any number of threads. `work`: the FLOPs of all the items;
        /// below [`PAR_MIN_FLOP`] they all run on the calling thread.
        pub fn each<T: Send>(&self, items: Vec<T>, work: usize, f: impl Fn(T) + Sync) {
            #[cfg(not(target_arch = "wasm32"))]
            if let (Some(pool), true) = (&self.pool, items.len() > 1 && work >= PAR_MIN_FLOP) {
                let tasks = self.count().min(items.len());
                let per = items.len().div_ceil(tasks);
                let portable = !crate::fastcpu::simd::avx2_fma();
                let f = &f;
                let mut runs: Vec<Vec<T>> = Vec::with_capacity(tasks);
                for (i, item) in items.into_iter().enumerate() {
                    if i % per == 0 {
                        runs.push(Vec::with_capacity(per));
                    }
                    if let Some(r) = runs.last_mut() {
                        r.push(item);
                    }
                }
                let mut runs = runs.into_iter();
                let first = runs.next().unwrap_or_default();
                pool.in_place_scope(|s| {
                    for run in runs {
                        s.spawn(move |_| {
                            crate::fastcpu::simd::force_portable(portable);
                            run.into_iter().for_each(f)
                        });
                    }
                    first.into_iter().for_each(f);
                });
                return;
            }
            let _ = work;
            items.into_iter().for_each(f)
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
    pub fn matmul_on<'a>(
        threads: &Threads,
        out: &mut [f32],
        x: &[f32],
        w: impl Into<Weight<'a>>,
        b: Option<&[f32]>,
        m: usize,
    ) -> Result<()> {
        let w = w.into();
        let (n, k) = w.dims();
        matmul_split(threads, out, x, w, b, m, tasks_for(threads, m, n, k))
    }

    /// [`matmul`](super::matmul) split into (at most) `tasks` parts on `threads`, whatever the size
    /// (the benchmark's crossover measurement and the tests; `matmul_on` is the product's entry).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_split<'a>(
        threads: &Threads,
        out: &mut [f32],
        x: &[f32],
        w: impl Into<Weight<'a>>,
        b: Option<&[f32]>,
        m: usize,
        tasks: usize,
    ) -> Result<()> {
        let w = w.into();
        #[cfg(not(target_arch = "wasm32"))]
        if let (Some(pool), true) = (&threads.pool, tasks > 1) {
            check(out, x, w, b, m)?;
            let (n, k) = w.dims();
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
                            gemv_any(o, x, w, b, q0..(q0 + per).min(panels))
                        });
                    }
                    gemv_any(first, x, w, b, 0..per.min(panels));
                });
            } else {
                let rows = m.div_ceil(tasks).div_ceil(ROW_ALIGN) * ROW_ALIGN;
                let mut parts = out.chunks_mut(rows * n).zip(x.chunks(rows * k));
                let (first, x0) = parts.next().expect("M >= 2");
                pool.in_place_scope(|s| {
                    for (o, xs) in parts {
                        s.spawn(move |_| {
                            build();
                            gemm_any(o, xs, w, b, xs.len() / k)
                        });
                    }
                    gemm_any(first, x0, w, b, x0.len() / k);
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
multiversion!(
    /// dst = src widened (`Isa::widen16` in blocks of NR, the rest one by one; exact): the ISAs' widening
    /// on its own, for the checks (src/fastcpu/check.rs `half_sweep`).
    pub fn widen16_slice(h: Half, src: &[u16], dst: &mut [f32]) => widen16_slice_impl
);
multiversion!(fn gemv16(out: &mut [f32], x: &[f32], w: &Packed16, b: Option<&[f32]>, panels: std::ops::Range<usize>) => gemv16_impl);
multiversion!(fn gemm16(out: &mut [f32], x: &[f32], w: &Packed16, b: Option<&[f32]>, m: usize) => gemm16_impl);

/// The bias of columns n0..n0+NR (0 past N or without bias).
#[inline(always)]
pub(crate) fn bias_tile(b: Option<&[f32]>, n0: usize, n: usize) -> [f32; NR] {
    let mut t = [0f32; NR];
    if let Some(b) = b {
        let cols = NR.min(n - n0);
        t[..cols].copy_from_slice(&b[n0..n0 + cols]);
    }
    t
}

#[inline(always)]
fn gemv_impl<S: Isa>(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
    S::gemv(out, x, w, b, panels)
}

/// The panels `panels` of the GEMV; `out` starts at the first one's columns.
#[inline(always)]
pub(crate) fn gemv_panels<S: Isa>(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
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
                    acc[u][j] = S::fmadd(xu, wu[j], acc[u][j]);
                }
            }
        }
        for (wr, &xu) in rows.remainder().chunks_exact(NR).zip(xs.remainder()) {
            for j in 0..NR {
                acc[0][j] = S::fmadd(xu, wr[j], acc[0][j]);
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

#[inline(always)]
fn widen16_slice_impl<S: Isa>(h: Half, src: &[u16], dst: &mut [f32]) {
    let mut d = dst.chunks_exact_mut(NR);
    let mut s = src.chunks_exact(NR);
    for (d, s) in (&mut d).zip(&mut s) {
        *<&mut [f32; NR]>::try_from(d).expect("NR values") = S::widen16(h, s.try_into().expect("NR values"));
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = h.widen(s);
    }
}

#[inline(always)]
fn gemv16_impl<S: Isa>(out: &mut [f32], x: &[f32], w: &Packed16, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
    S::gemv16(out, x, w, b, panels)
}

/// [`gemv_panels`] over 16-bit panels: each row of a panel widened (`S::widen16`, exact) into
/// registers, then the same multiply-adds in the same order as the f32 GEMV (the same bits).
#[inline(always)]
pub(crate) fn gemv16_panels<S: Isa>(out: &mut [f32], x: &[f32], w: &Packed16, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
    let (n, k, h) = (w.n, w.k, w.half);
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
                let wu = S::widen16(h, wr[u * NR..(u + 1) * NR].try_into().expect("NR values"));
                for j in 0..NR {
                    acc[u][j] = S::fmadd(xu, wu[j], acc[u][j]);
                }
            }
        }
        for (wr, &xu) in rows.remainder().chunks_exact(NR).zip(xs.remainder()) {
            let wr = S::widen16(h, wr.try_into().expect("NR values"));
            for j in 0..NR {
                acc[0][j] = S::fmadd(xu, wr[j], acc[0][j]);
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

thread_local! {
    /// One widened panel of a 16-bit GEMM (K * NR f32), kept between calls.
    static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`gemm_impl`] over 16-bit panels: each panel widened once per block of rows into a scratch panel
/// (exact), then the ISA's f32 tiles over it (the same bits as the widened weight's GEMM).
#[inline(always)]
fn gemm16_impl<S: Isa>(out: &mut [f32], x: &[f32], w: &Packed16, b: Option<&[f32]>, m: usize) {
    let (n, k, h) = (w.n, w.k, w.half);
    assert!(x.len() >= m * k && out.len() >= m * n);
    let mut wide = PANEL.with(|p| std::mem::take(&mut *p.borrow_mut()));
    wide.clear();
    wide.resize(k * NR, 0.0);
    let block = (GEMM_BLOCK_BYTES / 4 / k.max(1) / 12 * 12).max(12);
    let mut r0 = 0;
    while r0 < m {
        let r1 = (r0 + block).min(m);
        for q in 0..n.div_ceil(NR) {
            for (d, s) in wide.chunks_exact_mut(NR).zip(w.panel(q).chunks_exact(NR)) {
                *<&mut [f32; NR]>::try_from(d).expect("NR values") = S::widen16(h, s.try_into().expect("NR values"));
            }
            let bias = bias_tile(b, q * NR, n);
            let mut i = r0;
            while i + S::MR <= r1 {
                tile_panel::<S>(S::MR, &mut out[i * n..], &x[i * k..], &wide, n, k, q * NR, &bias);
                i += S::MR;
            }
            if i < r1 {
                tile_panel::<S>(r1 - i, &mut out[i * n..], &x[i * k..], &wide, n, k, q * NR, &bias);
            }
        }
        r0 = r1;
    }
    PANEL.with(|p| *p.borrow_mut() = wide);
}

/// One R x NR tile (the portable one): out[i, n0..n0+NR] = bias + sum_p x[i, p] * panel[p, :], i < R.
#[inline(always)]
pub(crate) fn tile<S: Isa, const R: usize>(out: &mut [f32], x: &[f32], panel: &[f32], n: usize, k: usize, n0: usize, bias: &[f32; NR]) {
    let mut acc = [*bias; R];
    let xr: [&[f32]; R] = std::array::from_fn(|i| &x[i * k..(i + 1) * k]);
    for (p, wp) in panel.chunks_exact(NR).enumerate().take(k) {
        for i in 0..R {
            // SAFETY: p < k (take(k)) and each xr[i] has k values.
            let xv = unsafe { *xr[i].get_unchecked(p) };
            for j in 0..NR {
                acc[i][j] = S::fmadd(xv, wp[j], acc[i][j]);
            }
        }
    }
    let cols = NR.min(n - n0);
    for i in 0..R {
        out[i * n + n0..i * n + n0 + cols].copy_from_slice(&acc[i][..cols]);
    }
}

/// Bytes of x one block of rows of the GEMM holds: every panel passes over the block while it stays
/// in L2 (a whole x of 768 x 512, 1.5 MB, would come from L3 once per panel).
const GEMM_BLOCK_BYTES: usize = 128 * 1024;

/// The GEMM over the ISA's register tiles of MR rows, the last rows in one smaller tile; rows in
/// blocks of about [`GEMM_BLOCK_BYTES`] of x (a multiple of 12 rows: of every tile height), every
/// panel over one block before the next. Each value is one tile's sum over K: the blocking leaves
/// the results as they were.
#[inline(always)]
fn gemm_impl<S: Isa>(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, m: usize) {
    let (n, k) = (w.n, w.k);
    assert!(x.len() >= m * k && out.len() >= m * n);
    let block = (GEMM_BLOCK_BYTES / 4 / k.max(1) / 12 * 12).max(12);
    let mut r0 = 0;
    while r0 < m {
        let r1 = (r0 + block).min(m);
        for q in 0..n.div_ceil(NR) {
            let bias = bias_tile(b, q * NR, n);
            let mut i = r0;
            while i + S::MR <= r1 {
                tile_rows::<S>(S::MR, &mut out[i * n..], &x[i * k..], w, q, &bias);
                i += S::MR;
            }
            if i < r1 {
                tile_rows::<S>(r1 - i, &mut out[i * n..], &x[i * k..], w, q, &bias);
            }
        }
        r0 = r1;
    }
}

/// `S::tile::<rows>` over panel q: a constant `rows` (MR) picks one tile at compile time; the heights
/// above MR are never compiled. Past them (never asked for), one row at a time: the same values.
#[inline(always)]
fn tile_rows<S: Isa>(rows: usize, out: &mut [f32], x: &[f32], w: &Packed, q: usize, bias: &[f32; NR]) {
    tile_panel::<S>(rows, out, x, w.panel(q), w.n, w.k, q * NR, bias)
}

/// [`tile_rows`] over one panel given as a slice (an f32 panel, or a 16-bit one widened).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_panel<S: Isa>(rows: usize, out: &mut [f32], x: &[f32], panel: &[f32], n: usize, k: usize, n0: usize, bias: &[f32; NR]) {
    match rows {
        1 => S::tile::<1>(out, x, panel, n, k, n0, bias),
        2 if S::MR >= 2 => S::tile::<2>(out, x, panel, n, k, n0, bias),
        3 if S::MR >= 3 => S::tile::<3>(out, x, panel, n, k, n0, bias),
        4 if S::MR >= 4 => S::tile::<4>(out, x, panel, n, k, n0, bias),
        5 if S::MR >= 5 => S::tile::<5>(out, x, panel, n, k, n0, bias),
        6 if S::MR >= 6 => S::tile::<6>(out, x, panel, n, k, n0, bias),
        _ => (0..rows).for_each(|i| S::tile::<1>(&mut out[i * n..], &x[i * k..], panel, n, k, n0, bias)),
    }
}
