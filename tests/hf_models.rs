//! Foreign models on OUR engine: the Hugging Face directories (GPT-2, Llama tied, Llama untied
//! bf16 in three shards, Qwen2; GPT-NeoX / Pythia with the parallel residual, f16, a padded vocabulary and
//! the Hub's saved buffers, and GPT-NeoX sequential without attention biases) and llama2.c's model.bin that
//! train/hf_fixtures.py and train/hf_neox_fixtures.py made with `transformers`, opened by `formats::open` and run by `Model` on the CPU reference, the fast CPU path and
//! the GPU path. Every row of logits, every attention map and the 8 greedy ids (cached and uncached) must
//! match transformers' (expected.json). No GPU is a failure, not a skip.

mod common;
use common::{assert_close, flat, ids};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tinyformer::fastcpu::FastCpuBackend;
use tinyformer::formats::{self, DirFiles, Files, MemFiles};
use tinyformer::gpu::Gpu;
use tinyformer::model::config::{Activation, Arch, Positions};
use tinyformer::model::inspect::{top_k, Ablation, AblationKind};
use tinyformer::model::memory::{self, Budget};
use tinyformer::model::run::GenConfig;
use tinyformer::model::state::Plan;
use tinyformer::model::weights::{Census, Listing, Role};
use tinyformer::model::{Backend, CpuBackend, GpuBackend, MapKind, Model};

/// transformers computes in f32 (bf16 weights are widened there too); our paths in f64 (reference) and f32.
/// Logits: |got - want| <= 1e-4 + 1e-4 |want| (f32 sums over C = 64 and H = 256 in another order; measured
/// at most 6.5e-6 on every path, the bf16 Llama the largest).
const LOGIT_ATOL: f64 = 1e-4;
const LOGIT_RTOL: f64 = 1e-4;
/// Attention probabilities: |got - want| <= 2e-5 (measured at most 9.2e-6).
const ATTN_ATOL: f64 = 2e-5;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_models").join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir(name).join("expected.json")).unwrap()).unwrap()
}

/// One foreign checkpoint: (label, files, model.bin name, expected.json of).
type Case = (&'static str, Box<dyn Files>, Option<&'static str>, &'static str);

/// The nine foreign checkpoints (the two wide ones, train/hf_split_fixtures.py, have tables that span
/// several bindings under [`SPLIT_LIMIT`]).
fn cases() -> Vec<Case> {
    let bin = {
        let mut m = MemFiles::default();
        m.0.insert("model.bin".into(), std::fs::read(dir("llama_tied").join("model.bin")).unwrap());
        m
    };
    vec![
        ("gpt2", Box::new(DirFiles(dir("gpt2"))), None, "gpt2"),
        ("llama_tied", Box::new(DirFiles(dir("llama_tied"))), None, "llama_tied"),
        ("llama_untied_bf16", Box::new(DirFiles(dir("llama_untied_bf16"))), None, "llama_untied_bf16"),
        ("qwen2", Box::new(DirFiles(dir("qwen2"))), None, "qwen2"),
        ("pythia_parallel", Box::new(DirFiles(dir("pythia_parallel"))), None, "pythia_parallel"),
        ("pythia_sequential", Box::new(DirFiles(dir("pythia_sequential"))), None, "pythia_sequential"),
        ("llama2.c model.bin", Box::new(bin), Some("model.bin"), "llama_tied"),
        ("gpt2_wide", Box::new(DirFiles(dir("gpt2_wide"))), None, "gpt2_wide"),
        ("llama_wide_f16", Box::new(DirFiles(dir("llama_wide_f16"))), None, "llama_wide_f16"),
    ]
}

async fn check_case<B: Backend>(b: &mut B, label: &str, files: &dyn Files, bin: Option<&str>, exp: &Value) {
    let budget = Budget::default();
    let copies = b.weight_copies();
    let opened = formats::open(files, bin, |cfg| memory::demand_for(cfg, copies, &Plan::at_load(cfg)).check(&budget))
        .unwrap_or_else(|e| panic!("{label}: open: {e}"));
    let mut m = Model::from_checkpoint(b, opened.checkpoint, &budget).unwrap_or_else(|e| panic!("{label}: load: {e}"));
    // the memory demand (from the config, the declaration and the run-state plan) is what the load allocated
    let d = memory::demand_for(&m.cfg, memory::WeightCopies::None, &m.state.plan);
    assert_eq!((d.run_state_bytes(), d.total_bytes - d.run_state_bytes()), (m.state.bytes, m.params * 4), "{label}: demand vs allocation");
    let prompt = ids(&exp["ids"]);
    let out = m.forward(b, &prompt, None).await.unwrap_or_else(|e| panic!("{label}: forward: {e}"));
    // the width of the config's vocabulary (pythia_parallel: 400, padded above its tokenizer's 376)
    let vocab = exp["logits"][0].as_array().unwrap().len();
    assert_eq!((out.rows, out.vocab), (prompt.len(), vocab), "{label}: logits of every row");
    let dl = assert_close(&format!("{label} {} logits", b.kind()), &out.logits, &flat(&exp["logits"]), LOGIT_ATOL, LOGIT_RTOL);
    let want_maps = exp["attention"].as_array().unwrap();
    let layers = want_maps.len();
    assert_eq!(out.attention.len(), want_maps.len(), "{label}: one map per layer");
    let mut da = 0f64;
    for (l, (got, want)) in out.attention.iter().zip(want_maps).enumerate() {
        assert_eq!((got.kind, got.layer, got.heads, got.rows, got.cols), (MapKind::Decoder, l, 4, prompt.len(), prompt.len()), "{label}");
        da = da.max(assert_close(&format!("{label} {} attention layer {l}", b.kind()), &got.data, &flat(want), ATTN_ATOL, 0.0));
    }
    // the inspection runs on them too: the last block's logit lens (final norm + the head, tied or not) is the
    // model's own output
    let r = m.inspect(b, &prompt, None, None).await.unwrap_or_else(|e| panic!("{label}: inspect: {e}"));
    assert_eq!((r.layers, r.heads, r.logit_lens.len()), (layers, 4, layers), "{label}");
    for p in 0..out.rows {
        let (top, _) = top_k(&out.logits[p * out.vocab..(p + 1) * out.vocab], 5);
        assert_eq!(r.logit_lens[layers - 1].top_ids[p], top, "{label} {}: logit lens at position {p}", b.kind());
    }
    // GPT-NeoX (train/hf_neox_fixtures.py's `look_inside`, by transformers' hooks): the lens after each attention
    // half (the parallel block's Mid hook: its input plus attention, before the FFN half), and two heads zeroed
    // before W_o; the ablation stays on in generation, cached and uncached alike
    if let Some(lens_mid) = exp.get("lens_mid_top1") {
        for (l, want) in lens_mid.as_array().unwrap().iter().enumerate() {
            let got: Vec<u32> = r.logit_lens_mid[l].top_ids.iter().map(|t| t[0]).collect();
            assert_eq!(got, ids(want), "{label} {}: lens after layer {l}'s attention half", b.kind());
        }
        let heads = exp["ablate"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize));
        let ab = Ablation::heads(heads.collect(), AblationKind::Zero);
        let r = m.inspect(b, &prompt, None, Some(&ab)).await.unwrap_or_else(|e| panic!("{label}: inspect with an ablation: {e}"));
        let got = r.ablation.unwrap().logits_last;
        assert_close(&format!("{label} {} ablated last row", b.kind()), &got, &flat(&exp["ablated_last"]), LOGIT_ATOL, LOGIT_RTOL);
        m.set_ablation(b, &ab, None).unwrap();
        let mut outs = vec![];
        for kv_cache in [true, false] {
            let cfg = GenConfig { max_new_tokens: 4, kv_cache, gpu_sampling: false, ..GenConfig::default() };
            outs.push(m.generate(b, &prompt, None, cfg).await.unwrap());
        }
        m.clear_ablation(b);
        assert_eq!(outs[0], outs[1], "{label} {}: cached vs uncached with heads ablated", b.kind());
        assert_eq!(outs[0][prompt.len()], top_k(&got, 1).0[0], "{label} {}: the ablated model's first token", b.kind());
    }
    // greedy: the prompt and 8 new ids, exactly, with and without the KV cache
    let want = ids(&exp["greedy"]);
    for kv_cache in [true, false] {
        let cfg = GenConfig { max_new_tokens: want.len() - prompt.len(), kv_cache, ..GenConfig::default() };
        let got = m.generate(b, &prompt, None, cfg).await.unwrap_or_else(|e| panic!("{label}: generate: {e}"));
        assert_eq!(got, want, "{label} {}: greedy ids (kv_cache={kv_cache}) differ from transformers'", b.kind());
    }
    // tokens chained on the GPU (model::chain; the CPU paths ignore K): the same ids, and a stop id
    // met inside a batch ends the generation there, as with K = 1
    for k in [3, 8] {
        let cfg = GenConfig { max_new_tokens: want.len() - prompt.len(), tokens_per_submit: k, ..GenConfig::default() };
        let got = m.generate(b, &prompt, None, cfg).await.unwrap_or_else(|e| panic!("{label}: generate K={k}: {e}"));
        assert_eq!(got, want, "{label} {}: greedy ids with {k} tokens per submission", b.kind());
        let stop = want[prompt.len() + 4];
        let first = want[prompt.len()..].iter().position(|&i| i == stop).unwrap() + prompt.len();
        let cfg =
            GenConfig { max_new_tokens: want.len() - prompt.len(), tokens_per_submit: k, stop_ids: vec![stop], ..GenConfig::default() };
        let got = m.generate(b, &prompt, None, cfg).await.unwrap_or_else(|e| panic!("{label}: generate K={k} with a stop id: {e}"));
        assert_eq!(got, want[..=first], "{label} {}: K={k} stops at the first stop id", b.kind());
    }
    let path = std::any::type_name::<B>().rsplit("::").next().unwrap_or("?");
    println!("{label:<20} {path:<15}: logits max|diff| {dl:.1e}, attention max|diff| {da:.1e}, lens and greedy ok");
}

fn run_all<B: Backend>(b: &mut B) {
    for (label, files, bin, exp) in cases() {
        pollster::block_on(check_case(b, label, files.as_ref(), bin, &expected(exp)));
    }
}

/// The tiny fixtures' pre-activations are too small for the logits to tell GELU's erf form from GPT-2's
/// tanh form, so the reference of the tanh form (the twin of the fast CPU and WGSL kernels, tests/fastcpu_ops.rs
/// and src/selftest.rs) is checked here against PyTorch's `gelu(x, approximate="tanh")` in f64, within 1e-7 (f32
/// rounding); the erf form differs from these by up to 4e-4.
#[test]
fn gelu_tanh_reference_is_pytorchs_tanh_approximation() {
    use tinyformer::cpu::act::{gelu_scalar, gelu_tanh_scalar};
    let torch = [
        (-3.0, -0.0036373920817729943),
        (-1.0, -0.15880800939172324),
        (-0.5, -0.15428599017485606),
        (0.1, 0.053982751045435165),
        (1.0, 0.8411919906082768),
        (2.5, 2.484915733910001),
        (5.0, 4.999999770820381),
    ];
    for (x, want) in torch {
        let got = gelu_tanh_scalar(x as f32) as f64;
        assert!((got - want).abs() <= 1e-7 + 1e-7 * want.abs(), "gelu_tanh({x}) = {got}, PyTorch {want}");
    }
    assert!((gelu_scalar(-3.0) as f64 - -0.0036373920817729943).abs() > 4e-4, "the erf form is another function");
}

#[test]
fn reference_cpu_runs_foreign_models_like_transformers() {
    run_all(&mut CpuBackend);
}

#[test]
fn fast_cpu_runs_foreign_models_like_transformers() {
    run_all(&mut FastCpuBackend::default());
}

#[test]
fn gpu_runs_foreign_models_like_transformers() {
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed (install mesa-vulkan-drivers)"));
    run_all(&mut GpuBackend::new(gpu));
}

/// A maxStorageBufferBindingSize requested from the device (wgpu validates every binding against it):
/// the wide fixtures' tables (1000 x 64) are 256,000 bytes f32 (ranges of 273 rows: 273 x 3 and 181) or
/// 128,000 kept 16-bit, and their logits are bound by rows too: a context of 24 x 1000 f32 is 96,000 bytes
/// (rows of 4,000 bytes, ranges of 17 rows or fewer to keep the offset alignment), as is the logit lens's
/// block (2 layers x T rows); their largest other buffer is gpt2_wide's MLP weight, 65,536 bytes.
const SPLIT_LIMIT: u64 = 70_000;

fn load_gpu(b: &GpuBackend, name: &str) -> Model<GpuBackend> {
    let opened = formats::open(&DirFiles(dir(name)), None, |_| Ok(())).unwrap();
    Model::from_checkpoint(b, opened.checkpoint, &Budget::default()).unwrap()
}

#[test]
fn gpu_splits_tables_over_the_binding_limit_like_transformers() {
    let split = Arc::new(pollster::block_on(Gpu::with_binding_limit(Some(SPLIT_LIMIT))).expect("GPU initialisation failed"));
    assert_eq!(split.limits.max_storage_buffer_binding_size, SPLIT_LIMIT, "the device itself has the lowered limit");
    let whole = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed"));
    let align = split.limits.min_storage_buffer_offset_alignment as u64;
    for widen16 in [true, false] {
        // the f16 Llama's tables widened to f32 at load (llvmpipe's policy) and kept 16-bit
        split.set_widen16(widen16);
        whole.set_widen16(widen16);
        let mut b = GpuBackend::new(split.clone());
        let mut w = GpuBackend::new(whole.clone());
        for name in ["gpt2_wide", "llama_wide_f16"] {
            let label = format!("{name} (widen16 {widen16})");
            // every value against transformers: logits, maps, the logit lens, greedy ids cached, uncached, chained
            pollster::block_on(check_case(&mut b, &label, &DirFiles(dir(name)), None, &expected(name)));
            let mut m = load_gpu(&b, name);
            // the tables are really split: whole rows, ranges aligned, a last partial range
            let (head, _) = m.weights.head();
            for (what, t) in [("embedding", &m.weights.embed), ("head", head)] {
                let chunks = split.chunks(t, what).unwrap().unwrap_or_else(|| panic!("{label}: the {what} is not split"));
                let row = t.row_bytes();
                let rows: Vec<usize> = chunks.iter().map(|c| c.rows).collect();
                // as many whole rows as fit (in steps that keep the offsets aligned), the last range partial
                let step = (align / gcd(row, align)) as usize;
                let per = (SPLIT_LIMIT / row) as usize / step * step;
                let mut want = vec![per; 1000 / per];
                if 1000 % per > 0 {
                    want.push(1000 % per);
                }
                assert_eq!(rows, want, "{label}: {what}");
                assert_eq!(rows.len(), if row == 256 { 4 } else { 2 }, "{label}: {what}");
                assert!(
                    chunks.iter().all(|c| c.size <= SPLIT_LIMIT && c.offset % align == 0 && c.offset == c.row0 as u64 * row),
                    "{label}"
                );
                assert!(whole.chunks(t, what).unwrap().is_none(), "under the device's own limit the same table is bound whole");
            }
            // the same logits as the same kernels over the whole table (each output's sum is the same),
            // and as the CPU reference within the tolerance above
            let mut mw = load_gpu(&w, name);
            let exp = expected(name);
            let prompt = ids(&exp["ids"]);
            let got = pollster::block_on(m.forward(&mut b, &prompt, None)).unwrap();
            let want = pollster::block_on(mw.forward(&mut w, &prompt, None)).unwrap();
            assert_eq!(got.logits, want.logits, "{label}: split vs whole table on the GPU");
            let opened = formats::open(&DirFiles(dir(name)), None, |_| Ok(())).unwrap();
            let mut mc = Model::from_checkpoint(&CpuBackend, opened.checkpoint, &Budget::default()).unwrap();
            let cpu = pollster::block_on(mc.forward(&mut CpuBackend, &prompt, None)).unwrap();
            let d = assert_close(
                &format!("{label} split vs CPU reference"),
                &got.logits,
                &cpu.logits.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                LOGIT_ATOL,
                LOGIT_RTOL,
            );
            println!("{label}: split GPU == whole GPU, vs CPU reference max|diff| {d:.1e}");
            // a prompt of the whole context: its logits (24 x 1000 f32, over the limit) are written range by range
            // and read whole; the lens block (48 rows) likewise; a generation's sampler binds its row's range
            let long: Vec<u32> = (0..24u32).map(|i| (i * 37 + 5) % 1000).collect();
            let got = pollster::block_on(m.forward(&mut b, &long, None)).unwrap();
            let logits = split.chunks(&m.state.logits, "logits").unwrap().unwrap_or_else(|| panic!("{label}: the logits are not split"));
            assert!(logits.len() >= 2 && logits.iter().all(|c| c.size <= SPLIT_LIMIT && c.offset % align == 0), "{label}: {logits:?}");
            let want = pollster::block_on(mw.forward(&mut w, &long, None)).unwrap();
            assert_eq!(got.logits, want.logits, "{label}: a full context, split vs whole on the GPU");
            let cpu = pollster::block_on(mc.forward(&mut CpuBackend, &long, None)).unwrap();
            let d = assert_close(
                &format!("{label} full context split vs CPU reference"),
                &got.logits,
                &cpu.logits.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                LOGIT_ATOL,
                LOGIT_RTOL,
            );
            let r = pollster::block_on(m.inspect(&mut b, &long, None, None)).unwrap();
            let rw = pollster::block_on(mw.inspect(&mut w, &long, None, None)).unwrap();
            let rc = pollster::block_on(mc.inspect(&mut CpuBackend, &long, None, None)).unwrap();
            for (l, lens) in r.logit_lens.iter().chain(&r.logit_lens_mid).enumerate() {
                let other = rw.logit_lens.iter().chain(&rw.logit_lens_mid).nth(l).unwrap();
                assert_eq!((&lens.top_ids, &lens.top_probs), (&other.top_ids, &other.top_probs), "{label}: lens {l}, split vs whole");
                let cpu = rc.logit_lens.iter().chain(&rc.logit_lens_mid).nth(l).unwrap();
                let top1 = |x: &Vec<Vec<u32>>| x.iter().map(|t| t[0]).collect::<Vec<_>>();
                assert_eq!(top1(&lens.top_ids), top1(&cpu.top_ids), "{label}: lens {l}, split GPU vs CPU reference");
                // the sorted top-5 probabilities, within 1e-5: softmax of logits that agree within LOGIT_ATOL
                let p = |x: &Vec<Vec<f32>>| x.iter().flatten().copied().collect::<Vec<f32>>();
                let want: Vec<f64> = p(&cpu.top_probs).iter().map(|&v| v as f64).collect();
                assert_close(&format!("{label} lens {l} probabilities"), &p(&lens.top_probs), &want, 1e-5, 0.0);
            }
            for p in 0..long.len() {
                let (top, _) = top_k(&got.logits[p * 1000..(p + 1) * 1000], 5);
                assert_eq!(r.logit_lens[1].top_ids[p], top, "{label}: the last block's lens is the model's output at {p}");
            }
            // greedy from a 20-token prompt to the end of the context, cached and chained: the whole device's ids
            for k in [1, 3] {
                let cfg = GenConfig { max_new_tokens: 4, tokens_per_submit: k, ..GenConfig::default() };
                let ids = pollster::block_on(m.generate(&mut b, &long[..20], None, cfg.clone())).unwrap();
                let want = pollster::block_on(mw.generate(&mut w, &long[..20], None, cfg)).unwrap();
                assert_eq!((ids.len(), &ids), (24, &want), "{label}: greedy from a long prompt, K={k}");
            }
            println!("{label}: a full context over the limit: split GPU == whole GPU, vs CPU reference max|diff| {d:.1e}");
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[test]
fn row_ranges_hold_whole_rows_within_the_limit_at_aligned_offsets() {
    use tinyformer::gpu::context::split_rows;
    let rows = |v: Option<Vec<tinyformer::gpu::context::RowChunk>>| {
        v.map(|c| c.iter().map(|c| (c.row0, c.rows, c.offset, c.size)).collect::<Vec<_>>())
    };
    // GPT-2 small's f32 wte under llvmpipe's 128 MiB: 43,690 rows of 3072 bytes, then 6,567
    let c = split_rows(50257, 3072, 128 << 20, 16).unwrap();
    assert_eq!(c.iter().map(|c| c.rows).collect::<Vec<_>>(), [43690, 6567]);
    assert_eq!((c[1].offset, c[1].size), (43690 * 3072, 6567 * 3072));
    // rows of 12 bytes at a 32-byte alignment: runs of a multiple of 8 rows (96 bytes)
    assert_eq!(rows(split_rows(20, 12, 100, 32)), Some(vec![(0, 8, 0, 96), (8, 8, 96, 96), (16, 4, 192, 48)]));
    // one row over the limit, or the fewest aligned rows over it: no split
    assert_eq!(rows(split_rows(20, 12, 11, 4)), None);
    assert_eq!(rows(split_rows(20, 12, 90, 32)), None);
    assert_eq!(rows(split_rows(5, 12, 12, 4)), Some((0..5).map(|r| (r, 1, r as u64 * 12, 12)).collect()));
}

#[test]
fn a_table_whose_one_row_is_over_the_binding_limit_is_refused_in_one_line() {
    let gpu = Arc::new(pollster::block_on(Gpu::with_binding_limit(Some(200))).expect("GPU initialisation failed"));
    // the budget, before any tensor is read: gpt2_wide's rows are 64 f32 = 256 bytes
    let budget = Budget::default().with_limits(gpu.buffer_limits());
    let e = formats::open(&DirFiles(dir("gpt2_wide")), None, |cfg| {
        memory::demand_for(cfg, Default::default(), &Plan::at_load(cfg)).check(&budget)
    })
    .err()
    .expect("refused");
    let msg = e.to_string();
    println!("{msg}");
    assert!(
        msg.contains(
            "the weight token_embedding.weight has rows of 256 bytes, over this GPU's maxStorageBufferBindingSize of 200 B (200 bytes)"
        ),
        "{msg}"
    );
    assert!(!msg.contains('\n') && msg.len() < 400, "{msg}");
    // and the device itself, for a table uploaded past the budget
    let e = gpu.upload_weight(&[3, 100], &[0.5; 300], "a wide table").err().expect("refused").to_string();
    assert!(
        e.contains("a wide table has rows of 400 bytes") && e.contains("maxStorageBufferBindingSize of 200 bytes") && !e.contains('\n'),
        "{e}"
    );
    // a weight bound whole over the limit is refused naming it (gpt2_wide's MLP weights: 65,536 bytes; a context
    // of 8 keeps the logits at 32,000 bytes)
    let budget = Budget::default()
        .with_limits(tinyformer::model::memory::DeviceLimits { max_buffer_size: 1 << 30, max_storage_buffer_binding_size: 60_000 });
    let plan = |cfg: &tinyformer::model::config::ModelConfig| Plan::new(cfg, 8, tinyformer::model::state::MapLayers::None, 8);
    let msg =
        formats::open(&DirFiles(dir("gpt2_wide")), None, |cfg| memory::demand_for(cfg, Default::default(), &plan(cfg)).check(&budget))
            .err()
            .expect("refused")
            .to_string();
    assert!(msg.contains("one weights buffer of 64.0 KiB (65536 bytes; decoder_layers.0.feed_forward.linear1.weight [256, 64]), over this GPU's maxStorageBufferBindingSize"), "{msg}");
    // the logits are bound by rows too: a row over the limit (1000 f32) is refused in one line naming them
    let budget = Budget::default()
        .with_limits(tinyformer::model::memory::DeviceLimits { max_buffer_size: 1 << 30, max_storage_buffer_binding_size: 3_000 });
    let msg =
        formats::open(&DirFiles(dir("gpt2_wide")), None, |cfg| memory::demand_for(cfg, Default::default(), &plan(cfg)).check(&budget))
            .err()
            .expect("refused")
            .to_string();
    assert!(
        msg.contains("the logits have rows of 4000 bytes, over this GPU's maxStorageBufferBindingSize of 2.9 KiB (3000 bytes)"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    // while the split tables themselves fit any limit that holds a row and the other buffers
    let budget = Budget::default()
        .with_limits(tinyformer::model::memory::DeviceLimits { max_buffer_size: 1 << 30, max_storage_buffer_binding_size: SPLIT_LIMIT });
    assert!(formats::open(&DirFiles(dir("gpt2_wide")), None, |cfg| memory::demand_for(cfg, Default::default(), &Plan::at_load(cfg))
        .check(&budget))
    .is_ok());
}

#[test]
fn open_gives_our_config_and_exactly_the_declared_tensors() {
    for (label, files, bin, _) in cases() {
        let o = formats::open(files.as_ref(), bin, |_| Ok(())).unwrap();
        let c = &o.checkpoint.config;
        assert_eq!(c.max_seq_len, o.plan.dims.context, "{label}: the model's context");
        let mut declared: Vec<(String, Vec<usize>)> = c.expected_tensors();
        let mut held: Vec<(String, Vec<usize>)> = o.checkpoint.tensors.iter().map(|(n, t)| (n.clone(), t.shape.clone())).collect();
        declared.sort();
        held.sort();
        assert_eq!(held, declared, "{label}");
        assert!(o.checkpoint.tokenizer.is_none());
        match label {
            "gpt2" | "gpt2_wide" => {
                assert_eq!(
                    (c.arch, c.positions, c.activation, c.tie_embeddings),
                    (Arch::Decoder, Positions::Learned, Activation::GeluTanh, true)
                );
                assert!(
                    o.checkpoint.tensors.contains_key("position_embedding.weight") && !o.checkpoint.tensors.contains_key("lm_head.weight")
                );
                assert_eq!(c.embed_scale(), 1.0);
            }
            "qwen2" => assert!(c.qkv_bias && !c.tie_embeddings && o.checkpoint.tensors.contains_key("layers.1.attention.wk.bias")),
            // GPT-NeoX: our decoder with RoPE on 4 (0.25) or 8 (0.5) of each head's 16 dims, the erf GELU, the untied
            // embed_out as lm_head; the parallel one with attention biases, the sequential one without
            "pythia_parallel" | "pythia_sequential" => {
                let parallel = label == "pythia_parallel";
                assert_eq!(
                    (c.arch, c.positions, c.activation, c.tie_embeddings, c.parallel_residual, c.qkv_bias),
                    (Arch::Decoder, Positions::Rope, Activation::GeluErf, false, parallel, parallel),
                    "{label}"
                );
                assert_eq!((c.rope_dims(), c.rope_theta), if parallel { (4, 10000.0) } else { (8, 1000.0) }, "{label}");
                assert_eq!((c.vocab_size, c.d_ff), (if parallel { 400 } else { 384 }, 256), "{label}");
                assert!(o.checkpoint.tensors.contains_key("lm_head.weight"), "{label}");
                assert_eq!(o.checkpoint.tensors.contains_key("decoder_layers.0.self_attn.w_o.bias"), parallel, "{label}");
                assert_eq!(o.plan.declared, "GPTNeoXForCausalLM");
            }
            "llama_untied_bf16" | "llama_wide_f16" => {
                assert!(!c.qkv_bias && !c.tie_embeddings && o.checkpoint.tensors.contains_key("output.weight"))
            }
            _ => {
                assert_eq!((c.arch, c.d_ff, c.multiple_of, c.qkv_bias, c.tie_embeddings), (Arch::Llama, 128, 0, false, true), "{label}");
                assert!(!o.checkpoint.tensors.contains_key("output.weight"));
            }
        }
        // a tied embedding is the head's matmul weight too: counted for the fast CPU path's packed copy
        let census = Census::of(c);
        let matmul: u64 = Listing::of(c)
            .iter()
            .filter(|d| matches!(d.role, Role::Matmul | Role::Head))
            .map(|d| d.shape.iter().product::<usize>() as u64)
            .sum();
        let tied = if c.tie_embeddings { (c.vocab_size * c.d_model) as u64 } else { 0 };
        assert_eq!(census.matmul_params, matmul + tied, "{label}");
        // the declaration counts what is held: the memory demand is derived from it
        let held_params: u64 = o.checkpoint.tensors.values().map(|t| t.len() as u64).sum();
        assert_eq!(c.param_count(), held_params, "{label}");
    }
}

#[test]
fn the_budget_is_checked_before_any_tensor_is_read() {
    // a directory whose weights file is cut short: the plan reads only headers, so a budget refusal
    // comes before any read of tensor data could fail
    let files = DirFiles(dir("gpt2"));
    let e = match formats::open(&files, None, |cfg| memory::demand(cfg).check(&Budget::cli(1000))) {
        Ok(_) => panic!("a 1000-byte budget must refuse GPT-2"),
        Err(e) => e.to_string(),
    };
    assert!(e.starts_with("the model needs ") && e.contains("over the memory budget of 1000 B"), "{e}");
    assert!(!e.contains('\n'));
    let mut called = 0;
    let o = formats::open(&files, None, |_| {
        called += 1;
        Ok(())
    });
    assert!(o.is_ok() && called == 1);
}

#[test]
fn damaged_foreign_weights_load_and_their_logits_are_a_one_line_error() {
    // a NaN in GPT-2's wte: the model opens, and logits computed from it are an error naming the tensor
    let mut m = MemFiles::default();
    for e in std::fs::read_dir(dir("gpt2")).unwrap() {
        let e = e.unwrap();
        m.0.insert(e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap());
    }
    let plan = formats::plan(&m, None).unwrap();
    let wte = plan.tensors.iter().find(|t| t.source.foreign == "wte.weight").unwrap().source.offset as usize;
    m.0.get_mut("model.safetensors").unwrap()[wte..wte + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let opened = formats::open(&m, None, |_| Ok(())).unwrap();
    let b = &mut CpuBackend;
    let mut model = Model::from_checkpoint(b, opened.checkpoint, &Budget::default()).unwrap();
    // generation reads the last row (position 2, whose attention reads token 0's NaN embedding)
    let e = pollster::block_on(model.generate(b, &[1, 0, 2], None, GenConfig { max_new_tokens: 1, ..GenConfig::default() }))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "the model's logits at position 2 are not finite (NaN or Inf): its weights hold NaN or infinite values \
         (tensor \"token_embedding.weight\" holds 1 NaN and 0 Inf of 24576 values)"
    );
}

#[test]
fn the_new_config_fields_are_checked_per_architecture() {
    use tinyformer::model::config::ModelConfig;
    let base = r#""vocab_size":11,"d_model":8,"num_layers":1,"num_heads":2,"max_seq_len":16"#;
    let err = |extra: &str, arch: &str| {
        let j = format!(r#"{{"arch":"{arch}",{base},{extra}}}"#);
        ModelConfig::from_json(&j).err().unwrap_or_else(|| panic!("{j} must be refused")).to_string()
    };
    assert_eq!(
        err(r#""d_ff":16,"positions":"alibi""#, "decoder"),
        "config field \"positions\": \"alibi\" is not supported for arch \"decoder\": expected \"sinusoidal\" or \"learned\" or \"rope\""
    );
    // GPT-NeoX's fields: rotary dims even and within the head, only with RoPE; the parallel residual only for a
    // decoder with a dense FFN; the erf GELU not for the MoE's experts
    assert!(err(r#""d_ff":16,"positions":"rope","rotary_dims":3"#, "decoder").contains("\"rotary_dims\": must be an even number"));
    assert!(err(r#""d_ff":16,"positions":"rope","rotary_dims":6"#, "decoder").contains("no larger than the head size 4"));
    assert!(err(r#""d_ff":16,"rotary_dims":2"#, "decoder").contains("only a model with RoPE positions"));
    assert!(err(r#""d_ff":16,"parallel_residual":true,"attention_only":true"#, "decoder").contains("\"parallel_residual\""));
    assert!(err(r#""multiple_of":4,"parallel_residual":true"#, "llama").contains("only arch \"decoder\" has a parallel residual"));
    assert!(err(r#""d_ff":16,"activation":"gelu_erf","moe":{"num_experts":2,"top_k":1,"expert_dim":4,"capacity_factor":1}"#, "decoder")
        .contains("expected \"relu\""));
    let neox = format!(
        r#"{{"arch":"decoder",{base},"d_ff":16,"positions":"rope","rotary_dims":2,"activation":"gelu_erf","qkv_bias":false,"parallel_residual":true}}"#
    );
    let c = ModelConfig::from_json(&neox).unwrap();
    assert_eq!((c.rope_dims(), c.activation, c.qkv_bias, c.parallel_residual, c.embed_scale()), (2, Activation::GeluErf, false, true, 1.0));
    // it writes and reads back the same; the whole head is written as no rotary_dims at all
    assert_eq!(ModelConfig::from_json(&serde_json::to_string(&c).unwrap()).unwrap(), c);
    let full = ModelConfig::from_json(&neox.replace(r#""rotary_dims":2"#, r#""rotary_dims":4"#)).unwrap();
    assert!(full.rotary_dims == 0 && full.rope_dims() == 4 && !serde_json::to_string(&full).unwrap().contains("rotary_dims"));
    assert!(err(r#""multiple_of":4,"positions":"learned""#, "llama").contains("expected \"rope\""));
    assert!(err(r#""d_ff":16,"activation":"gelu_tanh","moe":{"num_experts":2,"top_k":1,"expert_dim":4,"capacity_factor":1}"#, "decoder")
        .contains("expected \"relu\""));
    assert!(
        err(r#""src_vocab_size":11,"tgt_vocab_size":11,"d_ff":16,"qkv_bias":false"#, "encoder_decoder").contains("always has q/k/v biases")
    );
    assert!(err(r#""d_ff":16,"tie_embeddings":"yes""#, "decoder").contains("must be true or false"));
    assert!(err(r#""src_vocab_size":11,"tgt_vocab_size":11,"d_ff":16,"tie_embeddings":true"#, "encoder_decoder").contains("tying"));
    assert!(err(r#""hidden_dim":0"#, "llama").contains("hidden_dim"));
    assert!(err(r#""d_ff":16,"norm_eps":2"#, "decoder").contains("norm_eps"));
    // an explicit hidden size replaces multiple_of; the seed's configs read as before
    let c = ModelConfig::from_json(&format!(r#"{{"arch":"llama",{base},"hidden_dim":20,"qkv_bias":true,"tie_embeddings":true}}"#)).unwrap();
    assert_eq!((c.d_ff, c.llama_hidden_dim(), c.multiple_of, c.qkv_bias, c.tie_embeddings), (20, 20, 0, true, true));
    let c = ModelConfig::from_json(&format!(r#"{{"arch":"llama",{base},"multiple_of":32}}"#)).unwrap();
    assert_eq!((c.d_ff, c.positions, c.activation, c.qkv_bias, c.tie_embeddings), (32, Positions::Rope, Activation::Swiglu, false, false));
    let c = ModelConfig::from_json(&format!(r#"{{"arch":"decoder",{base},"d_ff":16}}"#)).unwrap();
    assert_eq!(
        (c.positions, c.activation, c.qkv_bias, c.tie_embeddings, c.norm_eps),
        (Positions::Sinusoidal, Activation::Relu, true, false, 1e-5)
    );
    assert_eq!(c.embed_scale(), 8f32.sqrt());
}

/// At full scale the declaration counts what transformers counts (`sum(p.numel() for p in model.parameters())`
/// on GPT2Config(), SmolLM2-135M's and stories15M's configs, built on the meta device), so the memory budget
/// is checked against the real weights of the models users will open.
#[test]
fn the_declaration_counts_real_models_parameters_as_transformers_does() {
    use tinyformer::model::config::ModelConfig;
    let gpt2 = r#"{"arch":"decoder","vocab_size":50257,"d_model":768,"num_layers":12,"num_heads":12,"max_seq_len":1024,"d_ff":3072,
        "positions":"learned","activation":"gelu_tanh","tie_embeddings":true}"#;
    let smollm2 = r#"{"arch":"llama","vocab_size":49152,"d_model":576,"num_layers":30,"num_heads":9,"num_kv_heads":3,"max_seq_len":8192,
        "hidden_dim":1536,"rope_theta":100000,"norm_eps":1e-5,"tie_embeddings":true}"#;
    let stories15m = r#"{"arch":"llama","vocab_size":32000,"d_model":288,"num_layers":6,"num_heads":6,"max_seq_len":256,
        "hidden_dim":768,"norm_eps":1e-5,"tie_embeddings":true}"#;
    for (name, json, transformers) in
        [("gpt2", gpt2, 124_439_808u64), ("SmolLM2-135M", smollm2, 134_515_008), ("stories15M", stories15m, 15_191_712)]
    {
        let c = ModelConfig::from_json(json).unwrap();
        assert_eq!(c.param_count(), transformers, "{name}");
        let d = memory::demand(&c);
        assert_eq!(d.items[0].bytes, 4 * transformers, "{name}: the weights in the demand are f32");
        println!("{name}: {} parameters; demand {} in all", c.param_count(), memory::human_bytes(d.total_bytes));
    }
}

/// Pythia-70m's config.json as the Hub has it (transformers 4.24's spelling, vocabulary 50,304 padded above the
/// tokenizer's 50,277) reads as our decoder with 16 of each head's 64 dims rotating, and the declaration counts
/// what transformers counts on the meta device (`sum(p.numel() for p in GPTNeoXForCausalLM(config).parameters())`).
#[test]
fn pythia_70m_config_reads_as_transformers_reads_it() {
    let json = br#"{"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": 512, "initializer_range": 0.02, "intermediate_size": 2048, "layer_norm_eps": 1e-05,
        "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 8, "num_hidden_layers": 6,
        "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": false, "torch_dtype": "float16",
        "transformers_version": "4.24.0", "use_cache": true, "use_parallel_residual": true, "vocab_size": 50304}"#;
    let raw = formats::hf::read_config(json).unwrap();
    let (family, declared) = formats::hf::detect(&raw).unwrap();
    let dims = formats::hf::dims(&raw, family).unwrap();
    let plan = formats::Plan { format: formats::Format::HfDirectory, family, declared, dims, tensors: vec![], dtype: formats::DType::F16 };
    let c = formats::config_of(&plan).unwrap();
    assert_eq!(
        (c.arch, c.vocab_size, c.rope_dims(), c.head_dim(), c.activation, c.parallel_residual, c.qkv_bias, c.tie_embeddings),
        (Arch::Decoder, 50304, 16, 64, Activation::GeluErf, true, true, false)
    );
    assert_eq!(c.param_count(), 70_426_624);
}

/// The Hub's GPT-NeoX checkpoints keep buffers beside the weights, one of them BOOL (the causal mask
/// `attention.bias`): pythia_parallel holds them and opens (above); a weight the plan needs stored as BOOL
/// is still refused, in one line naming it.
#[test]
fn a_bool_buffer_is_skipped_and_a_bool_weight_refused() {
    let mut m = MemFiles::default();
    for e in std::fs::read_dir(dir("pythia_parallel")).unwrap() {
        let e = e.unwrap();
        m.0.insert(e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap());
    }
    let st = m.0["model.safetensors"].clone();
    let plan = formats::plan(&m, None).unwrap();
    assert!(plan.tensors.iter().all(|t| !t.source.foreign.contains("attention.bias") && !t.source.foreign.contains("inv_freq")));
    // final_layer_norm.bias, F16 (64,) = 128 bytes, relabelled BOOL (2, 64): the same bytes, a dtype we do not read
    let bytes = common::with_header(&st, |header| {
        assert_eq!(header["gpt_neox.layers.1.attention.bias"]["dtype"], "BOOL", "the fixture holds the Hub's BOOL mask");
        assert_eq!(header["gpt_neox.layers.1.attention.rotary_emb.inv_freq"]["shape"], serde_json::json!([2]));
        let t = &mut header["gpt_neox.final_layer_norm.bias"];
        assert_eq!(t["dtype"], "F16");
        t["dtype"] = "BOOL".into();
        t["shape"] = serde_json::json!([2, 64]);
    });
    m.0.insert("model.safetensors".into(), bytes);
    let e = formats::plan(&m, None).unwrap_err().to_string();
    assert_eq!(e, "model.safetensors: tensor final_layer_norm.bias is BOOL; only F32, F16 and BF16 weights are supported");
}

/// The fast CPU backend keeps a 16-bit file's matmul weights 16-bit (f16 / bf16 panels, widened inside the
/// GEMV / GEMM) and every matmul weight only once, as panels (GPT-2's tied embedding gathered from the head's
/// panels). Widening is exact and the kernels add the same products in the same order, so the logits of every
/// row and the greedy ids are the same bits as from the same values widened to f32 first (no tolerance). The
/// f32 fixtures are rounded to f16 and bf16 here (a tied GPT-2 and Llama), the 16-bit fixtures taken as they are.
#[test]
fn fast_cpu_16bit_panels_give_the_bits_of_the_widened_weights() {
    use tinyformer::model::checkpoint::FloatDtype;
    let cases = [
        ("gpt2", Some(FloatDtype::F16)),
        ("gpt2", Some(FloatDtype::BF16)),
        ("llama_tied", Some(FloatDtype::BF16)),
        ("llama_untied_bf16", None),
        ("llama_wide_f16", None),
    ];
    for (name, round) in cases {
        let label = format!("{name} {round:?}");
        let mut ck16 = formats::open(&DirFiles(dir(name)), None, |_| Ok(())).unwrap().checkpoint;
        if let Some(dt) = round {
            for d in Listing::of(&ck16.config).into_iter().filter(|d| d.role.keeps_16bit()) {
                let t = ck16.tensors.get_mut(&d.name).unwrap();
                t.bits = match dt {
                    FloatDtype::F16 => t.data.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect(),
                    _ => t.data.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect(),
                };
                (t.data, t.dtype) = (vec![], dt);
            }
        }
        assert!(ck16.weights16(), "{label}: a 16-bit checkpoint");
        let mut wide = ck16.clone();
        for t in wide.tensors.values_mut() {
            *t = t.clone().into_f32();
        }
        let b = &mut FastCpuBackend::default();
        let mut m16 = Model::from_checkpoint(b, ck16, &Budget::default()).unwrap();
        let mut m32 = Model::from_checkpoint(b, wide, &Budget::default()).unwrap();
        // held once: the 16-bit model's matmul weights take 2 bytes a (padded) value, the widened one's 4
        let head = m32.weights.head().0.bytes();
        assert_eq!(m16.weights.head().0.bytes() * 2, head, "{label}: the head's panels, 16-bit vs f32");
        let (v, c) = (m16.cfg.vocab_size, m16.cfg.d_model);
        assert_eq!(head, v.div_ceil(16) * 16 * c * 4, "{label}: the head held as f32 panels alone, no rows beside");
        let prompt = ids(&expected(name)["ids"]);
        let (o16, o32) =
            pollster::block_on(async { (m16.forward(b, &prompt, None).await.unwrap(), m32.forward(b, &prompt, None).await.unwrap()) });
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&o16.logits), bits(&o32.logits), "{label}: logits, 16-bit panels vs widened");
        for kv_cache in [true, false] {
            let cfg = GenConfig { max_new_tokens: 8, kv_cache, ..GenConfig::default() };
            let (g16, g32) = pollster::block_on(async {
                (m16.generate(b, &prompt, None, cfg.clone()).await.unwrap(), m32.generate(b, &prompt, None, cfg).await.unwrap())
            });
            assert_eq!(g16, g32, "{label}: greedy ids (kv_cache={kv_cache})");
        }
    }
}
