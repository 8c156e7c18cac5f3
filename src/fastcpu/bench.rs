//! The fast CPU kernels timed one by one on the shapes of the training lab's Shakespeare preset
//! (nanoGPT's baby GPT: 4 layers, 4 heads, d 128, FF 512, context 64, batch 12, vocabulary 80) and on
//! GPT-2 small's decode GEMVs, as a library function so that the same code runs natively
//! (`cargo run --release --example bench_cpu -- kernels-train`) and in the page's builds (the wasm
//! export `fastcpu_kernel_bench`, which node or the page calls): the ratio of the two per kernel says
//! which kernels lose the most in wasm. A benchmark, not a test: it prints figures, asserts nothing.
//! `now` is the caller's clock in milliseconds (`Instant` natively, `performance.now()` in wasm).

use serde::Serialize;

use crate::fastcpu::matmul::{matmul, Packed};
use crate::fastcpu::{act, attention, norm, train as k};
use crate::ops::{AttnShape, EwOp};
use crate::rng::Rng;
use crate::train::ops::{AdamStep, BatchAttn};

#[derive(Debug, Serialize)]
pub struct KernelTime {
    pub name: String,
    /// calls in one training step of the preset (0: not in the step: a decode kernel, a comparison)
    pub per_step: usize,
    /// milliseconds a call (the best of the repetitions' means)
    pub ms: f64,
    /// GFLOP/s for the products (0 for the others)
    pub gflops: f64,
}

/// Times `f`: a warm-up call, then repetitions of at least ~`min_ms` each, the best mean.
fn time(now: &dyn Fn() -> f64, min_ms: f64, f: &mut dyn FnMut()) -> f64 {
    f();
    let t0 = now();
    f();
    let once = (now() - t0).max(1e-3);
    let n = ((min_ms / once).ceil() as usize).clamp(1, 100_000);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = now();
        for _ in 0..n {
            f();
        }
        best = best.min((now() - t0) / n as f64);
    }
    best
}

fn rand(r: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (r.uniform() * 2.0 - 1.0) * scale).collect()
}

/// The kernels of one training step of the preset, then GPT-2 small's decode GEMVs when `decode`
/// (those allocate ~500 MB of weights). `min_ms` per repetition.
pub fn kernel_bench(now: &dyn Fn() -> f64, min_ms: f64, decode: bool) -> Vec<KernelTime> {
    let mut r = Rng::new(5);
    let mut out = Vec::new();
    let (b, t, c, ff, nh, vocab, layers) = (12usize, 64usize, 128usize, 512usize, 4usize, 80usize, 4usize);
    let m = b * t;
    let mut push = |name: &str, per_step: usize, flop: f64, ms: f64| {
        out.push(KernelTime { name: name.into(), per_step, ms, gflops: if flop > 0.0 { flop / ms / 1e6 } else { 0.0 } });
    };
    // the products: (name, N, K) of out (M, N) = x (M, K) W^T, per step
    let prods = [("qkv", 3 * c, c, layers), ("proj", c, c, layers), ("fc", ff, c, layers), ("fc2", c, ff, layers), ("head", vocab, c, 1)];
    for &(name, n, kk, per) in &prods {
        let w = rand(&mut r, n * kk, 0.1);
        let x = rand(&mut r, m * kk, 1.0);
        let dy = rand(&mut r, m * n, 0.1);
        let flop = 2.0 * (m * n * kk) as f64;
        let mut y = vec![0f32; m * n];
        let mut data = Vec::new();
        let ms = time(now, min_ms, &mut || {
            let p = Packed::new_in(std::mem::take(&mut data), &w, n, kk).expect("pack");
            data = p.data;
        });
        push(&format!("pack {name} ({n}x{kk})"), per, 0.0, ms);
        let pw = Packed::new(&w, n, kk).expect("pack");
        let ms = time(now, min_ms, &mut || matmul(&mut y, &x, &pw, None, m).expect("gemm"));
        push(&format!("gemm {name} ({m}x{kk} . {kk}x{n})"), per, flop, ms);
        let ms = time(now, min_ms, &mut || {
            let p = Packed::transposed_in(std::mem::take(&mut data), &w, n, kk).expect("pack");
            data = p.data;
        });
        push(&format!("pack^T {name}"), per, 0.0, ms);
        let wt = Packed::transposed(&w, n, kk).expect("pack");
        let mut dx = vec![0f32; m * kk];
        let ms = time(now, min_ms, &mut || matmul(&mut dx, &dy, &wt, None, m).expect("gemm"));
        push(&format!("dX {name} ({m}x{n} . {n}x{kk})"), per, flop, ms);
        let mut dw = vec![0f32; n * kk];
        let ms = time(now, min_ms, &mut || k::matmul_dw(&mut dw, &dy, &x, m, n, kk, 0));
        push(&format!("dW {name} ({n}x{m} . {m}x{kk})"), per, flop, ms);
    }
    // attention forward and backward, per sequence as the backend runs them
    let hs = c / nh;
    let ba = BatchAttn::new(b, t, t, (nh, nh, hs), true);
    let (nq, _, np, _) = ba.sizes();
    let (q, kv, v) = (rand(&mut r, nq, 1.0), rand(&mut r, nq, 1.0), rand(&mut r, nq, 1.0));
    let dout = rand(&mut r, nq, 0.1);
    let mut sh = AttnShape::packed(t, t, nh, nh, hs);
    sh.causal = Some(0);
    let (per_q, per_p) = (nq / b, np / b);
    let mut o = vec![0f32; nq];
    let mut p = vec![0f32; np];
    let attn_flop = 2.0 * 2.0 * (b * nh * t * t * hs) as f64 / 2.0;
    let ms = time(now, min_ms, &mut || {
        for s in 0..b {
            let r = s * per_q..(s + 1) * per_q;
            k::attention_forward_seq(&mut o[r.clone()], &mut p[s * per_p..][..per_p], &q[r.clone()], &kv[r.clone()], &v[r], None, &ba);
        }
    });
    push("attention forward", layers, attn_flop, ms);
    // the inference kernel on the same shapes (the training forward ran on it before its own tiles)
    let ms = time(now, min_ms, &mut || {
        for s in 0..b {
            let r = s * per_q..(s + 1) * per_q;
            attention::attention(&mut o[r.clone()], &mut p[s * per_p..][..per_p], &q[r.clone()], &kv[r.clone()], &v[r], None, &sh)
                .expect("attention");
        }
    });
    push("attention forward, the inference kernel", 0, attn_flop, ms);
    let (mut dq, mut dk, mut dv) = (vec![0f32; nq], vec![0f32; nq], vec![0f32; nq]);
    let ms = time(now, min_ms, &mut || {
        for s in 0..b {
            let r = s * per_q..(s + 1) * per_q;
            k::attention_backward_seq(
                &mut dq[r.clone()],
                &mut dk[r.clone()],
                &mut dv[r.clone()],
                &dout[r.clone()],
                &p[s * per_p..][..per_p],
                &q[r.clone()],
                &kv[r.clone()],
                &v[r],
                &ba,
            );
        }
    });
    push("attention backward", layers, 2.0 * attn_flop, ms);
    // norms, activations, loss, optimizer
    let x = rand(&mut r, m * c, 1.0);
    let (g, be) = (rand(&mut r, c, 1.0), rand(&mut r, c, 0.1));
    let mut y = vec![0f32; m * c];
    let ms = time(now, min_ms, &mut || norm::layernorm(&mut y, &x, &g, &be, c, 1e-5));
    push("layernorm (768x128)", 2 * layers + 1, 0.0, ms);
    let dyc = rand(&mut r, m * c, 0.1);
    let (mut dx, mut dg, mut db) = (vec![0f32; m * c], vec![0f32; c], vec![0f32; c]);
    let ms = time(now, min_ms, &mut || k::layernorm_backward(&mut dx, &mut dg, &mut db, &dyc, &x, &g, c, 1e-5));
    push("layernorm backward", 2 * layers + 1, 0.0, ms);
    let h = rand(&mut r, m * ff, 2.0);
    let mut hy = vec![0f32; m * ff];
    // as the training forward runs it: in place over the pre-activation's copy
    let ms = time(now, min_ms, &mut || {
        hy.copy_from_slice(&h);
        act::inplace(&mut hy, None, EwOp::GeluTanh)
    });
    push("gelu-tanh in place (768x512, with a copy)", layers, 0.0, ms);
    let dh = rand(&mut r, m * ff, 0.1);
    let ms = time(now, min_ms, &mut || k::act_backward(&mut hy, &dh, &h, EwOp::GeluTanh));
    push("gelu-tanh backward", layers, 0.0, ms);
    let mut res = rand(&mut r, m * c, 1.0);
    let ms = time(now, min_ms, &mut || act::inplace(&mut res, Some(&x), EwOp::Add));
    push("residual add (768x128)", 2 * layers, 0.0, ms);
    let logits0 = rand(&mut r, m * vocab, 3.0);
    let targets: Vec<u32> = (0..m).map(|i| (i * 7 % vocab) as u32).collect();
    let (mut losses, mut logits) = (vec![0f32; m], logits0.clone());
    let ms = time(now, min_ms, &mut || {
        logits.copy_from_slice(&logits0);
        k::cross_entropy(&mut losses, &mut logits, &targets, vocab, 1.0 / m as f32, None).expect("ce")
    });
    push("cross-entropy (768x80, with a copy)", 1, 0.0, ms);
    let params = 811_776;
    let (mut pp, gg, mut mm, mut vv) = (rand(&mut r, params, 0.1), rand(&mut r, params, 0.01), vec![0f32; params], vec![0f32; params]);
    let norms = [1.0f32, 0.0];
    let a = AdamStep { lr: 1e-3, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1, step: 3, clip: Some(1.0), parts: 1 };
    let ms = time(now, min_ms, &mut || k::adamw(&mut pp, &gg, &mut mm, &mut vv, &norms, &a));
    push("adamw (811,776)", 1, 0.0, ms);
    let ms = time(now, min_ms, &mut || {
        std::hint::black_box(k::sum_squares(&gg));
    });
    push("sum of squares (811,776)", 1, 0.0, ms);
    if decode {
        // GPT-2 small, one token: the layer's four products and the tied head over 50,257 rows
        let d = 768;
        for &(name, n, kk) in &[("qkv", 3 * d, d), ("proj", d, d), ("fc", 4 * d, d), ("fc2", d, 4 * d), ("head", 50_257, d)] {
            let w = rand(&mut r, n * kk, 0.05);
            let pw = Packed::new(&w, n, kk).expect("pack");
            drop(w);
            let x = rand(&mut r, kk, 1.0);
            let mut y = vec![0f32; n];
            let ms = time(now, min_ms, &mut || matmul(&mut y, &x, &pw, None, 1).expect("gemv"));
            push(&format!("gpt2 gemv {name} ({n}x{kk})"), 0, 2.0 * (n * kk) as f64, ms);
        }
    }
    out
}
