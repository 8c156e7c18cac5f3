//! SIMD mostly without intrinsics (matmul.rs and `dot` have them where LLVM fell short): kernels are written once over fixed-size arrays that LLVM vectorises,
//! `#[inline(always)]` and generic over `FMA`. Natively, `multiversion!` compiles each kernel a
//! second time inside an `avx2,fma` function and picks it at run time (`is_x86_feature_detected!`);
//! in the page the whole crate is built with `+simd128` (.cargo/config.toml), so the portable form
//! becomes wasm SIMD directly (wasm has no FMA: a*b+c).

use std::cell::Cell;

thread_local! {
    static FORCE_PORTABLE: Cell<bool> = const { Cell::new(false) };
}

/// Tests and benchmarks: run the portable (non-AVX2) build of every kernel on this thread, the same
/// code the page runs as simd128.
pub fn force_portable(on: bool) {
    FORCE_PORTABLE.with(|f| f.set(on));
}

/// True when the AVX2+FMA builds of the kernels run (x86-64 with both features, not forced off).
pub fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !FORCE_PORTABLE.with(|f| f.get()) && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The instruction set the kernels run with: "avx2+fma", "simd128" or "portable".
pub fn isa() -> &'static str {
    if avx2_fma() {
        "avx2+fma"
    } else if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
        "simd128"
    } else {
        "portable"
    }
}

/// `fn name(args) -> ret => generic_impl`: defines `name`, which calls `generic_impl::<true>` compiled
/// with AVX2+FMA when the CPU has them, else `generic_impl::<false>`.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $generic:ident) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                if $crate::fastcpu::simd::avx2_fma() {
                    #[target_feature(enable = "avx2,fma")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                        $generic::<true>($($arg),*)
                    }
                    // SAFETY: the CPU was just checked to have AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic::<false>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// a * b + c, fused when the FMA build runs.
#[inline(always)]
pub fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Lanes of the portable accumulators (one AVX register, two simd128 registers).
pub const L: usize = 8;

/// sum(a[i] * b[i]) over equal-length slices, 8 lanes then a tree.
#[inline(always)]
pub fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true only runs inside multiversion!'s avx2,fma functions (CPU checked).
        return unsafe { dot_avx2(a, b) };
    }
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; L];
    let mut ca = a.chunks_exact(L);
    let mut cb = b.chunks_exact(L);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..L {
            acc[l] = fmadd::<FMA>(x[l], y[l], acc[l]);
        }
    }
    let mut s = hsum(&acc);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s = fmadd::<FMA>(*x, *y, s);
    }
    s
}

/// The AVX2 dot in intrinsics: LLVM vectorised the portable one with FMA only 2 lanes wide.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + L <= n {
        // SAFETY: i + 8 <= n <= both lengths
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc);
        i += L;
    }
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    let mut r = _mm_cvtss_f32(s);
    while i < n {
        r = a[i].mul_add(b[i], r);
        i += 1;
    }
    r
}

/// max over v (-inf when empty), 8 lanes.
#[inline(always)]
pub fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; L];
    let mut ch = v.chunks_exact(L);
    for c in &mut ch {
        for l in 0..L {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let m = acc.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    ch.remainder().iter().fold(m, |a, &b| if b > a { b } else { a })
}

/// sum over v, 8 lanes.
#[inline(always)]
pub fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let mut ch = v.chunks_exact(L);
    for c in &mut ch {
        for l in 0..L {
            acc[l] += c[l];
        }
    }
    hsum(&acc) + ch.remainder().iter().sum::<f32>()
}

#[inline(always)]
pub fn hsum(acc: &[f32; L]) -> f32 {
    let a = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// y += a * x (same lengths)
#[inline(always)]
pub fn axpy<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = fmadd::<FMA>(a, *x, *y);
    }
}

/// e^x in f32 without a libm call, branch-free so loops over it vectorise: x = n ln2 + r with
/// |r| <= ln2/2, e^r by Cephes' degree-6 polynomial (relative error ~2e-7 against f64 exp),
/// 2^n built in the exponent bits. Below -87.3 it returns exactly 0 (masked scores stay 0); from
/// about 88.4 it returns inf (expf overflows at 88.72). Callers pass x <= 0 (softmax, erf) or use it
/// where inf is harmless (silu: x / (1 + inf) = 0).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = x.clamp(-87.3, 88.7);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // n sits in the low mantissa bits of t (t = 1.5 * 2^23 + n)
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let pow2 = f32::from_bits(((ni + 127) << 23) as u32);
    if x < -87.3 {
        0.0
    } else {
        er * pow2
    }
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), with the fast exp.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t + 0.254_829_6) * t;
    let y = 1.0 - poly * exp(-a * a);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

/// PyTorch's exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)), in f32.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU-tanh (GPT-2's `gelu_new`): 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3),
/// branch-free over the fast exp (which saturates: e^(-2u) is 0 or huge at the ends, giving x or 0).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2 / pi)
    let u = K * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

/// x * sigmoid(x)
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}
