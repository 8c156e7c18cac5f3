//! The only file that knows JsValue / wasm_bindgen: a thin layer over the core for the page's
//! worker. Large tensors cross as Float32Array, small metadata as serde values.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Float32Array, Object, Reflect};
use wasm_bindgen::prelude::*;

use crate::cpu::SampleParams;
use crate::fastcpu::FastCpuBackend;
use crate::gpu::Gpu;
use crate::mask::{self, Mask};
use crate::model::config::Arch;
use crate::model::memory::Budget;
use crate::model::run::{AttnMap, GenConfig, Generation, BOS_ID};
use crate::model::{Backend, GpuBackend, Model};
use crate::tokenizer::{StreamDecoder, Tokenizer};

thread_local! {
    static GPU: RefCell<Option<Arc<Gpu>>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

fn set(o: &Object, k: &str, v: &JsValue) {
    let _ = Reflect::set(o, &JsValue::from_str(k), v);
}

/// Every error the page sees: one line, control characters escaped, bounded length.
fn err(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&crate::error::one_line(&e.to_string())).into()
}

/// `navigator.gpu` in the window or worker scope.
fn has_navigator_gpu() -> bool {
    let global = js_sys::global();
    let nav = Reflect::get(&global, &JsValue::from_str("navigator")).unwrap_or(JsValue::UNDEFINED);
    if nav.is_undefined() || nav.is_null() {
        return false;
    }
    let gpu = Reflect::get(&nav, &JsValue::from_str("gpu")).unwrap_or(JsValue::UNDEFINED);
    !(gpu.is_undefined() || gpu.is_null())
}

fn gpu() -> Option<Arc<Gpu>> {
    GPU.with(|g| g.borrow().clone())
}

/// Finds a WebGPU adapter and builds every pipeline. Never throws for a missing GPU:
/// returns {ok: false, backend: "none", error} so the page can say so and fall back to the CPU.
#[wasm_bindgen]
pub async fn gpu_init() -> JsValue {
    let o = Object::new();
    if !has_navigator_gpu() {
        set(&o, "ok", &JsValue::FALSE);
        set(&o, "backend", &"none".into());
        set(&o, "error", &"WebGPU is not available in this browser (navigator.gpu is missing); the models run on the CPU instead".into());
        return o.into();
    }
    match Gpu::new().await {
        Ok(g) => {
            set(&o, "ok", &JsValue::TRUE);
            set(&o, "backend", &"webgpu".into());
            let s = &g.summary;
            let a = Object::new();
            set(&a, "name", &s.name.as_str().into());
            set(&a, "vendor", &s.vendor.as_str().into());
            set(&a, "architecture", &s.architecture.as_str().into());
            set(&a, "device_type", &s.device_type.as_str().into());
            set(&a, "backend", &s.backend.as_str().into());
            set(&a, "driver", &s.driver.as_str().into());
            set(&o, "adapter", &a);
            let l = Object::new();
            set(&l, "max_storage_buffer_binding_size", &(s.max_storage_buffer_binding_size as f64).into());
            set(&l, "max_buffer_size", &(s.max_buffer_size as f64).into());
            set(&l, "max_compute_workgroup_storage_size", &s.max_compute_workgroup_storage_size.into());
            set(&l, "max_compute_invocations_per_workgroup", &s.max_compute_invocations_per_workgroup.into());
            set(&l, "max_compute_workgroups_per_dimension", &s.max_compute_workgroups_per_dimension.into());
            set(&o, "limits", &l);
            GPU.with(|slot| *slot.borrow_mut() = Some(Arc::new(g)));
        }
        Err(e) => {
            set(&o, "ok", &JsValue::FALSE);
            set(&o, "backend", &"none".into());
            let msg = match e {
                crate::error::TfError::NoGpu(_) => {
                    format!("WebGPU is present but no usable GPU adapter was found ({e}); the models run on the CPU instead")
                }
                other => other.to_string(),
            };
            set(&o, "error", &msg.into());
        }
    }
    o.into()
}

/// Runs every kernel against its CPU twin on the GPU: [{name, ok, max_abs_diff, tolerance, detail, ms}].
#[wasm_bindgen]
pub async fn run_selftest() -> Result<JsValue, JsValue> {
    let g = gpu().ok_or_else(|| err("the GPU is not initialised: call gpu_init first (or WebGPU is unavailable)"))?;
    let results = crate::selftest::run_all(&g).await;
    serde_wasm_bindgen::to_value(&results).map_err(err)
}

fn mask_js(m: &Mask) -> JsValue {
    let o = Object::new();
    set(&o, "rows", &(m.rows as u32).into());
    set(&o, "cols", &(m.cols as u32).into());
    set(&o, "data", &Float32Array::from(&m.data[..]).into());
    o.into()
}

/// The padding, look-ahead, combined and KV-cache masks (1 = may attend) for a sequence of
/// `seq_len` tokens whose last `num_pad` are PAD, after `cached_len` cached tokens.
#[wasm_bindgen]
pub fn masks(seq_len: u32, num_pad: u32, cached_len: u32) -> Result<JsValue, JsValue> {
    let m = mask::mask_set(seq_len as usize, num_pad as usize, cached_len as usize).map_err(err)?;
    let o = Object::new();
    set(&o, "seq_len", &(m.seq_len as u32).into());
    set(&o, "num_pad", &(m.num_pad as u32).into());
    set(&o, "cached_len", &(m.cached_len as u32).into());
    set(&o, "tokens", &serde_wasm_bindgen::to_value(&m.tokens).map_err(err)?);
    set(&o, "padding", &mask_js(&m.padding));
    set(&o, "look_ahead", &mask_js(&m.look_ahead));
    set(&o, "combined", &mask_js(&m.combined));
    set(&o, "kv_cache", &mask_js(&m.kv_cache));
    Ok(o.into())
}

// ------------------------------------------------------------------------------------------------
// Models: one loaded at a time, on the GPU when gpu_init succeeded (else the fast CPU backend,
// src/fastcpu, built with simd128).
// Calls are async and the worker serialises them; a call that arrives while another one holds the
// model gets a "busy" error instead of corrupting state.
// ------------------------------------------------------------------------------------------------

enum Loaded {
    Gpu(GpuBackend, Model<GpuBackend>),
    Cpu(FastCpuBackend, Model<FastCpuBackend>),
}

struct Session {
    loaded: Option<Loaded>,
    file_size: usize,
    generation: Option<(Generation, Option<StreamDecoder>)>,
}

thread_local! {
    static SESSION: Rc<RefCell<Session>> = Rc::new(RefCell::new(Session { loaded: None, file_size: 0, generation: None }));
}

fn session() -> Rc<RefCell<Session>> {
    SESSION.with(|s| s.clone())
}

macro_rules! with_model {
    ($loaded:expr, |$b:ident, $m:ident| $body:expr) => {
        match $loaded {
            Loaded::Gpu($b, $m) => $body,
            Loaded::Cpu($b, $m) => $body,
        }
    };
}

fn busy() -> JsValue {
    err("the model is busy with another request; try again when it finishes")
}

fn no_model() -> JsValue {
    err("no model is loaded")
}

fn describe_model<B: Backend>(b: &B, m: &Model<B>, file_size: usize) -> serde_json::Value {
    let c = &m.cfg;
    let tok = m.tokenizer.as_ref().map(|t| serde_json::json!({"kind": t.kind(), "vocab_size": t.vocab_size(), "merges": t.num_merges()}));
    serde_json::json!({
        "arch": c.arch.as_str(),
        "parameters": m.params,
        "layers": c.num_layers,
        "heads": c.num_heads,
        "kv_heads": c.kv_heads(),
        "head_dim": c.head_dim(),
        "d_model": c.d_model,
        "d_ff": if c.arch == Arch::Llama { c.llama_hidden_dim() } else { c.d_ff },
        "experts": c.moe.as_ref().map(|m| m.num_experts),
        "top_k": c.moe.as_ref().map(|m| m.top_k),
        "vocab_size": m.in_vocab(),
        "src_vocab_size": c.src_vocab_size,
        "tgt_vocab_size": c.tgt_vocab_size,
        "context": c.max_seq_len,
        "file_size": file_size,
        "tokenizer": tok,
        "backend": b.kind(),
        "config": c,
    })
}

fn to_js(v: &serde_json::Value) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(err)
}
use serde::Serialize;

/// Loads a checkpoint (the bytes of a .safetensors file). On any error the previous model stays
/// loaded and working. Returns the model card.
#[wasm_bindgen]
pub async fn load_model(bytes: Vec<u8>, prefer_gpu: bool) -> Result<JsValue, JsValue> {
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    let bytes = &bytes[..];
    let g = if prefer_gpu { gpu() } else { None };
    let new = match g {
        Some(g) => {
            if g.is_lost() {
                return Err(err("the GPU device was lost; reload the page to get a new one"));
            }
            let b = GpuBackend::new(g.clone());
            // allocation failures (out of memory, limits) are caught here, the old model stays
            let m = g.scoped(|| Model::load_within(&b, bytes, &Budget::page())).await.map_err(err)?;
            Loaded::Gpu(b, m)
        }
        None => {
            let b = FastCpuBackend;
            let m = Model::load_within(&b, bytes, &Budget::page()).map_err(err)?;
            Loaded::Cpu(b, m)
        }
    };
    if let Some(old) = s.loaded.take() {
        drop(old); // every buffer is destroyed as it drops
    }
    s.generation = None;
    s.file_size = bytes.len();
    let d = with_model!(&new, |b, m| describe_model(b, m, bytes.len()));
    s.loaded = Some(new);
    to_js(&d)
}

/// GPU tensor buffers alive now, {buffers, bytes} (null without a GPU): flat across load/unload
/// cycles, since `Model::free` destroys every buffer.
#[wasm_bindgen]
pub fn gpu_memory() -> Result<JsValue, JsValue> {
    let Some(g) = gpu() else { return Ok(JsValue::NULL) };
    let (buffers, bytes) = g.live_buffers();
    to_js(&serde_json::json!({"buffers": buffers, "bytes": bytes}))
}

/// The loaded model's card: architecture, parameters, layers, heads, kv heads, experts, vocabulary,
/// context, file size, tokenizer and backend.
#[wasm_bindgen]
pub fn describe() -> Result<JsValue, JsValue> {
    let s = session();
    let s = s.try_borrow().map_err(|_| busy())?;
    let l = s.loaded.as_ref().ok_or_else(no_model)?;
    to_js(&with_model!(l, |b, m| describe_model(b, m, s.file_size)))
}

/// Frees the loaded model (GPU buffers are destroyed now).
#[wasm_bindgen]
pub fn reset() -> Result<(), JsValue> {
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    s.generation = None;
    if let Some(old) = s.loaded.take() {
        drop(old); // every buffer is destroyed as it drops
    }
    Ok(())
}

fn tokenize_with(t: &Tokenizer, text: &str) -> serde_json::Value {
    let enc = t.encode(text);
    let pieces: Vec<String> = enc.ids.iter().map(|&i| t.token_str(i).unwrap_or_default()).collect();
    serde_json::json!({"kind": t.kind(), "ids": enc.ids, "pieces": pieces, "spans": enc.spans, "unknown": enc.unknown})
}

/// The prompt as tokens: ids, visible pieces, byte spans, and the char offsets of characters outside
/// the tokenizer's table. (JS strings with lone surrogates arrive here already replaced by U+FFFD.)
#[wasm_bindgen]
pub fn tokenize(text: &str) -> Result<JsValue, JsValue> {
    let s = session();
    let s = s.try_borrow().map_err(|_| busy())?;
    let l = s.loaded.as_ref().ok_or_else(no_model)?;
    let t = with_model!(l, |_b, m| m.tokenizer.clone()).ok_or_else(|| err("this model has no tokenizer: type token ids instead"))?;
    to_js(&tokenize_with(&t, text))
}

/// Decodes output ids with the model's (target) tokenizer; special ids are left out.
#[wasm_bindgen]
pub fn decode(ids: &[u32]) -> Result<String, JsValue> {
    let s = session();
    let s = s.try_borrow().map_err(|_| busy())?;
    let l = s.loaded.as_ref().ok_or_else(no_model)?;
    with_model!(l, |_b, m| m.decode_output(ids)).map_err(err)
}

/// Look inside (issue 14): the core's inspection report as JSON (see model::inspect::inspect_json).
/// opts: {ablate: [[layer, head]], mode: "zero" | "mean", induction: n, seed}.
#[wasm_bindgen]
pub async fn inspect(ids: Vec<u32>, tgt: Option<Vec<u32>>, opts: JsValue) -> Result<JsValue, JsValue> {
    let o: crate::model::inspect::PageOpts = serde_wasm_bindgen::from_value(opts).map_err(err)?;
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    s.generation = None;
    let l = s.loaded.as_mut().ok_or_else(no_model)?;
    let v = match l {
        Loaded::Gpu(b, m) => m.inspect_json(b, &ids, tgt.as_deref(), &o).await,
        Loaded::Cpu(b, m) => m.inspect_json(b, &ids, tgt.as_deref(), &o).await,
    }
    .map_err(err)?;
    to_js(&v)
}

/// Greedy generation with the heads of opts.ablate switched off: {ids, text}.
#[wasm_bindgen]
pub async fn generate_ablated(ids: Vec<u32>, opts: JsValue) -> Result<JsValue, JsValue> {
    let o: crate::model::inspect::PageOpts = serde_wasm_bindgen::from_value(opts).map_err(err)?;
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    s.generation = None;
    let l = s.loaded.as_mut().ok_or_else(no_model)?;
    let v = match l {
        Loaded::Gpu(b, m) => m.generate_ablated_json(b, &ids, &o).await,
        Loaded::Cpu(b, m) => m.generate_ablated_json(b, &ids, &o).await,
    }
    .map_err(err)?;
    to_js(&v)
}

/// A display string for each output id (for token chips and candidate lists).
#[wasm_bindgen]
pub fn token_strings(ids: &[u32]) -> Result<JsValue, JsValue> {
    let s = session();
    let s = s.try_borrow().map_err(|_| busy())?;
    let l = s.loaded.as_ref().ok_or_else(no_model)?;
    let t = with_model!(l, |_b, m| m.output_tokenizer());
    let v: Vec<String> = ids.iter().map(|&i| t.as_ref().and_then(|t| t.token_str(i).ok()).unwrap_or_else(|| format!("#{i}"))).collect();
    serde_wasm_bindgen::to_value(&v).map_err(err)
}

fn map_js(m: &AttnMap) -> JsValue {
    let o = Object::new();
    set(&o, "kind", &m.kind.into());
    set(&o, "layer", &(m.layer as u32).into());
    set(&o, "heads", &(m.heads as u32).into());
    set(&o, "rows", &(m.rows as u32).into());
    set(&o, "cols", &(m.cols as u32).into());
    set(&o, "row_offset", &(m.row_offset as u32).into());
    set(&o, "data", &Float32Array::from(&m.data[..]).into());
    o.into()
}

fn maps_js(maps: &[AttnMap]) -> JsValue {
    let a = js_sys::Array::new();
    for m in maps {
        a.push(&map_js(m));
    }
    a.into()
}

/// A full forward pass: logits (rows, vocab) as a Float32Array, every attention map
/// {kind, layer, heads, rows, cols, data: Float32Array (heads*rows*cols)}, the masks and MoE routing.
/// For the encoder-decoder `ids` is the source and `tgt` the decoder input (default [BOS]).
#[wasm_bindgen]
pub async fn forward(ids: Vec<u32>, tgt: Option<Vec<u32>>) -> Result<JsValue, JsValue> {
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    s.generation = None;
    let l = s.loaded.as_mut().ok_or_else(no_model)?;
    let out = match l {
        Loaded::Gpu(b, m) => m.forward(b, &ids, tgt.as_deref()).await,
        Loaded::Cpu(b, m) => m.forward(b, &ids, tgt.as_deref()).await,
    }
    .map_err(err)?;
    let o = Object::new();
    let lg = Object::new();
    set(&lg, "rows", &(out.rows as u32).into());
    set(&lg, "cols", &(out.vocab as u32).into());
    set(&lg, "data", &Float32Array::from(&out.logits[..]).into());
    set(&o, "logits", &lg);
    set(&o, "attention", &maps_js(&out.attention));
    let masks = Object::new();
    for (k, m) in &out.masks {
        set(&masks, k, &mask_js(m));
    }
    set(&o, "masks", &masks);
    set(&o, "moe", &serde_wasm_bindgen::to_value(&out.moe).map_err(err)?);
    Ok(o.into())
}

#[derive(serde::Deserialize)]
struct GenOpts {
    max_new_tokens: Option<usize>,
    temperature: Option<f32>,
    top_k: Option<u32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    kv_cache: Option<bool>,
    attention: Option<bool>,
    top: Option<usize>,
    sliding_window: Option<bool>,
}

/// Starts a generation. `ids` is the prompt (decoder, llama) or the source (encoder-decoder, which
/// then decodes from BOS). Options: {max_new_tokens, temperature (0 = greedy), top_k, top_p, seed,
/// kv_cache, attention (read each step's attention rows), top (report the N most likely tokens),
/// sliding_window (past the context, keep going on the newest tokens; a too-long prompt is cut to
/// its tail: the returned start ids are what was kept)}.
#[wasm_bindgen]
pub fn gen_start(ids: Vec<u32>, opts: JsValue) -> Result<JsValue, JsValue> {
    let o: GenOpts = serde_wasm_bindgen::from_value(opts).map_err(err)?;
    let t = o.temperature.unwrap_or(0.0);
    if !(t >= 0.0 && t.is_finite()) {
        return Err(err(format!("temperature must be >= 0, got {t}")));
    }
    let top_p = o.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(err(format!("top-p must be in (0, 1], got {top_p}")));
    }
    let sample = if t == 0.0 { SampleParams::greedy() } else { SampleParams { temperature: t, top_k: o.top_k.unwrap_or(0), top_p } };
    let cfg = GenConfig {
        max_new_tokens: o.max_new_tokens.unwrap_or(64),
        sample,
        seed: o.seed.unwrap_or(0),
        kv_cache: o.kv_cache.unwrap_or(true),
        gpu_sampling: true,
        attention: o.attention.unwrap_or(false),
        top: o.top.unwrap_or(0),
        sliding_window: o.sliding_window.unwrap_or(false),
        constraint: None,
    };
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    let l = s.loaded.as_mut().ok_or_else(no_model)?;
    let (g, dec, start) = match l {
        Loaded::Gpu(b, m) => start_gen(b, m, &ids, cfg),
        Loaded::Cpu(b, m) => start_gen(b, m, &ids, cfg),
    }
    .map_err(err)?;
    s.generation = Some((g, dec));
    serde_wasm_bindgen::to_value(&start).map_err(err)
}

fn start_gen<B: Backend>(
    b: &mut B,
    m: &mut Model<B>,
    ids: &[u32],
    cfg: GenConfig,
) -> crate::Result<(Generation, Option<StreamDecoder>, Vec<u32>)> {
    let g = if m.cfg.arch == Arch::EncoderDecoder {
        m.start_generation(b, &[BOS_ID], Some(ids), cfg)?
    } else {
        m.start_generation(b, ids, None, cfg)?
    };
    let dec = m.output_tokenizer().map(|t| t.stream_decoder());
    let start = g.ids.clone();
    Ok((g, dec, start))
}

/// The next token of the running generation: {id, text (the newly complete characters), step,
/// window_start (the first token of the sequence this pass read), attention?: [maps of this step's
/// rows], top?: [{id, p}]}; at the end {done: true, text, reason: "max_new_tokens" | "context" |
/// "eos"}; null when there is no generation.
/// The worker checks its stop flag between calls, so Stop works at any token.
#[wasm_bindgen]
pub async fn gen_next() -> Result<JsValue, JsValue> {
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    let Session { loaded, generation, .. } = &mut *s;
    let l = loaded.as_mut().ok_or_else(no_model)?;
    let Some((g, dec)) = generation.as_mut() else { return Ok(JsValue::NULL) };
    let (step, tok) = match l {
        Loaded::Gpu(b, m) => (m.next_token(b, g).await, m.output_tokenizer()),
        Loaded::Cpu(b, m) => (m.next_token(b, g).await, m.output_tokenizer()),
    };
    let step = step.map_err(err)?;
    let Some(step) = step else {
        let rest = dec.as_mut().map(|d| d.finish()).unwrap_or_default();
        let o = Object::new();
        set(&o, "done", &JsValue::TRUE);
        set(&o, "text", &rest.into());
        if let Some(r) = g.stop_reason {
            set(&o, "reason", &serde_wasm_bindgen::to_value(&r).map_err(err)?);
        }
        return Ok(o.into());
    };
    let o = Object::new();
    set(&o, "id", &step.id.into());
    set(&o, "step", &((g.step - 1) as u32).into());
    set(&o, "window_start", &(step.window_start as u32).into());
    let special = tok.as_ref().and_then(|t| t.special_ids()).is_some_and(|(p, b, e)| step.id == p || step.id == b || step.id == e);
    let text = match (&tok, dec.as_mut()) {
        (Some(t), Some(d)) if !special => d.push(t, step.id).unwrap_or_default(),
        _ => String::new(),
    };
    set(&o, "text", &text.into());
    set(&o, "piece", &tok.as_ref().and_then(|t| t.token_str(step.id).ok()).unwrap_or_else(|| format!("#{}", step.id)).into());
    set(&o, "done", &g.done.into());
    if !step.attention.is_empty() {
        set(&o, "attention", &maps_js(&step.attention));
    }
    if !step.top.is_empty() {
        let a = js_sys::Array::new();
        for (id, p) in &step.top {
            let c = Object::new();
            set(&c, "id", &(*id).into());
            set(&c, "p", &(*p).into());
            set(&c, "piece", &tok.as_ref().and_then(|t| t.token_str(*id).ok()).unwrap_or_else(|| format!("#{id}")).into());
            a.push(&c);
        }
        set(&o, "top", &a);
    }
    Ok(o.into())
}

/// Stops the running generation (the next gen_next returns null).
#[wasm_bindgen]
pub fn gen_stop() -> Result<(), JsValue> {
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    s.generation = None;
    Ok(())
}

/// The cross-attention mask of the encoder-decoder for a target of `tgt_len` tokens over a source
/// of `src_len` tokens whose last `src_pad` are PAD: (tgt_len, src_len), 1 = may attend.
#[wasm_bindgen]
pub fn cross_mask(tgt_len: u32, src_len: u32, src_pad: u32) -> Result<JsValue, JsValue> {
    let (t, s, p) = (tgt_len as usize, src_len as usize, src_pad as usize);
    if t == 0 || s == 0 || t > mask::MAX_VIEW_LEN || s > mask::MAX_VIEW_LEN {
        return Err(err(format!("lengths must be between 1 and {}, got target {t}, source {s}", mask::MAX_VIEW_LEN)));
    }
    if p > s {
        return Err(err(format!("{p} PAD tokens do not fit in a source of {s}")));
    }
    let src: Vec<u32> = (0..s).map(|i| if i < s - p { 1 + i as u32 } else { mask::PAD_ID }).collect();
    Ok(mask_js(&mask::padding(t, &src)))
}

/// The BPE workbench's bounds: training text (UTF-8 bytes), sentence (characters), vocabulary size.
/// The answer holds (merges + 1) x pieces strings, so the sentence bound keeps it under ~1M strings;
/// training is O(N log N) in the text (tokenizer/train.rs). www/worker.js checks the same numbers.
pub const BPE_MAX_TEXT_BYTES: usize = 1 << 20;
pub const BPE_MAX_SENTENCE_CHARS: usize = 200;
pub const BPE_MAX_VOCAB: u32 = 5000;

/// The BPE workbench: trains the seed's BPE (lowercase words with </w>) on `text` to `vocab_size`,
/// then tokenizes `sentence` after each number of merges: {merges: [[a, b]], steps: [[pieces]],
/// vocab_size, report (SeedBpeReport), explanation (why vocab_size is not the size asked; "" if it is)},
/// steps[n] = the pieces after the first n merges.
#[wasm_bindgen]
pub fn bpe_workbench(text: &str, vocab_size: u32, sentence: &str) -> Result<JsValue, JsValue> {
    if text.trim().is_empty() {
        return Err(err("paste some text to train on"));
    }
    if !(1..=BPE_MAX_VOCAB).contains(&vocab_size) {
        return Err(err(format!("vocabulary size must be between 1 and {BPE_MAX_VOCAB}, got {vocab_size}")));
    }
    if text.len() > BPE_MAX_TEXT_BYTES {
        return Err(err(format!("the training text is limited to {} MB in the page", BPE_MAX_TEXT_BYTES >> 20)));
    }
    if sentence.chars().count() > BPE_MAX_SENTENCE_CHARS {
        return Err(err(format!("the sentence is limited to {BPE_MAX_SENTENCE_CHARS} characters")));
    }
    let (bpe, report) = crate::tokenizer::train_seed_bpe_with_report(text, vocab_size as usize);
    let merges: Vec<(String, String)> = bpe.merges().to_vec();
    let tok = Tokenizer::from(bpe);
    let steps: Vec<Vec<String>> = (0..=merges.len())
        .map(|n| {
            let enc = tok.encode_with_first_n_merges(sentence, n);
            enc.ids.iter().map(|&i| tok.token_str(i).unwrap_or_default()).collect()
        })
        .collect();
    let v = serde_json::json!({"merges": merges, "steps": steps, "vocab_size": tok.vocab_size(), "report": report, "explanation": report.explain()});
    to_js(&v)
}

/// Panics on purpose: the page's test hook uses it to exercise the real panic path (the panic hook's
/// message, the wasm trap, the worker restart) rather than a simulation.
#[wasm_bindgen]
pub fn debug_panic(reason: &str) {
    panic!("deliberate panic for testing: {reason}");
}

/// Spins forever on purpose: the page's watchdog test hook (a call too heavy for the device, as seen
/// from the page). The worker running it can only be terminated.
#[wasm_bindgen]
pub fn debug_hang() {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Destroys the GPU device on purpose: the page's test hook for the device-lost path (every later
/// GPU call fails with "the GPU device was lost ...; reload", and the page offers a reload).
#[wasm_bindgen]
pub fn debug_lose_device() {
    if let Some(g) = gpu() {
        g.device.destroy();
    }
}

/// Benchmark hook (scripts/bench-browser.mjs): picks the loaded GPU model's decode kernels, fused
/// epilogues/norms on or off and the kernel of few-row matmuls ("gemv" or "naive"), so that the
/// decode loop before and after issue 12 can be compared in one page.
#[wasm_bindgen]
pub fn set_gpu_kernels(fused: bool, few_rows: &str) -> Result<(), JsValue> {
    use crate::gpu::matmul::MatmulKind;
    let kind = match few_rows {
        "gemv" => MatmulKind::Gemv,
        "naive" => MatmulKind::Naive,
        other => return Err(JsValue::from_str(&format!("few_rows must be \"gemv\" or \"naive\", got {other:?}"))),
    };
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| JsValue::from_str("busy"))?;
    match s.loaded.as_mut() {
        Some(Loaded::Gpu(b, _)) => {
            (b.fused, b.small_matmul_kind) = (fused, kind);
            Ok(())
        }
        _ => Err(JsValue::from_str("no model is loaded on the GPU")),
    }
}
