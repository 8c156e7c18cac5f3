//! Every op of the fast CPU backend against its reference twin (crate::cpu, f64 accumulation), on
//! shape sweeps that include 1, primes and sizes that are not multiples of the tiles (NR = 16,
//! MR = 4, 8 lanes), once with the AVX2+FMA build and once with the portable build (the code the page
//! runs as simd128). Tolerances are atol + rtol * |reference|, written next to each test.

use tinyformer::cpu::{self, AttnShape, EwOp};
use tinyformer::fastcpu::{self, act, attention, matmul, norm, simd};

/// Deterministic values in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut max = 0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        max = max.max(d);
        assert!(
            d <= atol + rtol * w.abs(),
            "{what}[{i}]: fast {g}, reference {w} (|diff| {d:e}); first values {:?} vs {:?}",
            &got[..got.len().min(4)],
            &want[..want.len().min(4)]
        );
    }
    max
}

/// Runs `f` with the AVX2+FMA build (where the CPU has it) and with the portable build.
fn both_builds(mut f: impl FnMut(&str)) {
    for portable in [false, true] {
        simd::force_portable(portable);
        f(simd::isa());
    }
    simd::force_portable(false);
}

// f32 accumulation over K <= 200 products of values <= 1: |error| stays far below 1e-4.
const MATMUL_ATOL: f32 = 1e-4;
const MATMUL_RTOL: f32 = 1e-4;

#[test]
fn matmul_matches_reference_on_a_shape_sweep() {
    let mut r = Lcg(1);
    let mut worst = 0f32;
    both_builds(|isa| {
        for m in [1, 2, 3, 4, 5, 7, 13, 64, 129] {
            for k in [1, 3, 8, 17, 31, 64, 193] {
                for n in [1, 5, 15, 16, 17, 33, 64, 97] {
                    for bias in [false, true] {
                        let x = r.vec(m * k, 1.0);
                        let w = r.vec(n * k, 1.0);
                        let b = r.vec(n, 1.0);
                        let b = bias.then_some(&b[..]);
                        let mut want = vec![0f32; m * n];
                        cpu::matmul(&mut want, &x, &w, b, m, k, n).unwrap();
                        let pk = matmul::Packed::new(&w, n, k).unwrap();
                        let mut got = vec![f32::NAN; m * n];
                        matmul::matmul(&mut got, &x, &pk, b, m).unwrap();
                        let d = assert_close(&format!("matmul {isa} M={m} K={k} N={n} bias={bias}"), &got, &want, MATMUL_ATOL, MATMUL_RTOL);
                        worst = worst.max(d);
                    }
                }
            }
        }
    });
    println!("matmul: max |fast - reference| {worst:e}");
}

#[test]
fn matmul_rejects_wrong_shapes_with_the_op_name() {
    let pk = matmul::Packed::new(&[0.0; 6], 2, 3).unwrap();
    let mut out = [0f32; 4];
    let e = matmul::matmul(&mut out, &[0.0; 5], &pk, None, 2).unwrap_err().to_string();
    assert!(e.starts_with("matmul: x has 5 values"), "{e}");
    let e = matmul::matmul(&mut out, &[0.0; 6], &pk, Some(&[0.0; 3]), 2).unwrap_err().to_string();
    assert!(e.starts_with("matmul: bias has 3 values"), "{e}");
    assert!(matmul::Packed::new(&[0.0; 5], 2, 3).is_err());
}

// Probabilities are f32 softmaxes of f32 dot products (HS <= 64, values <= 1): 1e-5 absolute.
const ATTN_ATOL: f32 = 1e-5;
const ATTN_RTOL: f32 = 1e-4;

#[test]
fn attention_matches_reference_on_a_shape_sweep() {
    let mut r = Lcg(2);
    both_builds(|isa| {
        for (nh, nkv) in [(1, 1), (2, 1), (6, 2), (4, 4)] {
            for hs in [1, 3, 8, 17, 32] {
                for (tq, cached) in [(1, 0), (1, 1), (1, 30), (3, 0), (5, 7), (17, 0), (13, 64)] {
                    let tk = cached + tq;
                    for masked in [false, true] {
                        let q = r.vec(tq * nh * hs, 2.0);
                        let k = r.vec(tk * nkv * hs, 2.0);
                        let v = r.vec(tk * nkv * hs, 1.0);
                        let s = AttnShape::packed(tq, tk, nh, nkv, hs);
                        // masked: an explicit mask with holes and one fully blocked query row;
                        // else causal over the cache
                        let (s, mask) = if masked {
                            let mut m: Vec<f32> = (0..tq * tk).map(|i| if (i * 7 + 3) % 5 == 0 { 0.0 } else { 1.0 }).collect();
                            m[..tk].fill(0.0);
                            (s, Some(m))
                        } else {
                            (s.with_causal(cached), None)
                        };
                        let (mut ow, mut pw) = (vec![0f32; tq * nh * hs], vec![0f32; nh * tq * tk]);
                        cpu::attention(&mut ow, &mut pw, &q, &k, &v, mask.as_deref(), &s).unwrap();
                        let (mut og, mut pg) = (vec![f32::NAN; tq * nh * hs], vec![f32::NAN; nh * tq * tk]);
                        attention::attention(&mut og, &mut pg, &q, &k, &v, mask.as_deref(), &s).unwrap();
                        let what = format!("attention {isa} NH={nh} NKV={nkv} HS={hs} Tq={tq} Tk={tk} masked={masked}");
                        assert_close(&format!("{what} probs"), &pg, &pw, ATTN_ATOL, ATTN_RTOL);
                        assert_close(&format!("{what} out"), &og, &ow, ATTN_ATOL, ATTN_RTOL);
                        // blocked keys are exactly 0, as in the reference
                        for (g, w) in pg.iter().zip(&pw) {
                            assert_eq!(*w == 0.0, *g == 0.0, "{what}: a blocked key must be exactly 0");
                        }
                    }
                }
            }
        }
    });
}

#[test]
fn attention_reads_q_k_v_through_offsets_and_strides() {
    // q, k, v interleaved in one (T, 3 * NH * HS) buffer, as a fused QKV product lays them out
    let mut r = Lcg(3);
    let (t, nh, hs) = (9, 3, 8);
    let w = nh * hs;
    let qkv = r.vec(t * 3 * w, 1.5);
    let mut s = AttnShape::packed(t, t, nh, nh, hs).with_causal(0);
    (s.q_offset, s.k_offset, s.v_offset) = (0, w, 2 * w);
    (s.q_stride, s.k_stride, s.v_stride) = (3 * w, 3 * w, 3 * w);
    let (mut ow, mut pw) = (vec![0f32; t * w], vec![0f32; nh * t * t]);
    cpu::attention(&mut ow, &mut pw, &qkv, &qkv, &qkv, None, &s).unwrap();
    let (mut og, mut pg) = (vec![0f32; t * w], vec![0f32; nh * t * t]);
    attention::attention(&mut og, &mut pg, &qkv, &qkv, &qkv, None, &s).unwrap();
    assert_close("strided probs", &pg, &pw, ATTN_ATOL, ATTN_RTOL);
    assert_close("strided out", &og, &ow, ATTN_ATOL, ATTN_RTOL);
    let e = attention::attention(&mut og, &mut pg, &qkv[..10], &qkv, &qkv, None, &s).unwrap_err().to_string();
    assert!(e.starts_with("attention: q has 10 values"), "{e}");
}

// Norms: f32 sums over C <= 500 of values with |x| <= 3.
const NORM_ATOL: f32 = 1e-5;
const NORM_RTOL: f32 = 1e-4;

#[test]
fn norms_match_reference() {
    let mut r = Lcg(4);
    both_builds(|isa| {
        for rows in [1, 2, 5, 16] {
            for c in [1, 2, 7, 8, 9, 33, 192, 499] {
                let x: Vec<f32> = r.vec(rows * c, 3.0).iter().map(|v| v + 0.5).collect();
                let (g, b) = (r.vec(c, 1.0), r.vec(c, 1.0));
                let (mut want, mut got) = (vec![0f32; rows * c], vec![0f32; rows * c]);
                cpu::layernorm(&mut want, &x, &g, &b, c, 1e-5);
                norm::layernorm(&mut got, &x, &g, &b, c, 1e-5);
                assert_close(&format!("layernorm {isa} rows={rows} C={c}"), &got, &want, NORM_ATOL, NORM_RTOL);
                cpu::rmsnorm(&mut want, &x, &g, c, 1e-5);
                norm::rmsnorm(&mut got, &x, &g, c, 1e-5);
                assert_close(&format!("rmsnorm {isa} rows={rows} C={c}"), &got, &want, NORM_ATOL, NORM_RTOL);
            }
        }
    });
}

// The fast exp / erf are polynomial: ~2e-7 relative (exp), 1.5e-7 absolute (erf) by construction
// (plus f32 rounding: erf within 5e-7 in the test below);
// GELU / SiLU / SwiGLU of |x| <= 12 within 1e-6 absolute + 1e-5 relative of the f64 reference.
const ACT_ATOL: f32 = 1e-6;
const ACT_RTOL: f32 = 1e-5;

#[test]
fn elementwise_ops_match_reference() {
    let mut r = Lcg(5);
    both_builds(|isa| {
        for n in [1, 7, 8, 9, 100, 1031] {
            let a = r.vec(n, 12.0);
            let b = r.vec(n, 3.0);
            for op in [EwOp::Relu, EwOp::Gelu, EwOp::Silu, EwOp::SwiGlu, EwOp::Add, EwOp::Mul] {
                let bin = op.is_binary().then_some(&b[..]);
                let mut want = vec![0f32; n];
                cpu::elementwise(&mut want, &a, bin, op);
                let mut got = vec![0f32; n];
                act::elementwise(&mut got, &a, bin, op);
                assert_close(&format!("elementwise {isa} {op:?} N={n}"), &got, &want, ACT_ATOL, ACT_RTOL);
                let mut x = a.clone();
                act::inplace(&mut x, bin, op);
                assert_close(&format!("inplace {isa} {op:?} N={n}"), &x, &want, ACT_ATOL, ACT_RTOL);
            }
        }
    });
}

#[test]
fn fast_exp_and_erf_against_f64() {
    let mut x = -90.0f32;
    while x < 88.0 {
        let want = (x as f64).exp();
        let got = simd::exp(x) as f64;
        if x < -87.3 {
            assert_eq!(got, 0.0, "exp({x}) below the cut-off is exactly 0");
        } else {
            assert!((got - want).abs() <= 3e-7 * want, "exp({x}) = {got}, f64 {want}");
        }
        let e = simd::erf(x / 10.0) as f64;
        let ew = libm::erf(x as f64 / 10.0);
        assert!((e - ew).abs() <= 5e-7, "erf({}) = {e}, f64 {ew}", x / 10.0);
        x += 0.0173;
    }
    assert_eq!(simd::exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(simd::exp(0.0), 1.0);
}

#[test]
fn the_native_build_uses_avx2_where_the_cpu_has_it() {
    #[cfg(target_arch = "x86_64")]
    {
        let has = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        assert_eq!(simd::isa(), if has { "avx2+fma" } else { "portable" });
        simd::force_portable(true);
        assert_eq!(simd::isa(), "portable");
        simd::force_portable(false);
    }
    let _ = fastcpu::FastCpuBackend;
}
