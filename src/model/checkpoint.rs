//! Loading a `.safetensors` checkpoint (the public contract: users train with PyTorch and drop the
//! file on the page).
//!
//! [`Checkpoint::from_bytes`] reads the header with the `safetensors` crate, with our checks around
//! it (before it, where the crate would accept or misname a problem; after it, when it rejects a
//! file, to find which entry and why), so that every problem a malformed file can have gets its own
//! one-line message (naming the tensor, field or byte offsets), nothing panics, and nothing is
//! allocated from an unchecked length:
//!
//! 1. foreign files (Git LFS pointer, HTML page, text/JSON, ZIP = `torch.save`, pickle, GGUF);
//! 2. the 8-byte header length (file too short, past the end, over 100 MB);
//! 3. the header: UTF-8, JSON, an object, no duplicate names, each entry with dtype/shape/data_offsets;
//! 4. the data layout: known dtype, shape product without overflow, offsets in order, byte span equal
//!    to shape x dtype size, nothing past the end, no overlap, no gap, no trailing bytes;
//! 5. `__metadata__`: present, string values, a `"config"` that is a valid [`ModelConfig`], an
//!    optional `"tokenizer"` that is JSON;
//! 6. every tensor the architecture declares (`Weights::declare`, under the names and orientation
//!    of the file's [`Layout`]): present, F32/F16/BF16, not empty, the right shape, and finite.
//!
//! Only the required tensors are kept, converted to f32 (one copy), except the matmul weights and
//! embedding tables of an F16 / BF16 file ([`Role::keeps_16bit`]): those keep the file's 16-bit
//! values ([`HostTensor::bits`]), which the GPU holds as they are (2 bytes a value) and the CPU
//! backends widen at upload. Extra tensors (registered buffers
//! such as `*.pos_encoding.pe`, optimizer leftovers) are checked for layout only and otherwise ignored,
//! whatever their dtype.

use super::config::{Arch, ConfigError, ModelConfig};
use super::weights::{Declared, Listing, Role};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Largest accepted JSON header (the limit of the `safetensors` crate).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The floating-point dtypes the loader converts to f32.
pub const SUPPORTED_DTYPES: &str = "F32, F16 and BF16";

/// The on-disk dtype of a loaded tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatDtype {
    F32,
    F16,
    BF16,
}

impl FloatDtype {
    pub fn as_str(self) -> &'static str {
        match self {
            FloatDtype::F32 => "F32",
            FloatDtype::F16 => "F16",
            FloatDtype::BF16 => "BF16",
        }
    }
}

/// A required tensor in host memory, row-major, of f32 or 16-bit values: converted to f32 (`data.len() == shape.iter().product()`), or,
/// for the matmul weights and embeddings of a 16-bit file, the file's 16-bit values as they are
/// (`bits`, `data` then empty). [`HostTensor::values`] gives f32 either way.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// The dtype it had in the file.
    pub dtype: FloatDtype,
    /// The file's f16 / bf16 bits when the tensor is kept 16-bit (`dtype` says which), else empty.
    pub bits: Vec<u16>,
}

impl HostTensor {
    /// Whether the tensor holds the file's 16-bit values (`bits`) rather than f32 (`data`).
    pub fn is_16bit(&self) -> bool {
        !self.bits.is_empty()
    }
    /// The number of values.
    pub fn len(&self) -> usize {
        if self.is_16bit() {
            self.bits.len()
        } else {
            self.data.len()
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values as f32 (widened from `bits` when kept 16-bit; exact).
    pub fn values(&self) -> Cow<'_, [f32]> {
        if self.is_16bit() {
            Cow::Owned(widen16(&self.bits, self.dtype))
        } else {
            Cow::Borrowed(&self.data)
        }
    }
    /// The tensor as f32 (`bits` widened).
    pub fn into_f32(self) -> HostTensor {
        if !self.is_16bit() {
            return self;
        }
        HostTensor { data: widen16(&self.bits, self.dtype), shape: self.shape, dtype: self.dtype, bits: vec![] }
    }
}

/// f16 (`dtype` F16) or bf16 (otherwise) bits as f32: exact.
pub fn widen16(bits: &[u16], dtype: FloatDtype) -> Vec<f32> {
    match dtype {
        FloatDtype::F16 => bits.iter().map(|&b| half::f16::from_bits(b).to_f32()).collect(),
        _ => bits.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect(),
    }
}

/// (NaN, infinite) counts of f16 / bf16 bits: an all-ones exponent.
pub fn non_finite16(bits: &[u16], dtype: FloatDtype) -> (usize, usize) {
    let (exp, man) = if dtype == FloatDtype::F16 { (0x7c00u16, 0x03ffu16) } else { (0x7f80, 0x007f) };
    let (mut nan, mut inf) = (0, 0);
    for &b in bits {
        if b & exp == exp {
            if b & man != 0 {
                nan += 1;
            } else {
                inf += 1;
            }
        }
    }
    (nan, inf)
}

/// (NaN, infinite) counts of a tensor's values.
pub fn count_non_finite(t: &HostTensor) -> (usize, usize) {
    let (mut nan, mut inf) = non_finite16(&t.bits, t.dtype);
    for &x in &t.data {
        nan += x.is_nan() as usize;
        inf += x.is_infinite() as usize;
    }
    (nan, inf)
}

/// The one line naming the tensors with NaN / Inf values, (name, NaN, Inf, values) each: the first
/// by name, and how many more (`Checkpoint::non_finite`).
pub fn non_finite_note(mut bad: Vec<(String, usize, usize, usize)>) -> Option<String> {
    bad.sort_by(|a, b| a.0.cmp(&b.0));
    let mut bad = bad.into_iter();
    let (name, nan, inf, total) = bad.next()?;
    let more = bad.count();
    let more = if more > 0 { format!(" (and {more} more tensors)") } else { String::new() };
    Some(format!("tensor {} holds {nan} NaN and {inf} Inf of {total} values{more}", show(&name)))
}

/// A validated checkpoint: the config, the tokenizer JSON if any, the raw metadata and the
/// required tensors as f32.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub config: ModelConfig,
    /// `__metadata__["tokenizer"]`, checked to be valid JSON (its content is the tokenizer's business).
    pub tokenizer: Option<String>,
    /// The rest of `__metadata__` as stored ("config" included; "tokenizer" moved to `tokenizer`).
    pub metadata: HashMap<String, String>,
    /// Every tensor of `config.expected_tensors()`, by name. Nothing else.
    pub tensors: HashMap<String, HostTensor>,
}

/// How a family of checkpoints names and stores the tensors of [`Weights::declare`]
/// (crate::model::forward::weights). Our files, like the seeds' PyTorch modules, use the declared names as
/// they are ([`Canonical`]). Other layouts (src/formats: Hugging Face GPT-2 / Llama / Qwen2,
/// llama2.c) implement this: the checkpoint then looks each declared tensor up under the file's
/// name, checks it against the file's shape, and hands it to the model by its declared name, in
/// the declared (out, in) orientation.
pub trait Layout {
    /// The name under which the file stores the declared tensor `declared`.
    fn file_name<'a>(&self, declared: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(declared)
    }
    /// Whether the file stores this 2-D tensor transposed: GPT-2's Conv1D keeps a matmul weight
    /// as (in, out) where we declare (out, in).
    fn transposed(&self, _declared: &str, _role: Role) -> bool {
        false
    }
}

/// The declared names, as the seeds' PyTorch modules write them.
pub struct Canonical;

impl Layout for Canonical {}

impl Checkpoint {
    /// Parses and validates a checkpoint. See the module docs for the order of the checks.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        Self::from_bytes_checked(bytes, |_| Ok(()))
    }

    /// [`Checkpoint::from_bytes`] with a check of the config (the memory budget) that runs after the
    /// header is validated and before any tensor is converted: its error becomes
    /// [`CheckpointError::OverBudget`].
    pub fn from_bytes_checked(
        bytes: &[u8],
        check_config: impl FnOnce(&ModelConfig) -> Result<(), String>,
    ) -> Result<Checkpoint, CheckpointError> {
        Self::from_bytes_in(bytes, &Canonical, check_config)
    }

    /// [`Checkpoint::from_bytes_checked`] for a file in another [`Layout`]: every declared tensor
    /// is looked up and checked under the layout's name and orientation, and kept under its
    /// declared name, transposed back where the layout stores it transposed. Messages name the
    /// file's tensors, as the person who made the file knows them.
    pub fn from_bytes_in(
        bytes: &[u8],
        layout: &dyn Layout,
        check_config: impl FnOnce(&ModelConfig) -> Result<(), String>,
    ) -> Result<Checkpoint, CheckpointError> {
        Self::from_bytes_in16(bytes, layout, |c, _| check_config(c))
    }

    /// [`Checkpoint::from_bytes_in`] whose check also learns whether the file stores every tensor
    /// that [`Role::keeps_16bit`] as F16 / BF16 (the loaded checkpoint then keeps them 16-bit, and
    /// the GPU holds them in half the bytes: `memory::demand_for`).
    pub fn from_bytes_in16(
        bytes: &[u8],
        layout: &dyn Layout,
        check_config: impl FnOnce(&ModelConfig, bool) -> Result<(), String>,
    ) -> Result<Checkpoint, CheckpointError> {
        let header = parse_header(bytes)?;
        let (metadata, config, tokenizer) = read_metadata(header.metadata)?;
        let header = header.tensors;
        let file16 = Listing::of(&config).iter().filter(|d| d.role.keeps_16bit()).all(|d| {
            let name = layout.file_name(&d.name);
            header.get(name.as_ref()).and_then(|e| e.float_dtype()).is_some_and(|t| t != FloatDtype::F32)
        });
        check_config(&config, file16).map_err(CheckpointError::OverBudget)?;

        // Every declared tensor under the file's name and in the file's orientation.
        struct Want {
            declared: Declared,
            file: String,
            file_shape: Vec<usize>,
            transposed: bool,
        }
        let wanted: Vec<Want> = Listing::of(&config)
            .into_iter()
            .map(|d| {
                let transposed = d.shape.len() == 2 && layout.transposed(&d.name, d.role);
                let file_shape = if transposed { vec![d.shape[1], d.shape[0]] } else { d.shape.clone() };
                Want { file: layout.file_name(&d.name).into_owned(), declared: d, file_shape, transposed }
            })
            .collect();

        // Required tensors: presence, dtype, emptiness, shape -- all before converting anything.
        for w in &wanted {
            let (name, shape) = (&w.file, &w.file_shape);
            let Some(entry) = header.get(name.as_str()) else {
                let missing = wanted.iter().filter(|w| !header.contains_key(w.file.as_str())).count();
                return Err(CheckpointError::MissingTensor {
                    name: name.clone(),
                    expected: shape.clone(),
                    missing_count: missing,
                    hint: missing_hint(name, config.arch, &header),
                });
            };
            if entry.float_dtype().is_none() {
                return Err(CheckpointError::UnsupportedDtype { name: name.clone(), dtype: entry.dtype.to_string() });
            }
            if entry.numel == 0 {
                return Err(CheckpointError::EmptyTensor { name: name.clone(), found: entry.shape.clone(), expected: shape.clone() });
            }
            if entry.shape.len() != shape.len() || entry.shape.iter().zip(shape).any(|(&a, &b)| a != b as u64) {
                return Err(CheckpointError::WrongShape { name: name.clone(), expected: shape.clone(), found: entry.shape.clone() });
            }
        }

        let mut tensors = HashMap::with_capacity(wanted.len());
        for Want { declared, file, file_shape, transposed } in wanted {
            let Some((entry, dtype)) = header.get(file.as_str()).and_then(|e| Some((e, e.float_dtype()?))) else {
                return Err(CheckpointError::Safetensors(format!("tensor {} vanished", show(&file))));
            };
            let raw = &bytes[entry.span.0..entry.span.1];
            let oom = || CheckpointError::OutOfMemory { what: format!("tensor {}", show(&file)), bytes: entry.numel.saturating_mul(4) };
            let check_len = |n: usize| match n == entry.numel as usize {
                true => Ok(()),
                false => Err(CheckpointError::Safetensors(format!(
                    "tensor {} has {} bytes for {} elements",
                    show(&file),
                    raw.len(),
                    entry.numel
                ))),
            };
            if dtype != FloatDtype::F32 && declared.role.keeps_16bit() {
                // kept as the file stores it: no widening and re-narrowing
                let mut bits = convert16(raw).map_err(|_| oom())?;
                check_len(bits.len())?;
                if transposed {
                    bits = transpose(&bits, file_shape[0], file_shape[1]).map_err(|_| oom())?;
                }
                tensors.insert(declared.name, HostTensor { shape: declared.shape, data: vec![], dtype, bits });
                continue;
            }
            let mut data = convert(raw, dtype).map_err(|_| oom())?;
            check_len(data.len())?;
            if transposed {
                data = transpose(&data, file_shape[0], file_shape[1]).map_err(|_| oom())?;
            }
            tensors.insert(declared.name, HostTensor { shape: declared.shape, data, dtype, bits: vec![] });
        }
        // NaN/Inf weights load (the model can still be inspected); the model remembers them
        // (`Checkpoint::non_finite`) and a pass that turns them into logits says so in one line.
        Ok(Checkpoint { config, tokenizer, metadata, tensors })
    }

    /// Which weights hold NaN or Inf, in one phrase (`tensor "x" holds 2 NaN and 1 Inf of 88 values
    /// (and 3 more tensors)`), or None when all are finite. One pass over the weights, at load:
    /// such a model loads, and the forward names this when its logits come out non-finite.
    pub fn non_finite(&self) -> Option<String> {
        let bad = self
            .tensors
            .iter()
            .filter_map(|(name, t)| {
                let (nan, inf) = count_non_finite(t);
                (nan + inf > 0).then(|| (name.clone(), nan, inf, t.len()))
            })
            .collect();
        non_finite_note(bad)
    }

    /// Whether every tensor that [`Role::keeps_16bit`] is held 16-bit (an F16 / BF16 file):
    /// what `memory::demand_for` calls `weights16`. Before the weights are taken out.
    pub fn weights16(&self) -> bool {
        Listing::of(&self.config).iter().filter(|d| d.role.keeps_16bit()).all(|d| self.tensors.get(&d.name).is_some_and(|t| t.is_16bit()))
    }

    /// A required tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Moves a tensor out (e.g. to upload it to the GPU without a second copy).
    pub fn take(&mut self, name: &str) -> Option<HostTensor> {
        self.tensors.remove(name)
    }

    /// Number of parameters held (= `config.param_count()` after a successful load).
    pub fn param_count(&self) -> u64 {
        self.tensors.values().map(|t| t.len() as u64).sum()
    }

    /// The dtype of the file's weights: the one of the embedding, since PyTorch saves a model in one dtype.
    pub fn dtype(&self) -> Option<FloatDtype> {
        let first = self.config.expected_tensors().into_iter().next()?;
        self.tensors.get(&first.0).map(|t| t.dtype)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a checkpoint was rejected. Each message is one line for the person who dropped the file.
/// Offsets are relative to the start of the data section (as in the header) unless said otherwise.
/// Names, dtypes and shapes from the file are quoted through crate::error's helpers (escaped,
/// bounded, the same for every message).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckpointError {
    /// Fewer than the 8 bytes of the header length.
    #[error("not a safetensors file: {}", if *.len == 0 { "the file is empty (0 bytes)".to_string() } else {
        format!("it is only {len} bytes long (a safetensors file starts with an 8-byte header length); it contains {preview}")
    })]
    TooShort { len: usize, preview: String },
    /// A Git LFS pointer file instead of the weights.
    #[error("this is a Git LFS pointer, not the model (it starts with {preview}): run `git lfs pull` and use the real .safetensors file")]
    LfsPointer { preview: String },
    /// An HTML page (a download link saved instead of the file).
    #[error("this is an HTML page, not a safetensors file (it starts with {preview}): the download probably saved a web page; download the raw file instead")]
    HtmlPage { preview: String },
    /// Some other kind of file: `kind` says which ("a text file", "a JSON file", "a ZIP archive ...").
    #[error("not a safetensors file: this looks like {kind} (it starts with {preview}); {advice}")]
    NotSafetensors { kind: &'static str, advice: &'static str, preview: String },
    /// The header length is over [`MAX_HEADER_LEN`].
    #[error("not a valid safetensors file: the header length in the first 8 bytes is {header_len} bytes, over the 100 MB limit")]
    HeaderTooLarge { header_len: u64 },
    /// The header runs past the end of the file.
    #[error("safetensors header length is {header_len} bytes but the file has only {file_len} bytes after the 8-byte length: the file is truncated or not a safetensors file")]
    HeaderPastEnd { header_len: u64, file_len: usize },
    /// The header bytes are not UTF-8; `offset` is the file offset of the first bad byte.
    #[error("safetensors header is not UTF-8 text (invalid byte at file offset {offset}): the file is corrupt")]
    HeaderNotUtf8 { offset: usize },
    /// The header is not JSON.
    #[error("safetensors header is not valid JSON: {}", one_line(.message))]
    HeaderNotJson { message: String },
    /// The header is JSON but not an object; `found` is its JSON type.
    #[error("safetensors header must be a JSON object mapping tensor names to entries, but it is {found}")]
    HeaderNotObject { found: &'static str },
    /// A tensor name appears twice in the header.
    #[error("tensor {} appears twice in the safetensors header (duplicate name): the file is corrupt", show(.name))]
    DuplicateTensor { name: String },
    /// `__metadata__` appears twice in the header.
    #[error("the safetensors header has two \"__metadata__\" entries, so it is ambiguous which config applies: the file is corrupt")]
    DuplicateMetadata,
    /// A key appears twice inside one header entry (`owner` is the tensor's name or "__metadata__").
    #[error("{}", if .owner == "__metadata__" {
        format!("the safetensors __metadata__ has the key {} twice, so it is ambiguous which value applies: the file is corrupt", show(.field))
    } else {
        format!("tensor {} has the field {} twice in its header entry, so it is ambiguous which applies: the file is corrupt", show(.owner), show(.field))
    })]
    DuplicateField { owner: String, field: String },
    /// A header entry lacks dtype/shape/data_offsets or has them of the wrong form.
    #[error("tensor {} has a bad header entry: {problem} (each entry needs \"dtype\", \"shape\" and \"data_offsets\")", show(.name))]
    BadTensorEntry { name: String, problem: String },
    /// A tensor's dtype is not a safetensors dtype at all, or a required tensor's dtype is not F32/F16/BF16.
    #[error("tensor {} has dtype {} which is not supported: tinyformer reads {SUPPORTED_DTYPES} (convert with model.float() before saving)", show(.name), show(.dtype))]
    UnsupportedDtype { name: String, dtype: String },
    /// The product of a shape (times the dtype size) overflows.
    #[error("tensor {} has shape {} whose size overflows: the header is corrupt", show(.name), shape_str(.shape))]
    ShapeOverflow { name: String, shape: Vec<u64> },
    /// data_offsets [begin, end] with begin > end.
    #[error("tensor {} has data_offsets [{begin}, {end}] out of order (begin after end): the header is corrupt", show(.name))]
    OffsetsOutOfOrder { name: String, begin: u64, end: u64 },
    /// A sub-byte dtype (F4, F6) whose shape holds a number of bits that is not a whole number of bytes.
    #[error("tensor {} of dtype {dtype} and shape {} holds {bits} bits, which is not a whole number of bytes: the header is corrupt", show(.name), shape_str(.shape))]
    SpanNotWholeBytes { name: String, dtype: String, shape: Vec<u64>, bits: u64 },
    /// The byte span is not shape x dtype size.
    #[error("tensor {} of dtype {dtype} and shape {} needs {expected_bytes} bytes but its data_offsets [{begin}, {end}] span {} bytes: shape x dtype size does not match the byte span", show(.name), shape_str(.shape), .end - .begin)]
    SpanMismatch { name: String, dtype: String, shape: Vec<u64>, expected_bytes: u64, begin: u64, end: u64 },
    /// A tensor ends past the end of the data section (truncated file or corrupt header).
    #[error("tensor {} has data_offsets [{begin}, {end}] past the end of the data section ({data_len} bytes): the file is truncated (incomplete download?) or its header is corrupt", show(.name))]
    OffsetsPastEnd { name: String, begin: u64, end: u64, data_len: u64 },
    /// Two tensors share bytes.
    #[error("tensor {} at data_offsets [{begin}, {end}] overlaps tensor {} which ends at {previous_end}: the header is corrupt", show(.name), show(.previous))]
    OffsetsOverlap { name: String, begin: u64, end: u64, previous: String, previous_end: u64 },
    /// Unused bytes between two tensors (or before the first one).
    #[error("gap in the data section: {}", match .previous {
        Some(p) => format!("tensor {} ends at byte {previous_end} but the next tensor {} starts at {begin}: the header is corrupt", show(p), show(.name)),
        None => format!("the first tensor {} starts at byte {begin} instead of 0: the header is corrupt", show(.name)),
    })]
    OffsetsGap { name: String, begin: u64, previous: Option<String>, previous_end: u64 },
    /// Bytes after the last tensor.
    #[error("{} trailing bytes after the last tensor (tensors end at byte {data_end} of a {data_len}-byte data section): the file is corrupt or was appended to", .data_len - .data_end)]
    TrailingBytes { data_end: u64, data_len: u64 },
    /// No `__metadata__` in the header.
    #[error("the safetensors file has no __metadata__, so no model config: save it with save_file(state_dict, path, metadata={{\"config\": json.dumps(config)}})")]
    NoMetadata,
    /// `__metadata__` is not a map of strings.
    #[error("the safetensors __metadata__ is invalid: {problem}")]
    BadMetadata { problem: String },
    /// `__metadata__` has no "config"; `keys` lists what it has.
    #[error("the safetensors __metadata__ has no \"config\" entry (it has: {}): save the model config as metadata[\"config\"] = json.dumps(config)", key_list(.keys))]
    NoConfig { keys: Vec<String> },
    /// The config is invalid (names the field).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `__metadata__["tokenizer"]` is not JSON.
    #[error("the __metadata__ \"tokenizer\" entry is not valid JSON: {}", one_line(.message))]
    TokenizerNotJson { message: String },
    /// A required tensor is absent.
    #[error("missing tensor {} (expected shape {}){}{}", show(.name), shape_str(.expected),
        if *.missing_count > 1 { format!(" and {} more required tensors are missing", .missing_count - 1) } else { String::new() },
        .hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    MissingTensor { name: String, expected: Vec<usize>, missing_count: usize, hint: Option<String> },
    /// A required tensor has the wrong shape.
    #[error("tensor {} has shape {} but the config needs {}", show(.name), shape_str(.found), shape_str(.expected))]
    WrongShape { name: String, expected: Vec<usize>, found: Vec<u64> },
    /// A required tensor has zero elements.
    #[error("tensor {} is empty (shape {}, zero elements) but the model needs shape {}", show(.name), shape_str(.found), shape_str(.expected))]
    EmptyTensor { name: String, expected: Vec<usize>, found: Vec<u64> },
    /// The safetensors crate rejected a file our validation accepted (should not happen).
    #[error("safetensors could not read the file: {0}")]
    Safetensors(String),
    /// The config's memory demand is over the budget (the message names the total and the biggest buffers).
    #[error("{0}")]
    OverBudget(String),
    /// An allocation failed (the system is out of memory).
    #[error("out of memory: {what} needs {bytes} bytes and the allocation failed")]
    OutOfMemory { what: String, bytes: u64 },
}

impl From<CheckpointError> for TfError {
    fn from(e: CheckpointError) -> Self {
        match e {
            CheckpointError::OverBudget(_) | CheckpointError::OutOfMemory { .. } => TfError::Memory(e.to_string()),
            e => TfError::Checkpoint(e.to_string()),
        }
    }
}

use crate::error::{json_snippet, quote as show, shape_str, TfError};

fn one_line(s: &str) -> String {
    crate::error::one_line(&s.replace(['\n', '\r'], " "))
}

/// At most 8 keys, quoted, for [`CheckpointError::NoConfig`].
fn key_list(keys: &[String]) -> String {
    if keys.is_empty() {
        return "nothing".into();
    }
    keys.iter().take(8).map(|k| show(k)).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------------
// Sniffing foreign files

/// The first bytes of a file, rendered as an escaped string (at most 32 bytes).
fn preview(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(32)];
    let mut s = String::from("\"");
    for &b in head {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    if bytes.len() > 32 {
        s.push_str("...");
    }
    s
}

/// Whether the first bytes read as text: valid UTF-8 (a character cut at the end of the window is
/// fine) without control characters other than tab and newlines. A byte >= 0x80 counts only as
/// part of a valid UTF-8 sequence, so binary data with high bytes is not "a text file".
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64)];
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
        Err(_) => return false,
    };
    text.len() >= 8 && text.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
}

/// Recognises files that cannot be a safetensors file from their first bytes. Every pattern here
/// would give a header length over 100 MB or past the end, so a valid file never matches.
fn sniff(bytes: &[u8]) -> Option<CheckpointError> {
    let mut start = bytes;
    if let Some(rest) = start.strip_prefix(b"\xef\xbb\xbf") {
        start = rest; // UTF-8 BOM
    }
    let ws = start.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let trimmed = &start[ws..];
    let lower: Vec<u8> = trimmed.iter().take(16).map(|b| b.to_ascii_lowercase()).collect();
    let p = preview(trimmed);
    if trimmed.starts_with(b"version https://git-lfs") {
        return Some(CheckpointError::LfsPointer { preview: p });
    }
    if lower.starts_with(b"<!doctype") || lower.starts_with(b"<html") || lower.starts_with(b"<head") || lower.starts_with(b"<body") {
        return Some(CheckpointError::HtmlPage { preview: p });
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Some(CheckpointError::NotSafetensors {
            kind: "a ZIP archive (the torch.save format of .pt/.pth/.bin files)",
            advice: "convert it with safetensors.torch.save_file(model.state_dict(), \"model.safetensors\", metadata={\"config\": ...})",
            preview: preview(bytes),
        });
    }
    if bytes.starts_with(b"GGUF") {
        return Some(CheckpointError::NotSafetensors {
            kind: "a GGUF file",
            advice: "tinyformer loads .safetensors checkpoints",
            preview: preview(bytes),
        });
    }
    if looks_like_text(bytes) {
        let (kind, advice) = if trimmed.starts_with(b"{") || trimmed.starts_with(b"[") {
            ("a JSON file", "a checkpoint is a binary .safetensors file, not its config or a JSON export")
        } else {
            ("a text file", "a checkpoint is a binary .safetensors file")
        };
        return Some(CheckpointError::NotSafetensors { kind, advice, preview: p });
    }
    None
}

/// Called only when the header length is implausible: a pickle (torch.save with
/// `_use_new_zipfile_serialization=False`) starts with 0x80 and the protocol number.
fn sniff_binary(bytes: &[u8]) -> Option<CheckpointError> {
    if bytes.len() >= 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
        return Some(CheckpointError::NotSafetensors {
            kind: "a Python pickle (an old-style torch.save file)",
            advice: "convert it with safetensors.torch.save_file(model.state_dict(), \"model.safetensors\", metadata={\"config\": ...})",
            preview: preview(bytes),
        });
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Header

/// The header's top-level entries in file order, keeping duplicates (serde_json's map keeps the
/// last), each as its raw JSON text so that duplicated keys inside an entry can be found too.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The first key that appears twice in a JSON object (values are skipped, not kept).
struct Pairs(Option<String>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut seen = HashSet::new();
                let mut dup = None;
                while let Some(k) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    if dup.is_none() && !seen.insert(k.clone()) {
                        dup = Some(k);
                    }
                }
                Ok(Pairs(dup))
            }
        }
        d.deserialize_map(V)
    }
}

/// One tensor entry of the header, as the safetensors crate read it.
#[derive(Debug)]
struct Entry {
    dtype: safetensors::Dtype,
    shape: Vec<u64>,
    numel: u64,
    /// [begin, end) in the file (not the data section)
    span: (usize, usize),
}

impl Entry {
    fn float_dtype(&self) -> Option<FloatDtype> {
        match self.dtype {
            safetensors::Dtype::F32 => Some(FloatDtype::F32),
            safetensors::Dtype::F16 => Some(FloatDtype::F16),
            safetensors::Dtype::BF16 => Some(FloatDtype::BF16),
            _ => None,
        }
    }
}

struct Header {
    /// `__metadata__`: the one copy of its strings (the tokenizer can be most of the file)
    metadata: Option<HashMap<String, String>>,
    tensors: HashMap<String, Entry>,
}

/// A dtype name of the header as the safetensors crate knows it (its table, not a copy of it).
fn dtype_of(name: &str) -> Option<safetensors::Dtype> {
    safetensors::Dtype::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(name)).ok()
}

/// The header, read by the safetensors crate on top of our checks. Ours come first where the crate
/// would accept or misname the problem: foreign files, the 8-byte length, UTF-8, a non-object
/// header, duplicated names and fields (serde keeps the last of two equal keys). When the crate
/// rejects the rest, [`diagnose`] finds which entry and says why in our words.
///
/// Memory: the header text is borrowed from `bytes`. The crate's parse peaks at three copies of
/// the metadata strings (it buffers the header on the way to its map); its copy is dropped before
/// ours is read from the header text, so a load holds at most the file plus three times its
/// metadata (tests/load_memory.rs).
fn parse_header(bytes: &[u8]) -> Result<Header, CheckpointError> {
    if let Some(e) = sniff(bytes) {
        return Err(e);
    }
    if bytes.len() < 8 {
        return Err(CheckpointError::TooShort { len: bytes.len(), preview: preview(bytes) });
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]);
    let header_len = u64::from_le_bytes(len8);
    let available = (bytes.len() - 8) as u64;
    if header_len > MAX_HEADER_LEN {
        return Err(sniff_binary(bytes).unwrap_or(CheckpointError::HeaderTooLarge { header_len }));
    }
    if header_len > available {
        return Err(sniff_binary(bytes).unwrap_or(CheckpointError::HeaderPastEnd { header_len, file_len: bytes.len() - 8 }));
    }
    let header_end = 8 + header_len as usize; // <= bytes.len(), checked above
    let text = std::str::from_utf8(&bytes[8..header_end]).map_err(|e| CheckpointError::HeaderNotUtf8 { offset: 8 + e.valid_up_to() })?;
    let data_len = (bytes.len() - header_end) as u64;

    // Not an object? Say so before serde's "expected a JSON object".
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {}
        None => return Err(CheckpointError::HeaderNotJson { message: "the header is empty".into() }),
        Some(_) => {
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                return Err(CheckpointError::HeaderNotObject { found: json_kind(&v) });
            }
        }
    }
    let metadata_json = find_duplicates(text)?;

    let (n, meta) = match safetensors::SafeTensors::read_metadata(bytes) {
        Ok(m) => m,
        Err(e) => {
            diagnose(text, data_len)?;
            return Err(CheckpointError::Safetensors(one_line(&e.to_string())));
        }
    };
    let base = 8 + n;
    let mut tensors = HashMap::with_capacity(meta.tensors().len());
    for (name, info) in meta.tensors() {
        let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        let numel = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| CheckpointError::ShapeOverflow { name: name.clone(), shape: shape.clone() })?;
        let span = (base + info.data_offsets.0, base + info.data_offsets.1);
        tensors.insert(name, Entry { dtype: info.dtype, shape, numel, span });
    }
    // The crate's copy of the metadata goes before ours is made, so that at most two exist at once.
    drop(meta);
    let metadata = match metadata_json {
        None => None,
        Some(json) => Some(serde_json::from_str(json).map_err(|e| CheckpointError::BadMetadata { problem: one_line(&e.to_string()) })?),
    };
    Ok(Header { metadata, tensors })
}

/// Duplicated tensor names, a duplicated `__metadata__`, or a key twice inside one entry: values
/// are skipped, not copied. Returns the JSON text of `__metadata__` (borrowed).
fn find_duplicates(text: &str) -> Result<Option<&str>, CheckpointError> {
    let Entries(entries) = serde_json::from_str::<Entries>(text).map_err(|e| CheckpointError::HeaderNotJson { message: e.to_string() })?;
    let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
    for (name, _) in &entries {
        if !seen.insert(name.as_str()) {
            if name == "__metadata__" {
                return Err(CheckpointError::DuplicateMetadata);
            }
            return Err(CheckpointError::DuplicateTensor { name: name.clone() });
        }
    }
    for (name, raw) in &entries {
        let text = raw.get();
        if text.trim_start().starts_with('{') {
            if let Ok(Pairs(Some(field))) = serde_json::from_str::<Pairs>(text) {
                return Err(CheckpointError::DuplicateField { owner: name.clone(), field });
            }
        }
    }
    Ok(entries.iter().find(|(name, _)| name == "__metadata__").map(|(_, raw)| raw.get()))
}

/// Why the safetensors crate rejected a header that passed [`parse_header`]'s own checks: each
/// entry and the data layout checked in file order, for a message that names the tensor and the
/// numbers. Runs only on that error path. Ok(()) when it finds nothing (the crate's message is
/// reported then).
fn diagnose(text: &str, data_len: u64) -> Result<(), CheckpointError> {
    let entries: Vec<(String, Value)> = serde_json::from_str::<Entries>(text)
        .map_err(|e| CheckpointError::HeaderNotJson { message: e.to_string() })?
        .0
        .into_iter()
        .map(|(name, raw)| {
            Ok((name, serde_json::from_str(raw.get()).map_err(|e| CheckpointError::HeaderNotJson { message: e.to_string() })?))
        })
        .collect::<Result<_, CheckpointError>>()?;
    // (begin, end, name) for the layout checks
    let mut spans: Vec<(u64, u64, &str)> = Vec::with_capacity(entries.len());
    let mut metadata = None;
    for (name, value) in &entries {
        if name == "__metadata__" {
            metadata = Some(value);
            continue;
        }
        let bad = |problem: String| CheckpointError::BadTensorEntry { name: name.clone(), problem };
        let Value::Object(obj) = value else {
            return Err(bad(format!("it is {} instead of an object", json_kind(value))));
        };
        // dtype
        let dtype_name = match obj.get("dtype") {
            None => return Err(bad("\"dtype\" is missing".into())),
            Some(Value::String(s)) => s,
            Some(v) => return Err(bad(format!("\"dtype\" is {} instead of a string", json_kind(v)))),
        };
        let Some(dt) = dtype_of(dtype_name) else {
            return Err(CheckpointError::UnsupportedDtype { name: name.clone(), dtype: dtype_name.clone() });
        };
        let (dtype, bits) = (dtype_name.as_str(), dt.bitsize() as u64);
        // shape
        let shape: Vec<u64> = match obj.get("shape") {
            None => return Err(bad("\"shape\" is missing".into())),
            Some(Value::Array(a)) => {
                let mut s = Vec::with_capacity(a.len().min(64));
                for d in a {
                    match d.as_u64() {
                        Some(x) => s.push(x),
                        None => return Err(bad(format!("\"shape\" contains {} instead of a non-negative integer", json_snippet(d)))),
                    }
                }
                s
            }
            Some(v) => return Err(bad(format!("\"shape\" is {} instead of an array", json_kind(v)))),
        };
        // data_offsets
        let (begin, end) = match obj.get("data_offsets") {
            None => return Err(bad("\"data_offsets\" is missing".into())),
            Some(Value::Array(a)) if a.len() == 2 => match (a[0].as_u64(), a[1].as_u64()) {
                (Some(b), Some(e)) => (b, e),
                _ => return Err(bad("\"data_offsets\" must be two non-negative integers".into())),
            },
            Some(_) => return Err(bad("\"data_offsets\" must be an array [begin, end]".into())),
        };
        // shape x dtype vs span
        let numel = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let nbits = numel.and_then(|n| n.checked_mul(bits));
        let (Some(numel), Some(nbits)) = (numel, nbits) else {
            return Err(CheckpointError::ShapeOverflow { name: name.clone(), shape });
        };
        if usize::try_from(numel).is_err() || shape.iter().any(|&d| usize::try_from(d).is_err()) {
            return Err(CheckpointError::ShapeOverflow { name: name.clone(), shape });
        }
        if begin > end {
            return Err(CheckpointError::OffsetsOutOfOrder { name: name.clone(), begin, end });
        }
        if nbits % 8 != 0 {
            // F4 / F6: a shape whose bits are not whole bytes has no valid span at all
            return Err(CheckpointError::SpanNotWholeBytes { name: name.clone(), dtype: dtype.to_string(), shape, bits: nbits });
        }
        if nbits / 8 != end - begin {
            return Err(CheckpointError::SpanMismatch {
                name: name.clone(),
                dtype: dtype.to_string(),
                expected_bytes: nbits / 8,
                shape,
                begin,
                end,
            });
        }
        if end > data_len {
            return Err(CheckpointError::OffsetsPastEnd { name: name.clone(), begin, end, data_len });
        }
        spans.push((begin, end, name.as_str()));
        let _ = numel;
    }

    // Layout: sorted by offsets, the tensors must tile [0, data_len) exactly.
    spans.sort_by_key(|&(b, e, _)| (b, e));
    let mut cursor = 0u64;
    let mut prev: Option<&str> = None;
    for &(begin, end, name) in &spans {
        if begin < cursor {
            return Err(CheckpointError::OffsetsOverlap {
                name: name.to_string(),
                begin,
                end,
                previous: prev.unwrap_or("").to_string(),
                previous_end: cursor,
            });
        }
        if begin > cursor {
            return Err(CheckpointError::OffsetsGap {
                name: name.to_string(),
                begin,
                previous: prev.map(str::to_string),
                previous_end: cursor,
            });
        }
        cursor = end;
        prev = Some(name);
    }
    if cursor != data_len {
        return Err(CheckpointError::TrailingBytes { data_end: cursor, data_len });
    }
    match metadata {
        Some(m) => metadata_problem(m),
        None => Ok(()),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata

type MetaParts = (HashMap<String, String>, ModelConfig, Option<String>);

/// The config and the tokenizer out of `__metadata__`. The tokenizer string is moved out of the
/// map, not copied.
fn read_metadata(meta: Option<HashMap<String, String>>) -> Result<MetaParts, CheckpointError> {
    let Some(mut map) = meta else {
        return Err(CheckpointError::NoMetadata);
    };
    let Some(config) = map.get("config") else {
        let mut keys: Vec<String> = map.keys().cloned().collect();
        keys.sort();
        return Err(CheckpointError::NoConfig { keys });
    };
    let config = ModelConfig::from_json(config)?;
    let tokenizer = map.remove("tokenizer");
    if let Some(t) = &tokenizer {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(t) {
            return Err(CheckpointError::TokenizerNotJson { message: e.to_string() });
        }
    }
    Ok((map, config, tokenizer))
}

/// Why `__metadata__` is not a map of strings (for [`diagnose`]).
fn metadata_problem(meta: &Value) -> Result<(), CheckpointError> {
    let Value::Object(obj) = meta else {
        return Err(CheckpointError::BadMetadata { problem: format!("it is {} instead of an object of strings", json_kind(meta)) });
    };
    match obj.iter().find(|(_, v)| !v.is_string()) {
        Some((k, other)) => Err(CheckpointError::BadMetadata {
            problem: format!("entry {} is {} but safetensors metadata values must be strings (use json.dumps)", show(k), json_kind(other)),
        }),
        None => Ok(()),
    }
}

/// Extra advice for a missing tensor: a name prefix (torch.compile's `_orig_mod.`, DDP's `module.`)
/// or tensors of another architecture than the config says.
fn missing_hint(name: &str, arch: Arch, header: &HashMap<String, Entry>) -> Option<String> {
    let suffix = format!(".{name}");
    if let Some(found) = header.keys().find(|k| k.ends_with(&suffix)) {
        let prefix = &found[..found.len() - name.len()];
        return Some(format!(
            "the file has {} instead: strip the prefix {} from the names (torch.compile adds \"_orig_mod.\", DataParallel \"module.\")",
            show(found),
            show(prefix)
        ));
    }
    let looks_like = if header.contains_key("tok_embeddings.weight") {
        Some(Arch::Llama)
    } else if header.contains_key("token_embedding.weight") {
        Some(Arch::Decoder)
    } else if header.contains_key("encoder.embedding.weight") {
        Some(Arch::EncoderDecoder)
    } else {
        None
    };
    match looks_like {
        Some(a) if a != arch => Some(format!("the config says arch \"{arch}\" but the tensor names look like a \"{a}\" checkpoint")),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Conversion

/// (rows, cols) -> (cols, rows), into a fallibly reserved vector.
fn transpose<T: Copy>(x: &[T], rows: usize, cols: usize) -> Result<Vec<T>, std::collections::TryReserveError> {
    let mut out = Vec::new();
    out.try_reserve_exact(x.len())?;
    out.extend((0..cols).flat_map(|c| (0..rows).map(move |r| x[r * cols + c])));
    Ok(out)
}

/// The 16-bit values of an F16 / BF16 tensor as they are, into a fallibly reserved vector.
fn convert16(raw: &[u8]) -> Result<Vec<u16>, std::collections::TryReserveError> {
    let mut out = Vec::new();
    out.try_reserve_exact(raw.len() / 2)?;
    out.extend(raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])));
    Ok(out)
}

/// Converts to f32 into a fallibly reserved vector: a failed allocation is an error, not an abort.
fn convert(raw: &[u8], dtype: FloatDtype) -> Result<Vec<f32>, std::collections::TryReserveError> {
    let width = if dtype == FloatDtype::F32 { 4 } else { 2 };
    let mut out = Vec::new();
    out.try_reserve_exact(raw.len() / width)?;
    match dtype {
        FloatDtype::F32 => out.extend(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        FloatDtype::F16 => out.extend(raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())),
        FloatDtype::BF16 => out.extend(raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
    }
    Ok(out)
}
