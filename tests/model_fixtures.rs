//! The Rust models against the PyTorch reference (train/reference.py, fixtures made by
//! train/make_fixtures.py): logits within 1e-3 abs + 1e-3 rel, attention within 1e-4 abs, masks and
//! MoE routing exactly, greedy continuations token for token, on the CPU path and on the GPU path.
//! Cached and uncached generation must give the same greedy tokens.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tinyformer::fastcpu::FastCpuBackend;
use tinyformer::gpu::Gpu;
use tinyformer::model::run::GenConfig;
use tinyformer::model::{Backend, CpuBackend, GpuBackend, MapKind, Model};

const FIXTURES: &str = "tests/fixtures/models";
const LOGIT_ATOL: f64 = 1e-3;
const LOGIT_RTOL: f64 = 1e-3;
const ATTN_ATOL: f64 = 1e-4;

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Bool(b) => vec![*b as u8 as f64],
        other => panic!("not a number: {other}"),
    }
}
fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    let mut max = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w).abs();
        max = max.max(d);
        assert!(d <= atol + rtol * w.abs(), "{what}[{i}]: got {g}, PyTorch {w} (|diff| {d:e})");
    }
    max
}

fn fixtures() -> Vec<(String, Value, Vec<u8>)> {
    let mut names: Vec<_> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "expected the fixture set of train/make_fixtures.py, found {}", names.len());
    names
        .into_iter()
        .map(|p| {
            let j: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let ck = Path::new(FIXTURES).join(j["checkpoint"].as_str().unwrap());
            (j["name"].as_str().unwrap().to_string(), j.clone(), std::fs::read(ck).unwrap())
        })
        .collect()
}

async fn check_fixture<B: Backend>(b: &mut B, name: &str, j: &Value, bytes: &[u8]) {
    let mut m = Model::load(b, bytes).unwrap_or_else(|e| panic!("{name}: load failed: {e}"));
    let inputs = &j["inputs"];
    let out = if inputs.get("src_ids").is_some() {
        m.forward(b, &ids(&inputs["src_ids"]), Some(&ids(&inputs["tgt_ids"]))).await
    } else {
        m.forward(b, &ids(&inputs["ids"]), None).await
    }
    .unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let dl = assert_close(&format!("{name} logits"), &out.logits, &flat(&j["logits"]), LOGIT_ATOL, LOGIT_RTOL);
    let want_attn = j["attention"].as_array().unwrap();
    assert_eq!(out.attention.len(), want_attn.len(), "{name}: number of attention maps");
    let mut da = 0f64;
    for (got, want) in out.attention.iter().zip(want_attn) {
        assert_eq!(got.kind.as_str(), want["kind"].as_str().unwrap(), "{name}: attention order");
        assert_eq!(got.layer as u64, want["layer"].as_u64().unwrap());
        da = da.max(assert_close(
            &format!("{name} {} attention layer {}", got.kind, got.layer),
            &got.data,
            &flat(&want["weights"]),
            ATTN_ATOL,
            0.0,
        ));
    }
    for (kind, mask) in &out.masks {
        let want = flat(&j["masks"][kind.as_str()]);
        assert_close(&format!("{name} {kind} mask"), &mask.data, &want, 0.0, 0.0);
    }
    if let Some(moe) = j.get("moe").and_then(|v| v.as_array()) {
        assert_eq!(out.moe.len(), moe.len(), "{name}: MoE layers");
        for (got, want) in out.moe.iter().zip(moe) {
            let probs: Vec<f32> = got.router_probs.concat();
            assert_close(&format!("{name} router probs"), &probs, &flat(&want["router_probs"]), 1e-5, 1e-4);
            let experts: Vec<f64> = got.experts.concat().iter().map(|&x| x as f64).collect();
            assert_eq!(experts, flat(&want["experts"]), "{name} layer {}: chosen experts", got.layer);
            let kept: Vec<f64> = got.kept.concat().iter().map(|&x| x as f64).collect();
            let want_kept: Vec<f64> = flat(&want["kept"]).iter().map(|&x| if x != 0.0 { 1.0 } else { 0.0 }).collect();
            assert_eq!(kept, want_kept, "{name} layer {}: kept assignments (capacity)", got.layer);
        }
    }
    // Greedy continuation: uncached always; cached too unless capacity drops make them differ by design.
    let g = &j["greedy"];
    let want = ids(&g["ids"]);
    let max_new = g["max_new_tokens"].as_u64().unwrap() as usize;
    let drops = j.get("dropped_assignments").and_then(|v| v.as_u64()).unwrap_or(0) > 0;
    for kv_cache in [false, true] {
        if kv_cache && drops {
            continue;
        }
        let cfg = GenConfig { max_new_tokens: max_new, kv_cache, ..GenConfig::default() };
        let got = if let Some(src) = g.get("src_ids") {
            m.generate(b, &[], Some(&ids(src)), cfg).await
        } else {
            m.generate(b, &ids(&g["prompt_ids"]), None, cfg).await
        }
        .unwrap_or_else(|e| panic!("{name}: generate failed: {e}"));
        assert_eq!(got, want, "{name}: greedy continuation (kv_cache={kv_cache}) differs from PyTorch");
    }
    println!(
        "{name:<16} {}: logits max|diff| {dl:.2e}, attention max|diff| {da:.2e}, greedy {:?} ok",
        b.kind(),
        &want[..want.len().min(8)]
    );
}

#[test]
fn cpu_path_matches_pytorch() {
    let mut b = CpuBackend;
    for (name, j, bytes) in fixtures() {
        pollster::block_on(check_fixture(&mut b, &name, &j, &bytes));
    }
}

#[test]
fn fast_cpu_path_matches_pytorch() {
    let mut b = FastCpuBackend::default();
    for (name, j, bytes) in fixtures() {
        pollster::block_on(check_fixture(&mut b, &name, &j, &bytes));
    }
}

#[test]
fn gpu_path_matches_pytorch() {
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed (install mesa-vulkan-drivers)"));
    let mut b = GpuBackend::new(gpu);
    for (name, j, bytes) in fixtures() {
        pollster::block_on(check_fixture(&mut b, &name, &j, &bytes));
    }
}

/// One submission per generated token (the pass, the sampling kernel and the 4-byte copy together),
/// and nothing read back but the token, for each architecture.
#[test]
fn one_submission_per_generated_token() {
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed (install mesa-vulkan-drivers)"));
    let mut b = GpuBackend::new(gpu);
    for name in ["decoder_a", "llama_gqa", "moe_a", "encdec_b"] {
        let bytes = std::fs::read(format!("{FIXTURES}/{name}.safetensors")).unwrap();
        let mut m = Model::load(&b, &bytes).unwrap();
        let (start, src) = if name.starts_with("encdec") { (vec![1u32], Some(vec![5u32, 9, 3, 7])) } else { (vec![3u32, 1, 4], None) };
        let mut g = m.start_generation(&mut b, &start, src.as_deref(), GenConfig { max_new_tokens: 6, ..GenConfig::default() }).unwrap();
        pollster::block_on(m.next_token(&mut b, &mut g)).unwrap().unwrap(); // prefill
        for _ in 0..4 {
            let before = b.submits();
            if pollster::block_on(m.next_token(&mut b, &mut g)).unwrap().is_none() {
                break;
            }
            assert_eq!(b.submits() - before, 1, "{name}: submissions for one cached token");
        }
    }
}

/// The attention rows streamed with each generated token (one submission, one map) equal the rows
/// of a full forward pass over the final sequence, on both backends.
#[test]
fn streamed_attention_rows_equal_the_full_pass() {
    async fn check<B: Backend>(b: &mut B) {
        for name in ["llama_gqa", "encdec_b"] {
            let bytes = std::fs::read(format!("{FIXTURES}/{name}.safetensors")).unwrap();
            let mut m = Model::load(b, &bytes).unwrap();
            let encdec = name.starts_with("encdec");
            let src = vec![5u32, 9, 3, 7, 11];
            let (start, srcref) = if encdec { (vec![1u32], Some(&src[..])) } else { (vec![3u32, 1, 4], None) };
            let cfg = GenConfig { max_new_tokens: 5, attention: true, ..GenConfig::default() };
            let mut g = m.start_generation(b, &start, srcref, cfg).unwrap();
            let mut steps = vec![];
            while let Some(s) = m.next_token(b, &mut g).await.unwrap() {
                steps.push(s.attention);
            }
            // the full pass sees the sequence without its last token (which was never fed back)
            let seq = &g.ids[..g.ids.len() - 1];
            let full = if encdec { m.forward(b, &src, Some(seq)).await.unwrap() } else { m.forward(b, seq, None).await.unwrap() };
            for maps in &steps {
                for mp in maps.iter().filter(|mp| mp.kind != MapKind::Encoder) {
                    let f = full.attention.iter().find(|x| x.kind == mp.kind && x.layer == mp.layer).unwrap();
                    for h in 0..mp.heads {
                        for r in 0..mp.rows {
                            let q = mp.row_offset + r;
                            for k in 0..mp.cols {
                                let got = mp.data[(h * mp.rows + r) * mp.cols + k];
                                let want = f.data[(h * f.rows + q) * f.cols + k];
                                assert!(
                                    (got - want).abs() < 1e-5,
                                    "{name} {} layer {} head {h} query {q} key {k}: {got} vs {want}",
                                    mp.kind,
                                    mp.layer
                                );
                            }
                        }
                    }
                }
            }
            assert_eq!(steps.len(), 5, "{name}");
        }
    }
    pollster::block_on(check(&mut CpuBackend));
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed"));
    pollster::block_on(check(&mut GpuBackend::new(gpu)));
}
