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
//! | `d_ff`           | required                     | required (with `moe`: optional, defaults to `moe.expert_dim`) | = [`ModelConfig::llama_hidden_dim`] (any `d_ff` in the JSON is ignored) |
//! | `num_kv_heads`   | = `num_heads`                | = `num_heads`                    | optional, defaults to `num_heads`       |
//! | `multiple_of`    | 0 (unused)                   | 0 (unused)                       | required                                |
//! | `norm_eps`       | fixed 1e-5 (LayerNorm)       | fixed 1e-5 (LayerNorm)           | optional, defaults to 1e-6 (RMSNorm)    |
//! | `rope_theta`     | 10000 (unused)               | 10000 (unused)                   | optional, defaults to 10000             |
//! | `moe`            | must be absent               | optional                         | must be absent                          |
//!
//! So `src_vocab_size` is always the range of input ids and `tgt_vocab_size` the width of the logits.
//! `num_kv_heads` given for encoder_decoder / decoder must equal `num_heads` (no GQA there).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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
    /// RoPE base (llama); 10000 otherwise (unused).
    pub rope_theta: f32,
    pub moe: Option<MoeConfig>,
}

/// Why a config was rejected. Every variant names the field (dotted for nested: `moe.top_k`).
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// The config string is not JSON at all.
    InvalidJson(String),
    /// The config is JSON but not an object; `found` is the JSON type.
    NotAnObject { found: &'static str },
    /// A field the architecture needs is absent (or null).
    MissingField { field: &'static str, arch: Option<Arch> },
    /// A field has the wrong JSON type.
    WrongType { field: &'static str, expected: &'static str, found: String },
    /// A field has a value that is out of range or inconsistent with another field.
    Invalid { field: &'static str, reason: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidJson(m) => write!(f, "config is not valid JSON: {m}"),
            ConfigError::NotAnObject { found } => {
                write!(f, "config must be a JSON object like {{\"arch\": \"decoder\", ...}}, but it is {found}")
            }
            ConfigError::MissingField { field, arch: Some(arch) } => {
                write!(f, "config field \"{field}\" is missing (required for arch \"{arch}\")")
            }
            ConfigError::MissingField { field, arch: None } => {
                write!(f, "config field \"{field}\" is missing")
            }
            ConfigError::WrongType { field, expected, found } => {
                write!(f, "config field \"{field}\" must be {expected}, got {found}")
            }
            ConfigError::Invalid { field, reason } => write!(f, "config field \"{field}\": {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

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

/// A short, one-line rendering of a JSON value for error messages.
/// Bounded while it is rendered: a 100 MB value is never turned into a string whole.
fn show_value(v: &Value) -> String {
    crate::error::json_snippet(v)
}

/// Field access with precise errors.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
    arch: Option<Arch>,
}

impl<'a> Fields<'a> {
    fn get(&self, field: &'static str) -> Option<&'a Value> {
        match self.obj.get(strip(self.prefix, field)) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn missing(&self, field: &'static str) -> ConfigError {
        ConfigError::MissingField { field, arch: self.arch }
    }

    /// An optional positive integer in 1..=max.
    fn opt_size(&self, field: &'static str, max: usize) -> Result<Option<usize>, ConfigError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let wrong = || ConfigError::WrongType { field, expected: "a positive integer", found: show_value(v) };
        let Value::Number(n) = v else {
            return Err(wrong());
        };
        let Some(n) = n.as_u64() else {
            // negative or fractional
            return Err(wrong());
        };
        if n == 0 {
            return Err(ConfigError::Invalid { field, reason: "must be at least 1, got 0".into() });
        }
        if n > max as u64 {
            return Err(ConfigError::Invalid { field, reason: format!("{n} is too large (the limit is {max})") });
        }
        Ok(Some(n as usize))
    }

    fn size(&self, field: &'static str, max: usize) -> Result<usize, ConfigError> {
        self.opt_size(field, max)?.ok_or_else(|| self.missing(field))
    }

    /// An optional finite float > 0 (and <= max).
    fn opt_positive_f32(&self, field: &'static str, max: f64) -> Result<Option<f32>, ConfigError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let Some(x) = v.as_f64() else {
            return Err(ConfigError::WrongType { field, expected: "a number", found: show_value(v) });
        };
        if !(x > 0.0 && x <= max && (x as f32).is_normal()) {
            return Err(ConfigError::Invalid { field, reason: format!("must be a positive number no larger than {max}, got {x}") });
        }
        Ok(Some(x as f32))
    }
}

/// `"moe.top_k"` -> `"top_k"` when reading inside the `moe` object.
fn strip(prefix: &'static str, field: &'static str) -> &'static str {
    if prefix.is_empty() {
        field
    } else {
        field.strip_prefix(prefix).unwrap_or(field)
    }
}

fn invalid(field: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { field, reason }
}

impl ModelConfig {
    /// Parses and validates a config JSON string (the content of `__metadata__["config"]`).
    pub fn from_json(json: &str) -> Result<ModelConfig, ConfigError> {
        let value: Value = serde_json::from_str(json).map_err(|e| ConfigError::InvalidJson(e.to_string()))?;
        ModelConfig::from_value(&value)
    }

    /// Validates an already parsed JSON value.
    pub fn from_value(value: &Value) -> Result<ModelConfig, ConfigError> {
        let obj = match value {
            Value::Object(o) => o,
            Value::String(_) => return Err(ConfigError::NotAnObject { found: "a string (was it JSON-encoded twice?)" }),
            other => return Err(ConfigError::NotAnObject { found: json_type(other) }),
        };
        let top = Fields { obj, prefix: "", arch: None };

        // arch
        let arch = match top.get("arch") {
            None => return Err(top.missing("arch")),
            Some(Value::String(s)) => Arch::parse(s).ok_or_else(|| {
                invalid(
                    "arch",
                    format!("unknown architecture {}: expected \"encoder_decoder\", \"decoder\" or \"llama\"", crate::error::quote(s)),
                )
            })?,
            Some(v) => {
                return Err(ConfigError::WrongType {
                    field: "arch",
                    expected: "a string (\"encoder_decoder\", \"decoder\" or \"llama\")",
                    found: show_value(v),
                })
            }
        };
        let f = Fields { obj, prefix: "", arch: Some(arch) };

        // shared sizes
        let d_model = f.size("d_model", MAX_DIM)?;
        let num_layers = f.size("num_layers", MAX_LAYERS)?;
        let num_heads = f.size("num_heads", MAX_DIM)?;
        let max_seq_len = f.size("max_seq_len", MAX_SEQ_LEN)?;
        if d_model % num_heads != 0 {
            return Err(invalid("num_heads", format!("d_model ({d_model}) must be divisible by num_heads ({num_heads})")));
        }
        let head_dim = d_model / num_heads;

        // num_kv_heads: validated whenever present
        let kv = f.opt_size("num_kv_heads", MAX_DIM)?;
        if let Some(kv) = kv {
            if num_heads % kv != 0 {
                return Err(invalid("num_kv_heads", format!("num_heads ({num_heads}) must be divisible by num_kv_heads ({kv})")));
            }
        }

        // vocabularies
        let (vocab_size, src_vocab_size, tgt_vocab_size) = match arch {
            Arch::EncoderDecoder => {
                let src = f.size("src_vocab_size", MAX_DIM)?;
                let tgt = f.size("tgt_vocab_size", MAX_DIM)?;
                (tgt, src, tgt)
            }
            Arch::Decoder | Arch::Llama => {
                let v = f.size("vocab_size", MAX_DIM)?;
                (v, v, v)
            }
        };

        // moe
        let moe = match f.get("moe") {
            None => None,
            Some(Value::Object(m)) => {
                if arch != Arch::Decoder {
                    return Err(invalid("moe", format!("mixture of experts is only supported for arch \"decoder\", not \"{arch}\"")));
                }
                let mf = Fields { obj: m, prefix: "moe.", arch: Some(arch) };
                let num_experts = mf.size("moe.num_experts", MAX_EXPERTS)?;
                let top_k = mf.size("moe.top_k", MAX_EXPERTS)?;
                let expert_dim = mf.size("moe.expert_dim", MAX_DIM)?;
                let capacity_factor = mf.opt_positive_f32("moe.capacity_factor", 1e6)?.ok_or_else(|| mf.missing("moe.capacity_factor"))?;
                if top_k > num_experts {
                    return Err(invalid("moe.top_k", format!("top_k ({top_k}) must not exceed num_experts ({num_experts})")));
                }
                Some(MoeConfig { num_experts, top_k, expert_dim, capacity_factor })
            }
            Some(v) => {
                return Err(ConfigError::WrongType {
                    field: "moe",
                    expected: "an object {\"num_experts\", \"top_k\", \"expert_dim\", \"capacity_factor\"} or absent",
                    found: show_value(v),
                })
            }
        };

        let cfg = match arch {
            Arch::EncoderDecoder | Arch::Decoder => {
                if let Some(kv) = kv {
                    if kv != num_heads {
                        return Err(invalid(
                            "num_kv_heads",
                            format!(
                                "grouped-query attention is only supported for arch \"llama\"; for \"{arch}\" num_kv_heads must equal num_heads ({num_heads}) or be absent, got {kv}"
                            ),
                        ));
                    }
                }
                let d_ff = match (&moe, f.opt_size("d_ff", MAX_DIM)?) {
                    (_, Some(d)) => d,
                    (Some(m), None) => m.expert_dim,
                    (None, None) => return Err(f.missing("d_ff")),
                };
                ModelConfig {
                    arch,
                    vocab_size,
                    src_vocab_size,
                    tgt_vocab_size,
                    d_model,
                    num_layers,
                    num_heads,
                    max_seq_len,
                    d_ff,
                    num_kv_heads: num_heads,
                    multiple_of: 0,
                    norm_eps: LAYER_NORM_EPS,
                    rope_theta: DEFAULT_ROPE_THETA,
                    moe,
                }
            }
            Arch::Llama => {
                if head_dim % 2 != 0 {
                    return Err(invalid(
                        "num_heads",
                        format!(
                            "llama needs an even head dimension for RoPE pairs, but d_model ({d_model}) / num_heads ({num_heads}) = {head_dim}"
                        ),
                    ));
                }
                let multiple_of = f.size("multiple_of", MAX_DIM)?;
                let norm_eps = f.opt_positive_f32("norm_eps", 1.0)?.unwrap_or(DEFAULT_RMS_NORM_EPS);
                let rope_theta = f.opt_positive_f32("rope_theta", 1e12)?.unwrap_or(DEFAULT_ROPE_THETA);
                let hidden = llama_hidden(d_model, multiple_of);
                if hidden > MAX_DIM {
                    return Err(invalid("multiple_of", format!("the SwiGLU hidden size {hidden} it gives is over the limit of {MAX_DIM}")));
                }
                ModelConfig {
                    arch,
                    vocab_size,
                    src_vocab_size,
                    tgt_vocab_size,
                    d_model,
                    num_layers,
                    num_heads,
                    max_seq_len,
                    d_ff: hidden,
                    num_kv_heads: kv.unwrap_or(num_heads),
                    multiple_of,
                    norm_eps,
                    rope_theta,
                    moe: None,
                }
            }
        };

        // Whole-model bounds: keeps expected_tensors() and the parameter count small and overflow-free.
        let tensors = cfg.tensor_count();
        if tensors > MAX_TENSORS {
            return Err(invalid(
                if cfg.moe.is_some() { "moe.num_experts" } else { "num_layers" },
                format!("the config describes {tensors} tensors, over the limit of {MAX_TENSORS}"),
            ));
        }
        let params = cfg.param_count();
        if params > MAX_PARAMS {
            return Err(invalid("d_model", format!("the config describes {params} parameters, over the limit of {MAX_PARAMS}")));
        }
        Ok(cfg)
    }

    /// d_model / num_heads.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.num_heads
    }

    /// SwiGLU hidden size: multiple_of * ceil(int(2 * 4 * d_model / 3) / multiple_of).
    /// Meaningful for llama (for which it also is `d_ff`); computed from the fields for any arch.
    pub fn llama_hidden_dim(&self) -> usize {
        llama_hidden(self.d_model, self.multiple_of.max(1))
    }

    /// Number of tensors in `expected_tensors()` (computed without building the list).
    pub fn tensor_count(&self) -> u64 {
        let l = self.num_layers as u64;
        match self.arch {
            // per encoder layer: 4 attn * 2 + 2 norms * 2 + 2 linears * 2 = 16
            // per decoder layer: 8 attn * 2 + 3 norms * 2 + 4 = 26
            Arch::EncoderDecoder => 1 + 16 * l + 1 + 26 * l + 2,
            Arch::Decoder => {
                let ffn = match &self.moe {
                    None => 4,
                    Some(m) => 2 + 4 * m.num_experts as u64,
                };
                1 + l * (8 + 4 + ffn) + 2 + 1
            }
            Arch::Llama => 1 + 9 * l + 2,
        }
    }

    /// Every tensor the model needs, with its PyTorch `state_dict()` name and shape, in a stable order.
    /// Registered buffers (`*.pos_encoding.pe`) are not listed: they are not needed.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let d = self.d_model;
        let mut out: Vec<(String, Vec<usize>)> = Vec::with_capacity(self.tensor_count() as usize);
        let mut push = |name: String, shape: Vec<usize>| out.push((name, shape));
        let linear = |push: &mut dyn FnMut(String, Vec<usize>), name: String, o: usize, i: usize| {
            push(format!("{name}.weight"), vec![o, i]);
            push(format!("{name}.bias"), vec![o]);
        };
        let layer_norm = |push: &mut dyn FnMut(String, Vec<usize>), name: String| {
            push(format!("{name}.weight"), vec![d]);
            push(format!("{name}.bias"), vec![d]);
        };
        match self.arch {
            Arch::EncoderDecoder => {
                let ff = self.d_ff;
                push("encoder.embedding.weight".into(), vec![self.src_vocab_size, d]);
                for i in 0..self.num_layers {
                    let p = format!("encoder.layers.{i}");
                    for w in ["W_q", "W_k", "W_v", "W_o"] {
                        linear(&mut push, format!("{p}.self_attention.{w}"), d, d);
                    }
                    layer_norm(&mut push, format!("{p}.norm1"));
                    layer_norm(&mut push, format!("{p}.norm2"));
                    linear(&mut push, format!("{p}.feed_forward.linear1"), ff, d);
                    linear(&mut push, format!("{p}.feed_forward.linear2"), d, ff);
                }
                push("decoder.embedding.weight".into(), vec![self.tgt_vocab_size, d]);
                for i in 0..self.num_layers {
                    let p = format!("decoder.layers.{i}");
                    for w in ["W_q", "W_k", "W_v", "W_o"] {
                        linear(&mut push, format!("{p}.self_attention.{w}"), d, d);
                    }
                    for w in ["W_q", "W_k", "W_v", "W_o"] {
                        linear(&mut push, format!("{p}.encoder_attention.{w}"), d, d);
                    }
                    layer_norm(&mut push, format!("{p}.norm1"));
                    layer_norm(&mut push, format!("{p}.norm2"));
                    layer_norm(&mut push, format!("{p}.norm3"));
                    linear(&mut push, format!("{p}.feed_forward.linear1"), ff, d);
                    linear(&mut push, format!("{p}.feed_forward.linear2"), d, ff);
                }
                linear(&mut push, "final_layer".into(), self.tgt_vocab_size, d);
            }
            Arch::Decoder => {
                push("token_embedding.weight".into(), vec![self.vocab_size, d]);
                for i in 0..self.num_layers {
                    let p = format!("decoder_layers.{i}");
                    for w in ["w_q", "w_k", "w_v", "w_o"] {
                        linear(&mut push, format!("{p}.self_attn.{w}"), d, d);
                    }
                    layer_norm(&mut push, format!("{p}.norm1"));
                    layer_norm(&mut push, format!("{p}.norm2"));
                    match &self.moe {
                        None => {
                            linear(&mut push, format!("{p}.feed_forward.linear1"), self.d_ff, d);
                            linear(&mut push, format!("{p}.feed_forward.linear2"), d, self.d_ff);
                        }
                        Some(m) => {
                            linear(&mut push, format!("{p}.feed_forward.router"), m.num_experts, d);
                            for e in 0..m.num_experts {
                                let x = format!("{p}.feed_forward.experts.{e}");
                                linear(&mut push, format!("{x}.0"), m.expert_dim, d);
                                linear(&mut push, format!("{x}.2"), d, m.expert_dim);
                            }
                        }
                    }
                }
                layer_norm(&mut push, "ln_f".into());
                push("lm_head.weight".into(), vec![self.vocab_size, d]);
            }
            Arch::Llama => {
                let (nh, nkv, hs) = (self.num_heads, self.num_kv_heads, self.head_dim());
                let hidden = self.llama_hidden_dim();
                push("tok_embeddings.weight".into(), vec![self.vocab_size, d]);
                for i in 0..self.num_layers {
                    let p = format!("layers.{i}");
                    push(format!("{p}.attention.wq.weight"), vec![nh * hs, d]);
                    push(format!("{p}.attention.wk.weight"), vec![nkv * hs, d]);
                    push(format!("{p}.attention.wv.weight"), vec![nkv * hs, d]);
                    push(format!("{p}.attention.wo.weight"), vec![d, nh * hs]);
                    push(format!("{p}.feed_forward.w1.weight"), vec![hidden, d]);
                    push(format!("{p}.feed_forward.w2.weight"), vec![d, hidden]);
                    push(format!("{p}.feed_forward.w3.weight"), vec![hidden, d]);
                    push(format!("{p}.attention_norm.weight"), vec![d]);
                    push(format!("{p}.ffn_norm.weight"), vec![d]);
                }
                push("norm.weight".into(), vec![d]);
                push("output.weight".into(), vec![self.vocab_size, d]);
            }
        }
        out
    }

    /// Total number of parameters of the tensors in `expected_tensors()` (buffers excluded).
    /// Computed in closed form with saturating u64 arithmetic, so it never overflows.
    pub fn param_count(&self) -> u64 {
        let d = self.d_model as u64;
        let l = self.num_layers as u64;
        let lin = |o: u64, i: u64| o.saturating_mul(i).saturating_add(o); // weight + bias
        let attn = lin(d, d).saturating_mul(4);
        let ln = 2 * d;
        match self.arch {
            Arch::EncoderDecoder => {
                let (src, tgt, ff) = (self.src_vocab_size as u64, self.tgt_vocab_size as u64, self.d_ff as u64);
                let ffn = lin(ff, d).saturating_add(lin(d, ff));
                let enc = attn.saturating_add(2 * ln).saturating_add(ffn);
                let dec = attn.saturating_mul(2).saturating_add(3 * ln).saturating_add(ffn);
                src.saturating_mul(d)
                    .saturating_add(tgt.saturating_mul(d))
                    .saturating_add(l.saturating_mul(enc.saturating_add(dec)))
                    .saturating_add(lin(tgt, d))
            }
            Arch::Decoder => {
                let v = self.vocab_size as u64;
                let ffn = match &self.moe {
                    None => lin(self.d_ff as u64, d).saturating_add(lin(d, self.d_ff as u64)),
                    Some(m) => {
                        let (e, x) = (m.num_experts as u64, m.expert_dim as u64);
                        lin(e, d).saturating_add(e.saturating_mul(lin(x, d).saturating_add(lin(d, x))))
                    }
                };
                let layer = attn.saturating_add(2 * ln).saturating_add(ffn);
                v.saturating_mul(d).saturating_add(l.saturating_mul(layer)).saturating_add(ln).saturating_add(v.saturating_mul(d))
            }
            Arch::Llama => {
                let v = self.vocab_size as u64;
                let hs = self.head_dim() as u64;
                let (nh, nkv) = (self.num_heads as u64, self.num_kv_heads as u64);
                let h = self.llama_hidden_dim() as u64;
                let attn = (2 * nh * hs).saturating_mul(d).saturating_add((2 * nkv * hs).saturating_mul(d));
                let ffn = h.saturating_mul(d).saturating_mul(3);
                let layer = attn.saturating_add(ffn).saturating_add(2 * d);
                v.saturating_mul(d).saturating_add(l.saturating_mul(layer)).saturating_add(d).saturating_add(v.saturating_mul(d))
            }
        }
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
