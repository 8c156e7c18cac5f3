//! Hugging Face model directories: `config.json`, `model.safetensors` or shards listed by
//! `model.safetensors.index.json`. GPT-2, GPT-NeoX (Pythia), Llama and Qwen2 (Mistral when it is the same graph).

use super::{err, DType, Dims, Family, Files, Format, FormatError, Op, Plan, Result, Source, TensorPlan};
use super::{MAX_DIM, MAX_JSON_BYTES, MAX_LAYERS};
use safetensors::tensor::{Dtype as StDtype, Metadata};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// The fields of config.json we read (GPT-2 and Llama spell some differently); everything else is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: Option<usize>,
    // Llama / Qwen2 / Mistral
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers 5 writes {rope_theta, rope_type, ...} here instead of rope_theta / rope_scaling.
    pub rope_parameters: Option<serde_json::Value>,
    pub tie_word_embeddings: Option<bool>,
    pub hidden_act: Option<String>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    pub use_sliding_window: Option<bool>,
    pub sliding_window: Option<serde_json::Value>,
    // GPT-2
    pub n_embd: Option<usize>,
    pub n_layer: Option<usize>,
    pub n_head: Option<usize>,
    pub n_inner: Option<usize>,
    pub n_positions: Option<usize>,
    pub layer_norm_epsilon: Option<f64>,
    pub activation_function: Option<String>,
    // GPT-NeoX (hidden_size, intermediate_size, ... as Llama; rope_parameters from transformers 5)
    pub layer_norm_eps: Option<f64>,
    pub use_parallel_residual: Option<bool>,
    pub rotary_pct: Option<f64>,
    pub rotary_emb_base: Option<f64>,
    pub partial_rotary_factor: Option<f64>,
}

fn need<T: Copy>(v: Option<T>, field: &str) -> Result<T> {
    v.ok_or_else(|| FormatError(format!("config.json: missing field \"{field}\"")))
}

fn dim(v: usize, field: &str, max: usize) -> Result<usize> {
    if v == 0 || v > max {
        return err(format!("config.json: \"{field}\" must be between 1 and {max}, got {v}"));
    }
    Ok(v)
}

/// Reads config.json. A field of the wrong type is named, with what it should be ("\"n_layer\" should be a whole
/// number, not the string \"12\""), instead of serde's "expected usize at line 1 column 78".
pub fn read_config(bytes: &[u8]) -> Result<RawConfig> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| FormatError(format!("config.json is not valid JSON ({e})")))?;
    let serde_json::Value::Object(fields) = &value else {
        return err(format!("config.json should hold a JSON object of settings, not {}", describe(&value)));
    };
    RawConfig::deserialize(&value).map_err(|whole| {
        // The first field that fails on its own is the one to name.
        for (name, v) in fields {
            let one = serde_json::Value::Object([(name.clone(), v.clone())].into_iter().collect());
            if let Err(e) = RawConfig::deserialize(&one) {
                return FormatError(format!("config.json: \"{name}\" should be {}, not {}", expected(&e.to_string()), describe(v)));
            }
        }
        FormatError(format!("config.json: {whole}"))
    })
}

/// What serde expected, in words ("expected usize" -> "a whole number (0 or more)").
fn expected(message: &str) -> String {
    let want = message.rsplit("expected ").next().unwrap_or("").trim();
    match want {
        "usize" | "u32" | "u64" => "a whole number (0 or more)".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" => "a string".into(),
        "a sequence" => "a list".into(),
        other => other.to_string(),
    }
}

/// A JSON value as a person reads it: the string "12", the number -1, a list, ...
fn describe(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(b) => format!("{b}"),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::String(s) => format!("the string {}", serde_json::Value::String(s.chars().take(40).collect())),
        serde_json::Value::Array(_) => "a list".into(),
        serde_json::Value::Object(_) => "an object".into(),
    }
}

/// Which family config.json declares, from `model_type` (or `architectures`).
pub fn detect(c: &RawConfig) -> Result<(Family, String)> {
    let arch = c.architectures.first().cloned().unwrap_or_default();
    let mt = c.model_type.clone().unwrap_or_default();
    let family = match (mt.as_str(), arch.as_str()) {
        ("gpt2", _) | (_, "GPT2LMHeadModel") => Family::Gpt2,
        ("llama", _) | (_, "LlamaForCausalLM") => Family::Llama,
        // Mistral is Llama's graph; its sliding window is refused below unless it covers the context.
        ("mistral", _) | (_, "MistralForCausalLM") => Family::Llama,
        ("qwen2", _) | (_, "Qwen2ForCausalLM") => Family::Qwen2,
        ("gpt_neox", _) | (_, "GPTNeoXForCausalLM") => Family::GptNeox,
        _ => {
            let name = if !arch.is_empty() {
                format!("{arch} (model_type \"{mt}\")")
            } else if !mt.is_empty() {
                format!("model_type \"{mt}\"")
            } else {
                "no model_type or architectures".into()
            };
            return err(format!(
                "config.json: {name} is not supported: tinyformer opens gpt2, gpt_neox (Pythia), llama, mistral and qwen2 models"
            ));
        }
    };
    let declared = if arch.is_empty() { mt } else { arch };
    Ok((family, declared))
}

/// The dimensions of a config, checked.
pub fn dims(c: &RawConfig, family: Family) -> Result<Dims> {
    let vocab = dim(need(c.vocab_size, "vocab_size")?, "vocab_size", MAX_DIM)?;
    match family {
        Family::Gpt2 => {
            let d = dim(need(c.n_embd, "n_embd")?, "n_embd", MAX_DIM)?;
            let nh = dim(need(c.n_head, "n_head")?, "n_head", MAX_LAYERS)?;
            if d % nh != 0 {
                return err(format!("config.json: n_embd {d} is not a multiple of n_head {nh}"));
            }
            let act = c.activation_function.as_deref().unwrap_or("gelu_new");
            if !["gelu_new", "gelu_pytorch_tanh"].contains(&act) {
                return err(format!("config.json: activation_function \"{act}\" is not supported (gelu_new only)"));
            }
            Ok(Dims {
                vocab_size: vocab,
                d_model: d,
                num_layers: dim(need(c.n_layer, "n_layer")?, "n_layer", MAX_LAYERS)?,
                num_heads: nh,
                num_kv_heads: nh,
                head_dim: d / nh,
                ffn_hidden: dim(c.n_inner.unwrap_or(4 * d), "n_inner", MAX_DIM)?,
                context: dim(need(c.n_positions, "n_positions")?, "n_positions", MAX_DIM)?,
                norm_eps: c.layer_norm_epsilon.unwrap_or(1e-5) as f32,
                rope_theta: 0.0,
                // GPT2LMHeadModel ties lm_head to wte unless the config says otherwise
                tied: c.tie_word_embeddings.unwrap_or(true),
                qkv_bias: true,
                rotary_dims: 0,
                parallel_residual: false,
                activation: "gelu_tanh",
            })
        }
        Family::Llama | Family::Qwen2 => {
            let d = dim(need(c.hidden_size, "hidden_size")?, "hidden_size", MAX_DIM)?;
            let nh = dim(need(c.num_attention_heads, "num_attention_heads")?, "num_attention_heads", MAX_LAYERS)?;
            let nkv = dim(c.num_key_value_heads.unwrap_or(nh), "num_key_value_heads", MAX_LAYERS)?;
            if nh % nkv != 0 {
                return err(format!("config.json: num_attention_heads {nh} is not a multiple of num_key_value_heads {nkv}"));
            }
            let hd = dim(c.head_dim.unwrap_or(d / nh), "head_dim", MAX_DIM)?;
            if c.head_dim.is_none() && d % nh != 0 {
                return err(format!("config.json: hidden_size {d} is not a multiple of num_attention_heads {nh}"));
            }
            if hd % 2 != 0 {
                return err(format!("config.json: the head size {hd} is odd; RoPE rotates pairs"));
            }
            let act = c.hidden_act.as_deref().unwrap_or("silu");
            if act != "silu" {
                return err(format!("config.json: hidden_act \"{act}\" is not supported (silu only)"));
            }
            unscaled_rope(c)?;
            if c.mlp_bias == Some(true) {
                return err("config.json: mlp_bias is not supported");
            }
            let context = dim(need(c.max_position_embeddings, "max_position_embeddings")?, "max_position_embeddings", MAX_DIM)?;
            if c.use_sliding_window != Some(false) {
                if let Some(w) = c.sliding_window.as_ref().and_then(|w| w.as_u64()) {
                    if (w as usize) < context && (c.use_sliding_window == Some(true) || c.model_type.as_deref() == Some("mistral")) {
                        return err(format!(
                            "config.json: a sliding attention window of {w} tokens (under the context of {context}) is not supported"
                        ));
                    }
                }
            }
            let qkv_bias = family == Family::Qwen2 || c.attention_bias == Some(true);
            Ok(Dims {
                vocab_size: vocab,
                d_model: d,
                num_layers: dim(need(c.num_hidden_layers, "num_hidden_layers")?, "num_hidden_layers", MAX_LAYERS)?,
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: hd,
                ffn_hidden: dim(need(c.intermediate_size, "intermediate_size")?, "intermediate_size", MAX_DIM)?,
                context,
                norm_eps: c.rms_norm_eps.unwrap_or(1e-6) as f32,
                rope_theta: rope_theta(c, None)?,
                tied: c.tie_word_embeddings.unwrap_or(false),
                qkv_bias,
                rotary_dims: 0,
                parallel_residual: false,
                activation: "swiglu",
            })
        }
        Family::GptNeox => {
            let d = dim(need(c.hidden_size, "hidden_size")?, "hidden_size", MAX_DIM)?;
            let nh = dim(need(c.num_attention_heads, "num_attention_heads")?, "num_attention_heads", MAX_LAYERS)?;
            if d % nh != 0 {
                return err(format!("config.json: hidden_size {d} is not a multiple of num_attention_heads {nh}"));
            }
            let hd = d / nh;
            // transformers' GPTNeoXMLP: ACT2FN[hidden_act]; "gelu" is the exact erf form
            let activation = match c.hidden_act.as_deref().unwrap_or("gelu") {
                "gelu" => "gelu_erf",
                "gelu_new" | "gelu_pytorch_tanh" => "gelu_tanh",
                other => return err(format!("config.json: hidden_act \"{other}\" is not supported (gelu, gelu_new or gelu_pytorch_tanh)")),
            };
            unscaled_rope(c)?;
            // transformers 5: rope_parameters.partial_rotary_factor; older configs: rotary_pct (default 0.25, as
            // transformers' GPTNeoXConfig); the rotated dims are int(head_size * pct), as GPTNeoXAttention computes
            let param = |k: &str| c.rope_parameters.as_ref().and_then(|p| p.get(k)).and_then(|v| v.as_f64());
            let (field, pct) = match (param("partial_rotary_factor"), c.partial_rotary_factor, c.rotary_pct) {
                (Some(p), _, _) => ("rope_parameters.partial_rotary_factor", p),
                (None, Some(p), _) => ("partial_rotary_factor", p),
                (None, None, Some(p)) => ("rotary_pct", p),
                (None, None, None) => ("rotary_pct", 0.25),
            };
            if !(pct > 0.0 && pct <= 1.0) {
                return err(format!("config.json: {field} must be in (0, 1], got {pct}"));
            }
            let rot = (hd as f64 * pct) as usize;
            if rot == 0 || !rot.is_multiple_of(2) {
                return err(format!(
                    "config.json: {field} {pct} rotates {rot} of the head's {hd} dimensions; RoPE needs an even number, at least 2"
                ));
            }
            Ok(Dims {
                vocab_size: vocab,
                d_model: d,
                num_layers: dim(need(c.num_hidden_layers, "num_hidden_layers")?, "num_hidden_layers", MAX_LAYERS)?,
                num_heads: nh,
                num_kv_heads: nh,
                head_dim: hd,
                ffn_hidden: dim(need(c.intermediate_size, "intermediate_size")?, "intermediate_size", MAX_DIM)?,
                context: dim(need(c.max_position_embeddings, "max_position_embeddings")?, "max_position_embeddings", MAX_DIM)?,
                norm_eps: c.layer_norm_eps.unwrap_or(1e-5) as f32,
                rope_theta: rope_theta(c, c.rotary_emb_base)?,
                tied: c.tie_word_embeddings.unwrap_or(false),
                qkv_bias: c.attention_bias.unwrap_or(true),
                rotary_dims: if rot == hd { 0 } else { rot },
                parallel_residual: c.use_parallel_residual.unwrap_or(true),
                activation,
            })
        }
    }
}

/// rope_scaling, when present, must name its type (transformers refuses one without); transformers 5's
/// rope_parameters may leave it out for the default. Only unscaled RoPE is supported.
fn unscaled_rope(c: &RawConfig) -> Result<()> {
    for (field, rs) in [("rope_scaling", &c.rope_scaling), ("rope_parameters", &c.rope_parameters)] {
        let Some(rs) = rs.as_ref().filter(|v| !v.is_null()) else { continue };
        if !rs.is_object() {
            return err(format!("config.json: {field} must be an object with a \"rope_type\", not {rs}"));
        }
        let kind = match rs.get("rope_type").or_else(|| rs.get("type")) {
            Some(t) => match t.as_str() {
                Some(k) => k,
                None => return err(format!("config.json: {field}'s rope_type must be a string, not {t}")),
            },
            None if field == "rope_scaling" => {
                return err("config.json: rope_scaling names no \"rope_type\" (transformers refuses it too)".to_string())
            }
            None => "default",
        };
        if kind != "default" {
            return err(format!(
                "config.json: rope_scaling of type \"{kind}\" is not supported yet (Llama-3.1-style long-context RoPE); only unscaled RoPE"
            ));
        }
    }
    Ok(())
}

/// The RoPE base: rope_theta, transformers 5's rope_parameters.rope_theta, or `older` (GPT-NeoX's
/// rotary_emb_base); 10000 when none is given.
fn rope_theta(c: &RawConfig, older: Option<f64>) -> Result<f32> {
    let (field, theta) = match (c.rope_theta, c.rope_parameters.as_ref().and_then(|p| p.get("rope_theta")).and_then(|t| t.as_f64()), older)
    {
        (Some(t), _, _) => ("rope_theta", t),
        (None, Some(t), _) => ("rope_parameters.rope_theta", t),
        (None, None, Some(t)) => ("rotary_emb_base", t),
        (None, None, None) => ("rope_theta", 10000.0),
    };
    if !(theta > 0.0 && theta <= 1e12) {
        return err(format!("config.json: {field} must be a positive number no larger than 1e12, got {theta}"));
    }
    Ok(theta as f32)
}

/// A stored tensor: its file, absolute data offset, dtype and shape. `dtype` is Err(the stored dtype's
/// name) for what we do not read as weights (BOOL, integers, F64, 8-bit floats): a buffer of that dtype
/// saved beside the weights (GPT-NeoX's BOOL causal mask `attention.bias`) is skipped, and a weight of
/// that dtype is refused when the plan takes it.
struct Stored {
    file: String,
    offset: u64,
    dtype: std::result::Result<DType, String>,
    shape: Vec<usize>,
}

/// Reads one safetensors header (bounded) and checks it against the file size.
fn header(files: &dyn Files, file: &str) -> Result<Vec<(String, Stored)>> {
    let size = files.size(file).ok_or_else(|| FormatError(format!("{file}: no such file")))?;
    if size < 8 {
        return err(format!("{file}: {size} bytes, too short for a safetensors header"));
    }
    let len: [u8; 8] =
        files.read_range(file, 0, 8)?.try_into().map_err(|_| FormatError(format!("{file}: cannot read its header length")))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_JSON_BYTES || 8 + n > size {
        return err(format!("{file}: the header claims {n} bytes but the file has {size}"));
    }
    let meta: Metadata =
        serde_json::from_slice(&files.read_range(file, 8, n)?).map_err(|e| FormatError(format!("{file}: bad safetensors header: {e}")))?;
    if 8 + n + meta.data_len() as u64 != size {
        return err(format!("{file}: the header describes {} bytes of data but the file holds {}", meta.data_len(), size - 8 - n));
    }
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let dtype = match info.dtype {
            StDtype::F32 => Ok(DType::F32),
            StDtype::F16 => Ok(DType::F16),
            StDtype::BF16 => Ok(DType::BF16),
            other => Err(format!("{other:?}")),
        };
        let numel = info.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        let bytes = numel.and_then(|n| n.checked_mul(info.dtype.bitsize() as u64)).map(|bits| bits.div_ceil(8));
        if bytes != Some((info.data_offsets.1 - info.data_offsets.0) as u64) {
            return err(format!(
                "{file}: tensor {name}: shape {:?} does not match its {} bytes",
                info.shape,
                info.data_offsets.1 - info.data_offsets.0
            ));
        }
        out.push((name, Stored { file: file.to_string(), offset: 8 + n + info.data_offsets.0 as u64, dtype, shape: info.shape.clone() }));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Index {
    weight_map: WeightMap,
}

/// Most entries an index may list: a 405B-parameter Llama has about 1,300 tensors.
const MAX_INDEX_ENTRIES: usize = 1 << 16;

/// An index's tensor -> shard map, read entry by entry: more than [`MAX_INDEX_ENTRIES`] entries, or a
/// tensor listed twice (JSON readers keep one of the two silently), is refused.
struct WeightMap(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for WeightMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = WeightMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of tensor names to shard file names")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> std::result::Result<WeightMap, A::Error> {
                use serde::de::Error;
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    if out.len() == MAX_INDEX_ENTRIES {
                        return Err(A::Error::custom(format!("weight_map lists more than {MAX_INDEX_ENTRIES} tensors")));
                    }
                    if out.contains_key(&k) {
                        return Err(A::Error::custom(format!("weight_map lists {} twice", crate::error::quote(&k))));
                    }
                    out.insert(k, v);
                }
                Ok(WeightMap(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// Every stored tensor of the directory, by name: one model.safetensors, or the shards of the index
/// (each shard must hold exactly the names the index gives it).
fn stored_tensors(files: &dyn Files) -> Result<HashMap<String, Stored>> {
    const INDEX: &str = "model.safetensors.index.json";
    let mut all = HashMap::new();
    if files.size(INDEX).is_some() {
        let idx: Index =
            serde_json::from_slice(&files.read_capped(INDEX, MAX_JSON_BYTES)?).map_err(|e| FormatError(format!("{INDEX}: {e}")))?;
        let idx = idx.weight_map;
        let mut by_file: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, file) in &idx.0 {
            by_file.entry(file.as_str()).or_default().push(name.as_str());
        }
        for (file, names) in by_file {
            if files.size(file).is_none() {
                return err(format!("{INDEX} names {file} (for {}), which is not among the files", names[0]));
            }
            let got = header(files, file)?;
            for (name, st) in got {
                if idx.0.get(&name).map(String::as_str) != Some(file) {
                    return err(format!("{file} holds {name}, which {INDEX} does not assign to it"));
                }
                all.insert(name, st);
            }
            if let Some(missing) = names.iter().find(|n| !all.contains_key(**n)) {
                return err(format!("{INDEX} puts {missing} in {file}, but that shard does not hold it"));
            }
        }
    } else if files.size("model.safetensors").is_some() {
        for (name, st) in header(files, "model.safetensors")? {
            all.insert(name, st);
        }
    } else {
        return err("no model.safetensors and no model.safetensors.index.json beside config.json");
    }
    Ok(all)
}

/// The stored names with `prefix` taken off; a tensor stored both with and without it is refused (which of
/// the two is the model's cannot be told), never one silently chosen.
fn unprefix(stored: HashMap<String, Stored>, prefix: &str) -> Result<HashMap<String, Stored>> {
    let mut out = HashMap::with_capacity(stored.len());
    let mut names: Vec<(String, Stored)> = stored.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in names {
        let short = k.strip_prefix(prefix).unwrap_or(&k).to_string();
        if out.contains_key(&short) {
            return err(format!(
                "the checkpoint holds {short} twice (as {short} and {prefix}{short}): which one is the model's cannot be told"
            ));
        }
        out.insert(short, v);
    }
    Ok(out)
}

/// Plans the load of a Hugging Face directory.
pub fn plan(files: &dyn Files) -> Result<Plan> {
    let raw = read_config(&files.read_capped("config.json", MAX_JSON_BYTES)?)?;
    let (family, declared) = detect(&raw)?;
    let dims = dims(&raw, family)?;
    let mut stored = stored_tensors(files)?;
    // Some GPT-2 checkpoints prefix every name with "transformer."; the Llama family with "model.".
    // GPT-NeoX's body is "gpt_neox."; its head "embed_out" (some exports say "lm_head")
    match family {
        Family::Gpt2 => stored = unprefix(stored, "transformer.")?,
        Family::GptNeox => stored = unprefix(stored, "gpt_neox.")?,
        _ => {}
    }
    let neox_head = if stored.contains_key("lm_head.weight") && !stored.contains_key("embed_out.weight") {
        "lm_head.weight"
    } else {
        "embed_out.weight" // the name a missing head is reported under: the Hub's
    };
    let mut tensors = Vec::new();
    let mut used = Vec::new();
    let mut take = |foreign: &str, name: String, want_stored: Vec<usize>, shape: Vec<usize>, op: Op| -> Result<()> {
        let st = stored.get(foreign).ok_or_else(|| FormatError(format!("the checkpoint has no tensor {foreign} (needed for {name})")))?;
        let dtype = match &st.dtype {
            Ok(t) => *t,
            Err(other) => return err(format!("{}: tensor {foreign} is {other}; only F32, F16 and BF16 weights are supported", st.file)),
        };
        if st.shape != want_stored {
            return err(format!("tensor {foreign} has shape {:?}, but config.json implies {:?}", st.shape, want_stored));
        }
        tensors.push(TensorPlan {
            name,
            shape,
            source: Source { file: st.file.clone(), offset: st.offset, dtype, stored: st.shape.clone(), foreign: foreign.to_string() },
            op,
        });
        used.push(foreign.to_string());
        Ok(())
    };
    let d = dims.d_model;
    let v = dims.vocab_size;
    let ff = dims.ffn_hidden;
    match family {
        Family::Gpt2 => {
            take("wte.weight", "token_embedding.weight".into(), vec![v, d], vec![v, d], Op::Copy)?;
            take("wpe.weight", "position_embedding.weight".into(), vec![dims.context, d], vec![dims.context, d], Op::Copy)?;
            for i in 0..dims.num_layers {
                let (h, p) = (format!("h.{i}"), format!("decoder_layers.{i}"));
                for (j, w) in ["w_q", "w_k", "w_v"].iter().enumerate() {
                    let rows = Op::Rows { transpose: true, start: j * d, len: d };
                    take(&format!("{h}.attn.c_attn.weight"), format!("{p}.self_attn.{w}.weight"), vec![d, 3 * d], vec![d, d], rows)?;
                    let rows = Op::Rows { transpose: false, start: j * d, len: d };
                    take(&format!("{h}.attn.c_attn.bias"), format!("{p}.self_attn.{w}.bias"), vec![3 * d], vec![d], rows)?;
                }
                take(&format!("{h}.attn.c_proj.weight"), format!("{p}.self_attn.w_o.weight"), vec![d, d], vec![d, d], Op::Transpose)?;
                take(&format!("{h}.attn.c_proj.bias"), format!("{p}.self_attn.w_o.bias"), vec![d], vec![d], Op::Copy)?;
                for (hf, ours) in [("ln_1", "norm1"), ("ln_2", "norm2")] {
                    for wb in ["weight", "bias"] {
                        take(&format!("{h}.{hf}.{wb}"), format!("{p}.{ours}.{wb}"), vec![d], vec![d], Op::Copy)?;
                    }
                }
                take(&format!("{h}.mlp.c_fc.weight"), format!("{p}.feed_forward.linear1.weight"), vec![d, ff], vec![ff, d], Op::Transpose)?;
                take(&format!("{h}.mlp.c_fc.bias"), format!("{p}.feed_forward.linear1.bias"), vec![ff], vec![ff], Op::Copy)?;
                take(
                    &format!("{h}.mlp.c_proj.weight"),
                    format!("{p}.feed_forward.linear2.weight"),
                    vec![ff, d],
                    vec![d, ff],
                    Op::Transpose,
                )?;
                take(&format!("{h}.mlp.c_proj.bias"), format!("{p}.feed_forward.linear2.bias"), vec![d], vec![d], Op::Copy)?;
            }
            for wb in ["weight", "bias"] {
                take(&format!("ln_f.{wb}"), format!("ln_f.{wb}"), vec![d], vec![d], Op::Copy)?;
            }
            // tied (GPT2LMHeadModel's default): the model's head is its embedding (no lm_head tensor of ours), and
            // a stored lm_head.weight is not read (see `ignorable`), as transformers ties it; with
            // tie_word_embeddings false the stored head is the model's
            if !dims.tied {
                take("lm_head.weight", "lm_head.weight".into(), vec![v, d], vec![v, d], Op::Copy)?;
            }
        }
        Family::Llama | Family::Qwen2 => {
            let (nh, nkv, hd) = (dims.num_heads, dims.num_kv_heads, dims.head_dim);
            take("model.embed_tokens.weight", "tok_embeddings.weight".into(), vec![v, d], vec![v, d], Op::Copy)?;
            for i in 0..dims.num_layers {
                let (m, p) = (format!("model.layers.{i}"), format!("layers.{i}"));
                let a = format!("{m}.self_attn");
                take(
                    &format!("{a}.q_proj.weight"),
                    format!("{p}.attention.wq.weight"),
                    vec![nh * hd, d],
                    vec![nh * hd, d],
                    Op::UnpermuteRope { heads: nh },
                )?;
                take(
                    &format!("{a}.k_proj.weight"),
                    format!("{p}.attention.wk.weight"),
                    vec![nkv * hd, d],
                    vec![nkv * hd, d],
                    Op::UnpermuteRope { heads: nkv },
                )?;
                take(&format!("{a}.v_proj.weight"), format!("{p}.attention.wv.weight"), vec![nkv * hd, d], vec![nkv * hd, d], Op::Copy)?;
                take(&format!("{a}.o_proj.weight"), format!("{p}.attention.wo.weight"), vec![d, nh * hd], vec![d, nh * hd], Op::Copy)?;
                if dims.qkv_bias {
                    take(
                        &format!("{a}.q_proj.bias"),
                        format!("{p}.attention.wq.bias"),
                        vec![nh * hd],
                        vec![nh * hd],
                        Op::UnpermuteRope { heads: nh },
                    )?;
                    take(
                        &format!("{a}.k_proj.bias"),
                        format!("{p}.attention.wk.bias"),
                        vec![nkv * hd],
                        vec![nkv * hd],
                        Op::UnpermuteRope { heads: nkv },
                    )?;
                    take(&format!("{a}.v_proj.bias"), format!("{p}.attention.wv.bias"), vec![nkv * hd], vec![nkv * hd], Op::Copy)?;
                }
                let f = format!("{m}.mlp");
                take(&format!("{f}.gate_proj.weight"), format!("{p}.feed_forward.w1.weight"), vec![ff, d], vec![ff, d], Op::Copy)?;
                take(&format!("{f}.down_proj.weight"), format!("{p}.feed_forward.w2.weight"), vec![d, ff], vec![d, ff], Op::Copy)?;
                take(&format!("{f}.up_proj.weight"), format!("{p}.feed_forward.w3.weight"), vec![ff, d], vec![ff, d], Op::Copy)?;
                take(&format!("{m}.input_layernorm.weight"), format!("{p}.attention_norm.weight"), vec![d], vec![d], Op::Copy)?;
                take(&format!("{m}.post_attention_layernorm.weight"), format!("{p}.ffn_norm.weight"), vec![d], vec![d], Op::Copy)?;
            }
            take("model.norm.weight", "norm.weight".into(), vec![d], vec![d], Op::Copy)?;
            // tied: the model's head is its embedding (no output tensor of ours); a stored lm_head.weight
            // (some exports keep the tied copy) is not read (see `ignorable`)
            if !dims.tied {
                take("lm_head.weight", "output.weight".into(), vec![v, d], vec![v, d], Op::Copy)?;
            }
        }
        Family::GptNeox => {
            let (nh, hd) = (dims.num_heads, dims.head_dim);
            let rot = if dims.rotary_dims == 0 { hd } else { dims.rotary_dims };
            take("embed_in.weight", "token_embedding.weight".into(), vec![v, d], vec![v, d], Op::Copy)?;
            for i in 0..dims.num_layers {
                let (m, p) = (format!("layers.{i}"), format!("decoder_layers.{i}"));
                // query_key_value is (3 C, C) laid out (heads, 3, head_dim) along its rows: q, k, v of each head
                // side by side; q and k rows leave HF's rotate-half order for our adjacent pairs on the rotary dims
                for (part, w) in ["w_q", "w_k", "w_v"].iter().enumerate() {
                    let op = Op::HeadRows { heads: nh, parts: 3, part, rot: if part < 2 { rot } else { 0 } };
                    let fused = format!("{m}.attention.query_key_value");
                    take(&format!("{fused}.weight"), format!("{p}.self_attn.{w}.weight"), vec![3 * d, d], vec![d, d], op.clone())?;
                    if dims.qkv_bias {
                        take(&format!("{fused}.bias"), format!("{p}.self_attn.{w}.bias"), vec![3 * d], vec![d], op)?;
                    }
                }
                take(&format!("{m}.attention.dense.weight"), format!("{p}.self_attn.w_o.weight"), vec![d, d], vec![d, d], Op::Copy)?;
                if dims.qkv_bias {
                    take(&format!("{m}.attention.dense.bias"), format!("{p}.self_attn.w_o.bias"), vec![d], vec![d], Op::Copy)?;
                }
                for (hf, ours) in [("input_layernorm", "norm1"), ("post_attention_layernorm", "norm2")] {
                    for wb in ["weight", "bias"] {
                        take(&format!("{m}.{hf}.{wb}"), format!("{p}.{ours}.{wb}"), vec![d], vec![d], Op::Copy)?;
                    }
                }
                let f = format!("{m}.mlp");
                take(&format!("{f}.dense_h_to_4h.weight"), format!("{p}.feed_forward.linear1.weight"), vec![ff, d], vec![ff, d], Op::Copy)?;
                take(&format!("{f}.dense_h_to_4h.bias"), format!("{p}.feed_forward.linear1.bias"), vec![ff], vec![ff], Op::Copy)?;
                take(&format!("{f}.dense_4h_to_h.weight"), format!("{p}.feed_forward.linear2.weight"), vec![d, ff], vec![d, ff], Op::Copy)?;
                take(&format!("{f}.dense_4h_to_h.bias"), format!("{p}.feed_forward.linear2.bias"), vec![d], vec![d], Op::Copy)?;
            }
            for wb in ["weight", "bias"] {
                take(&format!("final_layer_norm.{wb}"), format!("ln_f.{wb}"), vec![d], vec![d], Op::Copy)?;
            }
            if !dims.tied {
                take(neox_head, "lm_head.weight".into(), vec![v, d], vec![v, d], Op::Copy)?;
            }
        }
    }
    // Anything stored that we do not read is named (a config that does not describe the checkpoint),
    // except buffers that some exports keep (rotary inv_freq, GPT-2's causal mask "attn.bias"/"masked_bias",
    // GPT-NeoX's "attention.bias" (BOOL) / "attention.masked_bias"), and the lm_head.weight of a tied head
    // (GPT-2's is always tied to wte; GPT-NeoX's embed_out).
    let neox = family == Family::GptNeox;
    let ignorable = |n: &str| {
        n.ends_with("rotary_emb.inv_freq")
            || n.ends_with(".attn.bias")
            || n.ends_with(".attn.masked_bias")
            || (neox && (n.ends_with(".attention.bias") || n.ends_with(".attention.masked_bias")))
            || (dims.tied && (n == "lm_head.weight" || (neox && n == "embed_out.weight")))
    };
    let mut extra: Vec<&String> = stored.keys().filter(|k| !used.contains(k) && !ignorable(k)).collect();
    extra.sort();
    if let Some(x) = extra.first() {
        return err(format!("the checkpoint holds {} tensor(s) config.json does not describe, e.g. {x}", extra.len()));
    }
    let mut counts: HashMap<DType, usize> = HashMap::new();
    for t in &tensors {
        *counts.entry(t.source.dtype).or_default() += 1;
    }
    let dtype = counts.into_iter().max_by_key(|(_, n)| *n).map(|(t, _)| t).unwrap_or(DType::F32);
    Ok(Plan { format: Format::HfDirectory, family, declared, dims, tensors, dtype })
}

#[cfg(test)]
mod tests {
    use super::read_config;

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        let e = read_config(br#"{"model_type": "gpt2", "n_layer": "12"}"#).unwrap_err().to_string();
        assert!(e.contains("\"n_layer\" should be a whole number (0 or more), not the string \"12\""), "{e}");
        let e = read_config(br#"{"n_head": -1}"#).unwrap_err().to_string();
        assert!(e.contains("\"n_head\" should be a whole number (0 or more), not the number -1"), "{e}");
        let e = read_config(br#"{"tie_word_embeddings": "yes"}"#).unwrap_err().to_string();
        assert!(e.contains("\"tie_word_embeddings\" should be true or false"), "{e}");
        let e = read_config(b"{\"n_layer\": 12,").unwrap_err().to_string();
        assert!(e.starts_with("config.json is not valid JSON"), "{e}");
        assert!(read_config(br#"{"model_type": "gpt2", "n_layer": 12}"#).is_ok());
    }
}
