//! The only file that knows JsValue / wasm_bindgen: it (de)serializes the page worker's calls to the
//! session core (src/session.rs) and back. Large tensors cross as Float32Array, small metadata as
//! serde values. One model is loaded at a time (on the GPU when gpu_init succeeded, else on the
//! fast CPU path); calls are async and the worker serialises them, and a call that arrives while
//! another holds the session gets a "busy" error instead of corrupting state.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Float32Array, Reflect};
use serde::{de::DeserializeOwned, Serialize};
use wasm_bindgen::prelude::*;

use crate::gpu::{AdapterSummary, Gpu};
use crate::mask::{self, Mask};
use crate::model::inspect::PageOpts;
use crate::model::memory::Budget;
use crate::model::run::{AttnMap, ForwardOut, MoeRecord};
use crate::session::{Device, GenOptions, Next, Sampling, Session};
use crate::tokenizer::Tokenizer;

thread_local! {
    static GPU: RefCell<Option<Arc<Gpu>>> = const { RefCell::new(None) };
    static SESSION: Rc<RefCell<Option<Session>>> = Rc::new(RefCell::new(None));
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Every error the page sees: one line, control characters escaped, bounded length.
fn err(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&crate::error::one_line(&e.to_string())).into()
}

fn to_js<T: Serialize + ?Sized>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(err)
}

fn from_js<T: DeserializeOwned>(v: JsValue) -> Result<T, JsValue> {
    serde_wasm_bindgen::from_value(v).map_err(err)
}

/// A Float32Array inside a serde value (one copy, not a JS array of numbers).
#[derive(Serialize)]
struct F32(#[serde(serialize_with = "serde_wasm_bindgen::preserve::serialize")] Float32Array);

fn f32s(v: &[f32]) -> F32 {
    F32(Float32Array::from(v))
}

/// A (rows, cols) matrix: a mask, or the logits.
#[derive(Serialize)]
struct Matrix {
    rows: usize,
    cols: usize,
    data: F32,
}

fn matrix(m: &Mask) -> Matrix {
    Matrix { rows: m.rows, cols: m.cols, data: f32s(&m.data) }
}

/// {kind, layer, heads, rows, cols, row_offset, data: (heads, rows, cols)}
#[derive(Serialize)]
struct Map<'a> {
    #[serde(flatten)]
    shape: &'a AttnMap,
    data: F32,
}

fn maps(ms: &[AttnMap]) -> Vec<Map<'_>> {
    ms.iter().map(|m| Map { shape: m, data: f32s(&m.data) }).collect()
}

fn session() -> Rc<RefCell<Option<Session>>> {
    SESSION.with(|s| s.clone())
}

fn busy() -> JsValue {
    err("the model is busy with another request; try again when it finishes")
}

/// Runs `f` on the loaded session, or says why it cannot (busy, or no model).
fn with<T>(f: impl FnOnce(&mut Session) -> crate::Result<T>) -> Result<T, JsValue> {
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    f(s.as_mut().ok_or_else(|| err("no model is loaded"))?).map_err(err)
}

/// [`with`] for the calls that wait on the GPU: the session stays borrowed (busy) until they end.
async fn with_async<T>(f: impl AsyncFnOnce(&mut Session) -> crate::Result<T>) -> Result<T, JsValue> {
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    f(s.as_mut().ok_or_else(|| err("no model is loaded"))?).await.map_err(err)
}

fn gpu() -> Option<Arc<Gpu>> {
    GPU.with(|g| g.borrow().clone())
}

/// `navigator.gpu` in the window or worker scope.
fn has_navigator_gpu() -> bool {
    let get = |o: &JsValue, k: &str| Reflect::get(o, &JsValue::from_str(k)).ok().filter(|v| !v.is_undefined() && !v.is_null());
    get(&JsValue::from(js_sys::global()), "navigator").and_then(|nav| get(&nav, "gpu")).is_some()
}

#[derive(Serialize)]
struct GpuInit<'a> {
    ok: bool,
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter: Option<&'a AdapterSummary>,
    /// the same summary: the device view reads the limits from it
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<&'a AdapterSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Finds a WebGPU adapter and builds every pipeline. Never throws for a missing GPU:
/// returns {ok: false, backend: "none", error} so the page can say so and fall back to the CPU.
#[wasm_bindgen]
pub async fn gpu_init() -> Result<JsValue, JsValue> {
    let none = |error: String| GpuInit { ok: false, backend: "none", adapter: None, limits: None, error: Some(error) };
    if !has_navigator_gpu() {
        return to_js(&none(
            "WebGPU is not available in this browser (navigator.gpu is missing); the models run on the CPU instead".into(),
        ));
    }
    match Gpu::new().await {
        Ok(g) => {
            let v = to_js(&GpuInit { ok: true, backend: "webgpu", adapter: Some(&g.summary), limits: Some(&g.summary), error: None });
            GPU.with(|slot| *slot.borrow_mut() = Some(Arc::new(g)));
            v
        }
        Err(e @ crate::error::TfError::NoGpu(_)) => {
            to_js(&none(format!("WebGPU is present but no usable GPU adapter was found ({e}); the models run on the CPU instead")))
        }
        Err(e) => to_js(&none(e.to_string())),
    }
}

/// Runs every kernel against its CPU twin on the GPU: [{name, ok, max_abs_diff, tolerance, detail, ms}].
#[wasm_bindgen]
pub async fn run_selftest() -> Result<JsValue, JsValue> {
    let g = gpu().ok_or_else(|| err("the GPU is not initialised: call gpu_init first (or WebGPU is unavailable)"))?;
    to_js(&crate::selftest::run_all(&g).await)
}

/// The padding, look-ahead, combined and KV-cache masks (1 = may attend) for a sequence of
/// `seq_len` tokens whose last `num_pad` are PAD, after `cached_len` cached tokens.
#[wasm_bindgen]
pub fn masks(seq_len: u32, num_pad: u32, cached_len: u32) -> Result<JsValue, JsValue> {
    #[derive(Serialize)]
    struct MaskSet<'a> {
        seq_len: usize,
        num_pad: usize,
        cached_len: usize,
        tokens: &'a [String],
        padding: Matrix,
        look_ahead: Matrix,
        combined: Matrix,
        kv_cache: Matrix,
    }
    let m = mask::mask_set(seq_len as usize, num_pad as usize, cached_len as usize).map_err(err)?;
    to_js(&MaskSet {
        seq_len: m.seq_len,
        num_pad: m.num_pad,
        cached_len: m.cached_len,
        tokens: &m.tokens,
        padding: matrix(&m.padding),
        look_ahead: matrix(&m.look_ahead),
        combined: matrix(&m.combined),
        kv_cache: matrix(&m.kv_cache),
    })
}

/// The cross-attention mask of the encoder-decoder for a target of `tgt_len` tokens over a source
/// of `src_len` tokens whose last `src_pad` are PAD: (tgt_len, src_len), 1 = may attend.
#[wasm_bindgen]
pub fn cross_mask(tgt_len: u32, src_len: u32, src_pad: u32) -> Result<JsValue, JsValue> {
    to_js(&matrix(&crate::session::cross_mask(tgt_len as usize, src_len as usize, src_pad as usize).map_err(err)?))
}

/// Loads a checkpoint (the bytes of a .safetensors file). On any error the previous model stays
/// loaded and working. Returns the model card.
#[wasm_bindgen]
pub async fn load_model(bytes: Vec<u8>, prefer_gpu: bool) -> Result<JsValue, JsValue> {
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| busy())?;
    let device = match gpu() {
        Some(g) if prefer_gpu => Device::Gpu(g),
        _ => Device::Cpu,
    };
    let new = Session::load(&device, &bytes, &Budget::page()).await.map_err(err)?;
    *s = None; // the old model's buffers are destroyed before the card is read
    let card = to_js(&new.card());
    *s = Some(new);
    card
}

/// GPU tensor buffers alive now, {buffers, bytes} (null without a GPU): flat across load/unload cycles.
#[wasm_bindgen]
pub fn gpu_memory() -> Result<JsValue, JsValue> {
    let Some(g) = gpu() else { return Ok(JsValue::NULL) };
    let (buffers, bytes) = g.live_buffers();
    to_js(&serde_json::json!({"buffers": buffers, "bytes": bytes}))
}

/// The loaded model's card (session::Card).
#[wasm_bindgen]
pub fn describe() -> Result<JsValue, JsValue> {
    with(|s| Ok(to_js(&s.card())))?
}

/// Frees the loaded model (GPU buffers are destroyed now).
#[wasm_bindgen]
pub fn reset() -> Result<(), JsValue> {
    let s = session();
    *s.try_borrow_mut().map_err(|_| busy())? = None;
    Ok(())
}

/// The text as tokens (session::Tokens). JS strings with lone surrogates arrive already replaced by U+FFFD.
#[wasm_bindgen]
pub fn tokenize(text: &str) -> Result<JsValue, JsValue> {
    with(|s| Ok(to_js(&s.tokenize(text)?)))?
}

/// The prompt box as the model's input (session::Prompt): tokens, or ids typed by hand, and the context fit.
#[wasm_bindgen]
pub fn prompt(text: &str) -> Result<JsValue, JsValue> {
    with(|s| Ok(to_js(&s.prompt(text)?)))?
}

/// What one analysis pass reads after the prompt `src` and the generated `gen` (session::Window).
#[wasm_bindgen]
pub fn window(src: Vec<u32>, gen: Vec<u32>) -> Result<JsValue, JsValue> {
    with(|s| Ok(to_js(&s.window(&src, &gen))))?
}

/// The `n` most likely next tokens after a row of logits: [{id, p, piece}], p as the sampler sees it
/// with opts {temperature, top_k, top_p}.
#[wasm_bindgen]
pub fn candidates(logits: &[f32], opts: JsValue, n: u32) -> Result<JsValue, JsValue> {
    let o: Sampling = from_js(opts)?;
    with(|s| Ok(to_js(&s.candidates(logits, &o, n as usize)?)))?
}

/// Decodes output ids with the model's (target) tokenizer; special ids are left out.
#[wasm_bindgen]
pub fn decode(ids: &[u32]) -> Result<String, JsValue> {
    with(|s| s.decode(ids))
}

/// A display string for each output id (for token chips and candidate lists).
#[wasm_bindgen]
pub fn token_strings(ids: &[u32]) -> Result<JsValue, JsValue> {
    with(|s| Ok(to_js(&s.pieces(ids))))?
}

/// Look inside (issue 14): the core's inspection report as JSON (see model::inspect::inspect_json).
/// opts: {ablate: [[layer, head]], mode: "zero" | "mean", induction: n, seed}.
#[wasm_bindgen]
pub async fn inspect(ids: Vec<u32>, tgt: Option<Vec<u32>>, opts: JsValue) -> Result<JsValue, JsValue> {
    let o: PageOpts = from_js(opts)?;
    to_js(&with_async(async |s| s.inspect_page(&ids, tgt.as_deref(), &o).await).await?)
}

/// Greedy generation with the heads of opts.ablate switched off: {ids, text}.
#[wasm_bindgen]
pub async fn generate_ablated(ids: Vec<u32>, opts: JsValue) -> Result<JsValue, JsValue> {
    let o: PageOpts = from_js(opts)?;
    to_js(&with_async(async |s| s.generate_ablated(&ids, &o).await).await?)
}

#[derive(Serialize)]
struct Forward<'a> {
    logits: Matrix,
    attention: Vec<Map<'a>>,
    masks: std::collections::BTreeMap<&'static str, Matrix>,
    moe: &'a [MoeRecord],
}

/// A full forward pass: logits (rows, vocab), every attention map, the masks and MoE routing.
/// For the encoder-decoder `ids` is the source and `tgt` the decoder input (default [BOS]).
#[wasm_bindgen]
pub async fn forward(ids: Vec<u32>, tgt: Option<Vec<u32>>) -> Result<JsValue, JsValue> {
    let out: ForwardOut = with_async(async |s| s.forward(&ids, tgt.as_deref()).await).await?;
    to_js(&Forward {
        logits: Matrix { rows: out.rows, cols: out.vocab, data: f32s(&out.logits) },
        attention: maps(&out.attention),
        masks: out.masks.iter().map(|(k, m)| (*k, matrix(m))).collect(),
        moe: &out.moe,
    })
}

/// Starts a generation (session::GenOptions) from the prompt, or the encoder-decoder's source.
/// Returns the ids the generation starts from (a too-long prompt is cut to its tail with a sliding window).
#[wasm_bindgen]
pub fn gen_start(ids: Vec<u32>, opts: JsValue) -> Result<JsValue, JsValue> {
    let cfg = from_js::<GenOptions>(opts)?.config().map_err(err)?;
    with(|s| Ok(to_js(&s.start_from(&ids, cfg)?)))?
}

#[derive(Serialize)]
struct StepJs<'a> {
    #[serde(flatten)]
    step: &'a crate::session::Step,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attention: Vec<Map<'a>>,
}

/// The next token of the running generation (session::Step with `attention` maps when asked); at
/// the end {done: true, text, reason}; null when there is no generation. The worker checks its stop
/// flag between calls, so Stop works at any token.
#[wasm_bindgen]
pub async fn gen_next() -> Result<JsValue, JsValue> {
    match with_async(async |s| s.next().await).await? {
        None => Ok(JsValue::NULL),
        Some(Next::Finished(f)) => to_js(&f),
        Some(Next::Token(step)) => to_js(&StepJs { step: &step, attention: maps(&step.attention) }),
    }
}

/// Stops the running generation (the next gen_next returns null).
#[wasm_bindgen]
pub fn gen_stop() -> Result<(), JsValue> {
    if let Some(s) = session().try_borrow_mut().map_err(|_| busy())?.as_mut() {
        s.stop();
    }
    Ok(())
}

/// The BPE workbench's bounds: training text (UTF-8 bytes), sentence (characters), vocabulary size.
/// www/worker.js checks the same numbers.
pub const BPE_MAX_TEXT_BYTES: usize = 1 << 20;
pub const BPE_MAX_SENTENCE_CHARS: usize = 200;
pub const BPE_MAX_VOCAB: u32 = 5000;

/// The BPE workbench: trains the seed's BPE (lowercase words with </w>) on `text` to `vocab_size`,
/// then tokenizes `sentence` after each number of merges: {merges: [[a, b]], steps: [[pieces]],
/// vocab_size, report (SeedBpeReport), explanation (why vocab_size is not the size asked; "" if it is)}.
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
        .map(|n| tok.encode_with_first_n_merges(sentence, n).ids.iter().map(|&i| tok.token_str(i).unwrap_or_default()).collect())
        .collect();
    let v = serde_json::json!({"merges": merges, "steps": steps, "vocab_size": tok.vocab_size(), "report": report, "explanation": report.explain()});
    to_js(&v)
}

/// Panics on purpose: the page's test hook for the real panic path (hook message, trap, worker restart).
#[wasm_bindgen]
pub fn debug_panic(reason: &str) {
    panic!("deliberate panic for testing: {reason}");
}

/// Spins forever on purpose: the page's watchdog test hook. The worker running it can only be terminated.
#[wasm_bindgen]
pub fn debug_hang() {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Destroys the GPU device on purpose: the page's test hook for the device-lost path.
#[wasm_bindgen]
pub fn debug_lose_device() {
    if let Some(g) = gpu() {
        g.device.destroy();
    }
}

/// Benchmark hook (scripts/bench-browser.mjs): the loaded GPU model's decode kernels, fused
/// epilogues/norms on or off and the kernel of few-row matmuls ("gemv" or "naive").
#[wasm_bindgen]
pub fn set_gpu_kernels(fused: bool, few_rows: &str) -> Result<(), JsValue> {
    use crate::gpu::matmul::MatmulKind;
    let kind = match few_rows {
        "gemv" => MatmulKind::Gemv,
        "naive" => MatmulKind::Naive,
        other => return Err(err(format!("few_rows must be \"gemv\" or \"naive\", got {other:?}"))),
    };
    let s = session();
    let mut s = s.try_borrow_mut().map_err(|_| err("busy"))?;
    let b = s.as_mut().and_then(|s| s.gpu_backend()).ok_or_else(|| err("no model is loaded on the GPU"))?;
    (b.fused, b.small_matmul_kind) = (fused, kind);
    Ok(())
}
