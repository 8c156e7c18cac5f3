//! The GPU backend: a context that owns the device and every pipeline, tensors with shapes, a
//! recorder that batches dispatches into one submission, and one thin wrapper per kernel family
//! (mirroring `src/cpu/` file for file).

pub mod act;
pub mod attention;
pub mod context;
pub mod embed;
pub mod matmul;
pub mod moe;
pub mod norm;
pub mod recorder;
pub mod rope;
pub mod sample;
pub mod tensor;

pub use context::{AdapterSummary, Gpu};
pub use recorder::Recorder;
pub use tensor::{DType, GpuTensor};
