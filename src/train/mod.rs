//! Training: the engine's own backward passes and optimizer, over any backend that implements
//! [`ops::Train`] (the reference CPU, the fast CPU, the GPU).
//! - `ops`: the training ops every backend adds to its forward (each kernel family's backward,
//!   the fused cross-entropy, AdamW);
//! - `params`: the trainable tensors of an architecture (from `Weights::declare`), their
//!   gradients and Adam moments, initialisation, and saving as a checkpoint;
//! - `graph` (the decoder families) and `encdec` (the encoder-decoder): the forward that keeps
//!   what the backward needs, and the backward; `net` puts them behind one interface;
//! - `moe`: the mixture-of-experts FFN's buffers, forward, backward and load-balancing loss;
//! - `optim`: the learning-rate schedule and the optimizer step (clip + AdamW);
//! - `fresh`: a fresh model's config from its sizes, a text's character tokenizer (the CLI and the lab);
//! - `lab`: the page's training lab (a preset's run, stepped in chunks; the induction score);
//! - `data`: where batches come from (text, the induction task, the dates task, a fixed batches
//!   file); `dates`: the date-translation pairs of the shipped dates model;
//! - `memory`: the training plan's memory, checked against the budget before allocation;
//! - `check`: a run against a PyTorch fixture (the native tests and the page's wasm share it);
//! - `run`: the training loop (accumulation, evaluation, logging, checkpoints).

pub mod check;
pub mod data;
pub mod dates;
pub mod encdec;
pub mod fresh;
pub mod graph;
pub mod lab;
pub mod memory;
pub mod moe;
pub mod net;
pub mod ops;
pub mod optim;
pub mod params;
pub mod run;
