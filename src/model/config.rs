//! The model configuration stored in a checkpoint's `__metadata__["config"]` (a JSON string).
//!
//! Parsing is strict about what the model needs and lenient about everything else:
//! unknown fields are ignored, a missing or inconsistent field is a [`ConfigError`] that names it.
//!
//! After [`ModelConfig::from_json`] every field holds a usable value for every architecture
//! (no `Option`s to unwrap in model code except `moe`):
//!
//! | field            | encoder_decoder              | decoder                          | llama                                   |
//! |------------------|------------------------------|----------------------------------|-----------------------------------------|
//! | `vocab_size`     | = `tgt_vocab_size` (logits)  | required                         | required                                |
//! | `src_vocab_size` | required (input ids)         | = `vocab_size`                   | = `vocab_size`                          |
//! | `tgt_vocab_size` | required (decoder ids/logits)| = `vocab_size`                   | = `vocab_size`                          |
//! | `d_ff`           | required                     | required (with `moe`: optional, defaults to `moe.expert_dim`) | = `hidden_dim`, else multiple_of * ceil(int(8C/3) / multiple_of) (any `d_ff` in the JSON is ignored) |
//! | `num_kv_heads`   | = `num_heads`                | = `num_heads`                    | optional, defaults to `num_heads`       |
//! | `multiple_of`    | 0 (unused)                   | 0 (unused)                       | required                                |
//! | `norm_eps`       | fixed 1e-5 (LayerNorm)       | optional, defaults to 1e-5 (LayerNorm) | optional, defaults to 1e-6 (RMSNorm) |
//! | `rope_theta`     | 10000 (unused)               | optional, defaults to 10000 (used with `positions: "rope"`) | optional, defaults to 10000             |
//! | `moe`            | must be absent               | optional                         | must be absent                          |
//! | `positions`      | `sinusoidal`                 | optional: `sinusoidal` (default), `learned` (GPT-2: a `position_embedding.weight` (S, C) table, and no sqrt(C) embedding scale) or `rope` (GPT-NeoX: no embedding scale) | `rope` |
//! | `activation`     | `relu`                       | optional: `relu` (default), `gelu_tanh` (GPT-2's `gelu_new`) or `gelu_erf` (GPT-NeoX's `gelu`); `relu` with `moe` | `swiglu` |
//! | `qkv_bias`       | true                         | optional, default true; false: none of q, k, v, o has a bias (GPT-NeoX's `attention_bias: false`) | optional, default false (Qwen2: q/k/v biases, o without) |
//! | `rotary_dims`    | must be absent               | optional with `rope`: the even number of each head's dims that rotate (GPT-NeoX's `rotary_pct`); 0 / absent = all | the same |
//! | `parallel_residual` | must be false             | optional, default false: x = x + attn(norm1(x)) + ffn(norm2(x)) (GPT-NeoX); not with `moe` or `attention_only` | must be false |
//! | `tie_embeddings` | false                        | optional, default false: the head is the token embedding (no `lm_head.weight`) | optional, default false (no `output.weight`) |
//! | `hidden_dim`     | (not read)                   | (not read)                       | optional: the SwiGLU hidden size as given (Hugging Face `intermediate_size`, llama2.c `hidden_dim`); then `multiple_of` is optional (0) |
//!
//! The decoder's `norm_eps` is optional too (default 1e-5, the seed's LayerNorm; GPT-2's `layer_norm_epsilon`).
//! The fields after `moe` describe the foreign models (src/formats: Hugging Face GPT-2 / GPT-NeoX / Llama / Qwen2, llama2.c); a config without them
//! reads exactly as before they existed.
//!
//! So `src_vocab_size` is always the range of input ids and `tgt_vocab_size` the width of the logits.
//! `num_kv_heads` given for encoder_decoder / decoder must equal `num_heads` (no GQA there).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::weights::{Census, Listing};
use std::fmt;

/// Largest accepted size of any dimension (vocab, d_model, d_ff, expert_dim, ...).
pub const MAX_DIM: usize = 1 << 20;
/// Largest accepted context length.
pub const MAX_SEQ_LEN: usize = 65536;
/// Largest accepted number of layers.
pub const MAX_LAYERS: usize = 1024;
/// Largest accepted number of MoE experts per layer.
pub const MAX_EXPERTS: usize = 1024;
/// Largest number of tensors a config may describe (bounds `expected_tensors()`).
pub const MAX_TENSORS: u64 = 1 << 16;
/// Largest number of parameters a config may describe (16 GiB of f32): anything larger is not a
/// playground model and would not fit in memory anyway.
pub const MAX_PARAMS: u64 = 1 << 32;
/// LayerNorm eps of the encoder_decoder and decoder architectures (PyTorch's default).
pub const LAYER_NORM_EPS: f32 = 1e-5;
/// Default RMSNorm eps for llama.
pub const DEFAULT_RMS_NORM_EPS: f32 = 1e-6;
/// Default RoPE base for llama.
pub const DEFAULT_ROPE_THETA: f32 = 10000.0;

/// The three architectures of the seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Seed 000 "A Complete Enc-Dec Transformer": post-norm, LayerNorm, ReLU FFN, `final_layer` with bias.
    EncoderDecoder,
    /// Seed 000 "Decoder-only LLM": pre-norm, LayerNorm, ReLU FFN (or MoE), `lm_head` without bias.
    Decoder,
    /// Seed 004: RMSNorm, RoPE, GQA, SwiGLU, no biases.
    Llama,
}

impl Arch {
    /// The JSON spelling: "encoder_decoder" | "decoder" | "llama".
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::EncoderDecoder => "encoder_decoder",
            Arch::Decoder => "decoder",
            Arch::Llama => "llama",
        }
    }

    /// Parses the JSON spelling.
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "encoder_decoder" => Some(Arch::EncoderDecoder),
            "decoder" => Some(Arch::Decoder),
            "llama" => Some(Arch::Llama),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Mixture-of-experts feed-forward (decoder only), seed 000 "MOE".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoeConfig {
    pub num_experts: usize,
    /// Experts per token; 1 <= top_k <= num_experts.
    pub top_k: usize,
    /// Hidden width of each expert's Linear -> GELU -> Linear.
    pub expert_dim: usize,
    /// Capacity per expert = int(capacity_factor * tokens * top_k / num_experts).
    pub capacity_factor: f32,
}

/// How the model knows where a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// The seed's sinusoidal table added to the embedding (scaled by sqrt(C)): encoder_decoder, decoder.
    Sinusoidal,
    /// A learned table `position_embedding.weight` (S, C) added to the unscaled embedding (GPT-2).
    Learned,
    /// Rotary embeddings on q and k (llama; a decoder with `positions: "rope"`, GPT-NeoX), on the
    /// first `rotary_dims` of each head (all of it by default).
    Rope,
}

/// The activation of the dense feed-forward network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// linear2(relu(linear1(x))): the seed's FeedForward.
    Relu,
    /// linear2(gelu_tanh(linear1(x))): GPT-2's MLP (`gelu_new`).
    GeluTanh,
    /// w2(silu(w1 x) * w3 x): llama.
    Swiglu,
    /// linear2(gelu(linear1(x))) with the exact erf GELU (PyTorch's nn.GELU(), Hugging Face's
    /// `hidden_act: "gelu"`: GPT-NeoX / Pythia).
    GeluErf,
}

impl Activation {
    /// The element-wise op of a two-layer FFN (Relu, GeluTanh); None for SwiGLU.
    pub fn ew(self) -> Option<crate::ops::EwOp> {
        match self {
            Activation::Relu => Some(crate::ops::EwOp::Relu),
            Activation::GeluTanh => Some(crate::ops::EwOp::GeluTanh),
            Activation::GeluErf => Some(crate::ops::EwOp::Gelu),
            Activation::Swiglu => None,
        }
    }
}

/// A validated model configuration. Build it with [`ModelConfig::from_json`] / [`ModelConfig::from_value`]
/// (or `serde_json::from_str`, which runs the same validation). See the module docs for how each
/// field is filled per architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct ModelConfig {
    pub arch: Arch,
    /// Width of the logits (decoder, llama: the vocabulary; encoder_decoder: = tgt_vocab_size).
    pub vocab_size: usize,
    /// Range of the (encoder / only) input ids.
    pub src_vocab_size: usize,
    /// Range of the decoder ids and width of the logits.
    pub tgt_vocab_size: usize,
    pub d_model: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub max_seq_len: usize,
    /// FFN hidden width; for llama the SwiGLU hidden size computed from `multiple_of`.
    pub d_ff: usize,
    /// Key/value heads (llama GQA); = num_heads for the other architectures.
    pub num_kv_heads: usize,
    /// llama only; 0 for the other architectures.
    pub multiple_of: usize,
    /// Norm epsilon: 1e-5 (LayerNorm) for encoder_decoder / decoder, config or 1e-6 (RMSNorm) for llama.
    pub norm_eps: f32,
    /// RoPE base (llama, a decoder with RoPE positions); 10000 otherwise (unused).
    pub rope_theta: f32,
    pub moe: Option<MoeConfig>,
    /// Sinusoidal (encoder_decoder, decoder by default), learned (decoder, GPT-2) or RoPE (llama).
    pub positions: Positions,
    /// The dense FFN's activation: relu (encoder_decoder, decoder by default), gelu_tanh (decoder,
    /// GPT-2), swiglu (llama).
    pub activation: Activation,
    /// Whether the q/k/v projections carry biases: always for encoder_decoder, for decoder unless the
    /// config says false (then none of its four attention projections has one: GPT-NeoX's
    /// `attention_bias: false`); llama only when the config says so (Qwen2; its o projection has none).
    pub qkv_bias: bool,
    /// The output head is the token embedding (decoder, llama): no head tensor is declared.
    pub tie_embeddings: bool,
    /// decoder only: blocks of attention alone, x = x + attn(norm1(x)), with no norm2 and no
    /// feed-forward network (`d_ff` is then 0); the small models of the induction-head experiments
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attention_only: bool,
    /// RoPE models: how many dimensions of each head rotate (GPT-NeoX's partial rotary, `rotary_pct`
    /// of the head); the rest pass through unchanged. 0 (and absent from the JSON) = the whole head.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rotary_dims: usize,
    /// decoder only: GPT-NeoX's parallel residual, x = x + attn(norm1(x)) + ffn(norm2(x)), both
    /// halves reading the block's input; false is the usual sequential pre-norm block.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parallel_residual: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Why a config was rejected. Every variant names the field (dotted for nested: `moe.top_k`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The config string is not JSON at all.
    #[error("config is not valid JSON: {0}")]
    InvalidJson(String),
    /// The config is JSON but not an object; `found` is the JSON type.
    #[error("config must be a JSON object like {{\"arch\": \"decoder\", ...}}, but it is {found}")]
    NotAnObject { found: &'static str },
    /// A field the architecture needs is absent (or null).
    #[error("config field \"{field}\" is missing{}", arch.map(|a| format!(" (required for arch \"{a}\")")).unwrap_or_default())]
    MissingField { field: &'static str, arch: Option<Arch> },
    /// A field has the wrong JSON type.
    #[error("config field \"{field}\" must be {expected}, got {found}")]
    WrongType { field: &'static str, expected: &'static str, found: String },
    /// A field has a value that is out of range or inconsistent with another field.
    #[error("config field \"{field}\": {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field as written: the type we want, or whatever else it was (kept for the error message).
#[derive(Deserialize)]
#[serde(untagged)]
enum Field<T> {
    Ok(T),
    Other(Value),
}

/// The config as written (serde: unknown fields ignored, `null` = absent). [`RawConfig::validate`]
/// checks it field by field and fills in what each architecture derives (see the module docs).
#[derive(Deserialize)]
struct RawConfig {
    arch: Option<Field<String>>,
    vocab_size: Option<Field<u64>>,
    src_vocab_size: Option<Field<u64>>,
    tgt_vocab_size: Option<Field<u64>>,
    d_model: Option<Field<u64>>,
    num_layers: Option<Field<u64>>,
    num_heads: Option<Field<u64>>,
    max_seq_len: Option<Field<u64>>,
    d_ff: Option<Field<u64>>,
    num_kv_heads: Option<Field<u64>>,
    multiple_of: Option<Field<u64>>,
    norm_eps: Option<Field<f64>>,
    rope_theta: Option<Field<f64>>,
    /// read as [`RawMoe`] once it is known to be an object
    moe: Option<Value>,
    positions: Option<Field<String>>,
    activation: Option<Field<String>>,
    qkv_bias: Option<Field<bool>>,
    tie_embeddings: Option<Field<bool>>,
    hidden_dim: Option<Field<u64>>,
    attention_only: Option<Field<bool>>,
    rotary_dims: Option<Field<u64>>,
    parallel_residual: Option<Field<bool>>,
}

/// `moe` as written.
#[derive(Deserialize)]
struct RawMoe {
    num_experts: Option<Field<u64>>,
    top_k: Option<Field<u64>>,
    expert_dim: Option<Field<u64>>,
    capacity_factor: Option<Field<f64>>,
}

/// An optional positive integer in 1..=max.
fn opt_size(field: &'static str, v: Option<Field<u64>>, max: usize) -> Result<Option<usize>, ConfigError> {
    match v {
        None => Ok(None),
        // negative, fractional, a string, ...
        Some(Field::Other(v)) => Err(ConfigError::WrongType { field, expected: "a positive integer", found: show_value(&v) }),
        Some(Field::Ok(0)) => Err(invalid(field, "must be at least 1, got 0".into())),
        Some(Field::Ok(n)) if n > max as u64 => Err(invalid(field, format!("{n} is too large (the limit is {max})"))),
        Some(Field::Ok(n)) => Ok(Some(n as usize)),
    }
}

/// A required positive integer in 1..=max.
fn size(field: &'static str, v: Option<Field<u64>>, max: usize, arch: Arch) -> Result<usize, ConfigError> {
    opt_size(field, v, max)?.ok_or(ConfigError::MissingField { field, arch: Some(arch) })
}

/// An optional finite number > 0 (and <= max), as f32.
fn opt_positive_f32(field: &'static str, v: Option<Field<f64>>, max: f64) -> Result<Option<f32>, ConfigError> {
    match v {
        None => Ok(None),
        Some(Field::Other(v)) => Err(ConfigError::WrongType { field, expected: "a number", found: show_value(&v) }),
        Some(Field::Ok(x)) if !(x > 0.0 && x <= max && (x as f32).is_normal()) => {
            Err(invalid(field, format!("must be a positive number no larger than {max}, got {x}")))
        }
        Some(Field::Ok(x)) => Ok(Some(x as f32)),
    }
}

/// An optional boolean.
fn opt_bool(field: &'static str, v: Option<Field<bool>>) -> Result<Option<bool>, ConfigError> {
    match v {
        None => Ok(None),
        Some(Field::Ok(b)) => Ok(Some(b)),
        Some(Field::Other(v)) => Err(ConfigError::WrongType { field, expected: "true or false", found: show_value(&v) }),
    }
}

/// `attention_only: true` is a decoder's option only.
fn only_decoder_is_attention_only(arch: Arch, v: Option<Field<bool>>) -> Result<(), ConfigError> {
    if opt_bool("attention_only", v)? == Some(true) {
        return Err(invalid("attention_only", format!("only arch \"decoder\" has attention-only blocks, not \"{arch}\"")));
    }
    Ok(())
}

/// `parallel_residual: true` is a decoder's option only.
fn only_decoder_is_parallel(arch: Arch, v: Option<Field<bool>>) -> Result<(), ConfigError> {
    if opt_bool("parallel_residual", v)? == Some(true) {
        return Err(invalid("parallel_residual", format!("only arch \"decoder\" has a parallel residual, not \"{arch}\"")));
    }
    Ok(())
}

/// `rotary_dims`: with RoPE, an even count of 2..=head_dim (the whole head is stored as 0); absent otherwise.
fn rotary_dims(s: &Shared, positions: Positions, v: Option<Field<u64>>) -> Result<usize, ConfigError> {
    let hd = s.d_model / s.num_heads;
    match opt_size("rotary_dims", v, MAX_DIM)? {
        None => Ok(0),
        Some(_) if positions != Positions::Rope => {
            Err(invalid("rotary_dims", "only a model with RoPE positions rotates dimensions".into()))
        }
        Some(r) if r > hd || !r.is_multiple_of(2) => {
            Err(invalid("rotary_dims", format!("must be an even number of dimensions no larger than the head size {hd}, got {r}")))
        }
        Some(r) if r == hd => Ok(0),
        Some(r) => Ok(r),
    }
}

/// An optional string that must be one of `allowed` (for this architecture); the index of the match.
fn opt_choice(field: &'static str, v: Option<Field<String>>, allowed: &[&str], arch: Arch) -> Result<Option<usize>, ConfigError> {
    let list = allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(" or ");
    match v {
        None => Ok(None),
        Some(Field::Ok(s)) => match allowed.iter().position(|a| *a == s) {
            Some(i) => Ok(Some(i)),
            None => Err(invalid(field, format!("{} is not supported for arch \"{arch}\": expected {list}", crate::error::quote(&s)))),
        },
        Some(Field::Other(v)) => Err(ConfigError::WrongType { field, expected: "a string", found: show_value(&v) }),
    }
}

/// A short, one-line rendering of a JSON value for error messages.
/// Bounded while it is rendered: a 100 MB value is never turned into a string whole.
fn show_value(v: &Value) -> String {
    crate::error::json_snippet(v)
}

fn invalid(field: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { field, reason }
}

/// The fields every architecture has, checked.
struct Shared {
    arch: Arch,
    vocab_size: usize,
    src_vocab_size: usize,
    tgt_vocab_size: usize,
    d_model: usize,
    num_layers: usize,
    num_heads: usize,
    max_seq_len: usize,
    /// `num_kv_heads` as written (checked to divide `num_heads`)
    kv: Option<usize>,
}

impl Shared {
    /// The config of these fields and `d_ff`, every other field as the seed's stacks have it
    /// (LayerNorm, sinusoidal positions, ReLU, biases, no GQA, MoE or tying): each architecture's
    /// check replaces what it reads.
    fn config(self, d_ff: usize) -> ModelConfig {
        ModelConfig {
            arch: self.arch,
            vocab_size: self.vocab_size,
            src_vocab_size: self.src_vocab_size,
            tgt_vocab_size: self.tgt_vocab_size,
            d_model: self.d_model,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            max_seq_len: self.max_seq_len,
            d_ff,
            num_kv_heads: self.num_heads,
            multiple_of: 0,
            norm_eps: LAYER_NORM_EPS,
            rope_theta: DEFAULT_ROPE_THETA,
            moe: None,
            positions: Positions::Sinusoidal,
            activation: Activation::Relu,
            qkv_bias: true,
            tie_embeddings: false,
            attention_only: false,
            rotary_dims: 0,
            parallel_residual: false,
        }
    }
}

impl RawConfig {
    /// The checks of every field, in the order a person reads the config; the first failure is reported.
    fn validate(mut self) -> Result<ModelConfig, ConfigError> {
        let shared = self.shared()?;
        let moe = self.moe(shared.arch)?;
        let cfg = match shared.arch {
            Arch::EncoderDecoder => self.encoder_decoder(shared)?,
            Arch::Decoder => self.decoder(shared, moe)?,
            Arch::Llama => self.llama(shared)?,
        };
        within_limits(cfg)
    }

    fn arch(&mut self) -> Result<Arch, ConfigError> {
        match self.arch.take() {
            None => Err(ConfigError::MissingField { field: "arch", arch: None }),
            Some(Field::Ok(s)) => Arch::parse(&s).ok_or_else(|| {
                invalid(
                    "arch",
                    format!("unknown architecture {}: expected \"encoder_decoder\", \"decoder\" or \"llama\"", crate::error::quote(&s)),
                )
            }),
            Some(Field::Other(v)) => Err(ConfigError::WrongType {
                field: "arch",
                expected: "a string (\"encoder_decoder\", \"decoder\" or \"llama\")",
                found: show_value(&v),
            }),
        }
    }

    /// The architecture, the sizes, `num_kv_heads` (whenever present) and the vocabularies.
    fn shared(&mut self) -> Result<Shared, ConfigError> {
        let arch = self.arch()?;
        let d_model = size("d_model", self.d_model.take(), MAX_DIM, arch)?;
        let num_layers = size("num_layers", self.num_layers.take(), MAX_LAYERS, arch)?;
        let num_heads = size("num_heads", self.num_heads.take(), MAX_DIM, arch)?;
        let max_seq_len = size("max_seq_len", self.max_seq_len.take(), MAX_SEQ_LEN, arch)?;
        if d_model % num_heads != 0 {
            return Err(invalid("num_heads", format!("d_model ({d_model}) must be divisible by num_heads ({num_heads})")));
        }
        let kv = opt_size("num_kv_heads", self.num_kv_heads.take(), MAX_DIM)?;
        if let Some(kv) = kv {
            if num_heads % kv != 0 {
                return Err(invalid("num_kv_heads", format!("num_heads ({num_heads}) must be divisible by num_kv_heads ({kv})")));
            }
        }
        let (vocab_size, src_vocab_size, tgt_vocab_size) = match arch {
            Arch::EncoderDecoder => {
                let src = size("src_vocab_size", self.src_vocab_size.take(), MAX_DIM, arch)?;
                let tgt = size("tgt_vocab_size", self.tgt_vocab_size.take(), MAX_DIM, arch)?;
                (tgt, src, tgt)
            }
            Arch::Decoder | Arch::Llama => {
                let v = size("vocab_size", self.vocab_size.take(), MAX_DIM, arch)?;
                (v, v, v)
            }
        };
        Ok(Shared { arch, vocab_size, src_vocab_size, tgt_vocab_size, d_model, num_layers, num_heads, max_seq_len, kv })
    }

    /// `moe`: absent, or an object (decoder only).
    fn moe(&mut self, arch: Arch) -> Result<Option<MoeConfig>, ConfigError> {
        match self.moe.take() {
            None | Some(Value::Null) => Ok(None),
            Some(m @ Value::Object(_)) => {
                if arch != Arch::Decoder {
                    return Err(invalid("moe", format!("mixture of experts is only supported for arch \"decoder\", not \"{arch}\"")));
                }
                let m = RawMoe::deserialize(&m).map_err(|e| ConfigError::InvalidJson(e.to_string()))?;
                let num_experts = size("moe.num_experts", m.num_experts, MAX_EXPERTS, arch)?;
                let top_k = size("moe.top_k", m.top_k, MAX_EXPERTS, arch)?;
                let expert_dim = size("moe.expert_dim", m.expert_dim, MAX_DIM, arch)?;
                let capacity_factor = opt_positive_f32("moe.capacity_factor", m.capacity_factor, 1e6)?
                    .ok_or(ConfigError::MissingField { field: "moe.capacity_factor", arch: Some(arch) })?;
                if top_k > num_experts {
                    return Err(invalid("moe.top_k", format!("top_k ({top_k}) must not exceed num_experts ({num_experts})")));
                }
                Ok(Some(MoeConfig { num_experts, top_k, expert_dim, capacity_factor }))
            }
            Some(v) => Err(ConfigError::WrongType {
                field: "moe",
                expected: "an object {\"num_experts\", \"top_k\", \"expert_dim\", \"capacity_factor\"} or absent",
                found: show_value(&v),
            }),
        }
    }

    /// encoder_decoder: the seed's stacks exactly (`d_ff` required, nothing else to choose).
    fn encoder_decoder(self, s: Shared) -> Result<ModelConfig, ConfigError> {
        let arch = s.arch;
        no_gqa(&s)?;
        let d_ff = size("d_ff", self.d_ff, MAX_DIM, arch)?;
        opt_choice("positions", self.positions, &["sinusoidal"], arch)?;
        opt_choice("activation", self.activation, &["relu"], arch)?;
        biases_always(arch, self.qkv_bias)?;
        if opt_bool("tie_embeddings", self.tie_embeddings)? == Some(true) {
            return Err(invalid("tie_embeddings", format!("arch \"{arch}\" has its own final_layer; tying it is not supported")));
        }
        only_decoder_is_attention_only(arch, self.attention_only)?;
        only_decoder_is_parallel(arch, self.parallel_residual)?;
        rotary_dims(&s, Positions::Sinusoidal, self.rotary_dims)?;
        Ok(s.config(d_ff))
    }

    /// decoder: the seed's decoder-only LLM, with MoE, or with GPT-2's options (learned positions,
    /// GELU-tanh, tied head, its norm eps).
    fn decoder(self, s: Shared, moe: Option<MoeConfig>) -> Result<ModelConfig, ConfigError> {
        let arch = s.arch;
        no_gqa(&s)?;
        let attention_only = opt_bool("attention_only", self.attention_only)?.unwrap_or(false);
        if attention_only && moe.is_some() {
            return Err(invalid("attention_only", "an attention-only model has no feed-forward network, so no mixture of experts".into()));
        }
        let d_ff = match (&moe, opt_size("d_ff", self.d_ff, MAX_DIM)?) {
            // d_ff, if written, is not used: there is no feed-forward network
            _ if attention_only => 0,
            (_, Some(d)) => d,
            (Some(m), None) => m.expert_dim,
            (None, None) => return Err(ConfigError::MissingField { field: "d_ff", arch: Some(arch) }),
        };
        let positions = match opt_choice("positions", self.positions, &["sinusoidal", "learned", "rope"], arch)? {
            Some(1) => Positions::Learned,
            Some(2) => Positions::Rope,
            _ => Positions::Sinusoidal,
        };
        if positions == Positions::Rope && !(s.d_model / s.num_heads).is_multiple_of(2) {
            let (d, nh) = (s.d_model, s.num_heads);
            return Err(invalid(
                "num_heads",
                format!("RoPE needs an even head dimension, but d_model ({d}) / num_heads ({nh}) = {}", d / nh),
            ));
        }
        let act_choices: &[&str] = if moe.is_none() { &["relu", "gelu_tanh", "gelu_erf"] } else { &["relu"] };
        let activation = match opt_choice("activation", self.activation, act_choices, arch)? {
            Some(1) => Activation::GeluTanh,
            Some(2) => Activation::GeluErf,
            _ => Activation::Relu,
        };
        // every projection has a bias, unless qkv_bias is false: then none of the attention's four has one
        // (GPT-NeoX's attention_bias: false); the FFN keeps its biases
        let qkv_bias = opt_bool("qkv_bias", self.qkv_bias)?.unwrap_or(true);
        let tie_embeddings = opt_bool("tie_embeddings", self.tie_embeddings)?.unwrap_or(false);
        let norm_eps = opt_positive_f32("norm_eps", self.norm_eps, 1.0)?.unwrap_or(LAYER_NORM_EPS);
        let rope_theta = opt_positive_f32("rope_theta", self.rope_theta, 1e12)?.unwrap_or(DEFAULT_ROPE_THETA);
        let rotary_dims = rotary_dims(&s, positions, self.rotary_dims)?;
        let parallel_residual = opt_bool("parallel_residual", self.parallel_residual)?.unwrap_or(false);
        if parallel_residual && (attention_only || moe.is_some()) {
            let what = if attention_only { "an attention-only model has no feed-forward network" } else { "a mixture of experts" };
            return Err(invalid("parallel_residual", format!("a parallel residual needs a dense feed-forward network; {what}")));
        }
        Ok(ModelConfig {
            norm_eps,
            rope_theta,
            moe,
            positions,
            activation,
            qkv_bias,
            tie_embeddings,
            attention_only,
            rotary_dims,
            parallel_residual,
            ..s.config(d_ff)
        })
    }

    /// llama: RoPE over even head dimensions, GQA, SwiGLU of `hidden_dim` or the seed's formula.
    fn llama(self, s: Shared) -> Result<ModelConfig, ConfigError> {
        let (arch, d_model, num_heads) = (s.arch, s.d_model, s.num_heads);
        let head_dim = d_model / num_heads;
        if head_dim % 2 != 0 {
            return Err(invalid(
                "num_heads",
                format!(
                    "llama needs an even head dimension for RoPE pairs, but d_model ({d_model}) / num_heads ({num_heads}) = {head_dim}"
                ),
            ));
        }
        // an explicit hidden size (foreign models) or the seed's formula over multiple_of
        let hidden_dim = opt_size("hidden_dim", self.hidden_dim, MAX_DIM)?;
        let multiple_of = match hidden_dim {
            Some(_) => opt_size("multiple_of", self.multiple_of, MAX_DIM)?.unwrap_or(0),
            None => size("multiple_of", self.multiple_of, MAX_DIM, arch)?,
        };
        let norm_eps = opt_positive_f32("norm_eps", self.norm_eps, 1.0)?.unwrap_or(DEFAULT_RMS_NORM_EPS);
        let rope_theta = opt_positive_f32("rope_theta", self.rope_theta, 1e12)?.unwrap_or(DEFAULT_ROPE_THETA);
        let hidden = hidden_dim.unwrap_or_else(|| llama_hidden(d_model, multiple_of));
        if hidden > MAX_DIM {
            return Err(invalid("multiple_of", format!("the SwiGLU hidden size {hidden} it gives is over the limit of {MAX_DIM}")));
        }
        opt_choice("positions", self.positions, &["rope"], arch)?;
        opt_choice("activation", self.activation, &["swiglu"], arch)?;
        let qkv_bias = opt_bool("qkv_bias", self.qkv_bias)?.unwrap_or(false);
        let tie_embeddings = opt_bool("tie_embeddings", self.tie_embeddings)?.unwrap_or(false);
        only_decoder_is_attention_only(arch, self.attention_only)?;
        only_decoder_is_parallel(arch, self.parallel_residual)?;
        let rotary_dims = rotary_dims(&s, Positions::Rope, self.rotary_dims)?;
        let num_kv_heads = s.kv.unwrap_or(num_heads);
        Ok(ModelConfig {
            num_kv_heads,
            multiple_of,
            norm_eps,
            rope_theta,
            positions: Positions::Rope,
            activation: Activation::Swiglu,
            qkv_bias,
            tie_embeddings,
            rotary_dims,
            ..s.config(hidden)
        })
    }
}

/// encoder_decoder and decoder: `num_kv_heads`, when given, must equal `num_heads` (no GQA there).
fn no_gqa(s: &Shared) -> Result<(), ConfigError> {
    match s.kv {
        Some(kv) if kv != s.num_heads => Err(invalid(
            "num_kv_heads",
            format!(
                "grouped-query attention is only supported for arch \"llama\"; for \"{}\" num_kv_heads must equal num_heads ({}) or be absent, got {kv}",
                s.arch, s.num_heads
            ),
        )),
        _ => Ok(()),
    }
}

/// encoder_decoder and decoder: every projection has a bias, so `qkv_bias` may only say true.
fn biases_always(arch: Arch, v: Option<Field<bool>>) -> Result<(), ConfigError> {
    if opt_bool("qkv_bias", v)? == Some(false) {
        return Err(invalid("qkv_bias", format!("arch \"{arch}\" always has q/k/v biases; false is not supported")));
    }
    Ok(())
}

/// Whole-model bounds: keep the declared tensors and the parameter count small and overflow-free.
fn within_limits(cfg: ModelConfig) -> Result<ModelConfig, ConfigError> {
    let census = Census::of(&cfg);
    if census.tensors > MAX_TENSORS {
        return Err(invalid(
            if cfg.moe.is_some() { "moe.num_experts" } else { "num_layers" },
            format!("the config describes {} tensors, over the limit of {MAX_TENSORS}", census.tensors),
        ));
    }
    if census.params > MAX_PARAMS {
        return Err(invalid("d_model", format!("the config describes {} parameters, over the limit of {MAX_PARAMS}", census.params)));
    }
    Ok(cfg)
}

impl ModelConfig {
    /// Parses and validates a config JSON string (the content of `__metadata__["config"]`).
    pub fn from_json(json: &str) -> Result<ModelConfig, ConfigError> {
        let value: Value = serde_json::from_str(json).map_err(|e| ConfigError::InvalidJson(e.to_string()))?;
        ModelConfig::from_value(&value)
    }

    /// Validates an already parsed JSON value.
    pub fn from_value(value: &Value) -> Result<ModelConfig, ConfigError> {
        match value {
            Value::Object(_) => {}
            Value::String(_) => return Err(ConfigError::NotAnObject { found: "a string (was it JSON-encoded twice?)" }),
            other => return Err(ConfigError::NotAnObject { found: json_type(other) }),
        }
        RawConfig::deserialize(value).map_err(|e| ConfigError::InvalidJson(e.to_string()))?.validate()
    }

    /// d_model / num_heads.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.num_heads
    }

    /// The dimensions of each head RoPE rotates (the first ones; `rotary_dims`, or the whole head).
    pub fn rope_dims(&self) -> usize {
        if self.rotary_dims == 0 {
            self.head_dim()
        } else {
            self.rotary_dims
        }
    }

    /// The RoPE (cos, sin) table of this model for positions 0..rows, (rows, HS/2, 2): the pairs past
    /// `rope_dims` are the identity (cos 1, sin 0), so every RoPE kernel passes them through unchanged.
    pub fn rope_table(&self, rows: usize) -> Vec<f32> {
        crate::cpu::rope_table_partial(rows, self.head_dim(), self.rope_dims(), self.rope_theta)
    }

    /// SwiGLU hidden size: for llama its `d_ff` (the config's `hidden_dim`, or multiple_of *
    /// ceil(int(2 * 4 * d_model / 3) / multiple_of)); for the other architectures the formula
    /// computed from the fields.
    pub fn llama_hidden_dim(&self) -> usize {
        match self.arch {
            Arch::Llama => self.d_ff,
            _ => llama_hidden(self.d_model, self.multiple_of.max(1)),
        }
    }

    /// The factor of the token embedding: sqrt(C) for the seed's sinusoidal stacks, 1 for learned
    /// positions (GPT-2) and llama.
    pub fn embed_scale(&self) -> f32 {
        match self.positions {
            Positions::Sinusoidal => (self.d_model as f32).sqrt(),
            Positions::Learned | Positions::Rope => 1.0,
        }
    }

    /// Number of tensors the architecture declares (`model::weights::Weights::declare`).
    pub fn tensor_count(&self) -> u64 {
        Census::of(self).tensors
    }

    /// Every tensor the model needs, with its PyTorch `state_dict()` name and shape, in declaration
    /// order (`model::weights::Weights::declare`). Registered buffers (`*.pos_encoding.pe`) are not
    /// listed: they are not needed.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        Listing::of(self).into_iter().map(|d| (d.name, d.shape)).collect()
    }

    /// Total number of parameters of the declared tensors (buffers excluded), in saturating u64
    /// arithmetic, so it never overflows.
    pub fn param_count(&self) -> u64 {
        Census::of(self).params
    }
}

/// multiple_of * ceil(int(2 * 4 * d_model / 3) / multiple_of), in integer math (inputs are <= 2^20).
fn llama_hidden(d_model: usize, multiple_of: usize) -> usize {
    let d = d_model as u64;
    let m = multiple_of.max(1) as u64;
    let h = 2 * 4 * d / 3;
    let out = m * h.div_ceil(m);
    usize::try_from(out).unwrap_or(usize::MAX)
}

impl TryFrom<Value> for ModelConfig {
    type Error = ConfigError;
    fn try_from(v: Value) -> Result<Self, ConfigError> {
        ModelConfig::from_value(&v)
    }
}

impl std::str::FromStr for ModelConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        ModelConfig::from_json(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec() -> &'static str {
        r#"{"arch":"decoder","vocab_size":11,"d_model":8,"num_layers":1,"num_heads":2,"max_seq_len":16,"d_ff":16}"#
    }

    #[test]
    fn param_count_matches_expected_tensors() {
        let cfgs = [
            dec().to_string(),
            r#"{"arch":"encoder_decoder","src_vocab_size":13,"tgt_vocab_size":7,"d_model":8,"num_layers":2,"num_heads":2,"max_seq_len":16,"d_ff":12}"#.into(),
            r#"{"arch":"llama","vocab_size":20,"d_model":16,"num_layers":2,"num_heads":4,"num_kv_heads":2,"multiple_of":32,"max_seq_len":16}"#.into(),
            r#"{"arch":"decoder","vocab_size":11,"d_model":8,"num_layers":2,"num_heads":2,"max_seq_len":16,"moe":{"num_experts":3,"top_k":2,"expert_dim":6,"capacity_factor":1.5}}"#.into(),
        ];
        for c in cfgs {
            let cfg = ModelConfig::from_json(&c).unwrap();
            let list = cfg.expected_tensors();
            assert_eq!(list.len() as u64, cfg.tensor_count(), "{c}");
            let sum: u64 = list.iter().map(|(_, s)| s.iter().product::<usize>() as u64).sum();
            assert_eq!(sum, cfg.param_count(), "{c}");
            let mut names: Vec<_> = list.iter().map(|(n, _)| n.clone()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), list.len());
        }
    }
}
