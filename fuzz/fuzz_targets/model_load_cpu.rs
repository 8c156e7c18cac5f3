//! `Model::load` on the CPU backend from any bytes (checkpoint, tokenizer, weights upload and run
//! state): an error or a model, never a panic or an abort.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinyformer::model::{CpuBackend, Model};

fuzz_target!(|data: &[u8]| {
    let _ = Model::load(&CpuBackend, data);
});
