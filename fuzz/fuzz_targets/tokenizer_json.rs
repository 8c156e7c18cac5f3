//! Every tokenizer kind's JSON loader on any text; a tokenizer that loads then encodes, decodes and
//! stream-decodes a fixed sample and a few ids.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinyformer::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(t) = Tokenizer::from_json(text) else { return };
    let enc = t.encode("Hello, world! ünïcode 😀 \n\t lower newest");
    assert_eq!(enc.ids.len(), enc.spans.len());
    let _ = t.decode(&enc.ids);
    let n = t.num_merges();
    let _ = t.encode_with_first_n_merges("abc abd", n / 2);
    let v = t.vocab_size() as u32;
    let ids = [0, 1, v.saturating_sub(1), v, u32::MAX];
    let _ = t.decode(&ids);
    let mut sd = t.stream_decoder();
    for &id in &ids {
        let _ = sd.push(&t, id);
        let _ = t.token_str(id);
    }
    let _ = sd.finish();
    let _ = Tokenizer::from_json(&t.to_json()).map(|back| assert_eq!(back.vocab_size(), t.vocab_size()));
});
