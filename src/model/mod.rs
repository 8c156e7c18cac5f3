//! The models of the seed documents, written once against `backend::Backend` so the same code runs
//! on the GPU kernels and on the CPU reference. Three rooms, one job each:
//! - `forward`: the model, its weights and its passes (what a block loads and what it computes);
//! - `runtime`: what callers run on a loaded model (passes with their maps read back, evaluation,
//!   generation, tokens chained on the GPU, the run-state plan of each request);
//! - `analysis`: looking inside (the hooks of the forward, inspection, ablation).
//!
//! Beside them: the backends, the checkpoint and its config, the run state (`state`) and its memory
//! demand (`memory`), the output constraint and the names of attention maps (`map_kind`). The
//! tokenizers and the constraint a checkpoint declares are held by the session (session::text).

pub mod analysis;
pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod constraint;
pub mod forward;
pub mod map_kind;
pub mod memory;
pub mod runtime;
pub mod state;

// the module paths callers import from
pub use analysis::inspect;
pub use forward::weights;
pub use runtime::{chain, run};

pub use backend::{Backend, CpuBackend, CpuTensor, GpuBackend};
pub use forward::{Logits, Model};
pub use map_kind::{MapKind, Stack};
