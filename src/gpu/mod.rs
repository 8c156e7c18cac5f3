//! The GPU backend (`backend`: `GpuBackend`, the ops recorded as dispatches): a context that owns the
//! device, tensors with shapes, a recorder that batches dispatches into one submission, WGSL
//! composition (`wgsl`), and one module per kernel family
//! (matmul, qkv, attention, norm, act, rope, embed, sample, moe; mirroring `src/cpu/`; the
//! training-only loss and optim), each owning its params, its pipelines, their dispatch sizing and
//! the choice among its forms; which forms a device takes is one type, `policy::KernelPolicy`.
//! `train` is `GpuBackend`'s training ops (`Train`), delegating to the families.

pub mod act;
pub mod attention;
pub mod backend;
pub mod context;
pub mod embed;
pub mod loss;
pub mod matmul;
pub mod moe;
pub mod norm;
pub mod optim;
pub mod policy;
pub mod qkv;
pub mod recorder;
pub mod rope;
pub mod sample;
pub mod tensor;
pub mod train;
pub mod wgsl;

pub use context::{AdapterSummary, Gpu};
pub use policy::KernelPolicy;
pub use recorder::Recorder;
pub use tensor::{DType, GpuTensor};

/// Loop iterations one invocation of a barrier-free kernel may run, all its loops counted together.
/// Mesa's llvmpipe stops an invocation's loops after 65,535 iterations in all (gallivm's
/// `LP_MAX_TGSI_LOOP_ITERATIONS`, a guard against endless loops) and goes on with wrong values, without
/// an error: a one-invocation-per-row kernel whose row is longer than that takes the workgroup form
/// instead (the selftest's long attention and 70,000-logit greedy cases fail without this).
pub const INVOCATION_LOOP_BUDGET: usize = 60_000;

/// How the row-wise kernels (attention, the norms) map rows to invocations. Serialised as
/// "workgroup" and "rows".
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RowKind {
    /// a workgroup per row (per row and head for attention), reductions in workgroup memory
    #[serde(rename = "workgroup")]
    Workgroup,
    /// an invocation per row (per row and head), no workgroup memory and no barriers: for
    /// CPU-emulated GPUs (SwiftShader, llvmpipe), where a barrier switches between the SIMD lanes
    /// that emulate invocations
    #[serde(rename = "rows")]
    Invocation,
}
