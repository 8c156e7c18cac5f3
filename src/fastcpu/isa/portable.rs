//! The portable ISA: 8 f32 lanes as a plain array, which LLVM vectorises (two SSE registers natively,
//! two simd128 registers in wasm); multiply then add, never fused. Every target has it; natively it
//! is the build `force_portable` selects, and the one that runs without AVX2+FMA.

use crate::fastcpu::isa::Isa;
use crate::fastcpu::simd::{hsum, L};

/// Plain Rust kernels (see the module doc).
pub struct Portable;

impl Isa for Portable {
    type V = [f32; L];
    const LANES: usize = L;
    const MR: usize = crate::fastcpu::matmul::MR;

    #[inline(always)]
    fn fmadd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }

    #[inline(always)]
    fn zero() -> [f32; L] {
        [0.0; L]
    }

    #[inline(always)]
    fn splat(x: f32) -> [f32; L] {
        [x; L]
    }

    #[inline(always)]
    fn add(a: [f32; L], b: [f32; L]) -> [f32; L] {
        std::array::from_fn(|l| a[l] + b[l])
    }

    #[inline(always)]
    fn madd(a: [f32; L], b: [f32; L], c: [f32; L]) -> [f32; L] {
        std::array::from_fn(|l| a[l] * b[l] + c[l])
    }

    #[inline(always)]
    fn sum4(a: [[f32; L]; 4]) -> [f32; 4] {
        a.map(|v| hsum(&v))
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; L] {
        // SAFETY: the caller's contract (L readable f32 at p)
        unsafe { p.cast::<[f32; L]>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; L]) {
        // SAFETY: the caller's contract (L writable f32 at p)
        unsafe { p.cast::<[f32; L]>().write_unaligned(v) }
    }
}
