//! Whole models (the seed decoder, GPT-2, the Llama, the MoE decoder with its load-balancing
//! loss, an attention-only decoder, the encoder-decoder with padded rows) against PyTorch autograd (tests/fixtures/train, made by train/train_fixtures.py in
//! float64): each family's loss and every parameter's gradient at step 1, then the loss, gradient
//! norm and learning rate of 10 AdamW steps with warmup, cosine decay and clipping, and every
//! parameter after them, on the reference, the fast CPU and the GPU backends. The MoE decoder's objective
//! adds its load-balancing losses (weight `aux_loss_weight`), each layer's checked at every step.
//!
//! The checks and their tolerances are `tinyformer::train::check` (the page's wasm runs the same).

use tinyformer::fastcpu::FastCpuBackend;
use tinyformer::model::backend::CpuBackend;
use tinyformer::model::checkpoint::Checkpoint;
use tinyformer::train::check;
use tinyformer::train::data::Source;
use tinyformer::train::ops::Train;
use tinyformer::train::optim::Optim;
use tinyformer::train::params::Params;
use tinyformer::train::run::{Shape, Trainer};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train");

fn run<B: Train>(be: B, name: &str) {
    let read = |ext: &str| std::fs::read(format!("{DIR}/{name}.{ext}")).unwrap();
    let batches = String::from_utf8(read("batches.json")).unwrap();
    let r = pollster::block_on(check::fixture(be, &read("init.safetensors"), &batches, &read("expect.safetensors"))).unwrap();
    assert!(r.failures.is_empty(), "{name}: {:#?}", r.failures);
    assert_eq!(r.steps, 10, "{name}: steps checked");
    println!("{name}: loss rel {:.1e}, gradient abs {:.1e}, final abs {:.1e}", r.max_loss_rel, r.max_grad_abs, r.max_final_abs);
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

#[test]
fn every_family_matches_pytorch_on_the_gpu() {
    let gpu = std::sync::Arc::new(
        pollster::block_on(tinyformer::gpu::Gpu::new()).expect("GPU initialisation failed (install mesa-vulkan-drivers)"),
    );
    for name in ["gpt_sin", "gpt2", "llama", "moe", "attn_only", "encdec"] {
        run(tinyformer::model::backend::GpuBackend::new(gpu.clone()), name);
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
