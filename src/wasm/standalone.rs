//! The calls that need no loaded model: the GPU adapter and its self-test, the Masks view, the BPE
//! workbench, the training check against PyTorch's fixtures, and the page's test hooks (panic, hang, device loss). Serialization only, as in mod.rs.

use std::collections::BTreeMap;
use std::sync::Arc;

use js_sys::Reflect;
use serde::Serialize;
use serde_json::json;
use wasm_bindgen::prelude::*;

use super::{err, gpu, matrix, to_js, Matrix, GPU};
use crate::gpu::Gpu;
use crate::mask;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// The instruction set this build's CPU kernels use: "simd128" (www/pkg) or "simd128+relaxed-simd" (www/pkg-relaxed).
#[wasm_bindgen]
pub fn cpu_isa() -> String {
    crate::fastcpu::simd::isa().to_string()
}

/// `navigator.gpu` in the window or worker scope.
fn has_navigator_gpu() -> bool {
    let get = |o: &JsValue, k: &str| Reflect::get(o, &JsValue::from_str(k)).ok().filter(|v| !v.is_undefined() && !v.is_null());
    get(&JsValue::from(js_sys::global()), "navigator").and_then(|nav| get(&nav, "gpu")).is_some()
}

/// Finds a WebGPU adapter and builds every pipeline: {ok, backend, adapter, limits}. Never throws for
/// a missing GPU: {ok: false, backend: "none", error}, so the page can say so and use the CPU.
/// `max_binding` (bytes; the page's `?maxbinding=` test hook): a maxStorageBufferBindingSize below
/// the adapter's, at which this context splits large embeddings and heads by rows
/// (`Gpu::with_binding_limit`); absent or 0: the adapter's own.
#[wasm_bindgen]
pub async fn gpu_init(max_binding: Option<f64>) -> Result<JsValue, JsValue> {
    let none = |error: String| to_js(&json!({"ok": false, "backend": "none", "error": error}));
    if !has_navigator_gpu() {
        return none("WebGPU is not available in this browser (navigator.gpu is missing); the models run on the CPU instead".into());
    }
    let max_binding = max_binding.filter(|b| b.is_finite() && *b >= 1.0).map(|b| b as u64);
    match Gpu::with_binding_limit(max_binding).await {
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

/// A training run against a PyTorch fixture (`train::check`: 10 AdamW steps, every gradient and
/// parameter): on this build's fast CPU backend (wasm SIMD), or with `gpu` on our WGSL kernels
/// (after gpu_init). The report {steps, losses, failures, ...}; tests/browser/train.test.mjs.
#[wasm_bindgen]
pub async fn train_fixture_check(init: Vec<u8>, batches: String, expect: Vec<u8>, gpu_backend: bool) -> Result<JsValue, JsValue> {
    let report = if gpu_backend {
        let g = gpu().ok_or_else(|| err("the GPU is not initialised: call gpu_init first (or WebGPU is unavailable)"))?;
        crate::train::check::fixture(crate::model::backend::GpuBackend::new(g), &init, &batches, &expect).await
    } else {
        crate::train::check::fixture(crate::fastcpu::FastCpuBackend::default(), &init, &batches, &expect).await
    };
    to_js(&report.map_err(|e| err(&e.to_string()))?)
}

/// The fast CPU backend's attention against its reference twin over a shape sweep, in this build
/// (src/fastcpu/check.rs): {cases, max_abs_diff, failures}. tests/browser/fastcpu.test.mjs.
#[wasm_bindgen]
pub fn fastcpu_attention_check() -> Result<JsValue, JsValue> {
    to_js(&crate::fastcpu::check::attention_sweep())
}

/// The fast CPU kernels timed on the training lab's Shakespeare preset's shapes (and GPT-2 small's
/// decode GEMVs with `decode`) in this build (src/fastcpu/bench.rs; `min_ms` per repetition):
/// [{name, per_step, ms, gflops}]. A benchmark hook for node or the page, not used by the page itself.
#[wasm_bindgen]
pub fn fastcpu_kernel_bench(min_ms: f64, decode: bool) -> Result<JsValue, JsValue> {
    let perf = Reflect::get(&js_sys::global(), &JsValue::from_str("performance"))?;
    let now_fn: js_sys::Function = Reflect::get(&perf, &JsValue::from_str("now"))?.into();
    let now = || now_fn.call0(&perf).ok().and_then(|v| v.as_f64()).unwrap_or(0.0);
    to_js(&crate::fastcpu::bench::kernel_bench(&now, min_ms, decode))
}

/// The fast CPU backend's dW = dY^T X against its reference twin over a shape sweep, in this build
/// (src/fastcpu/check.rs `dw_sweep`): {cases, max_abs_diff, failures}. tests/browser/fastcpu.test.mjs.
#[wasm_bindgen]
pub fn fastcpu_train_check() -> Result<JsValue, JsValue> {
    to_js(&crate::fastcpu::check::dw_sweep())
}

/// 16-bit weights kept 16-bit: this build's widening of every f16 / bf16 bit pattern against the `half`
/// crate, and its matmul over 16-bit panels against the widened f32 panels, bit for bit (src/fastcpu/check.rs
/// `half_sweep`): {cases, max_abs_diff, failures}. tests/browser/fastcpu.test.mjs.
#[wasm_bindgen]
pub fn fastcpu_half_check() -> Result<JsValue, JsValue> {
    to_js(&crate::fastcpu::check::half_sweep())
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

/// The encoder-decoder's cross-attention mask for the Masks view (mask::cross_mask).
#[wasm_bindgen]
pub fn cross_mask(tgt_len: u32, src_len: u32, src_pad: u32) -> Result<JsValue, JsValue> {
    to_js(&matrix(&mask::cross_mask(tgt_len as usize, src_len as usize, src_pad as usize).map_err(err)?))
}

/// GPU tensor buffers alive now, {buffers, bytes} (null without a GPU): flat across load/unload cycles.
#[wasm_bindgen]
pub fn gpu_memory() -> Result<JsValue, JsValue> {
    gpu().map_or(Ok(JsValue::NULL), |g| to_js(&json!({"buffers": g.live_buffers().0, "bytes": g.live_buffers().1})))
}

/// The BPE workbench (tokenizer::workbench): {merges, steps, vocab_size, report, explanation}.
#[wasm_bindgen]
pub fn bpe_workbench(text: &str, vocab_size: u32, sentence: &str) -> Result<JsValue, JsValue> {
    to_js(&crate::tokenizer::workbench::bpe_workbench(text, vocab_size, sentence).map_err(err)?)
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

/// Test hook: the page's budget sees a maxStorageBufferBindingSize of at most `bytes` (0: the device's own).
#[wasm_bindgen]
pub fn debug_lower_binding_limit(bytes: f64) {
    crate::gpu::context::lower_binding_limit(if bytes > 0.0 { bytes as u64 } else { u64::MAX });
}

/// Destroys the GPU device on purpose: the page's test hook for the device-lost path.
#[wasm_bindgen]
pub fn debug_lose_device() {
    gpu().inspect(|g| g.device.destroy());
}
