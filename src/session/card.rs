//! The model card: what `info` and the page show about the loaded model and its tokenizer.

use serde::Serialize;

use super::{Origin, Session};
use crate::model::config::{Arch, ModelConfig};
use crate::model::Backend;
use crate::tokenizer::Tokenizer;

/// A tokenizer in one line: what `info` and the model card show.
#[derive(Clone, Debug, Serialize)]
pub struct TokenizerCard {
    pub kind: &'static str,
    pub vocab_size: usize,
    pub merges: usize,
}

impl From<&Tokenizer> for TokenizerCard {
    fn from(t: &Tokenizer) -> Self {
        TokenizerCard { kind: t.kind(), vocab_size: t.vocab_size(), merges: t.num_merges() }
    }
}

/// The model card: what the page shows about the loaded model.
#[derive(Clone, Debug, Serialize)]
pub struct Card<'a> {
    pub arch: &'static str,
    pub parameters: u64,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub d_model: usize,
    /// H: d_ff, or the Llama's hidden size
    pub d_ff: usize,
    pub experts: Option<usize>,
    pub top_k: Option<usize>,
    /// the decoder's input ids and the logits
    pub vocab_size: usize,
    pub src_vocab_size: usize,
    pub tgt_vocab_size: usize,
    pub context: usize,
    pub file_size: usize,
    pub tokenizer: Option<TokenizerCard>,
    pub backend: &'static str,
    pub config: &'a ModelConfig,
    /// the files it came from (format, declared architecture)
    pub origin: &'a Origin,
    /// the ids that end a generation
    pub eos: &'a [u32],
}

impl Session {
    pub fn card(&self) -> Card<'_> {
        with_model!(&self.engine, |b, m| {
            let c = &m.cfg;
            Card {
                arch: c.arch.as_str(),
                parameters: m.params,
                layers: c.num_layers,
                heads: c.num_heads,
                kv_heads: c.num_kv_heads,
                head_dim: c.head_dim(),
                d_model: c.d_model,
                d_ff: if c.arch == Arch::Llama { c.llama_hidden_dim() } else { c.d_ff },
                experts: c.moe.as_ref().map(|m| m.num_experts),
                top_k: c.moe.as_ref().map(|m| m.top_k),
                vocab_size: m.in_vocab(),
                src_vocab_size: c.src_vocab_size,
                tgt_vocab_size: c.tgt_vocab_size,
                context: c.max_seq_len,
                file_size: self.file_size,
                tokenizer: self.text.tokenizer.as_ref().map(TokenizerCard::from),
                backend: b.kind(),
                config: c,
                origin: &self.origin,
                eos: &self.eos,
            }
        })
    }
}
