//! The CLI end to end: JSON out, one-line errors and a non-zero exit for bad input, never a panic.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tinyformer");
const F: &str = "tests/fixtures/models";

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).output().expect("run tinyformer");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

fn json(args: &[&str]) -> Value {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "tinyformer {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{F}/{name}.json")).unwrap()).unwrap()
}

#[test]
fn generate_reproduces_the_pytorch_greedy_continuation_on_both_backends() {
    let fx = fixture("llama_gqa");
    let prompt: Vec<String> = fx["greedy"]["prompt_ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let n = fx["greedy"]["max_new_tokens"].to_string();
    for backend in ["cpu", "reference", "gpu"] {
        for cache in [None, Some("--no-kv-cache")] {
            let mut args = vec![
                "generate",
                "--model",
                "tests/fixtures/models/llama_gqa.safetensors",
                "--greedy",
                "--backend",
                backend,
                "--max-new-tokens",
                &n,
            ];
            let ids = prompt.join(",");
            args.extend(["--ids", &ids]);
            args.extend(cache);
            let out = json(&args);
            assert_eq!(out["ids"], fx["greedy"]["ids"], "{backend} {cache:?}");
            assert!(out["tokens_per_second"].as_f64().unwrap() > 0.0);
        }
    }
    // encoder-decoder: --src-ids is the source, decoding starts from BOS
    let fx = fixture("encdec_a");
    let src: Vec<String> = fx["greedy"]["src_ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let out = json(&[
        "generate",
        "--model",
        "tests/fixtures/models/encdec_a.safetensors",
        "--src-ids",
        &src.join(","),
        "--max-new-tokens",
        "12",
        "--backend",
        "cpu",
    ]);
    assert_eq!(out["ids"], fx["greedy"]["ids"]);
}

#[test]
fn forward_writes_logits_attention_and_masks() {
    let out_file = std::env::temp_dir().join(format!("tf-forward-{}.json", std::process::id()));
    let out_s = out_file.to_str().unwrap();
    let (code, _, err) = run(&[
        "forward",
        "--model",
        "tests/fixtures/models/encdec_a.safetensors",
        "--ids",
        "5,9,3,7,0,0",
        "--tgt-ids",
        "1,4,8,0",
        "--backend",
        "cpu",
        "--out",
        out_s,
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    std::fs::remove_file(&out_file).ok();
    let fx = fixture("encdec_a");
    assert_eq!(v["logits"].as_array().unwrap().len(), 4);
    let (got, want) = (v["logits"][3][5].as_f64().unwrap(), fx["logits"][3][5].as_f64().unwrap());
    assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    assert_eq!(v["masks"]["cross"][0], serde_json::json!([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]));
    assert_eq!(v["masks"]["decoder"][3], serde_json::json!([1.0, 1.0, 1.0, 0.0]));
    let kinds: Vec<&str> = v["attention"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["encoder", "encoder", "decoder", "cross", "decoder", "cross"]);
    // every attention row sums to 1 and blocked keys are exactly 0
    for a in v["attention"].as_array().unwrap() {
        for head in a["weights"].as_array().unwrap() {
            for row in head.as_array().unwrap() {
                let s: f64 = row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum();
                assert!((s - 1.0).abs() < 1e-4, "row sums to {s}");
            }
        }
    }
    assert_eq!(v["attention"][0]["weights"][0][0][4], 0.0, "padded source key must get exactly 0");
}

#[test]
fn info_describes_the_checkpoint() {
    let v = json(&["info", "--model", "tests/fixtures/models/moe_a.safetensors"]);
    assert_eq!(v["config"]["arch"], "decoder");
    assert_eq!(v["config"]["moe"]["num_experts"], 4);
    assert!(v["parameters"].as_u64().unwrap() > 1000);
}

#[test]
fn bad_input_gives_one_line_and_exit_2() {
    let m = "tests/fixtures/models/decoder_a.safetensors";
    let cases: &[(&[&str], &str)] = &[
        (&[], "no command"),
        (&["frobnicate"], "unknown command"),
        (&["generate", "--model", m, "--ids", "3,1,999", "--max-new-tokens", "2", "--backend", "cpu"], "out of range"),
        (&["generate", "--model", m, "--ids", "3,x", "--max-new-tokens", "2"], "not a valid"),
        (&["generate", "--model", m, "--ids", "3", "--max-new-tokens", "5000", "--backend", "cpu"], "context"),
        (&["generate", "--model", m, "--ids", "3", "--backend", "cpu"], "--max-new-tokens"),
        (&["generate", "--model", m, "--ids", "3", "--max-new-tokens", "2", "--backend", "tpu"], "--backend"),
        (
            &["generate", "--model", m, "--ids", "3", "--max-new-tokens", "2", "--greedy", "--temperature", "0.5", "--backend", "cpu"],
            "--greedy",
        ),
        (&["generate", "--model", m, "--prompt", "hi", "--max-new-tokens", "2", "--backend", "cpu"], "no tokenizer"),
        (&["forward", "--model", "/no/such/file", "--ids", "1"], "cannot read"),
        (&["forward", "--model", "tests/fixtures/malformed/lfs_pointer.safetensors", "--ids", "1", "--backend", "cpu"], "LFS"),
        (&["forward", "--model", m, "--ids", "1", "--backend", "cpu", "--bogus", "1"], "unknown flag"),
        (&["eval", "--model", m, "--text-file", "/no/such/text"], "cannot read"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: exit {code}, stdout {out}, stderr {err}");
        assert!(err.contains(needle), "{args:?}: stderr {err:?} lacks {needle:?}");
        assert!(!err.contains("panicked") && err.trim().lines().count() == 1, "{args:?}: {err}");
    }
}

#[test]
fn eval_reproduces_the_pytorch_loss_on_a_held_out_slice() {
    for (name, backend) in [("shakespeare-llama", "gpu"), ("shakespeare-gpt", "cpu"), ("shakespeare-moe", "cpu")] {
        let side: Value = serde_json::from_str(&std::fs::read_to_string(format!("models/{name}.json")).unwrap()).unwrap();
        let slice = &side["eval_slice"];
        let path = std::env::temp_dir().join(format!("tf-eval-{name}-{}.txt", std::process::id()));
        std::fs::write(&path, slice["text"].as_str().unwrap()).unwrap();
        let v =
            json(&["eval", "--model", &format!("models/{name}.safetensors"), "--text-file", path.to_str().unwrap(), "--backend", backend]);
        std::fs::remove_file(&path).ok();
        for key in ["loss_per_token", "loss_per_char"] {
            let (got, want) = (v[key].as_f64().unwrap(), slice[key].as_f64().unwrap());
            assert!((got - want).abs() <= 1e-3, "{name} {key}: tinyformer eval {got}, PyTorch {want}");
        }
        assert_eq!(v["predicted_tokens"], slice["predicted_tokens"], "{name}");
    }
}
