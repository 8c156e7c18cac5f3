//! Whole-model training on the CPU backends: every parameter's gradient of a tiny model of each
//! decoder family against central finite differences of its loss (the reference backend), the
//! fast CPU backend's gradients and 20-step loss sequence against the reference's, bit-identical
//! repeats, and the optimizer's schedule.

mod common;

use tinyformer::fastcpu::FastCpuBackend;
use tinyformer::model::backend::{Backend, CpuBackend};
use tinyformer::model::config::ModelConfig;
use tinyformer::rng::Rng;
use tinyformer::train::data::{Batch, Source};
use tinyformer::train::net::Net;
use tinyformer::train::ops::Train;
use tinyformer::train::optim::{Optim, Schedule};
use tinyformer::train::params::{Init, Params};
use tinyformer::train::run::{Shape, Trainer};

fn configs() -> Vec<(&'static str, ModelConfig)> {
    let j = |s: &str| ModelConfig::from_json(s).unwrap();
    vec![
        (
            "seed decoder",
            j(r#"{"arch": "decoder", "vocab_size": 11, "d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 24, "max_seq_len": 8}"#),
        ),
        (
            "gpt2",
            j(r#"{"arch": "decoder", "vocab_size": 11, "d_model": 16, "num_layers": 2, "num_heads": 4, "d_ff": 32, "max_seq_len": 8,
                  "positions": "learned", "activation": "gelu_tanh", "tie_embeddings": true}"#),
        ),
        (
            "llama",
            j(
                r#"{"arch": "llama", "vocab_size": 11, "d_model": 16, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "multiple_of": 8, "max_seq_len": 8}"#,
            ),
        ),
        (
            // GPT-NeoX's sequential block: RoPE on 4 of each head's 8 dims (the rest pass through the table's
            // identity pairs, forward and backward), the erf GELU, no attention biases, an untied head
            "gpt_neox",
            j(r#"{"arch": "decoder", "vocab_size": 11, "d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 32, "max_seq_len": 8,
                  "positions": "rope", "rotary_dims": 4, "rope_theta": 1000, "activation": "gelu_erf", "qkv_bias": false}"#),
        ),
        (
            "attention-only",
            j(r#"{"arch": "decoder", "vocab_size": 11, "d_model": 16, "num_layers": 2, "num_heads": 4, "max_seq_len": 8,
                  "positions": "learned", "tie_embeddings": true, "attention_only": true}"#),
        ),
        (
            "encoder-decoder",
            j(r#"{"arch": "encoder_decoder", "src_vocab_size": 11, "tgt_vocab_size": 11, "d_model": 16, "num_layers": 2, "num_heads": 2,
                  "d_ff": 24, "max_seq_len": 8}"#),
        ),
        (
            // capacity int(1.0 * 12 * 2 / 4) = 6 of the 24 assignments of a 2 x 6 batch: some are dropped
            "moe",
            j(r#"{"arch": "decoder", "vocab_size": 11, "d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 24, "max_seq_len": 8,
                  "moe": {"num_experts": 4, "top_k": 2, "expert_dim": 12, "capacity_factor": 1.0}}"#),
        ),
    ]
}

fn batch(rng: &mut Rng, b: usize, t: usize, v: u32) -> Batch {
    let ids = (0..b * t).map(|_| rng.below(v)).collect();
    let targets = (0..b * t).map(|_| rng.below(v)).collect();
    Batch { b, t, ids, targets, ..Batch::default() }
}

fn optim() -> Optim {
    Optim {
        lr: 1e-2,
        min_lr: 1e-3,
        warmup: 3,
        schedule: Schedule::Cosine,
        steps: 20,
        weight_decay: 0.1,
        betas: (0.9, 0.95),
        eps: 1e-8,
        clip: Some(1.0),
    }
}

/// The MoE model's objective adds its load-balancing losses with this weight (large, so that
/// their gradient shows).
const AUX_LOSS: f32 = 0.5;

fn trainer<B: Train>(be: B, cfg: &ModelConfig, init: Init) -> Trainer<B> {
    let source = if cfg.arch == tinyformer::model::config::Arch::EncoderDecoder { 5 } else { 0 };
    let values = Params::<()>::init_values(cfg, init, 7).unwrap();
    let tr = Trainer::new(be, cfg, values, optim(), Shape { batch: 2, context: 6, source, accum: 1 }).unwrap();
    tr.with_aux_loss(if cfg.moe.is_some() { AUX_LOSS } else { 0.0 }).unwrap()
}

/// An encoder-decoder batch of 2 x (5 source, 6 target) tokens, the second row padded (0) at the
/// end of both, so padded keys, padded targets and a fully visible first row are all covered.
fn encdec_batch(rng: &mut Rng, v: u32) -> Batch {
    let mut id = || 3 + rng.below(v - 3);
    let src = vec![id(), id(), id(), id(), id(), id(), id(), id(), 0, 0];
    let ids = vec![1, id(), id(), id(), id(), id(), 1, id(), id(), id(), 0, 0];
    let targets = vec![id(), id(), id(), id(), id(), 2, id(), id(), id(), 2, 0, 0];
    Batch { b: 2, t: 6, ids, targets, ts: 5, src }
}

/// The routing of the last forward: every MoE layer's chosen experts and kept flags (empty
/// without experts).
fn routing<B: Train>(tr: &mut Trainer<B>) -> Vec<u32> {
    let Some(m) = tr.cfg.moe.clone() else { return vec![] };
    let n = tr.shape.batch * tr.shape.context * m.top_k;
    let mut out = vec![];
    let Net::Decoder(g) = &tr.graph else { return vec![] };
    for la in &g.acts.layers {
        let ml = la.moe.as_ref().unwrap();
        out.extend(pollster::block_on(tr.be.read_u32(&ml.experts, 0, n)).unwrap());
        out.extend(pollster::block_on(tr.be.read_u32(&ml.kept, 0, n)).unwrap());
    }
    out
}

/// Every parameter's gradient against central differences of the loss, at up to 6 coordinates
/// per tensor. The forward stores f32; H = 1e-2 on a loss of order 1 leaves about 1e-4 of noise:
/// tolerance 2e-3 absolute + 3e-2 relative. Where the step crosses a ReLU's kink the difference is
/// retried with H / 4. A MoE model's objective is smooth only while the
/// routing stays: a coordinate whose perturbation changes a top-k choice (and so the capacity's
/// drops) is skipped, and at most 1 in 10 may be.
#[test]
fn gradients_match_finite_differences_of_the_loss() {
    for (name, cfg) in configs() {
        let mut tr = trainer(CpuBackend, &cfg, Init::Wide);
        let b = if cfg.arch == tinyformer::model::config::Arch::EncoderDecoder {
            encdec_batch(&mut Rng::new(3), 11)
        } else {
            batch(&mut Rng::new(3), 2, 6, cfg.vocab_size as u32)
        };
        pollster::block_on(tr.gradients(std::slice::from_ref(&b))).unwrap();
        let route = routing(&mut tr);
        let grads = pollster::block_on(tr.params.read(&mut tr.be, true)).unwrap();
        let values = pollster::block_on(tr.values()).unwrap();
        let h = 1e-2f32;
        let (mut checked, mut skipped) = (0, 0);
        for (i, d) in tr.params.decl.clone().iter().enumerate() {
            let n = values[i].len();
            let mut nonzero = false;
            for j in (0..n).step_by((n / 6).max(1)) {
                let mut loss_at = |x: f32| {
                    tr.be.write_f32(&tr.params.p[i], j, &[x]).unwrap();
                    let loss = pollster::block_on(tr.gradients(std::slice::from_ref(&b))).unwrap().0;
                    (loss, routing(&mut tr) == route)
                };
                let an = grads[i][j] as f64;
                let close = |num: f64| (an - num).abs() <= 2e-3 + 3e-2 * num.abs();
                let mut diff = |h: f32| {
                    let ((up, same_up), (down, same_down)) = (loss_at(values[i][j] + h), loss_at(values[i][j] - h));
                    ((up - down) / (2.0 * h as f64), same_up && same_down)
                };
                // A ReLU's kink within the step makes a difference meaningless: one step 4x smaller decides.
                let (num, same) = diff(h);
                let (num, same) = if !same || close(num) { (num, same) } else { diff(h / 4.0) };
                loss_at(values[i][j]);
                nonzero |= an.abs() > 1e-6;
                checked += 1;
                if !same {
                    skipped += 1;
                    continue;
                }
                assert!(close(num), "{name}: {}[{j}] analytic {an} vs numeric {num}", d.name);
            }
            // A key bias adds q.b to every score of a query: softmax ignores it, so its gradient is 0.
            let key_bias = [".w_k.bias", ".W_k.bias", ".wk.bias"].iter().any(|k| d.name.ends_with(k));
            // the encoder-decoder's tables: rows of ids the batch does not hold stay zero, the rest do not
            let sparse_table = d.name.ends_with("embedding.weight") && cfg.arch == tinyformer::model::config::Arch::EncoderDecoder;
            let zero = grads[i].iter().all(|g| g.abs() < 1e-6);
            assert_eq!(zero, key_bias, "{name}: {} has {} gradient", d.name, if zero { "an all-zero" } else { "a nonzero" });
            assert!(nonzero || key_bias || sparse_table || n > 6, "{name}: {} sampled only zeros", d.name);
        }
        assert!(skipped * 10 <= checked, "{name}: {skipped} of {checked} perturbations changed the routing");
    }
}

/// The fast CPU backend (f32 GEMM) against the reference (f64 accumulation): the first step's
/// gradients within 1e-4 of the largest, and 20 AdamW steps' losses within 1e-3 relative.
#[test]
fn fast_cpu_training_matches_the_reference() {
    for (name, cfg) in configs() {
        let mut r = trainer(CpuBackend, &cfg, Init::Gpt2);
        let mut f = trainer(FastCpuBackend::default(), &cfg, Init::Gpt2);
        let data = if cfg.arch == tinyformer::model::config::Arch::EncoderDecoder {
            let mut rng = Rng::new(8);
            Source::Fixed((0..20).map(|_| encdec_batch(&mut rng, 11)).collect())
        } else {
            Source::Induction { vocab: cfg.vocab_size as u32 }
        };
        for s in 1..=20 {
            let rb = r.batches(&data, 5, s).unwrap();
            let (lr_, gr) = pollster::block_on(r.gradients(&rb)).unwrap();
            let (lf, gf) = pollster::block_on(f.gradients(&rb)).unwrap();
            if s == 1 {
                let a = pollster::block_on(r.params.read(&mut r.be, true)).unwrap();
                let b = pollster::block_on(f.params.read(&mut f.be, true)).unwrap();
                let top = a.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
                for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                    for (u, v) in x.iter().zip(y) {
                        assert!((u - v).abs() <= 1e-4 * top, "{name}: gradient of {} differs: {u} vs {v}", r.params.decl[i].name);
                    }
                }
            }
            assert!((lr_ - lf).abs() <= 1e-3 * lr_.abs(), "{name} step {s}: loss {lr_} (reference) vs {lf} (fast)");
            assert!((gr - gf).abs() <= 1e-3 * gr.abs() + 1e-6, "{name} step {s}: grad norm {gr} vs {gf}");
            r.update().unwrap();
            f.update().unwrap();
        }
    }
}

/// The same seed on the same backend gives the same bits, and the loss falls (one batch, learned by heart).
#[test]
fn training_is_deterministic_and_learns() {
    let (_, cfg) = configs().remove(1);
    assert!(!cfg.attention_only && cfg.tie_embeddings, "the GPT-2 config");
    let run = || {
        let mut t = trainer(FastCpuBackend::default(), &cfg, Init::Gpt2);
        let one = batch(&mut Rng::new(4), 2, 6, cfg.vocab_size as u32);
        let data = Source::Fixed(vec![one; 40]);
        (1..=40)
            .map(|s| {
                let b = t.batches(&data, 9, s).unwrap();
                let (l, _) = pollster::block_on(t.gradients(&b)).unwrap();
                t.update().unwrap();
                l
            })
            .collect::<Vec<f64>>()
    };
    let (a, b) = (run(), run());
    assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    let (first, last) = (a[..5].iter().sum::<f64>() / 5.0, a[35..].iter().sum::<f64>() / 5.0);
    assert!(last < first - 1.0, "the loss did not fall: {first} -> {last}");
}

/// The fast CPU backend on 1, 2 and 3 threads (`--threads`) gives the same bits: every loss, every
/// gradient norm and the final parameters. The model is large enough (B 8 x T 64, d 64, 4 heads, FFN
/// 256) that the matmuls, dW and the attention forward and backward all split over the threads
/// (above `matmul::PAR_MIN_FLOP`); each thread owns its outputs, so nothing is reduced in a
/// thread-dependent order.
#[test]
fn fast_cpu_training_gives_the_same_bits_on_any_thread_count() {
    use tinyformer::fastcpu::matmul::Threads;
    let cfg = ModelConfig::from_json(
        r#"{"arch": "decoder", "vocab_size": 65, "d_model": 64, "num_layers": 2, "num_heads": 4, "d_ff": 256, "max_seq_len": 64,
            "positions": "learned", "activation": "gelu_tanh", "tie_embeddings": true}"#,
    )
    .unwrap();
    let (b, t) = (8, 64);
    let run = |threads: usize| {
        let be = FastCpuBackend { threads: Threads::new(threads).unwrap() };
        let values = Params::<()>::init_values(&cfg, Init::Gpt2, 3).unwrap();
        let mut tr = Trainer::new(be, &cfg, values, optim(), Shape { batch: b, context: t, source: 0, accum: 1 }).unwrap();
        let mut rng = Rng::new(12);
        let data = Source::Fixed((0..4).map(|_| batch(&mut rng, b, t, 65)).collect());
        let mut out = vec![];
        for s in 1..=4 {
            let bs = tr.batches(&data, 1, s).unwrap();
            let (l, g) = pollster::block_on(tr.gradients(&bs)).unwrap();
            tr.update().unwrap();
            out.extend([l.to_bits(), g.to_bits()]);
        }
        let values = pollster::block_on(tr.values()).unwrap();
        out.extend(values.iter().flatten().map(|x| x.to_bits() as u64));
        out
    };
    let one = run(1);
    for n in [2, 3] {
        assert!(one == run(n), "{n} threads: not the bits of one thread");
    }
}

#[test]
fn the_schedule_warms_up_then_follows_the_cosine() {
    let o = optim();
    assert!((o.lr_at(1) - 1e-2 / 3.0).abs() < 1e-9);
    assert!((o.lr_at(3) - 1e-2).abs() < 1e-9);
    assert!((o.lr_at(20) - 1e-3).abs() < 1e-7, "the cosine ends at min_lr");
    let mid = o.lr_at(3 + 17 / 2);
    assert!(mid < 1e-2 && mid > 1e-3);
    let c = Optim { schedule: Schedule::Constant, warmup: 0, ..o };
    assert!((1..30).all(|s| c.lr_at(s) == c.lr));
}

/// A non-finite gradient at a step that reads nothing back stops the updates there, and the next
/// read names the step (tests/common: the shared check, also run on the GPU).
#[test]
fn a_non_finite_gradient_halts_at_the_unreported_step() {
    let (_, cfg) = configs().remove(1);
    common::halts_at_an_unreported_step(trainer(CpuBackend, &cfg, Init::Gpt2), cfg.vocab_size as u32, "reference");
    common::halts_at_an_unreported_step(trainer(FastCpuBackend::default(), &cfg, Init::Gpt2), cfg.vocab_size as u32, "fast cpu");
}

/// GPT-NeoX's parallel residual runs (tests/hf_models.rs) but is not trained: refused in one line.
#[test]
fn a_parallel_residual_model_is_refused_for_training() {
    let cfg = ModelConfig::from_json(
        r#"{"arch": "decoder", "vocab_size": 11, "d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 32, "max_seq_len": 8,
            "positions": "rope", "rotary_dims": 4, "activation": "gelu_erf", "parallel_residual": true}"#,
    )
    .unwrap();
    let values = Params::<()>::init_values(&cfg, Init::Gpt2, 7).unwrap();
    let e = Trainer::new(CpuBackend, &cfg, values, optim(), Shape { batch: 2, context: 6, source: 0, accum: 1 }).err().unwrap().to_string();
    assert!(e.contains("training a model with a parallel residual") && !e.contains('\n'), "{e}");
}
