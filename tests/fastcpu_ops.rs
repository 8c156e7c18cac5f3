//! Every op of the fast CPU backend against its reference twin (crate::cpu, f64 accumulation), on
//! shape sweeps that include 1, primes and sizes that are not multiples of the tiles (NR = 16,
//! MR = 4, 8 lanes), once with the AVX2+FMA build and once with the portable build (the code the page
//! runs as simd128). Tolerances are atol + rtol * |reference|, written next to each test.

use tinyformer::cpu;
use tinyformer::fastcpu::check::{self, attention_sweep_over, Sweep};
use tinyformer::fastcpu::{self, act, attention, matmul, norm, simd};
use tinyformer::ops::{AttnShape, EwOp};

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

// Probabilities are f32 softmaxes of f32 dot products: the tolerances of src/fastcpu/check.rs.
const ATTN_ATOL: f32 = check::ATTN_ATOL as f32;
const ATTN_RTOL: f32 = check::ATTN_RTOL as f32;

/// The sweep the page's builds run (src/fastcpu/check.rs, tolerances there), natively in both builds.
#[test]
fn the_page_attention_sweep_passes_natively() {
    both_builds(|isa| {
        let r = check::attention_sweep();
        assert!(r.failures.is_empty(), "{isa}: {:?}", &r.failures[..r.failures.len().min(5)]);
        assert_eq!(r.cases, 4 * 7 * 8 * 2, "{isa}: every shape ran");
    });
}

#[test]
fn attention_matches_reference_on_a_shape_sweep() {
    // head sizes around the lanes (8 natively, 4 in simd128); key counts around the blocks of 4
    let sweep = Sweep {
        heads: &[(1, 1), (2, 1), (6, 2), (4, 4)],
        head_sizes: &[1, 3, 4, 8, 17, 32, 33],
        rows: &[(1, 0), (1, 1), (1, 2), (1, 30), (1, 127), (3, 0), (5, 7), (17, 0), (13, 64), (128, 0), (128, 3)],
        seed: 2,
    };
    both_builds(|isa| {
        let r = attention_sweep_over(&sweep);
        assert!(r.failures.is_empty(), "{isa}: {:?}", &r.failures[..r.failures.len().min(5)]);
        assert_eq!(r.cases, 4 * 7 * 11 * 2, "{isa}: every shape ran");
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

/// The fused residual add + norm (`norm::add_norm`) against the reference add, then the reference
/// LayerNorm / RMSNorm (f64), pre-norm (out given) and post-norm (x normalised in place), same
/// tolerances as the norms; and through both backends' `add_norm`, with its guards.
#[test]
fn add_norm_matches_reference_add_then_norm() {
    use tinyformer::fastcpu::FastCpuBackend;
    use tinyformer::model::{Backend, CpuBackend};
    let mut r = Lcg(7);
    both_builds(|isa| {
        for rows in [1, 3, 16] {
            for c in [1, 7, 8, 9, 33, 192, 499] {
                let x: Vec<f32> = r.vec(rows * c, 3.0).iter().map(|v| v + 0.5).collect();
                let y = r.vec(rows * c, 2.0);
                let (g, b) = (r.vec(c, 1.0), r.vec(c, 1.0));
                let sum: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
                for layer in [true, false] {
                    let mut want = vec![0f32; rows * c];
                    if layer {
                        cpu::layernorm(&mut want, &sum, &g, &b, c, 1e-5);
                    } else {
                        cpu::rmsnorm(&mut want, &sum, &g, c, 1e-5);
                    }
                    let beta = layer.then_some(&b[..]);
                    let what = format!("add_norm {isa} layer={layer} rows={rows} C={c}");
                    // pre-norm: x holds the sum, out the norm
                    let (mut xg, mut out) = (x.clone(), vec![f32::NAN; rows * c]);
                    norm::add_norm(&mut xg, &y, Some(&mut out), &g, beta, c, 1e-5);
                    assert_eq!(xg, sum, "{what}: x must hold x + y");
                    assert_close(&format!("{what} pre-norm"), &out, &want, NORM_ATOL, NORM_RTOL);
                    // post-norm: x holds the norm of the sum
                    let mut xg = x.clone();
                    norm::add_norm(&mut xg, &y, None, &g, beta, c, 1e-5);
                    assert_close(&format!("{what} post-norm"), &xg, &want, NORM_ATOL, NORM_RTOL);
                }
            }
        }
    });
    // the backends' op: rows of a larger buffer, both forms, against the reference backend
    fn run<B: Backend>(mut be: B, pre: bool, layer: bool) -> Vec<f32> {
        let (rows, c) = (3, 10);
        let mut r = Lcg(8);
        let x = be.tensor(&[4, c], &r.vec(4 * c, 2.0), "x").unwrap();
        let y = be.tensor(&[4, c], &r.vec(4 * c, 2.0), "y").unwrap();
        let out = be.zeros(&[4, c], "out").unwrap();
        let w = be.tensor(&[c], &r.vec(c, 1.0), "w").unwrap();
        let b = be.tensor(&[c], &r.vec(c, 1.0), "b").unwrap();
        be.add_norm(&x, &y, pre.then_some(&out), &w, layer.then_some(&b), rows, 1e-5).unwrap();
        let e = be.add_norm(&x, &y, Some(&out), &w, None, 5, 1e-5).unwrap_err().to_string();
        assert!(e.contains("needs 50"), "{e}");
        let res = if pre { &out } else { &x };
        pollster::block_on(be.read_f32(res, 0, rows * c)).unwrap()
    }
    for pre in [true, false] {
        for layer in [true, false] {
            let want = run(CpuBackend, pre, layer);
            let got = run(FastCpuBackend::default(), pre, layer);
            assert_close(&format!("backend add_norm pre={pre} layer={layer}"), &got, &want, NORM_ATOL, NORM_RTOL);
        }
    }
}

// The fast exp / erf are polynomial: ~2e-7 relative (exp), 1.5e-7 absolute (erf) by construction
// (plus f32 rounding: erf within 5e-7 in the test below);
// GELU (erf and tanh forms) / SiLU / SwiGLU of |x| <= 12 within 1e-6 absolute + 1e-5 relative of the f64 reference.
const ACT_ATOL: f32 = 1e-6;
const ACT_RTOL: f32 = 1e-5;

#[test]
fn elementwise_ops_match_reference() {
    let mut r = Lcg(5);
    both_builds(|isa| {
        for n in [1, 7, 8, 9, 100, 1031] {
            let a = r.vec(n, 12.0);
            let b = r.vec(n, 3.0);
            for op in [EwOp::Relu, EwOp::Gelu, EwOp::GeluTanh, EwOp::Silu, EwOp::SwiGlu, EwOp::Add, EwOp::Mul] {
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
    let _ = fastcpu::FastCpuBackend::default();
}

/// Both CPU backends keep ids as u32 (`CpuTensor`'s u32 variant), and the guards they share name the
/// op: a u32 tensor where an op wants f32 values, an output aliasing an input, too few rows.
#[test]
fn cpu_tensors_are_typed_and_both_backends_share_their_guards() {
    use tinyformer::fastcpu::FastCpuBackend;
    use tinyformer::model::{Backend, CpuBackend};
    use tinyformer::ops::SampleParams;

    fn check<B: Backend>(mut be: B) {
        let kind = be.kind();
        let ids = be.zeros_u32(&[3], "ids").unwrap();
        be.write_u32(&ids, 0, &[7, 0, u32::MAX]).unwrap();
        assert_eq!(pollster::block_on(be.read_u32(&ids, 0, 3)).unwrap(), vec![7, 0, u32::MAX], "{kind}");
        // raw 4-byte values of either type, as the GPU's batched read gives them
        let x = be.tensor(&[2], &[1.5, -2.0], "x").unwrap();
        let raw = pollster::block_on(be.read_batch(&[(&ids, 0, 1), (&x, 1, 1)])).unwrap();
        assert_eq!(raw, vec![vec![7], vec![(-2f32).to_bits()]], "{kind}");
        // an f32 op given the u32 ids, and f32 values written to them
        let e = pollster::block_on(be.read_f32(&ids, 0, 1)).unwrap_err().to_string();
        assert_eq!(e, "read: expects a tensor of f32 values", "{kind}");
        let e = be.write_f32(&ids, 0, &[1.0]).unwrap_err().to_string();
        assert_eq!(e, "write: expects a tensor of f32 values", "{kind}");
        // embedding reads its ids as u32: rows 1 and 0 of a (2, 2) table, times 2
        let table = be.tensor(&[2, 2], &[1.0, 2.0, 3.0, 4.0], "table").unwrap();
        let out = be.zeros(&[2, 2], "out").unwrap();
        be.write_u32(&ids, 0, &[1, 0]).unwrap();
        be.embedding(&out, &table, &ids, 2, 2.0).unwrap();
        assert_eq!(pollster::block_on(be.read_f32(&out, 0, 4)).unwrap(), vec![6.0, 8.0, 2.0, 4.0], "{kind}");
        let e = be.embedding(&out, &table, &table, 2, 1.0).unwrap_err().to_string();
        assert_eq!(e, "embedding: expects a tensor of u32 values", "{kind}");
        // the sampler writes its record [id, NaN/Inf count] as u32
        let rec = be.zeros_u32(&[2], "record").unwrap();
        let logits = be.tensor(&[1, 3], &[0.0, 5.0, f32::NAN], "logits").unwrap();
        be.sample(&rec, &logits, 0, &SampleParams::greedy(), 0.5).unwrap();
        assert_eq!(pollster::block_on(be.read_u32(&rec, 1, 1)).unwrap(), vec![1], "{kind}: one NaN");
        // aliasing and rows
        let e = be.inplace(&x, Some(&x), 2, EwOp::Add).unwrap_err().to_string();
        assert_eq!(e, "inplace: the output aliases an input", "{kind}");
        let e = be.inplace(&x, None, 3, EwOp::Relu).unwrap_err().to_string();
        assert_eq!(e, "inplace: x holds 2 values, needs 3", "{kind}");
    }
    check(CpuBackend);
    check(FastCpuBackend::default());
}
