//! A foreign model's files: telling a set of files apart by their names (ours, a Hugging Face
//! directory, llama2.c's model.bin), planning and checking them without reading the weights, reading
//! the tokenizer beside them, and finding the ids that end a generation (EOS).

use crate::error::{Result, TfError};
use crate::formats::Files;
use crate::tokenizer::Tokenizer;

/// What a set of files holds, told apart by their names (the page's dropped files, a directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileLayout {
    /// one of our own `.safetensors` checkpoints (config and tokenizer in its metadata)
    Ours(String),
    /// a Hugging Face model directory: config.json, model.safetensors or shards + index, tokenizer.json
    HfDirectory,
    /// llama2.c's model.bin (named here), with tokenizer.bin beside it when present
    Llama2c(String),
}

/// Largest tokenizer file read (tokenizer.json, tokenizer.bin).
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;
/// Largest small JSON file read (generation_config.json, tokenizer_config.json).
const MAX_SMALL_JSON: u64 = 16 << 20;

/// Tells which kind of model a set of files is, from the names alone, or says in one line what is missing.
pub fn detect_files(names: &[String]) -> Result<FileLayout> {
    let has = |n: &str| names.iter().any(|x| x == n);
    let ext = |e: &str| names.iter().filter(|n| n.to_ascii_lowercase().ends_with(e)).cloned().collect::<Vec<_>>();
    if let Some(dup) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| n) {
        return Err(TfError::Input(format!("two files are named {}: give each file once", crate::error::quote(dup))));
    }
    if has("config.json") {
        return Ok(FileLayout::HfDirectory);
    }
    let bins: Vec<String> = ext(".bin").into_iter().filter(|n| n != "tokenizer.bin").collect();
    let tensors = ext(".safetensors");
    match (bins.as_slice(), tensors.as_slice()) {
        ([bin], []) => Ok(FileLayout::Llama2c(bin.clone())),
        ([], [one]) if !has("model.safetensors.index.json") && !has("tokenizer.json") => Ok(FileLayout::Ours(one.clone())),
        ([], [_, ..]) => Err(TfError::Input(format!(
            "config.json is missing: a Hugging Face model needs its config.json together with {}",
            tensors.join(", ")
        ))),
        ([_, _, ..], _) => Err(TfError::Input(format!(
            "several llama2.c .bin files ({}): give one model.bin (and tokenizer.bin)",
            bins.join(", ")
        ))),
        ([_, ..], [_, ..]) => Err(TfError::Input(
            "both .bin and .safetensors files: give one model (config.json + model.safetensors, or model.bin + tokenizer.bin)".into(),
        )),
        ([], []) if has("tokenizer.bin") => {
            Err(TfError::Input("tokenizer.bin alone: give the llama2.c model .bin together with it".into()))
        }
        ([], []) => Err(TfError::Input(
            "no model among the files: give config.json + model.safetensors (or its shards and model.safetensors.index.json) + tokenizer.json, \
             a llama2.c model.bin + tokenizer.bin, or a tinyformer .safetensors checkpoint"
                .into(),
        )),
    }
}

/// A tokenizer file given with a model (the page's files, the CLI's --tokenizer or the file beside the model).
pub struct TokenizerFile<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

fn read_json(files: &dyn Files, name: &str) -> Result<Option<serde_json::Value>> {
    if files.size(name).is_none() {
        return Ok(None);
    }
    let bytes = files.read_capped(name, MAX_SMALL_JSON).map_err(|e| TfError::Checkpoint(e.to_string()))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| TfError::Checkpoint(format!("{name}: not valid JSON ({e})")))
}

/// The ids that end a foreign model's generation: `eos_token_id` (a number or a list) of
/// generation_config.json, else of config.json, else tokenizer_config.json's `eos_token` looked up in the
/// tokenizer. llama2.c's run.c stops at BOS (1), which delimits its training sequences.
fn foreign_eos(files: &dyn Files, layout: &FileLayout, tok: Option<&Tokenizer>, vocab: usize) -> Result<Vec<u32>> {
    if let FileLayout::Llama2c(_) = layout {
        return Ok(vec![1]);
    }
    // checked as u64 before any narrowing: an id of 2^32 + 2 must not wrap to 2
    let ids = |name: &str, v: &serde_json::Value| -> Result<Vec<u32>> {
        let one = |x: &serde_json::Value| match x.as_u64() {
            Some(id) if id < vocab as u64 => Ok(id as u32),
            Some(id) => Err(TfError::Checkpoint(format!("{name}: eos_token_id {id} is outside the model's vocabulary of {vocab}"))),
            None => Err(TfError::Checkpoint(format!("{name}: eos_token_id must be a token id or a list of them, not {x}"))),
        };
        match v {
            serde_json::Value::Null => Ok(vec![]),
            serde_json::Value::Array(a) => a.iter().map(one).collect(),
            x => Ok(vec![one(x)?]),
        }
    };
    let mut eos = vec![];
    for name in ["generation_config.json", "config.json"] {
        if let Some(v) = read_json(files, name)?.and_then(|j| j.get("eos_token_id").cloned()) {
            eos = ids(name, &v)?;
            if !eos.is_empty() {
                break;
            }
        }
    }
    if eos.is_empty() {
        if let (Some(cfg), Some(Tokenizer::HfBpe(t))) = (read_json(files, "tokenizer_config.json")?, tok) {
            let name = match cfg.get("eos_token") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
                None => None,
            };
            eos.extend(name.and_then(|n| t.token_to_id(&n)));
        }
    }
    if let Some(bad) = eos.iter().find(|&&id| id as usize >= vocab) {
        return Err(TfError::Checkpoint(format!("the EOS id {bad} is outside the model's vocabulary of {vocab}")));
    }
    Ok(eos)
}

/// A foreign model's files, planned and checked without reading the weights: what `info` prints and what
/// [`Session::load_files`] loads.
pub struct ForeignFiles {
    pub layout: FileLayout,
    pub plan: crate::formats::Plan,
    /// the tokenizer and the file it came from
    pub tokenizer: Option<(String, Tokenizer)>,
    pub eos: Vec<u32>,
}

/// The files of `inner` named in `names`, and no others: a llama2.c .bin given beside a directory's
/// config.json is read as llama2.c, and only the files a user gave are ever read.
pub(super) struct Only<'a> {
    pub(super) inner: &'a dyn Files,
    pub(super) names: &'a [String],
}

impl Files for Only<'_> {
    fn size(&self, name: &str) -> Option<u64> {
        self.names.iter().any(|n| n == name).then(|| self.inner.size(name)).flatten()
    }
    fn read_range(&self, name: &str, start: u64, len: u64) -> crate::formats::Result<Vec<u8>> {
        self.inner.read_range(name, start, len)
    }
}

/// Plans a Hugging Face directory or a llama2.c model.bin ([`crate::formats::plan`]), reads its tokenizer
/// (`tokenizer` if given, else tokenizer.json / tokenizer.bin among the files) and checks the tokenizer's
/// vocabulary against the model's, and finds its EOS.
pub fn plan_files(files: &dyn Files, names: &[String], tokenizer: Option<TokenizerFile<'_>>) -> Result<ForeignFiles> {
    let layout = detect_files(names)?;
    let files = &Only { inner: files, names };
    let bin = match &layout {
        FileLayout::Ours(name) => return Err(TfError::Input(format!("{name} is a tinyformer checkpoint, not a foreign model"))),
        FileLayout::HfDirectory => None,
        FileLayout::Llama2c(bin) => Some(bin.as_str()),
    };
    let plan = crate::formats::plan(files, bin).map_err(|e| TfError::Checkpoint(e.to_string()))?;
    let beside = if bin.is_some() { "tokenizer.bin" } else { "tokenizer.json" };
    let owned;
    let file = match tokenizer {
        Some(t) => Some(t),
        None if names.iter().any(|n| n == beside) && files.size(beside).is_some() => {
            owned = files.read_capped(beside, MAX_TOKENIZER_BYTES).map_err(|e| TfError::Input(e.to_string()))?;
            Some(TokenizerFile { name: beside, bytes: &owned })
        }
        None => None,
    };
    let vocab = plan.dims.vocab_size;
    let tokenizer = match file {
        None => None,
        Some(f) => {
            let t = Tokenizer::from_file_bytes(f.bytes).map_err(|e| TfError::Input(format!("{}: {e}", f.name)))?;
            if t.vocab_size() > vocab {
                return Err(TfError::Input(format!(
                    "the tokenizer {} has {} tokens but the model's vocabulary is {vocab}: they do not belong together",
                    f.name,
                    t.vocab_size()
                )));
            }
            Some((f.name.to_string(), t))
        }
    };
    let eos = foreign_eos(files, &layout, tokenizer.as_ref().map(|t| &t.1), vocab)?;
    Ok(ForeignFiles { layout, plan, tokenizer, eos })
}

/// A foreign model read whole, for training (`tinyformer train --model`): the checkpoint (our config
/// and tensor names, 16-bit weights kept as bits: `Params::checkpoint_values` widens them, and
/// `metadata["config"]` our config's JSON) and its tokenizer. `check` sees our config before any
/// tensor is read; its error is a memory error.
pub fn open_foreign(
    files: &dyn Files,
    names: &[String],
    tokenizer: Option<TokenizerFile<'_>>,
    check: impl FnOnce(&crate::model::config::ModelConfig) -> std::result::Result<(), String>,
) -> Result<(crate::model::checkpoint::Checkpoint, Option<Tokenizer>)> {
    let foreign = plan_files(files, names, tokenizer)?;
    let bin = match &foreign.layout {
        FileLayout::Llama2c(b) => Some(b.as_str()),
        _ => None,
    };
    let over = std::cell::Cell::new(false);
    let opened = crate::formats::open(&Only { inner: files, names }, bin, |cfg| {
        let r = check(cfg);
        over.set(r.is_err());
        r
    })
    .map_err(|e| if over.get() { TfError::Memory(e.0) } else { TfError::Checkpoint(e.0) })?;
    let mut ck = opened.checkpoint;
    let config = crate::formats::config_value(&foreign.plan).map_err(|e| TfError::Checkpoint(e.0))?;
    ck.metadata.insert("config".into(), config.to_string());
    Ok((ck, foreign.tokenizer.map(|(_, t)| t)))
}

#[cfg(test)]
mod tests {
    use super::{detect_files, FileLayout};

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_set_of_files_is_told_apart_by_its_names() {
        let hf = names(&["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.json"]);
        assert_eq!(detect_files(&hf).unwrap(), FileLayout::HfDirectory);
        // a folder with the PyTorch weights beside: still the directory (only config.json's files are read)
        assert_eq!(detect_files(&names(&["config.json", "pytorch_model.bin", "model.safetensors"])).unwrap(), FileLayout::HfDirectory);
        assert_eq!(detect_files(&names(&["stories15M.bin", "tokenizer.bin"])).unwrap(), FileLayout::Llama2c("stories15M.bin".into()));
        assert_eq!(detect_files(&names(&["model.bin"])).unwrap(), FileLayout::Llama2c("model.bin".into()));
        assert_eq!(detect_files(&names(&["mine.safetensors"])).unwrap(), FileLayout::Ours("mine.safetensors".into()));
        let refused: [(&[&str], &str); 7] = [
            (&["model.safetensors", "tokenizer.json"], "config.json is missing"),
            (&["model.safetensors.index.json", "model-00001-of-00002.safetensors"], "config.json is missing"),
            (&["a.safetensors", "b.safetensors"], "config.json is missing"),
            (&["a.bin", "b.bin", "tokenizer.bin"], "several llama2.c .bin files (a.bin, b.bin)"),
            (&["model.bin", "mine.safetensors"], "both .bin and .safetensors"),
            (&["tokenizer.bin"], "tokenizer.bin alone"),
            (&["notes.txt"], "no model among the files"),
        ];
        for (set, needle) in refused {
            let e = detect_files(&names(set)).unwrap_err().to_string();
            assert!(e.contains(needle) && !e.contains('\n'), "{set:?}: {e}");
        }
        let e = detect_files(&names(&["config.json", "model.safetensors", "config.json"])).unwrap_err().to_string();
        assert!(e.contains("two files are named \"config.json\""), "{e}");
    }
}
