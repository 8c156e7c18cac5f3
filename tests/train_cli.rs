//! `tinyformer train`'s contract: what it writes (a checkpoint every command opens, the JSON-lines
//! log, the first step's gradients under the checkpoint's names) and its one-line refusals of bad
//! data, flags and budgets.

use std::path::PathBuf;

use tinyformer::model::backend::CpuBackend;
use tinyformer::model::forward::Model;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tf-train-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn train(args: &[&str]) -> Result<String, String> {
    let mut argv = vec!["tinyformer", "train"];
    argv.extend_from_slice(args);
    tinyformer::cli::run(argv).map_err(|e| e.to_string())
}

fn lines(p: &PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_run_writes_a_checkpoint_a_log_and_the_first_gradients() {
    let (out, log, grads) = (tmp("m.safetensors"), tmp("log.jsonl"), tmp("g.safetensors"));
    let text = tmp("t.txt");
    std::fs::write(&text, "to be or not to be, that is the question. ".repeat(40)).unwrap();
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let summary = train(&[
        "--arch",
        "gpt",
        "--layers",
        "1",
        "--heads",
        "2",
        "--dim",
        "16",
        "--context",
        "16",
        "--batch",
        "2",
        "--steps",
        "12",
        "--text",
        &s(&text),
        "--eval-every",
        "6",
        "--eval-batches",
        "2",
        "--log-every",
        "4",
        "--out",
        &s(&out),
        "--log",
        &s(&log),
        "--dump-grads",
        &s(&grads),
        "--backend",
        "reference",
    ])
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["steps"], 12);
    let l = lines(&log);
    let steps: Vec<u64> = l.iter().map(|x| x["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 4, 6, 8, 12], "step 1, every 4th, the evaluations, the last");
    for x in &l {
        for k in ["loss", "lr", "grad_norm", "tokens_per_second", "elapsed_s"] {
            assert!(x[k].as_f64().is_some_and(f64::is_finite), "{k} in {x}");
        }
    }
    assert!(l[2]["val_loss"].as_f64().is_some() && l[1].get("val_loss").is_none());
    // the checkpoint opens and keeps the char tokenizer built from the text
    let bytes = std::fs::read(&out).unwrap();
    let m = Model::load(&CpuBackend, &bytes).unwrap();
    assert_eq!(m.cfg.max_seq_len, 16);
    let ck = tinyformer::model::checkpoint::Checkpoint::from_bytes(&bytes).unwrap();
    assert!(ck.tokenizer.as_deref().is_some_and(|t| t.contains("\"chars\"")));
    // the gradients file holds every tensor of the checkpoint under the same names, not all zero
    let g = std::fs::read(&grads).unwrap();
    let g = safetensors::SafeTensors::deserialize(&g).unwrap();
    let mut names: Vec<String> = g.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    let mut want: Vec<String> = ck.tensors.keys().cloned().collect();
    want.sort();
    assert_eq!(names, want);
    let emb = g.tensor("token_embedding.weight").unwrap();
    assert!(emb.data().chunks(4).any(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) != 0.0));
    // starting from the written checkpoint works too, on a fixed batches file (every step logged)
    let batches = tmp("b.json");
    std::fs::write(
        &batches,
        r#"{"steps": [{"inputs": [[1, 2, 3]], "targets": [[2, 3, 4]]}, {"inputs": [[4, 5, 6]], "targets": [[5, 6, 7]]}]}"#,
    )
    .unwrap();
    train(&["--model", &s(&out), "--batches", &s(&batches), "--steps", "2", "--log", &s(&log), "--schedule", "constant", "--lr", "1e-3"])
        .unwrap();
    let l = lines(&log);
    assert_eq!(l.len(), 2);
    assert!(l.iter().all(|x| x["lr"].as_f64().unwrap() as f32 == 1e-3), "a constant schedule without warmup: lr at every step");
}

#[test]
fn bad_data_and_flags_get_one_line() {
    let text = |name: &str, body: &str| {
        let p = tmp(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let base = ["--arch", "gpt", "--layers", "1", "--dim", "16", "--heads", "2", "--steps", "1"];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        let e = train(&a).unwrap_err();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    };
    let (empty, one, short) =
        (text("empty.txt", ""), text("one.txt", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), text("short.txt", "abcdefghij"));
    assert!(run(&["--text", &empty]).contains("empty"));
    assert!(run(&["--text", &one]).contains("one symbol"));
    assert!(run(&["--text", &short, "--context", "64"]).contains("lower --context"));
    assert!(run(&["--task", "induction", "--batch", "0"]).contains("at least one sequence"));
    assert!(run(&["--task", "induction", "--betas", "0.9"]).contains("--betas"));
    assert!(run(&["--task", "induction", "--lr=-1"]).contains("--lr"));
    assert!(run(&["--task", "induction", "--memory-budget", "1KiB"]).contains("lower"));
    assert!(run(&[]).contains("give the data"));
    let bad = text("bad.json", r#"{"steps": [{"inputs": [[1, 2]], "targets": [[2]]}]}"#);
    assert!(run(&["--batches", &bad]).contains("must hold"));
    let oob = text("oob.json", r#"{"steps": [{"inputs": [[1, 2]], "targets": [[2, 9999]]}]}"#);
    assert!(run(&["--batches", &oob]).contains("out of range"));
    let nul = text("nul.txt", "ab\0cd\0ef\0gh\0ij\0kl\0");
    assert!(run(&["--text", &nul]).contains("NUL"));
    assert!(run(&["--task", "induction", "--aux-loss", "0.1"]).contains("no experts"));
    assert!(run(&["--task", "induction", "--aux-loss=-1"]).contains("--aux-loss"));
}

/// A MoE checkpoint trains with `--aux-loss`: the first logged loss is PyTorch's objective
/// (cross-entropy + 0.01 x the load-balancing losses) of tests/fixtures/train/moe, and without the
/// flag it is the cross-entropy alone.
#[test]
fn a_moe_model_trains_with_the_load_balancing_loss() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train");
    let bytes = std::fs::read(format!("{dir}/moe.expect.safetensors")).unwrap();
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = md.metadata().clone().unwrap();
    let first = |k: &str| serde_json::from_str::<Vec<f64>>(&meta[k]).unwrap()[0];
    let (init, batches, log) = (format!("{dir}/moe.init.safetensors"), format!("{dir}/moe.batches.json"), tmp("moe.jsonl"));
    let log_s = log.to_str().unwrap();
    for (aux, want) in [("0.01", first("losses")), ("0", first("ce_losses"))] {
        let args = ["--model", &init, "--batches", &batches, "--steps", "2", "--log", log_s, "--aux-loss", aux, "--backend", "reference"];
        train(&args).unwrap();
        let l = lines(&log);
        let got = l[0]["loss"].as_f64().unwrap();
        assert!((got - want).abs() <= 2e-5 * want, "--aux-loss {aux}: step 1 loss {got} vs PyTorch {want}");
        assert!(l[1]["loss"].as_f64().is_some_and(f64::is_finite));
    }
}

/// A run stopped after 6 steps and resumed to 12 continues the same loss sequence, bit for bit, as
/// an uninterrupted run of 12 (the data of a step depends only on the seed and the step; the
/// parameters and both Adam moments are saved whole). A constant schedule, so that the stopped
/// run's --steps does not change the learning rates.
#[test]
fn a_resumed_run_continues_the_same_losses() {
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (full, part, log_full, log_part) = (tmp("full.safetensors"), tmp("part.safetensors"), tmp("full.jsonl"), tmp("part.jsonl"));
    let base = [
        "--arch",
        "llama",
        "--layers",
        "1",
        "--heads",
        "2",
        "--dim",
        "16",
        "--context",
        "8",
        "--batch",
        "2",
        "--task",
        "induction",
        "--vocab",
        "9",
        "--schedule",
        "constant",
        "--lr",
        "1e-2",
        "--log-every",
        "1",
    ];
    let go = |steps: &str, out: &PathBuf, log: &PathBuf, resume: bool| {
        let mut v: Vec<String> = base.iter().map(|x| x.to_string()).collect();
        v.extend(["--steps".into(), steps.into(), "--out".into(), s(out), "--log".into(), s(log)]);
        if resume {
            v.push("--resume".into());
        }
        train(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    go("12", &full, &log_full, false).unwrap();
    go("6", &part, &log_part, false).unwrap();
    assert!(std::path::Path::new(&tinyformer::cli::train::optim_path(&s(&part))).exists());
    go("12", &part, &log_part, true).unwrap();
    let bits =
        |p: &PathBuf| lines(p).iter().map(|x| (x["step"].as_u64().unwrap(), x["loss"].as_f64().unwrap().to_bits())).collect::<Vec<_>>();
    assert_eq!(bits(&log_full), bits(&log_part), "steps 1-12 of the resumed run (the log appended) equal the uninterrupted run's");
    assert_eq!(std::fs::read(&full).unwrap(), std::fs::read(&part).unwrap(), "and so do the final weights");
    let e = go("12", &part, &log_part, true).unwrap_err();
    assert!(e.contains("raise --steps"), "{e}");
}
