//! Hugging Face tokenizer.json and llama2.c tokenizer.bin (issue 13, section 2): exact parity with the
//! Python `tokenizers` library (and a transcription of llama2.c's run.c) on the corpus and tokenizers
//! made by train/hf_tokenizer_fixtures.py, plus bad input.

use serde_json::Value;
use tinyformer::tokenizer::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf_tokenizers");

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/expected.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn err_line<T: std::fmt::Debug>(r: Result<T, TokenizerError>) -> String {
    let msg = r.expect_err("expected an error").to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

fn check_hf(name: &str) {
    let e = expected();
    let texts: Vec<&str> = e["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let exp = &e["tokenizers"][name];
    let text = std::fs::read_to_string(format!("{DIR}/{name}.json")).unwrap();
    let hf = HfBpe::from_json(&text).unwrap();
    let tok = Tokenizer::from_file_bytes(text.as_bytes()).unwrap();
    assert_eq!(tok.kind(), "hf_bpe");
    assert_eq!(tok.vocab_size() as u64, exp["vocab_size"].as_u64().unwrap());
    let mut failures = Vec::new();
    for (i, (t, case)) in texts.iter().zip(exp["cases"].as_array().unwrap()).enumerate() {
        let want = ids(&case["ids"]);
        let want_special = ids(&case["ids_special"]);
        let got = hf.encode_with(t, false, usize::MAX).ids;
        if got != want {
            failures.push(format!("{name} text {i} {t:?}: encode\n  got  {got:?}\n  want {want:?}"));
        }
        let enc = tok.encode(t);
        if enc.ids != want_special {
            failures.push(format!("{name} text {i} {t:?}: encode with special tokens\n  got  {:?}\n  want {want_special:?}", enc.ids));
        }
        assert_eq!(enc.spans.len(), enc.ids.len());
        let dec = tok.decode(&want_special).unwrap();
        if dec != case["decoded"].as_str().unwrap() {
            failures.push(format!("{name} text {i} {t:?}: decode\n  got  {dec:?}\n  want {:?}", case["decoded"]));
        }
        let raw = hf.decode_keep_special(&want_special).unwrap();
        if raw != case["decoded_raw"].as_str().unwrap() {
            failures.push(format!("{name} text {i} {t:?}: decode keeping specials\n  got  {raw:?}\n  want {:?}", case["decoded_raw"]));
        }
        // streaming one id at a time gives the same text
        let mut sd = tok.stream_decoder();
        let mut streamed = String::new();
        for &id in &want_special {
            streamed.push_str(&sd.push(&tok, id).unwrap());
        }
        streamed.push_str(&sd.finish());
        if streamed != dec {
            failures.push(format!("{name} text {i} {t:?}: stream decode\n  got  {streamed:?}\n  want {dec:?}"));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    // the JSON form round-trips
    let again = Tokenizer::from_json(&tok.to_json()).unwrap();
    assert_eq!(again.encode(texts[0]).ids, tok.encode(texts[0]).ids);
}

#[test]
fn gpt2_byte_level_matches_python_tokenizers() {
    check_hf("gpt2");
}

#[test]
fn llama2_metaspace_byte_fallback_matches_python_tokenizers() {
    check_hf("llama2");
}

#[test]
fn tinyllama_prepend_replace_normalizer_matches_python_tokenizers() {
    check_hf("tinyllama");
}

#[test]
fn llama3_split_regex_matches_python_tokenizers() {
    check_hf("llama3");
}

#[test]
fn llama2c_bin_matches_run_c() {
    let e = expected();
    let texts: Vec<&str> = e["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let exp = &e["llama2c"];
    let bytes = std::fs::read(format!("{DIR}/llama2c.bin")).unwrap();
    let tok = Tokenizer::from_file_bytes(&bytes).unwrap();
    assert_eq!(tok.kind(), "llama2c");
    assert_eq!(tok.vocab_size() as u64, exp["vocab_size"].as_u64().unwrap());
    let mut failures = Vec::new();
    for (i, (t, case)) in texts.iter().zip(exp["cases"].as_array().unwrap()).enumerate() {
        let want = ids(&case["ids"]);
        let got = tok.encode(t).ids;
        if got != want {
            failures.push(format!("text {i} {t:?}: encode\n  got  {got:?}\n  want {want:?}"));
        }
        let dec = tok.decode(&want).unwrap();
        if dec != case["decoded"].as_str().unwrap() {
            failures.push(format!("text {i} {t:?}: decode\n  got  {dec:?}\n  want {:?}", case["decoded"]));
        }
        let mut sd = tok.stream_decoder();
        let mut streamed: String = want.iter().map(|&id| sd.push(&tok, id).unwrap()).collect();
        streamed.push_str(&sd.finish());
        assert_eq!(streamed, dec, "text {i}: stream decode");
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    // tokenizer.bin and the JSON form round-trip
    let Tokenizer::Llama2c(l) = &tok else { panic!("llama2c") };
    assert_eq!(l.to_bin(), bytes);
    let again = Tokenizer::from_json(&tok.to_json()).unwrap();
    assert_eq!(again.encode(texts[0]).ids, tok.encode(texts[0]).ids);
}

#[test]
fn unsupported_models_and_components_are_named() {
    let unigram = r#"{"version":"1.0","model":{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0.0],["a",-1.0]]}}"#;
    let msg = err_line(Tokenizer::from_file_bytes(unigram.as_bytes()));
    assert!(msg.contains("model type \"Unigram\" is not supported"), "{msg}");
    let wordpiece = r#"{"model":{"type":"WordPiece","unk_token":"[UNK]","vocab":{"[UNK]":0}}}"#;
    let msg = err_line(HfBpe::from_json(wordpiece));
    assert!(msg.contains("model type \"WordPiece\" is not supported"), "{msg}");
    let base = |extra: &str| format!(r#"{{"model":{{"type":"BPE","vocab":{{"a":0,"b":1,"ab":2}},"merges":["a b"]}}{extra}}}"#);
    let ok = HfBpe::from_json(&base("")).unwrap();
    assert_eq!(ok.encode_with("abab", false, usize::MAX).ids, vec![2, 2]);
    let msg = err_line(HfBpe::from_json(&base(r#","normalizer":{"type":"NFKC"}"#)));
    assert!(msg.contains("normalizer type \"NFKC\" is not supported"), "{msg}");
    let msg = err_line(HfBpe::from_json(&base(r#","pre_tokenizer":{"type":"BertPreTokenizer"}"#)));
    assert!(msg.contains("pre-tokenizer type \"BertPreTokenizer\" is not supported"), "{msg}");
    let msg = err_line(HfBpe::from_json(&base(r###","decoder":{"type":"WordPiece","prefix":"##"}"###)));
    assert!(msg.contains("decoder type \"WordPiece\" is not supported"), "{msg}");
    // a merge whose result is not in the vocabulary
    let bad = r#"{"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":[["a","b"]]}}"#;
    let msg = err_line(HfBpe::from_json(bad));
    assert!(msg.contains("merge 0 uses \"ab\", which is not in the vocabulary"), "{msg}");
    // not JSON at all, and JSON without a model
    assert!(err_line(HfBpe::from_json("{\"model\": ")).contains("tokenizer.json"));
    assert!(err_line(HfBpe::from_json("{}")).contains("missing field \"model\""));
}

#[test]
fn truncated_or_inconsistent_tokenizer_bin_is_refused() {
    let bytes = std::fs::read(format!("{DIR}/llama2c.bin")).unwrap();
    // cut inside the last token's bytes, inside a score/length pair, and inside the header
    let msg = err_line(Llama2c::from_bin(&bytes[..bytes.len() - 1]));
    assert!(msg.contains("the file is truncated"), "{msg}");
    let msg = err_line(Llama2c::from_bin(&bytes[..6]));
    assert!(msg.contains("the file ends inside its 8-byte score and length"), "{msg}");
    let msg = err_line(Llama2c::from_bin(&bytes[..3]));
    assert!(msg.contains("too short for the 4-byte header"), "{msg}");
    // a length past max_token_length, a negative length, an absurd header: errors, no huge allocation
    let mut b = bytes.clone();
    b[8..12].copy_from_slice(&1_000_000i32.to_le_bytes());
    let msg = err_line(Llama2c::from_bin(&b));
    assert!(msg.contains("token 0 has length 1000000, outside"), "{msg}");
    b[8..12].copy_from_slice(&(-5i32).to_le_bytes());
    assert!(err_line(Llama2c::from_bin(&b)).contains("length -5"));
    let mut b = bytes.clone();
    b[0..4].copy_from_slice(&i32::MAX.to_le_bytes());
    assert!(err_line(Llama2c::from_bin(&b)).contains("max_token_length 2147483647"));
}

#[test]
fn llama2c_greedy_merge_is_run_c_on_a_hand_made_vocabulary() {
    // <unk> <s> </s>, bytes 3..259 would follow in a real file; here ids 3.. are pieces with scores.
    let pieces: Vec<Vec<u8>> =
        ["<unk>", "\n<s>\n", "\n</s>\n", " ", "a", "b", "ab", " ab", "bb", "abb"].iter().map(|s| s.as_bytes().to_vec()).collect();
    let scores = vec![0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -9.0, -5.0, -5.0];
    let t = Llama2c::new(8, pieces, scores).unwrap();
    // " " a b b: pairs " a"(none) ab(-4) bb(-5): ab first, then " "+ab=" ab"(-9) vs ab+b="abb"(-5): abb wins.
    assert_eq!(t.encode_with("abb", true, false).ids, vec![1, 3, 9]);
    assert_eq!(t.encode_with("", true, true).ids, vec![1, 2]);
    // characters not in the vocabulary fall back to byte ids + 3
    assert_eq!(t.encode_with("é", false, false).ids, vec![3, 0xC3 + 3, 0xA9 + 3]);
    assert_eq!(t.decode(&[1, 3, 9]).unwrap(), "abb");
}
