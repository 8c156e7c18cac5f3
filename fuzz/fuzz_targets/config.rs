//! The model config from any text: a validated config or an error, and a valid config's size
//! arithmetic (expected tensors, parameter counts) never overflows.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinyformer::model::config::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ModelConfig::from_json(text) {
        Ok(cfg) => {
            let _ = cfg.expected_tensors();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
