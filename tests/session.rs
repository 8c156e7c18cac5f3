//! The session core (src/session/) that the page and the CLI share: the same ids as the model's own
//! generation on every backend, step by step as the page runs it, and the checks it owns (sampling
//! ranges, ids typed by hand, context fit, the analysis window, candidate probabilities).

use std::sync::Arc;

use serde_json::Value;
use tinyformer::fastcpu::FastCpuBackend;
use tinyformer::gpu::Gpu;
use tinyformer::model::memory::Budget;
use tinyformer::model::run::{top_candidates, GenConfig, BOS_ID};
use tinyformer::model::{Backend, CpuBackend, GpuBackend, Model};
use tinyformer::ops::SampleParams;
use tinyformer::session::{Device, GenOptions, Next, Sampling, Session};

const F: &str = "tests/fixtures/models";

fn fixture(name: &str) -> (Vec<u8>, Value) {
    let bytes = std::fs::read(format!("{F}/{name}.safetensors")).unwrap();
    let fx = serde_json::from_str(&std::fs::read_to_string(format!("{F}/{name}.json")).unwrap()).unwrap();
    (bytes, fx)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn devices() -> Vec<(&'static str, Device)> {
    let gpu = Arc::new(pollster::block_on(Gpu::new()).expect("a GPU adapter (llvmpipe in CI)"));
    vec![("gpu", Device::Gpu(gpu)), ("cpu", Device::Cpu), ("reference", Device::Reference)]
}

fn load(device: &Device, bytes: &[u8]) -> Session {
    pollster::block_on(Session::load(device, bytes, &Budget::default())).unwrap()
}

/// Model::generate on a backend, without the session: what the page and the CLI ran before.
fn model_generate<B: Backend>(b: &mut B, bytes: &[u8], start: &[u32], src: Option<&[u32]>, cfg: GenConfig) -> Vec<u32> {
    let mut m = Model::load(b, bytes).unwrap();
    let out = pollster::block_on(m.generate(b, start, src, cfg)).unwrap();
    out
}

/// The page's loop: start_from, then next() until it says why it ended.
fn page_generate(s: &mut Session, ids: &[u32], cfg: GenConfig) -> (Vec<u32>, Value) {
    let mut out = s.start_from(ids, cfg).unwrap();
    let mut k = 0;
    loop {
        match pollster::block_on(s.next()).unwrap().expect("a generation is running") {
            Next::Token(step) => {
                assert_eq!(step.step, k, "step numbers count from 0");
                k += 1;
                out.push(step.id);
            }
            Next::Finished(f) => return (out, serde_json::to_value(&f).unwrap()),
        }
    }
}

#[test]
fn generation_through_the_session_gives_the_models_ids_on_every_backend() {
    let (bytes, fx) = fixture("llama_gqa");
    let prompt = ids(&fx["greedy"]["prompt_ids"]);
    let want = ids(&fx["greedy"]["ids"]);
    let n = fx["greedy"]["max_new_tokens"].as_u64().unwrap() as usize;
    let cfg = GenConfig { max_new_tokens: n, ..GenConfig::default() };
    let sampled = GenConfig { max_new_tokens: n, sample: SampleParams { temperature: 0.9, top_k: 5, top_p: 0.9 }, seed: 7, ..cfg.clone() };
    let gpu = Arc::new(pollster::block_on(Gpu::new()).unwrap());
    let old_greedy = [
        model_generate(&mut GpuBackend::new(gpu.clone()), &bytes, &prompt, None, cfg.clone()),
        model_generate(&mut FastCpuBackend::default(), &bytes, &prompt, None, cfg.clone()),
        model_generate(&mut CpuBackend, &bytes, &prompt, None, cfg.clone()),
    ];
    let old_sampled = model_generate(&mut CpuBackend, &bytes, &prompt, None, sampled.clone());
    let kinds = [GpuBackend::new(gpu.clone()).kind(), FastCpuBackend::default().kind(), CpuBackend.kind()];
    for (i, (name, device)) in devices().into_iter().enumerate() {
        let mut s = load(&device, &bytes);
        assert_eq!(s.backend(), kinds[i], "{name}");
        assert_eq!(old_greedy[i], want, "{name}: the model's own generation");
        let whole = pollster::block_on(s.generate(&prompt, None, cfg.clone())).unwrap();
        assert_eq!(whole, want, "{name}: Session::generate");
        let (stepped, end) = page_generate(&mut s, &prompt, cfg.clone());
        assert_eq!(stepped, want, "{name}: start_from + next");
        assert_eq!(end["reason"], "max_new_tokens", "{name}: {end}");
        assert_eq!(end["done"], true);
        // after the end, next() keeps saying it ended; stop() ends the generation for good
        assert!(matches!(pollster::block_on(s.next()).unwrap(), Some(Next::Finished(_))));
        s.stop();
        assert!(pollster::block_on(s.next()).unwrap().is_none());
        // sampling goes through the same path: the reference's sampled ids
        if name == "reference" {
            let (stepped, _) = page_generate(&mut s, &prompt, sampled.clone());
            assert_eq!(stepped, old_sampled, "sampled");
        }
    }
}

#[test]
fn the_encoder_decoder_starts_from_bos_with_the_prompt_as_its_source() {
    let (bytes, fx) = fixture("encdec_a");
    let src = ids(&fx["greedy"]["src_ids"]);
    let want = ids(&fx["greedy"]["ids"]);
    let cfg = GenConfig { max_new_tokens: 12, ..GenConfig::default() };
    let old = model_generate(&mut FastCpuBackend::default(), &bytes, &[BOS_ID], Some(&src), cfg.clone());
    assert_eq!(old, want);
    for (name, device) in devices() {
        let mut s = load(&device, &bytes);
        let (stepped, _) = page_generate(&mut s, &src, cfg.clone());
        assert_eq!(stepped[0], BOS_ID, "{name}");
        assert_eq!(stepped, want, "{name}");
        // the analysis window: the source, and the decoder from BOS over what was generated
        let w = s.window(&src, &want[1..]);
        assert_eq!(w.ids, src);
        assert_eq!(w.tgt.as_deref(), Some(&want[..]));
        assert_eq!((w.offset, w.start_len), (0, 1));
    }
}

#[test]
fn the_session_checks_what_the_page_and_the_cli_send() {
    let e = |s: Sampling| s.params().unwrap_err().to_string();
    assert_eq!(e(Sampling { temperature: -1.0, ..Sampling::default() }), "temperature must be a finite number >= 0, got -1");
    assert!(e(Sampling { temperature: f32::NAN, ..Sampling::default() }).contains("finite number >= 0"));
    assert_eq!(e(Sampling { temperature: 1.0, top_k: 0, top_p: 0.0 }), "top-p must be in (0, 1], got 0");
    assert_eq!(e(Sampling { temperature: 1.0, top_k: 0, top_p: 1.5 }), "top-p must be in (0, 1], got 1.5");
    assert!(Sampling { temperature: 0.0, top_k: 3, top_p: 0.5 }.params().unwrap().is_greedy());
    let o: GenOptions = serde_json::from_str(r#"{"temperature": 0.5, "top_k": 4, "top_p": 0.9, "max_new_tokens": 3, "top": 10}"#).unwrap();
    let cfg = o.config().unwrap();
    assert_eq!((cfg.max_new_tokens, cfg.top, cfg.kv_cache, cfg.sliding_window), (3, 10, true, false));
    assert_eq!((cfg.sample.temperature, cfg.sample.top_k, cfg.sample.top_p), (0.5, 4, 0.9));
    let bad: GenOptions = serde_json::from_str(r#"{"temperature": -2}"#).unwrap();
    assert!(bad.config().is_err());

    // a decoder without a tokenizer (vocabulary 64 in decoder_a): ids typed by hand
    let (bytes, _) = fixture("decoder_a");
    let s = load(&Device::Cpu, &bytes);
    let vocab = s.config().src_vocab_size;
    assert_eq!(s.parse_ids(" 1 5,9\n13 ").unwrap(), vec![1, 5, 9, 13]);
    assert_eq!(s.parse_ids("").unwrap(), Vec::<u32>::new());
    assert_eq!(
        s.parse_ids("1 x").unwrap_err().to_string(),
        "\"x\" is not a token id: this checkpoint has no tokenizer, so type ids like 1 5 9."
    );
    assert_eq!(
        s.parse_ids("-3").unwrap_err().to_string(),
        "\"-3\" is not a token id: this checkpoint has no tokenizer, so type ids like 1 5 9."
    );
    assert_eq!(
        s.parse_ids(&format!("2 {vocab}")).unwrap_err().to_string(),
        format!("Token id {vocab} is outside the vocabulary (0 to {}).", vocab - 1)
    );
    assert!(s.tokenize("hi").unwrap_err().to_string().contains("no tokenizer"));
    let p = s.prompt("1 5 9").unwrap();
    assert_eq!((p.tokens.kind, &p.tokens.ids[..], p.tokens.pieces.len()), ("ids", &[1u32, 5, 9][..], 3));
    assert!(p.fits && p.room);
    // context limits: S tokens leave no room to generate without a sliding window, but can be analysed
    let ctx = s.config().max_seq_len;
    let full = vec!["1"; ctx].join(" ");
    let p = s.prompt(&full).unwrap();
    assert!(p.fits && !p.room, "{ctx} tokens");
    assert_eq!((p.context, p.keep_last), (ctx, ctx - 1));
    assert!(s.prompt(&vec!["1"; ctx - 1].join(" ")).unwrap().room);
    // the analysis window past the context: the newest S tokens
    let src: Vec<u32> = (0..ctx as u32).map(|i| i % 7).collect();
    let w = s.window(&src, &[3, 4]);
    assert_eq!((w.offset, w.ids.len(), w.start_len, w.tgt.is_none()), (2, ctx, ctx, true));
    assert_eq!(w.ids[..], [&src[2..], &[3, 4]].concat()[..]);

    // candidates: the core's sampler probabilities, most likely first, with pieces
    let logits: Vec<f32> = (0..s.config().vocab_size).map(|i| ((i * 37 % 11) as f32) * 0.3 - 1.0).collect();
    let sampling = Sampling { temperature: 0.7, top_k: 6, top_p: 0.8 };
    let c = s.candidates(&logits, &sampling, 10).unwrap();
    let want = top_candidates(&logits, &sampling.params().unwrap(), 10);
    assert_eq!(c.iter().map(|c| (c.id, c.p)).collect::<Vec<_>>(), want);
    assert!(c.windows(2).all(|w| w[0].p >= w[1].p));
    assert!(c.iter().all(|c| c.piece == format!("#{}", c.id)), "no tokenizer: #id pieces");
    let mass: f32 = c.iter().map(|c| c.p).sum();
    assert!((mass - 1.0).abs() < 1e-5, "top-k 6 < 10 candidates hold all the mass: {mass}");
    assert!(s.candidates(&logits, &Sampling { temperature: -1.0, ..sampling }, 10).is_err());
}

#[test]
fn the_card_and_the_tokens_of_a_shipped_model() {
    let bytes = std::fs::read("models/dates-encdec.safetensors").unwrap();
    let s = load(&Device::Cpu, &bytes);
    let card = serde_json::to_value(s.card()).unwrap();
    assert_eq!(card["arch"], "encoder_decoder");
    assert_eq!(card["backend"], "cpu");
    assert_eq!(card["file_size"], bytes.len());
    assert_eq!(card["context"], card["config"]["max_seq_len"]);
    assert_eq!(card["vocab_size"], card["config"]["tgt_vocab_size"]);
    assert!(card["tokenizer"]["kind"].is_string() && card["experts"].is_null());
    let p = s.prompt("March 3, 2021").unwrap();
    assert!(!p.tokens.ids.is_empty() && p.tokens.spans.is_some() && p.fits);
    assert_eq!(p.tokens.ids, s.tokenize("March 3, 2021").unwrap().ids);
    // special ids (PAD / BOS / EOS of the chars table) add no text
    assert!(s.is_special(BOS_ID));
    assert_eq!(s.decode(&[BOS_ID]).unwrap(), "");
}

#[test]
fn the_bpe_workbench_is_bounded_and_steps_through_every_merge() {
    use tinyformer::tokenizer::workbench::{bpe_workbench, BPE_MAX_SENTENCE_CHARS, BPE_MAX_VOCAB};
    let w = bpe_workbench("low lower lowest low low", 30, "lowest").unwrap();
    assert_eq!(w.steps.len(), w.merges.len() + 1);
    assert_eq!(w.steps.last().unwrap().concat().replace("</w>", ""), "lowest");
    assert!(bpe_workbench("  ", 30, "a").unwrap_err().to_string().contains("paste some text"));
    assert!(bpe_workbench("a b", BPE_MAX_VOCAB + 1, "a").unwrap_err().to_string().contains("between 1 and 5000"));
    let long = "y".repeat(BPE_MAX_SENTENCE_CHARS + 1);
    assert!(bpe_workbench("a b", 50, &long).unwrap_err().to_string().contains("limited to 200 characters"));
}

#[test]
fn a_prompt_over_a_megabyte_is_refused_in_one_line_before_it_is_tokenized() {
    let s = load(&Device::Cpu, &std::fs::read("models/shakespeare-gpt.safetensors").unwrap());
    let line = "JULIET: Wherefore art thou Romeo?\n";
    let fits = line.repeat((1 << 20) / line.len());
    let p = s.prompt(&fits).unwrap();
    let spans = p.tokens.spans.as_ref().unwrap();
    assert_eq!(spans.last().map(|s| s.1), Some(fits.len()), "the whole megabyte is tokenized");
    let over = line.repeat((1 << 20) / line.len() + 1);
    let e = s.prompt(&over).unwrap_err().to_string();
    assert_eq!(e, "the prompt is 1.0 MB; prompts are limited to 1 MB here (the model reads only its last context of tokens): shorten it");
    // the session is still there
    assert_eq!(s.prompt(line).unwrap().tokens.spans.unwrap().last().map(|s| s.1), Some(line.len()));
    // a checkpoint without a tokenizer: ids typed by hand, the same limit
    let ids = load(&Device::Cpu, &std::fs::read(format!("{F}/llama_gqa.safetensors")).unwrap());
    assert!(ids.prompt(&"1 ".repeat(600_000)).unwrap_err().to_string().starts_with("the prompt is 1.2 MB"));
}
