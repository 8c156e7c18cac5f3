//! The shipped models (models/*.safetensors) against what PyTorch recorded at export
//! (models/<name>.json): greedy continuations token for token on the CPU and the GPU path, the date
//! model's 30 fixed examples exactly, and the loss on a held-out slice within 1e-3.
//! A missing shipped model is a failure, not a skip.

use std::sync::Arc;

use serde_json::Value;
use tinyformer::fastcpu::FastCpuBackend;
use tinyformer::gpu::Gpu;
use tinyformer::model::config::Arch;
use tinyformer::model::run::GenConfig;
use tinyformer::model::{Backend, CpuBackend, GpuBackend, Model};

pub const SHIPPED: &[&str] = &["shakespeare-llama", "shakespeare-gpt", "shakespeare-moe", "dates-encdec"];

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap_or_else(|| panic!("not an id list: {v}")).iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn load_sidecar(name: &str) -> (Value, Vec<u8>) {
    let j = std::fs::read_to_string(format!("models/{name}.json"))
        .unwrap_or_else(|e| panic!("models/{name}.json: {e} (the shipped model is missing)"));
    let bytes = std::fs::read(format!("models/{name}.safetensors")).unwrap_or_else(|e| panic!("models/{name}.safetensors: {e}"));
    assert!(bytes.len() <= 8 << 20, "{name}: {} bytes, over the 8 MB limit", bytes.len());
    (serde_json::from_str(&j).unwrap(), bytes)
}

async fn check_model<B: Backend>(b: &mut B, name: &str, side: &Value, bytes: &[u8]) {
    let mut m = Model::load(b, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    if m.cfg.arch == Arch::EncoderDecoder {
        let examples = side["examples"].as_array().expect("examples");
        assert!(examples.len() >= 30, "{name}: {} examples", examples.len());
        let tok = m.tokenizer.clone().expect("the date model carries its tokenizer");
        let out_tok = tok.target_tokenizer().unwrap_or_else(|| tok.clone());
        for ex in examples {
            let input = ex["input"].as_str().unwrap();
            let src = tok.encode(input).ids;
            assert_eq!(src, ids(&ex["src_ids"]), "{name}: Rust tokenizes {input:?} differently from the exporter");
            for kv_cache in [true, false] {
                let got = m.generate(b, &[], Some(&src), GenConfig { max_new_tokens: 16, kv_cache, ..GenConfig::default() }).await.unwrap();
                assert_eq!(got, ids(&ex["greedy_ids"]), "{name}: {input:?} (kv_cache={kv_cache})");
                let (pad, bos, eos) = out_tok.special_ids().unwrap();
                let text = out_tok.decode(&got.iter().copied().filter(|&i| i != pad && i != bos && i != eos).collect::<Vec<_>>()).unwrap();
                assert_eq!(text, ex["expected"].as_str().unwrap(), "{name}: {input:?} on {}", b.kind());
            }
        }
        println!("{name} {}: {} dates translated exactly", b.kind(), examples.len());
    } else {
        let prompt = ids(&side["prompt_ids"]);
        let want = ids(&side["greedy_ids"]);
        let want_full: Vec<u32> = if want.starts_with(&prompt) { want.clone() } else { prompt.iter().chain(&want).copied().collect() };
        let n = want_full.len() - prompt.len();
        for kv_cache in [true, false] {
            let got = m.generate(b, &prompt, None, GenConfig { max_new_tokens: n, kv_cache, ..GenConfig::default() }).await.unwrap();
            assert_eq!(got, want_full, "{name}: greedy continuation on {} (kv_cache={kv_cache})", b.kind());
        }
        if let Some(t) = &m.tokenizer {
            assert_eq!(t.encode(side["prompt"].as_str().unwrap()).ids, prompt, "{name}: Rust tokenizes the prompt differently");
        }
        let slice = &side["eval_slice"];
        let sids = ids(&slice["ids"]);
        if let Some(t) = &m.tokenizer {
            assert_eq!(t.encode(slice["text"].as_str().unwrap()).ids, sids, "{name}: Rust tokenizes the eval slice differently");
        }
        let (loss, _) = m.eval_loss(b, &sids).await.unwrap();
        let want_loss = slice["loss_per_token"].as_f64().unwrap();
        assert!((loss - want_loss).abs() <= 1e-3, "{name}: eval slice loss {loss} vs PyTorch {want_loss}");
        println!("{name} {}: greedy {} tokens equal, eval loss {loss:.5} (PyTorch {want_loss:.5})", b.kind(), n);
    }
    m.free(b);
}

#[test]
fn shipped_models_match_pytorch_on_cpu() {
    let mut b = CpuBackend;
    for name in SHIPPED {
        let (side, bytes) = load_sidecar(name);
        pollster::block_on(check_model(&mut b, name, &side, &bytes));
    }
}

#[test]
fn shipped_models_match_pytorch_on_fast_cpu() {
    let mut b = FastCpuBackend;
    for name in SHIPPED {
        let (side, bytes) = load_sidecar(name);
        pollster::block_on(check_model(&mut b, name, &side, &bytes));
    }
}

#[test]
fn shipped_models_match_pytorch_on_gpu() {
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed (install mesa-vulkan-drivers)"));
    let mut b = GpuBackend::new(gpu);
    for name in SHIPPED {
        let (side, bytes) = load_sidecar(name);
        pollster::block_on(check_model(&mut b, name, &side, &bytes));
    }
}

#[test]
fn shipped_files_fit_the_size_budget() {
    let total: u64 = SHIPPED.iter().map(|n| std::fs::metadata(format!("models/{n}.safetensors")).map(|m| m.len()).unwrap_or(0)).sum();
    assert!(total <= 24 << 20, "shipped models total {total} bytes, over 24 MB");
}
