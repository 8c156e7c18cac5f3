//! 16-bit checkpoints stay 16-bit on the GPU: the matmul weights and embedding
//! tables of an F16 / BF16 file keep the file's bits from loading to the GPU (packed pairs read by
//! shaders/matmul16.wgsl, whose kernels src/selftest.rs checks against their CPU twins), so the GPU
//! holds them in half the bytes, and the models still compute what they computed when the same
//! values were widened to f32. No GPU is a failure, not a skip.

mod common;
use common::{assert_close, flat, ids};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tinyformer::formats::{self, DirFiles};
use tinyformer::gpu::Gpu;
use tinyformer::model::checkpoint::{Checkpoint, FloatDtype};
use tinyformer::model::memory::{self, Budget, WeightCopies};
use tinyformer::model::run::GenConfig;
use tinyformer::model::state::Plan;
use tinyformer::model::weights::{Census, Weights};
use tinyformer::model::{Backend, CpuBackend, GpuBackend, Model};
use tinyformer::session::{Device, Session};

/// Against transformers (expected.json of the bf16 Llama): the tolerances of tests/hf_models.rs.
const HF_LOGIT_ATOL: f64 = 1e-4;
const HF_LOGIT_RTOL: f64 = 1e-4;
const HF_ATTN_ATOL: f64 = 2e-5;
/// 16-bit kernels vs f32 kernels over the same values (only the order of f32 sums differs): logits
/// |diff| <= 1e-4 + 1e-4 |want|, attention |diff| <= 1e-5.
const SAME_ATOL: f64 = 1e-4;
const SAME_RTOL: f64 = 1e-4;
const SAME_ATTN: f64 = 1e-5;

/// The GPU with 16-bit weights kept 16-bit: this file checks that path, which a CPU-type adapter
/// (llvmpipe) would otherwise widen by default (`Gpu::widens16`).
fn gpu() -> Arc<Gpu> {
    let g = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed (install mesa-vulkan-drivers)"));
    g.set_widen16(false);
    g
}

fn widened(ck: &Checkpoint) -> Checkpoint {
    let mut c = ck.clone();
    c.tensors = ck.tensors.iter().map(|(n, t)| (n.clone(), t.clone().into_f32())).collect();
    c
}

/// The GPU bytes `Weights::load` allocates for `ck`: (all, the 16-bit tensors'), from the device's
/// live-buffer counters; everything is freed again before it returns.
fn weight_bytes(gpu: &Arc<Gpu>, ck: &Checkpoint) -> (u64, u64) {
    let b = GpuBackend::new(gpu.clone());
    let (before, before16) = (gpu.live_buffers().1, gpu.live_bytes16());
    let w = Weights::load(&b, &ck.config, &mut ck.clone()).expect("upload");
    let got = (gpu.live_buffers().1 - before, gpu.live_bytes16() - before16);
    drop(w);
    assert_eq!((gpu.live_buffers().1, gpu.live_bytes16()), (before, before16), "the weights are freed");
    got
}

#[test]
fn bf16_llama_keeps_its_weights_16bit_on_the_gpu_and_matches_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_models/llama_untied_bf16");
    let exp: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let mut seen16 = None;
    let opened = formats::open16(&DirFiles(dir), None, |_, w16| {
        seen16 = Some(w16);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen16, Some(true), "the budget check learns the weights stay 16-bit");
    let ck = opened.checkpoint;
    assert!(ck.weights16(), "the matmul weights and embeddings keep the file's bf16 bits");
    assert_eq!(ck.dtype(), Some(FloatDtype::BF16));
    let cfg = ck.config.clone();
    let census = Census::of(&cfg);
    let gpu = gpu();

    // the GPU bytes of the weights: 16-bit ones as counted by the census, about half of f32's
    let (all16, half16) = weight_bytes(&gpu, &ck);
    let (all32, none) = weight_bytes(&gpu, &widened(&ck));
    assert_eq!(none, 0, "a widened checkpoint has no 16-bit tensors");
    assert_eq!(half16, census.half_bytes, "16-bit bytes = the census's");
    assert_eq!(all32, census.params * 4, "f32: 4 bytes a parameter");
    let ratio = all16 as f64 / all32 as f64;
    println!("weights on the GPU: {all16} bytes 16-bit ({half16} in 16-bit tensors) vs {all32} f32: {ratio:.4}");
    assert!((0.5..0.52).contains(&ratio), "16-bit weights take {ratio} of f32's bytes");
    // and the memory demand (the budget check before allocating) counts them so
    let d = memory::demand_of(&cfg, WeightCopies::None, &Plan::full(&cfg), true);
    let dw = d.items.iter().find(|i| i.what == "weights").unwrap().bytes;
    assert_eq!(dw, all16, "the demand's weights are what the upload allocated");
    assert_eq!(memory::demand(&cfg).total_bytes - d.total_bytes, all32 - all16);

    // the model: logits, attention and greedy ids as transformers computed them
    let mut b = GpuBackend::new(gpu.clone());
    let mut m = Model::from_checkpoint(&b, ck, &Budget::default()).unwrap();
    assert_eq!(gpu.live_bytes16(), half16, "the loaded model holds its weights 16-bit");
    let prompt = ids(&exp["ids"]);
    let out = pollster::block_on(m.forward(&mut b, &prompt, None)).unwrap();
    let dl = assert_close("bf16 llama gpu logits", &out.logits, &flat(&exp["logits"]), HF_LOGIT_ATOL, HF_LOGIT_RTOL);
    let want_maps = exp["attention"].as_array().unwrap();
    assert_eq!(out.attention.len(), want_maps.len());
    let mut da = 0f64;
    for (l, (got, want)) in out.attention.iter().zip(want_maps).enumerate() {
        da = da.max(assert_close(&format!("bf16 llama gpu attention layer {l}"), &got.data, &flat(want), HF_ATTN_ATOL, 0.0));
    }
    let want = ids(&exp["greedy"]);
    for kv_cache in [true, false] {
        let g = GenConfig { max_new_tokens: want.len() - prompt.len(), kv_cache, ..GenConfig::default() };
        assert_eq!(pollster::block_on(m.generate(&mut b, &prompt, None, g)).unwrap(), want, "greedy ids (kv_cache={kv_cache})");
    }
    println!("bf16 llama, 16-bit on the GPU: logits max|diff| {dl:.1e}, attention max|diff| {da:.1e}, greedy ok");
    drop(m);
    assert_eq!(gpu.live_bytes16(), 0);
}

/// Our own F16 / BF16 fixtures (decoder_a's weights rounded, tests/fixtures/models): on the GPU with
/// 16-bit weights vs the same values widened to f32 (GPU f32 kernels, and the f64 CPU reference).
#[test]
fn our_f16_and_bf16_checkpoints_match_the_f32_path() {
    let gpu = gpu();
    for name in ["decoder_a_f16", "decoder_a_bf16"] {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
        let j: Value = serde_json::from_slice(&std::fs::read(root.join(format!("{name}.json"))).unwrap()).unwrap();
        let ck = Checkpoint::from_bytes(&std::fs::read(root.join(format!("{name}.safetensors"))).unwrap()).unwrap();
        assert!(ck.weights16(), "{name}: kept 16-bit");
        let input = ids(&j["inputs"]["ids"]);
        let on_gpu = |ck: Checkpoint| {
            let mut b = GpuBackend::new(gpu.clone());
            let mut m = Model::from_checkpoint(&b, ck, &Budget::default()).unwrap();
            let sixteen = gpu.live_bytes16();
            let (l, a, g) = forward_and_greedy(&mut b, &mut m, &input, &j);
            (l, a, g, sixteen)
        };
        let (l16, a16, g16, bytes16) = on_gpu(ck.clone());
        let (l32, a32, g32, none) = on_gpu(widened(&ck));
        assert!(bytes16 > 0 && none == 0, "{name}: 16-bit tensors {bytes16} / {none}");
        let (lr, ar, gr) = {
            let mut b = CpuBackend;
            let mut m = Model::from_checkpoint(&b, ck.clone(), &Budget::default()).unwrap();
            forward_and_greedy(&mut b, &mut m, &input, &j)
        };
        let w = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let dl = assert_close(&format!("{name} logits 16-bit vs f32 kernels"), &l16, &w(&l32), SAME_ATOL, SAME_RTOL);
        let da = assert_close(&format!("{name} attention 16-bit vs f32 kernels"), &a16, &w(&a32), SAME_ATTN, 0.0);
        let dr = assert_close(&format!("{name} logits 16-bit vs the reference"), &l16, &w(&lr), SAME_ATOL, SAME_RTOL);
        assert_close(&format!("{name} attention 16-bit vs the reference"), &a16, &w(&ar), SAME_ATTN, 0.0);
        assert_eq!((&g16, &g32), (&gr, &gr), "{name}: greedy ids");
        assert_eq!(g16, ids(&j["greedy"]["ids"]), "{name}: greedy ids as PyTorch's");
        println!("{name}: logits vs f32 kernels {dl:.1e}, vs reference {dr:.1e}; attention {da:.1e}; greedy equal");
    }
}

fn forward_and_greedy<B: Backend>(b: &mut B, m: &mut Model<B>, input: &[u32], j: &Value) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let out = pollster::block_on(m.forward(b, input, None)).unwrap();
    let maps: Vec<f32> = out.attention.iter().flat_map(|a| a.data.iter().copied()).collect();
    let prompt = ids(&j["greedy"]["prompt_ids"]);
    let g = GenConfig { max_new_tokens: j["greedy"]["max_new_tokens"].as_u64().unwrap() as usize, kv_cache: true, ..GenConfig::default() };
    let greedy = pollster::block_on(m.generate(b, &prompt, None, g)).unwrap();
    (out.logits, maps, greedy)
}

/// The budget check before allocating counts 2 bytes a value for the weights the GPU keeps 16-bit:
/// a budget that holds decoder_a_bf16 with 16-bit weights but not with f32 ones loads it on the GPU
/// and refuses it on the CPU reference (which widens).
#[test]
fn the_budget_counts_16bit_weights_at_2_bytes_on_the_gpu() {
    let bytes = std::fs::read("tests/fixtures/models/decoder_a_bf16.safetensors").unwrap();
    let cfg = Checkpoint::from_bytes(&bytes).unwrap().config;
    // what a load allocates (the run state of state::Plan::at_load), with 16-bit and with widened weights
    let at_load = Plan::at_load(&cfg);
    let (d16, d32) = (
        memory::demand_of(&cfg, WeightCopies::None, &at_load, true).total_bytes,
        memory::demand_of(&cfg, WeightCopies::None, &at_load, false).total_bytes,
    );
    assert!(d16 < d32);
    let budget = Budget::cli(d16);
    let gpu = gpu();
    let m = Model::load_within(&GpuBackend::new(gpu.clone()), &bytes, &budget).expect("fits with 16-bit weights");
    assert!(gpu.live_bytes16() > 0);
    drop(m);
    let e = Model::load_within(&CpuBackend, &bytes, &budget).err().expect("the CPU widens: over the budget").to_string();
    assert!(e.contains("over the memory budget"), "{e}");
    // a GPU that widens 16-bit weights at load (a CPU-type adapter's default) counts them at 4 bytes:
    // refused at the 16-bit budget, and loaded at the widened one with no 16-bit buffer
    gpu.set_widen16(true);
    let e = Model::load_within(&GpuBackend::new(gpu.clone()), &bytes, &budget).err().expect("widened: over the budget").to_string();
    assert!(e.contains("over the memory budget"), "{e}");
    let m = Model::load_within(&GpuBackend::new(gpu.clone()), &bytes, &Budget::cli(d32)).expect("fits with widened weights");
    assert_eq!(gpu.live_bytes16(), 0, "widened weights are f32 on the GPU");
    drop(m);
    // a session on that widening GPU keeps the weights 16-bit where widened ones are over the budget
    // (Session::load tries again without widening), and widens them where they fit
    let mut s = pollster::block_on(Session::load(&Device::Gpu(gpu.clone()), &bytes, &budget)).expect("16-bit when widened is over");
    assert!(!s.gpu_backend().unwrap().widen16, "kept 16-bit");
    assert!(gpu.live_bytes16() > 0);
    drop(s);
    let mut s = pollster::block_on(Session::load(&Device::Gpu(gpu.clone()), &bytes, &Budget::cli(d32))).expect("widened when it fits");
    assert!(s.gpu_backend().unwrap().widen16, "widened");
    assert_eq!(gpu.live_bytes16(), 0);
    drop(s);
}
