//! The AVX2+FMA ISA (x86-64, chosen at run time by `multiversion!`): 8 f32 lanes in a ymm register,
//! fused multiply-adds, and its own GEMM tile. Intrinsics where LLVM fell short: it vectorised the
//! portable dot product with FMA only 2 lanes wide, and the portable GEMM tile without fused
//! multiply-adds (4.6 GFLOP/s against 22 for the portable SSE build; BENCHMARKS.md).

use std::arch::x86_64::*;

use crate::fastcpu::isa::Isa;
use crate::fastcpu::matmul::{Half, NR};

/// AVX2+FMA kernels. Its methods may run only inside an `avx2,fma` function (`multiversion!`'s,
/// entered after the CPU check): each says so in its SAFETY comment.
pub struct Avx2;

impl Isa for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    fn fmadd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    #[inline(always)]
    fn zero() -> __m256 {
        // SAFETY: runs inside an avx2,fma function (the type's contract)
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    fn splat(x: f32) -> __m256 {
        // SAFETY: as in `zero`
        unsafe { _mm256_set1_ps(x) }
    }

    #[inline(always)]
    fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as in `zero`
        unsafe { _mm256_add_ps(a, b) }
    }

    #[inline(always)]
    fn madd(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: as in `zero`
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }

    /// Two rounds of pairwise adds, then the halves.
    #[inline(always)]
    fn sum4(a: [__m256; 4]) -> [f32; 4] {
        let mut s = [0f32; 4];
        // SAFETY: as in `zero`; s has 4 values
        unsafe {
            let t0 = _mm256_hadd_ps(a[0], a[1]);
            let t1 = _mm256_hadd_ps(a[2], a[3]);
            let t2 = _mm256_hadd_ps(t0, t1);
            let r = _mm_add_ps(_mm256_castps256_ps128(t2), _mm256_extractf128_ps(t2, 1));
            _mm_storeu_ps(s.as_mut_ptr(), r);
        }
        s
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: as in `zero`; p points at 8 readable f32 (the caller's contract)
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: as in `zero`; p points at 8 writable f32 (the caller's contract)
        unsafe { _mm256_storeu_ps(p, v) }
    }

    /// f16: F16C's `vcvtph2ps` (exact; NaNs quieted as `half` does). bf16: zero-extended and
    /// shifted up 16 bits, NaNs given the quiet bit.
    #[inline(always)]
    fn widen16(h: Half, src: &[u16; NR]) -> [f32; NR] {
        let mut out = [0f32; NR];
        // SAFETY: runs inside an avx2,fma,f16c function (the type's contract); src has 16 u16 (32
        // bytes: two 16-byte loads), out 16 f32 (two 32-byte stores)
        unsafe {
            let (s, o) = (src.as_ptr() as *const __m128i, out.as_mut_ptr());
            for half in 0..2 {
                let v = _mm_loadu_si128(s.add(half));
                let w = match h {
                    Half::F16 => _mm256_cvtph_ps(v),
                    Half::Bf16 => {
                        let x = _mm256_cvtepu16_epi32(v);
                        let nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fff)), _mm256_set1_epi32(0x7f80));
                        let q = _mm256_and_si256(nan, _mm256_set1_epi32(0x0040_0000));
                        _mm256_castsi256_ps(_mm256_or_si256(_mm256_slli_epi32(x, 16), q))
                    }
                };
                _mm256_storeu_ps(o.add(8 * half), w);
            }
        }
        out
    }

    /// 6 rows x 16 columns = 12 ymm accumulators + 2 weight registers + 1 broadcast.
    const MR: usize = 6;

    #[inline(always)]
    fn tile<const R: usize>(out: &mut [f32], x: &[f32], panel: &[f32], n: usize, k: usize, n0: usize, bias: &[f32; NR]) {
        // SAFETY: runs inside an avx2,fma function (the type's contract)
        unsafe { tile_avx2::<R>(out, x, panel, n, k, n0, bias) }
    }
}

/// out[i, n0..n0+NR] = bias + sum_p x[i, p] * panel[p, :] for i < R.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(out: &mut [f32], x: &[f32], panel: &[f32], n: usize, k: usize, n0: usize, bias: &[f32; NR]) {
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
    if cols == NR {
        // a whole panel's columns: stored in place (a copy_from_slice per row is a memmove call)
        let op = out.as_mut_ptr();
        for i in 0..R {
            // SAFETY: row i's columns n0..n0+NR lie in out (the assert above, cols = NR)
            _mm256_storeu_ps(op.add(i * n + n0), a0[i]);
            _mm256_storeu_ps(op.add(i * n + n0 + 8), a1[i]);
        }
        return;
    }
    let mut t = [0f32; NR];
    for i in 0..R {
        _mm256_storeu_ps(t.as_mut_ptr(), a0[i]);
        _mm256_storeu_ps(t.as_mut_ptr().add(8), a1[i]);
        out[i * n + n0..i * n + n0 + cols].copy_from_slice(&t[..cols]);
    }
}
