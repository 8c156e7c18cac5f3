//! The only file that knows JsValue / wasm_bindgen: a thin layer over the core for the page's
//! worker. Large tensors cross as Float32Array, small metadata as serde values.

use std::cell::RefCell;
use std::sync::Arc;

use js_sys::{Float32Array, Object, Reflect};
use wasm_bindgen::prelude::*;

use crate::gpu::Gpu;
use crate::mask::{self, Mask};

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

fn err(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
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
