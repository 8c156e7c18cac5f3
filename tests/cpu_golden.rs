//! The CPU reference against values derived by hand (the derivation is in each comment).

use tinyformer::cpu;
use tinyformer::mask;
use tinyformer::ops::{AttnShape, SampleParams};

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "index {i}: got {x}, want {y} (all: {a:?})");
    }
}

#[test]
fn matmul_2x3_by_3x2() {
    // x = [[1,2,3],[4,5,6]], W = [[1,0,1],[0,1,0]] (out_features=2, in_features=3), b = [0.5, -1]
    // x @ W^T = [[1+3, 2], [4+6, 5]] = [[4, 2], [10, 5]]; + b = [[4.5, 1], [10.5, 4]]
    let x = [1., 2., 3., 4., 5., 6.];
    let w = [1., 0., 1., 0., 1., 0.];
    let mut out = [0f32; 4];
    cpu::matmul(&mut out, &x, &w, Some(&[0.5, -1.0]), 2, 3, 2).unwrap();
    assert_eq!(out, [4.5, 1.0, 10.5, 4.0]);
    cpu::matmul(&mut out, &x, &w, None, 2, 3, 2).unwrap();
    assert_eq!(out, [4.0, 2.0, 10.0, 5.0]);
    // wrong shapes name the op
    let e = cpu::matmul(&mut out, &x, &w, None, 3, 3, 2).unwrap_err().to_string();
    assert!(e.starts_with("matmul:"), "{e}");
}

#[test]
fn softmax_row_and_masked_row() {
    // One head, one query q = [1, 0], keys k0 = [0,0], k1 = [ln2 * sqrt2, 0], k2 = [ln4 * sqrt2, 0].
    // scores = q.k / sqrt(2) = [0, ln 2, ln 4]; softmax = [1, 2, 4] / 7.
    let r2 = 2f32.sqrt();
    let q = [1.0, 0.0];
    let k = [0.0, 0.0, 2f32.ln() * r2, 0.0, 4f32.ln() * r2, 0.0];
    let v = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]; // out = p0 * [1,0] + p1 * [0,1]
    let s = AttnShape::packed(1, 3, 1, 1, 2);
    let (mut out, mut p) = ([0f32; 2], [0f32; 3]);
    cpu::attention(&mut out, &mut p, &q, &k, &v, None, &s).unwrap();
    close(&p, &[1.0 / 7.0, 2.0 / 7.0, 4.0 / 7.0], 1e-6);
    close(&out, &[1.0 / 7.0, 2.0 / 7.0], 1e-6);
    // Masking key 2 (mask 1 = may attend): softmax over [0, ln 2] = [1/3, 2/3], key 2 exactly 0.
    cpu::attention(&mut out, &mut p, &q, &k, &v, Some(&[1.0, 1.0, 0.0]), &s).unwrap();
    close(&p, &[1.0 / 3.0, 2.0 / 3.0, 0.0], 1e-6);
    assert_eq!(p[2], 0.0);
    // Fully masked row: zeros, never NaN or uniform.
    cpu::attention(&mut out, &mut p, &q, &k, &v, Some(&[0.0, 0.0, 0.0]), &s).unwrap();
    assert_eq!(p, [0.0; 3]);
    assert_eq!(out, [0.0; 2]);
}

#[test]
fn layernorm_by_hand() {
    // x = [1, 2, 3, 4]: mean 2.5, biased var = (2.25+0.25+0.25+2.25)/4 = 1.25.
    // (x - mean)/sqrt(1.25 + 1e-5) = [-1.5, -0.5, 0.5, 1.5] / 1.1180384
    // gamma = [1, 2, 1, 1], beta = [0, 0, 1, 0]
    let inv = 1.0 / (1.25f64 + 1e-5).sqrt();
    let want: Vec<f32> = [(-1.5 * inv), (-0.5 * inv * 2.0), (0.5 * inv + 1.0), (1.5 * inv)].iter().map(|&v| v as f32).collect();
    let mut out = [0f32; 4];
    cpu::layernorm(&mut out, &[1., 2., 3., 4.], &[1., 2., 1., 1.], &[0., 0., 1., 0.], 4, 1e-5);
    close(&out, &want, 1e-6);
    close(&out, &[-1.341635, -0.894423, 1.447212, 1.341635], 1e-5);
    // RMSNorm: mean(x^2) = (1+4+9+16)/4 = 7.5, x / sqrt(7.5 + 1e-6)
    let mut r = [0f32; 4];
    cpu::rmsnorm(&mut r, &[1., 2., 3., 4.], &[1.; 4], 4, 1e-6);
    close(&r, &[0.365148, 0.730297, 1.095445, 1.460593], 1e-5);
}

#[test]
fn rope_rotation_at_position_3() {
    // HS = 4, theta = 10000: freq_0 = 1, freq_1 = 10000^(-2/4) = 0.01.
    // At position 3 pair 0 turns by 3 rad, pair 1 by 0.03 rad.
    // x = [1, 0, 0, 1]: pair 0 (1,0) -> (cos 3, sin 3); pair 1 (0,1) -> (-sin 0.03, cos 0.03).
    let table = cpu::rope_table(8, 4, 10000.0);
    let mut x = [1.0, 0.0, 0.0, 1.0];
    cpu::rope(&mut x, &table, 1, 1, 4, 3, 4, 0);
    close(&x, &[3f32.cos(), 3f32.sin(), -(0.03f32.sin()), 0.03f32.cos()], 1e-6);
    close(&x, &[-0.9899925, 0.14112, -0.0299955, 0.99955], 1e-6);
}

#[test]
fn activations_by_hand() {
    // GELU(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.8413447; GELU(-1) = -0.1586553
    assert!((cpu::gelu_scalar(1.0) - 0.841_344_7).abs() < 1e-6);
    assert!((cpu::gelu_scalar(-1.0) + 0.158_655_3).abs() < 1e-6);
    // SiLU(1) = 1 / (1 + e^-1) = 0.7310586; SwiGLU(gate 1, up 2) = 1.4621172
    assert!((cpu::silu_scalar(1.0) - 0.731_058_6).abs() < 1e-6);
    let mut o = [0f32];
    cpu::swiglu(&mut o, &[1.0], &[2.0]);
    assert!((o[0] - 1.462_117_2).abs() < 1e-6);
    assert_eq!(cpu::relu_scalar(-3.0), 0.0);
}

#[test]
fn sinusoidal_pe_and_embedding() {
    // C = 4: div = [1, 10000^(-2/4) = 0.01]; pe[p] = [sin p, cos p, sin 0.01p, cos 0.01p]
    let pe = cpu::sinusoidal_table(4, 4);
    close(&pe[0..4], &[0.0, 1.0, 0.0, 1.0], 1e-7);
    close(&pe[8..12], &[2f32.sin(), 2f32.cos(), 0.02f32.sin(), 0.02f32.cos()], 1e-6);
    let table = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // V = 3, C = 2
    let mut out = [0f32; 4];
    cpu::embedding(&mut out, &table, &[2, 0], 2, 2.0);
    assert_eq!(out, [10.0, 12.0, 2.0, 4.0]);
}

#[test]
fn sampling_rules() {
    // argmax ties go to the lowest index
    assert_eq!(cpu::argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    let p = SampleParams { temperature: 1.0, top_k: 1, top_p: 1.0 };
    // top-k 1 leaves only the maximum, whatever u
    for u in [0.0, 0.5, 0.999] {
        assert_eq!(cpu::sample(&[0.1, 2.0, -1.0, 0.5], &p, u), 1);
    }
    // logits ln[1, 2, 1]: probabilities [0.25, 0.5, 0.25]; u = 0.2 -> 0, 0.3 -> 1, 0.8 -> 2
    let l = [0.0, 2f32.ln(), 0.0];
    let full = SampleParams { temperature: 1.0, top_k: 0, top_p: 1.0 };
    assert_eq!([0.2, 0.3, 0.8].map(|u| cpu::sample(&l, &full, u)), [0, 1, 2]);
    // top-p 0.5 keeps only the 0.5 token
    let nucleus = SampleParams { temperature: 1.0, top_k: 0, top_p: 0.5 };
    assert_eq!([0.0, 0.5, 0.99].map(|u| cpu::sample(&l, &nucleus, u)), [1, 1, 1]);
}

#[test]
fn moe_router_by_hand() {
    // logits [0, ln 3, ln 2, ln 3]: probs [1, 3, 2, 3]/9; top-2 = experts 1 and 3 (tie -> lower first),
    // renormalised weights [0.5, 0.5].
    let l = [0.0, 3f32.ln(), 2f32.ln(), 3f32.ln()];
    let (mut p, mut e, mut w) = ([0f32; 4], [0u32; 2], [0f32; 2]);
    cpu::moe_router(&mut p, &mut e, &mut w, &l, 1, 4, 2);
    close(&p, &[1.0 / 9.0, 3.0 / 9.0, 2.0 / 9.0, 3.0 / 9.0], 1e-6);
    assert_eq!(e, [1, 3]);
    close(&w, &[0.5, 0.5], 1e-6);
}

#[test]
fn masks_match_hand_written_matrices() {
    // 5 tokens, the last 2 PAD: combined decoder mask (look-ahead AND key padding)
    let m = mask::mask_set(5, 2, 0).unwrap();
    let want = [[1., 0., 0., 0., 0.], [1., 1., 0., 0., 0.], [1., 1., 1., 0., 0.], [1., 1., 1., 0., 0.], [1., 1., 1., 0., 0.]];
    assert_eq!(m.combined.rows_vec(), want.map(|r| r.to_vec()).to_vec());
    assert_eq!(m.padding.rows_vec()[0], vec![1., 1., 1., 0., 0.]);
    assert_eq!(m.look_ahead.rows_vec()[1], vec![1., 1., 0., 0., 0.]);
    // the seed helpers' convention is the complement
    assert_eq!(m.combined.to_seed_convention().rows_vec()[0], vec![0., 1., 1., 1., 1.]);
    // The seed's KV-cache examples: "The cat sat" cached + "on" -> one row over 4 keys, all visible.
    assert_eq!(mask::kv_cache(3, 1).rows_vec(), vec![vec![1., 1., 1., 1.]]);
    // "The cat" cached + "sat on" -> 2 rows over 4 keys: "sat" sees 3, "on" sees 4.
    assert_eq!(mask::kv_cache(2, 2).rows_vec(), vec![vec![1., 1., 1., 0.], vec![1., 1., 1., 1.]]);
    // bad input is an error, not a panic
    assert!(mask::mask_set(3, 4, 0).is_err());
    assert!(mask::mask_set(0, 0, 0).is_err());
}
