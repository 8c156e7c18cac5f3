//! The checkpoint loader on any bytes: an error or a checkpoint, never a panic, hang or abort.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinyformer::model::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = Checkpoint::from_bytes(data) {
        let _ = e.to_string();
    }
});
