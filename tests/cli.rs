//! The CLI end to end: JSON out, one-line errors and a non-zero exit for bad input, never a panic.

mod common;
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

/// Runs with raw OS arguments (they may be non-UTF-8) and checks the failure contract: exit 2, one
/// line on stderr of bounded length without raw control characters, no panic, nothing on stdout.
fn fails_with(args: &[std::ffi::OsString], needle: &str) -> String {
    let o = Command::new(BIN).args(args).output().expect("run tinyformer");
    let (code, out, err) = (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(code, 2, "{args:?}: exit {code}, stdout {out}, stderr {err}");
    assert!(err.contains(needle), "{args:?}: stderr {err:?} lacks {needle:?}");
    assert!(!err.contains("panicked") && err.trim().lines().count() == 1, "{args:?}: {err}");
    assert!(err.len() < 1100, "{args:?}: {} bytes of error", err.len());
    assert!(!err.trim_end().chars().any(|c| c.is_control()), "{args:?}: raw control characters in {err:?}");
    assert!(out.is_empty(), "{args:?}: stdout {out}");
    err.into_owned()
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.into()).collect()
}

/// A copy of a checkpoint with its metadata config edited (the data section is kept as is).
fn with_config(src: &str, dst: &std::path::Path, edit: impl FnOnce(&mut Value)) {
    std::fs::write(dst, common::with_config(&common::read(src), edit)).unwrap();
}

#[test]
fn hostile_arguments_and_files_give_one_line_errors() {
    use std::os::unix::ffi::OsStringExt;
    let m = "tests/fixtures/models/decoder_a.safetensors";
    let mal = "tests/fixtures/malformed";
    let tmp = std::env::temp_dir().join(format!("tf-cli-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();

    // arguments: non-UTF-8, checked size arithmetic, flags checked before the model is read
    let mut bad = os(&["generate", "--model"]);
    bad.push(std::ffi::OsString::from_vec(b"\xff\xfemodel".to_vec()));
    bad.extend(os(&["--ids", "1", "--max-new-tokens", "2"]));
    fails_with(&bad, "invalid UTF-8");
    fails_with(
        &os(&["generate", "--model", m, "--ids", "3", "--max-new-tokens", "18446744073709551615", "--backend", "cpu"]),
        "1 start tokens + 18446744073709551615 new tokens exceed the model's context",
    );
    fails_with(&os(&["generate", "--model", m, "--ids", "3", "--max-new-tokens", "18446744073709551616"]), "--max-new-tokens");
    let e = fails_with(
        &os(&["generate", "--model", "/no/such/model", "--ids", "3", "--max-new-tokens", "2", "--temperature", "0", "--top-k", "5"]),
        "--temperature 0 means greedy decoding, which ignores --top-k",
    );
    assert!(!e.contains("cannot read"), "the flags are checked before the model file: {e}");
    fails_with(&os(&["generate", "--model", m, "--ids", "3", "--max-new-tokens", "2", "--greedy", "--seed", "4"]), "--greedy");
    fails_with(
        &os(&["generate", "--model", m, "--ids", "3", "--max-new-tokens", "2", "--max-new-tokens", "3"]),
        "cannot be used multiple times",
    );
    fails_with(&os(&["bench", "matmul", "--sizes", "18446744073709551615"]), "--sizes: 18446744073709551615 is outside 1..=8192");
    fails_with(&os(&["bench", "matmul", "--reps", "0"]), "--reps: 0 is outside");
    fails_with(&os(&["bench"]), "'bench' needs a subcommand (tinyformer bench --help lists them)");
    fails_with(&os(&["info", "--model", m, "--memory-budget", "lots"]), "--memory-budget");

    // --model: a device, a FIFO, a directory, a file over the budget
    fails_with(&os(&["info", "--model", "/dev/zero"]), "--model \"/dev/zero\" is not a regular file");
    let fifo = tmp.join("fifo.safetensors");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    fails_with(&os(&["info", "--model", fifo.to_str().unwrap()]), "is not a regular file (a device, FIFO or socket)");
    fails_with(&os(&["info", "--model", "tests"]), "--model \"tests\" is a directory: no model among the files");
    fails_with(&os(&["info", "--model", m, "--memory-budget", "1000"]), "bytes, over the limit of 1000 bytes (the memory budget");
    fails_with(&os(&["eval", "--model", m, "--text-file", "/dev/zero"]), "--text-file \"/dev/zero\" is not a regular file");
    fails_with(&os(&["tokenizer", "decode", "--tokenizer", "/dev/zero", "--ids", "1"]), "is not a regular file");

    // memory: a small file whose context needs 128 GiB of attention maps: a short pass runs (the run
    // state is sized to the request), a 40000-token pass is refused before allocating its maps
    let big = format!("{mal}/over_budget_context.safetensors");
    let ids = vec!["1"; 40000].join(",");
    fails_with(
        &os(&["forward", "--model", &big, "--ids", &ids, "--backend", "cpu"]),
        "a context of 40000 tokens with every layer's attention maps: the model needs 47.7 GiB of memory",
    );
    fails_with(
        &os(&["forward", "--model", &big, "--ids", &ids, "--backend", "cpu"]),
        "over the memory budget of 4.0 GiB (raise it with --memory-budget): biggest buffers: attention maps 47.7 GiB",
    );
    assert_eq!(json(&["forward", "--model", &big, "--ids", "1", "--backend", "cpu"])["ids"], serde_json::json!([1]));
    let v = json(&["info", "--model", &big]);
    assert_eq!(v["memory"]["fits_budget"], false);
    assert_eq!(v["memory"]["total_bytes"], 137463073904u64);

    // loops: eval with a 1-token context is refused (a real tokenizer, the context cut to 1)
    let ctx1 = tmp.join("ctx1.safetensors");
    with_config("models/shakespeare-gpt.safetensors", &ctx1, |c| c["max_seq_len"] = 1.into());
    let text = tmp.join("text.txt");
    std::fs::write(&text, "To be, or not to be, that is the question.").unwrap();
    fails_with(
        &os(&["eval", "--model", ctx1.to_str().unwrap(), "--text-file", text.to_str().unwrap(), "--backend", "cpu"]),
        "eval needs a context of at least 2 tokens; this model's context is 1",
    );
    fails_with(
        &os(&["bench", "generate", "--model", &format!("{mal}/valid_context_1.safetensors")]),
        "the benchmark's prompt of 4 tokens leaves no room in the model's context of 1 tokens",
    );

    // errors: a megabyte name with terminal escapes is quoted escaped and cut
    let e = fails_with(&os(&["info", "--model", &format!("{mal}/long_name_control_chars.safetensors")]), "appears twice");
    assert!(e.contains(r"\u{1b}]0;pwned\u{7}\u{1b}[31mAAA"), "{e}");
    let e = fails_with(&os(&["info", "--model", "/no/such/\x1b[2J\x07file"]), "cannot read --model");
    assert!(e.contains(r#""/no/such/\u{1b}[2J\u{7}file""#), "{e}");
    fails_with(&os(&["info", "--model", &format!("{mal}/duplicate_metadata.safetensors")]), "two \"__metadata__\" entries");
    fails_with(&os(&["info", "--model", &format!("{mal}/duplicate_entry_field.safetensors")]), "has the field \"dtype\" twice");

    // numerics: huge finite weights overflow; the CLI says so instead of printing token 0
    for backend in ["cpu", "gpu"] {
        fails_with(
            &os(&[
                "generate",
                "--model",
                &format!("{mal}/valid_overflow_layer.safetensors"),
                "--ids",
                "1,2",
                "--max-new-tokens",
                "2",
                "--backend",
                backend,
            ]),
            "the model produced non-finite values (NaN or Inf) instead of logits: they first appear in the attention keys of layer 0",
        );
    }
    std::fs::remove_dir_all(&tmp).ok();

    // help and version still print (on stdout, exit 0)
    let (code, out, _) = run(&["help"]);
    assert_eq!(code, 0);
    assert!(out.contains("generate") && out.contains("tokenizer") && out.contains("bench"), "{out}");
    let (code, out, _) = run(&["generate", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--memory-budget") && out.contains("--temperature"), "{out}");
}

// ---------------------------------------------------------------------------------------------------------
// Foreign models: Hugging Face directories and llama2.c's model.bin, against transformers' numbers
// (tests/fixtures/hf_models/*/expected.json from train/hf_fixtures.py; page.json from train/hf_page_fixtures.py).

const HF: &str = "tests/fixtures/hf_models";

fn hf_expected(dir: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{HF}/{dir}/expected.json")).unwrap()).unwrap()
}

fn id_list(v: &Value) -> String {
    v.as_array().unwrap().iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// A copy of a fixture directory's files `names` in a fresh temporary directory, config.json edited by `edit`.
fn hf_copy(dir: &str, tag: &str, names: &[&str], edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let out = std::env::temp_dir().join(format!("tf-hf-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    std::fs::create_dir_all(&out).unwrap();
    for n in names {
        std::fs::copy(format!("{HF}/{dir}/{n}"), out.join(n)).unwrap();
    }
    if names.contains(&"config.json") {
        let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        edit(&mut cfg);
        std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
    }
    out
}

#[test]
fn foreign_models_generate_transformers_greedy_ids() {
    // (what --model names, the fixture whose expected.json holds the model's numbers)
    let models = [
        (format!("{HF}/gpt2"), "gpt2"),
        (format!("{HF}/gpt2/model.safetensors"), "gpt2"),
        (format!("{HF}/llama_tied"), "llama_tied"),
        (format!("{HF}/llama_untied_bf16"), "llama_untied_bf16"),
        (format!("{HF}/qwen2"), "qwen2"),
        (format!("{HF}/llama_tied/model.bin"), "llama_tied"),
    ];
    for (model, dir) in &models {
        let fx = hf_expected(dir);
        let (ids, greedy) = (id_list(&fx["ids"]), &fx["greedy"]);
        let n = (greedy.as_array().unwrap().len() - fx["ids"].as_array().unwrap().len()).to_string();
        for backend in ["cpu", "reference", "gpu"] {
            let out = json(&["generate", "--model", model, "--greedy", "--ids", &ids, "--max-new-tokens", &n, "--backend", backend]);
            assert_eq!(&out["ids"], greedy, "{model} on {backend}");
        }
    }
    // A text prompt, through tokenizer.json and through tokenizer.bin (run.c's encoding, BOS first).
    let page: Value = serde_json::from_str(&std::fs::read_to_string(format!("{HF}/page.json")).unwrap()).unwrap();
    let n = page["new_tokens"].to_string();
    for (model, key) in [(format!("{HF}/gpt2"), "gpt2"), (format!("{HF}/llama_tied/model.bin"), "llama2c")] {
        let prompt = page["prompt"].as_str().unwrap();
        let out = json(&["generate", "--model", &model, "--prompt", prompt, "--max-new-tokens", &n, "--backend", "cpu"]);
        assert_eq!(out["ids"], page[key]["greedy"], "{model} from text");
        assert!(out["text"].as_str().unwrap().starts_with(&prompt[..5]), "{model}: {}", out["text"]);
    }
}

#[test]
fn forward_on_a_foreign_model_writes_every_logits_row_and_decoder_attention() {
    let fx = hf_expected("gpt2");
    let v = json(&["forward", "--model", &format!("{HF}/gpt2"), "--ids", &id_list(&fx["ids"]), "--backend", "reference"]);
    let (got, want) = (v["logits"].as_array().unwrap(), fx["logits"].as_array().unwrap());
    assert_eq!(got.len(), want.len(), "one logits row per input token");
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(want) {
        for (a, b) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
            worst = worst.max((a.as_f64().unwrap() - b.as_f64().unwrap()).abs());
        }
    }
    assert!(worst < 1e-3, "logits differ from transformers' by {worst}");
    let att = v["attention"].as_array().unwrap();
    let want = fx["attention"].as_array().unwrap(); // [layer][head][q][k]
    assert_eq!(att.len(), want.len());
    for (l, a) in att.iter().enumerate() {
        assert_eq!(a["kind"], "decoder");
        assert_eq!(a["layer"], l);
        let (w, e) = (&a["weights"], &want[l]);
        assert_eq!(w.as_array().unwrap().len(), 4, "heads");
        let d = (w[3][9][2].as_f64().unwrap() - e[3][9][2].as_f64().unwrap()).abs();
        assert!(d < 1e-4, "layer {l} head 3 q 9 k 2: {} vs {}", w[3][9][2], e[3][9][2]);
    }
}

#[test]
fn info_names_the_format_and_architecture() {
    let v = json(&["info", "--model", &format!("{HF}/gpt2")]);
    assert_eq!((&v["format"], &v["architecture"], &v["family"]), (&"huggingface".into(), &"GPT2LMHeadModel".into(), &"gpt2".into()));
    assert_eq!(v["tokenizer"]["card"]["kind"], "hf_bpe");
    assert_eq!(v["eos"], serde_json::json!([0]));
    assert_eq!((&v["config"]["arch"], &v["config"]["num_layers"]), (&"decoder".into(), &2.into()));
    assert_eq!(v["memory"]["fits_budget"], true);
    let v = json(&["info", "--model", &format!("{HF}/llama_untied_bf16")]);
    assert_eq!((&v["architecture"], &v["dtype"]), (&"LlamaForCausalLM".into(), &"BF16".into()));
    assert_eq!(v["dims"]["num_kv_heads"], 2);
    let v = json(&["info", "--model", &format!("{HF}/qwen2")]);
    assert_eq!((&v["family"], &v["dims"]["qkv_bias"]), (&"qwen2".into(), &true.into()));
    let v = json(&["info", "--model", &format!("{HF}/llama_tied/model.bin")]);
    assert_eq!((&v["format"], &v["family"]), (&"llama2c".into(), &"llama".into()));
    assert_eq!(v["tokenizer"]["card"]["kind"], "llama2c", "tokenizer.bin beside model.bin");
    let v = json(&["info", "--model", "tests/fixtures/models/llama_gqa.safetensors"]);
    assert_eq!((&v["format"], &v["architecture"]), (&"tinyformer".into(), &"llama".into()));
}

#[test]
fn bad_foreign_models_give_one_line_errors() {
    let gpt2 = ["config.json", "model.safetensors", "tokenizer.json"];
    let no_field = hf_copy("gpt2", "nofield", &gpt2, |c| {
        c.as_object_mut().unwrap().remove("n_embd");
    });
    let bert = hf_copy("gpt2", "bert", &gpt2, |c| {
        c["model_type"] = "bert".into();
        c["architectures"] = serde_json::json!(["BertForMaskedLM"]);
    });
    let no_config = hf_copy("gpt2", "noconfig", &["model.safetensors", "tokenizer.json"], |_| {});
    let short_bin = std::env::temp_dir().join(format!("tf-hf-short-{}.bin", std::process::id()));
    let bytes = std::fs::read(format!("{HF}/llama_tied/model.bin")).unwrap();
    std::fs::write(&short_bin, &bytes[..bytes.len() - 4]).unwrap();
    let bin = format!("{HF}/llama_tied/model.bin");
    let gen = |m: &std::path::Path| {
        os(&["generate", "--model", m.to_str().unwrap(), "--ids", "1,2", "--max-new-tokens", "2", "--backend", "cpu"])
    };
    fails_with(&gen(&no_field), "missing field \"n_embd\"");
    let e = fails_with(&gen(&bert), "bert");
    assert!(e.to_lowercase().contains("unsupported") || e.contains("not supported"), "{e}");
    fails_with(&gen(&no_config), "config.json is missing");
    fails_with(&gen(&short_bin), "bytes");
    // A tokenizer of another model: its 956 tokens do not fit the model's 384.
    let mut args = gen(std::path::Path::new(&bin));
    args.extend(os(&["--tokenizer", "tests/fixtures/hf_tokenizers/llama2c.bin"]));
    fails_with(&args, "do not belong together");
    fails_with(
        &os(&["info", "--model", "tests/fixtures/models/llama_gqa.safetensors", "--tokenizer", &format!("{HF}/gpt2/tokenizer.json")]),
        "--tokenizer",
    );
    for d in [no_field, bert, no_config] {
        std::fs::remove_dir_all(d).ok();
    }
    std::fs::remove_file(short_bin).ok();
}

#[test]
fn generation_stops_at_the_models_eos() {
    let fx = hf_expected("gpt2");
    let ids = id_list(&fx["ids"]);
    let first_new = fx["greedy"][fx["ids"].as_array().unwrap().len()].clone(); // 319 in the fixture
    let dir = hf_copy("gpt2", "eos", &["config.json", "model.safetensors", "tokenizer.json"], |_| {});
    let gen = |d: &std::path::Path| {
        json(&["generate", "--model", d.to_str().unwrap(), "--ids", &ids, "--max-new-tokens", "8", "--backend", "cpu"])
    };
    // config.json's eos_token_id (0) is never produced: all 8 tokens
    assert_eq!(gen(&dir)["ids"], fx["greedy"]);
    // generation_config.json's list wins: the first greedy token ends the generation, and is kept
    std::fs::write(dir.join("generation_config.json"), format!("{{\"eos_token_id\": [7, {first_new}]}}")).unwrap();
    let mut want = fx["ids"].as_array().unwrap().clone();
    want.push(first_new);
    assert_eq!(gen(&dir)["ids"], Value::Array(want));
    assert_eq!(json(&["info", "--model", dir.to_str().unwrap()])["eos"], serde_json::json!([7, fx["greedy"][10]]));
    // an id past the vocabulary is refused before it is narrowed: 2^32 + 2 does not wrap to 2
    for (v, want) in
        [("4294967298", "eos_token_id 4294967298 is outside the model's vocabulary"), ("[7, -1]", "eos_token_id must be a token id")]
    {
        std::fs::write(dir.join("generation_config.json"), format!("{{\"eos_token_id\": {v}}}")).unwrap();
        let args: Vec<std::ffi::OsString> = ["info", "--model", dir.to_str().unwrap()].iter().map(Into::into).collect();
        let e = fails_with(&args, want);
        assert!(e.contains("generation_config.json"), "{e}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// The gpt2 fixture's model has 384 ids and its tokenizer 376: an id in between keeps the output's
/// text (shown as <#id>) instead of dropping it.
#[test]
fn an_id_past_the_tokenizer_keeps_the_text() {
    let dir = "tests/fixtures/hf_models/gpt2";
    let v = json(&["generate", "--model", dir, "--ids", "72,380,72", "--max-new-tokens", "1", "--backend", "cpu"]);
    let text = v["text"].as_str().unwrap_or_else(|| panic!("no text in {v}"));
    assert!(text.contains("<#380>"), "{text:?}");
    let around = text.replace("<#380>", "");
    assert!(!around.is_empty(), "the ids around it decode: {text:?}");
}

/// A reader that stops early (`tinyformer forward ... | head -c 10`) closes the pipe: the CLI ends
/// without a panic trace (println! would panic on the broken pipe).
#[test]
fn a_closed_output_pipe_is_not_a_panic() {
    use std::io::Read;
    let ids: Vec<String> = (0..64).map(|i| (i % 50).to_string()).collect();
    let mut child = Command::new(BIN)
        .args(["forward", "--model", "models/shakespeare-gpt.safetensors", "--backend", "cpu", "--ids", &ids.join(",")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap(); // then the read end drops: closed
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
}

#[test]
fn a_folder_is_checked_before_it_is_read() {
    let gpt2 = ["config.json", "model.safetensors", "tokenizer.json"];
    let info = |m: &std::path::Path| os(&["info", "--model", m.to_str().unwrap()]);
    // a file named beside a config.json is read as itself: our checkpoint written into the folder is not
    // swapped for the folder's model.safetensors
    let d = hf_copy("gpt2", "named", &gpt2, |_| {});
    std::fs::copy(format!("{F}/llama_gqa.safetensors"), d.join("finetuned.safetensors")).unwrap();
    let v = json(&["info", "--model", d.join("finetuned.safetensors").to_str().unwrap()]);
    assert_eq!((&v["format"], &v["architecture"]), (&"tinyformer".into(), &"llama".into()));
    let v = json(&["info", "--model", d.join("model.safetensors").to_str().unwrap()]);
    assert_eq!((&v["format"], &v["family"]), (&"huggingface".into(), &"gpt2".into()));
    std::fs::remove_dir_all(&d).ok();

    // a link out of the folder, a FIFO: refused in one line before anything is read (a FIFO would block)
    let d = hf_copy("gpt2", "linkout", &["config.json", "model.safetensors"], |_| {});
    std::os::unix::fs::symlink(std::fs::canonicalize(format!("{HF}/gpt2/tokenizer.json")).unwrap(), d.join("tokenizer.json")).unwrap();
    fails_with(&info(&d), "tokenizer.json is a link that leads out of the model's folder");
    std::fs::remove_dir_all(&d).ok();
    let d = hf_copy("gpt2", "fifo", &["config.json", "model.safetensors"], |_| {});
    assert!(Command::new("mkfifo").arg(d.join("tokenizer.json")).status().unwrap().success());
    fails_with(&info(&d), "tokenizer.json is not a regular file (a FIFO, socket or device)");
    std::fs::remove_dir_all(&d).ok();

    // the Hugging Face cache's own layout: snapshots/<rev>/x -> ../../blobs/<sha> is followed
    let root = std::env::temp_dir().join(format!("tf-hf-cache-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let (snap, blobs) = (root.join("snapshots").join("abc123"), root.join("blobs"));
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(&blobs).unwrap();
    for (i, n) in gpt2.iter().enumerate() {
        std::fs::copy(format!("{HF}/gpt2/{n}"), blobs.join(format!("sha{i}"))).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/sha{i}"), snap.join(n)).unwrap();
    }
    let v = json(&["info", "--model", snap.to_str().unwrap()]);
    assert_eq!((&v["family"], &v["tokenizer"]["card"]["kind"]), (&"gpt2".into(), &"hf_bpe".into()));
    std::fs::remove_dir_all(&root).ok();
}
