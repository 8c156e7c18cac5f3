//! The only file that knows JsValue / wasm_bindgen: it (de)serializes the worker's calls to the session
//! core (src/session.rs), which documents each call. Large tensors cross as Float32Array, the rest as
//! serde values. One model at a time (on the GPU when gpu_init succeeded, else the fast CPU path); a
//! call that arrives while another holds the session gets a "busy" error.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Float32Array, Reflect};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::gpu::Gpu;
use crate::mask::{self, Mask};
use crate::model::inspect::PageOpts;
use crate::model::memory::Budget;
use crate::model::run::{AttnMap, ForwardOut, MoeRecord};
use crate::session::{Device, GenOptions, Next, Sampling, Session};

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

type Slot = Rc<RefCell<Option<Session>>>;

fn borrow(s: &Slot) -> Result<std::cell::RefMut<'_, Option<Session>>, JsValue> {
    s.try_borrow_mut().map_err(|_| err("the model is busy with another request; try again when it finishes"))
}

/// Runs `f` on the loaded session, or says why it cannot (busy, or no model).
fn with<T>(f: impl FnOnce(&mut Session) -> crate::Result<T>) -> Result<T, JsValue> {
    let slot = SESSION.with(Rc::clone);
    let mut guard = borrow(&slot)?;
    f(guard.as_mut().ok_or_else(|| err("no model is loaded"))?).map_err(err)
}

/// [`with`] for the calls that wait on the GPU: the session stays borrowed (busy) until they end.
async fn with_async<T>(f: impl AsyncFnOnce(&mut Session) -> crate::Result<T>) -> Result<T, JsValue> {
    let slot = SESSION.with(Rc::clone);
    let mut guard = borrow(&slot)?;
    f(guard.as_mut().ok_or_else(|| err("no model is loaded"))?).await.map_err(err)
}

fn gpu() -> Option<Arc<Gpu>> {
    GPU.with(|g| g.borrow().clone())
}

/// `navigator.gpu` in the window or worker scope.
fn has_navigator_gpu() -> bool {
    let get = |o: &JsValue, k: &str| Reflect::get(o, &JsValue::from_str(k)).ok().filter(|v| !v.is_undefined() && !v.is_null());
    get(&JsValue::from(js_sys::global()), "navigator").and_then(|nav| get(&nav, "gpu")).is_some()
}

/// Finds a WebGPU adapter and builds every pipeline: {ok, backend, adapter, limits}. Never throws for
/// a missing GPU: {ok: false, backend: "none", error}, so the page can say so and use the CPU.
#[wasm_bindgen]
pub async fn gpu_init() -> Result<JsValue, JsValue> {
    let none = |error: String| to_js(&json!({"ok": false, "backend": "none", "error": error}));
    if !has_navigator_gpu() {
        return none("WebGPU is not available in this browser (navigator.gpu is missing); the models run on the CPU instead".into());
    }
    match Gpu::new().await {
        Ok(g) => {
            let v = to_js(&json!({"ok": true, "backend": "webgpu", "adapter": &g.summary, "limits": &g.summary}));
            GPU.with(|slot| *slot.borrow_mut() = Some(Arc::new(g)));
            v
        }
        Err(e @ crate::error::TfError::NoGpu(_)) => {
            none(format!("WebGPU is present but no usable GPU adapter was found ({e}); the models run on the CPU instead"))
        }
        Err(e) => none(e.to_string()),
    }
}

/// Every kernel against its CPU twin: [{name, ok, max_abs_diff, tolerance, detail, ms}].
#[wasm_bindgen]
pub async fn run_selftest() -> Result<JsValue, JsValue> {
    let g = gpu().ok_or_else(|| err("the GPU is not initialised: call gpu_init first (or WebGPU is unavailable)"))?;
    to_js(&crate::selftest::run_all(&g).await)
}

#[derive(Serialize)]
struct MaskSet<'a> {
    seq_len: usize,
    num_pad: usize,
    cached_len: usize,
    tokens: &'a [String],
    #[serde(flatten)]
    masks: BTreeMap<&'static str, Matrix>,
}

/// The padding, look-ahead, combined and KV-cache masks (mask::mask_set), 1 = may attend.
#[wasm_bindgen]
pub fn masks(seq_len: u32, num_pad: u32, cached_len: u32) -> Result<JsValue, JsValue> {
    let m = mask::mask_set(seq_len as usize, num_pad as usize, cached_len as usize).map_err(err)?;
    let masks = [("padding", &m.padding), ("look_ahead", &m.look_ahead), ("combined", &m.combined), ("kv_cache", &m.kv_cache)];
    let masks = masks.into_iter().map(|(k, v)| (k, matrix(v))).collect();
    to_js(&MaskSet { seq_len: m.seq_len, num_pad: m.num_pad, cached_len: m.cached_len, tokens: &m.tokens, masks })
}

/// The encoder-decoder's cross-attention mask for the Masks view (session::cross_mask).
#[wasm_bindgen]
pub fn cross_mask(tgt_len: u32, src_len: u32, src_pad: u32) -> Result<JsValue, JsValue> {
    to_js(&matrix(&crate::session::cross_mask(tgt_len as usize, src_len as usize, src_pad as usize).map_err(err)?))
}

/// Loads a checkpoint (a .safetensors file's bytes) and returns its card; on an error the previous
/// model stays loaded and working.
#[wasm_bindgen]
pub async fn load_model(bytes: Vec<u8>, prefer_gpu: bool) -> Result<JsValue, JsValue> {
    let slot = SESSION.with(Rc::clone);
    let mut s = borrow(&slot)?;
    let device = gpu().filter(|_| prefer_gpu).map_or(Device::Cpu, Device::Gpu);
    let new = Session::load(&device, &bytes, &Budget::page()).await.map_err(err)?;
    *s = None; // the old model's buffers are destroyed first
    Ok(to_js(&s.insert(new).card())?)
}

/// GPU tensor buffers alive now, {buffers, bytes} (null without a GPU): flat across load/unload cycles.
#[wasm_bindgen]
pub fn gpu_memory() -> Result<JsValue, JsValue> {
    gpu().map_or(Ok(JsValue::NULL), |g| to_js(&json!({"buffers": g.live_buffers().0, "bytes": g.live_buffers().1})))
}

/// The loaded model's card (session::Card).
#[wasm_bindgen]
pub fn describe() -> Result<JsValue, JsValue> {
    with(|s| Ok(to_js(&s.card())))?
}

/// Frees the loaded model (GPU buffers are destroyed now).
#[wasm_bindgen]
pub fn reset() -> Result<(), JsValue> {
    *borrow(&SESSION.with(Rc::clone))? = None;
    Ok(())
}

/// session::Tokens (lone surrogates of a JS string arrive as U+FFFD).
#[wasm_bindgen]
pub fn tokenize(text: &str) -> Result<JsValue, JsValue> {
    with(|s| Ok(to_js(&s.tokenize(text)?)))?
}

/// session::Prompt: the prompt box as the model's input.
#[wasm_bindgen]
pub fn prompt(text: &str) -> Result<JsValue, JsValue> {
    with(|s| Ok(to_js(&s.prompt(text)?)))?
}

/// session::Window: what an analysis pass reads after the prompt `src` and the generated `gen`.
#[wasm_bindgen]
pub fn window(src: Vec<u32>, gen: Vec<u32>) -> Result<JsValue, JsValue> {
    with(|s| Ok(to_js(&s.window(&src, &gen))))?
}

/// [session::Candidate]: the `n` most likely tokens after one row of logits, opts {temperature, top_k, top_p}.
#[wasm_bindgen]
pub fn candidates(logits: &[f32], opts: JsValue, n: u32) -> Result<JsValue, JsValue> {
    let o: Sampling = from_js(opts)?;
    with(|s| Ok(to_js(&s.candidates(logits, &o, n as usize)?)))?
}

/// Output ids as text (special ids left out).
#[wasm_bindgen]
pub fn decode(ids: &[u32]) -> Result<String, JsValue> {
    with(|s| s.decode(ids))
}

/// A display string for each output id.
#[wasm_bindgen]
pub fn token_strings(ids: &[u32]) -> Result<JsValue, JsValue> {
    with(|s| Ok(to_js(&s.pieces(ids))))?
}

/// Look inside (model::inspect::inspect_json); opts: model::inspect::PageOpts.
#[wasm_bindgen]
pub async fn inspect(ids: Vec<u32>, tgt: Option<Vec<u32>>, opts: JsValue) -> Result<JsValue, JsValue> {
    let o: PageOpts = from_js(opts)?;
    to_js(&with_async(async |s| s.inspect_page(&ids, tgt.as_deref(), &o).await).await?)
}

/// Greedy generation with an ablation: {ids, text}.
#[wasm_bindgen]
pub async fn generate_ablated(ids: Vec<u32>, opts: JsValue) -> Result<JsValue, JsValue> {
    let o: PageOpts = from_js(opts)?;
    to_js(&with_async(async |s| s.generate_ablated(&ids, &o).await).await?)
}

#[derive(Serialize)]
struct Forward<'a> {
    logits: Matrix,
    attention: Vec<Map<'a>>,
    masks: BTreeMap<&'static str, Matrix>,
    moe: &'a [MoeRecord],
}

/// One pass: logits (rows, vocab), every attention map, the masks and MoE routing (session::forward).
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

/// Starts a generation (session::GenOptions, Session::start_from); returns the ids it starts from.
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

/// session::Step (with `attention` maps when asked), at the end session::Finished, null without a
/// generation. The worker checks its stop flag between calls, so Stop works at any token.
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
    borrow(&SESSION.with(Rc::clone))?.as_mut().map(Session::stop);
    Ok(())
}

/// The BPE workbench (session::bpe_workbench): {merges, steps, vocab_size, report, explanation}.
#[wasm_bindgen]
pub fn bpe_workbench(text: &str, vocab_size: u32, sentence: &str) -> Result<JsValue, JsValue> {
    to_js(&crate::session::bpe_workbench(text, vocab_size, sentence).map_err(err)?)
}

/// Panics on purpose: the page's test hook for the real panic path (hook message, trap, worker restart).
#[wasm_bindgen]
pub fn debug_panic(reason: &str) {
    panic!("deliberate panic for testing: {reason}");
}

/// Spins forever on purpose: the page's watchdog test hook. The worker running it can only be terminated.
#[wasm_bindgen]
pub fn debug_hang() {
    loop {
        std::hint::black_box(());
    }
}

/// Destroys the GPU device on purpose: the page's test hook for the device-lost path.
#[wasm_bindgen]
pub fn debug_lose_device() {
    gpu().inspect(|g| g.device.destroy());
}

/// Benchmark hook (scripts/bench-browser.mjs): the GPU model's decode kernels (Session::set_gpu_kernels).
#[wasm_bindgen]
pub fn set_gpu_kernels(fused: bool, few_rows: &str) -> Result<(), JsValue> {
    with(|s| s.set_gpu_kernels(fused, few_rows))
}
