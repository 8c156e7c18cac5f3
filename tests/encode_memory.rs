//! Encoding a long text holds a bounded multiple of the text, and gives what the Python `tokenizers`
//! library gives. Measured under an allocator that counts live bytes (peak above the text and its
//! output, 4.4 MB of text):
//! - before: every pre-tokenized word of the whole text was held at once, each with two `usize` offsets
//!   per byte, and a whole-text SentencePiece "word" held its symbols and heap at once; GPT-2's tokenizer
//!   on a 50 MB text took 5.4 GB and 90 s, and a tokenizer with unknown characters was quadratic (a
//!   character count from the start of the text for each one: 5 minutes at 50 MB);
//! - now: words are cut and merged one at a time, a text no normalizer changed keeps no offset table, and
//!   a long word is merged in runs between characters that no merge joins.
//!
//! One test in this binary, so no other test allocates while it measures.

mod common;

use common::counting::{Counting, LIVE, PEAK};
use std::sync::atomic::Ordering;

#[global_allocator]
static ALLOC: Counting = Counting;

/// The ids folded into one number, as the Python side folds them.
fn fold(ids: &[u32]) -> u64 {
    ids.iter().fold(0u64, |h, &i| ((h as u128 * 1_000_003 + i as u128) % (1u128 << 61)) as u64)
}

#[test]
fn a_long_text_encodes_in_bounded_memory_and_as_the_library_does() {
    use tinyformer::tokenizer::Tokenizer;
    // the same text as the Python below builds
    let text: String =
        (0..60_000u64).map(|i| format!("Line {i}: Wherefore art thou Romeo?  Ünïcödé ﬁne 한국어 {}\n", i * 7919 % 1_000_003)).collect();
    assert_eq!(text.len(), 4_422_208);
    // From the Python `tokenizers` library (0.23.3), on the same text:
    //   Tokenizer.from_file(f"tests/fixtures/hf_tokenizers/{name}.json").encode(text).ids
    // folded as h = (h * 1000003 + id) % 2**61. The limits are a multiple of the text (measured: see the
    // printed lines: 6.7x, 35x and 44x; a normalizer's offset table is two `usize` per byte, and NFKD holds
    // its characters with their spans while it reorders them); the output (ids and spans, 20 bytes a
    // token) is counted apart.
    // gpt2: ByteLevel with GPT-2's split; llama2: Prepend + Replace normalizers and one whole-text word;
    // metaspace: NFKD and Metaspace, with unknown characters
    let cases = [
        ("gpt2", 3_462_208, 2_076_906_579_988_382_143u64, 10),
        ("llama2", 3_282_209, 1_065_909_818_725_233_001, 48),
        ("metaspace", 3_162_208, 576_330_004_556_953_266, 56),
    ];
    for (name, count, folded, limit) in cases {
        let json = std::fs::read_to_string(format!("tests/fixtures/hf_tokenizers/{name}.json")).unwrap();
        let tok = Tokenizer::from_file_bytes(json.as_bytes()).unwrap();
        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let enc = tok.encode(&text);
        let output = enc.ids.capacity() * 4 + enc.spans.capacity() * 16 + enc.unknown.capacity() * 8;
        let peak = PEAK.load(Ordering::SeqCst) - before;
        let work = peak.saturating_sub(output);
        println!(
            "{name}: {} tokens; the encode peaked at {peak} bytes, {work} beyond its output ({:.1} x the text)",
            enc.ids.len(),
            work as f64 / text.len() as f64
        );
        assert_eq!((enc.ids.len(), fold(&enc.ids)), (count, folded), "{name}: the ids differ from the library's");
        assert!(work < limit * text.len(), "{name}: {work} bytes beyond the output for a text of {} bytes", text.len());
    }
}
