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

/// The instruction set the kernels run with: "avx2+fma", "simd128+relaxed-simd" (the page's second
/// build, scripts/build-wasm.sh), "simd128" or "portable".
pub fn isa() -> &'static str {
    if avx2_fma() {
        "avx2+fma"
    } else if cfg!(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd")) {
        "simd128+relaxed-simd"
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

/// c + a * b on four f32 lanes, for the page's simd128 kernels (src/fastcpu/matmul.rs). The relaxed-SIMD
/// build (`+relaxed-simd`, www/pkg-relaxed) uses `f32x4.relaxed_madd`, which the engine may fuse (one
/// rounding, where the CPU has FMA) or not: its results may differ from mul then add in the last bits,
/// and run 1.2-1.6x faster in the GEMM (BENCHMARKS.md). The plain simd128 build multiplies, then adds.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub fn madd4(a: core::arch::wasm32::v128, b: core::arch::wasm32::v128, c: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    #[cfg(target_feature = "relaxed-simd")]
    {
        f32x4_relaxed_madd(a, b, c)
    }
    #[cfg(not(target_feature = "relaxed-simd"))]
    {
        f32x4_add(c, f32x4_mul(a, b))
    }
}

/// The attention's dot product and axpy in the relaxed-SIMD build: `madd4` where the portable forms
/// (which LLVM vectorises to f32x4 mul + add) multiply, then add. Same lanes (0-3, 4-7) as the portable dot.
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
mod relaxed {
    use super::madd4;
    use core::arch::wasm32::*;

    #[inline(always)]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut a0, mut a1) = (f32x4_splat(0.0), f32x4_splat(0.0));
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n <= both lengths
            unsafe {
                a0 = madd4(v128_load(pa.add(i) as *const v128), v128_load(pb.add(i) as *const v128), a0);
                a1 = madd4(v128_load(pa.add(i + 4) as *const v128), v128_load(pb.add(i + 4) as *const v128), a1);
            }
            i += 8;
        }
        let s = f32x4_add(a0, a1);
        let mut r = (f32x4_extract_lane::<0>(s) + f32x4_extract_lane::<1>(s)) + (f32x4_extract_lane::<2>(s) + f32x4_extract_lane::<3>(s));
        while i < n {
            r += a[i] * b[i];
            i += 1;
        }
        r
    }

    #[inline(always)]
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let av = f32x4_splat(a);
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let mut i = 0;
        while i + 4 <= n {
            // SAFETY: i + 4 <= n <= both lengths
            unsafe {
                v128_store(py.add(i) as *mut v128, madd4(av, v128_load(px.add(i) as *const v128), v128_load(py.add(i) as *const v128)))
            };
            i += 4;
        }
        while i < n {
            y[i] += a * x[i];
            i += 1;
        }
    }
}

/// Lanes of the portable accumulators (one AVX register, two simd128 registers).
pub const L: usize = 8;

/// sum(a[i] * b[i]) over equal-length slices, 8 lanes then a tree.
#[inline(always)]
#[allow(unreachable_code)] // the relaxed-SIMD build returns early
pub fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true only runs inside multiversion!'s avx2,fma functions (CPU checked).
        return unsafe { dot_avx2(a, b) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    return relaxed::dot(a, b);
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
#[allow(unreachable_code)] // the relaxed-SIMD build returns early
pub fn axpy<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    return relaxed::axpy(y, a, x);
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

/// The attention's softmax over one row of scores, in place: p = e^(p - max) / sum. A row whose every
/// score is -inf (no visible key) becomes zeros and the result is false; a -inf score gives exactly 0.
#[inline(always)]
#[allow(unreachable_code)] // the wasm simd128 build returns early
pub fn softmax(p: &mut [f32]) -> bool {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return blocked_simd128::softmax(p);
    let mx = max(p);
    if mx == f32::NEG_INFINITY {
        p.fill(0.0);
        return false;
    }
    for v in p.iter_mut() {
        *v = exp(*v - mx);
    }
    let inv = 1.0 / sum(p);
    for v in p.iter_mut() {
        *v *= inv;
    }
    true
}

/// x = silu(x) (`y` None) or silu(x) * y (SwiGLU) in the page's v128 lanes (act.rs).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub fn silu_inplace_simd128(x: &mut [f32], y: Option<&[f32]>) {
    blocked_simd128::silu_inplace(x, y)
}

/// The attention's blocked kernels (src/fastcpu/attention.rs): four scores per pass over q, and the
/// P·V product of a whole probabilities row at once.
///
/// [q·k0, q·k1, q·k2, q·k3] over q's length (each k at least as long): q is loaded once for the four
/// keys, the four accumulators are independent (no FMA latency chain) and are reduced together.
#[inline(always)]
#[allow(unreachable_code)] // the AVX2 and wasm simd128 builds return early
pub fn dot4<const FMA: bool>(q: &[f32], k: [&[f32]; 4]) -> [f32; 4] {
    let n = q.len();
    let k = k.map(|r| &r[..n]);
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true only runs inside multiversion!'s avx2,fma functions (CPU checked).
        return unsafe { blocked_avx2::dot4(q, k) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return blocked_simd128::dot4(q, k);
    let mut acc = [[0f32; L]; 4];
    let full = n / L * L;
    for c in (0..full).step_by(L) {
        let qc = &q[c..c + L];
        for (a, kr) in acc.iter_mut().zip(&k) {
            let kc = &kr[c..c + L];
            for l in 0..L {
                a[l] = fmadd::<FMA>(qc[l], kc[l], a[l]);
            }
        }
    }
    let mut s = acc.map(|a| hsum(&a));
    for (sr, kr) in s.iter_mut().zip(&k) {
        for i in full..n {
            *sr = fmadd::<FMA>(q[i], kr[i], *sr);
        }
    }
    s
}

/// out[d] = sum_j p[j] * v[off + j * stride + d] for d < out.len(): the attention's P·V for one query
/// row, out written (not accumulated). Each 8-lane (AVX2, portable) or 4-lane (simd128) slice of out
/// stays in registers across all keys, four keys per step in independent accumulators.
#[inline(always)]
#[allow(unreachable_code)] // the AVX2 and wasm simd128 builds return early
pub fn pv<const FMA: bool>(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize) {
    let hs = out.len();
    if !p.is_empty() {
        // every row read below lies inside v
        assert!(off + (p.len() - 1) * stride + hs <= v.len(), "pv: v too short");
    }
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true only runs inside multiversion!'s avx2,fma functions (CPU checked).
        unsafe { blocked_avx2::pv(out, p, v, off, stride) };
        return;
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        blocked_simd128::pv(out, p, v, off, stride);
        return;
    }
    let full = hs / L * L;
    let kb = p.len() / 4 * 4;
    for c in (0..full).step_by(L) {
        let mut acc = [[0f32; L]; 4];
        for j in (0..kb).step_by(4) {
            for (u, a) in acc.iter_mut().enumerate() {
                let pj = p[j + u];
                let vr = &v[off + (j + u) * stride + c..][..L];
                for l in 0..L {
                    a[l] = fmadd::<FMA>(pj, vr[l], a[l]);
                }
            }
        }
        for (j, &pj) in p.iter().enumerate().skip(kb) {
            let vr = &v[off + j * stride + c..][..L];
            for l in 0..L {
                acc[0][l] = fmadd::<FMA>(pj, vr[l], acc[0][l]);
            }
        }
        for l in 0..L {
            out[c + l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
        }
    }
    pv_tail::<FMA>(out, p, v, off, stride, full);
}

/// out[d] for d in from..out.len(), one scalar sum over the keys each (head sizes not a multiple of the lanes).
#[inline(always)]
fn pv_tail<const FMA: bool>(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize, from: usize) {
    for d in from..out.len() {
        let mut a = 0f32;
        for (j, &pj) in p.iter().enumerate() {
            a = fmadd::<FMA>(pj, v[off + j * stride + d], a);
        }
        out[d] = a;
    }
}

#[cfg(target_arch = "x86_64")]
mod blocked_avx2 {
    use super::{pv_tail, L};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4(q: &[f32], k: [&[f32]; 4]) -> [f32; 4] {
        let n = q.len();
        assert!(k.iter().all(|r| r.len() >= n));
        let qp = q.as_ptr();
        let kp = k.map(|r| r.as_ptr());
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + L <= n {
            // SAFETY: i + 8 <= n <= every length (asserted)
            let qv = _mm256_loadu_ps(qp.add(i));
            for u in 0..4 {
                a[u] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kp[u].add(i)), a[u]);
            }
            i += L;
        }
        // [s0, s1, s2, s3] from the four accumulators: two rounds of pairwise adds, then the halves
        let t0 = _mm256_hadd_ps(a[0], a[1]);
        let t1 = _mm256_hadd_ps(a[2], a[3]);
        let t2 = _mm256_hadd_ps(t0, t1);
        let r = _mm_add_ps(_mm256_castps256_ps128(t2), _mm256_extractf128_ps(t2, 1));
        let mut s = [0f32; 4];
        _mm_storeu_ps(s.as_mut_ptr(), r);
        while i < n {
            for u in 0..4 {
                s[u] = q[i].mul_add(k[u][i], s[u]);
            }
            i += 1;
        }
        s
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pv(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize) {
        let hs = out.len();
        let full = hs / L * L;
        let kb = p.len() / 4 * 4;
        let vp = v.as_ptr().add(off);
        let mut c = 0;
        while c < full {
            // SAFETY: row j's lanes c..c+8 lie inside v (pv's assert: off + (len-1)*stride + hs <= v.len())
            let mut a = [_mm256_setzero_ps(); 4];
            let mut j = 0;
            while j < kb {
                for u in 0..4 {
                    let pj = _mm256_set1_ps(*p.get_unchecked(j + u));
                    a[u] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vp.add((j + u) * stride + c)), a[u]);
                }
                j += 4;
            }
            while j < p.len() {
                let pj = _mm256_set1_ps(*p.get_unchecked(j));
                a[0] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vp.add(j * stride + c)), a[0]);
                j += 1;
            }
            let s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
            _mm256_storeu_ps(out.as_mut_ptr().add(c), s);
            c += L;
        }
        pv_tail::<true>(out, p, v, off, stride, full);
    }
}

/// The page's blocked attention kernels (plain and relaxed-SIMD builds: `madd4`).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod blocked_simd128 {
    use super::madd4;
    use core::arch::wasm32::*;

    #[inline(always)]
    fn pv_tail(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize, from: usize) {
        for d in from..out.len() {
            let mut a = 0f32;
            for (j, &pj) in p.iter().enumerate() {
                a += pj * v[off + j * stride + d];
            }
            out[d] = a;
        }
    }

    #[inline(always)]
    pub fn dot4(q: &[f32], k: [&[f32]; 4]) -> [f32; 4] {
        let n = q.len();
        assert!(k.iter().all(|r| r.len() >= n));
        let qp = q.as_ptr();
        let kp = k.map(|r| r.as_ptr());
        let mut a = [f32x4_splat(0.0); 4];
        let mut i = 0;
        while i + 4 <= n {
            // SAFETY: i + 4 <= n <= every length (asserted)
            let qv = unsafe { v128_load(qp.add(i) as *const v128) };
            for u in 0..4 {
                a[u] = madd4(qv, unsafe { v128_load(kp[u].add(i) as *const v128) }, a[u]);
            }
            i += 4;
        }
        // transpose-and-add: lane u of r is the sum of a[u]'s four lanes
        let u0 = f32x4_add(i32x4_shuffle::<0, 4, 1, 5>(a[0], a[1]), i32x4_shuffle::<2, 6, 3, 7>(a[0], a[1]));
        let u1 = f32x4_add(i32x4_shuffle::<0, 4, 1, 5>(a[2], a[3]), i32x4_shuffle::<2, 6, 3, 7>(a[2], a[3]));
        let r = f32x4_add(i32x4_shuffle::<0, 1, 4, 5>(u0, u1), i32x4_shuffle::<2, 3, 6, 7>(u0, u1));
        let mut s = [f32x4_extract_lane::<0>(r), f32x4_extract_lane::<1>(r), f32x4_extract_lane::<2>(r), f32x4_extract_lane::<3>(r)];
        while i < n {
            for u in 0..4 {
                s[u] += q[i] * k[u][i];
            }
            i += 1;
        }
        s
    }

    /// Each block of up to 32 output values (8 v128, e.g. a whole head of 32) stays in registers
    /// across all keys: per key one splat of p[j] and a load and a multiply-add per 4 values. (The
    /// first simd128 form went over the keys once per 4 values with four accumulators, reloading and
    /// splatting p[j] each time: 9% of the gpt's page prefill, BENCHMARKS.md.)
    #[inline(always)]
    pub fn pv(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize) {
        let hs = out.len();
        let full = hs / 4 * 4;
        let mut c = 0;
        while c + 32 <= full {
            pv_block::<8>(out, p, v, off, stride, c);
            c += 32;
        }
        while c + 16 <= full {
            pv_block::<4>(out, p, v, off, stride, c);
            c += 16;
        }
        while c < full {
            pv_block::<1>(out, p, v, off, stride, c);
            c += 4;
        }
        pv_tail(out, p, v, off, stride, full);
    }

    /// out[c..c + 4S] = sum_j p[j] * v[off + j * stride + c..][..4S]
    #[inline(always)]
    fn pv_block<const S: usize>(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize, c: usize) {
        assert!(c + 4 * S <= out.len() && (p.is_empty() || off + (p.len() - 1) * stride + c + 4 * S <= v.len()));
        let vp = v[off + c..].as_ptr();
        let mut a = [f32x4_splat(0.0); S];
        for (j, &pj) in p.iter().enumerate() {
            let pj = f32x4_splat(pj);
            for (u, a) in a.iter_mut().enumerate() {
                // SAFETY: row j's values c..c+4S lie inside v (the assert above)
                *a = madd4(pj, unsafe { v128_load(vp.add(j * stride + 4 * u) as *const v128) }, *a);
            }
        }
        let op = out[c..c + 4 * S].as_mut_ptr();
        for (u, a) in a.iter().enumerate() {
            // SAFETY: op points at 4S values of out
            unsafe { v128_store(op.add(4 * u) as *mut v128, *a) };
        }
    }

    /// `super::softmax` in v128 lanes: the same `exp` formula lane by lane (mul and add, as the scalar
    /// form compiles: the same e^x values), max and sum over 4 lanes.
    #[inline(always)]
    pub fn softmax(p: &mut [f32]) -> bool {
        let n = p.len();
        let full = n / 4 * 4;
        let pp = p.as_mut_ptr();
        // SAFETY: every access below is at i + 4 <= full <= n
        let ld = |i: usize| unsafe { v128_load(pp.add(i) as *const v128) };
        let st = |i: usize, x: v128| unsafe { v128_store(pp.add(i) as *mut v128, x) };
        let mut m4 = f32x4_splat(f32::NEG_INFINITY);
        let mut i = 0;
        while i < full {
            m4 = f32x4_pmax(m4, ld(i));
            i += 4;
        }
        let mut mx = f32x4_extract_lane::<0>(m4);
        for v in [f32x4_extract_lane::<1>(m4), f32x4_extract_lane::<2>(m4), f32x4_extract_lane::<3>(m4)] {
            if v > mx {
                mx = v;
            }
        }
        for &v in &p[full..] {
            if v > mx {
                mx = v;
            }
        }
        if mx == f32::NEG_INFINITY {
            p.fill(0.0);
            return false;
        }
        let mv = f32x4_splat(mx);
        let mut s4 = f32x4_splat(0.0);
        i = 0;
        while i < full {
            let e = exp4(f32x4_sub(ld(i), mv));
            st(i, e);
            s4 = f32x4_add(s4, e);
            i += 4;
        }
        let mut z =
            (f32x4_extract_lane::<0>(s4) + f32x4_extract_lane::<1>(s4)) + (f32x4_extract_lane::<2>(s4) + f32x4_extract_lane::<3>(s4));
        for v in &mut p[full..] {
            *v = super::exp(*v - mx);
            z += *v;
        }
        let inv = 1.0 / z;
        let iv = f32x4_splat(inv);
        i = 0;
        while i < full {
            st(i, f32x4_mul(ld(i), iv));
            i += 4;
        }
        for v in &mut p[full..] {
            *v *= inv;
        }
        true
    }

    /// x = silu(x), or silu(x) * y (SwiGLU, `y` given), in v128 lanes: the same operations as the scalar
    /// `silu` (x / (1 + e^-x)), which LLVM left scalar for wasm32 (4.6% of the llama's page prefill-128).
    #[inline(always)]
    pub fn silu_inplace(x: &mut [f32], y: Option<&[f32]>) {
        let n = y.map_or(x.len(), |y| x.len().min(y.len()));
        let full = n / 4 * 4;
        let xp = x.as_mut_ptr();
        let one = f32x4_splat(1.0);
        let mut i = 0;
        while i < full {
            // SAFETY: i + 4 <= full <= n <= the lengths of x and y
            unsafe {
                let a = v128_load(xp.add(i) as *const v128);
                let mut r = f32x4_div(a, f32x4_add(one, exp4(f32x4_neg(a))));
                if let Some(y) = y {
                    r = f32x4_mul(r, v128_load(y.as_ptr().add(i) as *const v128));
                }
                v128_store(xp.add(i) as *mut v128, r);
            }
            i += 4;
        }
        for j in full..n {
            x[j] = super::silu(x[j]) * y.map_or(1.0, |y| y[j]);
        }
    }

    /// `super::exp` on four lanes (the same operations in the same order).
    #[inline(always)]
    pub fn exp4(x: v128) -> v128 {
        let c = f32x4_splat;
        let xc = f32x4_pmin(f32x4_pmax(x, c(-87.3)), c(88.7));
        let t = f32x4_add(f32x4_mul(xc, c(std::f32::consts::LOG2_E)), c(12_582_912.0));
        let n = f32x4_sub(t, c(12_582_912.0));
        let r = f32x4_sub(f32x4_sub(xc, f32x4_mul(n, c(0.693_359_4))), f32x4_mul(n, c(-2.121_944_4e-4)));
        let mut q = c(1.987_569_1e-4);
        for k in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
            q = f32x4_add(f32x4_mul(q, r), c(k));
        }
        let er = f32x4_add(f32x4_add(f32x4_mul(f32x4_mul(q, r), r), r), c(1.0));
        let ni = i32x4_sub(t, i32x4_splat(0x4B40_0000));
        let pow2 = i32x4_shl(i32x4_add(ni, i32x4_splat(127)), 23);
        // x < -87.3 (e.g. a masked -inf) gives exactly 0
        v128_andnot(f32x4_mul(er, pow2), f32x4_lt(x, c(-87.3)))
    }
}
