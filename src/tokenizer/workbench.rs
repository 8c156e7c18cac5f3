//! The page's BPE workbench: the seed's BPE trained on a pasted text, and a sentence tokenized after
//! each number of merges, within bounds that keep the answer small.

use serde::Serialize;

use super::Tokenizer;
use crate::error::{Result, TfError};

/// The BPE workbench's bounds: training text (UTF-8 bytes), sentence (characters), vocabulary size.
/// The answer holds (merges + 1) x pieces strings, so the sentence bound keeps it under ~1M strings;
/// training is O(N log N) in the text (tokenizer/train.rs). www/worker.js checks the same numbers.
pub const BPE_MAX_TEXT_BYTES: usize = 1 << 20;
pub const BPE_MAX_SENTENCE_CHARS: usize = 200;
pub const BPE_MAX_VOCAB: u32 = 5000;

/// The page's BPE workbench: the seed's BPE trained on a text, and a sentence after each merge.
#[derive(Debug, Serialize)]
pub struct BpeWorkbench {
    pub merges: Vec<(String, String)>,
    /// steps[n] = the sentence's pieces after the first n merges
    pub steps: Vec<Vec<String>>,
    pub vocab_size: usize,
    pub report: crate::tokenizer::SeedBpeReport,
    /// why vocab_size is not the size asked ("" if it is)
    pub explanation: String,
}

/// Trains the seed's BPE (lowercase words with </w>) on `text` to `vocab_size`, then tokenizes
/// `sentence` after each number of merges, within the bounds above.
pub fn bpe_workbench(text: &str, vocab_size: u32, sentence: &str) -> Result<BpeWorkbench> {
    if text.trim().is_empty() {
        return Err(TfError::Input("paste some text to train on".into()));
    }
    if !(1..=BPE_MAX_VOCAB).contains(&vocab_size) {
        return Err(TfError::Input(format!("vocabulary size must be between 1 and {BPE_MAX_VOCAB}, got {vocab_size}")));
    }
    if text.len() > BPE_MAX_TEXT_BYTES {
        return Err(TfError::Input(format!("the training text is limited to {} MB in the page", BPE_MAX_TEXT_BYTES >> 20)));
    }
    if sentence.chars().count() > BPE_MAX_SENTENCE_CHARS {
        return Err(TfError::Input(format!("the sentence is limited to {BPE_MAX_SENTENCE_CHARS} characters")));
    }
    let (bpe, report) = crate::tokenizer::train_seed_bpe_with_report(text, vocab_size as usize);
    let merges: Vec<(String, String)> = bpe.merges().to_vec();
    let tok = Tokenizer::from(bpe);
    let steps = (0..=merges.len())
        .map(|n| tok.encode_with_first_n_merges(sentence, n).ids.iter().map(|&i| tok.token_str(i).unwrap_or_default()).collect())
        .collect();
    Ok(BpeWorkbench { merges, steps, vocab_size: tok.vocab_size(), explanation: report.explain(), report })
}
