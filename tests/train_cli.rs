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
    // --val-batches: read and checked before the first step
    let ind = ["--task", "induction", "--batch", "2", "--context", "4", "--eval-every", "1"];
    let val = |extra: &[&str]| run(&[&ind[..], extra].concat());
    let good = text("val.json", r#"{"steps": [{"inputs": [[1, 2, 3, 4], [4, 3, 2, 1]], "targets": [[2, 3, 4, 5], [3, 2, 1, 0]]}]}"#);
    assert!(run(&["--task", "induction", "--val-batches", &good]).contains("give --eval-every"));
    assert!(val(&["--val-batches", &bad]).contains("step 1 of --val-batches: every input and target row must hold"));
    assert!(val(&["--val-batches", &text("val.txt", "not json")]).contains("--val-batches is not valid"));
    assert!(val(&["--val-batches", &text("none.json", r#"{"steps": []}"#)]).contains("--val-batches holds no steps"));
    let e = val(&["--val-batches", &oob]);
    assert!(e.contains("holds batches of 1 x 2 ids; the run trains on 2 x 4"), "{e}");
    let far = text("far.json", r#"{"steps": [{"inputs": [[1, 2, 3, 4], [4, 3, 2, 1]], "targets": [[2, 3, 4, 5], [3, 2, 1, 64]]}]}"#);
    assert!(val(&["--val-batches", &far]).contains("step 1 of --val-batches: token id 64 is out of range"));
    assert!(val(&["--val-batches", "/nonexistent/val.json"]).contains("--val-batches"));
}

/// `--val-batches` scores one fixed set at every evaluation, against PyTorch: on
/// tests/fixtures/train/gpt2 (its init, batches and optimizer flags), a set holding step k's batch,
/// evaluated after step k - 1, is PyTorch's loss of step k (that batch under the parameters of k - 1
/// updates), within the fixtures' 2e-5 relative; a set of several batches scores the mean of their
/// losses, each scored alone at the same step (to 1e-12); and evaluating leaves the training losses
/// as they are without it, to the bit. On the reference and the fast CPU backends.
#[test]
fn val_batches_score_a_fixed_set_as_pytorch_does() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train");
    let bytes = std::fs::read(format!("{dir}/gpt2.expect.safetensors")).unwrap();
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let want: Vec<f64> = serde_json::from_str(&md.metadata().clone().unwrap()["losses"]).unwrap();
    let (init, batches) = (format!("{dir}/gpt2.init.safetensors"), format!("{dir}/gpt2.batches.json"));
    let steps: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&batches).unwrap()).unwrap();
    let set = |name: &str, ks: &[usize]| {
        let p = tmp(name);
        std::fs::write(&p, serde_json::json!({"steps": ks.iter().map(|&k| steps["steps"][k - 1].clone()).collect::<Vec<_>>()}).to_string())
            .unwrap();
        p.to_str().unwrap().to_string()
    };
    // train/train_fixtures.py's hyperparameters (the fixture's `hyper`)
    let flags = [
        "--model",
        &init,
        "--batches",
        &batches,
        "--steps",
        "10",
        "--lr",
        "0.01",
        "--min-lr",
        "0.001",
        "--warmup",
        "3",
        "--schedule",
        "cosine",
        "--betas",
        "0.9,0.95",
        "--eps",
        "1e-8",
        "--weight-decay",
        "0.1",
        "--clip",
        "1.9",
    ];
    for backend in ["reference", "cpu"] {
        let log = tmp(&format!("val-{backend}.jsonl"));
        let run = |extra: &[&str]| {
            let mut a = flags.to_vec();
            a.extend_from_slice(&["--backend", backend, "--log", log.to_str().unwrap()]);
            a.extend_from_slice(extra);
            train(&a).unwrap();
            lines(&log)
        };
        let column = |l: &[serde_json::Value], k: &str| l.iter().map(|x| x[k].as_f64()).collect::<Vec<_>>();
        let plain = column(&run(&[]), "loss");
        let mut alone = vec![];
        for k in [2, 5, 9] {
            let l = run(&["--val-batches", &set(&format!("val{k}.json"), &[k]), "--eval-every", "1"]);
            let v: Vec<f64> = column(&l, "val_loss").into_iter().map(|x| x.expect("every step evaluated")).collect();
            let (got, pt) = (v[k - 2], want[k - 1]);
            assert!((got - pt).abs() <= 2e-5 * pt, "{backend}: step {k}'s batch after {} steps: {got} vs PyTorch {pt}", k - 1);
            assert_eq!(column(&l, "loss"), plain, "{backend}: evaluating changed the training losses");
            alone.push(v);
        }
        let l = run(&["--val-batches", &set("val-2-5-9.json", &[2, 5, 9]), "--eval-every", "4"]);
        let evals: Vec<(usize, f64)> = l.iter().filter_map(|x| Some((x["step"].as_u64()? as usize, x["val_loss"].as_f64()?))).collect();
        assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), [4, 8, 10], "{backend}: every 4th step and the last");
        for (s, got) in evals {
            let mean = (alone[0][s - 1] + alone[1][s - 1] + alone[2][s - 1]) / 3.0;
            assert!((got - mean).abs() <= 1e-12 * mean, "{backend}: step {s}: the set's loss {got} vs the mean of its batches' {mean}");
        }
        assert_eq!(column(&l, "loss"), plain, "{backend}: evaluating changed the training losses");
    }
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

/// The dates task's vocabulary, as ids -> text.
fn dates_text(ids: &[u32]) -> String {
    let itos = tinyformer::train::dates::itos();
    ids.iter().filter(|&&i| i >= 3).map(|&i| itos[i as usize].as_str()).collect()
}

/// Sakamoto's weekday, 0 = Monday (independent of the generator's day count).
fn weekday(y: i32, m: u32, d: u32) -> usize {
    let t = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if m < 3 { y - 1 } else { y };
    let sunday_first = (y + y / 4 - y / 100 + y / 400 + t[m as usize - 1] + d as i32).rem_euclid(7) as usize;
    (sunday_first + 6) % 7
}

#[test]
fn the_dates_generator_writes_train_dates_py_pairs() {
    use tinyformer::train::data::Source;
    use tinyformer::train::dates::{self, Case, Date};
    // the vocabulary is the shipped model's
    let shipped: serde_json::Value = serde_json::from_str(&std::fs::read_to_string("models/dates-encdec.json").unwrap()).unwrap();
    let want: Vec<String> = shipped["tokenizer"]["itos"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(dates::itos(), want);
    // fixed days in a few formats, as train/dates.py renders them
    let d = |year, month, day| Date { year, month, day };
    for (date, fmt, case, text) in [
        (d(2021, 3, 3), 10, Case::AsIs, "Wed 3 Mar 2021"),
        (d(2021, 3, 21), 36, Case::AsIs, "the twenty-first of March 2021"),
        (d(2021, 3, 21), 39, Case::Upper, "SUNDAY, THE TWENTY-FIRST OF MARCH 2021"),
        (d(2021, 3, 21), 0, Case::Lower, "21st of march 2021"),
        (d(1999, 12, 31), 12, Case::AsIs, "Fri, Dec 31 '99"),
        (d(1999, 12, 31), 32, Case::AsIs, "31/12/99"),
        (d(1776, 7, 4), 15, Case::AsIs, "Thursday, the 4th of July 1776"),
        (d(2400, 2, 29), 28, Case::AsIs, "Feb 2400, 29"),
        (d(1307, 10, 13), 19, Case::AsIs, "13071013"),
        (d(1000, 1, 1), 10, Case::AsIs, "Wed 1 Jan 1000"),
        (d(2999, 12, 31), 10, Case::Upper, "TUE 31 DEC 2999"),
    ] {
        assert!(dates::can_write(fmt, date));
        assert_eq!(dates::render(date, fmt, case), text);
    }
    // the conventions: day-first slashes only past the 12th, two-digit years only 1950..2049
    assert!(!dates::can_write(32, d(2021, 3, 12)) && dates::can_write(32, d(2021, 3, 13)));
    assert!(!dates::can_write(2, d(1949, 12, 31)) && dates::can_write(2, d(2049, 12, 31)) && !dates::can_write(2, d(2050, 1, 1)));
    // the range and the calendar
    assert_eq!(Date::from_index(0), d(1000, 1, 1));
    assert_eq!(Date::from_index(dates::NUM_DAYS - 1), d(2999, 12, 31));
    assert_eq!(Date::from_iso("2400-02-29"), Some(d(2400, 2, 29)));
    assert_eq!(Date::from_iso("2100-02-29"), None);
    for i in (0..dates::NUM_DAYS).step_by(997) {
        let x = Date::from_index(i);
        assert_eq!(x.index(), Some(i));
        assert_eq!(x.weekday(), weekday(x.year, x.month, x.day), "{x:?}");
    }
    // generated pairs: a valid ISO target, a source that fits and names the target's year, and
    // the right weekday wherever one is written
    let names: Vec<String> = dates::DAYS.iter().flat_map(|w| [w.to_lowercase(), w[..3].to_lowercase()]).collect();
    let (mut with_weekday, mut lower, mut upper) = (0, 0, 0);
    for step in 1..=60 {
        let b = Source::Dates.train_batch(5, step, 0, 16, dates::TGT_LEN).unwrap();
        assert_eq!((b.b, b.t, b.ts), (16, dates::TGT_LEN, dates::SRC_LEN));
        for r in 0..b.b {
            let src = &b.src[r * b.ts..(r + 1) * b.ts];
            let len = src.iter().position(|&x| x == 0).unwrap_or(b.ts);
            assert!(src[len..].iter().all(|&x| x == 0), "right-padded with 0");
            let input = dates_text(src);
            let (tin, tout) = (&b.ids[r * b.t..(r + 1) * b.t], &b.targets[r * b.t..(r + 1) * b.t]);
            assert_eq!((tin[0], tout[b.t - 1]), (dates::BOS, dates::EOS));
            assert_eq!(tin[1..], tout[..b.t - 1]);
            let iso = dates_text(tout);
            let x = Date::from_iso(&iso).unwrap_or_else(|| panic!("{input:?} -> {iso:?} is not a date of the range"));
            assert!(input.contains(&x.year.to_string()) || input.contains(&format!("{:02}", x.year % 100)), "{input:?} -> {iso}");
            let first = input.split([' ', ',']).next().unwrap().to_lowercase();
            if let Some(w) = names.iter().position(|n| *n == first) {
                with_weekday += 1;
                assert_eq!(w / 2, weekday(x.year, x.month, x.day), "{input:?} -> {iso}");
            }
            lower += (input.chars().any(|c| c.is_ascii_lowercase()) && !input.chars().any(|c| c.is_ascii_uppercase())) as u32;
            upper += (input.chars().any(|c| c.is_ascii_uppercase()) && !input.chars().any(|c| c.is_ascii_lowercase())) as u32;
        }
    }
    assert!(with_weekday > 50 && lower > 50 && upper > 50, "{with_weekday} {lower} {upper}");
    // the longest input (a Wednesday the 27th of September, format 39) fits the source length
    let longest = (0..dates::FORMATS.len()).map(|f| dates::render(d(2023, 9, 27), f, Case::AsIs).len()).max().unwrap();
    assert_eq!(longest, 47);
}

#[test]
fn dates_validation_days_never_appear_in_training() {
    use std::collections::HashSet;
    use tinyformer::train::data::Source;
    use tinyformer::train::dates::{self, Date};
    let held = (0..dates::NUM_DAYS).filter(|&i| dates::is_validation(i)).count() as f64 / dates::NUM_DAYS as f64;
    assert!((0.045..0.055).contains(&held), "one day in 20 is held out: {held}");
    let day = |b: &tinyformer::train::data::Batch, r: usize| Date::from_iso(&dates_text(&b.targets[r * b.t..(r + 1) * b.t])).unwrap();
    let (mut train_days, mut train_inputs) = (HashSet::new(), HashSet::new());
    for step in 1..=400 {
        let b = Source::Dates.train_batch(11, step, 0, 32, dates::TGT_LEN).unwrap();
        assert_eq!(b, Source::Dates.train_batch(11, step, 0, 32, dates::TGT_LEN).unwrap(), "a function of (seed, step)");
        for r in 0..b.b {
            let x = day(&b, r);
            assert!(!dates::is_validation(x.index().unwrap()), "{x:?} is a validation day");
            train_days.insert(x);
            train_inputs.insert(dates_text(&b.src[r * b.ts..(r + 1) * b.ts]));
        }
    }
    assert_ne!(Source::Dates.train_batch(11, 1, 0, 32, 11).unwrap(), Source::Dates.train_batch(12, 1, 0, 32, 11).unwrap());
    for i in 0..50 {
        let b = Source::Dates.val_batch(11, i, 32, dates::TGT_LEN).unwrap();
        for r in 0..b.b {
            let x = day(&b, r);
            assert!(dates::is_validation(x.index().unwrap()) && !train_days.contains(&x), "{x:?}");
            assert!(!train_inputs.contains(&dates_text(&b.src[r * b.ts..(r + 1) * b.ts])));
        }
    }
    // the hand-written examples' days are held out
    for (year, month, day) in dates::EXTRA_DAYS {
        assert!(dates::is_validation(Date { year, month, day }.index().unwrap()));
    }
}

#[test]
fn an_encoder_decoder_learns_dates_and_generate_opens_it() {
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (out, log) = (tmp("dates.safetensors"), tmp("dates.jsonl"));
    #[rustfmt::skip]
    train(&[
        "--arch", "encdec", "--layers", "1", "--heads", "2", "--dim", "32", "--context", "48", "--batch", "8",
        "--steps", "40", "--task", "dates", "--lr", "3e-3", "--warmup", "4", "--log-every", "1", "--eval-every", "40",
        "--eval-batches", "2", "--backend", "cpu", "--out", &s(&out), "--log", &s(&log),
    ])
    .unwrap();
    let l = lines(&log);
    let loss: Vec<f64> = l.iter().map(|x| x["loss"].as_f64().unwrap()).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert_eq!(loss.len(), 40);
    assert!(mean(&loss[35..]) < mean(&loss[..5]) - 0.5, "the loss falls: {loss:?}");
    assert!(l[39]["val_loss"].as_f64().is_some_and(f64::is_finite));
    let ck = tinyformer::model::checkpoint::Checkpoint::from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(ck.config.src_vocab_size, 65);
    assert!(ck.tokenizer.as_deref().is_some_and(|t| t.contains("\"chars\"")));
    let g =
        tinyformer::cli::run(["tinyformer", "generate", "--model", &s(&out), "--prompt", "3rd of March 2021", "--max-new-tokens", "11"])
            .unwrap();
    let g: serde_json::Value = serde_json::from_str(&g).unwrap();
    assert!(g["ids"].as_array().is_some_and(|a| a.len() > 1) && g["text"].is_string(), "{g}");
    // the task's refusals, one line each
    let tiny = ["--layers", "1", "--heads", "2", "--dim", "16", "--steps", "1"];
    let refuse = |extra: &[&str]| {
        let mut a: Vec<&str> = tiny.to_vec();
        a.extend_from_slice(extra);
        let e = train(&a).unwrap_err();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    };
    assert!(refuse(&["--arch", "gpt", "--task", "dates"]).contains("encoder-decoder"));
    assert!(refuse(&["--arch", "encdec", "--task", "induction"]).contains("--task dates or --batches"));
    assert!(refuse(&["--arch", "encdec", "--task", "dates", "--context", "32"]).contains("raise --context"));
    assert!(refuse(&["--arch", "encdec", "--task", "dates", "--vocab", "80"]).contains("--vocab"));
}

#[test]
fn an_moe_arch_makes_a_checkpoint_that_loads() {
    let out = tmp("moe.safetensors");
    #[rustfmt::skip]
    train(&[
        "--arch", "moe", "--layers", "1", "--heads", "2", "--dim", "16", "--experts", "4", "--top-k", "2", "--context", "8",
        "--batch", "2", "--task", "induction", "--vocab", "9", "--steps", "2", "--backend", "reference",
        "--out", out.to_str().unwrap(),
    ])
    .unwrap();
    let m = Model::load(&CpuBackend, &std::fs::read(&out).unwrap()).unwrap();
    let moe = m.cfg.moe.as_ref().unwrap();
    assert_eq!((moe.num_experts, moe.top_k, moe.expert_dim), (4, 2, 32));
}

/// A learning rate of 1e30 makes step 2's gradient NaN, at a step that reads nothing back: the run
/// stops at the next read (the save at step 3 or the log at step 6) naming step 2 and the tensor,
/// and a checkpoint saved before it is kept and says so.
#[test]
fn a_non_finite_gradient_between_logged_steps_stops_the_run_naming_the_step() {
    let out = tmp("nan.safetensors");
    let base = ["--arch", "gpt", "--task", "induction", "--dim", "16", "--context", "8", "--batch", "2", "--steps", "6"];
    let blow = ["--lr", "1e30", "--warmup", "0", "--schedule", "constant", "--log-every", "6"];
    let e = train(&[&base[..], &blow].concat()).expect_err("the run must stop");
    assert_eq!(
        e,
        "step 2: the gradient of token_embedding.weight is not finite; the parameters were not updated from that step on (found at step 6)"
    );
    let e = train(&[&base[..], &blow, &["--out", out.to_str().unwrap(), "--save-every", "1"]].concat()).expect_err("the run must stop");
    assert!(
        e.starts_with("step 2: the gradient of token_embedding.weight is not finite") && e.ends_with("--out keeps the model after step 1"),
        "{e}"
    );
    // what --out holds opens: the model after step 1
    Model::load(&CpuBackend, &std::fs::read(&out).unwrap()).unwrap();
}

/// `--model` opens the formats every command opens: a Hugging Face directory (GPT-2, a bf16
/// Llama in three shards, GPT-NeoX with the sequential block: partial rotary, erf GELU, no attention
/// biases) and a llama2.c .bin. The first step's loss on one row of a text equals
/// what `eval` scores on that text (the inference forward, held to `transformers` by
/// tests/hf_models.rs), and the --out it writes opens as our checkpoint with the model's tokenizer.
#[test]
fn a_foreign_model_trains_from_its_own_files() {
    let text = "Hello world, this is a test of the engine.";
    let file = tmp("foreign.txt");
    std::fs::write(&file, text).unwrap();
    let run = |argv: &[&str]| -> serde_json::Value {
        serde_json::from_str(&tinyformer::cli::run(argv.to_vec()).unwrap_or_else(|e| panic!("{argv:?}: {e}"))).unwrap()
    };
    let f = file.to_str().unwrap();
    for (model, tokenizer) in [
        ("tests/fixtures/hf_models/gpt2", "tests/fixtures/hf_models/gpt2/tokenizer.json"),
        ("tests/fixtures/hf_models/llama_untied_bf16", "tests/fixtures/hf_models/llama_untied_bf16/tokenizer.json"),
        ("tests/fixtures/hf_models/llama_tied/model.bin", "tests/fixtures/hf_models/llama_tied/tokenizer.bin"),
        ("tests/fixtures/hf_models/pythia_sequential", "tests/fixtures/hf_models/pythia_sequential/tokenizer.json"),
    ] {
        let ids: Vec<u32> =
            serde_json::from_value(run(&["tinyformer", "tokenizer", "encode", "--tokenizer", tokenizer, "--text-file", f])["ids"].clone())
                .unwrap();
        let eval = run(&["tinyformer", "eval", "--model", model, "--text-file", f, "--backend", "reference"]);
        assert_eq!(eval["predicted_tokens"].as_u64().unwrap() as usize, ids.len() - 1, "{model}: eval scores every next token");
        let batches = tmp("foreign.batches.json");
        let step = serde_json::json!({"steps": [{"inputs": [&ids[..ids.len() - 1]], "targets": [&ids[1..]]}]});
        std::fs::write(&batches, step.to_string()).unwrap();
        let (out, log) = (tmp("foreign.safetensors"), tmp("foreign.jsonl"));
        let (b, o, l) = (batches.to_str().unwrap(), out.to_str().unwrap(), log.to_str().unwrap());
        train(&["--model", model, "--batches", b, "--steps", "1", "--backend", "reference", "--out", o, "--log", l])
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        let (got, want) = (lines(&log)[0]["loss"].as_f64().unwrap(), eval["loss_per_token"].as_f64().unwrap());
        // the training forward stores f32 between ops, eval's reference f64: 1e-5 relative
        assert!((got - want).abs() <= 1e-5 * want, "{model}: first step loss {got} vs eval {want}");
        Model::load(&CpuBackend, &std::fs::read(&out).unwrap()).unwrap_or_else(|e| panic!("{model}: --out does not open: {e}"));
        // the weights, gradients and moments are checked against the budget before a tensor is read
        let e = train(&["--model", model, "--batches", b, "--steps", "1", "--memory-budget", "100000"]).expect_err("over the budget");
        assert!(e.contains("both Adam moments need") && e.contains("--memory-budget is") && !e.contains('\n'), "{model}: {e}");
        let again = run(&["tinyformer", "tokenizer", "encode", "--tokenizer", o, "--text-file", f]);
        assert_eq!(again["ids"], serde_json::json!(ids), "{model}: --out carries the model's tokenizer");
    }
    // GPT-NeoX with the parallel residual runs but does not train: one line, before any step
    let (b, o) = (tmp("foreign.batches.json"), tmp("parallel.safetensors"));
    let e = train(&[
        "--model",
        "tests/fixtures/hf_models/pythia_parallel",
        "--batches",
        b.to_str().unwrap(),
        "--steps",
        "1",
        "--out",
        o.to_str().unwrap(),
    ])
    .expect_err("a parallel residual is not trained");
    assert!(e.contains("training a model with a parallel residual") && !e.contains('\n'), "{e}");
}
