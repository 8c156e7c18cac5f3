//! The plain-Rust reference: one loop per op, mirroring `src/gpu/` file for file, and the reference
//! backend that runs them (`backend.rs`, `CpuBackend`, with the op guards of `guards.rs` it shares
//! with the fast CPU backend). The training ops' reference: `backward.rs` and `moe_backward.rs`
//! (the loops) and `train.rs` (`Train` for `CpuBackend`). Every WGSL kernel is checked against the
//! function of the same name here.
//! Notation: T tokens (rows), C = d_model, NH heads, NKV kv heads, HS head size, V vocab,
//! Tq/Tk query/key lengths, E experts. All buffers are row-major f32.

pub mod act;
pub mod attention;
pub mod backend;
pub mod backward;
pub mod embed;
pub mod guards;
pub mod matmul;
pub mod moe;
pub mod moe_backward;
pub mod norm;
pub mod rope;
pub mod sample;
pub mod train;

pub use act::*;
pub use attention::*;
pub use backend::CpuBackend;
pub use embed::*;
pub use matmul::*;
pub use moe::*;
pub use norm::*;
pub use rope::*;
pub use sample::*;
