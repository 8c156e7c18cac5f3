//! Tokens chained on the GPU (src/model/chain.rs): K generation steps per submission
//! must give what K = 1 gives, on every architecture of the fixtures (encoder_decoder, decoder,
//! decoder with MoE, llama), on the GPU path (llvmpipe natively; no GPU is a failure, not a skip).
//! Ids: exactly equal. Per-step reads (attention rows, top candidates, MoE routing): the same
//! kernels on the same inputs, so equal within 1e-6 (the tolerance written below; they were
//! bit-identical when written). Submissions are counted, so a chain that silently fell back to
//! K = 1 fails.

use std::path::Path;
use std::sync::Arc;

use tinyformer::gpu::Gpu;
use tinyformer::model::memory::Budget;
use tinyformer::model::run::{GenConfig, StopReason, BOS_ID};
use tinyformer::ops::SampleParams;
use tinyformer::session::{Device, Next, Session, Step};

const FIXTURES: &str = "tests/fixtures/models";
/// Per-step attention, candidate probabilities and router probabilities: chained vs K = 1.
const STEP_TOL: f32 = 1e-6;

fn gpu() -> Arc<Gpu> {
    Arc::new(pollster::block_on(Gpu::new()).expect("no GPU adapter: these tests need one (llvmpipe: export XDG_RUNTIME_DIR=$(mktemp -d))"))
}

fn checkpoints() -> Vec<(String, Vec<u8>)> {
    let names = ["decoder_a", "decoder_b", "encdec_a", "encdec_b", "llama_gqa", "llama_mqa", "moe_a", "moe_b"];
    names.iter().map(|n| (n.to_string(), std::fs::read(Path::new(FIXTURES).join(format!("{n}.safetensors"))).unwrap())).collect()
}

/// A prompt (or the encoder-decoder's source) for each checkpoint.
fn inputs(s: &Session) -> (Vec<u32>, Option<Vec<u32>>) {
    if s.config().arch.as_str() == "encoder_decoder" {
        (vec![BOS_ID], Some(vec![5, 9, 3, 7, 11, 4]))
    } else {
        (vec![3, 1, 4, 1, 5], None)
    }
}

/// Runs a generation step by step: its steps, why it ended, and the submissions it took.
fn run(s: &mut Session, start: &[u32], src: Option<&[u32]>, cfg: GenConfig) -> (Vec<Step>, Option<StopReason>, usize) {
    let s0 = s.gpu_backend().map_or(0, |b| b.submits());
    s.start(start, src, cfg).unwrap();
    let mut steps = vec![];
    let reason = loop {
        match pollster::block_on(s.next()).unwrap() {
            Some(Next::Token(st)) => steps.push(st),
            Some(Next::Finished(f)) => break f.reason,
            None => panic!("the generation vanished"),
        }
    };
    let s1 = s.gpu_backend().map_or(0, |b| b.submits());
    (steps, reason, s1 - s0)
}

fn ids(steps: &[Step]) -> Vec<u32> {
    steps.iter().map(|s| s.id).collect()
}

fn close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: {} values vs {}", a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= STEP_TOL, "{what}[{i}]: chained {x}, K = 1 {y}");
    }
}

fn sampled() -> SampleParams {
    SampleParams { temperature: 0.9, top_k: 20, top_p: 0.9 }
}

#[test]
fn chained_ids_equal_k1_on_every_architecture() {
    let g = gpu();
    for (name, bytes) in checkpoints() {
        let mut s = pollster::block_on(Session::load(&Device::Gpu(g.clone()), &bytes, &Budget::default())).unwrap();
        let (start, src) = inputs(&s);
        for (sample, seed) in [(SampleParams::greedy(), 0), (sampled(), 7), (sampled(), 12345)] {
            let cfg = GenConfig { max_new_tokens: 20, sample, seed, ..GenConfig::default() };
            let (want, want_reason, k1_submits) = run(&mut s, &start, src.as_deref(), cfg.clone());
            assert!(!want.is_empty(), "{name}: K = 1 generated nothing");
            for k in [2, 3, 8, 64] {
                let (got, reason, submits) = run(&mut s, &start, src.as_deref(), GenConfig { tokens_per_submit: k, ..cfg.clone() });
                assert_eq!(ids(&got), ids(&want), "{name} K = {k} seed {seed}: ids differ from K = 1");
                assert_eq!(reason, want_reason, "{name} K = {k}: stop reason");
                // chained for real: batches of more than one token, and fewer submissions
                if want.len() > 2 {
                    assert!(got.iter().any(|st| st.batch > 1), "{name} K = {k}: no batch held more than one token");
                    assert!(submits < k1_submits, "{name} K = {k}: {submits} submissions, K = 1 took {k1_submits}");
                }
                assert!(got.iter().all(|st| st.batch <= k), "{name}: a batch larger than K = {k}");
            }
        }
    }
}

#[test]
fn per_step_reads_in_a_batch_equal_k1() {
    let g = gpu();
    for (name, bytes) in checkpoints() {
        let mut s = pollster::block_on(Session::load(&Device::Gpu(g.clone()), &bytes, &Budget::default())).unwrap();
        let (start, src) = inputs(&s);
        let moe = s.config().moe.is_some();
        for sample in [SampleParams::greedy(), sampled()] {
            let cfg = GenConfig { max_new_tokens: 10, sample, seed: 3, attention: true, top: 10, moe, ..GenConfig::default() };
            let (want, _, _) = run(&mut s, &start, src.as_deref(), cfg.clone());
            let (got, _, _) = run(&mut s, &start, src.as_deref(), GenConfig { tokens_per_submit: 4, ..cfg });
            assert_eq!(ids(&got), ids(&want), "{name}: ids with per-step reads");
            assert!(got.iter().any(|st| st.batch > 1), "{name}: not chained");
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert_eq!(a.attention.len(), b.attention.len(), "{name} step {i}: attention maps");
                assert!(!a.attention.is_empty(), "{name} step {i}: no attention maps");
                for (ma, mb) in a.attention.iter().zip(&b.attention) {
                    assert_eq!((ma.kind, ma.layer, ma.rows, ma.cols, ma.row_offset), (mb.kind, mb.layer, mb.rows, mb.cols, mb.row_offset));
                    close(&format!("{name} step {i} {} layer {}", ma.kind, ma.layer), &ma.data, &mb.data);
                }
                assert_eq!(a.top.len(), 10, "{name} step {i}: top candidates");
                assert_eq!(a.top.iter().map(|c| c.id).collect::<Vec<_>>(), b.top.iter().map(|c| c.id).collect::<Vec<_>>());
                close(
                    &format!("{name} step {i} top"),
                    &a.top.iter().map(|c| c.p).collect::<Vec<_>>(),
                    &b.top.iter().map(|c| c.p).collect::<Vec<_>>(),
                );
                assert_eq!(a.moe.len(), b.moe.len(), "{name} step {i}: MoE layers");
                if moe {
                    assert!(!a.moe.is_empty(), "{name} step {i}: no MoE routing");
                }
                for (ra, rb) in a.moe.iter().zip(&b.moe) {
                    assert_eq!((ra.layer, &ra.experts, &ra.kept), (rb.layer, &rb.experts, &rb.kept), "{name} step {i}: routing");
                    close(&format!("{name} step {i} router"), &ra.router_probs.concat(), &rb.router_probs.concat());
                    close(&format!("{name} step {i} weights"), &ra.weights.concat(), &rb.weights.concat());
                }
            }
        }
    }
}

#[test]
fn a_batch_stops_at_the_context_and_max_new_tokens() {
    let g = gpu();
    let bytes = std::fs::read(Path::new(FIXTURES).join("decoder_b.safetensors")).unwrap();
    let mut s = pollster::block_on(Session::load(&Device::Gpu(g), &bytes, &Budget::default())).unwrap();
    let ctx = s.config().max_seq_len; // 40: 35 free positions after the prompt, not a multiple of 8
    let start = vec![3, 1, 4, 1, 5];
    let cfg = GenConfig { max_new_tokens: 1000, ..GenConfig::default() };
    let (want, reason, _) = run(&mut s, &start, None, cfg.clone());
    assert_eq!((want.len(), reason), (ctx - start.len(), Some(StopReason::Context)));
    let (got, reason, _) = run(&mut s, &start, None, GenConfig { tokens_per_submit: 8, ..cfg });
    assert_eq!((ids(&got), reason), (ids(&want), Some(StopReason::Context)));
    for n in [1, 5, 8, 9, 17] {
        let (got, reason, _) = run(&mut s, &start, None, GenConfig { max_new_tokens: n, tokens_per_submit: 8, ..GenConfig::default() });
        assert_eq!(ids(&got), ids(&want)[..n], "max_new_tokens {n}");
        assert_eq!(reason, Some(StopReason::MaxNewTokens));
    }
}

#[test]
fn eos_inside_a_batch_ends_the_output_there() {
    // Find a source whose greedy K = 1 decoding ends with EOS after a few tokens, then check that
    // K = 8 shows nothing after it. Not finding one is a failure: the test must be able to fail.
    let g = gpu();
    let mut checked = 0;
    for name in ["encdec_a", "encdec_b"] {
        let bytes = std::fs::read(Path::new(FIXTURES).join(format!("{name}.safetensors"))).unwrap();
        let mut s = pollster::block_on(Session::load(&Device::Gpu(g.clone()), &bytes, &Budget::default())).unwrap();
        for seed in 0..200u32 {
            let src: Vec<u32> = (0..6).map(|i| 3 + (seed * 7 + i * 13 + seed * i) % 20).collect();
            let cfg = GenConfig { max_new_tokens: 20, ..GenConfig::default() };
            let (want, reason, _) = run(&mut s, &[BOS_ID], Some(&src), cfg.clone());
            if reason != Some(StopReason::Eos) || want.len() % 8 == 0 {
                continue;
            }
            let (got, reason, _) = run(&mut s, &[BOS_ID], Some(&src), GenConfig { tokens_per_submit: 8, ..cfg });
            assert_eq!(reason, Some(StopReason::Eos), "{name} src {src:?}");
            assert_eq!(ids(&got), ids(&want), "{name} src {src:?}: the tokens after EOS must not be shown");
            checked += 1;
            break;
        }
    }
    assert!(checked > 0, "no source ended with EOS inside a batch: the test checked nothing");
}

#[test]
fn stop_between_batches_then_a_new_generation_is_clean() {
    let g = gpu();
    let bytes = std::fs::read(Path::new(FIXTURES).join("llama_gqa.safetensors")).unwrap();
    let mut s = pollster::block_on(Session::load(&Device::Gpu(g), &bytes, &Budget::default())).unwrap();
    let start = vec![3, 1, 4];
    let cfg = GenConfig { max_new_tokens: 20, sample: sampled(), seed: 9, ..GenConfig::default() };
    let (want, _, _) = run(&mut s, &start, None, cfg.clone());
    // stopped after one token: two batches were in flight (the pipelined one unread)
    s.start(&start, None, GenConfig { tokens_per_submit: 4, ..cfg.clone() }).unwrap();
    let Some(Next::Token(first)) = pollster::block_on(s.next()).unwrap() else { panic!("no first token") };
    assert_eq!(first.id, want[0].id);
    s.stop();
    assert!(pollster::block_on(s.next()).unwrap().is_none(), "a stopped generation gives nothing more");
    let (got, _, _) = run(&mut s, &start, None, GenConfig { tokens_per_submit: 4, ..cfg.clone() });
    assert_eq!(ids(&got), ids(&want), "after a stop with batches in flight");
    // a forward pass in between does not disturb the next generation either
    pollster::block_on(s.forward(&[1, 2, 3], None)).unwrap();
    let (got, _, _) = run(&mut s, &start, None, GenConfig { tokens_per_submit: 8, ..cfg });
    assert_eq!(ids(&got), ids(&want));
}

#[test]
fn cpu_paths_ignore_k() {
    let bytes = std::fs::read(Path::new(FIXTURES).join("llama_gqa.safetensors")).unwrap();
    for dev in [Device::Cpu, Device::Reference] {
        let mut s = pollster::block_on(Session::load(&dev, &bytes, &Budget::default())).unwrap();
        let cfg = GenConfig { max_new_tokens: 12, sample: sampled(), seed: 4, ..GenConfig::default() };
        let (want, _, _) = run(&mut s, &[3, 1, 4], None, cfg.clone());
        let (got, _, _) = run(&mut s, &[3, 1, 4], None, GenConfig { tokens_per_submit: 8, ..cfg });
        assert_eq!(ids(&got), ids(&want));
        assert!(got.iter().all(|st| st.batch == 1), "a CPU path has no submissions to chain");
    }
}

#[test]
fn cli_checks_tokens_per_submit_before_loading() {
    let bin = env!("CARGO_BIN_EXE_tinyformer");
    for (cmd, k) in [
        (&["generate", "--max-new-tokens", "4"][..], "0"),
        (&["generate", "--max-new-tokens", "4"][..], "100000"),
        (&["bench", "generate"][..], "0"),
    ] {
        let out = std::process::Command::new(bin)
            .args(cmd)
            .args(["--model", "no/such/model.safetensors", "--tokens-per-submit", k])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?} {k}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains("--tokens-per-submit must be between 1 and 256"), "{err}");
    }
    let out = std::process::Command::new(bin)
        .args(["generate", "--model", "tests/fixtures/models/llama_gqa.safetensors", "--ids", "3,1,4", "--max-new-tokens", "9"])
        .args(["--tokens-per-submit", "4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let k4: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = std::process::Command::new(bin)
        .args(["generate", "--model", "tests/fixtures/models/llama_gqa.safetensors", "--ids", "3,1,4", "--max-new-tokens", "9"])
        .output()
        .unwrap();
    let k1: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(k4["ids"], k1["ids"]);
    assert!(k4["ids"].as_array().is_some_and(|a| a.len() == 12), "{k4}");
}
