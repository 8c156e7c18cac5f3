//! Tokenizer work stays near-linear in its input, and sizes are capped with clear errors.
//! Each input below was chosen so that the previous code's quadratic path would take minutes (the numbers are in each test's comment); the tests assert results, never times.

use tinyformer::tokenizer::*;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn err_text<T: std::fmt::Debug>(r: Result<T, TokenizerError>) -> String {
    let msg = r.expect_err("expected an error").to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(msg.len() < 400, "bounded length: {} bytes", msg.len());
    msg
}

/// A byte-level BPE with 983,040 merges: all 65,536 byte pairs, then (x, b) for every pair token x and
/// 14 values of b. Every pair of a phase shares its right half, which used to put them all in one hash
/// probe sequence (FxHash without a finalizer: ~2e9 probes to build the tables).
fn million_merges() -> Vec<(u32, u32)> {
    let mut merges = Vec::with_capacity(983_040);
    for i in 0..256u32 {
        for j in 0..256u32 {
            merges.push((i, j));
        }
    }
    for b in 97..111u32 {
        for x in 256..256 + 65_536u32 {
            merges.push((x, b));
        }
    }
    merges
}

#[test]
fn byte_bpe_a_million_merges_loads_encodes_and_decodes() {
    let merges = million_merges();
    let n = merges.len();
    let json = ByteBpe::new(merges, PreSplit::None).unwrap().to_json_value().to_string();
    assert!(json.len() > 10 << 20, "the JSON is {} bytes", json.len());
    let t = Tokenizer::from_json(&json).unwrap();
    assert_eq!(t.vocab_size(), 256 + n);
    assert_eq!(t.num_merges(), n);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let text: String = (0..1_000_000).map(|_| char::from(b' ' + rng.below(95) as u8)).collect();
    let enc = t.encode(&text);
    assert_eq!(t.decode(&enc.ids).unwrap(), text);
    // Pairs first (in rank order, so a few bytes stay single), then "pair + letter" for the letters 'a'..='n'.
    assert!(enc.ids.len() < text.len() * 6 / 10, "{} tokens", enc.ids.len());
    assert!(enc.ids.iter().any(|&id| id >= 256 + 65_536), "the (x, b) merges apply");
}

/// A seed_bpe table that repeats one pair 200,000 times ahead of the merge that creates its left part.
/// Every encoded word then looked the pair up past all 200,000 earlier ranks: 100,000 distinct words x
/// 200,000 steps = 2e10 steps before; a binary search now.
#[test]
fn seed_bpe_repeated_merge_pairs() {
    let k = 200_000;
    let mut vocab: Vec<String> = ["<UNK>", "</w>", "a", "b", "c", "ab", "abc"].iter().map(|s| s.to_string()).collect();
    vocab.extend((0..10).map(|d| d.to_string()));
    let mut merges: Vec<(String, String)> = vec![("ab".into(), "c".into()); k];
    merges.push(("a".into(), "b".into()));
    let json = serde_json::json!({"kind": "seed_bpe", "vocab": vocab, "merges": merges}).to_string();
    let t = Tokenizer::from_json(&json).unwrap();
    let text: String = (0..100_000).map(|i| format!("abc{i} ")).collect();
    let enc = t.encode(&text);
    let ab = vocab.iter().position(|s| s == "ab").unwrap() as u32;
    let abc = vocab.iter().position(|s| s == "abc").unwrap() as u32;
    // (ab, c) ranks all come before (a, b): never applied.
    assert_eq!(enc.ids.iter().filter(|&&id| id == ab).count(), 100_000);
    assert!(!enc.ids.contains(&abc));
    assert_eq!(t.decode(&enc.ids).unwrap(), text.trim_end());
    // The same with only the repeated merges: nothing applies.
    let enc = t.encode_with_first_n_merges("abc1 abc2", k);
    assert!(!enc.ids.contains(&ab));
}

/// An end marker of 64 KiB (the cap) decoded as a stream of 200,000 one-character pieces. The previous
/// clean-up re-scanned the held-back marker prefix for every piece (64 KiB x 64 KiB per push); the KMP
/// automaton is linear.
#[test]
fn seed_bpe_long_end_token_streams_in_linear_time() {
    let end = "a".repeat(MAX_MARKER_BYTES);
    let bpe = SeedBpe::new(vec!["<UNK>".into(), "a".into(), "b".into(), end.clone()], vec![], "<UNK>".into(), end.clone()).unwrap();
    let t = Tokenizer::from(bpe);
    let mut ids = vec![1u32; 200_000];
    ids.push(2);
    // 3 full markers become spaces, then 3392 a's and a b are plain text.
    let expected = format!("{}b", "a".repeat(200_000 - 3 * MAX_MARKER_BYTES));
    assert_eq!(t.decode(&ids).unwrap(), expected);
    let mut sd = t.stream_decoder();
    let mut streamed = String::new();
    for &id in &ids {
        streamed.push_str(&sd.push(&t, id).unwrap());
    }
    streamed.push_str(&sd.finish());
    assert_eq!(streamed, expected);
}

/// A multi-megabyte end marker (or unknown token) is refused with a clear error.
#[test]
fn seed_bpe_multi_megabyte_end_token_is_refused() {
    let end = "</w>".repeat(1 << 20); // 4 MiB
    let json = serde_json::json!({"kind": "seed_bpe", "vocab": ["<UNK>", "a"], "merges": [], "end_token": end}).to_string();
    let msg = err_text(Tokenizer::from_json(&json));
    assert!(msg.contains("end_token is 4194304 bytes long (max 65536)"), "{msg}");
    let json = serde_json::json!({"kind": "seed_bpe", "vocab": ["a", end], "merges": [], "unk_token": end}).to_string();
    let msg = err_text(Tokenizer::from_json(&json));
    assert!(msg.contains("unk_token is 4194304 bytes long"), "{msg}");
    // A 4 MiB vocabulary entry: over the 1 MiB token cap.
    let json = serde_json::json!({"kind": "seed_bpe", "vocab": ["<UNK>", end], "merges": []}).to_string();
    let msg = err_text(Tokenizer::from_json(&json));
    assert!(msg.contains("a token of 4194304 bytes (max 1048576)"), "{msg}");
    // A long entry that appears twice: the error quotes only its start.
    let long = "x".repeat(100_000);
    let json = serde_json::json!({"kind": "seed_bpe", "vocab": ["<UNK>", long, long], "merges": []}).to_string();
    let msg = err_text(Tokenizer::from_json(&json));
    assert!(msg.contains("twice"), "{msg}");
}

/// char_merges with 1,047,552 merges (every pair of 1024 CJK characters), the id limit.
#[test]
fn char_merges_a_million_merges() {
    let chars: Vec<char> = (0..1024u32).map(|i| char::from_u32(0x4E00 + i).unwrap()).collect();
    let stoi: Vec<(char, u32)> = chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
    let mut merges = Vec::new();
    let mut id = 1024u32;
    'outer: for a in 0..1024u32 {
        for b in 0..1024u32 {
            if id >= 1 << 20 {
                break 'outer;
            }
            merges.push((a, b, id));
            id += 1;
        }
    }
    let n = merges.len();
    let json = CharMerges::new(stoi, merges).unwrap().to_json_value().to_string();
    let t = Tokenizer::from_json(&json).unwrap();
    assert_eq!(t.num_merges(), n);
    assert_eq!(t.vocab_size(), 1 << 20);
    let mut rng = Rng(77);
    let text: String = (0..400_000).map(|_| chars[rng.below(1000) as usize]).collect();
    let enc = t.encode(&text);
    assert_eq!(enc.ids.len(), 200_000, "every pair of characters merges");
    assert_eq!(t.decode(&enc.ids).unwrap(), text);
}

/// A char_merges dependency chain listed backwards: merge id m uses id m + 1, so the old loader resolved
/// one link per pass over all the merges. 8000 links: the tokens spell 32 MB, the cost is linear in that.
#[test]
fn char_merges_backward_dependency_chain() {
    let k = 8000u32;
    let mut merges: Vec<(u32, u32, u32)> = (1..k).map(|m| (m + 1, 0, m)).collect();
    merges.push((0, 0, k));
    let t = CharMerges::new(vec![('a', 0)], merges).unwrap();
    assert_eq!(t.expansion(1).unwrap().len(), k as usize + 1);
    assert_eq!(t.expansion(k).unwrap(), "aa");
    let enc = Tokenizer::from(t.clone()).encode(&"a".repeat(k as usize + 1));
    assert_eq!(enc.ids, vec![1]);
    // A cycle in a long list is still found, and named.
    let mut cyc: Vec<(u32, u32, u32)> = (1..k).map(|m| (m + 1, 0, m)).collect();
    cyc.push((1, 0, k));
    let msg = err_text(CharMerges::new(vec![('a', 0)], cyc));
    assert!(msg.contains("cycle"), "{msg}");
}

/// A byte_bpe chain (t, 'a') -> t' grows one byte per link: quadratic bytes for linear JSON. It is cut
/// off at the total cap with an error, before the memory is spent.
#[test]
fn byte_bpe_quadratic_chain_is_capped() {
    let mut merges = vec![(97u32, 97u32)];
    for k in 0..30_000u32 {
        merges.push((256 + k, 97));
    }
    let json = serde_json::json!({"kind": "byte_bpe", "merges": merges}).to_string();
    assert!(json.len() < 1 << 20);
    let msg = err_text(Tokenizer::from_json(&json));
    assert!(msg.contains("expands to too many bytes"), "{msg}");
    // Exponential: 30 doublings.
    let mut merges = vec![(97u32, 97u32)];
    for k in 0..30u32 {
        merges.push((256 + k, 256 + k));
    }
    assert!(err_text(ByteBpe::new(merges, PreSplit::None)).contains("too many bytes"));
}

/// Deeply nested JSON: serde_json's recursion limit (128) makes it an error, not a stack overflow, wherever
/// the nesting is.
#[test]
fn deeply_nested_json_is_an_error() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    // Not an object at all: said so (serde_json skips ignored values without recursing).
    assert!(err_text(Tokenizer::from_json(&deep(1_000_000))).contains("expected a JSON object"));
    for json in [
        format!(r#"{{"kind":"byte_bpe","merges":{}}}"#, deep(1_000_000)),
        format!(r#"{{"kind":"char_merges","stoi":{{}},"merges":[{}]}}"#, deep(1_000_000)),
        format!(r#"{{"kind":{},"merges":[]}}"#, deep(1_000_000)),
    ] {
        let msg = err_text(Tokenizer::from_json(&json));
        // Either the limit, or the typed form refuses the first nested level before going deeper (the
        // serde-derived "kind" enum says "expected value" at the '[').
        assert!(
            msg.contains("recursion limit exceeded")
                || msg.contains("invalid type: sequence")
                || msg.contains("expected value at line 1 column 9"),
            "{msg}"
        );
    }
    // An ignored field is skipped without recursion (serde_json's IgnoredAny), at any depth.
    for depth in [100, 1_000_000] {
        let ok = format!(r#"{{"note":{},"kind":"byte_bpe","merges":[]}}"#, deep(depth));
        assert_eq!(Tokenizer::from_json(&ok).unwrap().num_merges(), 0);
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let ok = format!(r#"{{"kind":"seed_bpe","vocab":["<UNK>"],"merges":[],"x":{objects}}}"#);
        assert_eq!(Tokenizer::from_json(&ok).unwrap().vocab_size(), 1);
    }
}

#[test]
fn oversized_json_is_refused_before_parsing() {
    let json = format!(r#"{{"kind":"byte_bpe","merges":[],"pad":"{}"}}"#, "x".repeat(MAX_JSON_BYTES));
    let msg = err_text(Tokenizer::from_json(&json));
    assert!(msg.contains("the limit is 64 MiB"), "{msg}");
}

/// seed_bpe training on 1 MB of random words (about 170,000 distinct) to 5000 tokens. The previous
/// trainer recounted every pair of every distinct word for every merge: ~5e9 hash updates.
#[test]
fn seed_bpe_training_is_incremental() {
    let mut rng = Rng(0xfeed);
    let mut text = String::new();
    while text.len() < 1_000_000 {
        for _ in 0..1 + rng.below(8) {
            text.push(char::from(b'a' + rng.below(26) as u8));
        }
        text.push(if rng.below(10) == 0 { '\n' } else { ' ' });
    }
    let t = train_seed_bpe(&text, 5000);
    assert_eq!(t.merges().len(), 5000 - 27, "26 letters and </w> to start with");
    let tok = Tokenizer::from(t);
    let normalized = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(tok.decode(&tok.encode(&text).ids).unwrap(), normalized);
}

/// byte_bpe and char_merges training on 2 MB without pre-split (one chunk).
#[test]
fn byte_and_char_training_on_one_long_chunk() {
    let mut rng = Rng(0xbeef);
    let text: String = (0..2_000_000).map(|_| char::from(b'a' + rng.below(6) as u8)).collect();
    let t = train_byte_bpe(&text, 256 + 2000, PreSplit::None).unwrap();
    assert_eq!(t.merges().len(), 2000);
    let tok = Tokenizer::from(t);
    assert_eq!(tok.decode(&tok.encode(&text).ids).unwrap(), text);
    let t = train_char_merges(&text, 2000).unwrap();
    assert_eq!(t.merges().len(), 2000 - 6);
    let tok = Tokenizer::from(t);
    assert_eq!(tok.decode(&tok.encode(&text).ids).unwrap(), text);
}

/// A reference checkpoint whose `__metadata__["tokenizer"]` is replaced by `tokenizer`.
fn checkpoint_with_tokenizer(tokenizer: &str) -> Vec<u8> {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models/decoder_a.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"]["tokenizer"] = serde_json::Value::String(tokenizer.to_string());
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

fn load_error(bytes: &[u8]) -> String {
    let b = tinyformer::model::CpuBackend;
    let msg = match tinyformer::session::text::load(&b, bytes) {
        Ok(_) => panic!("expected the load to fail"),
        Err(e) => e.to_string(),
    };
    assert!(!msg.contains('\n') && msg.len() < 400, "one bounded line: {msg}");
    msg
}

/// The same hostile tokenizers inside a checkpoint: the load (session::text::load) gives one line, quickly,
/// natively (the page runs the same code).
#[test]
fn hostile_tokenizers_in_a_checkpoint() {
    let end = "</w>".repeat(1 << 20);
    let json = serde_json::json!({"kind": "seed_bpe", "vocab": ["<UNK>", "a"], "merges": [], "end_token": end}).to_string();
    let msg = load_error(&checkpoint_with_tokenizer(&json));
    assert!(msg.contains("the tokenizer in the metadata is invalid") && msg.contains("end_token is 4194304 bytes long"), "{msg}");

    let json = ByteBpe::new(million_merges(), PreSplit::Words).unwrap().to_json_value().to_string();
    let msg = load_error(&checkpoint_with_tokenizer(&json));
    assert!(msg.contains("the tokenizer has 983296 tokens but the model's vocabulary is"), "{msg}");

    let deep = format!(r#"{{"kind":"byte_bpe","merges":[{}{}]}}"#, "[".repeat(100_000), "]".repeat(100_000));
    let msg = load_error(&checkpoint_with_tokenizer(&deep));
    assert!(msg.contains("the tokenizer in the metadata is invalid"), "{msg}");
}
