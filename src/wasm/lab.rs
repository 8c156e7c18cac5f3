//! The training lab's calls (src/train/lab.rs; www/worker.js's `train*` actions): one run at a time,
//! on the fast CPU backend (wasm SIMD) or on WebGPU, beside (not inside) the loaded model's session.
//! Serialization only, as in mod.rs.

// One thread, and every borrow of the run is try_borrow_mut: a call that overlaps another (across an
// await) is answered "busy", as mod.rs does for the session.
#![allow(clippy::await_holding_refcell_ref)]

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use super::{device_memory_gib, err, gpu, to_js};
use crate::fastcpu::FastCpuBackend;
use crate::model::backend::GpuBackend;
use crate::model::memory::Budget;
use crate::train::lab::{probe, Lab, LabPlan, LabSettings, LabSpec, ProbeSample};
use crate::train::memory::TrainMemory;

enum Run {
    Cpu(Box<Lab<FastCpuBackend>>),
    Gpu(Box<Lab<GpuBackend>>),
}

thread_local! {
    static LAB: Rc<RefCell<Option<Run>>> = Rc::new(RefCell::new(None));
}

macro_rules! with_lab {
    ($lab:ident => $body:expr) => {{
        let slot = LAB.with(Rc::clone);
        let mut guard = slot.try_borrow_mut().map_err(|_| err("the training run is busy with another request"))?;
        match guard.as_mut() {
            Some(Run::Cpu($lab)) => $body,
            Some(Run::Gpu($lab)) => $body,
            None => return Err(err("no training run: press Train first")),
        }
    }};
}

/// What the page shows before and at the start of a run.
#[derive(Serialize)]
struct PlanOut<'a> {
    settings: &'a LabSettings,
    memory: &'a TrainMemory,
    params: u64,
    /// `tinyformer train`'s arguments for the same run (a text preset reads TEXT.txt)
    cli: Vec<String>,
    /// where it runs: "gpu" or "cpu" (train_start only)
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'static str>,
}

fn plan_of(spec: JsValue, text: Option<String>) -> Result<LabPlan, JsValue> {
    let spec: LabSpec = serde_wasm_bindgen::from_value(spec).map_err(|e| err(format!("the training settings: {e}")))?;
    LabPlan::new(&spec, text.as_deref()).map_err(err)
}

fn out(p: &LabPlan, backend: Option<&'static str>) -> Result<JsValue, JsValue> {
    to_js(&PlanOut { settings: &p.settings, memory: &p.memory, params: p.cfg.param_count(), cli: p.cli_args("TEXT.txt"), backend })
}

/// The plan of a run (settings, memory, parameters, the CLI's command), allocating nothing.
#[wasm_bindgen]
pub fn train_plan(spec: JsValue, text: Option<String>) -> Result<JsValue, JsValue> {
    out(&plan_of(spec, text)?, None)
}

/// Starts a run (ending any run before it) on WebGPU with `gpu` (after gpu_init), else on the fast
/// CPU backend; refused in one line when its memory is over the page's budget.
#[wasm_bindgen]
pub async fn train_start(spec: JsValue, text: Option<String>, gpu_backend: bool) -> Result<JsValue, JsValue> {
    start(spec, text, gpu_backend, None).await
}

/// train_start, resumed from a `train_snapshot` of the same settings and text (the page keeps it in
/// IndexedDB): the run continues after the snapshot's step, with its log.
#[wasm_bindgen]
pub async fn train_resume(spec: JsValue, text: Option<String>, gpu_backend: bool, snapshot: Vec<u8>) -> Result<JsValue, JsValue> {
    start(spec, text, gpu_backend, Some(&snapshot)).await
}

/// The run's state (weights, Adam moments, step, settings, log) to resume it later: `Lab::snapshot`.
#[wasm_bindgen]
pub async fn train_snapshot() -> Result<Vec<u8>, JsValue> {
    with_lab!(lab => lab.snapshot().await.map_err(err))
}

/// The run's log so far (a resumed run's includes the steps before its snapshot).
#[wasm_bindgen]
pub fn train_log() -> Result<JsValue, JsValue> {
    with_lab!(lab => to_js(&lab.log))
}

async fn start(spec: JsValue, text: Option<String>, gpu_backend: bool, snapshot: Option<&[u8]>) -> Result<JsValue, JsValue> {
    let plan = plan_of(spec, text)?;
    let slot = LAB.with(Rc::clone);
    let mut guard = slot.try_borrow_mut().map_err(|_| err("the training run is busy with another request"))?;
    *guard = None; // the previous run's buffers go first
    let g = if gpu_backend { Some(gpu().ok_or_else(|| err("WebGPU is not available: train on the CPU"))?) } else { None };
    let budget = Budget::page_for(g.as_ref().map(|g| g.buffer_limits()), device_memory_gib());
    plan.check_memory(budget.bytes, budget.max_binding).map_err(err)?;
    let run = match g {
        Some(g) => {
            if g.is_lost() {
                return Err(err("the GPU device was lost; reload the page to get a new one"));
            }
            let be = GpuBackend::new(g.clone());
            let lab = g.scoped(|| match snapshot {
                Some(b) => Lab::resume(be, plan, b),
                None => Lab::new(be, plan),
            });
            Run::Gpu(Box::new(lab.await.map_err(err)?))
        }
        None => Run::Cpu(Box::new(
            match snapshot {
                Some(b) => Lab::resume(FastCpuBackend::default(), plan, b),
                None => Lab::new(FastCpuBackend::default(), plan),
            }
            .map_err(err)?,
        )),
    };
    let (p, backend) = match &run {
        Run::Cpu(l) => (&l.plan, "cpu"),
        Run::Gpu(l) => (&l.plan, "gpu"),
    };
    let v = out(p, Some(backend))?;
    *guard = Some(run);
    Ok(v)
}

#[derive(Serialize)]
struct Chunk {
    logs: Vec<crate::train::run::StepLog>,
    step: u32,
    done: bool,
}

fn now_s() -> f64 {
    js_sys::Date::now() / 1e3
}

/// Runs up to `k` steps, reading back every `every`-th (and steps 1, 100 and the last):
/// {logs: [{step, loss, val_loss?, lr, grad_norm, tokens_per_second, elapsed_s}], step, done}.
#[wasm_bindgen]
pub async fn train_run(k: u32, every: u32) -> Result<JsValue, JsValue> {
    with_lab!(lab => {
        let logs = lab.run(k, every, &now_s).await.map_err(err)?;
        to_js(&Chunk { logs, step: lab.tr.step, done: lab.done() })
    })
}

/// The validation loss now (null when the data has none).
#[wasm_bindgen]
pub async fn train_val_loss() -> Result<JsValue, JsValue> {
    with_lab!(lab => to_js(&lab.val_loss().await.map_err(err)?))
}

/// Sets the learning rate from the next step on.
#[wasm_bindgen]
pub fn train_set_lr(lr: f32) -> Result<JsValue, JsValue> {
    with_lab!(lab => {
        lab.set_lr(lr).map_err(err)?;
        to_js(&lab.plan.settings)
    })
}

/// The current model as a checkpoint (our safetensors format, as `tinyformer train --out` writes).
#[wasm_bindgen]
pub async fn train_checkpoint() -> Result<Vec<u8>, JsValue> {
    with_lab!(lab => lab.checkpoint().await.map_err(err))
}

/// What the lab shows of the current model (`train::lab::probe`): every head's scores, the probe
/// sequence's attention, a sample from `prompt` (text presets) at `temperature` (0 or none = greedy;
/// NaN, negative or over 2 is refused in one line) seeded by the current step, so the same step and
/// temperature give the same sample, the experts' load, the dates accuracy.
#[wasm_bindgen]
pub async fn train_probe(prompt: Option<String>, temperature: Option<f32>) -> Result<JsValue, JsValue> {
    let (bytes, tok, step) = with_lab!(lab => (lab.checkpoint().await.map_err(err)?, lab.plan.tokenizer.clone(), lab.tr.step));
    let sample = ProbeSample { temperature: temperature.unwrap_or(0.0), seed: step as u64 };
    to_js(&probe(&bytes, tok.as_ref(), prompt.as_deref(), sample).await.map_err(err)?)
}

/// Ends the run and frees its buffers.
#[wasm_bindgen]
pub fn train_end() -> Result<(), JsValue> {
    let slot = LAB.with(Rc::clone);
    let mut guard = slot.try_borrow_mut().map_err(|_| err("the training run is busy with another request"))?;
    *guard = None;
    Ok(())
}
