//! A model's text in and text out, kept beside the network (`Model` holds only config, weights, run
//! state and hooks): [`ModelText`] owns the tokenizer that reads the user's text, the tokenizer that
//! writes the model's output, and the output constraint the checkpoint declares. It is built from the
//! parsed checkpoint (the tokenizer in its metadata, checked against the vocabulary) or, for a foreign
//! model, from the tokenizer file read beside it. [`load_within`] and [`from_checkpoint`] give the model
//! and its text from one parse.

use crate::error::{Result, TfError};
use crate::model::checkpoint::Checkpoint;
use crate::model::config::{Arch, ModelConfig};
use crate::model::constraint::{self, Constraint};
use crate::model::memory::Budget;
use crate::model::{Backend, Model};
use crate::tokenizer::Tokenizer;

/// The tokenizers and the output constraint of a loaded model.
#[derive(Clone, Debug, Default)]
pub struct ModelText {
    /// reads the user's text (for the encoder-decoder, the source side)
    pub tokenizer: Option<Tokenizer>,
    /// writes the model's output (see [`ModelText::output_tokenizer`])
    out_tokenizer: Option<Tokenizer>,
    /// the output constraint the checkpoint declares (`__metadata__["output_constraint"]`); the
    /// session passes it to generation (`GenConfig::constraint`) unless the caller gives its own
    pub constraint: Option<Constraint>,
}

impl ModelText {
    /// The tokenizer in a checkpoint's metadata (if any), checked against the model's vocabulary, and
    /// the output constraint the metadata names (if any), checked against the output tokenizer.
    pub fn from_checkpoint(ck: &Checkpoint) -> Result<ModelText> {
        let cfg: &ModelConfig = &ck.config;
        let tokenizer = match &ck.tokenizer {
            None => None,
            Some(j) => {
                Some(Tokenizer::from_json(j).map_err(|e| TfError::Checkpoint(format!("the tokenizer in the metadata is invalid: {e}")))?)
            }
        };
        if let Some(t) = &tokenizer {
            let v = if cfg.arch == Arch::EncoderDecoder { cfg.src_vocab_size } else { cfg.vocab_size };
            if t.vocab_size() > v {
                return Err(TfError::Checkpoint(format!("the tokenizer has {} tokens but the model's vocabulary is {v}", t.vocab_size())));
            }
        }
        let mut text = ModelText::from_tokenizer(tokenizer);
        if let Some(name) = ck.metadata.get(constraint::METADATA_KEY) {
            let t = text
                .output_tokenizer()
                .ok_or_else(|| TfError::Checkpoint(format!("output constraint {name:?} needs a tokenizer in the metadata")))?;
            text.constraint = Some(Constraint::from_name(name, t, cfg.tgt_vocab_size)?);
        }
        Ok(text)
    }

    /// A tokenizer and no constraint: a foreign model's tokenizer.json / tokenizer.bin, read beside it
    /// (the caller has checked it against the vocabulary), or none.
    pub fn from_tokenizer(tokenizer: Option<Tokenizer>) -> ModelText {
        // Made once here: generation decodes every token with it.
        let out_tokenizer = tokenizer.as_ref().map(|t| t.target_tokenizer().unwrap_or_else(|| t.clone()));
        ModelText { tokenizer, out_tokenizer, constraint: None }
    }

    /// The tokenizer that writes the model's output: the target table of a two-table tokenizer
    /// (the date model), else the tokenizer itself.
    pub fn output_tokenizer(&self) -> Option<&Tokenizer> {
        self.out_tokenizer.as_ref()
    }

    /// Output ids as text, special ids (PAD / BOS / EOS of a chars table) left out.
    pub fn decode_output(&self, ids: &[u32]) -> Result<String> {
        let t = self.output_tokenizer().ok_or_else(|| TfError::Input("this model has no tokenizer".into()))?;
        let ids: Vec<u32> = match t.special_ids() {
            Some((pad, bos, eos)) => ids.iter().copied().filter(|&i| i != pad && i != bos && i != eos).collect(),
            None => ids.to_vec(),
        };
        // an id the model has but the tokenizer does not (a vocabulary padded above the tokenizer's, as
        // Pythia's 50,304 over 50,277) shows as <#id>, and the text around it still decodes
        let n = t.vocab_size() as u32;
        let dec = |run: &[u32]| t.decode(run).map_err(|e| TfError::Input(e.to_string()));
        let (mut out, mut run) = (String::new(), vec![]);
        for &i in &ids {
            if i < n {
                run.push(i);
            } else {
                out += &dec(&run)?;
                run.clear();
                out += &format!("<#{i}>");
            }
        }
        out += &dec(&run)?;
        Ok(out)
    }
}

/// A checkpoint's bytes as a model and its text, from one parse: `Model::load` with the tokenizer and
/// the constraint of the metadata (`Model::load_within`, within the default budget).
pub fn load<B: Backend>(backend: &B, bytes: &[u8]) -> Result<(Model<B>, ModelText)> {
    load_within(backend, bytes, &Budget::default())
}

/// [`load`] within `budget`: the memory demand is checked first (`Model::checkpoint_within`), then the
/// text, then the weights are uploaded. On error nothing is kept.
pub fn load_within<B: Backend>(backend: &B, bytes: &[u8], budget: &Budget) -> Result<(Model<B>, ModelText)> {
    from_checkpoint(backend, Model::checkpoint_within(backend, bytes, budget)?, budget)
}

/// A parsed checkpoint as a model and its text: the text is read and checked before any weight is
/// uploaded (`Model::from_checkpoint`).
pub fn from_checkpoint<B: Backend>(backend: &B, ck: Checkpoint, budget: &Budget) -> Result<(Model<B>, ModelText)> {
    let text = ModelText::from_checkpoint(&ck)?;
    Ok((Model::from_checkpoint(backend, ck, budget)?, text))
}
