//! The BPE workbench's vocabulary size: `train_seed_bpe_with_report` says why the learned vocabulary
//! differs from the size asked (the page shows `explain()`): <UNK> added after the merges (120 asked
//! gives 121 on the page's sample text), training out of pairs (5000 asked stops at 272), too few
//! asked for any merge. The report's counts add up to the real vocabulary.

use tinyformer::tokenizer::{train_seed_bpe, train_seed_bpe_with_report};

/// The workbench's sample text (www/views/bpe.js).
const SONNET: &str = "Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date;
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance or nature's changing course untrimm'd;
But thy eternal summer shall not fade,
Nor lose possession of that fair thou ow'st;
Nor shall Death brag thou wander'st in his shade,
When in eternal lines to time thou grow'st:
So long as men can breathe or eyes can see,
So long lives this, and this gives life to thee.";

fn check_sum(r: &tinyformer::tokenizer::SeedBpeReport) {
    assert_eq!(r.initial_symbols + r.merges_learned - r.duplicate_merges + 1, r.vocab_size, "{r:?}");
}

#[test]
fn asked_120_gives_121_because_unk_comes_after_the_merges() {
    let (t, r) = train_seed_bpe_with_report(SONNET, 120);
    println!("{r:?}");
    assert_eq!(t.vocab_size(), 121);
    assert_eq!(r.vocab_size, 121);
    assert_eq!(r.merges_learned, r.merges_asked);
    assert_eq!(r.merges_asked, 120 - r.initial_symbols);
    check_sum(&r);
    let e = r.explain();
    assert!(e.starts_with("The vocabulary has 121 tokens, not 120:"), "{e}");
    assert!(e.contains("<UNK> is added afterwards: one more than asked"), "{e}");
    // The report does not change the training: the same tokenizer as train_seed_bpe.
    assert_eq!(t.merges(), train_seed_bpe(SONNET, 120).merges());
}

#[test]
fn asked_5000_stops_when_no_pair_is_left() {
    let (t, r) = train_seed_bpe_with_report(SONNET, 5000);
    println!("{r:?}");
    assert_eq!(t.vocab_size(), 272);
    assert!(r.merges_learned < r.merges_asked);
    check_sum(&r);
    // Every word is one token now: encoding any word of the text gives exactly one id.
    for w in ["summer's", "temperate:", "untrimm'd;"] {
        assert_eq!(t.encode(w).ids.len(), 1, "{w}");
    }
    let e = r.explain();
    assert!(e.contains(&format!("Training stopped after {} of the {} merges", r.merges_learned, r.merges_asked)), "{e}");
    assert!(e.contains("every word of the text is one token"), "{e}");
}

#[test]
fn the_counts_add_up_for_every_size() {
    // Every size from 1 up, on a small text that runs out of pairs: the report's sum is the real
    // vocabulary, and the explanation is empty exactly when the size is the one asked.
    let text = "aab aab ab ab a a b b";
    for asked in 1..30 {
        let (t, r) = train_seed_bpe_with_report(text, asked);
        check_sum(&r);
        assert_eq!(t.vocab_size(), r.vocab_size);
        assert_eq!(r.explain().is_empty(), r.vocab_size == asked, "asked {asked}: {r:?}");
    }
    // Asked fewer than the symbols: no merge, and the page says so.
    let (_, r) = train_seed_bpe_with_report(text, 2);
    assert_eq!(r.merges_learned, 0);
    assert!(r.explain().contains("no merge was learned"), "{}", r.explain());
}

#[test]
fn exactly_the_size_asked_needs_no_explanation() {
    // A size the seed's rule reaches exactly: asked = symbols + merges + 1 only when a merge repeats a
    // token; otherwise the explanation is never empty, and an empty one always means an exact size.
    for asked in [10, 40, 80, 150, 260] {
        let (_, r) = train_seed_bpe_with_report(SONNET, asked);
        check_sum(&r);
        assert_eq!(r.explain().is_empty(), r.vocab_size == asked);
    }
}
