//! The instruction sets the fast CPU kernels run on, one file each, behind one trait ([`Isa`]):
//! - [`portable::Portable`]: plain Rust over fixed 8-lane arrays that LLVM vectorises (SSE2 natively,
//!   the build every target has);
//! - [`avx2::Avx2`] (x86-64): AVX2+FMA intrinsics, chosen at run time (`is_x86_feature_detected!`);
//! - [`wasm::Simd128`] (the page): wasm simd128 intrinsics, `f32x4.relaxed_madd` in the relaxed-SIMD
//!   build, chosen at compile time (.cargo/config.toml builds the page with `+simd128`).
//!
//! An ISA gives the primitives the kernels are written over once (a vector of `LANES` f32: load,
//! store, multiply-add, the reduction of four accumulators; a scalar multiply-add, fused in the AVX2
//! build) and may replace a whole kernel where its fastest form is another algorithm (the AVX2 GEMM
//! tile, the page's GEMM tile, GEMV, P·V, softmax and tiled attention). `multiversion!` compiles a
//! kernel once per ISA of the build and picks one per call: this module owns that choice.

use std::cell::Cell;

use crate::fastcpu::matmul::{Half, Packed, Packed16, NR};
use crate::ops::{AttnShape, EwOp};

#[cfg(target_arch = "x86_64")]
pub mod avx2;
pub mod portable;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod wasm;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm_tiles;

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub use portable::Portable as Native;
/// The ISA of the build where AVX2 is not picked at run time: simd128 in the page, portable elsewhere.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use wasm::Simd128 as Native;

thread_local! {
    static FORCE_PORTABLE: Cell<bool> = const { Cell::new(false) };
}

/// Tests and benchmarks: run the portable (non-AVX2) build of every kernel on this thread, the same
/// code the page runs as simd128.
pub fn force_portable(on: bool) {
    FORCE_PORTABLE.with(|f| f.set(on));
}

/// True when the AVX2+FMA builds of the kernels run (x86-64 with both features and F16C, which every
/// AVX2 CPU has and the 16-bit weights' widening uses; not forced off).
pub fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !FORCE_PORTABLE.with(|f| f.get())
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
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

/// `fn name(args) -> ret => generic_impl`: defines `name`, which calls `generic_impl::<Avx2>` compiled
/// with AVX2+FMA when the CPU has them, else `generic_impl::<Native>`.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $generic:ident) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                if $crate::fastcpu::isa::avx2_fma() {
                    #[target_feature(enable = "avx2,fma,f16c")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                        $generic::<$crate::fastcpu::isa::avx2::Avx2>($($arg),*)
                    }
                    // SAFETY: the CPU was just checked to have AVX2, FMA and F16C.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic::<$crate::fastcpu::isa::Native>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// One instruction set: the primitives the kernels are written over, and the kernels it replaces.
/// Every method is `#[inline(always)]`, so a kernel is compiled inside the function `multiversion!`
/// makes for its ISA (the AVX2 one with the `avx2,fma` target features). Contract: [`avx2::Avx2`]'s methods run only there
/// (inside an `avx2,fma` function, the CPU checked).
pub trait Isa: Sized {
    /// LANES f32 in registers.
    type V: Copy;
    /// f32 per `V`.
    const LANES: usize;

    /// c + a * b on scalars, fused in the AVX2 build.
    fn fmadd(a: f32, b: f32, c: f32) -> f32;
    fn zero() -> Self::V;
    fn splat(x: f32) -> Self::V;
    fn add(a: Self::V, b: Self::V) -> Self::V;
    /// c + a * b lane by lane (fused in the AVX2 and relaxed-SIMD builds).
    fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// [sum of a[0]'s lanes, .., sum of a[3]'s lanes].
    fn sum4(a: [Self::V; 4]) -> [f32; 4];
    /// # Safety
    /// `p` points at LANES readable f32.
    unsafe fn load(p: *const f32) -> Self::V;
    /// # Safety
    /// `p` points at LANES writable f32.
    unsafe fn store(p: *mut f32, v: Self::V);

    /// The attention's P·V for one query row (`simd::pv`, which checks the bounds first).
    #[inline(always)]
    fn pv(out: &mut [f32], p: &[f32], v: &[f32], off: usize, stride: usize) {
        crate::fastcpu::simd::pv_four_keys::<Self>(out, p, v, off, stride)
    }

    /// The attention's softmax over one row (`simd::softmax`).
    #[inline(always)]
    fn softmax(p: &mut [f32]) -> bool {
        crate::fastcpu::simd::softmax_lanes(p)
    }

    /// x = op(x, y) (`act::inplace`).
    #[inline(always)]
    fn inplace(x: &mut [f32], y: Option<&[f32]>, op: EwOp) {
        crate::fastcpu::act::inplace_lanes(x, y, op)
    }

    /// The GEMV over `panels` (`matmul::gemv`).
    #[inline(always)]
    fn gemv(out: &mut [f32], x: &[f32], w: &Packed, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
        crate::fastcpu::matmul::gemv_panels::<Self>(out, x, w, b, panels)
    }

    /// NR 16-bit values widened to f32, exactly (`matmul::widen_f16` / `widen_bf16` bit for bit).
    #[inline(always)]
    fn widen16(h: Half, src: &[u16; NR]) -> [f32; NR] {
        src.map(|v| h.widen(v))
    }

    /// The GEMV over `panels` of a 16-bit weight (`matmul::gemv16`): the same sums as [`Isa::gemv`] on
    /// the widened weight.
    #[inline(always)]
    fn gemv16(out: &mut [f32], x: &[f32], w: &Packed16, b: Option<&[f32]>, panels: std::ops::Range<usize>) {
        crate::fastcpu::matmul::gemv16_panels::<Self>(out, x, w, b, panels)
    }

    /// Rows per GEMM register tile (at most 6; `matmul::gemm` runs the last rows in one smaller tile).
    const MR: usize;

    /// One GEMM register tile of R rows: out[i, n0..n0+NR] = bias + sum_p x[i, p] * panel[p, :], i < R.
    #[inline(always)]
    fn tile<const R: usize>(out: &mut [f32], x: &[f32], panel: &[f32], n: usize, k: usize, n0: usize, bias: &[f32; NR]) {
        crate::fastcpu::matmul::tile::<Self, R>(out, x, panel, n, k, n0, bias)
    }

    /// The attention (`attention::attention`, the shapes checked).
    #[inline(always)]
    fn attend(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, s: &AttnShape) {
        crate::fastcpu::attention::attend_rows::<Self>(out, probs, q, k, v, mask, s)
    }
}
