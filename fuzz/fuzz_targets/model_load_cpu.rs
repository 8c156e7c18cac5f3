//! A model's load on the CPU backend from any bytes (`session::text::load`: checkpoint, tokenizer and
//! output constraint, weights upload and run state): an error or a model, never a panic or an abort.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinyformer::model::CpuBackend;

fuzz_target!(|data: &[u8]| {
    let _ = tinyformer::session::text::load(&CpuBackend, data);
});
