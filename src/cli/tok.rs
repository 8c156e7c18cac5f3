//! `tinyformer tokenizer ...`: train, encode and decode with the project's tokenizers, so that the
//! PyTorch training scripts (train/) use the Rust tokenizers instead of a second implementation.
//!
//! * `tokenizer train --kind byte_bpe|char_merges|seed_bpe --vocab-size N --text-file F --out tok.json`
//!   [--pre-split words|none] (byte_bpe only). Prints JSON {"kind", "vocab_size", "merges", "out"}.
//! * `tokenizer encode --tokenizer tok.json (--text-file F | --text T) [--out ids.bin]`. The id file is
//!   little-endian **u32**, one per token, no header. Prints JSON {"tokens", "chars", "chars_per_token",
//!   "unknown"} (plus "ids" when there is no --out). `--tokenizer` also accepts a `.safetensors`
//!   checkpoint whose metadata has a "tokenizer", a Hugging Face `tokenizer.json` (BPE) or llama2.c's
//!   `tokenizer.bin`. Those two encode as their own tools do by default: tokenizer.json's post-processor
//!   adds its special tokens (e.g. Llama's `<s>`), tokenizer.bin starts with BOS (1), as run.c.
//! * `tokenizer decode --tokenizer tok.json (--ids 3,1,4 | --ids-file ids.bin)`. Prints JSON {"text"}.

use crate::cli::args::{PreSplitChoice, TokDecodeArgs, TokEncodeArgs, TokKind, TokTrainArgs, TokenizerCommand};
use crate::cli::{read_input, read_text, MAX_TOKENIZER_BYTES};
use crate::error::{quote, Result, TfError};
use crate::tokenizer::{train_byte_bpe, train_char_merges, train_seed_bpe, PreSplit, Tokenizer};

pub fn run(t: &TokenizerCommand) -> Result<String> {
    match t {
        TokenizerCommand::Train(a) => train(a),
        TokenizerCommand::Encode(a) => encode(a),
        TokenizerCommand::Decode(a) => decode(a),
    }
}

fn write_file(path: &str, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| TfError::Input(format!("cannot write {}: {e}", quote(path))))
}

fn tok_err(e: crate::tokenizer::TokenizerError) -> TfError {
    TfError::Input(e.to_string())
}

/// Loads a tokenizer from our JSON, a Hugging Face tokenizer.json, a llama2.c tokenizer.bin, or the
/// "tokenizer" metadata of a safetensors checkpoint.
fn load_tokenizer(path: &str) -> Result<Tokenizer> {
    if path.ends_with(".safetensors") {
        let bytes = read_input(path, "--tokenizer", crate::model::memory::DEFAULT_BUDGET, "checkpoints are capped at 4 GiB here")?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| TfError::Checkpoint(format!("{}: {}", quote(path), crate::error::one_line(&e.to_string()))))?;
        let text = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("tokenizer"))
            .ok_or_else(|| TfError::Input(format!("{} has no \"tokenizer\" in its metadata", quote(path))))?;
        return Tokenizer::from_json(text).map_err(tok_err);
    }
    let bytes = read_input(path, "--tokenizer", MAX_TOKENIZER_BYTES, "tokenizer files are capped at 256 MiB")?;
    // Our JSON, a Hugging Face tokenizer.json, or llama2.c's tokenizer.bin, told apart by content.
    Tokenizer::from_file_bytes(&bytes).map_err(|e| TfError::Input(format!("--tokenizer {}: {e}", quote(path))))
}

fn train(a: &TokTrainArgs) -> Result<String> {
    let pre_split = match a.pre_split {
        PreSplitChoice::Words => PreSplit::Words,
        PreSplitChoice::None => PreSplit::None,
    };
    let text = read_text(&a.text_file, "--text-file")?;
    let vocab = a.vocab_size;
    let t = std::time::Instant::now();
    let tok: Tokenizer = match a.kind {
        TokKind::ByteBpe => train_byte_bpe(&text, vocab, pre_split).map_err(tok_err)?.into(),
        TokKind::CharMerges => train_char_merges(&text, vocab).map_err(tok_err)?.into(),
        TokKind::SeedBpe => train_seed_bpe(&text, vocab).into(),
    };
    write_file(&a.out, tok.to_json().as_bytes())?;
    let out = serde_json::json!({
        "kind": tok.kind(),
        "vocab_size": tok.vocab_size(),
        "merges": tok.num_merges(),
        "seconds": (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "out": a.out,
    });
    Ok(out.to_string())
}

fn encode(a: &TokEncodeArgs) -> Result<String> {
    let text = match (&a.text_file, &a.text) {
        (Some(f), None) => read_text(f, "--text-file")?,
        (None, Some(t)) => t.clone(),
        _ => return Err(TfError::Input("give exactly one of --text-file, --text (tinyformer help lists the subcommands)".to_string())),
    };
    let tok = load_tokenizer(&a.tokenizer)?;
    let enc = tok.encode(&text);
    let chars = text.chars().count();
    let n = enc.ids.len();
    let mut j = serde_json::json!({
        "tokens": n,
        "chars": chars,
        "chars_per_token": if n == 0 { 0.0 } else { chars as f64 / n as f64 },
        "unknown": enc.unknown.len(),
        "vocab_size": tok.vocab_size(),
        "kind": tok.kind(),
    });
    match &a.out {
        Some(path) => {
            let mut bytes = Vec::with_capacity(n * 4);
            for id in &enc.ids {
                bytes.extend_from_slice(&id.to_le_bytes());
            }
            write_file(path, &bytes)?;
            j["out"] = path.clone().into();
            j["id_format"] = "u32le".into();
        }
        None => j["ids"] = serde_json::json!(enc.ids),
    }
    Ok(j.to_string())
}

fn decode(a: &TokDecodeArgs) -> Result<String> {
    let ids: Vec<u32> = match (&a.ids, &a.ids_file) {
        (Some(ids), None) => ids.0.clone(),
        (None, Some(f)) => {
            let bytes = read_input(f, "--ids-file", MAX_TOKENIZER_BYTES, "id files are capped at 256 MiB")?;
            if bytes.len() % 4 != 0 {
                return Err(TfError::Input(format!("{} has {} bytes, not a multiple of 4 (u32le ids)", quote(f), bytes.len())));
            }
            bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        _ => return Err(TfError::Input("give exactly one of --ids, --ids-file (tinyformer help lists the subcommands)".to_string())),
    };
    let tok = load_tokenizer(&a.tokenizer)?;
    let text = tok.decode(&ids).map_err(tok_err)?;
    Ok(serde_json::json!({ "text": text, "tokens": ids.len() }).to_string())
}
