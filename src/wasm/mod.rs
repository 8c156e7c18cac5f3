//! The only module that knows JsValue / wasm_bindgen (this file and standalone.rs, the calls that need no
//! model): it (de)serializes the worker's calls to the session
//! core (src/session/), which documents each call. Large tensors cross as Float32Array, the rest as
//! serde values. One model at a time (on the GPU when gpu_init succeeded, else the fast CPU path); a
//! call that arrives while another holds the session gets a "busy" error.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::Float32Array;
use serde::{de::DeserializeOwned, Serialize};
use wasm_bindgen::prelude::*;

use crate::formats::{Files, FormatError};
use crate::gpu::Gpu;
use crate::mask::Mask;
use crate::model::memory::Budget;
use crate::model::run::{AttnMap, ForwardOut, MoeRecord};
use crate::session::{Device, GenOptions, Next, PageOpts, Sampling, Session};

mod lab;
mod standalone;

thread_local! {
    static GPU: RefCell<Option<Arc<Gpu>>> = const { RefCell::new(None) };
    static SESSION: Rc<RefCell<Option<Session>>> = Rc::new(RefCell::new(None));
}

/// Every error the page sees: one line, control characters escaped, bounded length.
pub(crate) fn err(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&crate::error::one_line(&e.to_string())).into()
}

pub(crate) fn to_js<T: Serialize + ?Sized>(v: &T) -> Result<JsValue, JsValue> {
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
pub(crate) struct Matrix {
    rows: usize,
    cols: usize,
    data: F32,
}

pub(crate) fn matrix(m: &Mask) -> Matrix {
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

pub(crate) fn gpu() -> Option<Arc<Gpu>> {
    GPU.with(|g| g.borrow().clone())
}

/// Loads a checkpoint (a .safetensors file's bytes) and returns its card; on an error the previous
/// model stays loaded and working.
#[wasm_bindgen]
pub async fn load_model(bytes: Vec<u8>, prefer_gpu: bool) -> Result<JsValue, JsValue> {
    let slot = SESSION.with(Rc::clone);
    let mut s = borrow(&slot)?;
    let device = gpu().filter(|_| prefer_gpu).map_or(Device::Cpu, Device::Gpu);
    // the adapter's limits on one buffer and navigator.deviceMemory (model::memory::Budget::page_for)
    let budget = Budget::page_for(gpu().filter(|_| prefer_gpu).map(|g| g.buffer_limits()), device_memory_gib());
    let new = Session::load(&device, &bytes, &budget).await.map_err(err)?;
    *s = None; // the old model's buffers are destroyed first
    Ok(to_js(&s.insert(new).card())?)
}

/// `navigator.deviceMemory` (GiB, rounded down by the browser; absent in some browsers).
pub(crate) fn device_memory_gib() -> Option<f64> {
    let nav = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("navigator")).ok()?;
    js_sys::Reflect::get(&nav, &JsValue::from_str("deviceMemory")).ok()?.as_f64()
}

/// The files the page was given (dropped or picked), read through `read(name, start, len)`: a JS function
/// that returns a Uint8Array of exactly `len` bytes (the worker reads slices of the File objects with
/// FileReaderSync, so no file is copied whole into wasm memory and the budget is checked before the weights
/// are read).
struct JsFiles {
    sizes: std::collections::HashMap<String, u64>,
    read: js_sys::Function,
}

impl Files for JsFiles {
    fn size(&self, name: &str) -> Option<u64> {
        self.sizes.get(name).copied()
    }
    fn read_range(&self, name: &str, start: u64, len: u64) -> crate::formats::Result<Vec<u8>> {
        let fail = |why: String| FormatError(format!("{name}: {why}"));
        let got = self
            .read
            .call3(&JsValue::NULL, &JsValue::from_str(name), &JsValue::from_f64(start as f64), &JsValue::from_f64(len as f64))
            .map_err(|e| fail(format!("could not be read ({})", js_sys::Error::from(e).message())))?;
        let arr: js_sys::Uint8Array = got.dyn_into().map_err(|_| fail("the reader returned no bytes".into()))?;
        if arr.length() as u64 != len {
            return Err(fail(format!("{} bytes read where {len} were expected: did the file change?", arr.length())));
        }
        let mut out = Vec::new();
        out.try_reserve_exact(len as usize).map_err(|_| fail(format!("cannot allocate {len} bytes")))?;
        out.resize(len as usize, 0);
        arr.copy_to(&mut out);
        Ok(out)
    }
}

/// Loads a model from the files the user gave together (names, sizes in bytes, and the reader above): a
/// Hugging Face directory's files, llama2.c's model.bin + tokenizer.bin, or one of our checkpoints
/// (session::Session::load_files). Returns its card; on an error the previous model stays loaded.
#[wasm_bindgen]
pub async fn load_files(names: Vec<String>, sizes: Vec<f64>, read: js_sys::Function, prefer_gpu: bool) -> Result<JsValue, JsValue> {
    if names.len() != sizes.len() {
        return Err(err("load_files: one size per file name"));
    }
    let files = JsFiles { sizes: names.iter().cloned().zip(sizes.iter().map(|&s| s as u64)).collect(), read };
    let slot = SESSION.with(Rc::clone);
    let mut s = borrow(&slot)?;
    let device = gpu().filter(|_| prefer_gpu).map_or(Device::Cpu, Device::Gpu);
    let budget = Budget::page_for(gpu().filter(|_| prefer_gpu).map(|g| g.buffer_limits()), device_memory_gib());
    let new = Session::load_files(&device, &files, &names, None, &budget).await.map_err(err)?;
    *s = None; // the old model's buffers are destroyed first
    Ok(to_js(&s.insert(new).card())?)
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

/// Look inside (session::Session::inspect_page); opts: session::PageOpts.
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

/// One pass: logits (rows, vocab), the attention maps of `layers` (default: every layer), the masks
/// and MoE routing (session::forward_with).
#[wasm_bindgen]
pub async fn forward(ids: Vec<u32>, tgt: Option<Vec<u32>>, layers: Option<Vec<u32>>) -> Result<JsValue, JsValue> {
    let layers: Option<Vec<usize>> = layers.map(|l| l.into_iter().map(|x| x as usize).collect());
    let kept = crate::model::state::MapLayers::from_list(layers.as_deref());
    let out: ForwardOut = with_async(async |s| s.forward_with(&ids, tgt.as_deref(), &kept).await).await?;
    to_js(&Forward {
        logits: Matrix { rows: out.rows, cols: out.vocab, data: f32s(&out.logits) },
        attention: maps(&out.attention),
        masks: out.masks.iter().map(|(k, m)| (k.as_str(), matrix(m))).collect(),
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

/// Generation steps per GPU submission from the running generation's next batch on (the worker
/// grows K while a batch stays within its frame budget; Session::set_tokens_per_submit).
#[wasm_bindgen]
pub fn gen_tokens_per_submit(k: usize) -> Result<(), JsValue> {
    with(|s| s.set_tokens_per_submit(k))
}

/// Benchmarks: run other kernels on the GPU model from its next pass on. `kernels` is part of a
/// `gpu::KernelPolicy` ({fused, few_rows, many_rows, attention, norms}, the names `gpu_kernels`
/// returns), laid over the model's current kernels; a name outside the policy's is refused in one
/// line. 16-bit widening is a load-time choice: set_gpu_widen16.
#[wasm_bindgen]
pub fn set_gpu_kernels(kernels: JsValue) -> Result<(), JsValue> {
    let patch: serde_json::Value = serde_wasm_bindgen::from_value(kernels).map_err(|e| err(format!("set_gpu_kernels: {e}")))?;
    with(|s| {
        let now = s.gpu_policy().ok_or_else(|| crate::error::TfError::Input("no model is loaded on the GPU".into()))?;
        let p = crate::gpu::KernelPolicy::patched(now, &patch)?;
        s.set_gpu_policy(&p)
    })
}

/// The browser's word on the adapter: its architecture (GPUAdapterInfo.architecture, which wgpu's
/// WebGPU backend leaves empty). An adapter emulated on the CPU ("swiftshader") gets that policy
/// (gpu::KernelPolicy) for the models loaded from now on. Call after gpu_init.
#[wasm_bindgen]
pub fn gpu_note_architecture(architecture: &str) -> Result<(), JsValue> {
    gpu().ok_or_else(|| err("the GPU is not initialised: call gpu_init first"))?.note_architecture(architecture);
    Ok(())
}

/// Whether models loaded on the GPU from now on widen 16-bit (F16 / BF16) weights to f32 at upload
/// (Gpu::set_widen16; the memory budget counts them at 4 bytes then). It is on by default where the
/// device's policy says so (gpu::KernelPolicy: a GPU emulated on the CPU); benchmarks turn it off
/// to compare.
#[wasm_bindgen]
pub fn set_gpu_widen16(on: bool) -> Result<(), JsValue> {
    gpu().ok_or_else(|| err("the GPU is not initialised: call gpu_init first"))?.set_widen16(on);
    Ok(())
}

/// The GPU model's kernels and counters: its `gpu::KernelPolicy` ({fused, few_rows, many_rows,
/// attention, norms, widen16}: the device's choice, or what set_gpu_kernels set) with the dispatches
/// and queue submissions since load, null on the CPU paths.
#[wasm_bindgen]
pub fn gpu_kernels() -> Result<JsValue, JsValue> {
    #[derive(Serialize)]
    struct Kernels {
        #[serde(flatten)]
        policy: crate::gpu::KernelPolicy,
        dispatches: usize,
        submits: usize,
    }
    let k = with(|s| Ok(s.gpu_backend().map(|b| Kernels { policy: b.policy(), dispatches: b.dispatches(), submits: b.submits() })))?;
    to_js(&k)
}
