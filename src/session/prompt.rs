//! The user's input as the model reads it: text as tokens, ids typed by hand, the prompt box and how
//! it fits the context, the window one analysis pass reads, display pieces of output ids, and the
//! next-token candidates after a row of logits.

use serde::Serialize;

use super::{Sampling, Session};
use crate::error::{Result, TfError};
use crate::model::run::{top_candidates, BOS_ID};
use crate::tokenizer::Tokenizer;

/// Text as tokens: ids, visible pieces, and for a tokenizer's output the byte spans and the char
/// offsets of characters outside its table. `kind` is "ids" for ids typed by hand.
#[derive(Clone, Debug, Serialize)]
pub struct Tokens {
    pub kind: &'static str,
    pub ids: Vec<u32>,
    pub pieces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spans: Option<Vec<(usize, usize)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<Vec<usize>>,
}

/// The prompt box read as the model's input: its tokens and how they fit the context.
#[derive(Clone, Debug, Serialize)]
pub struct Prompt {
    #[serde(flatten)]
    pub tokens: Tokens,
    /// S, the model's context
    pub context: usize,
    /// a forward pass can show it (an encoder-decoder's source must fit the context; a decoder's
    /// analysis covers the newest tokens that fit)
    pub fits: bool,
    /// generation can start without a sliding window: room for at least one new token
    pub room: bool,
    /// how many of the newest tokens a sliding window keeps of a prompt without room
    pub keep_last: usize,
}

/// The longest prompt the session reads (a pasted book still fits; every token of it is shown in the page).
pub const MAX_PROMPT_BYTES: usize = 1 << 20;

/// A prompt over [`MAX_PROMPT_BYTES`] is refused in one line before it is tokenized.
fn prompt_size(text: &str) -> Result<()> {
    if text.len() > MAX_PROMPT_BYTES {
        return Err(TfError::Input(format!(
            "the prompt is {:.1} MB; prompts are limited to 1 MB here (the model reads only its last context of tokens): shorten it",
            text.len() as f64 / 1e6
        )));
    }
    Ok(())
}

/// The sequence one analysis pass reads after a prompt and the tokens generated after it.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// the forward pass's ids (the encoder-decoder's source)
    pub ids: Vec<u32>,
    /// the encoder-decoder's decoder input: the start token, then what was generated
    pub tgt: Option<Vec<u32>>,
    /// tokens of the sequence before the window (past the context with a sliding window)
    pub offset: usize,
    /// the decoder's start length: step s was chosen by the row start_len + s - 1 - offset
    pub start_len: usize,
}

/// A next-token candidate: id, probability after temperature / top-k / top-p, display string.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub id: u32,
    pub p: f32,
    pub piece: String,
}

impl Session {
    /// The tokenizer that reads the user's text (for the encoder-decoder, the source side).
    pub fn source_tokenizer(&self) -> Option<&Tokenizer> {
        self.text.tokenizer.as_ref()
    }

    /// The tokenizer that writes the model's output (the target table of a two-table tokenizer).
    pub fn output_tokenizer(&self) -> Option<&Tokenizer> {
        self.text.output_tokenizer()
    }

    /// Text as tokens with the source tokenizer.
    pub fn tokenize(&self, text: &str) -> Result<Tokens> {
        let t = self.source_tokenizer().ok_or_else(|| TfError::Input("this model has no tokenizer: type token ids instead".into()))?;
        prompt_size(text)?;
        let enc = t.encode(text);
        let pieces = enc.ids.iter().map(|&i| t.token_str(i).unwrap_or_default()).collect();
        Ok(Tokens { kind: t.kind(), ids: enc.ids, pieces, spans: Some(enc.spans), unknown: Some(enc.unknown) })
    }

    /// A display string for each output id ("#id" where the tokenizer has none).
    pub fn pieces(&self, ids: &[u32]) -> Vec<String> {
        let t = self.output_tokenizer();
        ids.iter().map(|&i| t.and_then(|t| t.token_str(i).ok()).unwrap_or_else(|| format!("#{i}"))).collect()
    }

    /// Output ids as text; special ids (PAD / BOS / EOS of a chars table) are left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.text.decode_output(ids)
    }

    /// PAD, BOS or EOS of the output tokenizer: such ids add no text.
    pub fn is_special(&self, id: u32) -> bool {
        self.output_tokenizer().and_then(|t| t.special_ids()).is_some_and(|(p, b, e)| id == p || id == b || id == e)
    }

    /// Token ids typed by hand ("1 5 9" or "1,5,9"), checked against the input vocabulary.
    pub fn parse_ids(&self, text: &str) -> Result<Vec<u32>> {
        prompt_size(text)?;
        let vocab = self.config().src_vocab_size as u64;
        let mut ids = Vec::new();
        for part in text.split(|c: char| c.is_whitespace() || c == ',').filter(|p| !p.is_empty()) {
            let id: u64 = part.parse().map_err(|_| {
                TfError::Input(format!("\"{part}\" is not a token id: this checkpoint has no tokenizer, so type ids like 1 5 9."))
            })?;
            if id >= vocab {
                return Err(TfError::Input(format!("Token id {id} is outside the vocabulary (0 to {}).", vocab.saturating_sub(1))));
            }
            ids.push(id as u32);
        }
        Ok(ids)
    }

    /// The prompt box as the model's input: tokenized with the checkpoint's tokenizer, or read as ids
    /// when it has none; with how it fits the context.
    pub fn prompt(&self, text: &str) -> Result<Prompt> {
        let tokens = if self.source_tokenizer().is_some() {
            self.tokenize(text)?
        } else {
            let ids = self.parse_ids(text)?;
            Tokens { kind: "ids", pieces: self.pieces(&ids), ids, spans: None, unknown: None }
        };
        let (n, ctx) = (tokens.ids.len(), self.config().max_seq_len);
        let (fits, room) = if self.is_encdec() { (n <= ctx, n <= ctx) } else { (true, n < ctx) };
        Ok(Prompt { tokens, context: ctx, fits, room, keep_last: ctx.saturating_sub(1) })
    }

    /// What one analysis pass reads after `src` (the prompt, or the source) and the generated `gen`:
    /// the encoder-decoder's decoder starts from BOS; a decoder past its context reads the newest
    /// tokens that fit.
    pub fn window(&self, src: &[u32], gen: &[u32]) -> Window {
        let ctx = self.config().max_seq_len;
        if self.is_encdec() {
            let tgt: Vec<u32> = std::iter::once(BOS_ID).chain(gen.iter().copied()).take(ctx).collect();
            return Window { ids: src.to_vec(), tgt: Some(tgt), offset: 0, start_len: 1 };
        }
        let all: Vec<u32> = src.iter().chain(gen).copied().collect();
        let offset = all.len().saturating_sub(ctx);
        Window { ids: all[offset..].to_vec(), tgt: None, offset, start_len: src.len() }
    }

    /// The `n` most likely next tokens after a row of logits, with the probabilities the sampler
    /// would use (temperature, top-k, top-p).
    pub fn candidates(&self, logits: &[f32], sampling: &Sampling, n: usize) -> Result<Vec<Candidate>> {
        let top = top_candidates(logits, &sampling.params()?, n);
        Ok(self.with_pieces(top))
    }

    pub(super) fn with_pieces(&self, top: Vec<(u32, f32)>) -> Vec<Candidate> {
        let ids: Vec<u32> = top.iter().map(|c| c.0).collect();
        top.into_iter().zip(self.pieces(&ids)).map(|((id, p), piece)| Candidate { id, p, piece }).collect()
    }
}
