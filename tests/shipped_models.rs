//! The shipped models (models/*.safetensors) against what PyTorch recorded at export
//! (models/<name>.json): greedy continuations token for token on the CPU and the GPU path, the date
//! model's 30 fixed examples exactly, and the loss on a held-out slice within 1e-3.
//! A missing shipped model is a failure, not a skip.

use std::sync::Arc;

use serde_json::Value;
use tinyformer::fastcpu::FastCpuBackend;
use tinyformer::gpu::Gpu;
use tinyformer::model::config::Arch;
use tinyformer::model::constraint::Constraint;
use tinyformer::model::inspect::{Ablation, AblationKind};
use tinyformer::model::run::GenConfig;
use tinyformer::model::{Backend, CpuBackend, GpuBackend, MapKind, Model};

pub const SHIPPED: &[&str] = &["shakespeare-llama", "shakespeare-gpt", "shakespeare-moe", "dates-encdec", "induction-attn"];

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

/// YYYY-MM-DD naming a real day of the proleptic Gregorian calendar, year 1000..=2999.
fn valid_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r.clone()].bytes().all(|c| c.is_ascii_digit()).then(|| s[r].parse::<u32>().unwrap());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else { return false };
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let dim = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1000..=2999).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= dim[m as usize - 1]
}

async fn check_model<B: Backend>(b: &mut B, name: &str, side: &Value, bytes: &[u8]) {
    let (mut m, model_text) = tinyformer::session::text::load(b, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    if m.cfg.arch == Arch::EncoderDecoder {
        let examples = side["examples"].as_array().expect("examples");
        assert!(examples.len() >= 30, "{name}: {} examples", examples.len());
        let tok = model_text.tokenizer.clone().expect("the date model carries its tokenizer");
        let out_tok = tok.target_tokenizer().unwrap_or_else(|| tok.clone());
        let (pad, bos, eos) = out_tok.special_ids().unwrap();
        let translate = async |b: &mut B, m: &mut Model<B>, src: &[u32], kv_cache: bool, constraint: &Option<Constraint>| {
            let cfg = GenConfig { max_new_tokens: 16, kv_cache, constraint: constraint.clone(), ..GenConfig::default() };
            let got = m.generate(b, &[], Some(src), cfg).await.unwrap();
            let text = out_tok.decode(&got.iter().copied().filter(|&i| i != pad && i != bos && i != eos).collect::<Vec<_>>()).unwrap();
            (got, text)
        };
        for ex in examples {
            let input = ex["input"].as_str().unwrap();
            let src = tok.encode(input).ids;
            assert_eq!(src, ids(&ex["src_ids"]), "{name}: Rust tokenizes {input:?} differently from the exporter");
            for kv_cache in [true, false] {
                let (got, text) = translate(b, &mut m, &src, kv_cache, &model_text.constraint).await;
                assert_eq!(got, ids(&ex["greedy_ids"]), "{name}: {input:?} (kv_cache={kv_cache})");
                assert_eq!(text, ex["expected"].as_str().unwrap(), "{name}: {input:?} on {}", b.kind());
            }
        }
        // The examples must cover the dates learners found mistranslated, whatever the sidecar holds: historic and future
        // years, day-first slashes (first number over 12) and written-out ordinals.
        let expected: Vec<(&str, &str)> =
            examples.iter().map(|e| (e["input"].as_str().unwrap(), e["expected"].as_str().unwrap())).collect();
        let year = |iso: &str| iso[..4].parse::<u32>().unwrap();
        assert!(expected.iter().filter(|(_, e)| year(e) < 1900).count() >= 5, "{name}: too few historic years");
        assert!(expected.iter().filter(|(_, e)| year(e) > 2100).count() >= 5, "{name}: too few future years");
        let day_first = |i: &str| i.contains('/') && i.split('/').next().unwrap().parse::<u32>().is_ok_and(|n| n > 12 && n <= 31);
        assert!(expected.iter().filter(|(i, _)| day_first(i)).count() >= 3, "{name}: too few day-first slashes");
        const WORDS: [&str; 15] = [
            "first",
            "second",
            "third",
            "fourth",
            "fifth",
            "sixth",
            "seventh",
            "eighth",
            "ninth",
            "tenth",
            "eleventh",
            "twelfth",
            "teenth",
            "twentieth",
            "thirtieth",
        ];
        let worded = |i: &str| WORDS.iter().any(|w| i.to_lowercase().contains(w));
        assert!(expected.iter().filter(|(i, _)| worded(i)).count() >= 3, "{name}: too few written-out ordinals");
        // The dates learners reported as mistranslated and the page's example prompt (www/models.json), checked
        // here by name (not through the sidecar).
        for (input, want) in [
            ("July 4, 1776", "1776-07-04"),
            ("31/12/1999", "1999-12-31"),
            ("11.11.2150", "2150-11-11"),
            ("1988/1/15", "1988-01-15"),
            ("the third of March 2021", "2021-03-03"),
            ("March 3, 2021", "2021-03-03"),
        ] {
            let (_, text) = translate(b, &mut m, &tok.encode(input).ids, true, &model_text.constraint).await;
            assert_eq!(text, want, "{name}: {input:?} on {}", b.kind());
        }
        // Inputs that name no real day: the checkpoint declares the "iso_date" output constraint, so the
        // output is still a valid calendar date; without it the model copies the impossible day.
        assert!(model_text.constraint.is_some(), "{name}: the checkpoint declares no output constraint");
        let mut unconstrained_invalid = 0;
        for input in ["April 31, 2021", "30 Feb 1900", "29/02/1900"] {
            let (got, text) = translate(b, &mut m, &tok.encode(input).ids, true, &model_text.constraint).await;
            assert!(valid_iso_date(&text), "{name}: {input:?} gave {text:?}, not a valid date, on {}", b.kind());
            assert_eq!(got.last(), Some(&eos), "{name}: {input:?} must end with EOS");
            let (_, free) = translate(b, &mut m, &tok.encode(input).ids, true, &None).await;
            unconstrained_invalid += usize::from(!valid_iso_date(&free));
            println!("{name} {}: {input:?} -> {text} (unconstrained: {free})", b.kind());
        }
        assert!(unconstrained_invalid > 0, "{name}: the constraint changed nothing on impossible dates");
        check_cross_alignment(b, &mut m, name, &side["cross_attention"]["check"]).await;
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
        if let Some(t) = &model_text.tokenizer {
            assert_eq!(t.encode(side["prompt"].as_str().unwrap()).ids, prompt, "{name}: Rust tokenizes the prompt differently");
        }
        if let Some(it) = side.get("induction_test") {
            check_induction(b, &mut m, name, it).await;
            return;
        }
        let slice = &side["eval_slice"];
        let sids = ids(&slice["ids"]);
        if let Some(t) = &model_text.tokenizer {
            assert_eq!(t.encode(slice["text"].as_str().unwrap()).ids, sids, "{name}: Rust tokenizes the eval slice differently");
        }
        let (loss, _) = m.eval_loss(b, &sids).await.unwrap();
        let want_loss = slice["loss_per_token"].as_f64().unwrap();
        assert!((loss - want_loss).abs() <= 1e-3, "{name}: eval slice loss {loss} vs PyTorch {want_loss}");
        println!("{name} {}: greedy {} tokens equal, eval loss {loss:.5} (PyTorch {want_loss:.5})", b.kind(), n);
    }
}

/// The induction model (train/induction_model.py): on the sidecar's repeated sequence, every head score
/// within 1e-4 of PyTorch's and the halves' losses within 1e-3, with and without the top induction head
/// zero-ablated; then what the Inspect view's Induction test shows on its own sequence (seed 0): an
/// induction head on the last layer (score >= 0.4, the bar) and a second half that it alone
/// predicts (ablating it puts the loss back up by over 3 nats).
async fn check_induction<B: Backend>(b: &mut B, m: &mut Model<B>, name: &str, it: &Value) {
    let seq = ids(&it["ids"]);
    let n = seq.len() / 2;
    let mean = |s: &[f32]| s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
    let top = (it["top_induction"][0].as_u64().unwrap() as usize, it["top_induction"][1].as_u64().unwrap() as usize);
    let ab = Ablation { heads: vec![top], kind: AblationKind::Zero, experts: vec![], mask_cells: vec![], cross_cells: vec![] };
    let r = m.inspect(b, &seq, None, Some(&ab)).await.unwrap();
    let k = b.kind();
    for (kind, got) in [
        ("previous_token", &r.head_scores.previous_token),
        ("duplicate_token", &r.head_scores.duplicate_token),
        ("induction", &r.head_scores.induction),
    ] {
        let got: Vec<f64> = got.iter().flatten().map(|&x| x as f64).collect();
        let want: Vec<f64> = it["head_scores"][kind]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len(), "{name} {k}: {kind} heads");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4, "{name} {k}: {kind} score {g} vs PyTorch {w}");
        }
    }
    let ablated = r.ablation.as_ref().map(|a| mean(&a.surprise[n..])).expect("the ablated run");
    for (what, got) in
        [("loss_first_half", mean(&r.surprise[1..n])), ("loss_second_half", mean(&r.surprise[n..])), ("loss_second_half_ablated", ablated)]
    {
        let want = it[what].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-3, "{name} {k}: {what} {got} vs PyTorch {want}");
    }
    let t = m.induction_test(b, n, 0, None, Some(&ab)).await.unwrap();
    let (layer, head, score) = t.top_induction[0];
    let (second, ablated) = (t.loss_second_half, t.loss_second_half_ablated.unwrap());
    println!("{name} {k}: induction head L{layer}H{head} {score:.3}; second half {second:.3} nats, {ablated:.3} with it ablated");
    assert_eq!((layer, head), top, "{name} {k}: the Inspect test's top induction head");
    assert!(layer == m.cfg.num_layers - 1 && score >= 0.4, "{name} {k}: induction score {score} on layer {layer}");
    assert!(ablated > second + 3.0, "{name} {k}: ablating the induction head moves the second half's loss only {second} -> {ablated}");
}

/// Share of the date model's year digits that the cross-attention reads from the input's year:
/// the issue-8 criterion, re-measured on the shipped weights.
const MIN_YEAR_ALIGNMENT: f64 = 0.98;

/// Teacher-forced on each check item (source, BOS + ISO answer), the cross-attention of the criterion layer
/// averaged over heads: at the steps that predict the year digits the input spells (all 4, or the last 2 of
/// a two-digit year), is the argmax source position inside the input's year field? The share of items where all 4 are must equal PyTorch's (within one item, for
/// float ties) and reach MIN_YEAR_ALIGNMENT.
async fn check_cross_alignment<B: Backend>(b: &mut B, m: &mut Model<B>, name: &str, check: &Value) {
    let layer = check["layer"].as_u64().expect("check.layer") as usize;
    let items = check["items"].as_array().expect("check.items");
    assert!(items.len() >= 200, "{name}: {} alignment items", items.len());
    let mut year_ok = 0usize;
    for it in items {
        let (src, tgt) = (ids(&it["src_ids"]), ids(&it["tgt_ids"]));
        let span = &it["spans"]["year"];
        let (lo, hi) = (span[0].as_u64().unwrap() as usize, span[1].as_u64().unwrap() as usize);
        let out = m.forward(b, &src, Some(&tgt)).await.unwrap();
        let map = out.attention.iter().find(|a| a.kind == MapKind::Cross && a.layer == layer).expect("a cross-attention map");
        assert_eq!((map.rows, map.cols), (tgt.len(), src.len()));
        // a two-digit year ("'21") spells only the last two digits; the century has no source
        let rows = if hi - lo == 2 { 2..4 } else { 0..4 };
        let inside = rows.into_iter().all(|row| {
            let mean: Vec<f32> =
                (0..map.cols).map(|k| (0..map.heads).map(|h| map.data[(h * map.rows + row) * map.cols + k]).sum::<f32>()).collect();
            let argmax = (0..map.cols).fold(0, |best, k| if mean[k] > mean[best] { k } else { best });
            (lo..hi).contains(&argmax)
        });
        year_ok += inside as usize;
    }
    let share = year_ok as f64 / items.len() as f64;
    let want = check["pytorch_inputs_all_year_digits_in_field"].as_f64().unwrap();
    println!("{name} {}: year digits aligned with the year field on {share:.4} of {} inputs (PyTorch {want:.4})", b.kind(), items.len());
    assert!((share - want).abs() <= 1.0 / items.len() as f64 + 1e-9, "{name}: alignment {share} vs PyTorch {want}");
    assert!(share >= MIN_YEAR_ALIGNMENT, "{name}: only {share} of the inputs read their year digits from the year field");
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
    let mut b = FastCpuBackend::default();
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

/// A checkpoint naming an output constraint the core does not know is refused at load, in one line.
#[test]
fn unknown_output_constraint_is_a_one_line_load_error() {
    let (_, mut bytes) = load_sidecar("dates-encdec");
    let (from, to) = (b"\"output_constraint\":\"iso_date\"", b"\"output_constraint\":\"us_dates\"");
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the dates checkpoint declares iso_date");
    bytes[at..at + to.len()].copy_from_slice(to);
    let e = tinyformer::session::text::load(&CpuBackend, &bytes).err().expect("an unknown constraint must not load").to_string();
    assert!(e.contains("unknown output constraint") && e.contains("us_dates") && !e.contains('\n'), "{e}");
}
