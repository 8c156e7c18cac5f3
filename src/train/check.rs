//! A training run checked against a PyTorch fixture (tests/fixtures/train, made by
//! train/train_fixtures.py in float64): the loss and every parameter's gradient at step 1, the
//! loss, gradient norm, learning rate (and a MoE model's load-balancing losses) of 10 AdamW steps
//! with warmup, cosine decay and clipping, and every parameter after them. Shared by the native
//! tests (tests/train_fixtures.rs, every backend) and the page's wasm build (its fast CPU backend,
//! tests/browser/train.test.mjs), so both hold the engine to the same tolerances:
//! - gradients within 1e-5 + 1e-4 x the tensor's largest; losses, norms and load-balancing losses
//!   2e-5 relative; learning rates 1e-6 relative; final parameters 3e-4 absolute;
//! - a key bias's true gradient is exactly zero, so AdamW turns f32 rounding into moves of up to a
//!   few 1e-3 there: those (the fixture's `zero_grad_params`) are held to 1e-2.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Result, TfError};
use crate::model::checkpoint::Checkpoint;
use crate::train::data::Source;
use crate::train::ops::Train;
use crate::train::optim::{Optim, Schedule};
use crate::train::params::Params;
use crate::train::run::{Shape, Trainer};

pub const GRAD_ATOL: f32 = 1e-5;
pub const GRAD_RTOL_OF_MAX: f32 = 1e-4;
pub const LOSS_RTOL: f64 = 2e-5;
pub const LR_RTOL: f64 = 1e-6;
pub const FINAL_ATOL: f32 = 3e-4;
pub const ZERO_GRAD_FINAL_ATOL: f32 = 1e-2;

/// What a fixture run found: every value outside its tolerance, and the largest differences.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FixtureReport {
    pub steps: u32,
    pub tensors: usize,
    pub losses: Vec<f64>,
    pub max_loss_rel: f64,
    pub max_grad_abs: f32,
    pub max_final_abs: f32,
    /// one line per value out of tolerance (the first 20)
    pub failures: Vec<String>,
}

impl FixtureReport {
    fn fail(&mut self, m: String) {
        if self.failures.len() < 20 {
            self.failures.push(m);
        }
    }
}

fn bad(m: impl std::fmt::Display) -> TfError {
    TfError::Input(format!("the training fixture: {m}"))
}

fn floats(v: Option<&Value>, what: &str) -> Result<Vec<f64>> {
    v.and_then(Value::as_array)
        .ok_or_else(|| bad(format!("{what} is missing")))?
        .iter()
        .map(|x| x.as_f64().ok_or_else(|| bad(format!("{what} holds a non-number"))))
        .collect()
}

/// The fixture's tensors (`grad.*`, `final.*`) and its metadata, each value parsed as JSON.
fn expect(bytes: &[u8]) -> Result<(HashMap<String, Vec<f32>>, HashMap<String, Value>)> {
    let (_, md) = safetensors::SafeTensors::read_metadata(bytes).map_err(bad)?;
    let meta = md
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Value::String(v))))
        .collect();
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(bad)?;
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
        .collect();
    Ok((tensors, meta))
}

/// Runs the fixture (`init` checkpoint, `batches` file, `expect` truth) on `be`.
pub async fn fixture<B: Train>(be: B, init: &[u8], batches: &str, expect_bytes: &[u8]) -> Result<FixtureReport> {
    let (tensors, meta) = expect(expect_bytes)?;
    let mut ck = Checkpoint::from_bytes(init).map_err(TfError::from)?;
    let cfg = ck.config.clone();
    let values = Params::<()>::checkpoint_values(&mut ck)?;
    let data = Source::batches_json(batches)?;
    let (batch, context) = data.shape().ok_or_else(|| bad("no batches"))?;
    let h = meta.get("hyper").ok_or_else(|| bad("hyper is missing"))?;
    let f = |k: &str| h[k].as_f64().map(|x| x as f32).ok_or_else(|| bad(format!("hyper.{k} is missing")));
    let optim = Optim {
        lr: f("lr_max")?,
        min_lr: f("min_lr")?,
        warmup: f("warmup")? as u32,
        schedule: Schedule::Cosine,
        steps: f("total")? as u32,
        weight_decay: f("weight_decay")?,
        betas: (f("beta1")?, f("beta2")?),
        eps: f("eps")?,
        clip: Some(f("clip")?),
    };
    let aux_weight = meta.get("aux_loss_weight").and_then(Value::as_f64).unwrap_or(0.0) as f32;
    let shape = Shape { batch, context, source: data.source_len(), accum: 1 };
    let mut tr = Trainer::new(be, &cfg, values, optim, shape)?.with_aux_loss(aux_weight)?;
    let zero_grad: Vec<&str> =
        meta.get("zero_grad_params").and_then(Value::as_array).map_or(vec![], |v| v.iter().filter_map(Value::as_str).collect());
    let (losses, norms, lrs) =
        (floats(meta.get("losses"), "losses")?, floats(meta.get("grad_norms"), "grad_norms")?, floats(meta.get("lrs"), "lrs")?);
    let steps = losses.len().min(norms.len()).min(lrs.len()) as u32;
    let mut r = FixtureReport { steps, tensors: tr.params.decl.len(), ..FixtureReport::default() };
    for s in 1..=steps {
        let i = s as usize - 1;
        let b = tr.batches(&data, 0, s)?;
        let (loss, norm) = tr.gradients(&b).await?;
        r.losses.push(loss);
        let rel = (loss - losses[i]).abs() / losses[i].abs();
        r.max_loss_rel = r.max_loss_rel.max(rel);
        if rel > LOSS_RTOL {
            r.fail(format!("step {s}: loss {loss} vs PyTorch {}", losses[i]));
        }
        if (norm - norms[i]).abs() > LOSS_RTOL * norms[i].abs() {
            r.fail(format!("step {s}: gradient norm {norm} vs PyTorch {}", norms[i]));
        }
        if let Some(want) = meta.get("aux_losses").and_then(|a| a.get(i)) {
            let want = floats(Some(want), "aux_losses")?;
            let aux = tr.graph.aux_losses(&mut tr.be).await?;
            if aux.len() != want.len() {
                r.fail(format!("step {s}: {} load-balancing losses, PyTorch {}", aux.len(), want.len()));
            }
            for (a, w) in aux.iter().zip(&want) {
                if (*a as f64 - w).abs() > LOSS_RTOL * w.abs() {
                    r.fail(format!("step {s}: load-balancing loss {a} vs PyTorch {w}"));
                }
            }
        }
        if s == 1 {
            let grads = tr.params.read(&mut tr.be, true).await?;
            for (d, g) in tr.params.decl.iter().zip(&grads) {
                let want = tensors.get(&format!("grad.{}", d.name)).ok_or_else(|| bad(format!("grad.{} is missing", d.name)))?;
                let top = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                for (j, (a, w)) in g.iter().zip(want).enumerate() {
                    r.max_grad_abs = r.max_grad_abs.max((a - w).abs());
                    if (a - w).abs() > GRAD_ATOL + GRAD_RTOL_OF_MAX * top {
                        r.fail(format!("gradient {}[{j}]: {a} vs PyTorch {w}", d.name));
                    }
                }
            }
        }
        let lr = tr.update()?;
        if (lr as f64 - lrs[i]).abs() > LR_RTOL * lrs[i] {
            r.fail(format!("step {s}: lr {lr} vs {}", lrs[i]));
        }
    }
    let finals = tr.values().await?;
    for (d, p) in tr.params.decl.iter().zip(&finals) {
        let want = tensors.get(&format!("final.{}", d.name)).ok_or_else(|| bad(format!("final.{} is missing", d.name)))?;
        let tol = if zero_grad.contains(&d.name.as_str()) { ZERO_GRAD_FINAL_ATOL } else { FINAL_ATOL };
        for (j, (a, w)) in p.iter().zip(want).enumerate() {
            if tol == FINAL_ATOL {
                r.max_final_abs = r.max_final_abs.max((a - w).abs());
            }
            if (a - w).abs() > tol {
                r.fail(format!("{}[{j}] after {steps} steps: {a} vs PyTorch {w}", d.name));
            }
        }
    }
    Ok(r)
}
