//! tinyformer: tiny transformers on our own WebGPU kernels, in the browser and natively.
//! See ARCHITECTURE.md for the data flow, the dimension notation and the mask convention.

pub mod cpu;
pub mod error;
pub mod fastcpu;
pub mod formats;
pub mod gpu;
pub mod mask;
pub mod model;
pub mod ops;
pub mod rng;
pub mod selftest;
pub mod session;
pub mod tokenizer;
pub mod train;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{Result, TfError};

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
