//! The models of the seed documents, written once against `backend::Backend` so the same code runs
//! on the GPU kernels and on the CPU reference.

pub mod backend;
pub mod chain;
pub mod checkpoint;
pub mod config;
pub mod constraint;
pub mod inspect;
pub mod map_kind;
pub mod memory;
pub mod run;
pub mod state;
pub mod transformer;
pub mod weights;

pub use backend::{Backend, CpuBackend, CpuTensor, GpuBackend};
pub use map_kind::{MapKind, Stack};
pub use transformer::{Logits, Model};
