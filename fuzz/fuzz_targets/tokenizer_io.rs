//! Encode and decode of each tokenizer kind on any input: the first byte picks a tokenizer (trained
//! once on a fixed text), the rest is split into a text to encode and ids to decode (whole and
//! streamed). Decode of encode gives the text back where the kind promises it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tinyformer::tokenizer::*;

const TRAIN: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll: Speak, speak.\n\
    low lower lowest newer newest wider widest 2024-01-31 ünïcode 😀 é è ê";

fn tokenizers() -> &'static [Tokenizer] {
    static T: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    T.get_or_init(|| {
        vec![
            train_seed_bpe(TRAIN, 80).into(),
            train_char_merges(TRAIN, 90).unwrap().into(),
            train_byte_bpe(TRAIN, 300, PreSplit::Words).unwrap().into(),
            train_byte_bpe(TRAIN, 300, PreSplit::None).unwrap().into(),
            Chars::from_alphabet("abcdefghijklmnopqrstuvwxyz0123456789 -").unwrap().into(),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let t = &tokenizers()[pick as usize % tokenizers().len()];
    let cut = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
    let text = String::from_utf8_lossy(&rest[..cut]);
    let enc = t.encode_with_first_n_merges(&text, (pick / 8) as usize * 7);
    let full = t.encode(&text);
    assert_eq!(full.ids.len(), full.spans.len());
    let back = t.decode(&full.ids).unwrap();
    if matches!(t, Tokenizer::ByteBpe(_)) {
        assert_eq!(back, text);
    }
    let _ = enc;
    let ids: Vec<u32> = rest[cut.min(rest.len())..].chunks(2).map(|c| c.iter().fold(0u32, |a, &b| a * 256 + b as u32) % 400).collect();
    let whole = t.decode(&ids);
    let mut sd = t.stream_decoder();
    let mut streamed = String::new();
    let mut ok = true;
    for &id in &ids {
        match sd.push(t, id) {
            Ok(s) => streamed.push_str(&s),
            Err(_) => ok = false,
        }
    }
    streamed.push_str(&sd.finish());
    if let (true, Ok(w)) = (ok, whole) {
        assert_eq!(streamed, w);
    }
});
