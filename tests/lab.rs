//! The page's training lab (src/train/lab.rs) runs what `tinyformer train` runs with the flags the
//! lab shows (`LabPlan::cli_args`): the same losses on the same backend; its refusals
//! are one line; its induction score is the Inspect view's.

use std::path::PathBuf;

use tinyformer::fastcpu::FastCpuBackend;
use tinyformer::train::lab::{induction_score, probe, Lab, LabPlan, LabSpec, ProbeSample, PRESETS};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tf-lab-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn small(preset: &str) -> LabSpec {
    LabSpec {
        preset: preset.into(),
        layers: Some(1),
        heads: Some(2),
        dim: Some(16),
        context: Some(if preset == "dates" { 48 } else { 12 }),
        vocab: Some(12),
        batch: Some(3),
        steps: Some(12),
        seed: Some(5),
        ..LabSpec::default()
    }
}

/// The CLI's logged losses (step -> loss) for `args` plus logging every `every` steps.
fn cli_losses(args: &[String], every: u32) -> Vec<(u64, f64)> {
    let log = tmp(&format!("{}.jsonl", args[2]));
    let mut argv: Vec<String> = vec!["tinyformer".into()];
    argv.extend(args.iter().cloned());
    argv.extend(["--log-every".into(), every.to_string(), "--log".into(), log.to_str().unwrap().into()]);
    tinyformer::cli::run(argv).unwrap();
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn a_lab_run_is_the_cli_run_of_its_flags() {
    let text = "to be or not to be, that is the question: whether 'tis nobler in the mind to suffer. ".repeat(20);
    let text_file = tmp("text.txt");
    std::fs::write(&text_file, &text).unwrap();
    for preset in PRESETS {
        let plan = LabPlan::new(&small(preset), Some(&text)).unwrap();
        let args = plan.cli_args(text_file.to_str().unwrap());
        let mut lab = Lab::new(FastCpuBackend::default(), plan).unwrap();
        // in chunks, as the worker runs it
        let mut logs = vec![];
        for k in [1, 5, 2, 100] {
            logs.extend(pollster::block_on(lab.run(k, 4, &|| 0.0)).unwrap());
        }
        assert!(lab.done());
        let cli = cli_losses(&args, 4);
        assert_eq!(cli.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 4, 8, 12], "{preset}: the CLI's logged steps");
        for (step, loss) in cli {
            let mine = logs.iter().find(|l| l.step as u64 == step).unwrap_or_else(|| panic!("{preset}: step {step} logged"));
            // the same ops in the same order; the f64 sum of the logged loss may round apart in its last bit
            assert!((mine.loss - loss).abs() <= 1e-12 * loss.abs(), "{preset}: step {step}: {} vs the CLI's {loss}", mine.loss);
        }
        assert!(logs.iter().any(|l| l.val_loss.is_some()), "{preset}: the last step is evaluated");
        // the checkpoint opens, and the detector reads it
        let bytes = pollster::block_on(lab.checkpoint()).unwrap();
        let s = pollster::block_on(induction_score(&bytes)).unwrap();
        if preset != "dates" {
            assert_eq!(s.heads.len(), 2);
            assert!((0.0..=1.0).contains(&s.best) && s.heads.contains(&s.best));
        }
    }
}

#[test]
fn pausing_between_chunks_changes_nothing() {
    let run = |chunks: &[u32]| {
        let mut lab = Lab::new(FastCpuBackend::default(), LabPlan::new(&small("induction"), None).unwrap()).unwrap();
        let mut logs = vec![];
        for &k in chunks {
            logs.extend(pollster::block_on(lab.run(k, 3, &|| 0.0)).unwrap());
        }
        logs.into_iter().filter(|l| l.step % 3 == 0).map(|l| l.loss).collect::<Vec<_>>()
    };
    assert_eq!(run(&[12]), run(&[2, 1, 7, 2]));
}

#[test]
fn the_lr_changes_from_the_next_step() {
    let mut lab = Lab::new(FastCpuBackend::default(), LabPlan::new(&small("induction"), None).unwrap()).unwrap();
    pollster::block_on(lab.run(2, 1, &|| 0.0)).unwrap();
    lab.set_lr(0.01).unwrap();
    let l = pollster::block_on(lab.run(1, 1, &|| 0.0)).unwrap();
    assert_eq!(l[0].lr, 0.01);
    assert!(lab.set_lr(f32::NAN).unwrap_err().to_string().contains("learning rate"));
}

#[test]
fn bad_settings_and_texts_are_refused_in_one_line() {
    let e = |spec: LabSpec, text: Option<&str>| LabPlan::new(&spec, text).err().unwrap().to_string();
    assert!(e(LabSpec { preset: "nope".into(), ..LabSpec::default() }, None).contains("induction, shakespeare, llama, moe, dates"));
    assert!(e(LabSpec { context: Some(40), ..small("dates") }, None).contains("at least 48"));
    assert!(e(small("shakespeare"), Some("")).contains("empty"));
    assert!(e(small("shakespeare"), Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")).contains("one symbol"));
    assert!(e(small("shakespeare"), Some("abcab")).contains("lower the context"));
    assert!(e(LabSpec { dim: Some(18), heads: Some(4), ..small("induction") }, None).contains("multiple"));
    assert!(e(LabSpec { lr: Some(-1.0), ..small("induction") }, None).contains("learning rate"));
    let plan = LabPlan::new(&small("induction"), None).unwrap();
    let m = plan.check_memory(1024, u64::MAX).unwrap_err().to_string();
    assert!(m.contains("over the budget") && !m.contains('\n') && !m.contains("--"), "{m}");
    assert!(plan.check_memory(1 << 30, 16).unwrap_err().to_string().contains("per buffer"));
    assert!(plan.check_memory(1 << 30, u64::MAX).is_ok());
}

/// The induction preset at its defaults (what the page starts with) grows an induction head on its
/// last layer, fed by a previous-token head on its first: the Inspect score, measured every 100 steps
/// as the page does, reaches the 0.4 before the preset's last step. Measured with this seed:
/// 0.38 at step 600, >= 0.4 by step 1,500 (in 3 of 3 seeds); the page runs the same steps on wasm.
#[test]
fn the_induction_preset_grows_an_induction_head_on_its_last_layer() {
    let plan = LabPlan::new(&LabSpec { preset: "induction".into(), ..LabSpec::default() }, None).unwrap();
    let steps = plan.settings.steps;
    let mut lab = Lab::new(FastCpuBackend::default(), plan).unwrap();
    let mut seen = vec![];
    let found = loop {
        let logs = pollster::block_on(lab.run(100, 100, &|| 0.0)).unwrap();
        let step = logs.last().unwrap().step;
        let s = pollster::block_on(induction_score(&pollster::block_on(lab.checkpoint()).unwrap())).unwrap();
        seen.push((step, s.best, s.previous_token));
        if s.best >= 0.4 {
            break Some((step, s));
        }
        if lab.done() {
            break None;
        }
    };
    println!("induction score by step (best of the last layer, best previous-token of the first): {seen:?}");
    let (step, s) = found.unwrap_or_else(|| panic!("no induction head in {steps} steps: {seen:?}"));
    assert!(s.previous_token >= 0.3, "a previous-token head feeds it (step {step}: {})", s.previous_token);
    assert!(seen[0].1 < 0.1, "the score starts low ({})", seen[0].1);
}

/// The lab's sample at a temperature (the page's control): 0 is the engine's greedy continuation;
/// above 0 it is the engine's sampler, the same for the same seed (the lab gives the step), and on a
/// barely trained character model (a nearly flat distribution) it differs from greedy; a bad
/// temperature is refused in one line.
#[test]
fn the_probe_samples_at_a_temperature_reproducibly() {
    use tinyformer::model::run::GenConfig;
    let text = "to be or not to be, that is the question: whether 'tis nobler in the mind to suffer. ".repeat(20);
    let plan = LabPlan::new(&LabSpec { context: Some(32), ..small("shakespeare") }, Some(&text)).unwrap();
    let tok = plan.tokenizer.clone().unwrap();
    let mut lab = Lab::new(FastCpuBackend::default(), plan).unwrap();
    pollster::block_on(lab.run(3, 3, &|| 0.0)).unwrap();
    let bytes = pollster::block_on(lab.checkpoint()).unwrap();
    let at = |temperature: f32, seed: u64| {
        let p = pollster::block_on(probe(&bytes, Some(&tok), Some("to be"), ProbeSample { temperature, seed })).unwrap();
        assert_eq!(p.sample_temperature, temperature);
        p.sample.expect("a text model's sample")
    };
    // greedy: the engine's own greedy generation from the same prompt, whatever the seed
    let budget = tinyformer::model::memory::Budget::page();
    let mut s = pollster::block_on(tinyformer::session::Session::load(&tinyformer::session::Device::Cpu, &bytes, &budget)).unwrap();
    let start = tok.encode("to be").ids;
    let gen = GenConfig { max_new_tokens: 32 - start.len(), ..GenConfig::default() };
    let greedy = tok.decode(&pollster::block_on(s.generate(&start, None, gen)).unwrap()).unwrap();
    assert_eq!(at(0.0, 7), greedy);
    assert_eq!(at(0.0, 8), greedy, "greedy ignores the seed");
    // sampled: reproducible for a seed, not greedy on a nearly flat distribution
    let hot = at(1.5, 7);
    assert!(hot.starts_with("to be"), "{hot:?}");
    assert_eq!(at(1.5, 7), hot, "the same seed and temperature give the same sample");
    assert_ne!(hot, greedy, "a sample at 1.5 of a barely trained model is not the greedy one");
    assert_ne!(at(1.5, 8), hot, "another step's seed draws another sample");
    println!("greedy: {greedy:?}\nT=1.5:  {hot:?}");
    for bad in [f32::NAN, -0.5, 2.5, f32::INFINITY] {
        let e = pollster::block_on(probe(&bytes, Some(&tok), Some("to be"), ProbeSample { temperature: bad, seed: 0 }))
            .unwrap_err()
            .to_string();
        assert!(e.contains("temperature") && !e.contains('\n'), "{bad}: {e}");
    }
}

/// The probe the page draws (train::lab::probe), on a few steps of each preset: every head's scores
/// on the Induction test, one attention map per layer of the probe sequence, a sample of a text
/// model, the experts' load (a share per expert that sums to 1 in every layer), the dates accuracy.
#[test]
fn the_probe_reads_what_each_preset_shows() {
    let text = "to be or not to be, that is the question: whether 'tis nobler in the mind to suffer. ".repeat(20);
    for preset in PRESETS {
        let plan = LabPlan::new(&small(preset), Some(&text)).unwrap();
        let tok = plan.tokenizer.clone();
        let (layers, heads) = (plan.settings.layers, plan.settings.heads);
        let mut lab = Lab::new(FastCpuBackend::default(), plan).unwrap();
        pollster::block_on(lab.run(5, 5, &|| 0.0)).unwrap();
        let bytes = pollster::block_on(lab.checkpoint()).unwrap();
        let p = pollster::block_on(probe(&bytes, tok.as_ref(), Some("to be"), ProbeSample::default())).unwrap();
        if preset == "dates" {
            let d = p.dates.as_ref().expect("the dates accuracy");
            assert_eq!(d.of, 32);
            assert!(d.exact <= d.of && !d.examples.is_empty());
            assert!(p.induction.is_none() && p.maps.is_empty());
            continue;
        }
        assert_eq!((p.induction_heads.len(), p.induction_heads[0].len()), (layers, heads), "{preset}");
        assert_eq!(p.previous_token_heads.len(), layers);
        assert_eq!(p.induction.as_ref().unwrap().heads, p.induction_heads[layers - 1]);
        assert_eq!(p.maps.len(), layers, "{preset}: one map per layer");
        let t = p.tokens.len();
        for m in &p.maps {
            assert_eq!((m.heads, m.rows, m.cols, m.data.len()), (heads, t, t, heads * t * t));
            for row in m.data.chunks(t) {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-4, "{preset}: an attention row sums to {sum}");
            }
        }
        match preset {
            "induction" => assert!(p.sample.is_none() && t == 12, "{preset}: the Induction test's sequence ({t} tokens)"),
            _ => {
                let sample = p.sample.as_ref().expect("a text model's sample");
                // up to context - prompt new tokens (fewer when the model ends its text)
                assert!(sample.starts_with("to be") && sample.chars().count() <= 12 && t <= 12, "{preset}: {sample:?} ({t} tokens)");
            }
        }
        match preset {
            "moe" => {
                let load = p.expert_load.as_ref().expect("the experts' load");
                assert_eq!(load.len(), layers);
                for row in load {
                    assert_eq!(row.len(), 4);
                    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
                }
            }
            _ => assert!(p.expert_load.is_none()),
        }
    }
}

/// A run saved after a chunk and resumed in a new lab (as the page does after a reload) takes the
/// same steps as the run that never stopped: the same losses to the last bit, its log and changed
/// learning rate kept. A snapshot of another run's settings, or a damaged one, is refused in one line.
#[test]
fn a_saved_run_resumes_where_it_stopped() {
    let text = "to be or not to be, that is the question: whether 'tis nobler in the mind to suffer. ".repeat(20);
    for preset in ["induction", "moe", "dates"] {
        let plan = || LabPlan::new(&small(preset), Some(&text)).unwrap();
        let mut straight = Lab::new(FastCpuBackend::default(), plan()).unwrap();
        pollster::block_on(straight.run(5, 1, &|| 0.0)).unwrap();
        straight.set_lr(0.002).unwrap();
        let snap = pollster::block_on(straight.snapshot()).unwrap();
        let rest: Vec<f64> = pollster::block_on(straight.run(7, 1, &|| 0.0)).unwrap().iter().map(|l| l.loss).collect();

        let mut resumed = Lab::resume(FastCpuBackend::default(), plan(), &snap).unwrap();
        assert_eq!(resumed.tr.step, 5, "{preset}");
        assert_eq!(resumed.log.len(), 5, "{preset}: the log comes back");
        assert_eq!(resumed.plan.settings.lr, 0.002, "{preset}: the changed learning rate comes back");
        let again: Vec<f64> = pollster::block_on(resumed.run(7, 1, &|| 0.0)).unwrap().iter().map(|l| l.loss).collect();
        assert_eq!(again, rest, "{preset}: the resumed run's losses");
        assert!(resumed.done());
    }
    let snap = {
        let mut lab = Lab::new(FastCpuBackend::default(), LabPlan::new(&small("induction"), None).unwrap()).unwrap();
        pollster::block_on(lab.run(2, 1, &|| 0.0)).unwrap();
        pollster::block_on(lab.snapshot()).unwrap()
    };
    let other = LabPlan::new(&LabSpec { seed: Some(6), ..small("induction") }, None).unwrap();
    let e = Lab::resume(FastCpuBackend::default(), other, &snap).err().unwrap().to_string();
    assert!(e.contains("other settings") && !e.contains('\n'), "{e}");
    let e = Lab::resume(FastCpuBackend::default(), LabPlan::new(&small("induction"), None).unwrap(), &snap[..snap.len() / 2])
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("the saved run cannot be resumed") && !e.contains('\n'), "{e}");
}
