//! tokenizer.json's components (src/tokenizer/hf_bpe.rs): the input is spliced into a small
//! byte-level tokenizer.json as its normalizer, pre-tokenizer, post-processor or decoder (the first
//! byte picks which; the rest is the component's JSON). A tokenizer that loads encodes and decodes a
//! fixed sample and edge ids, stream-decodes, and round-trips its own JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinyformer::tokenizer::Tokenizer;

const SLOTS: [&str; 4] = ["normalizer", "pre_tokenizer", "post_processor", "decoder"];

fn template(slot: &str, component: &str) -> String {
    // vocabulary: the 256 byte-level characters, "▁", the merges' results and two specials
    let mut vocab = serde_json::Map::new();
    let byte_chars: Vec<char> = (0u32..256)
        .map(|b| {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            if printable {
                char::from_u32(b).unwrap()
            } else {
                let shifted =
                    (0..b).filter(|&x| !((33..=126).contains(&x) || (161..=172).contains(&x) || (174..=255).contains(&x))).count();
                char::from_u32(256 + shifted as u32).unwrap()
            }
        })
        .collect();
    for c in &byte_chars {
        let n = vocab.len();
        vocab.insert(c.to_string(), n.into());
    }
    // the Metaspace replacement, so that SentencePiece-style components find their pieces
    let n = vocab.len();
    vocab.insert("▁".into(), n.into());
    let merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w"), ("o", "r"), ("▁", "a")];
    for (a, b) in merges {
        let n = vocab.len();
        vocab.entry(format!("{a}{b}")).or_insert(n.into());
    }
    let n = vocab.len();
    let mut j = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": n, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": n + 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()}
    });
    // the fuzzed component, spliced in as text (it need not be valid JSON: then the file is not)
    j[slot] = serde_json::Value::String("\u{1}SLOT\u{1}".into());
    j.to_string().replace("\"\\u0001SLOT\\u0001\"", component)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let Ok(component) = std::str::from_utf8(rest) else { return };
    let tokenizer_json = template(SLOTS[pick as usize % SLOTS.len()], component);
    let wrapped = serde_json::json!({"kind": "hf_bpe", "tokenizer_json": tokenizer_json}).to_string();
    let Ok(t) = Tokenizer::from_json(&wrapped) else { return };
    let enc = t.encode("Hello, world! ünïcode 😀 \n\t  lower newest <s>x</s>");
    assert_eq!(enc.ids.len(), enc.spans.len());
    let _ = t.decode(&enc.ids);
    let v = t.vocab_size() as u32;
    let ids = [0, 1, v.saturating_sub(1), v, u32::MAX];
    let _ = t.decode(&ids);
    let mut sd = t.stream_decoder();
    for &id in enc.ids.iter().chain(&ids) {
        let _ = sd.push(&t, id);
        let _ = t.token_str(id);
    }
    let _ = sd.finish();
    let _ = Tokenizer::from_json(&t.to_json()).map(|back| assert_eq!(back.vocab_size(), t.vocab_size()));
});
