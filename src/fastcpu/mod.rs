//! The fast CPU backend: the product's CPU path (the page without WebGPU, `--backend cpu`).
//! f32 kernels, one file per op family beside its twin in `crate::cpu` (the reference, f64
//! accumulation, which tests compare every op and every model against). SIMD: the kernels are
//! written once over an ISA's primitives (`simd`, `isa`: portable, AVX2+FMA chosen at run time
//! natively, simd128 in the page), and an ISA brings its own form of a kernel where LLVM fell short
//! (`isa/avx2.rs`: the GEMM tile; `isa/wasm.rs`, `isa/wasm_tiles.rs`: GEMM, GEMV, P·V, softmax,
//! SiLU and the prefill attention in simd128).
//!
//! Notation as in crate::cpu: T rows, C = d_model, NH / NKV heads, HS head size, Tq / Tk.

pub mod act;
pub mod attention;
pub mod backend;
pub mod backward;
pub mod bench;
pub mod check;
pub mod isa;
pub mod matmul;
pub mod norm;
pub mod simd;
pub mod train;

pub use backend::{FastCpuBackend, FastTensor};
