//! Every training op's reference backward (src/cpu/backward.rs) against central finite
//! differences of its forward, over a sweep of shapes, masks and GQA ratios; the fast CPU
//! backend's training ops against the reference. Each op is checked through a scalar
//! L = sum(r * f(inputs)) with a random r: its backward given dy = r must equal dL/dinput.
//!
//! Tolerances: the forwards store f32, so a central difference with step H = 1e-2 over a loss
//! summed in f64 carries an error of about 1e-4 relative plus the O(H^2) truncation; we accept
//! |analytic - numeric| <= ATOL + RTOL * |numeric| with ATOL = 2e-3 and RTOL = 2e-2, and check
//! that the analytic gradient is not trivially zero.

use tinyformer::cpu::backward as bw;
use tinyformer::cpu::moe_backward as moe_bw;
use tinyformer::cpu::{layernorm, rmsnorm, rope, rope_table};
use tinyformer::ops::EwOp;
use tinyformer::rng::Rng;
use tinyformer::train::ops::BatchAttn;

const H: f32 = 1e-2;
const ATOL: f64 = 2e-3;
const RTOL: f64 = 2e-2;

fn rand(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gaussian() * scale).collect()
}

fn dot(r: &[f32], y: &[f32]) -> f64 {
    r.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Checks `analytic` = d f / d x by central differences at every coordinate (or every `stride`-th).
fn check(what: &str, x: &mut [f32], analytic: &[f32], stride: usize, mut f: impl FnMut(&[f32]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let mut worst = 0f64;
    let mut norm = 0f64;
    for i in (0..x.len()).step_by(stride.max(1)) {
        let x0 = x[i];
        x[i] = x0 + H;
        let up = f(x);
        x[i] = x0 - H;
        let down = f(x);
        x[i] = x0;
        let num = (up - down) / (2.0 * H as f64);
        let an = analytic[i] as f64;
        norm += an.abs();
        let err = (an - num).abs();
        assert!(err <= ATOL + RTOL * num.abs(), "{what}[{i}]: analytic {an} vs numeric {num}");
        worst = worst.max(err);
    }
    assert!(norm > 1e-3, "{what}: the analytic gradient is all zero");
}

#[test]
fn matmul_backward_matches_finite_differences() {
    let mut rng = Rng::new(1);
    for (m, k, n) in [(1, 3, 2), (5, 7, 4), (9, 16, 11)] {
        let (mut x, mut w, mut b) = (rand(&mut rng, m * k, 1.0), rand(&mut rng, n * k, 0.5), rand(&mut rng, n, 0.5));
        let r = rand(&mut rng, m * n, 1.0);
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0f32; m * n];
            tinyformer::cpu::matmul(&mut y, x, w, Some(b), m, k, n).unwrap();
            dot(&r, &y)
        };
        let (mut dx, mut dw, mut db) = (vec![0f32; m * k], vec![0f32; n * k], vec![0f32; n]);
        bw::matmul_backward(Some((&mut dx, false)), &mut dw, Some(&mut db), &r, &x, &w, m, n, k);
        let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
        check("matmul dx", &mut x, &dx, 1, |x| fwd(x, &w0, &b0));
        check("matmul dw", &mut w, &dw, 1, |w| fwd(&x0, w, &b0));
        check("matmul db", &mut b, &db, 1, |b| fwd(&x0, &w0, b));
        // accumulation: dx += and dw += add to what is there
        let mut dx2 = vec![1f32; m * k];
        let mut dw2 = dw.clone();
        bw::matmul_backward(Some((&mut dx2, true)), &mut dw2, None, &r, &x0, &w0, m, n, k);
        for i in 0..m * k {
            assert!((dx2[i] - 1.0 - dx[i]).abs() < 1e-5);
        }
        for i in 0..n * k {
            assert!((dw2[i] - 2.0 * dw[i]).abs() < 1e-4 * (1.0 + dw[i].abs()));
        }
    }
}

#[test]
fn norm_backwards_match_finite_differences() {
    let mut rng = Rng::new(2);
    for (rows, c) in [(1, 4), (3, 16), (5, 33)] {
        let (mut x, mut g, mut b) = (rand(&mut rng, rows * c, 1.5), rand(&mut rng, c, 1.0), rand(&mut rng, c, 1.0));
        let r = rand(&mut rng, rows * c, 1.0);
        let ln = |x: &[f32], g: &[f32], b: &[f32]| {
            let mut y = vec![0f32; rows * c];
            layernorm(&mut y, x, g, b, c, 1e-5);
            dot(&r, &y)
        };
        let (mut dx, mut dg, mut db) = (vec![0f32; rows * c], vec![0f32; c], vec![0f32; c]);
        bw::layernorm_backward(&mut dx, &mut dg, &mut db, &r, &x, &g, c, 1e-5);
        let (x0, g0, b0) = (x.clone(), g.clone(), b.clone());
        check("layernorm dx", &mut x, &dx, 1, |x| ln(x, &g0, &b0));
        check("layernorm dg", &mut g, &dg, 1, |g| ln(&x0, g, &b0));
        check("layernorm db", &mut b, &db, 1, |b| ln(&x0, &g0, b));
        let rms = |x: &[f32], w: &[f32]| {
            let mut y = vec![0f32; rows * c];
            rmsnorm(&mut y, x, w, c, 1e-6);
            dot(&r, &y)
        };
        let (mut dx, mut dw) = (vec![0f32; rows * c], vec![0f32; c]);
        bw::rmsnorm_backward(&mut dx, &mut dw, &r, &x0, &g0, c, 1e-6);
        let mut x = x0.clone();
        check("rmsnorm dx", &mut x, &dx, 1, |x| rms(x, &g0));
        let mut g = g0.clone();
        check("rmsnorm dw", &mut g, &dw, 1, |g| rms(&x0, g));
    }
}

#[test]
fn activation_backwards_match_finite_differences() {
    let mut rng = Rng::new(3);
    let n = 64;
    // ReLU's kink: keep the points away from 0 so a difference step does not cross it
    let mut h: Vec<f32> = rand(&mut rng, n, 2.0).into_iter().map(|v| if v.abs() < 0.05 { v + 0.1 } else { v }).collect();
    let r = rand(&mut rng, n, 1.0);
    for op in [EwOp::Relu, EwOp::Gelu, EwOp::GeluTanh, EwOp::Silu] {
        let f = |h: &[f32]| {
            let mut y = h.to_vec();
            tinyformer::cpu::inplace(&mut y, None, op);
            dot(&r, &y)
        };
        let mut dx = vec![0f32; n];
        bw::act_backward(&mut dx, &r, &h, op).unwrap();
        check(&format!("{op:?}"), &mut h, &dx, 1, f);
    }
    assert!(bw::act_backward(&mut [0.0], &[1.0], &[1.0], EwOp::Add).is_err(), "Add is not an activation");
    let (mut gate, mut up) = (rand(&mut rng, n, 1.5), rand(&mut rng, n, 1.5));
    let f = |g: &[f32], u: &[f32]| {
        let mut y = vec![0f32; n];
        tinyformer::cpu::swiglu(&mut y, g, u);
        dot(&r, &y)
    };
    let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
    bw::swiglu_backward(&mut dg, &mut du, &r, &gate, &up).unwrap();
    let (g0, u0) = (gate.clone(), up.clone());
    check("swiglu dgate", &mut gate, &dg, 1, |g| f(g, &u0));
    check("swiglu dup", &mut up, &du, 1, |u| f(&g0, u));
}

#[test]
fn rope_backward_is_the_inverse_rotation() {
    let mut rng = Rng::new(4);
    let (t, nh, hs) = (5, 3, 8);
    let table = rope_table(16, hs, 10000.0);
    let mut x = rand(&mut rng, t * nh * hs, 1.0);
    let r = rand(&mut rng, t * nh * hs, 1.0);
    let f = |x: &[f32]| {
        let mut y = x.to_vec();
        rope(&mut y, &table, t, nh, hs, 2, nh * hs, 0);
        dot(&r, &y)
    };
    let mut dx = r.clone();
    bw::rope_backward(&mut dx, &table, t, nh, hs, 2, nh * hs, 0);
    check("rope", &mut x, &dx, 1, f);
}

#[test]
fn attention_backward_matches_finite_differences() {
    let mut rng = Rng::new(5);
    // (B, T, NH, NKV, HS, causal, key padding)
    for (b, t, nh, nkv, hs, causal, pad) in
        [(1, 4, 2, 2, 4, true, false), (2, 5, 4, 2, 4, true, false), (2, 6, 4, 1, 8, false, true), (3, 4, 2, 2, 4, true, true)]
    {
        let s = BatchAttn::new(b, t, t, (nh, nkv, hs), causal);
        let (nq, nk, np, _) = s.sizes();
        // the last key of each sequence after the first is padding (a query may then see none)
        let keys: Vec<f32> = (0..b * t).map(|i| if pad && i % t == t - 1 && i / t > 0 { 0.0 } else { 1.0 }).collect();
        let km = pad.then_some(keys.as_slice());
        let (mut q, mut k, mut v) = (rand(&mut rng, nq, 1.0), rand(&mut rng, nk, 1.0), rand(&mut rng, nk, 1.0));
        let r = rand(&mut rng, nq, 1.0);
        let f = |q: &[f32], k: &[f32], v: &[f32]| {
            let (mut out, mut probs) = (vec![0f32; nq], vec![0f32; np]);
            bw::attention_batch(&mut out, &mut probs, q, k, v, km, &s).unwrap();
            dot(&r, &out)
        };
        let (mut out, mut probs) = (vec![0f32; nq], vec![0f32; np]);
        bw::attention_batch(&mut out, &mut probs, &q, &k, &v, km, &s).unwrap();
        let (mut dq, mut dk, mut dv) = (vec![0f32; nq], vec![9f32; nk], vec![9f32; nk]);
        bw::attention_backward(&mut dq, &mut dk, &mut dv, &r, &probs, &q, &k, &v, &s).unwrap();
        let what = format!("attention B{b} T{t} NH{nh} NKV{nkv} causal {causal} pad {pad}");
        let (q0, k0, v0) = (q.clone(), k.clone(), v.clone());
        check(&format!("{what} dq"), &mut q, &dq, 1, |q| f(q, &k0, &v0));
        check(&format!("{what} dk"), &mut k, &dk, 1, |k| f(&q0, k, &v0));
        check(&format!("{what} dv"), &mut v, &dv, 1, |v| f(&q0, &k0, v));
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let mut rng = Rng::new(6);
    let (rows, v) = (4, 7);
    let mut logits = rand(&mut rng, rows * v, 2.0);
    let targets = [3u32, 0, 6, 2];
    let scale = 0.25f32;
    let f = |x: &[f32]| {
        let (mut l, mut g) = (vec![0f32; rows], x.to_vec());
        bw::cross_entropy(&mut l, &mut g, &targets, v, scale, Some(0)).unwrap();
        l.iter().map(|&x| x as f64 * scale as f64).sum::<f64>()
    };
    let (mut losses, mut grad) = (vec![0f32; rows], logits.clone());
    bw::cross_entropy(&mut losses, &mut grad, &targets, v, scale, Some(0)).unwrap();
    assert_eq!(losses[1], 0.0, "an ignored target has no loss");
    assert!(grad[v..2 * v].iter().all(|&g| g == 0.0), "and no gradient");
    // each row's loss is -log softmax at the target
    let row = &logits[..v];
    let lse = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
    assert!((losses[0] as f64 - (lse - row[3] as f64)).abs() < 1e-5);
    check("cross_entropy", &mut logits, &grad, 1, f);
    assert!(bw::cross_entropy(&mut [0.0], &mut [0.0; 3], &[5], 3, 1.0, None).is_err(), "a target outside the vocabulary");
}

#[test]
fn embedding_and_positions_backward_sum_rows_in_order() {
    let (c, v) = (3, 4);
    let dout: Vec<f32> = (0..5 * c).map(|i| i as f32).collect();
    let ids = [2u32, 0, 2, 3, 2];
    let mut dt = vec![0f32; v * c];
    bw::embedding_backward(&mut dt, &dout, &ids, c, 0.5).unwrap();
    // row 2 collects tokens 0, 2 and 4
    for j in 0..c {
        assert_eq!(dt[2 * c + j], 0.5 * (dout[j] + dout[2 * c + j] + dout[4 * c + j]));
        assert_eq!(dt[c + j], 0.0);
    }
    assert!(bw::embedding_backward(&mut dt, &dout[..c], &[9], c, 1.0).is_err(), "an id outside the table");
    let mut dp = vec![0f32; 2 * c];
    bw::positions_backward(&mut dp, &dout[..4 * c], c, 2);
    for j in 0..c {
        assert_eq!(dp[j], dout[j] + dout[2 * c + j]);
        assert_eq!(dp[c + j], dout[c + j] + dout[3 * c + j]);
    }
}

#[test]
fn moe_combine_backward_matches_finite_differences() {
    let mut rng = Rng::new(7);
    let (t, e, c, ys_rows) = (5, 4, 6, 7);
    let mut ys = rand(&mut rng, e * ys_rows * c, 1.0);
    // each token keeps two experts; the others have gate 0 (not chosen or dropped)
    let mut gate: Vec<f32> = (0..t * e).map(|i| if (i / e + i % e) % 2 == 0 { 0.2 + 0.1 * (i % 5) as f32 } else { 0.0 }).collect();
    let r = rand(&mut rng, t * c, 1.0);
    let f = |ys: &[f32], gate: &[f32]| {
        let mut out = vec![0f32; t * c];
        tinyformer::cpu::moe_combine(&mut out, ys, gate, t, e, c, ys_rows);
        dot(&r, &out)
    };
    let (mut dys, mut dgate) = (vec![0f32; e * ys_rows * c], vec![9f32; t * e]);
    for x in 0..e {
        let mut dy = vec![9f32; t * c];
        moe_bw::moe_combine_backward(&mut dy, &mut dgate, &r, &ys, &gate, x, (t, e, c, ys_rows));
        dys[x * ys_rows * c..][..t * c].copy_from_slice(&dy);
        for tok in 0..t {
            if gate[tok * e + x] == 0.0 {
                assert!(dy[tok * c..][..c].iter().all(|&v| v == 0.0), "a token expert {x} did not keep has no gradient there");
            }
        }
    }
    let (ys0, g0) = (ys.clone(), gate.clone());
    check("moe_combine dys", &mut ys, &dys, 1, |ys| f(ys, &g0));
    check("moe_combine dgate", &mut gate, &dgate, 1, |g| f(&ys0, g));
}

/// The router's backward through top-k, renormalisation, capacity drops and the load-balancing
/// loss: L = sum(r * gate) + AUX * aux. Each token's logits are a rotation of levels 0.5 apart
/// (plus small noise), so no difference step changes a top-k choice; the top-2 assignments are
/// unbalanced (1, 3, 7 and 5 of the 16), so the load-balancing loss has a gradient, and the
/// capacity (3 per expert, in token order) drops some.
#[test]
fn moe_router_backward_matches_finite_differences() {
    const AUX: f32 = 0.7;
    let mut rng = Rng::new(8);
    let (t, e, k) = (8, 4, 2);
    let cap = tinyformer::ops::moe_capacity_for(0.75, t, k, e);
    assert_eq!(cap, 3);
    let mut logits: Vec<f32> = (0..t)
        .flat_map(|tok| (0..e).map(move |i| ((i + [0, 1, 0, 0, 1, 0, 2, 0][tok]) % e) as f32 * 0.5))
        .zip(rand(&mut rng, t * e, 0.05))
        .map(|(l, n)| l + n)
        .collect();
    let r = rand(&mut rng, t * e, 1.0);
    let route = |logits: &[f32]| {
        let (mut probs, mut experts, mut weights) = (vec![0f32; t * e], vec![0u32; t * k], vec![0f32; t * k]);
        tinyformer::cpu::moe_router(&mut probs, &mut experts, &mut weights, logits, t, e, k);
        let (mut gate, mut kept) = (vec![0f32; t * e], vec![0u32; t * k]);
        tinyformer::cpu::moe_capacity(&mut gate, &mut kept, &experts, &weights, t, e, k, Some(cap));
        (probs, experts, weights, gate, kept)
    };
    let f = |logits: &[f32]| {
        let (probs, experts, _, gate, _) = route(logits);
        dot(&r, &gate) + AUX as f64 * moe_bw::moe_aux_loss(&probs, &experts, t, e, k).unwrap() as f64
    };
    let (probs, experts, weights, _, kept) = route(&logits);
    assert!(kept.contains(&0) && kept.contains(&1), "some assignments are dropped, some kept");
    let mut dlogits = vec![9f32; t * e];
    let routing = moe_bw::Routing { probs: &probs, experts: &experts, weights: &weights, kept: &kept, e, k };
    moe_bw::moe_router_backward(&mut dlogits, &r, &routing, AUX).unwrap();
    check("moe_router", &mut logits, &dlogits, 1, f);
    // the load-balancing term alone
    let zero = vec![0f32; t * e];
    moe_bw::moe_router_backward(&mut dlogits, &zero, &routing, AUX).unwrap();
    check("moe_router aux", &mut logits, &dlogits, 1, |l| {
        let (probs, experts, ..) = route(l);
        AUX as f64 * moe_bw::moe_aux_loss(&probs, &experts, t, e, k).unwrap() as f64
    });
    assert!(
        moe_bw::moe_router_backward(&mut dlogits, &r, &moe_bw::Routing { experts: &[9; 16], ..routing }, AUX).is_err(),
        "an expert out of range"
    );
}

#[test]
fn moe_aux_loss_by_hand() {
    // E * sum_e f_e P_e with P = (0.55, 0.45)
    let probs = [0.7f32, 0.3, 0.4, 0.6];
    let aux = |experts: &[u32]| moe_bw::moe_aux_loss(&probs, experts, 2, 2, 1).unwrap();
    assert!((aux(&[0, 1]) - 1.0).abs() < 1e-6, "balanced: f = (0.5, 0.5)");
    assert!((aux(&[0, 0]) - 1.1).abs() < 1e-6, "f = (1, 0)");
}
