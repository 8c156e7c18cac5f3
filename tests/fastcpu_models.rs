//! The fast CPU backend against the reference CpuBackend on every fixture model
//! (tests/fixtures/models) and every shipped model (models/*.safetensors): a full forward pass
//! (logits of every row, every attention map, MoE routing) within the tolerances below, and greedy
//! continuations token for token, cached and uncached. (tests/model_fixtures.rs and
//! tests/shipped_models.rs check the fast backend against PyTorch too.)

use tinyformer::fastcpu::FastCpuBackend;
use tinyformer::model::config::Arch;
use tinyformer::model::run::{ForwardOut, GenConfig};
use tinyformer::model::{CpuBackend, Model};

// f32 with fused multiply-adds vs f64 accumulation, through up to 4 layers of 192 wide:
// logits within 2e-4 + 2e-4 * |reference|, probabilities within 2e-5.
const LOGIT_ATOL: f32 = 2e-4;
const LOGIT_RTOL: f32 = 2e-4;
const PROB_ATOL: f32 = 2e-5;

fn models() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for dir in ["tests/fixtures/models", "models"] {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        names.sort();
        for p in names {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    assert!(out.len() >= 14, "expected the fixture models and the four shipped ones, found {}", out.len());
    out
}

fn close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut max = 0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        max = max.max(d);
        assert!(d <= atol + rtol * w.abs(), "{what}[{i}]: fast {g}, reference {w} (|diff| {d:e})");
    }
    max
}

fn compare_forward(name: &str, fast: &ForwardOut, refr: &ForwardOut) -> (f32, f32) {
    let dl = close(&format!("{name} logits"), &fast.logits, &refr.logits, LOGIT_ATOL, LOGIT_RTOL);
    assert_eq!(fast.attention.len(), refr.attention.len(), "{name}: attention maps");
    let mut dp = 0f32;
    for (f, r) in fast.attention.iter().zip(&refr.attention) {
        assert_eq!((f.kind, f.layer, f.rows, f.cols), (r.kind, r.layer, r.rows, r.cols));
        dp = dp.max(close(&format!("{name} {} attention layer {}", f.kind, f.layer), &f.data, &r.data, PROB_ATOL, 0.0));
    }
    for (f, r) in fast.moe.iter().zip(&refr.moe) {
        assert_eq!(f.experts, r.experts, "{name} layer {}: chosen experts", f.layer);
        assert_eq!(f.kept, r.kept, "{name} layer {}: kept assignments", f.layer);
    }
    (dl, dp)
}

#[test]
fn fast_backend_matches_the_reference_on_every_model() {
    let (mut fb, mut rb) = (FastCpuBackend::default(), CpuBackend);
    for (name, bytes) in models() {
        let mut fm = Model::load(&fb, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut rm = Model::load(&rb, &bytes).unwrap();
        let encdec = fm.cfg.arch == Arch::EncoderDecoder;
        let v = fm.in_vocab() as u32;
        let ctx = fm.cfg.max_seq_len;
        // a prompt of up to 40 tokens spread over the vocabulary (ids >= 3 avoid the specials)
        let len = 40.min(ctx / 2).max(1);
        let ids: Vec<u32> = (0..len as u32).map(|i| 3 + (i * 37 + 11) % (v - 3)).collect();
        let src: Vec<u32> =
            if encdec { (0..12u32).map(|i| 3 + (i * 5 + 2) % (fm.cfg.src_vocab_size as u32 - 3)).collect() } else { vec![] };
        let (fo, ro) = if encdec {
            let tgt = [1u32, 5, 9, 4];
            (
                pollster::block_on(fm.forward(&mut fb, &src, Some(&tgt))).unwrap(),
                pollster::block_on(rm.forward(&mut rb, &src, Some(&tgt))).unwrap(),
            )
        } else {
            (pollster::block_on(fm.forward(&mut fb, &ids, None)).unwrap(), pollster::block_on(rm.forward(&mut rb, &ids, None)).unwrap())
        };
        let (dl, dp) = compare_forward(&name, &fo, &ro);
        // greedy continuations, cached and uncached, token for token
        let n = 24.min(ctx - 8);
        let start = if encdec { vec![] } else { ids[..8.min(ids.len())].to_vec() };
        let srcref = encdec.then_some(&src[..]);
        for kv_cache in [true, false] {
            let cfg = GenConfig { max_new_tokens: n, kv_cache, ..GenConfig::default() };
            let got = pollster::block_on(fm.generate(&mut fb, &start, srcref, cfg.clone())).unwrap();
            let want = pollster::block_on(rm.generate(&mut rb, &start, srcref, cfg)).unwrap();
            assert_eq!(got, want, "{name}: greedy continuation (kv_cache={kv_cache})");
        }
        println!("{name:<44} logits max|diff| {dl:.2e}, probs max|diff| {dp:.2e}, greedy equal");
    }
}

/// Cached decoding streams attention rows; the fast backend writes the same rows as the reference.
#[test]
fn streamed_attention_rows_match_the_reference() {
    let bytes = std::fs::read("models/shakespeare-llama.safetensors").unwrap();
    let (mut fb, mut rb) = (FastCpuBackend::default(), CpuBackend);
    let mut fm = Model::load(&fb, &bytes).unwrap();
    let mut rm = Model::load(&rb, &bytes).unwrap();
    let cfg = GenConfig { max_new_tokens: 6, attention: true, ..GenConfig::default() };
    let mut fg = fm.start_generation(&mut fb, &[20, 30, 40, 50], None, cfg.clone()).unwrap();
    let mut rg = rm.start_generation(&mut rb, &[20, 30, 40, 50], None, cfg).unwrap();
    let mut steps = 0;
    while let Some(f) = pollster::block_on(fm.next_token(&mut fb, &mut fg)).unwrap() {
        let r = pollster::block_on(rm.next_token(&mut rb, &mut rg)).unwrap().unwrap();
        assert_eq!(f.id, r.id);
        assert_eq!(f.attention.len(), r.attention.len());
        for (a, b) in f.attention.iter().zip(&r.attention) {
            assert_eq!((a.rows, a.cols, a.row_offset), (b.rows, b.cols, b.row_offset));
            close("streamed rows", &a.data, &b.data, PROB_ATOL, 0.0);
        }
        steps += 1;
    }
    assert_eq!(steps, 6);
}

/// Loading and running a second model on the same backend, and writing into a weight after its
/// first use (the packed copy is dropped), give the same results as fresh tensors.
#[test]
fn a_rewritten_weight_is_repacked() {
    use tinyformer::model::Backend;
    let mut b = FastCpuBackend::default();
    let w = b.tensor(&[2, 3], &[1., 0., 1., 0., 1., 0.], "w").unwrap();
    let x = b.tensor(&[1, 3], &[1., 2., 3.], "x").unwrap();
    let out = b.zeros(&[1, 2], "out").unwrap();
    b.matmul(&out, 0, &x, 0, 1, &w, None).unwrap();
    assert_eq!(pollster::block_on(b.read_f32(&out, 0, 2)).unwrap(), vec![4.0, 2.0]);
    b.write_f32(&w, 0, &[2., 0., 0., 0., 0., 1.]).unwrap();
    b.matmul(&out, 0, &x, 0, 1, &w, None).unwrap();
    assert_eq!(pollster::block_on(b.read_f32(&out, 0, 2)).unwrap(), vec![2.0, 3.0]);
    // aliasing an output with an input is an error, not a panic
    let e = b.matmul(&x, 0, &x, 0, 1, &w, None).unwrap_err().to_string();
    assert!(e.contains("alias"), "{e}");
}
