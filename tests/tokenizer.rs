//! Tokenizer tests: hand-computed trainings and encodings, the seed bugs fixed, property round trips,
//! streaming, JSON, errors, and a 100k-character speed bound.

use std::time::Instant;
use tinyformer::tokenizer::*;

// ---------------------------------------------------------------------------------------------
// helpers

/// xorshift64 PRNG (no extra crates).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random Unicode: ASCII, controls (incl. NUL), Latin-1, combining marks, CJK, emoji (with ZWJ and
/// variation selectors), other astral characters, and any scalar value.
fn random_unicode(rng: &mut Rng, max_len: u64) -> String {
    let len = rng.below(max_len + 1);
    let mut s = String::new();
    for _ in 0..len {
        let c = match rng.below(10) {
            0 => rng.below(0x20) as u32,            // C0 controls, incl. \0
            1 | 2 => 0x20 + rng.below(0x5f) as u32, // printable ASCII
            3 => 0x80 + rng.below(0x180) as u32,    // C1 controls, Latin-1, Latin Extended
            4 => 0x300 + rng.below(0x70) as u32,    // combining marks
            5 => 0x4e00 + rng.below(0x5200) as u32, // CJK
            6 => 0x1f300 + rng.below(0x700) as u32, // emoji
            7 => [0x200d, 0xfe0f, 0xfeff, 0xfffd, 0x7f, 0x85, 0x2028][rng.below(7) as usize],
            8 => 0x10000 + rng.below(0x100000) as u32, // any astral (4-byte)
            _ => rng.below(0x110000) as u32,           // anything (surrogates skipped below)
        };
        if let Some(ch) = char::from_u32(c) {
            s.push(ch);
        }
    }
    s
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "I",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "oil",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
    "king",
    "queen",
    "lord",
    "love",
    "thou",
    "thee",
    "thy",
    "hath",
    "doth",
    "sweet",
    "night",
    "heaven",
    "transformer",
    "attention",
    "token",
    "wonderful",
    "learning",
    "machine",
    "tomorrow",
    "1599",
    "42",
];

/// Deterministic English-like (ASCII) text of exactly `n_chars` characters.
fn english_like(seed: u64, n_chars: usize) -> String {
    let mut rng = Rng(seed);
    let mut s = String::new();
    let mut start = true;
    while s.len() < n_chars + 16 {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        if start {
            let mut cs = w.chars();
            if let Some(c) = cs.next() {
                s.extend(c.to_uppercase());
                s.push_str(cs.as_str());
            }
            start = false;
        } else {
            s.push_str(w);
        }
        match rng.below(20) {
            0 => {
                s.push_str(".\n");
                start = true;
            }
            1 => s.push_str(", "),
            2 => {
                s.push_str("! ");
                start = true;
            }
            3 => s.push_str("; "),
            _ => s.push(' '),
        }
    }
    s.truncate(n_chars);
    s
}

fn ids_of(t: &Tokenizer, text: &str) -> Vec<u32> {
    t.encode(text).ids
}

fn assert_stream_prefixes(t: &Tokenizer, ids: &[u32], expected: &str) {
    let mut sd = t.stream_decoder();
    let mut acc = String::new();
    for &id in ids {
        let chunk = sd.push(t, id).expect("valid id");
        acc.push_str(&chunk);
        assert!(expected.starts_with(&acc), "streamed text {acc:?} is not a prefix of {expected:?}");
    }
    acc.push_str(&sd.finish());
    assert_eq!(acc, expected);
}

// ---------------------------------------------------------------------------------------------
// seed_bpe

#[test]
fn seed_bpe_hand_computed_training() {
    // words: "low" x2, "lower" x1. initial symbols l o w </w> e r (6); vocab_size 9 -> 3 merges.
    // round 1: (l,o)=3 and (o,w)=3 tie -> (l,o) occurs first. round 2: (lo,w)=3. round 3: (low,</w>)=2.
    let t = train_seed_bpe("low low lower", 9);
    let merges: Vec<(String, String)> = t.merges().to_vec();
    let exp = [("l", "o"), ("lo", "w"), ("low", "</w>")];
    assert_eq!(merges, exp.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());
    // sorted by code point, <UNK> added after training (as the seed does): 9 + 1 tokens
    assert_eq!(t.vocab(), &["</w>", "<UNK>", "e", "l", "lo", "low", "low</w>", "o", "r", "w"]);
    assert_eq!(t.unk_id(), 1);
    let tok = Tokenizer::from(t);
    assert_eq!(tok.vocab_size(), 10);

    let enc = tok.encode("Low lowest");
    // low</w> | low e s t </w>, with s and t unknown
    assert_eq!(enc.ids, vec![6, 5, 2, 1, 1, 0]);
    assert_eq!(enc.unknown, vec![8, 9]);
    assert_eq!(enc.spans, vec![(0, 3), (4, 7), (7, 8), (8, 9), (9, 10), (10, 10)]);
    assert_eq!(tok.tokenize("Low lowest"), vec!["low</w>", "low", "e", "<UNK>", "<UNK>", "</w>"]);
    assert_eq!(tok.decode(&enc.ids).unwrap(), "low lowe<UNK><UNK>");

    // replaying training one merge at a time
    assert_eq!(tok.encode_with_first_n_merges("low", 0).ids, vec![3, 7, 9, 0]);
    assert_eq!(tok.encode_with_first_n_merges("low", 1).ids, vec![4, 9, 0]);
    assert_eq!(tok.encode_with_first_n_merges("low", 2).ids, vec![5, 0]);
    assert_eq!(tok.encode_with_first_n_merges("low", 3).ids, vec![6]);
    assert_eq!(tok.num_merges(), 3);
}

#[test]
fn seed_bpe_merge_does_not_cross_symbol_boundaries() {
    // words: "he" x1, "hex" x3, "e" x2. Merges: (h,e)=4, (he,x)=3 [ties (x,</w>)=3, occurs first],
    // (hex,</w>)=3, then (e,</w>)=2. The seed's str.replace("e </w>", "e</w>") would turn "he </w>" into
    // "he</w>" (gluing "he" and "</w>") and then run out of pairs; the symbol-wise merge leaves
    // "he </w>" alone, and a 5th merge (he,</w>) follows.
    let t = train_seed_bpe("he hex hex hex e e", 9);
    let exp = [("h", "e"), ("he", "x"), ("hex", "</w>"), ("e", "</w>"), ("he", "</w>")];
    assert_eq!(t.merges().to_vec(), exp.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());
    assert_eq!(t.vocab(), &["</w>", "<UNK>", "e", "e</w>", "h", "he", "he</w>", "hex", "hex</w>", "x"]);
    let tok = Tokenizer::from(t);
    // after 4 merges "he" is still "he" + "</w>"
    let four = tok.encode_with_first_n_merges("he", 4);
    assert_eq!(tok.tokenize("he"), vec!["he</w>"]);
    assert_eq!(four.ids.iter().map(|&i| tok.token_str(i).unwrap()).collect::<Vec<_>>(), vec!["he", "</w>"]);
    assert_eq!(tok.encode("e hex he").ids, vec![3, 8, 6]);
}

const SEED_DEMO_TEXT: &str = "
    hello world hello there world wonderful
    hello wonderful world this is a test
    testing testing one two three
    the quick brown fox jumps over the lazy dog
    hello again world wonderful day today
    programming is fun and wonderful
    machine learning with transformers
    ";

#[test]
fn seed_bpe_seed_demo_values() {
    // Values from the seed's Python class with its _merge_vocab replaced by a symbol-wise merge.
    let t = train_seed_bpe(SEED_DEMO_TEXT, 150);
    assert_eq!(t.vocab_size(), 136);
    assert_eq!(t.merges().len(), 108);
    let first: Vec<(String, String)> = t.merges()[..8].to_vec();
    let exp = [("w", "o"), ("h", "e"), ("e", "r"), ("i", "n"), ("d", "</w>"), ("f", "u"), ("s", "</w>"), ("g", "</w>")];
    assert_eq!(first, exp.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());
    let tok = Tokenizer::from(t);
    assert_eq!(ids_of(&tok, "hello world"), vec![37, 131]);
    assert_eq!(tok.tokenize("hello world"), vec!["hello</w>", "world</w>"]);
    assert_eq!(ids_of(&tok, "wonderful day"), vec![128, 18]);
    assert_eq!(ids_of(&tok, "unknown words here"), vec![116, 63, 47, 63, 65, 118, 64, 129, 15, 88, 33, 84, 22]);
    assert_eq!(ids_of(&tok, "Programming TRANSFORMERS"), vec![77, 113]);
    assert_eq!(tok.decode(&[77, 113]).unwrap(), "programming transformers");
    let enc = tok.encode("Zebra the 😀!");
    assert_eq!(enc.ids, vec![135, 21, 10, 85, 0, 97, 1, 1, 0]);
    assert_eq!(enc.unknown, vec![10, 11]);
    assert_eq!(tok.decode(&enc.ids).unwrap(), "zebra the <UNK><UNK>");
}

#[test]
fn seed_bpe_stream_equals_decode() {
    let tok = Tokenizer::from(train_seed_bpe(SEED_DEMO_TEXT, 120));
    let mut rng = Rng(7);
    for _ in 0..200 {
        let n = rng.below(30) as usize;
        let ids: Vec<u32> = (0..n).map(|_| rng.below(tok.vocab_size() as u64) as u32).collect();
        let full = tok.decode(&ids).unwrap();
        let mut sd = tok.stream_decoder();
        let mut acc = String::new();
        for &id in &ids {
            acc.push_str(&sd.push(&tok, id).unwrap());
        }
        acc.push_str(&sd.finish());
        assert_eq!(acc, full, "{ids:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// char_merges

fn abc_table(merges: Vec<(u32, u32, u32)>) -> Tokenizer {
    let stoi = vec![('a', 0), ('b', 1), ('c', 2), (' ', 3)];
    Tokenizer::from(CharMerges::new(stoi, merges).unwrap())
}

#[test]
fn char_merges_step_back_catches_nested_merges() {
    // (b,c)->4, (a,4)->5: "abc" -> a|bc after the merge at 1; stepping back finds (a,bc) -> [5].
    let t = abc_table(vec![(1, 2, 4), (0, 4, 5)]);
    assert_eq!(ids_of(&t, "abc"), vec![5]);
    assert_eq!(t.decode(&[5]).unwrap(), "abc");
    // greedy left to right, not by rank: (a,b) is seen first even though (b,c) has the smaller id
    let t = abc_table(vec![(1, 2, 4), (0, 1, 5)]);
    assert_eq!(ids_of(&t, "abc"), vec![5, 2]);
    // runs: (a,a)->4, (4,a)->5, (4,4)->6; values from the seed's Python class
    let t = abc_table(vec![(0, 0, 4), (4, 0, 5), (4, 4, 6)]);
    assert_eq!(ids_of(&t, "aaaaa"), vec![5, 4]);
    assert_eq!(ids_of(&t, "aaaa"), vec![5, 0]);
    assert_eq!(t.decode(&[5, 4, 6]).unwrap(), "aaaaaaaaa");
    assert_eq!(t.encode("aaaaa").spans, vec![(0, 3), (3, 5)]);
    // only the first merge
    assert_eq!(t.encode_with_first_n_merges("aaaaa", 1).ids, vec![4, 4, 0]);
}

#[test]
fn char_merges_unknown_chars_map_to_space_and_are_flagged() {
    let t = abc_table(vec![(3, 1, 4)]); // " b"
    let enc = t.encode("a☃b c");
    // ☃ -> space id 3, which then merges with b into " b" (as the seed does)
    assert_eq!(enc.ids, vec![0, 4, 3, 2]);
    assert_eq!(enc.unknown, vec![1]);
    assert_eq!(enc.spans, vec![(0, 1), (1, 5), (5, 6), (6, 7)]);
    assert_eq!(t.decode(&enc.ids).unwrap(), "a b c");
    assert_eq!(t.token_str(4).unwrap(), "·b");
}

#[test]
fn char_merges_hand_computed_training() {
    // chars sorted: ' '=0, a=1, b=2 ; "ab ab ab" = [1,2,0,1,2,0,1,2]
    // counts: (1,2)=3, (2,0)=2, (0,1)=2 -> 3=(1,2). Now [3,0,3,0,3]: (3,0)=2,(0,3)=2 -> tie -> smaller
    // pair (0,3) -> 4. Now [3,4,4]: (3,4)=1,(4,4)=1 -> (3,4) -> 5. vocab 6.
    let t = train_char_merges("ab ab ab", 6).unwrap();
    assert_eq!(t.stoi(), vec![(' ', 0), ('a', 1), ('b', 2)]);
    assert_eq!(t.merges(), &[(1, 2, 3), (0, 3, 4), (3, 4, 5)]);
    let tok = Tokenizer::from(t);
    assert_eq!(tok.vocab_size(), 6);
    assert_eq!(ids_of(&tok, "ab ab ab"), vec![5, 4]);
    assert_eq!(tok.decode(&[5, 4]).unwrap(), "ab ab ab");
    assert!(train_char_merges("abcdef", 3).is_err());
}

#[test]
fn char_merges_round_trip_on_training_chars() {
    let text = english_like(11, 20_000);
    let tok = Tokenizer::from(train_char_merges(&text, 300).unwrap());
    assert_eq!(tok.vocab_size(), 300);
    let sample = english_like(12, 5_000);
    let enc = tok.encode(&sample);
    assert!(enc.unknown.is_empty());
    assert!(enc.ids.len() < sample.len() / 2, "merges should compress: {} ids", enc.ids.len());
    assert_eq!(tok.decode(&enc.ids).unwrap(), sample);
    assert_stream_prefixes(&tok, &enc.ids, &sample);
}

// ---------------------------------------------------------------------------------------------
// byte_bpe

#[test]
fn byte_bpe_hand_computed_training() {
    // "aaabdaaabac": (a,a)=4 -> 256; then (a,b)=2 and (256,a)=2 tie -> smaller (97,98) -> 257;
    // then (256,257)=2 -> 258; then all 1 -> smallest (97,99) -> 259.
    let t = train_byte_bpe("aaabdaaabac", 260, PreSplit::Words).unwrap();
    assert_eq!(t.merges(), &[(97, 97), (97, 98), (256, 257), (97, 99)]);
    let tok = Tokenizer::from(t);
    assert_eq!(ids_of(&tok, "aaabdaaabac"), vec![258, 100, 258, 259]);
    assert_eq!(ids_of(&tok, "aaaa"), vec![256, 256]);
    assert_eq!(ids_of(&tok, "abab"), vec![257, 257]);
    assert_eq!(ids_of(&tok, "aaab"), vec![258]);
    // by rank: (a,a) before (a,b) in "aab" -> [256, 98]
    assert_eq!(ids_of(&tok, "aab"), vec![256, 98]);
    assert_eq!(tok.encode_with_first_n_merges("aaabdaaabac", 2).ids, vec![256, 257, 100, 256, 257, 97, 99]);
    assert_eq!(tok.token_str(258).unwrap(), "aaab");
}

#[test]
fn byte_bpe_pre_split() {
    let chunks: Vec<&str> = {
        let s = "hi  there, 42!\n\nok";
        pre_split_chunks(s, PreSplit::Words).into_iter().map(|(a, b)| &s[a..b]).collect()
    };
    assert_eq!(chunks, vec!["hi", " ", " there", ",", " 42", "!", "\n\n", "ok"]);
    assert_eq!(pre_split_chunks("a b", PreSplit::None), vec![(0, 3)]);
    // merges never cross a chunk: "a a a a" trained with words never merges "a " (space goes with the
    // following word), with none it does.
    let w = train_byte_bpe("a a a a", 258, PreSplit::Words).unwrap();
    assert_eq!(w.merges(), &[(32, 97)]);
    let n = train_byte_bpe("a a a a", 258, PreSplit::None).unwrap();
    // "a a a a" -> [a, ' a', ' a', ' a']: (256,256) now occurs twice (overlapping), (97,256) once
    assert_eq!(n.merges(), &[(32, 97), (256, 256)]);
}

#[test]
fn byte_bpe_random_unicode_round_trips() {
    let mut train_text = english_like(3, 30_000);
    train_text.push_str("😀😃😄 日本語のテキスト 👩‍👩‍👧 é é ñ ü \u{0}\u{1}\t\r\n Ωμέγα 🇫🇷");
    for mode in [PreSplit::Words, PreSplit::None] {
        let tok = Tokenizer::from(train_byte_bpe(&train_text, 512, mode).unwrap());
        assert_eq!(tok.vocab_size(), 512);
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..3000 {
            let s = random_unicode(&mut rng, 24);
            let enc = tok.encode(&s);
            assert!(enc.unknown.is_empty());
            assert_eq!(enc.spans.len(), enc.ids.len());
            assert_eq!(tok.decode(&enc.ids).unwrap(), s, "round trip of {s:?}");
            assert_stream_prefixes(&tok, &enc.ids, &s);
        }
        // the training text itself, long
        let enc = tok.encode(&train_text);
        assert_eq!(tok.decode(&enc.ids).unwrap(), train_text);
    }
}

#[test]
fn empty_input() {
    let kinds: Vec<Tokenizer> = vec![
        train_seed_bpe(SEED_DEMO_TEXT, 60).into(),
        train_char_merges("hello world", 12).unwrap().into(),
        train_byte_bpe("hello world", 260, PreSplit::Words).unwrap().into(),
        train_seed_bpe("", 10).into(),
        train_char_merges("", 10).unwrap().into(),
        train_byte_bpe("", 300, PreSplit::None).unwrap().into(),
    ];
    for t in &kinds {
        let e = t.encode("");
        assert!(e.ids.is_empty() && e.spans.is_empty() && e.unknown.is_empty(), "{}", t.kind());
        assert_eq!(t.decode(&[]).unwrap(), "");
        let mut sd = t.stream_decoder();
        assert_eq!(sd.finish(), "");
    }
    // whitespace only
    assert!(kinds[0].encode(" \n\t ").ids.is_empty());
}

#[test]
fn streaming_never_splits_a_character() {
    // no merges: every byte is a token, so a 4-byte emoji takes 4 pushes
    let tok = Tokenizer::from(ByteBpe::new(vec![], PreSplit::Words).unwrap());
    let text = "a😀é日";
    let ids = ids_of(&tok, text);
    assert_eq!(ids.len(), text.len());
    let mut sd = tok.stream_decoder();
    let chunks: Vec<String> = ids.iter().map(|&id| sd.push(&tok, id).unwrap()).collect();
    assert_eq!(chunks, vec!["a", "", "", "", "😀", "", "é", "", "", "日"]);
    assert_eq!(sd.finish(), "");

    // merges that end in the middle of an emoji: (F0 9F) and (98 80) are tokens
    let tok = Tokenizer::from(ByteBpe::new(vec![(0xF0, 0x9F), (0x98, 0x80)], PreSplit::None).unwrap());
    let ids = ids_of(&tok, "😀😀");
    assert_eq!(ids, vec![256, 257, 256, 257]);
    let mut sd = tok.stream_decoder();
    let chunks: Vec<String> = ids.iter().map(|&id| sd.push(&tok, id).unwrap()).collect();
    assert_eq!(chunks, vec!["", "😀", "", "😀"]);
    assert_eq!(tok.token_str(256).unwrap(), "<0xF0><0x9F>");

    // a truly incomplete tail becomes one U+FFFD at finish, like decode
    let mut sd = tok.stream_decoder();
    assert_eq!(sd.push(&tok, 256).unwrap(), "");
    assert_eq!(sd.pending_len(), 2);
    assert_eq!(sd.finish(), "\u{FFFD}");
    assert_eq!(tok.decode(&[256]).unwrap(), "\u{FFFD}");

    // random byte soup: stream == lossy decode, chunk by chunk
    let mut rng = Rng(99);
    for _ in 0..2000 {
        let n = rng.below(12) as usize;
        let ids: Vec<u32> = (0..n).map(|_| rng.below(258) as u32).collect();
        let full = tok.decode(&ids).unwrap();
        let mut sd = tok.stream_decoder();
        let mut acc = String::new();
        for &id in &ids {
            acc.push_str(&sd.push(&tok, id).unwrap());
        }
        acc.push_str(&sd.finish());
        assert_eq!(acc, full, "{ids:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// JSON, errors

#[test]
fn json_round_trip_keeps_encodings() {
    let text = english_like(5, 20_000);
    let kinds: Vec<Tokenizer> = vec![
        train_seed_bpe(&text, 200).into(),
        train_char_merges(&text, 200).unwrap().into(),
        train_byte_bpe(&text, 400, PreSplit::Words).unwrap().into(),
        train_byte_bpe(&text, 300, PreSplit::None).unwrap().into(),
    ];
    let samples = [english_like(6, 2_000), "Ünïcödé 😀 text\twith\ncontrols\u{0}".to_string(), String::new()];
    for t in &kinds {
        let json = t.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["kind"], t.kind());
        let back = Tokenizer::from_json(&json).unwrap();
        assert_eq!(back.kind(), t.kind());
        assert_eq!(back.vocab_size(), t.vocab_size());
        assert_eq!(back.to_json(), json);
        for s in &samples {
            assert_eq!(back.encode(s), t.encode(s), "{}", t.kind());
        }
        for id in 0..t.vocab_size() as u32 {
            assert_eq!(back.token_str(id).unwrap(), t.token_str(id).unwrap());
        }
    }
}

#[test]
fn json_shapes() {
    let t = Tokenizer::from(train_byte_bpe("aaabdaaabac", 258, PreSplit::Words).unwrap());
    let v: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
    assert_eq!(v, serde_json::json!({"kind": "byte_bpe", "pre_split": "words", "merges": [[97, 97], [97, 98]]}));
    let t = abc_table(vec![(1, 2, 4)]);
    let v: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
    assert_eq!(v, serde_json::json!({"kind": "char_merges", "stoi": {"a": 0, "b": 1, "c": 2, " ": 3}, "merges": [[1, 2, 4]]}));
    let t = Tokenizer::from(train_seed_bpe("ab ab", 4));
    let v: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"kind": "seed_bpe", "vocab": ["</w>", "<UNK>", "a", "ab", "b"],
            "merges": [["a", "b"]], "unk_token": "<UNK>", "end_token": "</w>"})
    );
    // a hand-written seed_bpe with defaults for unk/end tokens
    let t = Tokenizer::from_json(r#"{"kind":"seed_bpe","vocab":["<UNK>","a","b","ab","</w>"],"merges":[["a","b"]]}"#).unwrap();
    assert_eq!(ids_of(&t, "ab ba"), vec![3, 4, 2, 1, 4]);
}

#[test]
fn malformed_json_is_a_clear_error() {
    let cases: &[(&str, &str)] = &[
        ("not json", "malformed"),
        ("[1,2]", "object"),
        (r#"{"merges":[]}"#, "kind"),
        (r#"{"kind":"wordpiece"}"#, "wordpiece"),
        (r#"{"kind":"byte_bpe"}"#, "merges"),
        (r#"{"kind":"byte_bpe","merges":[[97,300]]}"#, "300"),
        (r#"{"kind":"byte_bpe","merges":[[97,97],[97,97]]}"#, "twice"),
        (r#"{"kind":"byte_bpe","merges":[["a",1]]}"#, "byte_bpe"),
        (r#"{"kind":"byte_bpe","pre_split":"gpt4","merges":[]}"#, "gpt4"),
        (r#"{"kind":"char_merges","stoi":{"ab":0},"merges":[]}"#, "exactly one character"),
        (r#"{"kind":"char_merges","stoi":{"a":0,"b":0},"merges":[]}"#, "twice"),
        (r#"{"kind":"char_merges","stoi":{"a":0},"merges":[[0,7,1]]}"#, "neither"),
        (r#"{"kind":"char_merges","stoi":{"a":0},"merges":[[0,2,1],[0,1,2]]}"#, "cycle"),
        (r#"{"kind":"char_merges","stoi":{"a":4000000000},"merges":[]}"#, "too large"),
        (r#"{"kind":"seed_bpe","vocab":["a"],"merges":[]}"#, "<UNK>"),
        (r#"{"kind":"seed_bpe","vocab":["<UNK>","a"],"merges":[["a","a"]]}"#, "\"aa\""),
        (r#"{"kind":"seed_bpe","vocab":["<UNK>","<UNK>"],"merges":[]}"#, "twice"),
    ];
    for (json, needle) in cases {
        let err = Tokenizer::from_json(json).expect_err(json);
        let msg = err.to_string();
        assert!(msg.contains(needle), "error for {json}: {msg:?} should mention {needle:?}");
    }
    // exponential expansion bombs are refused, not allocated
    let mut merges = vec![(97u32, 97u32)];
    for k in 0..40u32 {
        merges.push((256 + k, 256 + k));
    }
    assert!(ByteBpe::new(merges, PreSplit::None).is_err());
}

#[test]
fn out_of_range_ids_are_errors() {
    let kinds: Vec<Tokenizer> = vec![
        train_seed_bpe(SEED_DEMO_TEXT, 60).into(),
        train_char_merges("hello world", 12).unwrap().into(),
        train_byte_bpe("hello world", 260, PreSplit::Words).unwrap().into(),
    ];
    for t in &kinds {
        let n = t.vocab_size() as u32;
        for bad in [n, n + 1, 99_999, u32::MAX] {
            let err = t.decode(&[0, bad]).expect_err("out of range");
            let msg = err.to_string();
            assert!(msg.contains(&bad.to_string()), "{msg}");
            assert!(msg.contains(&n.to_string()), "{msg}");
            assert_eq!(err, TokenizerError::IdOutOfRange { id: bad, vocab_size: n as usize });
            assert!(t.token_str(bad).is_err());
            let mut sd = t.stream_decoder();
            assert!(sd.push(t, bad).is_err());
        }
        assert!(t.decode(&[n - 1]).is_ok());
    }
    // a gap in a char_merges table
    let t = Tokenizer::from(CharMerges::new(vec![('a', 0), ('b', 2)], vec![]).unwrap());
    assert_eq!(t.vocab_size(), 3);
    assert_eq!(t.decode(&[1]).unwrap_err(), TokenizerError::UnassignedId { id: 1, vocab_size: 3 });
    assert!(t.decode(&[1]).unwrap_err().to_string().contains("token id 1"));
    // a stream decoder fed with another kind
    let mut sd = kinds[0].stream_decoder();
    assert!(sd.push(&kinds[2], 0).is_err());
}

#[test]
fn token_str_shows_whitespace() {
    let tok = Tokenizer::from(ByteBpe::new(vec![(32, 116), (10, 10)], PreSplit::Words).unwrap());
    assert_eq!(tok.token_str(32).unwrap(), "·");
    assert_eq!(tok.token_str(10).unwrap(), "⏎");
    assert_eq!(tok.token_str(9).unwrap(), "→");
    assert_eq!(tok.token_str(0).unwrap(), "␀");
    assert_eq!(tok.token_str(256).unwrap(), "·t");
    assert_eq!(tok.token_str(257).unwrap(), "⏎⏎");
    assert_eq!(tok.token_str(0xE9).unwrap(), "<0xE9>");
    assert_eq!(visible("a b\nc"), "a·b⏎c");
}

// ---------------------------------------------------------------------------------------------
// speed: 100k characters well under a second (debug and release)

fn time_encode(t: &Tokenizer, text: &str) -> f64 {
    let t0 = Instant::now();
    let enc = t.encode(text);
    let s = t0.elapsed().as_secs_f64();
    assert!(!enc.ids.is_empty());
    s
}

#[test]
fn encode_100k_chars_under_a_second() {
    let train = english_like(21, 200_000);
    let text = english_like(22, 100_000);
    assert_eq!(text.chars().count(), 100_000);
    let long_word: String = "abcab".repeat(20_000); // one 100k-char word / chunk
    let run: String = "e".repeat(100_000);
    let kinds: Vec<Tokenizer> = vec![
        train_seed_bpe(&train, 800).into(),
        train_char_merges(&train, 512).unwrap().into(),
        train_byte_bpe(&train, 512, PreSplit::Words).unwrap().into(),
        train_byte_bpe(&train, 512, PreSplit::None).unwrap().into(),
    ];
    for t in &kinds {
        for (name, s) in [("english", &text), ("one long word", &long_word), ("one char run", &run)] {
            let secs = time_encode(t, s);
            eprintln!("encode 100k chars ({name}) with {}: {:.1} ms", t.kind(), secs * 1e3);
            assert!(secs < 1.0, "{} took {secs:.3} s on {name}", t.kind());
        }
        let ids = t.encode(&text).ids;
        let t0 = Instant::now();
        let out = t.decode(&ids).unwrap();
        assert!(t0.elapsed().as_secs_f64() < 1.0);
        if t.kind() != "seed_bpe" {
            assert_eq!(out, text);
        }
    }
}

#[test]
fn mutated_json_never_panics() {
    let text = english_like(8, 3_000);
    let sources: Vec<String> = vec![
        Tokenizer::from(train_seed_bpe(&text, 80)).to_json(),
        Tokenizer::from(train_char_merges(&text, 80).unwrap()).to_json(),
        Tokenizer::from(train_byte_bpe(&text, 300, PreSplit::Words).unwrap()).to_json(),
    ];
    let alphabet = b"0123456789[]{}\",:-ae ";
    let mut rng = Rng(2024);
    for round in 0..3000 {
        let mut b = sources[round % 3].clone().into_bytes();
        for _ in 0..1 + rng.below(4) {
            if b.is_empty() {
                break;
            }
            let at = rng.below(b.len() as u64) as usize;
            match rng.below(3) {
                0 => {
                    b.remove(at);
                }
                1 => b[at] = alphabet[rng.below(alphabet.len() as u64) as usize],
                _ => b.insert(at, alphabet[rng.below(alphabet.len() as u64) as usize]),
            }
        }
        let Ok(s) = String::from_utf8(b) else { continue };
        if let Ok(t) = Tokenizer::from_json(&s) {
            let enc = t.encode("Hello, world! 😀 ünïcode\n");
            let _ = t.decode(&enc.ids);
            let ids: Vec<u32> = (0..8).map(|_| rng.below(t.vocab_size() as u64 + 2) as u32).collect();
            let _ = t.decode(&ids);
            let mut sd = t.stream_decoder();
            for &id in &ids {
                let _ = sd.push(&t, id);
            }
            let _ = sd.finish();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// chars (character table with pad/bos/eos, for the date-translation encoder-decoder)

const DATE_ALPHABET: &str = " ,-0123456789ADFJMNOSabcdeghilmnoprstuvy";

fn date_chars() -> Tokenizer {
    Tokenizer::from(Chars::from_alphabet(DATE_ALPHABET).unwrap())
}

#[test]
fn chars_round_trip_date() {
    let t = date_chars();
    assert_eq!(t.kind(), "chars");
    assert_eq!(t.vocab_size(), 3 + DATE_ALPHABET.chars().count());
    assert_eq!(t.num_merges(), 0);
    assert_eq!(t.special_ids(), Some((0, 1, 2)));
    let text = "March 3, 2021";
    let enc = t.encode(text);
    assert_eq!(enc.ids.len(), text.chars().count());
    assert!(enc.unknown.is_empty());
    // ids follow the table: "M" is at 3 + its index in the alphabet.
    assert_eq!(enc.ids[0], 3 + DATE_ALPHABET.find('M').unwrap() as u32);
    assert!(enc.ids.iter().all(|&id| id >= 3), "encode never produces specials");
    let spans: Vec<(usize, usize)> = (0..text.len()).map(|i| (i, i + 1)).collect();
    assert_eq!(enc.spans, spans);
    assert_eq!(t.decode(&enc.ids).unwrap(), text);
    assert_eq!(t.encode_with_first_n_merges(text, 0), enc);
    assert_eq!(t.tokenize(text).concat(), text);
    // streaming equals decode
    let mut sd = t.stream_decoder();
    let mut out = String::new();
    let ids: Vec<u32> = [1].into_iter().chain(enc.ids.iter().copied()).chain([2, 0, 0]).collect();
    for &id in &ids {
        out.push_str(&sd.push(&t, id).unwrap());
    }
    out.push_str(&sd.finish());
    assert_eq!(out, text);
}

#[test]
fn chars_unknown_characters_are_flagged() {
    // no unk: dropped
    let t = date_chars();
    let text = "Mär 3!"; // 'ä' (2 bytes) and '!' are not in the table
    let enc = t.encode(text);
    assert_eq!(enc.unknown, vec![1, 5]);
    assert_eq!(enc.ids.len(), 4);
    assert_eq!(enc.spans, vec![(0, 1), (3, 4), (4, 5), (5, 6)]);
    assert_eq!(t.decode(&enc.ids).unwrap(), "Mr 3");
    // with unk: mapped to it
    let itos: Vec<String> = ["<pad>", "<bos>", "<eos>", "<unk>", "M", "r", " ", "3"].iter().map(|s| s.to_string()).collect();
    let t = Tokenizer::from(Chars::new(itos, 0, 1, 2, Some(3)).unwrap());
    let enc = t.encode(text);
    assert_eq!(enc.unknown, vec![1, 5]);
    assert_eq!(enc.ids, vec![4, 3, 5, 6, 7, 3]);
    assert_eq!(enc.spans, vec![(0, 1), (1, 3), (3, 4), (4, 5), (5, 6), (6, 7)]);
    assert_eq!(t.decode(&enc.ids).unwrap(), "M<unk>r 3<unk>");
    // "<" etc. are not characters of the table just because a special's display string has them
    assert_eq!(t.encode("<").unknown, vec![0]);
}

#[test]
fn chars_specials_decode_to_empty() {
    let t = date_chars();
    assert_eq!(t.decode(&[0, 1, 2, 0]).unwrap(), "");
    let m = t.encode("M").ids[0];
    assert_eq!(t.decode(&[1, m, 2, 0, 0]).unwrap(), "M");
    assert_eq!(t.token_str(0).unwrap(), "<pad>");
    assert_eq!(t.token_str(1).unwrap(), "<bos>");
    assert_eq!(t.token_str(2).unwrap(), "<eos>");
    assert_eq!(t.token_str(3).unwrap(), "·"); // ' ' made visible
    assert_eq!(t.token_str(m).unwrap(), "M");
    // specials need not be at 0, 1, 2
    let itos: Vec<String> = ["a", "b", "PAD", "BOS", "EOS"].iter().map(|s| s.to_string()).collect();
    let t = Tokenizer::from(Chars::new(itos, 2, 3, 4, None).unwrap());
    assert_eq!(t.special_ids(), Some((2, 3, 4)));
    assert_eq!(t.encode("ab").ids, vec![0, 1]);
    assert_eq!(t.decode(&[3, 0, 1, 4, 2]).unwrap(), "ab");
}

#[test]
fn chars_out_of_range_ids_are_errors() {
    let t = date_chars();
    let n = t.vocab_size();
    let err = t.decode(&[3, n as u32]).unwrap_err();
    assert_eq!(err, TokenizerError::IdOutOfRange { id: n as u32, vocab_size: n });
    assert!(matches!(t.token_str(u32::MAX), Err(TokenizerError::IdOutOfRange { .. })));
    let mut sd = t.stream_decoder();
    assert!(matches!(sd.push(&t, n as u32), Err(TokenizerError::IdOutOfRange { .. })));
    // special ids outside the table are rejected
    assert!(matches!(
        Tokenizer::from_json(r#"{"kind":"chars","itos":["<pad>","a"],"pad":0,"bos":1,"eos":2}"#),
        Err(TokenizerError::Invalid(_))
    ));
    assert!(matches!(
        Tokenizer::from_json(r#"{"kind":"chars","itos":["<pad>","<bos>","<eos>","a","a"],"pad":0,"bos":1,"eos":2}"#),
        Err(TokenizerError::Invalid(_))
    ));
    assert!(matches!(Tokenizer::from_json(r#"{"kind":"chars","itos":["<pad>"],"pad":0,"bos":0}"#), Err(TokenizerError::Json(_))));
}

#[test]
fn chars_json_round_trip() {
    let json = r#"{"kind": "chars", "itos": ["<pad>", "<bos>", "<eos>", " ", ",", "0", "1", "2", "3", "M", "a", "c", "h", "r"],
                   "pad": 0, "bos": 1, "eos": 2, "comment": "unknown fields are ignored", "version": 3}"#;
    let t = Tokenizer::from_json(json).unwrap();
    assert_eq!(t.kind(), "chars");
    assert_eq!(t.vocab_size(), 14);
    assert!(t.target_tokenizer().is_none());
    let text = "March 3, 2021";
    let enc = t.encode(text);
    assert!(enc.unknown.is_empty());
    assert_eq!(t.decode(&enc.ids).unwrap(), text);
    let back = Tokenizer::from_json(&t.to_json()).unwrap();
    assert_eq!(back.to_json_value(), t.to_json_value());
    assert_eq!(back.encode(text), enc);
    let v = t.to_json_value();
    assert_eq!(v["kind"], "chars");
    assert_eq!(v["itos"][9], "M");
    assert_eq!((v["pad"].as_u64(), v["bos"].as_u64(), v["eos"].as_u64()), (Some(0), Some(1), Some(2)));
    assert!(v.get("unk").is_none() && v.get("target").is_none() && v.get("comment").is_none());
    // with unk
    let t = Tokenizer::from_json(r#"{"kind":"chars","itos":["<pad>","<bos>","<eos>","?","a"],"pad":0,"bos":1,"eos":2,"unk":3}"#).unwrap();
    let back = Tokenizer::from_json(&t.to_json()).unwrap();
    assert_eq!(back.to_json_value()["unk"], 3);
    assert_eq!(back.encode("ab").ids, vec![4, 3]);
}

#[test]
fn chars_target_table() {
    let json = r#"{"kind": "chars", "itos": ["<pad>", "<bos>", "<eos>", " ", ",", "0", "1", "2", "3", "M", "a", "c", "h", "r"],
                   "pad": 0, "bos": 1, "eos": 2,
                   "target": {"itos": ["<pad>", "<bos>", "<eos>", "-", "0", "1", "2", "3"], "pad": 0, "bos": 1, "eos": 2, "extra": true}}"#;
    let t = Tokenizer::from_json(json).unwrap();
    assert_eq!(t.vocab_size(), 14);
    let tgt = t.target_tokenizer().expect("target table");
    assert_eq!(tgt.kind(), "chars");
    assert_eq!(tgt.vocab_size(), 8);
    assert_eq!(tgt.special_ids(), Some((0, 1, 2)));
    assert!(tgt.target_tokenizer().is_none());
    let enc = tgt.encode("2021-03-03");
    assert!(enc.unknown.is_empty());
    assert_eq!(enc.ids, vec![6, 4, 6, 5, 3, 4, 7, 3, 4, 7]);
    assert_eq!(tgt.decode(&[1, 6, 4, 6, 5, 3, 4, 7, 3, 4, 7, 2, 0]).unwrap(), "2021-03-03");
    // the source table does not know '-', the target does not know 'M'
    assert_eq!(t.encode("-").unknown, vec![0]);
    assert_eq!(tgt.encode("M").unknown, vec![0]);
    // Chars::target: the separate table when present, else the same table
    if let Tokenizer::Chars(c) = &t {
        assert!(c.has_target());
        assert_eq!(c.target().vocab_size(), 8);
    } else {
        panic!("expected chars");
    }
    let plain = Chars::from_alphabet("ab").unwrap();
    assert_eq!(plain.target().vocab_size(), plain.vocab_size());
    // round trip keeps the target
    let back = Tokenizer::from_json(&t.to_json()).unwrap();
    assert_eq!(back.to_json_value(), t.to_json_value());
    assert_eq!(back.target_tokenizer().unwrap().vocab_size(), 8);
    // a bad target table is an error
    let bad =
        r#"{"kind":"chars","itos":["<pad>","<bos>","<eos>"],"pad":0,"bos":1,"eos":2,"target":{"itos":["x"],"pad":0,"bos":1,"eos":2}}"#;
    assert!(matches!(Tokenizer::from_json(bad), Err(TokenizerError::Invalid(_))));
}
