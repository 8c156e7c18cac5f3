//! A fresh model to train: the config of each trainable architecture from its sizes (the CLI's
//! `--arch` and its size flags, and the page's training lab), and the character tokenizer of a
//! text. One place, so the page's run and `tinyformer train` build the same model.

use serde_json::json;

use crate::error::{Result, TfError};
use crate::tokenizer::Tokenizer;

/// The architectures a fresh run can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreshArch {
    /// GPT-2 style decoder: LayerNorm, learned positions, GELU-tanh, head tied to the embedding
    Gpt,
    /// Llama style: RMSNorm, RoPE, grouped-query attention, SwiGLU
    Llama,
    /// GPT-style blocks of attention only (no feed-forward network, untied head): the induction-head experiment
    AttnOnly,
    /// the seed's encoder-decoder (post-norm, sinusoidal positions, ReLU)
    Encdec,
    /// the seed's decoder with a mixture-of-experts FFN
    Moe,
}

impl FreshArch {
    /// The CLI's spelling (`--arch`).
    pub fn as_str(self) -> &'static str {
        match self {
            FreshArch::Gpt => "gpt",
            FreshArch::Llama => "llama",
            FreshArch::AttnOnly => "attn-only",
            FreshArch::Encdec => "encdec",
            FreshArch::Moe => "moe",
        }
    }
}

/// The sizes of a fresh model (the CLI's flags of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub layers: usize,
    pub heads: usize,
    /// key/value heads (llama); None: `heads`
    pub kv_heads: Option<usize>,
    pub dim: usize,
    /// FFN hidden width (gpt, encdec; None: 4 x dim) or each expert's (moe; None: 2 x dim)
    pub ff: Option<usize>,
    pub experts: usize,
    pub top_k: usize,
    pub context: usize,
}

/// The config JSON of a fresh `arch` model of these sizes over a vocabulary of `vocab`.
pub fn fresh_config(arch: FreshArch, s: &Sizes, vocab: usize) -> serde_json::Value {
    match arch {
        FreshArch::Gpt => json!({
            "arch": "decoder", "vocab_size": vocab, "d_model": s.dim, "num_layers": s.layers, "num_heads": s.heads,
            "d_ff": s.ff.unwrap_or(4 * s.dim), "max_seq_len": s.context, "positions": "learned",
            "activation": "gelu_tanh", "tie_embeddings": true
        }),
        FreshArch::AttnOnly => json!({
            "arch": "decoder", "vocab_size": vocab, "d_model": s.dim, "num_layers": s.layers, "num_heads": s.heads,
            "max_seq_len": s.context, "positions": "learned", "tie_embeddings": false, "attention_only": true
        }),
        FreshArch::Llama => json!({
            "arch": "llama", "vocab_size": vocab, "d_model": s.dim, "num_layers": s.layers, "num_heads": s.heads,
            "num_kv_heads": s.kv_heads.unwrap_or(s.heads), "multiple_of": 32, "max_seq_len": s.context
        }),
        FreshArch::Encdec => json!({
            "arch": "encoder_decoder", "src_vocab_size": vocab, "tgt_vocab_size": vocab, "d_model": s.dim,
            "num_layers": s.layers, "num_heads": s.heads, "d_ff": s.ff.unwrap_or(4 * s.dim), "max_seq_len": s.context
        }),
        FreshArch::Moe => json!({
            "arch": "decoder", "vocab_size": vocab, "d_model": s.dim, "num_layers": s.layers, "num_heads": s.heads,
            "max_seq_len": s.context,
            "moe": {"num_experts": s.experts, "top_k": s.top_k, "expert_dim": s.ff.unwrap_or(2 * s.dim), "capacity_factor": 1.25}
        }),
    }
}

/// The character tokenizer of a text: its distinct characters in code-point order, after the
/// three special tokens. `what` names the text in errors ("--text", "the pasted text").
pub fn char_tokenizer(text: &str, what: &str) -> Result<Tokenizer> {
    if text.contains('\0') {
        return Err(TfError::Input(format!("{what} holds NUL bytes: give a text file")));
    }
    let mut chars: Vec<char> = text.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    let alphabet: String = chars.into_iter().collect();
    Ok(Tokenizer::Chars(crate::tokenizer::chars::Chars::from_alphabet(&alphabet).map_err(|e| TfError::Input(format!("{what}: {e}")))?))
}
