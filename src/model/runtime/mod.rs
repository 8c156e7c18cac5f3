//! The runtime: what runs a loaded model for its callers. A full pass with its attention maps,
//! masks and MoE routing read back, evaluation loss, step-by-step generation (`run`), tokens
//! chained on the GPU (`chain`), and the sizing of the run state for each request (`plan`).

pub mod chain;
pub mod plan;
pub mod run;
