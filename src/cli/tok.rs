//! `tinyformer tokenizer ...`: train, encode and decode with the project's tokenizers, so that the
//! PyTorch training scripts (train/) use the Rust tokenizers instead of a second implementation.
//!
//! * `tokenizer train --kind byte_bpe|char_merges|seed_bpe --vocab-size N --text-file F --out tok.json`
//!   [--pre-split words|none] (byte_bpe only). Prints JSON {"kind", "vocab_size", "merges", "out"}.
//! * `tokenizer encode --tokenizer tok.json (--text-file F | --text T) [--out ids.bin]`. The id file is
//!   little-endian **u32**, one per token, no header. Prints JSON {"tokens", "chars", "chars_per_token",
//!   "unknown"} (plus "ids" when there is no --out). `--tokenizer` also accepts a `.safetensors`
//!   checkpoint whose metadata has a "tokenizer".
//! * `tokenizer decode --tokenizer tok.json (--ids 3,1,4 | --ids-file ids.bin)`. Prints JSON {"text"}.

use crate::cli::args::Args;
use crate::error::{Result, TfError};
use crate::tokenizer::{train_byte_bpe, train_char_merges, train_seed_bpe, PreSplit, Tokenizer};

pub const USAGE: &str = "usage:
  tinyformer tokenizer train --kind byte_bpe|char_merges|seed_bpe --vocab-size N --text-file F --out tok.json [--pre-split words|none]
  tinyformer tokenizer encode --tokenizer tok.json (--text-file F | --text T) [--out ids.bin]   (ids: little-endian u32)
  tinyformer tokenizer decode --tokenizer tok.json (--ids 3,1,4 | --ids-file ids.bin)";

pub fn run(rest: &[String]) -> Result<String> {
    let Some(what) = rest.first() else {
        return Err(TfError::Input("tokenizer needs a subcommand (tinyformer help lists the subcommands)".to_string()));
    };
    let a = Args::parse(&rest[1..])?;
    match what.as_str() {
        "train" => train(&a),
        "encode" => encode(&a),
        "decode" => decode(&a),
        other => Err(TfError::Input(format!("unknown tokenizer subcommand '{other}' (expected: train, encode, decode)"))),
    }
}

fn required(a: &Args, name: &str) -> Result<String> {
    a.str(name)?.ok_or_else(|| TfError::Input(format!("--{name} is required (tinyformer help lists the subcommands)")))
}

fn read_text(path: &str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| TfError::Input(format!("cannot read '{path}': {e}")))?;
    String::from_utf8(bytes).map_err(|e| TfError::Input(format!("'{path}' is not valid UTF-8 (byte {})", e.utf8_error().valid_up_to())))
}

fn write_file(path: &str, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| TfError::Input(format!("cannot write '{path}': {e}")))
}

fn tok_err(e: crate::tokenizer::TokenizerError) -> TfError {
    TfError::Input(e.to_string())
}

/// Loads a tokenizer from a JSON file, or from the "tokenizer" metadata of a safetensors checkpoint.
fn load_tokenizer(path: &str) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| TfError::Input(format!("cannot read '{path}': {e}")))?;
    if path.ends_with(".safetensors") {
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| TfError::Checkpoint(format!("'{path}': {e}")))?;
        let text = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("tokenizer"))
            .ok_or_else(|| TfError::Input(format!("'{path}' has no \"tokenizer\" in its metadata")))?;
        return Tokenizer::from_json(text).map_err(tok_err);
    }
    let text = String::from_utf8(bytes).map_err(|_| TfError::Input(format!("'{path}' is not valid UTF-8")))?;
    Tokenizer::from_json(&text).map_err(tok_err)
}

fn train(a: &Args) -> Result<String> {
    let kind = required(a, "kind")?;
    let vocab: usize = a
        .get("vocab-size")?
        .ok_or_else(|| TfError::Input("--vocab-size is required (tinyformer help lists the subcommands)".to_string()))?;
    let text_file = required(a, "text-file")?;
    let out = required(a, "out")?;
    let pre_split = match a.str("pre-split")?.as_deref() {
        None | Some("words") => PreSplit::Words,
        Some("none") => PreSplit::None,
        Some(o) => return Err(TfError::Input(format!("--pre-split: '{o}' is not one of words, none"))),
    };
    a.finish()?;
    let text = read_text(&text_file)?;
    let t = std::time::Instant::now();
    let tok: Tokenizer = match kind.as_str() {
        "byte_bpe" => train_byte_bpe(&text, vocab, pre_split).map_err(tok_err)?.into(),
        "char_merges" => train_char_merges(&text, vocab).map_err(tok_err)?.into(),
        "seed_bpe" => train_seed_bpe(&text, vocab).into(),
        o => return Err(TfError::Input(format!("--kind: '{o}' is not one of byte_bpe, char_merges, seed_bpe"))),
    };
    write_file(&out, tok.to_json().as_bytes())?;
    let out = serde_json::json!({
        "kind": tok.kind(),
        "vocab_size": tok.vocab_size(),
        "merges": tok.num_merges(),
        "seconds": (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "out": out,
    });
    Ok(out.to_string())
}

fn encode(a: &Args) -> Result<String> {
    let tok = load_tokenizer(&required(a, "tokenizer")?)?;
    let text = match (a.str("text-file")?, a.str("text")?) {
        (Some(f), None) => read_text(&f)?,
        (None, Some(t)) => t,
        _ => return Err(TfError::Input("give exactly one of --text-file, --text (tinyformer help lists the subcommands)".to_string())),
    };
    let out = a.str("out")?;
    a.finish()?;
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
    match out {
        Some(path) => {
            let mut bytes = Vec::with_capacity(n * 4);
            for id in &enc.ids {
                bytes.extend_from_slice(&id.to_le_bytes());
            }
            write_file(&path, &bytes)?;
            j["out"] = path.into();
            j["id_format"] = "u32le".into();
        }
        None => j["ids"] = serde_json::json!(enc.ids),
    }
    Ok(j.to_string())
}

fn decode(a: &Args) -> Result<String> {
    let tok = load_tokenizer(&required(a, "tokenizer")?)?;
    let ids: Vec<u32> = match (a.list::<u32>("ids")?, a.str("ids-file")?) {
        (Some(ids), None) => ids,
        (None, Some(f)) => {
            let bytes = std::fs::read(&f).map_err(|e| TfError::Input(format!("cannot read '{f}': {e}")))?;
            if bytes.len() % 4 != 0 {
                return Err(TfError::Input(format!("'{f}' has {} bytes, not a multiple of 4 (u32le ids)", bytes.len())));
            }
            bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        _ => return Err(TfError::Input("give exactly one of --ids, --ids-file (tinyformer help lists the subcommands)".to_string())),
    };
    a.finish()?;
    let text = tok.decode(&ids).map_err(tok_err)?;
    Ok(serde_json::json!({ "text": text, "tokens": ids.len() }).to_string())
}
