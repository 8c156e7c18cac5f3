//! The page's ISA, wasm simd128 (the crate is built with `+simd128`, .cargo/config.toml): 4 f32 lanes
//! in a v128, and the kernels LLVM left scalar or slow for wasm32 in intrinsics: P·V, softmax,
//! SiLU / SwiGLU here; the GEMM tile, GEMV and the tiled attention in `wasm_tiles.rs`. No FMA in simd128:
//! multiply then add, or `f32x4.relaxed_madd` in the relaxed-SIMD build (`+relaxed-simd`,
//! www/pkg-relaxed), chosen at compile time in [`madd4`].

use core::arch::wasm32::*;

use crate::fastcpu::isa::{wasm_tiles, Isa};
use crate::fastcpu::matmul::{Half, Packed, Packed16, NR};
use crate::fastcpu::simd::{exp, pv_tail, silu};
use crate::ops::{AttnShape, EwOp};

/// The page's kernels (see the module doc).
pub struct Simd128;

/// c + a * b on four f32 lanes. The relaxed-SIMD build uses `f32x4.relaxed_madd`, which the engine
/// may fuse (one rounding, where the CPU has FMA) or not: its results may differ from mul then add in
/// the last bits, and run 1.2-1.6x faster in the GEMM (BENCHMARKS.md). The plain simd128 build
/// multiplies, then adds.
#[inline(always)]
pub fn madd4(a: v128, b: v128, c: v128) -> v128 {
    #[cfg(target_feature = "relaxed-simd")]
    {
        f32x4_relaxed_madd(a, b, c)
    }
    #[cfg(not(target_feature = "relaxed-simd"))]
    {
        f32x4_add(c, f32x4_mul(a, b))
    }
}

impl Isa for Simd128 {
    type V = v128;
    const LANES: usize = 4;

    #[inline(always)]
    fn fmadd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }

    #[inline(always)]
    fn zero() -> v128 {
        f32x4_splat(0.0)
    }

    #[inline(always)]
    fn splat(x: f32) -> v128 {
        f32x4_splat(x)
    }

    #[inline(always)]
    fn add(a: v128, b: v128) -> v128 {
        f32x4_add(a, b)
    }

    #[inline(always)]
    fn madd(a: v128, b: v128, c: v128) -> v128 {
        madd4(a, b, c)
    }

    /// Transpose-and-add: lane u of the result is the sum of a[u]'s four lanes.
    #[inline(always)]
    fn sum4(a: [v128; 4]) -> [f32; 4] {
        let u0 = f32x4_add(i32x4_shuffle::<0, 4, 1, 5>(a[0], a[1]), i32x4_shuffle::<2, 6, 3, 7>(a[0], a[1]));
        let u1 = f32x4_add(i32x4_shuffle::<0, 4, 1, 5>(a[2], a[3]), i32x4_shuffle::<2, 6, 3, 7>(a[2], a[3]));
        let r = f32x4_add(i32x4_shuffle::<0, 1, 4, 5>(u0, u1), i32x4_shuffle::<2, 3, 6, 7>(u0, u1));
        [f32x4_extract_lane::<0>(r), f32x4_extract_lane::<1>(r), f32x4_extract_lane::<2>(r), f32x4_extract_lane::<3>(r)]
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> v128 {
        // SAFETY: p points at 4 readable f32 (the caller's contract)
        unsafe { v128_load(p as *const v128) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: v128) {
        // SAFETY: p points at 4 writable f32 (the caller's contract)
        unsafe { v128_store(p as *mut v128, v) }
    }

    /// Each block of up to 32 output values (8 v128, e.g. a whole head of 32) stays in registers
    /// across all keys: per key one splat of p[j] and a load and a multiply-add per 4 values. (The
    /// first simd128 form went over the keys once per 4 values with four accumulators, reloading and
    /// splatting p[j] each time: 9% of the gpt's page prefill, BENCHMARKS.md.)
    #[inline(always)]
    fn pv(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize) {
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
        pv_tail::<Self>(out, p, v, off, stride, full);
    }

    #[inline(always)]
    fn softmax(p: &mut [f32]) -> bool {
        softmax(p)
    }

    /// SiLU and SwiGLU in v128 lanes (LLVM left the loop over the exp scalar for wasm32).
    #[inline(always)]
    fn inplace(x: &mut [f32], y: Option<&[f32]>, op: EwOp) {
        match (op, y) {
            (EwOp::Silu, _) => silu_inplace(x, None),
            (EwOp::SwiGlu, Some(y)) => silu_inplace(x, Some(y)),
            _ => crate::fastcpu::act::inplace_lanes(x, y, op),
        }
    }

    #[inline(always)]
    fn gemv(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
        wasm_tiles::gemv(out, x, w, b, panels)
    }

    #[inline(always)]
    fn widen16(h: Half, src: &[u16; NR]) -> [f32; NR] {
        let mut out = [0f32; NR];
        let (s, o) = (src.as_ptr() as *const v128, out.as_mut_ptr() as *mut v128);
        for i in 0..2 {
            // SAFETY: src has 16 u16 (two v128), out 16 f32 (four v128)
            let (lo, hi) = wasm_tiles::widen8(h, unsafe { v128_load(s.add(i)) });
            unsafe {
                v128_store(o.add(2 * i), lo);
                v128_store(o.add(2 * i + 1), hi);
            }
        }
        out
    }

    #[inline(always)]
    fn gemv16(out: &mut [f32], x: &[f32], w: &Packed16, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
        wasm_tiles::gemv16(out, x, w, b, panels)
    }

    /// 3 x 16 = 12 v128 accumulators (V8 has 16 vector registers on x64). With relaxed_madd 2 x 16
    /// (8 accumulators, 4 weights and x: 13 registers, no spills) ran 1.2-1.5x faster than 3 x 16 in a
    /// standalone V8 benchmark of the tile on the models' shapes (BENCHMARKS.md); mul + add showed no
    /// consistent difference between the two, so the plain build keeps 3.
    #[cfg(not(target_feature = "relaxed-simd"))]
    const MR: usize = 3;
    #[cfg(target_feature = "relaxed-simd")]
    const MR: usize = 2;

    #[inline(always)]
    fn tile<const R: usize>(out: &mut [f32], x: &[f32], panel: &[f32], n: usize, k: usize, n0: usize, bias: &[f32; NR]) {
        wasm_tiles::tile::<R>(out, x, panel, n, k, n0, bias)
    }

    /// Several query rows (prefill) as register tiles; one row (decode) per row, as the other ISAs.
    #[inline(always)]
    fn attend(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, s: &AttnShape) {
        if s.tq >= 2 {
            wasm_tiles::attend(out, probs, q, k, v, mask, s)
        } else {
            crate::fastcpu::attention::attend_rows::<Self>(out, probs, q, k, v, mask, s)
        }
    }
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

/// `simd::softmax` in v128 lanes: the same `exp` formula lane by lane (mul and add, as the scalar
/// form compiles: the same e^x values), max and sum over 4 lanes.
#[inline(always)]
fn softmax(p: &mut [f32]) -> bool {
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
    let mut z = (f32x4_extract_lane::<0>(s4) + f32x4_extract_lane::<1>(s4)) + (f32x4_extract_lane::<2>(s4) + f32x4_extract_lane::<3>(s4));
    for v in &mut p[full..] {
        *v = exp(*v - mx);
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
fn silu_inplace(x: &mut [f32], y: Option<&[f32]>) {
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
        x[j] = silu(x[j]) * y.map_or(1.0, |y| y[j]);
    }
}

/// `simd::exp` on four lanes (the same operations in the same order).
#[inline(always)]
fn exp4(x: v128) -> v128 {
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
