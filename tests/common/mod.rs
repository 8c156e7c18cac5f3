//! Helpers shared by the integration tests (each test binary includes this module with `mod common;`).
#![allow(dead_code)]

pub mod counting;

pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The bytes of a safetensors file with its header (the JSON: tensors and `__metadata__`) changed by `edit`;
/// the data section is kept byte for byte.
pub fn with_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// The bytes of a safetensors file with its metadata config changed by `edit` (the data section
/// is kept byte for byte, so a small file can describe a huge run state).
pub fn with_config(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    with_header(bytes, |header| {
        let mut cfg: serde_json::Value = serde_json::from_str(header["__metadata__"]["config"].as_str().unwrap()).unwrap();
        edit(&mut cfg);
        header["__metadata__"]["config"] = serde_json::Value::String(cfg.to_string());
    })
}

/// A JSON array of ids (expected.json's `ids`, `greedy`).
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Every number of a nested JSON array, in order.
pub fn flat(v: &serde_json::Value) -> Vec<f64> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flat).collect(),
        serde_json::Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("not a number: {other}"),
    }
}

/// |got - want| <= atol + rtol |want| for every value (same lengths); returns the largest |diff|.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    let mut worst = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w).abs();
        worst = worst.max(d);
        assert!(d <= atol + rtol * w.abs(), "{what}[{i}]: got {g}, want {w} (|diff| {d:e})");
    }
    worst
}

/// A gradient that is not finite at a step that reads nothing back (`Trainer::step(.., false)`)
/// halts the updates on the device (`Train::guard_finite`): the next read fails naming that step
/// and a tensor, and every parameter is bit for bit what it was before that step. `tr` is a fresh
/// trainer of a decoder with vocabulary `vocab`; its first tensor (the token embedding) is
/// poisoned with NaN after step 2.
pub fn halts_at_an_unreported_step<B: tinyformer::train::ops::Train>(mut tr: tinyformer::train::run::Trainer<B>, vocab: u32, what: &str) {
    let data = tinyformer::train::data::Source::Induction { vocab };
    let step = |tr: &mut tinyformer::train::run::Trainer<B>, s: u32, report: bool| {
        let b = tr.batches(&data, 3, s).unwrap();
        pollster::block_on(tr.step(&b, report))
    };
    step(&mut tr, 1, false).unwrap();
    step(&mut tr, 2, false).unwrap();
    let n = tr.params.numel(0);
    tr.be.write_f32(&tr.params.p[0], 0, &vec![f32::NAN; n]).unwrap();
    let bits = |v: Vec<Vec<f32>>| v.into_iter().flatten().map(f32::to_bits).collect::<Vec<_>>();
    let before = bits(pollster::block_on(tr.values()).unwrap());
    step(&mut tr, 3, false).expect("an unreported step reads nothing, so it cannot fail");
    let e = pollster::block_on(tr.check_halt()).expect_err("the halt slot is set").to_string();
    assert!(e.starts_with("step 3: the gradient of ") && e.contains("(found at step 3)"), "{what}: {e}");
    step(&mut tr, 4, false).unwrap();
    let e = step(&mut tr, 5, true).expect_err("a reported step after the halt fails").to_string();
    assert!(e.starts_with("step 3: the gradient of ") && e.contains("(found at step 5)"), "{what}: {e}");
    assert_eq!(bits(pollster::block_on(tr.values()).unwrap()), before, "{what}: the parameters moved after the halt");
}
