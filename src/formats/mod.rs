//! Checkpoints in other people's formats: a Hugging Face model directory (`config.json` +
//! `model.safetensors` or shards with `model.safetensors.index.json`) and llama2.c's legacy `model.bin`.
//!
//! This layer only *plans* and *reads*: it detects the format and the architecture, checks every file
//! against every other (config vs tensor shapes, shards vs their index, a `.bin` header vs its size), and
//! maps each foreign tensor onto the name and layout of our own checkpoints (the seed modules' names),
//! with the transform that gets it there ([`Op`]): GPT-2's Conv1D weights are stored (in, out) and its
//! fused `c_attn` splits into q/k/v; Hugging Face's Llama stores wq/wk permuted for its rotate-half RoPE,
//! which [`Op::UnpermuteRope`] undoes into the adjacent-pair layout our RoPE (Meta's, llama2.c's) uses;
//! GPT-NeoX fuses q, k, v per head ([`Op::HeadRows`] takes each and unpermutes its rotary dims).
//! [`read_tensors`] then produces f32 tensors in our layout, widening bf16/f16; [`open`] keeps the
//! 16-bit values of the matmul weights and embeddings of an F16 / BF16 model as they are ([`read_tensor16`]).
//!
//! Every error is one line naming the file and what is wrong; nothing allocates more than the files
//! hold, and sizes are checked before anything is read.

pub mod hf;
pub mod llama2c;

use std::collections::HashMap;
use std::fmt;

use crate::model::checkpoint::{Checkpoint, FloatDtype, HostTensor};
use crate::model::config::ModelConfig;
use crate::model::weights::{Listing, Role};

/// Largest header or JSON file read whole (config.json, tokenizer_config.json, an index, a safetensors
/// header): 100 MB, as the safetensors crate caps its header.
pub const MAX_JSON_BYTES: u64 = 100_000_000;
/// Largest accepted dimension (vocab, width, hidden, context).
pub const MAX_DIM: usize = 1 << 20;
/// Largest accepted number of layers / heads.
pub const MAX_LAYERS: usize = 1024;

/// A format error: one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    /// One line whatever the message carries: tensor and file names come from the files themselves (a
    /// safetensors key may hold a newline or terminal escapes), so control and bidi characters are escaped
    /// here rather than at each of the messages that name them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::error::one_line(&self.0))
    }
}

impl std::error::Error for FormatError {}

pub type Result<T> = std::result::Result<T, FormatError>;

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(FormatError(msg.into()))
}

/// The files of a model: a directory natively, the files dropped together in the page.
pub trait Files {
    /// Size in bytes, None when there is no such file.
    fn size(&self, name: &str) -> Option<u64>;
    /// `len` bytes from `start` (the caller has checked the range against [`Files::size`]).
    fn read_range(&self, name: &str, start: u64, len: u64) -> Result<Vec<u8>>;
    /// The whole file, at most `cap` bytes.
    fn read_capped(&self, name: &str, cap: u64) -> Result<Vec<u8>> {
        let n = self.size(name).ok_or_else(|| FormatError(format!("{name}: no such file")))?;
        if n > cap {
            return err(format!("{name}: {n} bytes, over the {cap}-byte limit for this file"));
        }
        self.read_range(name, 0, n)
    }
}

/// Files held in memory by name (the page's dropped files; tests).
#[derive(Default)]
pub struct MemFiles(pub HashMap<String, Vec<u8>>);

impl Files for MemFiles {
    fn size(&self, name: &str) -> Option<u64> {
        self.0.get(name).map(|b| b.len() as u64)
    }
    fn read_range(&self, name: &str, start: u64, len: u64) -> Result<Vec<u8>> {
        let b = self.0.get(name).ok_or_else(|| FormatError(format!("{name}: no such file")))?;
        let (s, e) = (start as usize, start.saturating_add(len) as usize);
        b.get(s..e).map(<[u8]>::to_vec).ok_or_else(|| FormatError(format!("{name}: read past the end")))
    }
}

/// A directory on disk (native only).
#[cfg(not(target_arch = "wasm32"))]
pub struct DirFiles(pub std::path::PathBuf);

#[cfg(not(target_arch = "wasm32"))]
impl DirFiles {
    /// The size of `name` if it is a regular file this folder holds, else why not: a name that is not a plain
    /// file name, a FIFO, socket, device or folder, or a link that leads out of the folder. A link into the
    /// Hugging Face cache's blobs (`snapshots/<rev>/x -> ../../blobs/<sha>`) is the cache's own layout and is
    /// followed.
    pub fn check(&self, name: &str) -> std::result::Result<u64, String> {
        if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(format!("{name:?} is not a plain file name in the folder"));
        }
        let path = self.0.join(name);
        let link = std::fs::symlink_metadata(&path).map_err(|e| format!("{name}: {e}"))?;
        let meta = std::fs::metadata(&path).map_err(|e| format!("{name}: {e} (a broken link?)"))?;
        if !meta.is_file() {
            let kind = if meta.is_dir() { "a folder" } else { "not a regular file (a FIFO, socket or device)" };
            return Err(format!("{name} is {kind}: a model folder holds regular files"));
        }
        if link.file_type().is_symlink() {
            let (dir, target) = (self.0.canonicalize(), path.canonicalize());
            let (Ok(dir), Ok(target)) = (dir, target) else { return Err(format!("{name}: cannot resolve the link")) };
            let blobs = dir.parent().and_then(|s| s.parent()).filter(|_| dir.parent().is_some_and(|s| s.ends_with("snapshots")));
            let inside = target.starts_with(&dir) || blobs.is_some_and(|r| target.starts_with(r.join("blobs")));
            if !inside {
                return Err(format!("{name} is a link that leads out of the model's folder (to {})", target.display()));
            }
        }
        Ok(meta.len())
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Files for DirFiles {
    fn size(&self, name: &str) -> Option<u64> {
        self.check(name).ok()
    }
    fn read_range(&self, name: &str, start: u64, len: u64) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        // checked again at the read: never open what is not a regular file of the folder (a FIFO blocks)
        self.check(name).map_err(FormatError)?;
        let path = self.0.join(name);
        let e = |x: std::io::Error| FormatError(format!("{}: {x}", path.display()));
        let mut f = std::fs::File::open(&path).map_err(e)?;
        f.seek(SeekFrom::Start(start)).map_err(e)?;
        let mut out = Vec::new();
        out.try_reserve_exact(len as usize).map_err(|_| FormatError(format!("{name}: cannot allocate {len} bytes")))?;
        f.take(len).read_to_end(&mut out).map_err(e)?;
        if out.len() as u64 != len {
            return err(format!("{name}: the file ended early"));
        }
        Ok(out)
    }
}

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn bytes(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

/// How a stored tensor becomes ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The same layout.
    Copy,
    /// A 2-D (rows, cols) stored tensor, transposed (GPT-2's Conv1D (in, out) to Linear's (out, in)).
    Transpose,
    /// Rows `start..start + len` of the (possibly transposed first) tensor: GPT-2's fused c_attn split
    /// into q, k, v. For a 1-D tensor, elements.
    Rows { transpose: bool, start: usize, len: usize },
    /// Hugging Face's rotate-half row order of wq / wk (or their biases) back to adjacent pairs, for a
    /// tensor of `heads` heads: row (h, i, half) of HF is row (h, 2i + half) of ours.
    UnpermuteRope { heads: usize },
    /// GPT-NeoX's fused query_key_value: rows laid out (heads, parts, HS), of which each head's rows
    /// of `part` (0 q, 1 k, 2 v) are taken; the first `rot` of them (the rotary dims; 0 for v) leave
    /// HF's rotate-half order for adjacent pairs: row (h, half * rot/2 + i) of HF is row (h, 2i + half)
    /// of ours, the rows past `rot` stay. For a 1-D tensor (the bias), elements.
    HeadRows { heads: usize, parts: usize, part: usize, rot: usize },
}

/// Where one of our tensors comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: String,
    /// Byte offset of the stored tensor's data in `file`.
    pub offset: u64,
    pub dtype: DType,
    /// The stored shape.
    pub stored: Vec<usize>,
    /// The foreign name (for messages), e.g. "h.0.attn.c_attn.weight" or "wq (layer 3)".
    pub foreign: String,
}

/// One of our tensors: its name in our checkpoints, its shape, and how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    pub shape: Vec<usize>,
    pub source: Source,
    pub op: Op,
}

/// The model families we open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// GPT-2: learned positions, pre-norm LayerNorm with biases, GELU (tanh), biases everywhere, tied head.
    Gpt2,
    /// Llama (HF `LlamaForCausalLM` or llama2.c): RMSNorm, RoPE, GQA, SwiGLU, no biases.
    Llama,
    /// Qwen2: Llama plus q/k/v biases.
    Qwen2,
    /// GPT-NeoX (Pythia): LayerNorm with biases, RoPE on part of each head, fused per-head q/k/v,
    /// GELU (erf), untied `embed_out`, and (by default) the parallel residual.
    GptNeox,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::GptNeox => "gpt_neox",
        }
    }
}

/// The detected format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    HfDirectory,
    Llama2c,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::HfDirectory => "Hugging Face directory",
            Format::Llama2c => "llama2.c model.bin",
        }
    }
}

/// The dimensions and options a foreign model declares, in our terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Dims {
    pub vocab_size: usize,
    pub d_model: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// FFN hidden width (GPT-2: 4 d unless n_inner; Llama: intermediate_size / hidden_dim).
    pub ffn_hidden: usize,
    pub context: usize,
    pub norm_eps: f32,
    /// RoPE base (Llama / Qwen2); 0 for GPT-2.
    pub rope_theta: f32,
    /// The output head shares the token embedding.
    pub tied: bool,
    /// q/k/v projections carry biases (GPT-2, Qwen2; GPT-NeoX's attention_bias, which covers its
    /// output projection too).
    pub qkv_bias: bool,
    /// RoPE on the first `rotary_dims` of each head (GPT-NeoX's rotary_pct); 0 = the whole head.
    pub rotary_dims: usize,
    /// GPT-NeoX's use_parallel_residual.
    pub parallel_residual: bool,
    /// Our name of the FFN's activation ("gelu_tanh", "gelu_erf", "swiglu").
    pub activation: &'static str,
}

/// A foreign checkpoint, checked and mapped onto our tensor names.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub format: Format,
    pub family: Family,
    /// The architecture as the files name it, e.g. "GPT2LMHeadModel".
    pub declared: String,
    pub dims: Dims,
    pub tensors: Vec<TensorPlan>,
    /// The dtype most weights are stored in.
    pub dtype: DType,
}

impl Plan {
    /// Total number of parameters we load.
    pub fn param_count(&self) -> u64 {
        self.tensors.iter().map(|t| t.shape.iter().map(|&d| d as u64).product::<u64>()).sum()
    }
}

/// The most bytes of a tensor read at once. A tensor is read and widened piece by piece into its
/// destination, reserved once up front: reading it holds the destination and one piece, never the
/// file's bytes of the whole tensor beside their widened copy (a 2 GB llama2.c embedding was 4 GB).
pub const READ_PIECE: u64 = 16 << 20;

/// An empty vector with room for `n` values, or a one-line error (never an abort) when the system
/// cannot give the memory or `n` does not fit this platform's address space.
pub fn try_with_capacity<T>(n: u64, what: &str) -> Result<Vec<T>> {
    let bytes = n.saturating_mul(std::mem::size_of::<T>() as u64);
    let fail = || FormatError(format!("out of memory: {what} needs {bytes} bytes and the allocation failed"));
    let n = usize::try_from(n).map_err(|_| fail())?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| fail())?;
    Ok(v)
}

/// Reads the `n` values of `t` as stored, piece by piece, each converted by `conv` into `out`.
fn read_pieces<T>(files: &dyn Files, t: &TensorPlan, size: u64, conv: impl Fn(&[u8], &mut Vec<T>)) -> Result<Vec<T>> {
    let s = &t.source;
    let n: u64 = s.stored.iter().map(|&d| d as u64).product();
    let mut out = try_with_capacity(n, &format!("{}: tensor {}", s.file, s.foreign))?;
    let per_piece = (READ_PIECE / size).max(1);
    let mut done = 0u64;
    while done < n {
        let k = per_piece.min(n - done);
        let raw = files.read_range(&s.file, s.offset + done * size, k * size)?;
        if raw.len() as u64 != k * size {
            return err(format!("{}: tensor {} ended early", s.file, s.foreign));
        }
        conv(&raw, &mut out);
        done += k;
    }
    Ok(out)
}

/// Reads one planned tensor as f32 in our layout.
pub fn read_tensor(files: &dyn Files, t: &TensorPlan) -> Result<Vec<f32>> {
    let dtype = t.source.dtype;
    let data = read_pieces(files, t, dtype.bytes(), |raw, out| match dtype {
        DType::F32 => out.extend(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        DType::F16 => out.extend(raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())),
        DType::BF16 => out.extend(raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
    })?;
    arrange(t, data)
}

/// Reads one planned tensor stored as F16 / BF16 in our layout, keeping the file's 16-bit values
/// (no widening: the GPU holds them as they are). An F32 tensor is an internal error.
pub fn read_tensor16(files: &dyn Files, t: &TensorPlan) -> Result<Vec<u16>> {
    let s = &t.source;
    if s.dtype == DType::F32 {
        return err(format!("internal: {} is F32, not 16-bit", s.foreign));
    }
    let data = read_pieces(files, t, 2, |raw, out| out.extend(raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]))))?;
    arrange(t, data)
}

/// The planned op on the values as stored (f32 or 16-bit bits: only moved, never computed on).
/// The ops that rearrange allocate their output fallibly (a second copy of the tensor, checked).
fn arrange<T: Copy + Default>(t: &TensorPlan, data: Vec<T>) -> Result<Vec<T>> {
    let s = &t.source;
    let zeroed = |n: usize| -> Result<Vec<T>> {
        let mut o = try_with_capacity(n as u64, &format!("{}: tensor {} rearranged", s.file, s.foreign))?;
        o.resize(n, T::default());
        Ok(o)
    };
    let (r, c) = match s.stored.as_slice() {
        [r, c] => (*r, *c),
        [n] => (*n, 1),
        _ => (data.len(), 1),
    };
    let transposed = |d: &[T]| -> Result<Vec<T>> {
        let mut o = zeroed(d.len())?;
        for i in 0..r {
            for j in 0..c {
                o[j * r + i] = d[i * c + j];
            }
        }
        Ok(o)
    };
    Ok(match &t.op {
        Op::Copy => data,
        Op::Transpose => transposed(&data)?,
        Op::Rows { transpose, start, len } => {
            let (m, width) = if *transpose { (transposed(&data)?, r) } else { (data, if s.stored.len() == 2 { c } else { 1 }) };
            m[start * width..(start + len) * width].to_vec()
        }
        Op::UnpermuteRope { heads } => {
            let width = if s.stored.len() == 2 { c } else { 1 };
            let hd = r / heads;
            let mut o = zeroed(data.len())?;
            for h in 0..*heads {
                for half in 0..2 {
                    for i in 0..hd / 2 {
                        let from = h * hd + half * (hd / 2) + i;
                        let to = h * hd + 2 * i + half;
                        o[to * width..(to + 1) * width].copy_from_slice(&data[from * width..(from + 1) * width]);
                    }
                }
            }
            o
        }
        Op::HeadRows { heads, parts, part, rot } => {
            let width = if s.stored.len() == 2 { c } else { 1 };
            let hd = r / (heads * parts);
            let mut o = try_with_capacity((heads * hd * width) as u64, &format!("{}: tensor {}", s.file, s.foreign))?;
            for h in 0..*heads {
                let base = (h * parts + part) * hd;
                for j in 0..hd {
                    // our row j: pair (j / 2) of the rotary dims, its half j % 2; past `rot`, the same row
                    let from = base + if j < *rot { (j % 2) * (rot / 2) + j / 2 } else { j };
                    o.extend_from_slice(&data[from * width..(from + 1) * width]);
                }
            }
            o
        }
    })
}

/// Reads every planned tensor: (our name, shape, f32 data).
pub fn read_tensors(files: &dyn Files, plan: &Plan) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
    plan.tensors.iter().map(|t| Ok((t.name.clone(), t.shape.clone(), read_tensor(files, t)?))).collect()
}

/// Detects the format of the files and plans the load: a `config.json` makes a Hugging Face directory,
/// else `model_bin` names a llama2.c checkpoint.
pub fn plan(files: &dyn Files, model_bin: Option<&str>) -> Result<Plan> {
    if files.size("config.json").is_some() {
        return hf::plan(files);
    }
    if let Some(bin) = model_bin {
        return llama2c::plan(files, bin);
    }
    err("no config.json (a Hugging Face model directory) and no llama2.c .bin among the files")
}

/// A foreign checkpoint opened for the engine: its plan (format, family, where each tensor came from) and
/// the checkpoint the model is built from (`Model::from_checkpoint`).
pub struct Opened {
    pub plan: Plan,
    /// `config`: our config of the model (`max_seq_len` = the model's context); `tensors`: exactly the
    /// declared tensors under our names, f32; `tokenizer` None (the caller loads tokenizer.json /
    /// tokenizer.bin with `Tokenizer::from_file_bytes`); `metadata` holds "format" and "family".
    pub checkpoint: Checkpoint,
}

/// Our config of a planned model: GPT-2 is our `decoder` with learned positions, GELU-tanh, the
/// config's LayerNorm eps and the head tied to the embedding; GPT-NeoX is our `decoder` with RoPE on
/// `rotary_dims` of each head, its activation, attention biases or none, an untied head and the
/// parallel residual when it has one; Llama / Qwen2 are our `llama` with the
/// explicit FFN width (`hidden_dim`), q/k/v biases (Qwen2) and a tied or untied head.
pub fn config_of(plan: &Plan) -> Result<ModelConfig> {
    let c = config_value(plan)?;
    let what = match plan.format {
        Format::HfDirectory => "config.json",
        Format::Llama2c => "the llama2.c header",
    };
    ModelConfig::from_value(&c).map_err(|e| FormatError(format!("{what}: the model does not fit tinyformer's limits: {e}")))
}

/// The JSON of [`config_of`], as our checkpoints store it (a model trained from a foreign one is
/// saved with it).
pub fn config_value(plan: &Plan) -> Result<serde_json::Value> {
    let d = &plan.dims;
    if d.head_dim * d.num_heads != d.d_model {
        return err(format!(
            "config.json: a head size of {} with {} heads is not the width {} / heads; tinyformer needs head_dim = hidden_size / num_attention_heads",
            d.head_dim, d.num_heads, d.d_model
        ));
    }
    let mut c = serde_json::json!({
        "vocab_size": d.vocab_size,
        "d_model": d.d_model,
        "num_layers": d.num_layers,
        "num_heads": d.num_heads,
        "max_seq_len": d.context,
        "norm_eps": d.norm_eps,
        "tie_embeddings": d.tied,
    });
    let extra = match plan.family {
        Family::Gpt2 => serde_json::json!({
            "arch": "decoder", "d_ff": d.ffn_hidden, "positions": "learned", "activation": d.activation,
        }),
        Family::GptNeox => serde_json::json!({
            "arch": "decoder", "d_ff": d.ffn_hidden, "positions": "rope", "rope_theta": d.rope_theta,
            "rotary_dims": d.rotary_dims, "activation": d.activation, "qkv_bias": d.qkv_bias,
            "parallel_residual": d.parallel_residual,
        }),
        Family::Llama | Family::Qwen2 => serde_json::json!({
            "arch": "llama", "num_kv_heads": d.num_kv_heads, "hidden_dim": d.ffn_hidden, "rope_theta": d.rope_theta,
            "qkv_bias": d.qkv_bias,
        }),
    };
    if let (Some(c), serde_json::Value::Object(x)) = (c.as_object_mut(), extra) {
        c.extend(x);
        // 0 means the whole head: the field is left out, as our configs write it
        if c.get("rotary_dims").and_then(|r| r.as_u64()) == Some(0) {
            c.remove("rotary_dims");
        }
    }
    Ok(c)
}

/// Opens a foreign checkpoint for the engine: plans it ([`plan`]), makes our config ([`config_of`]),
/// runs `check_config` (the memory budget) before any tensor is read or widened, checks that the plan
/// holds exactly the tensors our architecture declares, then reads them (our layout) and refuses
/// NaN / infinite weights: f32, except the matmul weights and embeddings of an F16 / BF16 model, which
/// keep the file's 16-bit values (`HostTensor::bits`). Every error is one line.
pub fn open(
    files: &dyn Files,
    model_bin: Option<&str>,
    check_config: impl FnOnce(&ModelConfig) -> std::result::Result<(), String>,
) -> Result<Opened> {
    open16(files, model_bin, |c, _| check_config(c))
}

/// [`open`] whose check also learns whether every tensor that `Role::keeps_16bit` is stored F16 /
/// BF16 (then kept 16-bit: `memory::demand_for`'s `weights16` on a backend that keeps them so).
pub fn open16(
    files: &dyn Files,
    model_bin: Option<&str>,
    check_config: impl FnOnce(&ModelConfig, bool) -> std::result::Result<(), String>,
) -> Result<Opened> {
    let mut lazy = open16_lazy(files, model_bin, check_config)?;
    let mut tensors = HashMap::with_capacity(lazy.opened.plan.tensors.len());
    for t in &lazy.opened.plan.tensors {
        tensors.insert(t.name.clone(), read_host(files, t, &lazy.roles)?);
    }
    lazy.opened.checkpoint.tensors = tensors;
    Ok(lazy.opened)
}

/// [`open16`] without reading any tensor: the checkpoint holds the config and metadata and no tensors,
/// which [`Lazy::source`] reads one at a time as the model takes them (`Model::from_source`), so a load
/// never holds the file's tensors and the backend's copies of them all at once.
pub fn open16_lazy<'f>(
    files: &'f dyn Files,
    model_bin: Option<&str>,
    check_config: impl FnOnce(&ModelConfig, bool) -> std::result::Result<(), String>,
) -> Result<Lazy<'f>> {
    let plan = plan(files, model_bin)?;
    let config = config_of(&plan)?;
    let declared = Listing::of(&config);
    let by_name: HashMap<&str, &TensorPlan> = plan.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let weights16 = declared
        .iter()
        .filter(|d| d.role.keeps_16bit())
        .all(|d| by_name.get(d.name.as_str()).is_some_and(|t| t.source.dtype != DType::F32));
    check_config(&config, weights16).map_err(FormatError)?;
    if declared.len() != plan.tensors.len() {
        return err(format!(
            "internal: the {} plan holds {} tensors but the architecture declares {}",
            plan.family.as_str(),
            plan.tensors.len(),
            declared.len()
        ));
    }
    for d in &declared {
        match by_name.get(d.name.as_str()) {
            Some(t) if t.shape == d.shape => {}
            Some(t) => return err(format!("internal: {} is planned as {:?} but declared {:?}", d.name, t.shape, d.shape)),
            None => return err(format!("internal: the {} plan has no {}", plan.family.as_str(), d.name)),
        }
    }
    let roles: HashMap<String, Role> = declared.iter().map(|d| (d.name.clone(), d.role)).collect();
    let metadata =
        HashMap::from([("format".to_string(), plan.format.as_str().to_string()), ("family".to_string(), plan.family.as_str().to_string())]);
    let checkpoint = Checkpoint { config, tokenizer: None, metadata, tensors: HashMap::new() };
    Ok(Lazy { files, roles, weights16, opened: Opened { checkpoint, plan } })
}

/// A foreign checkpoint opened and checked, its tensors not read yet ([`open16_lazy`]).
pub struct Lazy<'f> {
    files: &'f dyn Files,
    roles: HashMap<String, Role>,
    /// every tensor that `Role::keeps_16bit` is F16 / BF16 in the files
    pub weights16: bool,
    /// the plan, and the checkpoint without its tensors
    pub opened: Opened,
}

impl<'f> Lazy<'f> {
    /// The tensors, read from the files as they are taken.
    pub fn source(&self) -> LazySource<'_> {
        LazySource { files: self.files, plan: &self.opened.plan, roles: &self.roles, bad: vec![] }
    }
}

/// Reads one planned tensor as [`open16`] holds it: the file's 16-bit values for the matmul weights and
/// embeddings of an F16 / BF16 file, f32 otherwise.
fn read_host(files: &dyn Files, t: &TensorPlan, roles: &HashMap<String, Role>) -> Result<HostTensor> {
    let dtype = match t.source.dtype {
        DType::F32 => FloatDtype::F32,
        DType::F16 => FloatDtype::F16,
        DType::BF16 => FloatDtype::BF16,
    };
    // matmul weights and embeddings of a 16-bit file keep its bits (the GPU holds them 16-bit)
    let keep16 = dtype != FloatDtype::F32 && roles.get(t.name.as_str()).is_some_and(|r| r.keeps_16bit());
    let (data, bits) = if keep16 { (vec![], read_tensor16(files, t)?) } else { (read_tensor(files, t)?, vec![]) };
    // NaN/Inf weights load; the model names them when its logits come out non-finite
    // (`Checkpoint::non_finite`)
    Ok(HostTensor { shape: t.shape.clone(), data, dtype, bits })
}

/// [`Lazy::source`]: reads each tensor when the model takes it, and tallies its NaN / Inf values.
pub struct LazySource<'a> {
    files: &'a dyn Files,
    plan: &'a Plan,
    roles: &'a HashMap<String, Role>,
    /// (name, NaN, Inf, values) of each tensor read with non-finite values
    bad: Vec<(String, usize, usize, usize)>,
}

impl crate::model::weights::TensorSource for LazySource<'_> {
    fn take_tensor(&mut self, name: &str) -> crate::error::Result<Option<HostTensor>> {
        let Some(t) = self.plan.tensors.iter().find(|t| t.name == name) else { return Ok(None) };
        let h = read_host(self.files, t, self.roles).map_err(|e| crate::error::TfError::Checkpoint(e.0))?;
        let (nan, inf) = crate::model::checkpoint::count_non_finite(&h);
        if nan + inf > 0 {
            self.bad.push((name.to_string(), nan, inf, h.len()));
        }
        Ok(Some(h))
    }
    fn non_finite(&mut self) -> Option<String> {
        crate::model::checkpoint::non_finite_note(std::mem::take(&mut self.bad))
    }
}
