//! Generation at the context limit: without a sliding window it stops when the sequence fills the
//! context and says so (StopReason::Context); with one it keeps going on the newest tokens that fit,
//! and each such token is exactly the greedy choice of a fresh forward pass over that window. A
//! prompt longer than the context is refused, or cut to its tail with the window on.
//! CPU reference backend, on the PyTorch-checked fixture models (decoder: learned/sinusoidal
//! positions; llama: RoPE).

use tinyformer::model::run::{sliding_window_start, GenConfig, StopReason};
use tinyformer::model::{CpuBackend, Model};

fn load(name: &str) -> (CpuBackend, Model<CpuBackend>) {
    let bytes = std::fs::read(format!("tests/fixtures/models/{name}.safetensors")).unwrap();
    let b = CpuBackend;
    let m = Model::load(&b, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    (b, m)
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn sliding_window_start_keeps_the_newest_tokens_that_fit() {
    // (len, ctx) -> first index read
    let cases = [(0, 8), (1, 8), (7, 8), (8, 8), (9, 8), (20, 8), (256, 256), (300, 256), (1, 1), (5, 1), (2, 2)];
    let want = [0, 0, 0, 1, 2, 13, 1, 45, 0, 4, 1];
    for ((len, ctx), w) in cases.iter().zip(want) {
        let got = sliding_window_start(*len, *ctx);
        assert_eq!(got, w, "sliding_window_start({len}, {ctx})");
        // The window and the token it predicts never exceed the context, and never is empty.
        if *len > 0 {
            assert!(len - got >= 1 && len - got < (*ctx).max(2), "window of {} for len {len}, ctx {ctx}", len - got);
        }
    }
}

#[test]
fn without_a_window_generation_stops_at_the_context_and_says_so() {
    for name in ["decoder_a", "llama_gqa"] {
        let (mut b, mut m) = load(name);
        let ctx = m.cfg.max_seq_len;
        let prompt: Vec<u32> = (0..ctx as u32 - 3).map(|i| 3 + i % 20).collect();
        let cfg = GenConfig { max_new_tokens: 10, ..GenConfig::default() };
        let mut g = m.start_generation(&mut b, &prompt, None, cfg).unwrap();
        let mut n = 0;
        while pollster::block_on(m.next_token(&mut b, &mut g)).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3, "{name}: room for 3 tokens in a context of {ctx}");
        assert_eq!(g.ids.len(), ctx);
        assert_eq!(g.stop_reason, Some(StopReason::Context), "{name}");

        // Asked for fewer than fit: the reason is max_new_tokens.
        let cfg = GenConfig { max_new_tokens: 2, ..GenConfig::default() };
        let mut g = m.start_generation(&mut b, &prompt, None, cfg).unwrap();
        while pollster::block_on(m.next_token(&mut b, &mut g)).unwrap().is_some() {}
        assert_eq!(g.stop_reason, Some(StopReason::MaxNewTokens), "{name}");

        // A prompt longer than the context: refused with the numbers.
        let long: Vec<u32> = (0..ctx as u32 + 5).map(|i| 3 + i % 20).collect();
        let e = m.start_generation(&mut b, &long, None, GenConfig::default()).err().expect("a too-long prompt is refused");
        assert!(e.to_string().contains(&format!("{} tokens", ctx + 5)) && e.to_string().contains(&ctx.to_string()), "{e}");
    }
}

#[test]
fn a_sliding_window_keeps_generating_on_the_newest_tokens() {
    for name in ["decoder_a", "llama_gqa"] {
        let (mut b, mut m) = load(name);
        let ctx = m.cfg.max_seq_len;
        let vocab = m.in_vocab() as u32;
        let prompt: Vec<u32> = (0..ctx as u32 - 2).map(|i| 3 + (i * 7) % (vocab - 3)).collect();
        let mut results = vec![];
        for kv_cache in [true, false] {
            let cfg = GenConfig { max_new_tokens: 8, kv_cache, sliding_window: true, ..GenConfig::default() };
            let mut g = m.start_generation(&mut b, &prompt, None, cfg).unwrap();
            let mut windows = vec![];
            while let Some(step) = pollster::block_on(m.next_token(&mut b, &mut g)).unwrap() {
                windows.push(step.window_start);
            }
            assert_eq!(g.stop_reason, Some(StopReason::MaxNewTokens), "{name}");
            assert_eq!(g.ids.len(), prompt.len() + 8, "{name}: 8 new tokens past a context of {ctx}");
            // The first two fit; from then on the window drops one more old token per step.
            assert_eq!(windows, vec![0, 0, 1, 2, 3, 4, 5, 6], "{name} kv_cache={kv_cache}");
            results.push(g.ids.clone());
            // Every token is the greedy choice of a fresh pass over exactly the window it reports.
            for (s, &w) in windows.iter().enumerate() {
                let len = prompt.len() + s;
                let window = &g.ids[w..len];
                assert!(window.len() < ctx, "{name}: the window and its new token fit the context");
                let out = pollster::block_on(m.forward(&mut b, window, None)).unwrap();
                let last = &out.logits[(out.rows - 1) * out.vocab..out.rows * out.vocab];
                assert_eq!(argmax(last), g.ids[len], "{name} step {s}: window {w}..{len}");
            }
        }
        assert_eq!(results[0], results[1], "{name}: cached and uncached sliding generation agree");

        // A prompt longer than the context is cut to its newest ctx - 1 tokens.
        let long: Vec<u32> = (0..ctx as u32 + 5).map(|i| 3 + (i * 5) % (vocab - 3)).collect();
        let cfg = GenConfig { max_new_tokens: 3, sliding_window: true, ..GenConfig::default() };
        let mut g = m.start_generation(&mut b, &long, None, cfg).unwrap();
        assert_eq!(g.prompt_cut, 6, "{name}");
        assert_eq!(g.ids, long[6..].to_vec());
        let first = pollster::block_on(m.next_token(&mut b, &mut g)).unwrap().unwrap();
        assert_eq!(first.window_start, 0, "{name}: the cut prompt and the first new token fill the context");
    }
}

#[test]
fn the_encoder_decoder_never_slides() {
    let (mut b, mut m) = load("encdec_a");
    let ctx = m.cfg.max_seq_len;
    let cfg = GenConfig { max_new_tokens: ctx + 10, sliding_window: true, ..GenConfig::default() };
    let mut g = m.start_generation(&mut b, &[], Some(&[5, 9, 3, 7]), cfg).unwrap();
    while pollster::block_on(m.next_token(&mut b, &mut g)).unwrap().is_some() {}
    assert!(g.ids.len() <= ctx, "{} decoder tokens in a context of {ctx}", g.ids.len());
    assert!(matches!(g.stop_reason, Some(StopReason::Context) | Some(StopReason::Eos)), "{:?}", g.stop_reason);
}
