//! Whole models (the seed decoder, GPT-2, the Llama, the MoE decoder with its load-balancing
//! loss, an attention-only decoder, the encoder-decoder with padded rows) against PyTorch autograd (tests/fixtures/train, made by train/train_fixtures.py in
//! float64): each family's loss and every parameter's gradient at step 1, then the loss, gradient
//! norm and learning rate of 10 AdamW steps with warmup, cosine decay and clipping, and every
//! parameter after them, on the reference and the fast CPU backends. The MoE decoder's objective
//! adds its load-balancing losses (weight `aux_loss_weight`), each layer's checked at every step.
//!
//! Tolerances (the engine stores f32; PyTorch's float32 run of the same fixtures sits within 1e-6
//! of the float64 truth): gradients within 1e-5 + 1e-4 x the tensor's largest, losses and norms
//! 2e-5 relative, final parameters 3e-4 absolute. A key bias's true gradient is exactly zero, so
//! AdamW turns f32 rounding into moves of up to a few 1e-3 there: those (the file's
//! `zero_grad_params`) are held to 1e-2.

use std::collections::HashMap;

use tinyformer::fastcpu::FastCpuBackend;
use tinyformer::model::backend::CpuBackend;
use tinyformer::model::checkpoint::Checkpoint;
use tinyformer::train::data::Source;
use tinyformer::train::ops::Train;
use tinyformer::train::optim::{Optim, Schedule};
use tinyformer::train::params::Params;
use tinyformer::train::run::{Shape, Trainer};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train");

struct Expect {
    tensors: HashMap<String, Vec<f32>>,
    meta: HashMap<String, serde_json::Value>,
}

fn expect(name: &str) -> Expect {
    let bytes = std::fs::read(format!("{DIR}/{name}.expect.safetensors")).unwrap();
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = md
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v))))
        .collect();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
        .collect();
    Expect { tensors, meta }
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn run<B: Train>(be: B, name: &str) {
    let e = expect(name);
    let mut ck = Checkpoint::from_bytes(&std::fs::read(format!("{DIR}/{name}.init.safetensors")).unwrap()).unwrap();
    let cfg = ck.config.clone();
    let values = Params::<()>::checkpoint_values(&mut ck).unwrap();
    let data = Source::batches_json(&std::fs::read_to_string(format!("{DIR}/{name}.batches.json")).unwrap()).unwrap();
    let (batch, context) = data.shape().unwrap();
    let h = &e.meta["hyper"];
    let f = |k: &str| h[k].as_f64().unwrap() as f32;
    let optim = Optim {
        lr: f("lr_max"),
        min_lr: f("min_lr"),
        warmup: f("warmup") as u32,
        schedule: Schedule::Cosine,
        steps: f("total") as u32,
        weight_decay: f("weight_decay"),
        betas: (f("beta1"), f("beta2")),
        eps: f("eps"),
        clip: Some(f("clip")),
    };
    let aux_weight = e.meta.get("aux_loss_weight").map_or(0.0, |w| w.as_f64().unwrap() as f32);
    let shape = Shape { batch, context, source: data.source_len(), accum: 1 };
    let mut tr = Trainer::new(be, &cfg, values, optim, shape).unwrap().with_aux_loss(aux_weight).unwrap();
    let zero_grad: Vec<String> =
        e.meta.get("zero_grad_params").map_or(vec![], |v| v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect());
    let (losses, norms, lrs) = (floats(&e.meta["losses"]), floats(&e.meta["grad_norms"]), floats(&e.meta["lrs"]));
    for s in 1..=10u32 {
        let b = tr.batches(&data, 0, s).unwrap();
        let (loss, norm) = pollster::block_on(tr.gradients(&b)).unwrap();
        let i = s as usize - 1;
        assert!((loss - losses[i]).abs() <= 2e-5 * losses[i].abs(), "{name} step {s}: loss {loss} vs PyTorch {}", losses[i]);
        assert!((norm - norms[i]).abs() <= 2e-5 * norms[i].abs(), "{name} step {s}: grad norm {norm} vs PyTorch {}", norms[i]);
        if let Some(want) = e.meta.get("aux_losses") {
            let aux = pollster::block_on(tr.graph.aux_losses(&mut tr.be)).unwrap();
            let want = floats(&want[i]);
            assert_eq!(aux.len(), want.len(), "{name}: one load-balancing loss per layer");
            for (a, w) in aux.iter().zip(&want) {
                assert!((*a as f64 - w).abs() <= 2e-5 * w.abs(), "{name} step {s}: load-balancing loss {a} vs PyTorch {w}");
            }
            let ce = floats(&e.meta["ce_losses"])[i];
            let objective = ce + aux_weight as f64 * want.iter().sum::<f64>();
            assert!((objective - losses[i]).abs() <= 1e-9 * losses[i].abs(), "{name}: losses are CE + weighted aux");
        }
        if s == 1 {
            let grads = pollster::block_on(tr.params.read(&mut tr.be, true)).unwrap();
            for (d, g) in tr.params.decl.iter().zip(&grads) {
                let want = &e.tensors[&format!("grad.{}", d.name)];
                let top = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                for (j, (a, w)) in g.iter().zip(want).enumerate() {
                    assert!((a - w).abs() <= 1e-5 + 1e-4 * top, "{name}: grad {}[{j}] {a} vs PyTorch {w}", d.name);
                }
            }
        }
        let lr = tr.update().unwrap();
        assert!((lr as f64 - lrs[i]).abs() <= 1e-6 * lrs[i], "{name} step {s}: lr {lr} vs {}", lrs[i]);
    }
    let finals = pollster::block_on(tr.values()).unwrap();
    for (d, p) in tr.params.decl.iter().zip(&finals) {
        let want = &e.tensors[&format!("final.{}", d.name)];
        let tol = if zero_grad.contains(&d.name) { 1e-2 } else { 3e-4 };
        for (j, (a, w)) in p.iter().zip(want).enumerate() {
            assert!((a - w).abs() <= tol, "{name}: {}[{j}] after 10 steps {a} vs PyTorch {w}", d.name);
        }
    }
}

#[test]
fn every_family_matches_pytorch_on_the_reference_backend() {
    for name in ["gpt_sin", "gpt2", "llama", "moe", "attn_only", "encdec"] {
        run(CpuBackend, name);
    }
}

#[test]
fn every_family_matches_pytorch_on_the_fast_cpu_backend() {
    for name in ["gpt_sin", "gpt2", "llama", "moe", "attn_only", "encdec"] {
        run(FastCpuBackend::default(), name);
    }
}

/// The inference forward of every backend (an attention-only model included) agrees with the
/// training forward, which matches PyTorch above: each row's mean cross-entropy of predicting its
/// inputs[1..] (`Model::eval_loss`) against the same positions' losses of the reference training
/// graph, within 1e-4 relative (f32 kernels).
#[test]
fn inference_agrees_with_the_trained_forward_on_every_backend() {
    use std::sync::Arc;
    use tinyformer::gpu::Gpu;
    use tinyformer::model::backend::{Backend, GpuBackend};
    use tinyformer::model::forward::Model;
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed (install mesa-vulkan-drivers)"));
    for name in ["gpt_sin", "gpt2", "llama", "attn_only"] {
        let bytes = std::fs::read(format!("{DIR}/{name}.init.safetensors")).unwrap();
        let mut ck = Checkpoint::from_bytes(&bytes).unwrap();
        let cfg = ck.config.clone();
        let values = Params::<()>::checkpoint_values(&mut ck).unwrap();
        let data = Source::batches_json(&std::fs::read_to_string(format!("{DIR}/{name}.batches.json")).unwrap()).unwrap();
        let (batch, t) = data.shape().unwrap();
        let mut tr = Trainer::new(CpuBackend, &cfg, values, Optim::default(), Shape { batch, context: t, source: 0, accum: 1 }).unwrap();
        let b = tr.batches(&data, 0, 1).unwrap();
        pollster::block_on(tr.gradients(&b)).unwrap();
        let losses = pollster::block_on(tr.be.read_f32(tr.graph.losses().0, 0, batch * t)).unwrap();
        async fn row_loss<B: Backend>(be: &mut B, bytes: &[u8], row: &[u32]) -> f64 {
            let mut m = Model::load(&*be, bytes).unwrap();
            m.eval_loss(be, row).await.unwrap().0
        }
        for r in 0..batch {
            let row = &b[0].ids[r * t..(r + 1) * t];
            let want = losses[r * t..(r + 1) * t - 1].iter().map(|&x| x as f64).sum::<f64>() / (t - 1) as f64;
            let got = [
                ("reference", pollster::block_on(row_loss(&mut CpuBackend, &bytes, row))),
                ("fast cpu", pollster::block_on(row_loss(&mut FastCpuBackend::default(), &bytes, row))),
                ("gpu", pollster::block_on(row_loss(&mut GpuBackend::new(gpu.clone()), &bytes, row))),
            ];
            for (be, g) in got {
                assert!((g - want).abs() <= 1e-4 * want, "{name} row {r} on {be}: inference loss {g} vs training forward {want}");
            }
        }
    }
}
