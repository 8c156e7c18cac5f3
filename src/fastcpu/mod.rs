//! The fast CPU backend: the product's CPU path (the page without WebGPU, `--backend cpu`).
//! f32 kernels, SIMD through vectorised portable code (AVX2+FMA chosen at run time natively,
//! simd128 in the page) plus intrinsics where LLVM fell short (the GEMM tile and dot in AVX2, GEMM and
//! GEMV in simd128), one file per op family beside its twin in `crate::cpu` (the reference,
//! f64 accumulation, which tests compare every op and every model against).
//!
//! Notation as in crate::cpu: T rows, C = d_model, NH / NKV heads, HS head size, Tq / Tk.

pub mod act;
pub mod attention;
pub mod backend;
pub mod check;
pub mod matmul;
pub mod norm;
pub mod simd;

pub use backend::{FastCpuBackend, FastTensor};
