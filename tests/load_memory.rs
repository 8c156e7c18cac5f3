//! The peak memory of a checkpoint load is a small multiple of the file: a checkpoint
//! whose metadata carries a 32 MiB tokenizer string is loaded under an allocator that counts live
//! bytes. The peak (measured: 3.00 x the metadata above the file) is inside the safetensors crate's
//! header parse, which buffers the header (serde `flatten`) on its way to its map; the loader drops
//! the crate's copy before it reads its own one copy of the map from the header text, and moves the
//! tokenizer out of that map instead of cloning it. So a load holds at most the file plus three
//! times its metadata (4 x the file), and keeps one copy. The loader before this change held more
//! copies on top of the crate's parse: serde_json values, their clone, the map, the tokenizer's clone.
//!
//! One test in this binary, so no other test allocates while it measures.

mod common;

use common::counting::{Counting, LIVE, PEAK};
use std::sync::atomic::Ordering;

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn a_load_holds_the_file_plus_at_most_three_times_its_metadata() {
    use tinyformer::model::checkpoint::Checkpoint;
    const TOKENIZER: usize = 32 << 20;

    // decoder_a's tensors and config, with a 32 MiB JSON string as its "tokenizer"
    let base = std::fs::read("tests/fixtures/models/decoder_a.safetensors").unwrap();
    let ck = Checkpoint::from_bytes(&base).unwrap();
    let mut meta = ck.metadata.clone();
    let mut tok = String::with_capacity(TOKENIZER + 2);
    tok.push('"');
    tok.extend(std::iter::repeat_n('t', TOKENIZER));
    tok.push('"');
    meta.insert("tokenizer".into(), tok);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        ck.tensors.iter().map(|(n, t)| (n.clone(), t.shape.clone(), t.data.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views =
        bytes.iter().map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()));
    let file = safetensors::serialize(views, Some(meta)).unwrap();
    drop((ck, bytes));

    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let loaded = Checkpoint::from_bytes(&file).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    let kept = LIVE.load(Ordering::SeqCst) - before;
    println!(
        "file {} bytes (metadata {} bytes): the load peaked at {} bytes above the file ({:.2} x the metadata) and keeps {} bytes",
        file.len(),
        TOKENIZER + 2,
        peak,
        peak as f64 / TOKENIZER as f64,
        kept
    );
    assert_eq!(loaded.tokenizer.as_ref().map(String::len), Some(TOKENIZER + 2));
    assert!(!loaded.metadata.contains_key("tokenizer"), "the tokenizer is moved out of the map, not copied");
    // the crate's parse (its buffer and its map), and a little for the tensors and the header
    assert!(peak < 3 * TOKENIZER + (1 << 20), "peak {peak} bytes for a {TOKENIZER}-byte metadata string");
    // after the load: one copy (the tokenizer string) and the tensors
    assert!(kept < TOKENIZER + (1 << 20), "kept {kept} bytes");
}
