//! Look inside against the PyTorch reference with hooks (train/inspect_fixtures.py writes
//! tests/fixtures/inspect/*.json from the reference fixture checkpoints), on the CPU and GPU paths.
//! Tolerances (f32 core vs float32 PyTorch, reductions in f64):
//! - lens probabilities: 1e-4 abs (each of the core's top-5 against PyTorch's probability of that id, and
//!   the sorted top-5 values, so a near-tie may swap ids but not values);
//! - residual norms: 1e-3 abs + 1e-4 rel; head scores and attention entropy: 1e-4 abs;
//! - surprise and ablated last-row logits: 1e-3 abs + 1e-3 rel (the logits tolerance of model_fixtures.rs);
//! - KL after an ablation: 2e-4 abs + 1e-2 rel.

use std::sync::Arc;

use serde_json::Value;
use tinyformer::gpu::Gpu;
use tinyformer::model::inspect::{top_k, Ablation, AblationKind, Report};
use tinyformer::model::run::GenConfig;
use tinyformer::model::{Backend, CpuBackend, GpuBackend, MapKind, Model};

const DIR: &str = "tests/fixtures/inspect";
const MODELS: &str = "tests/fixtures/models";

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("not a number: {other}"),
    }
}
fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn pairs(v: &Value) -> Vec<(usize, usize)> {
    v.as_array().unwrap().iter().map(|h| (h[0].as_u64().unwrap() as usize, h[1].as_u64().unwrap() as usize)).collect()
}

fn close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w).abs();
        assert!(d <= atol + rtol * w.abs(), "{what}[{i}]: got {g}, PyTorch {w} (|diff| {d:e})");
    }
}

fn fixtures() -> Vec<(String, Value, Vec<u8>)> {
    let mut names: Vec<_> = std::fs::read_dir(DIR).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    assert_eq!(names.len(), 8, "expected the 8 files of train/inspect_fixtures.py");
    names
        .into_iter()
        .map(|p| {
            let j: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let name = j["name"].as_str().unwrap().to_string();
            let bytes = std::fs::read(format!("{MODELS}/{name}.safetensors")).unwrap();
            (name, j, bytes)
        })
        .collect()
}

async fn run<B: Backend>(b: &mut B, m: &mut Model<B>, j: &Value, ab: Option<&Ablation>) -> Report {
    match j.get("src_ids") {
        Some(src) => m.inspect(b, &ids(src), Some(&ids(&j["tgt_ids"])), ab).await.unwrap(),
        None => m.inspect(b, &ids(&j["ids"]), None, ab).await.unwrap(),
    }
}

fn check_lens(what: &str, lens: &[tinyformer::model::inspect::LensLayer], want: &Value) {
    let want = want.as_array().unwrap();
    assert_eq!(lens.len(), want.len(), "{what}: layers");
    for (l, (got, w)) in lens.iter().zip(want).enumerate() {
        assert_eq!(got.layer, l);
        for (p, (gi, gp)) in got.top_ids.iter().zip(&got.top_probs).enumerate() {
            let row = flat(&w[p]);
            let mut sorted = row.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            close(&format!("{what} layer {l} position {p} sorted top-5"), gp, &sorted[..5], 1e-4, 0.0);
            let at: Vec<f64> = gi.iter().map(|&i| row[i as usize]).collect();
            close(&format!("{what} layer {l} position {p} PyTorch prob of our top-5 ids {gi:?}"), gp, &at, 1e-4, 0.0);
        }
        assert_eq!(got.top_ids.len(), w.as_array().unwrap().len(), "{what}: positions");
    }
}

async fn check_fixture<B: Backend>(b: &mut B, name: &str, j: &Value, bytes: &[u8]) {
    let mut m = Model::load(b, bytes).unwrap();
    let r = run(b, &mut m, j, None).await;
    let k = b.kind();
    check_lens(&format!("{name} {k} logit_lens"), &r.logit_lens, &j["lens_probs"]);
    check_lens(&format!("{name} {k} logit_lens_mid"), &r.logit_lens_mid, &j["lens_mid_probs"]);
    let f = |v: &Vec<Vec<f32>>| v.iter().flatten().copied().collect::<Vec<f32>>();
    close(&format!("{name} {k} residual_norms"), &f(&r.residual_norms), &flat(&j["residual_norms"]), 1e-3, 1e-4);
    assert_eq!(r.residual_norms.len(), m.cfg.num_layers + 1);
    for kind in ["previous_token", "duplicate_token", "induction"] {
        let got = match kind {
            "previous_token" => &r.head_scores.previous_token,
            "duplicate_token" => &r.head_scores.duplicate_token,
            _ => &r.head_scores.induction,
        };
        close(&format!("{name} {k} head_scores.{kind}"), &f(got), &flat(&j["head_scores"][kind]), 1e-4, 0.0);
    }
    let ent: Vec<f32> = r.attention_entropy.iter().flatten().flatten().copied().collect();
    close(&format!("{name} {k} attention_entropy"), &ent, &flat(&j["attention_entropy"]), 1e-4, 0.0);
    close(&format!("{name} {k} surprise"), &r.surprise, &flat(&j["surprise"]), 1e-3, 1e-3);
    for ab in j["ablations"].as_array().unwrap() {
        let kind = if ab["kind"] == "zero" { AblationKind::Zero } else { AblationKind::Mean };
        let heads =
            ab["heads"].as_array().unwrap().iter().map(|h| (h[0].as_u64().unwrap() as usize, h[1].as_u64().unwrap() as usize)).collect();
        let experts = ab
            .get("experts")
            .map(|e| e.as_array().unwrap().iter().map(|h| (h[0].as_u64().unwrap() as usize, h[1].as_u64().unwrap() as usize)).collect())
            .unwrap_or_default();
        let mask_cells = ab.get("mask_cells").map(pairs).unwrap_or_default();
        let cross_cells = ab.get("cross_cells").map(pairs).unwrap_or_default();
        let abl = Ablation { heads, kind, experts, mask_cells, cross_cells };
        let r2 = run(b, &mut m, j, Some(&abl)).await;
        let out = r2.ablation.as_ref().unwrap();
        close(&format!("{name} {k} {kind:?} logits_last"), &out.logits_last, &flat(&ab["logits_last"]), 1e-3, 1e-3);
        let want_kl = ab["kl_last"].as_f64().unwrap();
        assert!((out.kl_last - want_kl).abs() <= 2e-4 + 1e-2 * want_kl, "{name} {k} {kind:?} kl_last {} vs PyTorch {want_kl}", out.kl_last);
        assert!(out.kl_last > 1e-6, "{name} {k} {kind:?}: the ablation changed nothing");
        // the un-ablated part of the report is the same with and without the ablation
        assert_eq!(r2.surprise, r.surprise);
    }
}

#[test]
fn cpu_inspect_matches_pytorch_hooks() {
    for (name, j, bytes) in fixtures() {
        pollster::block_on(check_fixture(&mut CpuBackend, &name, &j, &bytes));
    }
}

#[test]
fn gpu_inspect_matches_pytorch_hooks() {
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed (install mesa-vulkan-drivers)"));
    let mut b = GpuBackend::new(gpu);
    for (name, j, bytes) in fixtures() {
        pollster::block_on(check_fixture(&mut b, &name, &j, &bytes));
    }
}

/// The last layer's lens is the model's own output: the same top-5 as the logits of a plain forward.
#[test]
fn last_lens_is_the_models_output() {
    async fn check<B: Backend>(b: &mut B) {
        for (name, j, bytes) in fixtures() {
            let mut m = Model::load(b, &bytes).unwrap();
            let r = run(b, &mut m, &j, None).await;
            let out = match j.get("src_ids") {
                Some(src) => m.forward(b, &ids(src), Some(&ids(&j["tgt_ids"]))).await.unwrap(),
                None => m.forward(b, &ids(&j["ids"]), None).await.unwrap(),
            };
            let last = r.logit_lens.last().unwrap();
            for p in 0..out.rows {
                let (ti, tp) = top_k(&out.logits[p * out.vocab..(p + 1) * out.vocab], 5);
                assert_eq!(last.top_ids[p], ti, "{name} {}: position {p}", b.kind());
                assert_eq!(last.top_probs[p], tp, "{name} {}: position {p}", b.kind());
            }
        }
    }
    pollster::block_on(check(&mut CpuBackend));
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed"));
    pollster::block_on(check(&mut GpuBackend::new(gpu)));
}

/// An ablation stays on in generation; cached and uncached generation agree with it, and the first
/// generated token is the argmax of the inspected ablated last row.
#[test]
fn ablation_in_cached_generation_equals_uncached() {
    async fn check<B: Backend>(b: &mut B) {
        for name in ["decoder_a", "llama_gqa", "moe_a", "encdec_b"] {
            let j: Value = serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/{name}.json")).unwrap()).unwrap();
            let bytes = std::fs::read(format!("{MODELS}/{name}.safetensors")).unwrap();
            let mut m = Model::load(b, &bytes).unwrap();
            let (src, start) = match j.get("src_ids") {
                Some(s) => (Some(ids(s)), ids(&j["tgt_ids"])[..3].to_vec()),
                None => (None, ids(&j["ids"])),
            };
            for kind in [AblationKind::Zero, AblationKind::Mean] {
                let experts = if m.cfg.moe.is_some() { vec![(1, 0)] } else { vec![] };
                // and two decoder self-attention cells blocked (queries 1 and 4: in the prompt and,
                // for the encoder-decoder's 3-token start, in generation)
                let ab = Ablation { heads: vec![(0, 0), (1, 1)], kind, experts, mask_cells: vec![(1, 0), (4, 2)], cross_cells: vec![] };
                let r = match &src {
                    Some(s) => m.inspect(b, s, Some(&start), Some(&ab)).await.unwrap(),
                    None => m.inspect(b, &start, None, Some(&ab)).await.unwrap(),
                };
                let want_first = top_k(&r.ablation.unwrap().logits_last, 1).0[0];
                let means = m.head_means(b, src.as_deref().unwrap_or(&start), src.as_ref().map(|_| &start[..])).await.unwrap();
                m.set_ablation(b, &ab, Some(&means)).unwrap();
                let mut outs = vec![];
                for kv_cache in [true, false] {
                    let cfg = GenConfig { max_new_tokens: 8, kv_cache, gpu_sampling: false, ..GenConfig::default() };
                    outs.push(m.generate(b, &start, src.as_deref(), cfg).await.unwrap());
                }
                m.clear_ablation(b);
                assert_eq!(outs[0], outs[1], "{name} {} {kind:?}: cached vs uncached with an ablation", b.kind());
                assert_eq!(outs[0][start.len()], want_first, "{name} {} {kind:?}: first generated token", b.kind());
            }
        }
    }
    pollster::block_on(check(&mut CpuBackend));
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed"));
    pollster::block_on(check(&mut GpuBackend::new(gpu)));
}

/// Blocked mask cells on the reference CPU, the fast CPU and the GPU backends: the last-row
/// logits and KL are PyTorch's with those cells zeroed in its causal mask (tolerances above); every
/// layer's map has exactly 0 at the cells, row 0 (its only key blocked) is all 0, every other row sums
/// to 1 (1e-5); layer 0's rows are the clean rows renormalised over the keys left (1e-5 abs + 1e-4 rel),
/// and its rows before the first blocked query are unchanged (1e-6 abs + 1e-5 rel).
#[test]
fn blocked_mask_cells_match_pytorch_on_every_backend() {
    async fn check<B: Backend>(b: &mut B) {
        for (name, j, bytes) in fixtures() {
            let k = b.kind();
            let case = j["ablations"].as_array().unwrap().iter().find(|a| a.get("mask_cells").is_some()).unwrap();
            let cells = pairs(&case["mask_cells"]);
            assert!(cells.contains(&(0, 0)));
            let mut m = Model::load(b, &bytes).unwrap();
            let ab = Ablation { heads: vec![], kind: AblationKind::Zero, experts: vec![], mask_cells: cells.clone(), cross_cells: vec![] };
            let r = run(b, &mut m, &j, Some(&ab)).await;
            let out = r.ablation.as_ref().unwrap();
            assert_eq!(out.mask_cells, cells);
            close(&format!("{name} {k} blocked cells logits_last"), &out.logits_last, &flat(&case["logits_last"]), 1e-3, 1e-3);
            let want_kl = case["kl_last"].as_f64().unwrap();
            assert!(
                (out.kl_last - want_kl).abs() <= 2e-4 + 1e-2 * want_kl,
                "{name} {k} blocked cells kl {} vs PyTorch {want_kl}",
                out.kl_last
            );
            assert_eq!(out.top1_before, top_k(&r.logits_last_clean, 1).0[0]);
            assert_eq!(out.top1_after, top_k(&out.logits_last, 1).0[0]);

            let (src, tgt) = match j.get("src_ids") {
                Some(s) => (ids(s), Some(ids(&j["tgt_ids"]))),
                None => (ids(&j["ids"]), None),
            };
            let maps = |o: tinyformer::model::run::ForwardOut| -> Vec<tinyformer::model::run::AttnMap> {
                o.attention.into_iter().filter(|a| a.kind == MapKind::Decoder).collect()
            };
            let clean = maps(m.forward(b, &src, tgt.as_deref()).await.unwrap());
            m.set_ablation(b, &ab, None).unwrap();
            let blocked = maps(m.forward(b, &src, tgt.as_deref()).await.unwrap());
            m.clear_ablation(b);
            let first_q = cells.iter().filter(|c| c.0 > 0).map(|c| c.0).min().unwrap();
            for (c, a) in clean.iter().zip(&blocked) {
                let (t, l) = (a.rows, a.layer);
                for h in 0..a.heads {
                    let row = |m: &tinyformer::model::run::AttnMap, q: usize| m.data[(h * t + q) * t..(h * t + q + 1) * t].to_vec();
                    for q in 0..t {
                        let (pc, pb) = (row(c, q), row(a, q));
                        for &(cq, ck) in &cells {
                            if cq == q {
                                assert_eq!(pb[ck], 0.0, "{name} {k} layer {l} head {h}: blocked cell {cq}.{ck}");
                            }
                        }
                        let sum: f64 = pb.iter().map(|&x| x as f64).sum();
                        let want = if q == 0 { 0.0 } else { 1.0 };
                        assert!((sum - want).abs() < 1e-5, "{name} {k} layer {l} head {h} row {q} sums to {sum}");
                        if l == 0 && q > 0 {
                            let keep: f64 = (0..t).filter(|&kk| !cells.contains(&(q, kk))).map(|kk| pc[kk] as f64).sum();
                            let want: Vec<f64> =
                                (0..t).map(|kk| if cells.contains(&(q, kk)) { 0.0 } else { pc[kk] as f64 / keep }).collect();
                            close(&format!("{name} {k} layer 0 head {h} row {q} renormalised"), &pb, &want, 1e-5, 1e-4);
                        }
                        if l == 0 && q > 0 && q < first_q {
                            // (the explicit-mask path may round differently from the causal one)
                            let pc: Vec<f64> = pc.iter().map(|&x| x as f64).collect();
                            close(&format!("{name} {k} layer 0 head {h} row {q} has no blocked cell"), &pb, &pc, 1e-6, 1e-5);
                        }
                    }
                }
            }
            // encoder-decoder: blocked cross-attention cells (query, source key); layer 0's cross rows
            // are the clean ones renormalised (its queries do not depend on the cross mask)
            if tgt.is_some() {
                let xcells = vec![(6, 1), (2, 0), (2, 3)];
                let xab = Ablation { mask_cells: vec![], cross_cells: xcells.clone(), ..ab.clone() };
                let cross = |o: tinyformer::model::run::ForwardOut| {
                    o.attention.into_iter().find(|a| a.kind == MapKind::Cross && a.layer == 0).unwrap()
                };
                let c = cross(m.forward(b, &src, tgt.as_deref()).await.unwrap());
                m.set_ablation(b, &xab, None).unwrap();
                let a = cross(m.forward(b, &src, tgt.as_deref()).await.unwrap());
                m.clear_ablation(b);
                let (tq, tk) = (a.rows, a.cols);
                let mut changed = false;
                for h in 0..a.heads {
                    for q in 0..tq {
                        let pc = &c.data[(h * tq + q) * tk..(h * tq + q + 1) * tk];
                        let pb = &a.data[(h * tq + q) * tk..(h * tq + q + 1) * tk];
                        let keep: f64 = (0..tk).filter(|&kk| !xcells.contains(&(q, kk))).map(|kk| pc[kk] as f64).sum();
                        let want: Vec<f64> = (0..tk).map(|kk| if xcells.contains(&(q, kk)) { 0.0 } else { pc[kk] as f64 / keep }).collect();
                        close(&format!("{name} {k} cross layer 0 head {h} row {q}"), pb, &want, 1e-5, 1e-4);
                        changed |= pb != pc;
                    }
                }
                assert!(changed, "{name} {k}: blocking cross cells changed nothing");
            }
            // bad cells: one clear error each
            for (bad, msg) in [((2, 5), "already blocked"), ((9999, 0), "cannot block mask cell 9999.0")] {
                let ab = Ablation { mask_cells: vec![bad], ..ab.clone() };
                let e = m.set_ablation(b, &ab, None).unwrap_err().to_string();
                assert!(e.contains(msg), "{e}");
            }
        }
    }
    pollster::block_on(check(&mut CpuBackend));
    pollster::block_on(check(&mut tinyformer::fastcpu::FastCpuBackend::default()));
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed"));
    pollster::block_on(check(&mut GpuBackend::new(gpu)));
}

/// The induction test reports the head scores of its own sequence and the mean loss of each half.
#[test]
fn induction_test_is_consistent_with_inspect() {
    let bytes = std::fs::read(format!("{MODELS}/decoder_b.safetensors")).unwrap();
    let b = &mut CpuBackend;
    let mut m = Model::load(b, &bytes).unwrap();
    let it = pollster::block_on(m.induction_test(b, 12, 7, None, None)).unwrap();
    assert_eq!(it.half.len(), 12);
    let seq = [it.half.clone(), it.half.clone()].concat();
    let r = pollster::block_on(m.inspect(b, &seq, None, None)).unwrap();
    assert_eq!(it.head_scores.induction, r.head_scores.induction);
    let first: f64 = r.surprise[1..12].iter().map(|&x| x as f64).sum::<f64>() / 11.0;
    let second: f64 = r.surprise[12..].iter().map(|&x| x as f64).sum::<f64>() / 12.0;
    assert!((it.loss_first_half - first).abs() < 1e-9 && (it.loss_second_half - second).abs() < 1e-9);
    assert_eq!(it.top_induction.len(), m.cfg.num_layers * m.cfg.num_heads);
    assert!(it.top_induction.windows(2).all(|w| w[0].2 >= w[1].2));
    let e = pollster::block_on(m.induction_test(b, 30, 7, None, None)).unwrap_err().to_string();
    assert!(e.contains("2n <= the context"), "{e}");
}

#[test]
fn cli_inspect_writes_the_contract_fields() {
    let exe = env!("CARGO_BIN_EXE_tinyformer");
    let model = format!("{MODELS}/decoder_a.safetensors");
    let out = std::process::Command::new(exe)
        .args(["inspect", "--model", &model, "--ids", "5,9,3,7,5,9", "--backend", "reference", "--ablate", "1.0,0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["logit_lens"].as_array().unwrap().len(), 2);
    assert_eq!(v["logit_lens"][1]["layer"], 1);
    assert_eq!(v["logit_lens"][0]["top_ids"][5].as_array().unwrap().len(), 5);
    assert_eq!(v["head_scores"]["induction"].as_array().unwrap().len(), 2);
    assert_eq!(v["residual_norms"].as_array().unwrap().len(), 3);
    assert_eq!(v["attention_entropy"][1][0].as_array().unwrap().len(), 6);
    assert_eq!(v["surprise"].as_array().unwrap().len(), 6);
    assert_eq!(v["logits_last"].as_array().unwrap().len(), 48);
    assert!(v["kl_last"].as_f64().unwrap() > 0.0);
    // the same numbers as the library on the same backend (the CPU reference)
    let b = &mut CpuBackend;
    let mut m = Model::load(b, &std::fs::read(&model).unwrap()).unwrap();
    let ab = Ablation::parse("1.0,0.1", AblationKind::Zero).unwrap();
    let r = pollster::block_on(m.inspect(b, &[5, 9, 3, 7, 5, 9], None, Some(&ab))).unwrap();
    assert_eq!(v["kl_last"].as_f64().unwrap(), r.ablation.unwrap().kl_last);
    // --block-cells: the library's blocked-cell ablation, on the reference backend
    let out = std::process::Command::new(exe)
        .args(["inspect", "--model", &model, "--ids", "5,9,3,7,5,9", "--backend", "reference", "--block-cells", "5.1, 5.2,0.0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ablation"]["mask_cells"], serde_json::json!([[5, 1], [5, 2], [0, 0]]));
    let ab = Ablation { mask_cells: vec![(5, 1), (5, 2), (0, 0)], ..Ablation::heads(vec![], AblationKind::Zero) };
    let r = pollster::block_on(m.inspect(b, &[5, 9, 3, 7, 5, 9], None, Some(&ab))).unwrap().ablation.unwrap();
    assert!(r.kl_last > 0.0);
    assert_eq!(v["kl_last"].as_f64().unwrap(), r.kl_last);
    assert_eq!(v["ablation"]["top1_after"], r.top1_after);
    // bad input: one clear line
    let moe = format!("{MODELS}/moe_a.safetensors");
    for (m, flag, bad, msg) in [
        (&model, "--ablate", "9.0", "cannot ablate head 9.0"),
        (&model, "--ablate", "1-0", "is not LAYER.HEAD"),
        (&model, "--remove-experts", "0.1", "only mixture-of-experts models"),
        (&moe, "--remove-experts", "0.0,0.1,0.2", "layer 0 would keep 1 experts but routes every token to 2"),
        (&moe, "--remove-experts", "0.7", "cannot remove expert 0.7"),
        (&model, "--block-cells", "2.5", "mask cell 2.5 is already blocked"),
        (&model, "--block-cells", "2", "is not QUERY.KEY"),
        (&model, "--block-cross-cells", "1.0", "only encoder_decoder models have a cross mask"),
    ] {
        let out = std::process::Command::new(exe)
            .args(["inspect", "--model", m, "--ids", "5,9", "--backend", "cpu", flag, bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(msg) && err.trim().lines().count() == 1, "{bad}: {err}");
    }
}
