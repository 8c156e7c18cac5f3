//! One error type for the core. Every message is one line, written for the person who caused it
//! (a user who dropped a file, typed a prompt, or a developer who called an op with wrong shapes).

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum TfError {
    /// An op was called with inputs of the wrong shape: names the op and the shapes.
    Shape { op: &'static str, msg: String },
    /// A buffer or dispatch would exceed what the GPU allows.
    Limit(String),
    /// No WebGPU / no adapter / the device could not be created.
    NoGpu(String),
    /// The GPU reported an error (validation, out of memory) or the device was lost.
    Gpu(String),
    /// Bad input from the user: token ids, prompt, lengths, flags.
    Input(String),
    /// A checkpoint could not be loaded.
    Checkpoint(String),
}

impl fmt::Display for TfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TfError::Shape { op, msg } => write!(f, "{op}: {msg}"),
            TfError::Limit(m) => write!(f, "GPU limit: {m}"),
            TfError::NoGpu(m) => write!(f, "no GPU: {m}"),
            TfError::Gpu(m) => write!(f, "GPU error: {m}"),
            TfError::Input(m) => write!(f, "{m}"),
            TfError::Checkpoint(m) => write!(f, "checkpoint: {m}"),
        }
    }
}

impl std::error::Error for TfError {}

pub type Result<T, E = TfError> = std::result::Result<T, E>;

/// Shape guard used at the entry of every op: `ensure(cond, "matmul", || format!(...))`.
pub fn ensure(cond: bool, op: &'static str, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(TfError::Shape { op, msg: msg() })
    }
}

impl From<crate::model::checkpoint::CheckpointError> for TfError {
    fn from(e: crate::model::checkpoint::CheckpointError) -> Self {
        TfError::Checkpoint(e.to_string())
    }
}
