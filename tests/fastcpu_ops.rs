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

/// 16-bit weights kept 16-bit (matmul::Packed16) give the bits of their widened f32 copies: the widening of
/// every f16 / bf16 pattern equals the `half` crate's, and the GEMV / GEMM over 16-bit panels equal the f32
/// panels' exactly (no tolerance: src/fastcpu/check.rs `half_sweep`), in both builds.
#[test]
fn sixteen_bit_panels_match_their_widened_copies_bit_for_bit() {
    both_builds(|isa| {
        let r = check::half_sweep();
        assert!(r.failures.is_empty(), "{isa}: {:?}", &r.failures[..r.failures.len().min(5)]);
        assert_eq!(r.cases, 2 + 2 * 5 * 6 * 5 * 2, "{isa}");
    });
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

/// The dW sweep the page's builds run (src/fastcpu/check.rs, tolerances there), natively in both builds.
#[test]
fn the_page_dw_sweep_passes_natively() {
    both_builds(|isa| {
        let r = check::dw_sweep();
        assert!(r.failures.is_empty(), "{isa}: {:?}", &r.failures[..r.failures.len().min(5)]);
        assert_eq!(r.cases, 5 * 7 * 8, "{isa}: every shape ran");
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

// ---------------------------------------------------------------------------------------------
// The training kernels (src/fastcpu/train.rs, through the backend's `Train` ops in
// src/fastcpu/backward.rs) against the reference backward (crate::cpu::backward, f64), in both
// builds; the ops split over threads give the same bits on 1, 2 and 3 threads.

mod train_ops {
    use super::{assert_close, both_builds, Lcg};
    use tinyformer::cpu::backward as bw;
    use tinyformer::fastcpu::matmul::Threads;
    use tinyformer::fastcpu::{train as ft, FastCpuBackend, FastTensor};
    use tinyformer::model::backend::Backend;
    use tinyformer::ops::EwOp;
    use tinyformer::train::ops::{AdamStep, BatchAttn, Train};

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn read(be: &mut FastCpuBackend, t: &FastTensor) -> Vec<f32> {
        let n = t.host().unwrap().len();
        pollster::block_on(be.read_f32(t, 0, n)).unwrap()
    }

    fn pools() -> Vec<FastCpuBackend> {
        [1, 2, 3].iter().map(|&n| FastCpuBackend { threads: Threads::new(n).unwrap() }).collect()
    }

    // f32 fused multiply-adds over M <= 200 products of values in [-1, 1) (plus dW's old value) vs f64:
    // within 1e-4 + 1e-4 * |reference|, as the forward GEMM.
    const DW_ATOL: f32 = 1e-4;
    const DW_RTOL: f32 = 1e-4;

    /// dW = dY^T X in place, on shapes around the 2-vector column tiles (16 natively) and the row
    /// tiles, whole and split into row blocks at every offset: the same bits either way.
    #[test]
    fn matmul_dw_matches_reference_and_any_row_split() {
        let mut r = Lcg(21);
        both_builds(|isa| {
            for m in [1, 2, 5, 13, 64, 129, 200] {
                for n in [1, 5, 7, 16, 17, 33] {
                    for k in [1, 3, 8, 15, 16, 17, 31, 64] {
                        let (dy, x, dw0) = (r.vec(m * n, 1.0), r.vec(m * k, 1.0), r.vec(n * k, 1.0));
                        let mut want = dw0.clone();
                        bw::matmul_backward(None, &mut want, None, &dy, &x, &[], m, n, k);
                        let mut got = dw0.clone();
                        ft::matmul_dw(&mut got, &dy, &x, m, n, k, 0);
                        assert_close(&format!("matmul_dw {isa} M={m} N={n} K={k}"), &got, &want, DW_ATOL, DW_RTOL);
                        for split in [1, 5, 7] {
                            let mut parts = dw0.clone();
                            for (t, part) in parts.chunks_mut(split * k).enumerate() {
                                ft::matmul_dw(part, &dy, &x, m, n, k, t * split);
                            }
                            assert_eq!(bits(&parts), bits(&got), "matmul_dw {isa} M={m} N={n} K={k} in blocks of {split} rows");
                        }
                    }
                }
            }
        });
    }

    /// The backend's matmul backward (dX written and added, dW and db added) on 1, 2 and 3 threads:
    /// the same bits, within the GEMM's tolerance of the reference. Shapes above the threads'
    /// threshold (PAR_MIN_FLOP) and below it.
    #[test]
    fn matmul_backward_matches_reference_on_any_thread_count() {
        let mut r = Lcg(22);
        for (m, n, k) in [(3, 5, 7), (64, 33, 17), (768, 65, 128), (300, 130, 70)] {
            let (dy, x, w) = (r.vec(m * n, 1.0), r.vec(m * k, 1.0), r.vec(n * k, 1.0));
            let (dx0, dw0, db0) = (r.vec(m * k, 1.0), r.vec(n * k, 1.0), r.vec(n, 1.0));
            for acc in [false, true] {
                let (mut wdx, mut wdw, mut wdb) = (dx0.clone(), dw0.clone(), db0.clone());
                bw::matmul_backward(Some((&mut wdx, acc)), &mut wdw, Some(&mut wdb), &dy, &x, &w, m, n, k);
                let mut first: Option<Vec<Vec<u32>>> = None;
                for mut be in pools() {
                    let what = format!("matmul_backward M={m} N={n} K={k} acc={acc} threads={}", be.threads.count());
                    let t = |d: &[f32], s: &[usize]| be.tensor(s, d, "t").unwrap();
                    let (tdy, tx, tw) = (t(&dy, &[m, n]), t(&x, &[m, k]), t(&w, &[n, k]));
                    let (tdx, tdw, tdb) = (t(&dx0, &[m, k]), t(&dw0, &[n, k]), t(&db0, &[n]));
                    be.matmul_backward(Some((&tdx, acc)), &tdw, Some(&tdb), &tdy, &tx, &tw, m).unwrap();
                    let got = [read(&mut be, &tdx), read(&mut be, &tdw), read(&mut be, &tdb)];
                    assert_close(&format!("{what} dx"), &got[0], &wdx, DW_ATOL, DW_RTOL);
                    assert_close(&format!("{what} dw"), &got[1], &wdw, DW_ATOL * 4.0, DW_RTOL);
                    assert_close(&format!("{what} db"), &got[2], &wdb, DW_ATOL * 4.0, DW_RTOL);
                    let b: Vec<Vec<u32>> = got.iter().map(|g| bits(g)).collect();
                    match &first {
                        None => first = Some(b),
                        Some(f) => assert_eq!(f, &b, "{what}: not the bits of one thread"),
                    }
                }
            }
        }
    }

    // Attention forward: the inference kernel's tolerances (src/fastcpu/check.rs). Backward: dS is a
    // difference of f32 products (|dout| <= 1), then summed over <= 70 keys or rows: 1e-4 + 1e-3 relative.
    const ATTN_ATOL: f32 = super::ATTN_ATOL;
    const ATTN_RTOL: f32 = super::ATTN_RTOL;
    const ATTN_BW_ATOL: f32 = 1e-4;
    const ATTN_BW_RTOL: f32 = 1e-3;

    /// The batched attention forward and backward against the reference: GQA ratios 1, 2, 6, head
    /// sizes off the lanes, one row to 70, causal or not, with a key mask that blocks keys of every
    /// sequence and every key of one (its queries get zeros); both builds; 1, 2, 3 threads give the same bits.
    #[test]
    fn batched_attention_forward_and_backward_match_reference() {
        let mut r = Lcg(23);
        let mut cases = 0;
        both_builds(|isa| {
            for (nh, nkv) in [(1, 1), (4, 4), (4, 2), (6, 1)] {
                for hs in [4, 8, 12, 17, 32] {
                    for (b, t) in [(1, 1), (3, 5), (2, 17), (2, 70)] {
                        for causal in [true, false] {
                            for masked in [false, true] {
                                let mut s = BatchAttn::new(b, t, t, (nh, nkv, hs), causal);
                                s.scale = 1.0 / (hs as f32).sqrt();
                                let (nq, nk, np, nm) = s.sizes();
                                let (q, k, v, dout) = (r.vec(nq, 2.0), r.vec(nk, 2.0), r.vec(nk, 1.0), r.vec(nq, 1.0));
                                let keys: Option<Vec<f32>> = masked.then(|| {
                                    let mut m: Vec<f32> = (0..nm).map(|i| if (i * 7 + 3) % 5 == 0 { 0.0 } else { 1.0 }).collect();
                                    m[..t].fill(0.0);
                                    m
                                });
                                let (mut wo, mut wp) = (vec![0f32; nq], vec![0f32; np]);
                                bw::attention_batch(&mut wo, &mut wp, &q, &k, &v, keys.as_deref(), &s).unwrap();
                                let (mut wdq, mut wdk, mut wdv) = (vec![0f32; nq], vec![0f32; nk], vec![0f32; nk]);
                                bw::attention_backward(&mut wdq, &mut wdk, &mut wdv, &dout, &wp, &q, &k, &v, &s).unwrap();
                                let mut first: Option<Vec<Vec<u32>>> = None;
                                for mut be in pools() {
                                    let what = format!(
                                        "attention {isa} B={b} T={t} NH={nh} NKV={nkv} HS={hs} causal={causal} masked={masked} threads={}",
                                        be.threads.count()
                                    );
                                    let tn = |d: &[f32]| be.tensor(&[d.len()], d, "t").unwrap();
                                    let (tq, tk, tv, tdo) = (tn(&q), tn(&k), tn(&v), tn(&dout));
                                    let tm = keys.as_ref().map(|m| tn(m));
                                    let (to, tp) = (tn(&vec![f32::NAN; nq]), tn(&vec![f32::NAN; np]));
                                    let (tdq, tdk, tdv) = (tn(&vec![f32::NAN; nq]), tn(&vec![f32::NAN; nk]), tn(&vec![f32::NAN; nk]));
                                    be.attention_batch(&to, &tp, &tq, &tk, &tv, tm.as_ref(), &s).unwrap();
                                    be.attention_backward(&tdq, &tdk, &tdv, &tdo, &tp, &tq, &tk, &tv, &s).unwrap();
                                    let got = [&to, &tp, &tdq, &tdk, &tdv].map(|x| read(&mut be, x));
                                    assert_close(&format!("{what} out"), &got[0], &wo, ATTN_ATOL, ATTN_RTOL);
                                    assert_close(&format!("{what} probs"), &got[1], &wp, ATTN_ATOL, ATTN_RTOL);
                                    if let Some(i) = got[1].iter().zip(&wp).position(|(g, w)| (*w == 0.0) != (*g == 0.0)) {
                                        panic!("{what}: probs[{i}] blocked in one and not the other ({} vs {})", got[1][i], wp[i]);
                                    }
                                    assert_close(&format!("{what} dq"), &got[2], &wdq, ATTN_BW_ATOL, ATTN_BW_RTOL);
                                    assert_close(&format!("{what} dk"), &got[3], &wdk, ATTN_BW_ATOL, ATTN_BW_RTOL);
                                    assert_close(&format!("{what} dv"), &got[4], &wdv, ATTN_BW_ATOL, ATTN_BW_RTOL);
                                    let bs: Vec<Vec<u32>> = got.iter().map(|g| bits(g)).collect();
                                    match &first {
                                        None => first = Some(bs),
                                        Some(f) => assert_eq!(f, &bs, "{what}: not the bits of one thread"),
                                    }
                                }
                                cases += 1;
                            }
                        }
                    }
                }
            }
        });
        assert_eq!(cases, 2 * 4 * 5 * 4 * 4);
    }

    // Norm backward: f32 statistics and sums over C <= 200 (dx) and over <= 37 rows (dg, db, dw) vs f64.
    const NORM_BW_ATOL: f32 = 1e-4;
    const NORM_BW_RTOL: f32 = 1e-4;

    #[test]
    fn norm_backwards_match_reference() {
        let mut r = Lcg(24);
        both_builds(|isa| {
            for rows in [1, 3, 37] {
                for c in [1, 7, 8, 16, 33, 128, 200] {
                    let (dy, g, gb) = (r.vec(rows * c, 1.0), r.vec(c, 1.0), r.vec(c, 1.0));
                    let x: Vec<f32> = r.vec(rows * c, 2.0).iter().map(|v| v + 0.5).collect();
                    let (dx0, dg0, db0) = (r.vec(rows * c, 1.0), r.vec(c, 1.0), r.vec(c, 1.0));
                    let (mut wdx, mut wdg, mut wdb) = (dx0.clone(), dg0.clone(), db0.clone());
                    bw::layernorm_backward(&mut wdx, &mut wdg, &mut wdb, &dy, &x, &g, c, 1e-5);
                    let (mut gdx, mut gdg, mut gdb) = (dx0.clone(), dg0.clone(), db0.clone());
                    ft::layernorm_backward(&mut gdx, &mut gdg, &mut gdb, &dy, &x, &g, c, 1e-5);
                    let what = format!("layernorm_backward {isa} rows={rows} C={c}");
                    assert_close(&format!("{what} dx"), &gdx, &wdx, NORM_BW_ATOL, NORM_BW_RTOL);
                    assert_close(&format!("{what} dg"), &gdg, &wdg, NORM_BW_ATOL, NORM_BW_RTOL);
                    assert_close(&format!("{what} db"), &gdb, &wdb, NORM_BW_ATOL, NORM_BW_RTOL);
                    let (mut wdx, mut wdw) = (dx0.clone(), dg0.clone());
                    bw::rmsnorm_backward(&mut wdx, &mut wdw, &dy, &x, &gb, c, 1e-5);
                    let (mut gdx, mut gdw) = (dx0.clone(), dg0.clone());
                    ft::rmsnorm_backward(&mut gdx, &mut gdw, &dy, &x, &gb, c, 1e-5);
                    let what = format!("rmsnorm_backward {isa} rows={rows} C={c}");
                    assert_close(&format!("{what} dx"), &gdx, &wdx, NORM_BW_ATOL, NORM_BW_RTOL);
                    assert_close(&format!("{what} dw"), &gdw, &wdw, NORM_BW_ATOL, NORM_BW_RTOL);
                }
            }
        });
    }

    // Activation derivatives in f32 with the fast exp / erf (rel. error ~1e-7, erf abs. 1.5e-7) on
    // |h| <= 6 (saturated ends included): 1e-6 + 1e-5 relative.
    const ACT_BW_ATOL: f32 = 1e-6;
    const ACT_BW_RTOL: f32 = 1e-5;

    #[test]
    fn activation_backwards_match_reference() {
        let mut r = Lcg(25);
        both_builds(|isa| {
            for n in [1, 7, 8, 9, 100, 1031] {
                let (dy, h, up) = (r.vec(n, 1.0), r.vec(n, 6.0), r.vec(n, 1.0));
                for op in [EwOp::Relu, EwOp::Gelu, EwOp::GeluTanh, EwOp::Silu] {
                    let mut want = vec![0f32; n];
                    bw::act_backward(&mut want, &dy, &h, op).unwrap();
                    let mut got = vec![f32::NAN; n];
                    ft::act_backward(&mut got, &dy, &h, op);
                    assert_close(&format!("act_backward {isa} {op:?} N={n}"), &got, &want, ACT_BW_ATOL, ACT_BW_RTOL);
                }
                let (mut wg, mut wu) = (vec![0f32; n], vec![0f32; n]);
                bw::swiglu_backward(&mut wg, &mut wu, &dy, &h, &up).unwrap();
                let (mut gg, mut gu) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                ft::swiglu_backward(&mut gg, &mut gu, &dy, &h, &up);
                assert_close(&format!("swiglu_backward {isa} N={n} dgate"), &gg, &wg, ACT_BW_ATOL, ACT_BW_RTOL);
                assert_close(&format!("swiglu_backward {isa} N={n} dup"), &gu, &wu, ACT_BW_ATOL, ACT_BW_RTOL);
            }
        });
        let mut be = FastCpuBackend::default();
        let t = be.tensor(&[4], &[0.0; 4], "t").unwrap();
        let e = be.act_backward(&t, &t, &t, 4, EwOp::Add).unwrap_err().to_string();
        assert!(e.contains("act_backward"), "{e}");
        let e = be.activation(&t, &t, 4, EwOp::Add).unwrap_err().to_string();
        assert!(e.contains("activation"), "{e}");
    }

    /// The training forward's activation out of place (`Train::activation`): within the
    /// elementwise ops' tolerances of the f64 reference, and the bits of the default (copy, then
    /// the fast `inplace`), in both builds.
    #[test]
    fn activation_out_of_place_matches_reference_and_inplace() {
        let mut r = Lcg(26);
        both_builds(|isa| {
            for n in [1, 7, 8, 9, 100, 1031] {
                let h = r.vec(n, 6.0);
                for op in [EwOp::Relu, EwOp::Gelu, EwOp::GeluTanh, EwOp::Silu] {
                    let mut want = vec![0f32; n];
                    tinyformer::cpu::elementwise(&mut want, &h, None, op);
                    let mut be = FastCpuBackend::default();
                    let (x, out, copy) =
                        (be.tensor(&[n], &h, "x").unwrap(), be.zeros(&[n], "out").unwrap(), be.tensor(&[n], &h, "c").unwrap());
                    be.activation(&out, &x, n, op).unwrap();
                    be.inplace(&copy, None, n, op).unwrap();
                    let (got, inplace) = (read(&mut be, &out), read(&mut be, &copy));
                    assert_close(&format!("activation {isa} {op:?} N={n}"), &got, &want, super::ACT_ATOL, super::ACT_RTOL);
                    assert_eq!(bits(&got), bits(&inplace), "activation {isa} {op:?} N={n}: not the bits of inplace");
                    assert_eq!(read(&mut be, &x), h, "activation {isa} {op:?} N={n}: the input changed");
                }
            }
        });
    }

    // Softmax + cross-entropy in f32 over V <= 97 logits of |x| <= 8: loss within 1e-5 + 1e-5
    // relative, gradients 1e-7 + 1e-5 relative (|scale| < 1).
    #[test]
    fn cross_entropy_matches_reference() {
        let mut r = Lcg(26);
        both_builds(|isa| {
            for rows in [1, 5, 33] {
                for v in [1, 2, 7, 8, 65, 97] {
                    let x = r.vec(rows * v, 8.0);
                    let targets: Vec<u32> = (0..rows).map(|i| ((i * 13 + 5) % (v + 1)) as u32).collect();
                    // the target id v (out of range) stands for padding: ignored
                    let ignore = Some(v as u32);
                    let (mut wl, mut wx) = (vec![0f32; rows], x.clone());
                    bw::cross_entropy(&mut wl, &mut wx, &targets, v, 0.3, ignore).unwrap();
                    let (mut gl, mut gx) = (vec![f32::NAN; rows], x.clone());
                    ft::cross_entropy(&mut gl, &mut gx, &targets, v, 0.3, ignore).unwrap();
                    let what = format!("cross_entropy {isa} rows={rows} V={v}");
                    assert_close(&format!("{what} losses"), &gl, &wl, 1e-5, 1e-5);
                    assert_close(&format!("{what} grads"), &gx, &wx, 1e-7, 1e-5);
                    let e = ft::cross_entropy(&mut gl, &mut gx, &targets, v, 0.3, None);
                    assert!(!targets.contains(&(v as u32)) || e.is_err(), "{what}: a target outside the vocabulary must be an error");
                }
            }
        });
    }

    // AdamW in f32 against f64 over 3 steps: parameters within 1e-6 + 1e-5 relative; the squared
    // norm's f64 sum within 1e-12 relative; embedding rows within 1e-6.
    #[test]
    fn optimizer_and_embedding_match_reference() {
        let mut r = Lcg(27);
        both_builds(|isa| {
            for n in [1, 7, 8, 9, 1000] {
                let (g, p0) = (r.vec(n, 1.0), r.vec(n, 1.0));
                // the two parts, then the halt slot (0: go on)
                let norms = [3.0, 1.5, 0.0];
                let (mut wp, mut wm, mut wv) = (p0.clone(), vec![0f32; n], vec![0f32; n]);
                let (mut gp, mut gm, mut gv) = (p0.clone(), vec![0f32; n], vec![0f32; n]);
                for step in 1..=3 {
                    let a = AdamStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step, clip: Some(1.0), parts: 2 };
                    bw::adamw(&mut wp, &g, &mut wm, &mut wv, &norms, &a);
                    ft::adamw(&mut gp, &g, &mut gm, &mut gv, &norms, &a);
                }
                let what = format!("adamw {isa} N={n}");
                assert_close(&format!("{what} p"), &gp, &wp, 1e-6, 1e-5);
                assert_close(&format!("{what} m"), &gm, &wm, 1e-6, 1e-5);
                assert_close(&format!("{what} v"), &gv, &wv, 1e-6, 1e-5);
                let want: f64 = g.iter().map(|&x| x as f64 * x as f64).sum();
                assert!((ft::sum_squares(&g) - want).abs() <= 1e-12 * want, "sum_squares N={n}");
                // a set halt slot: neither changes anything
                let a = AdamStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 4, clip: Some(1.0), parts: 2 };
                let halted = [3.0, 1.5, 3.0];
                let before = (gp.clone(), gm.clone(), gv.clone(), wp.clone(), wm.clone(), wv.clone());
                bw::adamw(&mut wp, &g, &mut wm, &mut wv, &halted, &a);
                ft::adamw(&mut gp, &g, &mut gm, &mut gv, &halted, &a);
                assert!(before == (gp, gm, gv, wp, wm, wv), "{what}: a set halt slot changed something");
            }
            let (c, rows, vocab) = (33, 20, 7);
            let dout = r.vec(rows * c, 1.0);
            let ids: Vec<u32> = (0..rows).map(|i| (i * 3 % vocab) as u32).collect();
            let t0 = r.vec(vocab * c, 1.0);
            let (mut want, mut got) = (t0.clone(), t0.clone());
            bw::embedding_backward(&mut want, &dout, &ids, c, 0.5).unwrap();
            ft::embedding_backward(&mut got, &dout, &ids, c, 0.5).unwrap();
            assert_close(&format!("embedding_backward {isa}"), &got, &want, 1e-6, 1e-6);
            assert!(ft::embedding_backward(&mut got, &dout, &[9; 20], c, 0.5).is_err());
        });
    }
}
