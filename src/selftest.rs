//! The kernel self-test: every WGSL kernel against its CPU twin over shape sweeps (1, primes,
//! non-multiples of the tile, one-row inputs, fully masked rows). The same checks run natively
//! (tests/gpu_kernels.rs, on Mesa llvmpipe in CI) and in the browser (the page's self-test, on
//! SwiftShader in CI), so both GPUs are held to the same tolerances, which are written next to
//! each check as atol + rtol * |expected|.

use std::sync::Arc;

use serde::Serialize;

use crate::cpu;
use crate::error::Result;
use crate::gpu::{
    self,
    matmul::{Act, MatmulKind},
    norm::NormBackward,
    Gpu, Recorder,
};
use crate::ops::{AttnShape, EwOp, RopeShape, SampleParams};
use crate::rng::Rng;
use crate::train::ops::{AdamStep, BatchAttn};

#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub max_abs_diff: f64,
    pub tolerance: String,
    pub detail: String,
    pub ms: f64,
}

/// Milliseconds from an arbitrary origin, on both targets (std's Instant panics on wasm).
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::time::{SystemTime, UNIX_EPOCH};
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
    }
}

/// Compares got with want: |got - want| <= atol + rtol * |want|, NaN never passes.
/// Returns (ok, max |diff|, a short description of the first failure).
pub fn compare(got: &[f32], want: &[f32], atol: f64, rtol: f64) -> (bool, f64, String) {
    if got.len() != want.len() {
        return (false, f64::INFINITY, format!("length {} != {}", got.len(), want.len()));
    }
    let mut max = 0f64;
    let mut first = String::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w as f64).abs();
        let bad = !(d <= atol + rtol * (w as f64).abs());
        if d > max || d.is_nan() {
            max = if d.is_nan() { f64::INFINITY } else { d };
        }
        if bad && first.is_empty() {
            first = format!("first mismatch at {i}: got {g}, want {w}");
        }
    }
    (first.is_empty(), max, first)
}

struct Acc {
    ok: bool,
    max: f64,
    detail: String,
    cases: usize,
}
impl Acc {
    fn new() -> Self {
        Acc { ok: true, max: 0.0, detail: String::new(), cases: 0 }
    }
    fn add(&mut self, case: &str, r: (bool, f64, String)) {
        self.cases += 1;
        self.max = self.max.max(r.1);
        if !r.0 && self.ok {
            self.ok = false;
            self.detail = format!("{case}: {}", r.2);
        }
    }
    fn fail(&mut self, case: &str, msg: String) {
        self.cases += 1;
        if self.ok {
            self.ok = false;
            self.detail = format!("{case}: {msg}");
        }
    }
    fn finish(self, name: &str, tol: &str, t0: f64) -> CheckResult {
        let detail = if self.ok { format!("{} cases", self.cases) } else { self.detail };
        CheckResult { name: name.into(), ok: self.ok, max_abs_diff: self.max, tolerance: tol.into(), detail, ms: now_ms() - t0 }
    }
}

/// The matmul kernels with their epilogues against cpu::matmul followed by the activation. Cases
/// cycle through no activation, ReLU and GELU, with and without a bias, and read x from a row
/// offset (aligned and unaligned to vec4, for the GEMV's two paths).
async fn check_matmul(g: &Arc<Gpu>, kind: MatmulKind, name: &str) -> Result<CheckResult> {
    const ATOL: f64 = 1e-4;
    const RTOL: f64 = 1e-4;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(11);
    // (M, K, N, rows of x before the ones read)
    let shapes = [
        (1, 1, 1, 0),
        (1, 7, 5, 0),
        (3, 13, 17, 1),
        (2, 64, 64, 0),
        (65, 33, 67, 0),
        (7, 129, 3, 0),
        (64, 64, 64, 2),
        (1, 257, 131, 0),
        (130, 20, 70, 0),
        (17, 1, 9, 0),
        (1, 128, 300, 3),
        (4, 96, 33, 1),
        (65, 36, 67, 1),
        (128, 64, 130, 0),
        (70, 132, 64, 2),
    ];
    for (i, &(m, k, n, skip)) in shapes.iter().enumerate() {
        let bias = i % 2 == 0;
        let act = [Act::None, Act::Relu, Act::Gelu, Act::GeluTanh][i % 4];
        let x = rng.vec_normal((skip + m) * k, 1.0);
        let w = rng.vec_normal(n * k, 1.0);
        let b = rng.vec_normal(n, 1.0);
        let mut want = vec![0f32; m * n];
        cpu::matmul(&mut want, &x[skip * k..], &w, bias.then_some(&b[..]), m, k, n)?;
        match act {
            Act::None => {}
            Act::Relu => cpu::act::relu(&mut want),
            Act::Gelu => cpu::act::gelu(&mut want),
            Act::GeluTanh => want.iter_mut().for_each(|v| *v = cpu::act::gelu_tanh_scalar(*v)),
        }
        let (xt, wt, bt, ot) =
            (g.upload(&[skip + m, k], &x, "x")?, g.upload(&[n, k], &w, "w")?, g.upload(&[n], &b, "b")?, g.zeros(&[m, n], "out")?);
        let mut rec = Recorder::new(g);
        gpu::matmul::matmul_act(&mut rec, &ot, 0, &xt, skip * k, m, &wt, bias.then_some(&bt), act, kind)?;
        rec.submit()?;
        acc.add(&format!("M={m} K={k} N={n} bias={bias} {act:?} x from row {skip}"), compare(&g.read_f32(&ot).await?, &want, ATOL, RTOL));
    }
    Ok(acc.finish(name, "atol 1e-4 + rtol 1e-4", t0))
}

/// The fused SwiGLU GEMV (`rows`: its one-invocation-per-output form) against two cpu::matmul
/// calls and cpu::swiglu.
async fn check_gemv_swiglu(g: &Arc<Gpu>, rows: bool) -> Result<CheckResult> {
    const ATOL: f64 = 1e-4;
    const RTOL: f64 = 1e-4;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(12);
    for &(m, k, n) in &[(1usize, 1usize, 1usize), (1, 7, 5), (3, 13, 17), (1, 64, 172), (2, 256, 100), (7, 32, 9)] {
        let x = rng.vec_normal(m * k, 1.0);
        let wg = rng.vec_normal(n * k, 0.5);
        let wu = rng.vec_normal(n * k, 0.5);
        let (mut gate, mut up, mut want) = (vec![0f32; m * n], vec![0f32; m * n], vec![0f32; m * n]);
        cpu::matmul(&mut gate, &x, &wg, None, m, k, n)?;
        cpu::matmul(&mut up, &x, &wu, None, m, k, n)?;
        cpu::act::swiglu(&mut want, &gate, &up);
        let (xt, gt, ut, ot) =
            (g.upload(&[m, k], &x, "x")?, g.upload(&[n, k], &wg, "wg")?, g.upload(&[n, k], &wu, "wu")?, g.zeros(&[m, n], "out")?);
        let mut rec = Recorder::new(g);
        if rows {
            gpu::matmul::rows_swiglu(&mut rec, &ot, &xt, m, &gt, &ut)?;
        } else {
            gpu::matmul::gemv_swiglu(&mut rec, &ot, &xt, m, &gt, &ut)?;
        }
        rec.submit()?;
        acc.add(&format!("M={m} K={k} N={n}"), compare(&g.read_f32(&ot).await?, &want, ATOL, RTOL));
    }
    let name = if rows { "rows swiglu (one invocation per output)" } else { "gemv swiglu (silu(x Wg^T) * x Wu^T)" };
    Ok(acc.finish(name, "atol 1e-4 + rtol 1e-4", t0))
}

/// One attention case: the mask is built from `mask_fn` when given.
struct AttnCase {
    label: &'static str,
    s: AttnShape,
    mask: Option<Vec<f32>>,
    /// rows expected to be fully masked (all-zero probabilities)
    fully_masked_rows: usize,
}

fn attn_cases() -> Vec<AttnCase> {
    let pad_keys =
        |tq: usize, tk: usize, pads: usize| -> Vec<f32> { (0..tq * tk).map(|x| if x % tk < tk - pads { 1.0 } else { 0.0 }).collect() };
    let mut cases = vec![
        AttnCase { label: "key padding", s: AttnShape::packed(5, 5, 2, 2, 4), mask: Some(pad_keys(5, 5, 2)), fully_masked_rows: 0 },
        AttnCase { label: "look-ahead", s: AttnShape::packed(7, 7, 4, 4, 8).with_causal(0), mask: None, fully_masked_rows: 0 },
        AttnCase {
            label: "padding+look-ahead",
            s: AttnShape::packed(6, 6, 2, 2, 8).with_causal(0),
            mask: Some(pad_keys(6, 6, 2)),
            fully_masked_rows: 0,
        },
        AttnCase { label: "cross padding", s: AttnShape::packed(4, 7, 2, 2, 8), mask: Some(pad_keys(4, 7, 3)), fully_masked_rows: 0 },
        AttnCase { label: "kv-cache offset + GQA", s: AttnShape::packed(2, 5, 4, 2, 8).with_causal(3), mask: None, fully_masked_rows: 0 },
        AttnCase { label: "MQA causal", s: AttnShape::packed(13, 13, 4, 1, 16).with_causal(0), mask: None, fully_masked_rows: 0 },
        AttnCase { label: "one row", s: AttnShape::packed(1, 1, 1, 1, 3), mask: None, fully_masked_rows: 0 },
        AttnCase { label: "prime head size, Tk > workgroup", s: AttnShape::packed(3, 67, 3, 3, 5), mask: None, fully_masked_rows: 0 },
        AttnCase { label: "long keys", s: AttnShape::packed(2, 130, 2, 1, 64).with_causal(128), mask: None, fully_masked_rows: 0 },
        AttnCase { label: "all keys padded", s: AttnShape::packed(3, 4, 2, 2, 4), mask: Some(vec![0.0; 12]), fully_masked_rows: 3 },
        // more query rows than one workgroup of the `rows` kernel (64), the last one partly used
        AttnCase {
            label: "prefill 70 rows GQA causal",
            s: AttnShape::packed(70, 70, 4, 2, 8).with_causal(0),
            mask: None,
            fully_masked_rows: 0,
        },
    ];
    // A mask with one fully blocked query row in the middle, combined with causal.
    let mut m = vec![1.0f32; 5 * 5];
    m[2 * 5..3 * 5].fill(0.0);
    cases.push(AttnCase {
        label: "one fully masked row",
        s: AttnShape::packed(5, 5, 2, 1, 4).with_causal(0),
        mask: Some(m),
        fully_masked_rows: 1,
    });
    // q, k, v read from one fused QKV buffer through offsets and strides.
    let mut fused = AttnShape::packed(4, 4, 2, 1, 4).with_causal(0);
    let w = 2 * 4 + 2 * 4; // NH*HS + 2*NKV*HS
    fused.q_stride = w;
    fused.k_offset = 8;
    fused.k_stride = w;
    fused.v_offset = 12;
    fused.v_stride = w;
    cases.push(AttnCase { label: "fused qkv strides", s: fused, mask: None, fully_masked_rows: 0 });
    // A long causal prefill as GPT-2's (head size 64, q/k/v in one fused row): rows past ~488 keys
    // are where a query row's loops pass 2^15 multiply-adds.
    let mut long = AttnShape::packed(560, 560, 2, 2, 64).with_causal(0);
    let w = 3 * 2 * 64;
    long.q_stride = w;
    long.k_offset = 2 * 64;
    long.k_stride = w;
    long.v_offset = 4 * 64;
    long.v_stride = w;
    cases.push(AttnCase { label: "long fused causal prefill, head size 64", s: long, mask: None, fully_masked_rows: 0 });
    cases
}

async fn check_attention(g: &Arc<Gpu>, kind: gpu::RowKind, name: &str) -> Result<CheckResult> {
    const ATOL: f64 = 1e-5;
    const RTOL: f64 = 1e-4;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(22);
    for c in attn_cases() {
        let s = &c.s;
        let qn = s.q_offset + (s.tq - 1) * s.q_stride + s.nh * s.hs;
        let kn = s.k_offset + (s.tk - 1) * s.k_stride + s.nkv * s.hs;
        let vn = s.v_offset + (s.tk - 1) * s.v_stride + s.nkv * s.hs;
        let fused = c.label.contains("fused");
        let q = rng.vec_normal(if fused { qn.max(kn).max(vn) } else { qn }, 1.5);
        let (k, v) = if fused { (q.clone(), q.clone()) } else { (rng.vec_normal(kn, 1.5), rng.vec_normal(vn, 1.0)) };
        let mut want_o = vec![0f32; s.tq * s.nh * s.hs];
        let mut want_p = vec![0f32; s.nh * s.tq * s.tk];
        cpu::attention(&mut want_o, &mut want_p, &q, &k, &v, c.mask.as_deref(), s)?;
        let qt = g.upload(&[q.len()], &q, "q")?;
        let kt = g.upload(&[k.len()], &k, "k")?;
        let vt = g.upload(&[v.len()], &v, "v")?;
        let mt = match &c.mask {
            Some(m) => Some(g.upload(&[s.tq, s.tk], m, "mask")?),
            None => None,
        };
        let ot = g.zeros(&[s.tq, s.nh * s.hs], "out")?;
        let pt = g.zeros(&[s.nh, s.tq, s.tk], "probs")?;
        // Fill probs with garbage first: the kernel must overwrite every cell, blocked ones with 0.
        g.write_f32(&pt, 0, &vec![7.0; s.nh * s.tq * s.tk])?;
        let mut rec = Recorder::new(g);
        if fused {
            gpu::attention::attention_kind(&mut rec, &ot, &pt, &qt, &qt, &qt, mt.as_ref(), s, kind)?;
        } else {
            gpu::attention::attention_kind(&mut rec, &ot, &pt, &qt, &kt, &vt, mt.as_ref(), s, kind)?;
        }
        rec.submit()?;
        let got_p = g.read_f32(&pt).await?;
        let got_o = g.read_f32(&ot).await?;
        acc.add(&format!("{} probs", c.label), compare(&got_p, &want_p, ATOL, RTOL));
        acc.add(&format!("{} out", c.label), compare(&got_o, &want_o, 1e-4, 1e-4));
        // Blocked cells are exactly 0, rows sum to 1 (or are all 0 when fully masked), no NaN.
        let mut zero_rows = 0;
        for h in 0..s.nh {
            for i in 0..s.tq {
                let row = &got_p[(h * s.tq + i) * s.tk..][..s.tk];
                let sum: f64 = row.iter().map(|&x| x as f64).sum();
                for (j, &p) in row.iter().enumerate() {
                    if !s.allowed(c.mask.as_deref(), i, j) && p != 0.0 {
                        acc.fail(c.label, format!("blocked cell (h{h}, q{i}, k{j}) is {p}, not exactly 0"));
                    }
                }
                if row.iter().any(|p| p.is_nan()) {
                    acc.fail(c.label, format!("NaN in row (h{h}, q{i})"));
                } else if sum == 0.0 {
                    zero_rows += 1;
                } else if (sum - 1.0).abs() > 1e-5 {
                    acc.fail(c.label, format!("row (h{h}, q{i}) sums to {sum}"));
                }
            }
        }
        if zero_rows != c.fully_masked_rows * s.nh {
            acc.fail(c.label, format!("{zero_rows} all-zero rows, expected {}", c.fully_masked_rows * s.nh));
        }
    }
    Ok(acc.finish(name, "probs atol 1e-5 + rtol 1e-4; out atol 1e-4 + rtol 1e-4; blocked exactly 0", t0))
}

async fn check_elementwise(g: &Arc<Gpu>) -> Result<CheckResult> {
    const ATOL: f64 = 2e-6;
    const RTOL: f64 = 2e-5;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(33);
    for op in [EwOp::Relu, EwOp::Gelu, EwOp::GeluTanh, EwOp::Silu, EwOp::SwiGlu, EwOp::Add, EwOp::Mul] {
        for n in [1usize, 7, 256, 257, 1000] {
            let a = rng.vec_normal(n, 3.0);
            let b = rng.vec_normal(n, 3.0);
            let mut want = vec![0f32; n];
            cpu::elementwise(&mut want, &a, op.is_binary().then_some(&b[..]), op);
            let (at, bt, ot) = (g.upload(&[n], &a, "a")?, g.upload(&[n], &b, "b")?, g.zeros(&[n], "out")?);
            let mut rec = Recorder::new(g);
            gpu::act::elementwise(&mut rec, &ot, &at, op.is_binary().then_some(&bt), n, op)?;
            // and the in-place form on a copy of a
            let it = g.upload(&[n], &a, "x")?;
            gpu::act::inplace(&mut rec, &it, op.is_binary().then_some(&bt), n, op)?;
            rec.submit()?;
            acc.add(&format!("{op:?} n={n}"), compare(&g.read_f32(&ot).await?, &want, ATOL, RTOL));
            acc.add(&format!("{op:?} in place n={n}"), compare(&g.read_f32(&it).await?, &want, ATOL, RTOL));
        }
    }
    Ok(acc.finish("elementwise (relu, gelu, gelu_tanh, silu, swiglu, add, mul)", "atol 2e-6 + rtol 2e-5", t0))
}

async fn check_norms(g: &Arc<Gpu>) -> Result<CheckResult> {
    const ATOL: f64 = 1e-5;
    const RTOL: f64 = 1e-4;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(44);
    for &(rows, c) in &[(1usize, 1usize), (1, 7), (3, 64), (5, 129), (2, 300), (130, 16)] {
        let x: Vec<f32> = rng.vec_normal(rows * c, 2.0).iter().map(|v| v + 0.5).collect();
        let gamma: Vec<f32> = rng.vec_normal(c, 0.3).iter().map(|v| v + 1.0).collect();
        let beta = rng.vec_normal(c, 0.3);
        let mut want_ln = vec![0f32; rows * c];
        let mut want_rms = vec![0f32; rows * c];
        cpu::layernorm(&mut want_ln, &x, &gamma, &beta, c, 1e-5);
        cpu::rmsnorm(&mut want_rms, &x, &gamma, c, 1e-6);
        let (xt, gt, bt) = (g.upload(&[rows, c], &x, "x")?, g.upload(&[c], &gamma, "g")?, g.upload(&[c], &beta, "b")?);
        // a workgroup per row, and an invocation per row (the barrier-free form)
        for kind in [gpu::RowKind::Workgroup, gpu::RowKind::Invocation] {
            let (o1, o2) = (g.zeros(&[rows, c], "ln")?, g.zeros(&[rows, c], "rms")?);
            let mut rec = Recorder::new(g);
            gpu::norm::layernorm_kind(&mut rec, &o1, &xt, &gt, &bt, rows, 1e-5, kind)?;
            gpu::norm::rmsnorm_kind(&mut rec, &o2, &xt, &gt, rows, 1e-6, kind)?;
            rec.submit()?;
            acc.add(&format!("layernorm {rows}x{c} {kind:?}"), compare(&g.read_f32(&o1).await?, &want_ln, ATOL, RTOL));
            acc.add(&format!("rmsnorm {rows}x{c} {kind:?}"), compare(&g.read_f32(&o2).await?, &want_rms, ATOL, RTOL));
        }
    }
    Ok(acc.finish("norms (layernorm, rmsnorm; per workgroup and per invocation)", "atol 1e-5 + rtol 1e-4", t0))
}

/// The CPU twin of the q/k/v GEMV: three cpu::matmul calls with their biases into q and the cache
/// rows from `pos`, then cpu::rope on q and those k rows (head size `rope_hs`, positions from pos).
#[allow(clippy::too_many_arguments)]
fn qkv_twin(
    x: &[f32],
    w: [&[f32]; 3],
    b: Option<[&[f32]; 3]>,
    (m, k, nq, nkv, pos): (usize, usize, usize, usize, usize),
    rope: Option<(&[f32], usize)>,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let (mut q, mut kc, mut vc) = (vec![0f32; m * nq], vec![0f32; (pos + m) * nkv], vec![0f32; (pos + m) * nkv]);
    cpu::matmul(&mut q, x, w[0], b.map(|b| b[0]), m, k, nq)?;
    cpu::matmul(&mut kc[pos * nkv..], x, w[1], b.map(|b| b[1]), m, k, nkv)?;
    cpu::matmul(&mut vc[pos * nkv..], x, w[2], b.map(|b| b[2]), m, k, nkv)?;
    if let Some((table, hs)) = rope {
        cpu::rope(&mut q, table, m, nq / hs, hs, pos, nq, 0);
        cpu::rope(&mut kc, table, m, nkv / hs, hs, pos, nkv, pos * nkv);
    }
    Ok((q, kc, vc))
}

/// The one-dispatch q/k/v GEMV (vec4 and scalar f32 entries) against [`qkv_twin`]: k and v land
/// at a cache offset; with the three biases, with RoPE in the epilogue (several heads, GQA, rows
/// at later positions), and both (the biased GEMV then two rope dispatches).
/// `kind` Rows: the one-invocation-per-pair entries (shaders/qkv.wgsl `rows*`) on the same cases.
async fn check_gemv_qkv(g: &Arc<Gpu>, kind: MatmulKind) -> Result<CheckResult> {
    const ATOL: f64 = 1e-4;
    const RTOL: f64 = 1e-4;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(13);
    // (M, K, NQ, NKV, cached rows before, biases, RoPE head size (0: none))
    for &(m, k, nq, nkv, pos, bias, hs) in &[
        (1usize, 4usize, 4usize, 4usize, 0usize, false, 0usize),
        (1, 64, 64, 16, 3, false, 0),
        (3, 32, 48, 16, 5, false, 0),
        (7, 128, 96, 32, 1, false, 0),
        (1, 8, 33, 7, 2, false, 0),
        (1, 12, 20, 6, 4, true, 0),
        (2, 9, 24, 8, 0, true, 0),
        (1, 64, 64, 16, 3, false, 16),
        (3, 32, 48, 16, 17, false, 8),
        (5, 13, 24, 12, 2, false, 2),
        (1, 16, 32, 16, 60, false, 4),
        (2, 16, 32, 8, 6, true, 8),
    ] {
        let x = rng.vec_normal(m * k, 1.0);
        let (wq, wk, wv) = (rng.vec_normal(nq * k, 0.5), rng.vec_normal(nkv * k, 0.5), rng.vec_normal(nkv * k, 0.5));
        let (bq, bk, bv) = (rng.vec_normal(nq, 1.0), rng.vec_normal(nkv, 1.0), rng.vec_normal(nkv, 1.0));
        // the case at row 17 rotates 4 of its 16 dims (GPT-NeoX's partial rotary: the table passes the rest through)
        let table = cpu::rope_table_partial(64, hs.max(2), if pos == 17 { 4 } else { hs.max(2) }, 10000.0);
        let rope = (hs > 0).then_some((&table[..], hs));
        let biases = bias.then_some([&bq[..], &bk[..], &bv[..]]);
        let (want_q, want_k, want_v) = qkv_twin(&x, [&wq, &wk, &wv], biases, (m, k, nq, nkv, pos), rope)?;
        let (xt, wqt, wkt, wvt) =
            (g.upload(&[m, k], &x, "x")?, g.upload(&[nq, k], &wq, "wq")?, g.upload(&[nkv, k], &wk, "wk")?, g.upload(&[nkv, k], &wv, "wv")?);
        let bt = g.upload(&[nq + 2 * nkv], &[bq, bk, bv].concat(), "b")?;
        let tt = g.upload(&[64, hs.max(2) / 2, 2], &table, "table")?;
        let (qt, kt, vt) = (g.zeros(&[m, nq], "q")?, g.zeros(&[pos + m, nkv], "k")?, g.zeros(&[pos + m, nkv], "v")?);
        let mut rec = Recorder::new(g);
        let r = (hs > 0).then_some(gpu::qkv::QkvRope { table: &tt, hs, start_pos: pos });
        gpu::qkv::qkv_kind(&mut rec, &qt, &kt, &vt, pos * nkv, &xt, m, [&wqt, &wkt, &wvt], bias.then_some(&bt), r, kind)?;
        let dispatches = rec.dispatches;
        rec.submit()?;
        let case = format!("M={m} K={k} NQ={nq} NKV={nkv} at row {pos} bias={bias} rope HS={hs}");
        let fused = if bias && hs > 0 { 3 } else { 1 };
        if dispatches != fused {
            acc.fail(&case, format!("{dispatches} dispatches, want {fused}"));
        }
        acc.add(&format!("{case}: q"), compare(&g.read_f32(&qt).await?, &want_q, ATOL, RTOL));
        let (kg, vg) = (g.read_f32(&kt).await?, g.read_f32(&vt).await?);
        acc.add(&format!("{case}: k"), compare(&kg[pos * nkv..], &want_k[pos * nkv..], ATOL, RTOL));
        acc.add(&format!("{case}: v"), compare(&vg[pos * nkv..], &want_v[pos * nkv..], ATOL, RTOL));
        acc.add(
            &format!("{case}: rows before untouched"),
            compare(&[&kg[..pos * nkv], &vg[..pos * nkv]].concat(), &vec![0.0; 2 * pos * nkv], 0.0, 0.0),
        );
    }
    let name = if kind == MatmulKind::Rows {
        "rows qkv (q, k, v, biases, RoPE; one invocation per pair)"
    } else {
        "gemv qkv (q, k, v, biases, RoPE in one dispatch)"
    };
    Ok(acc.finish(name, "atol 1e-4 + rtol 1e-4; other cache rows untouched", t0))
}

/// The fused residual add + norm against the CPU add followed by cpu::layernorm / cpu::rmsnorm,
/// in both forms: out = norm(x += y) (pre-norm) and x = norm(x + y) in place (post-norm), each with
/// a workgroup and with an invocation per row.
async fn check_add_norm(g: &Arc<Gpu>) -> Result<CheckResult> {
    const ATOL: f64 = 1e-5;
    const RTOL: f64 = 1e-4;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(45);
    for &(rows, c) in &[(1usize, 1usize), (1, 7), (3, 64), (5, 129), (2, 300), (130, 16)] {
        let x: Vec<f32> = rng.vec_normal(rows * c, 2.0).iter().map(|v| v + 0.5).collect();
        let y = rng.vec_normal(rows * c, 1.0);
        let gamma: Vec<f32> = rng.vec_normal(c, 0.3).iter().map(|v| v + 1.0).collect();
        let beta = rng.vec_normal(c, 0.3);
        let sum: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        for (layer, kind) in [true, false].into_iter().flat_map(|l| [(l, gpu::RowKind::Workgroup), (l, gpu::RowKind::Invocation)]) {
            let mut want = vec![0f32; rows * c];
            if layer {
                cpu::layernorm(&mut want, &sum, &gamma, &beta, c, 1e-5);
            } else {
                cpu::rmsnorm(&mut want, &sum, &gamma, c, 1e-6);
            }
            let eps = if layer { 1e-5 } else { 1e-6 };
            let (xt, yt, gt, bt) =
                (g.upload(&[rows, c], &x, "x")?, g.upload(&[rows, c], &y, "y")?, g.upload(&[c], &gamma, "g")?, g.upload(&[c], &beta, "b")?);
            let xt2 = g.upload(&[rows, c], &x, "x2")?;
            let out = g.zeros(&[rows, c], "out")?;
            let mut rec = Recorder::new(g);
            gpu::norm::add_norm_kind(&mut rec, &xt, &yt, Some(&out), &gt, layer.then_some(&bt), rows, eps, kind)?;
            gpu::norm::add_norm_kind(&mut rec, &xt2, &yt, None, &gt, layer.then_some(&bt), rows, eps, kind)?;
            rec.submit()?;
            let name = if layer { format!("layernorm {kind:?}") } else { format!("rmsnorm {kind:?}") };
            acc.add(&format!("add+{name} {rows}x{c}: out"), compare(&g.read_f32(&out).await?, &want, ATOL, RTOL));
            acc.add(&format!("add+{name} {rows}x{c}: x = x + y"), compare(&g.read_f32(&xt).await?, &sum, 0.0, 0.0));
            acc.add(&format!("add+{name} {rows}x{c}: in place"), compare(&g.read_f32(&xt2).await?, &want, ATOL, RTOL));
        }
    }
    Ok(acc.finish("add + norm (fused residual; per workgroup and per invocation)", "atol 1e-5 + rtol 1e-4; the sum exact", t0))
}

async fn check_rope(g: &Arc<Gpu>) -> Result<CheckResult> {
    const ATOL: f64 = 1e-5;
    const RTOL: f64 = 1e-5;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(55);
    // (T, NH, HS, start, theta, row_stride_extra, offset, rotated dims): rot < HS is GPT-NeoX's partial rotary,
    // whose table passes the pairs past rot through (cos 1, sin 0): the same kernel, exactly unchanged there
    for &(t, nh, hs, start, theta, extra, offset, rot) in &[
        (1usize, 1usize, 2usize, 0usize, 10000.0f32, 0usize, 0usize, 2usize),
        (3, 2, 8, 3, 10000.0, 0, 0, 8),
        (5, 4, 16, 0, 500000.0, 0, 0, 16),
        (4, 3, 6, 17, 10000.0, 0, 0, 6),
        (3, 2, 4, 5, 10000.0, 16, 8, 4),
        (4, 3, 16, 9, 10000.0, 0, 0, 4),
        (2, 2, 16, 30, 1000.0, 0, 0, 8),
    ] {
        let table = cpu::rope_table_partial(64, hs, rot, theta);
        let stride = nh * hs + extra;
        let n = offset + (t - 1) * stride + nh * hs + extra;
        let x = rng.vec_normal(n, 1.0);
        let mut want = x.clone();
        cpu::rope(&mut want, &table, t, nh, hs, start, stride, offset);
        let (xt, tt) = (g.upload(&[n], &x, "x")?, g.upload(&[64, hs / 2, 2], &table, "table")?);
        let mut rec = Recorder::new(g);
        gpu::rope::rope(&mut rec, &xt, &tt, &RopeShape { t, nh, hs, start_pos: start, row_stride: stride, offset })?;
        rec.submit()?;
        let got = g.read_f32(&xt).await?;
        let case = format!("T={t} NH={nh} HS={hs} start={start} rotating {rot}");
        let passed = (0..n).filter(|i| i < &offset || (i - offset) % stride >= nh * hs || (i - offset) % stride % hs >= rot);
        if let Some(i) = passed.clone().find(|&i| got[i].to_bits() != x[i].to_bits()) {
            acc.fail(&case, format!("element {i} past the rotated dims changed: {} -> {}", x[i], got[i]));
        }
        acc.add(&case, compare(&got, &want, ATOL, RTOL));
    }
    Ok(acc.finish("rope", "atol 1e-5 + rtol 1e-5", t0))
}

async fn check_embedding(g: &Arc<Gpu>) -> Result<CheckResult> {
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(66);
    let (v, c) = (11usize, 7usize);
    let table = rng.vec_normal(v * c, 1.0);
    let pe = cpu::sinusoidal_table(32, c);
    for ids in [vec![3u32], vec![0, 10, 3, 3, 7], (0..11).rev().collect::<Vec<u32>>()] {
        let t = ids.len();
        let scale = (c as f32).sqrt();
        let mut want = vec![0f32; t * c];
        cpu::embedding(&mut want, &table, &ids, c, scale);
        cpu::add_rows(&mut want, &pe, c, 3);
        let (tt, it, pt, ot) =
            (g.upload(&[v, c], &table, "E")?, g.upload_u32(&[t], &ids, "ids")?, g.upload(&[32, c], &pe, "pe")?, g.zeros(&[t, c], "out")?);
        let mut rec = Recorder::new(g);
        gpu::embed::embedding(&mut rec, &ot, &tt, &it, t, scale)?;
        gpu::embed::add_rows(&mut rec, &ot, &pt, t, 3)?;
        rec.submit()?;
        acc.add(&format!("T={t}"), compare(&g.read_f32(&ot).await?, &want, 1e-6, 1e-6));
    }
    Ok(acc.finish("embedding + sinusoidal PE", "atol 1e-6 + rtol 1e-6", t0))
}

/// `one`: greedy picks through sample_one_invocation (sample.wgsl's `greedy1`), greedy cases only.
async fn check_sample(g: &Arc<Gpu>, one: bool) -> Result<CheckResult> {
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(77);
    let out = g.zeros_u32(&[2], "token")?;
    let configs = [
        SampleParams::greedy(),
        SampleParams { temperature: 1.0, top_k: 0, top_p: 1.0 },
        SampleParams { temperature: 0.7, top_k: 5, top_p: 1.0 },
        SampleParams { temperature: 1.3, top_k: 0, top_p: 0.9 },
        SampleParams { temperature: 0.8, top_k: 40, top_p: 0.95 },
        SampleParams { temperature: 1.0, top_k: 1, top_p: 1.0 },
    ];
    let mut mismatches = 0;
    let mut total = 0;
    // GPT-2's vocabulary, and one past 2^16 (a kernel that walks a row in one invocation must not stop
    // early: llvmpipe ends an invocation's loops after 65,535 iterations in all)
    for v in [1usize, 5, 255, 256, 257, 1000, 4099, 50_257, 70_000] {
        let mut logits = rng.vec_normal(2 * v, 2.0);
        if v > 4 {
            // ties: the first maximum must win the argmax
            let mx = logits[v..].iter().cloned().fold(f32::MIN, f32::max) + 1.0;
            logits[v + 1] = mx;
            logits[v + v / 2] = mx;
            if v > 50_000 {
                // and a larger one at the end of a long row
                logits[2 * v - 2] = mx + 1.0;
            }
        }
        let lt = g.upload(&[2, v], &logits, "logits")?;
        for p in configs.iter().filter(|p| !one || p.is_greedy()) {
            for trial in 0..6 {
                let u = rng.uniform();
                let want = cpu::sample(&logits[v..], p, u);
                let mut rec = Recorder::new(g);
                if one {
                    gpu::sample::sample_one_invocation(&mut rec, &out, &lt, 1, p, u)?;
                } else {
                    gpu::sample::sample(&mut rec, &out, &lt, 1, p, u)?;
                }
                rec.submit()?;
                let got_all = g.read_u32(&out).await?;
                let got = got_all[0];
                total += 1;
                if got_all[1] != 0 {
                    acc.fail(&format!("V={v} {p:?}"), format!("finite logits counted as {} non-finite", got_all[1]));
                }
                if got != want {
                    mismatches += 1;
                    acc.fail(&format!("V={v} {p:?} u={u} trial {trial}"), format!("GPU picked {got}, CPU {want}"));
                }
                if p.is_greedy() {
                    break;
                }
            }
        }
    }
    // NaN and Inf logits are counted (the host refuses the token), in every chunk of the row
    for v in [3usize, 257, 1000] {
        let mut logits = rng.vec_normal(v, 2.0);
        logits[0] = f32::NAN;
        logits[v - 1] = f32::INFINITY;
        logits[v / 2] = f32::NEG_INFINITY;
        let lt = g.upload(&[1, v], &logits, "logits")?;
        for p in
            [SampleParams::greedy(), SampleParams { temperature: 1.0, top_k: 3, top_p: 0.9 }].into_iter().filter(|p| !one || p.is_greedy())
        {
            let mut rec = Recorder::new(g);
            if one {
                gpu::sample::sample_one_invocation(&mut rec, &out, &lt, 0, &p, 0.5)?;
            } else {
                gpu::sample::sample(&mut rec, &out, &lt, 0, &p, 0.5)?;
            }
            rec.submit()?;
            let (got, want) = (g.read_u32(&out).await?[1], cpu::count_non_finite(&logits));
            total += 1;
            if got != want || want != 3 {
                mismatches += 1;
                acc.fail(&format!("V={v} {p:?} with NaN/Inf"), format!("GPU counted {got} non-finite logits, CPU {want}"));
            }
        }
    }
    let name = if one {
        "sample greedy, one invocation (argmax, NaN/Inf count)"
    } else {
        "sample (argmax, temperature, top-k, top-p, NaN/Inf count)"
    };
    let mut r = acc.finish(name, "token ids and counts equal", t0);
    r.max_abs_diff = mismatches as f64;
    if r.ok {
        r.detail = format!("{total} draws, all equal");
    }
    Ok(r)
}

async fn check_moe_router(g: &Arc<Gpu>) -> Result<CheckResult> {
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(88);
    for &(t, e, k) in &[(1usize, 2usize, 1usize), (5, 4, 2), (70, 8, 3), (3, 4, 4), (9, 61, 2)] {
        let mut logits = rng.vec_normal(t * e, 1.5);
        // a tie on token 0: experts 0 and 1 equal and largest, so expert 0 must come first
        let mx = logits[..e].iter().cloned().fold(f32::MIN, f32::max) + 1.0;
        logits[0] = mx;
        logits[1] = mx;
        let (mut wp, mut we, mut ww) = (vec![0f32; t * e], vec![0u32; t * k], vec![0f32; t * k]);
        cpu::moe_router(&mut wp, &mut we, &mut ww, &logits, t, e, k);
        let lt = g.upload(&[t, e], &logits, "router logits")?;
        let (pt, et, wt) = (g.zeros(&[t, e], "probs")?, g.zeros_u32(&[t, k], "experts")?, g.zeros(&[t, k], "weights")?);
        let mut rec = Recorder::new(g);
        gpu::moe::moe_router(&mut rec, &pt, &et, &wt, &lt, t, e, k)?;
        rec.submit()?;
        let case = format!("T={t} E={e} k={k}");
        acc.add(&format!("{case} probs"), compare(&g.read_f32(&pt).await?, &wp, 1e-6, 1e-5));
        acc.add(&format!("{case} weights"), compare(&g.read_f32(&wt).await?, &ww, 1e-6, 1e-5));
        let ge = g.read_u32(&et).await?;
        if ge != we {
            acc.fail(&case, format!("experts {:?}.. differ from CPU {:?}..", &ge[..k.min(ge.len())], &we[..k]));
        }
        if k > 1 && (ge[0] != 0 || ge[1] != 1) {
            acc.fail(&case, format!("tie not broken to the lower index: {:?}", &ge[..2]));
        }
    }
    Ok(acc.finish("moe router (softmax, top-k, renormalise)", "atol 1e-6 + rtol 1e-5; experts equal", t0))
}

async fn check_moe_dispatch(g: &Arc<Gpu>) -> Result<CheckResult> {
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(99);
    // (T, E, K, capacity, C): unlimited, tight (drops), zero, one token
    for &(t, e, k, cap, c) in &[
        (6usize, 4usize, 2usize, None, 5usize),
        (9, 4, 2, Some(3usize), 7),
        (4, 3, 1, Some(0), 3),
        (1, 4, 2, Some(1), 16),
        (33, 8, 2, Some(5), 9),
    ] {
        let experts: Vec<u32> = (0..t)
            .flat_map(|_| {
                let a = rng.below(e as u32);
                let b = (a + 1 + rng.below(e as u32 - 1)) % e as u32;
                if k == 1 {
                    vec![a]
                } else {
                    vec![a, b]
                }
            })
            .collect();
        let weights: Vec<f32> = (0..t * k).map(|_| rng.uniform()).collect();
        let ys_rows = t + 2;
        let ys = rng.vec_normal(e * ys_rows * c, 1.0);
        let (mut wg, mut wk, mut wo) = (vec![0f32; t * e], vec![0u32; t * k], vec![0f32; t * c]);
        cpu::moe_capacity(&mut wg, &mut wk, &experts, &weights, t, e, k, cap);
        cpu::moe_combine(&mut wo, &ys, &wg, t, e, c, ys_rows);
        let et = g.upload_u32(&[t, k], &experts, "experts")?;
        let wt = g.upload(&[t, k], &weights, "weights")?;
        let yt = g.upload(&[e, ys_rows, c], &ys, "ys")?;
        let (gt, kt, ot) = (g.zeros(&[t, e], "gate")?, g.zeros_u32(&[t, k], "kept")?, g.zeros(&[t, c], "out")?);
        let mut rec = Recorder::new(g);
        gpu::moe::moe_capacity(&mut rec, &gt, &kt, &et, &wt, t, e, k, cap)?;
        gpu::moe::moe_combine(&mut rec, &ot, &yt, &gt, t, e, c, ys_rows)?;
        rec.submit()?;
        let case = format!("T={t} E={e} k={k} capacity={cap:?}");
        acc.add(&format!("{case} gate"), compare(&g.read_f32(&gt).await?, &wg, 0.0, 0.0));
        acc.add(&format!("{case} combine"), compare(&g.read_f32(&ot).await?, &wo, 1e-6, 1e-5));
        let gk = g.read_u32(&kt).await?;
        if gk != wk {
            acc.fail(&case, format!("kept flags {gk:?} differ from CPU {wk:?}"));
        }
    }
    Ok(acc.finish("moe capacity + combine", "gate exact; combine atol 1e-6 + rtol 1e-5; kept equal", t0))
}

/// 16-bit weights (shaders/matmul16.wgsl): the CPU twins read the same bits (the unpacking is
/// exact, so the twins widen them with the `half` crate) and compute in f64.
pub mod twin16 {
    use crate::gpu::DType;

    /// The value of one f16 (`DType::F16`) or bf16 (`DType::BF16`) bit pattern.
    pub fn value(bits: u16, dtype: DType) -> f32 {
        if dtype == DType::F16 {
            half::f16::from_bits(bits).to_f32()
        } else {
            half::bf16::from_bits(bits).to_f32()
        }
    }

    /// out (M, N) = x (M, K) @ W^T + b, W (N, K) given as 16-bit bits, summed in f64.
    pub fn matmul(x: &[f32], w: &[u16], b: Option<&[f32]>, m: usize, k: usize, n: usize, dtype: DType) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                let mut s = b.map_or(0.0, |b| b[c] as f64);
                for p in 0..k {
                    s += x[r * k + p] as f64 * value(w[c * k + p], dtype) as f64;
                }
                out[r * n + c] = s as f32;
            }
        }
        out
    }

    /// Random 16-bit weights with edge values mixed in: f16 subnormals (the smallest, the largest),
    /// bf16 values far outside f16's range (1e30, 3e-30), signed zeros, the largest finite values.
    pub fn weights(rng: &mut crate::rng::Rng, len: usize, dtype: DType) -> Vec<u16> {
        let normal = rng.vec_normal(len, 0.5);
        let edges: &[u16] = if dtype == DType::F16 {
            // 2^-24, 1023 * 2^-24 (largest subnormal), -2^-24, -0, 65504, -65504, 2^-14 (smallest normal)
            &[0x0001, 0x03ff, 0x8001, 0x8000, 0x7bff, 0xfbff, 0x0400, 0x0200]
        } else {
            // 1e30, -3e-30, 2^-130 (a bf16 subnormal), -0, 3.39e38 (largest finite), 1e-38, 65536 * 4
            &[0x7149, 0x8d7a, 0x0020, 0x8000, 0x7f7f, 0x00d9, 0x4880, 0x0001]
        };
        normal
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i % 7 == 3 {
                    edges[(i / 7) % edges.len()]
                } else if dtype == DType::F16 {
                    half::f16::from_f32(v).to_bits()
                } else {
                    half::bf16::from_f32(v).to_bits()
                }
            })
            .collect()
    }
}

/// The 16-bit-weight matmul kernels (tiled, GEMV, the SwiGLU GEMV, the q/k/v GEMV) against
/// [`twin16::matmul`], for f16 or bf16 weights with edge values (subnormals; for bf16, values
/// outside f16's range: 1e30 and 3.4e38 weights meet small x, so outputs stay finite) and odd K.
async fn check_matmul16(g: &Arc<Gpu>, dtype: gpu::DType) -> Result<CheckResult> {
    // f32 sums of K products in another order than the f64 twin, relative to the sum's size: the
    // twin's |x| . |w| bounds the rounding, so the check is |diff| <= 1e-5 * (1 + sum |x w|)
    const RTOL: f64 = 1e-5;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(16 + dtype.wfmt() as u64);
    // (M, K, N, rows of x before the ones read)
    let shapes = [
        (1, 1, 1, 0),
        (1, 7, 5, 0),
        (3, 13, 17, 1),
        (1, 257, 131, 0),
        (9, 33, 67, 0),
        (65, 36, 67, 1),
        (2, 64, 300, 2),
        (70, 131, 64, 0),
        (128, 64, 128, 0),
        (64, 48, 64, 4),
        (73, 40, 70, 1),
    ];
    for (i, &(m, k, n, skip)) in shapes.iter().enumerate() {
        let bias = i % 2 == 0;
        // small x against bf16's huge edge values keeps every product finite in f32
        let xscale = if dtype == gpu::DType::BF16 { 1e-12 } else { 1.0 };
        let x: Vec<f32> = rng.vec_normal((skip + m) * k, 1.0).iter().map(|v| v * xscale).collect();
        let w = twin16::weights(&mut rng, n * k, dtype);
        let b = rng.vec_normal(n, 1.0);
        let want = twin16::matmul(&x[skip * k..], &w, bias.then_some(&b[..]), m, k, n, dtype);
        let wabs: Vec<u16> = w.iter().map(|&v| v & 0x7fff).collect();
        let xabs: Vec<f32> = x[skip * k..].iter().map(|v| v.abs()).collect();
        let scale = twin16::matmul(&xabs, &wabs, None, m, k, n, dtype);
        let (xt, wt, bt) = (g.upload(&[skip + m, k], &x, "x")?, g.upload16(&[n, k], &w, dtype, "w16")?, g.upload(&[n], &b, "b")?);
        for kind in [MatmulKind::Tiled, MatmulKind::Tiled4, MatmulKind::Reg, MatmulKind::Gemv] {
            let ot = g.zeros(&[m, n], "out")?;
            let mut rec = Recorder::new(g);
            gpu::matmul::matmul(&mut rec, &ot, 0, &xt, skip * k, m, &wt, bias.then_some(&bt), kind)?;
            rec.submit()?;
            let got = g.read_f32(&ot).await?;
            let case = format!("{dtype:?} {kind:?} M={m} K={k} N={n} bias={bias} x from row {skip}");
            acc.add(&case, compare_scaled(&got, &want, &scale, RTOL));
        }
    }
    // every edge value exactly: x = (1, 0, 0) picks column 0 of each row (atol 1e-37: a GPU may
    // flush f32 subnormals, which bf16's smallest values are; f16's subnormals are normal in f32)
    {
        let (m, k) = (1usize, 3usize);
        let edges = twin16::weights(&mut rng, 8 * 7 * k, dtype);
        let col0: Vec<u16> = (0..8).map(|i| edges[7 * i + 3]).collect();
        let w: Vec<u16> = col0.iter().flat_map(|&e| [e, 0x3c00, 0x4000]).collect();
        let n = col0.len();
        let want: Vec<f32> = col0.iter().map(|&e| twin16::value(e, dtype)).collect();
        let (xt, wt) = (g.upload(&[m, k], &[1.0, 0.0, 0.0], "x")?, g.upload16(&[n, k], &w, dtype, "w16")?);
        for kind in [MatmulKind::Tiled, MatmulKind::Tiled4, MatmulKind::Gemv] {
            let ot = g.zeros(&[m, n], "out")?;
            let mut rec = Recorder::new(g);
            gpu::matmul::matmul(&mut rec, &ot, 0, &xt, 0, m, &wt, None, kind)?;
            rec.submit()?;
            acc.add(&format!("{dtype:?} {kind:?} edge values exactly"), compare(&g.read_f32(&ot).await?, &want, 1e-37, 0.0));
        }
    }
    // the SwiGLU GEMV and the q/k/v GEMV (qkv.wgsl's main16), with biases / RoPE (HS 8)
    for &(m, k, n, bias, hs) in &[(1usize, 7usize, 5usize, false, 0usize), (3, 13, 17, true, 0), (2, 64, 40, false, 8), (1, 9, 16, true, 4)]
    {
        let x = rng.vec_normal(m * k, 1.0);
        let norm = |rng: &mut Rng| -> Vec<u16> {
            let v = rng.vec_normal(n * k, 0.5);
            v.iter()
                .map(|&f| if dtype == gpu::DType::F16 { half::f16::from_f32(f).to_bits() } else { half::bf16::from_f32(f).to_bits() })
                .collect()
        };
        let (wg, wu, wv) = (norm(&mut rng), norm(&mut rng), norm(&mut rng));
        let (gate, up) = (twin16::matmul(&x, &wg, None, m, k, n, dtype), twin16::matmul(&x, &wu, None, m, k, n, dtype));
        let mut want = vec![0f32; m * n];
        cpu::act::swiglu(&mut want, &gate, &up);
        // the q/k/v twin over the weights widened exactly to f32
        let wide = |w: &[u16]| -> Vec<f32> { w.iter().map(|&b| twin16::value(b, dtype)).collect() };
        let b = rng.vec_normal(3 * n, 1.0);
        let table = cpu::rope_table(8, hs.max(2), 10000.0);
        let (wq32, wk32, wv32) = (wide(&wg), wide(&wu), wide(&wv));
        let biases = bias.then_some([&b[..n], &b[n..2 * n], &b[2 * n..]]);
        let (want_q, want_k, want_v) = qkv_twin(&x, [&wq32, &wk32, &wv32], biases, (m, k, n, n, 1), (hs > 0).then_some((&table[..], hs)))?;
        let xt = g.upload(&[m, k], &x, "x")?;
        let (gt, ut, vt) =
            (g.upload16(&[n, k], &wg, dtype, "wg")?, g.upload16(&[n, k], &wu, dtype, "wu")?, g.upload16(&[n, k], &wv, dtype, "wv")?);
        let (bt, tt) = (g.upload(&[3 * n], &b, "b")?, g.upload(&[8, hs.max(2) / 2, 2], &table, "table")?);
        let (ot, qt, kt, v_t) = (g.zeros(&[m, n], "out")?, g.zeros(&[m, n], "q")?, g.zeros(&[m + 1, n], "k")?, g.zeros(&[m + 1, n], "v")?);
        let mut rec = Recorder::new(g);
        gpu::matmul::gemv_swiglu(&mut rec, &ot, &xt, m, &gt, &ut)?;
        let r = (hs > 0).then_some(gpu::qkv::QkvRope { table: &tt, hs, start_pos: 1 });
        gpu::qkv::qkv_kind(&mut rec, &qt, &kt, &v_t, n, &xt, m, [&gt, &ut, &vt], bias.then_some(&bt), r, MatmulKind::Gemv)?;
        rec.submit()?;
        let case = format!("{dtype:?} qkv M={m} K={k} N={n} bias={bias} rope HS={hs}");
        acc.add(&format!("{dtype:?} swiglu M={m} K={k} N={n}"), compare(&g.read_f32(&ot).await?, &want, 1e-5, 1e-4));
        acc.add(&format!("{case}: q"), compare(&g.read_f32(&qt).await?, &want_q, 1e-5, 1e-4));
        acc.add(&format!("{case}: k at row 1"), compare(&g.read_f32(&kt).await?, &want_k, 1e-5, 1e-4));
        acc.add(&format!("{case}: v at row 1"), compare(&g.read_f32(&v_t).await?, &want_v, 1e-5, 1e-4));
    }
    let name = format!("matmul 16-bit weights ({})", if dtype == gpu::DType::F16 { "f16" } else { "bf16" });
    Ok(acc.finish(&name, "|diff| <= 1e-5 (1 + sum|x w|); swiglu / qkv atol 1e-5 + rtol 1e-4", t0))
}

/// |got - want| <= rtol * (1 + scale) elementwise (scale: the sum of |x w|, what bounds an f32 sum's rounding).
fn compare_scaled(got: &[f32], want: &[f32], scale: &[f32], rtol: f64) -> (bool, f64, String) {
    if got.len() != want.len() {
        return (false, f64::INFINITY, format!("length {} != {}", got.len(), want.len()));
    }
    let mut max = 0f64;
    let mut first = String::new();
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let d = (g as f64 - w as f64).abs();
        max = if d.is_nan() { f64::INFINITY } else { max.max(d) };
        let within = d <= rtol * (1.0 + s as f64); // false for NaN
        if !within && first.is_empty() {
            first = format!("first mismatch at {i}: got {g}, want {w} (sum |x w| {s})");
        }
    }
    (first.is_empty(), max, first)
}

/// The 16-bit embedding lookup and learned-position rows against the twin's exact values, with
/// odd C and the edge values of [`twin16::weights`].
async fn check_embedding16(g: &Arc<Gpu>) -> Result<CheckResult> {
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(67);
    for dtype in [gpu::DType::F16, gpu::DType::BF16] {
        for (v, c) in [(11usize, 7usize), (5, 8), (3, 1)] {
            let table = twin16::weights(&mut rng, v * c, dtype);
            let pos = twin16::weights(&mut rng, 32 * c, dtype);
            let ids: Vec<u32> = (0..v as u32).rev().chain([1, 1, 99]).collect();
            let t = ids.len();
            let scale = 0.5; // a power of two: exact, and bf16's largest value stays finite
            let mut want = vec![0f32; t * c];
            for (r, &id) in ids.iter().enumerate() {
                for col in 0..c {
                    let e = if (id as usize) < v { twin16::value(table[id as usize * c + col], dtype) * scale } else { 0.0 };
                    want[r * c + col] = e + twin16::value(pos[(3 + r) * c + col], dtype);
                }
            }
            let (tt, it, pt, ot) = (
                g.upload16(&[v, c], &table, dtype, "E16")?,
                g.upload_u32(&[t], &ids, "ids")?,
                g.upload16(&[32, c], &pos, dtype, "P16")?,
                g.zeros(&[t, c], "out")?,
            );
            let mut rec = Recorder::new(g);
            gpu::embed::embedding(&mut rec, &ot, &tt, &it, t, scale)?;
            gpu::embed::add_rows(&mut rec, &ot, &pt, t, 3)?;
            rec.submit()?;
            // one f32 multiply and one add per value, as the twin does them: exact, but for atol
            // 1e-37 (a GPU may flush f32 subnormals, which bf16's smallest values are)
            acc.add(&format!("{dtype:?} V={v} C={c} T={t}"), compare(&g.read_f32(&ot).await?, &want, 1e-37, 0.0));
        }
    }
    Ok(acc.finish("embedding + learned positions, 16-bit tables", "exact (atol 1e-37)", t0))
}

/// The training ops' backward kernels against cpu::backward (f64 sums): the matmul's dx (written
/// and added), dW and db; LayerNorm and RMSNorm in both row forms; the activations and SwiGLU;
/// RoPE's inverse rotation; the embedding, the position table and its gradient. Sums run in f32
/// on the GPU: atol 1e-4 + rtol 3e-4 (GELU's erf and tanh are approximations).
async fn check_train_backward(g: &Arc<Gpu>) -> Result<CheckResult> {
    const ATOL: f64 = 1e-4;
    const RTOL: f64 = 3e-4;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(77);
    for &(m, n, k) in &[(1usize, 1usize, 1usize), (7, 5, 9), (12, 33, 16), (37, 20, 44), (6, 8, 4)] {
        let (dy, x, w) = (rng.vec_normal(m * n, 1.0), rng.vec_normal(m * k, 1.0), rng.vec_normal(n * k, 1.0));
        let (mut dx, mut dw, mut db) = (rng.vec_normal(m * k, 1.0), rng.vec_normal(n * k, 1.0), rng.vec_normal(n, 1.0));
        let t = [g.upload(&[m, n], &dy, "dy")?, g.upload(&[m, k], &x, "x")?, g.upload(&[n, k], &w, "w")?];
        let o = [g.upload(&[m, k], &dx, "dx")?, g.upload(&[n, k], &dw, "dw")?, g.upload(&[n], &db, "db")?];
        let add = m % 2 == 1;
        let mut rec = Recorder::new(g);
        gpu::matmul::matmul_backward(&mut rec, Some((&o[0], add)), (&o[1], Some(&o[2])), &t[0], &t[1], &t[2], m)?;
        rec.submit()?;
        cpu::backward::matmul_backward(Some((&mut dx, add)), &mut dw, Some(&mut db), &dy, &x, &w, m, n, k);
        for (name, t, want) in [("dx", &o[0], &dx), ("dw", &o[1], &dw), ("db", &o[2], &db)] {
            acc.add(&format!("matmul_backward {m}x{n}x{k} {name}"), compare(&g.read_f32(t).await?, want, ATOL, RTOL));
        }
    }
    for &(rows, c) in &[(1usize, 7usize), (5, 129), (9, 37)] {
        for kind in [gpu::RowKind::Workgroup, gpu::RowKind::Invocation] {
            for layer in [true, false] {
                let (x, dy, gain) = (rng.vec_normal(rows * c, 2.0), rng.vec_normal(rows * c, 1.0), rng.vec_normal(c, 1.0));
                let (mut dx, mut dg, mut db) = (rng.vec_normal(rows * c, 1.0), rng.vec_normal(c, 1.0), rng.vec_normal(c, 1.0));
                let t = [g.upload(&[rows, c], &x, "x")?, g.upload(&[rows, c], &dy, "dy")?, g.upload(&[c], &gain, "g")?];
                let o = [g.upload(&[rows, c], &dx, "dx")?, g.upload(&[c], &dg, "dg")?, g.upload(&[c], &db, "db")?];
                let stats = g.zeros(&[2 * rows], "stats")?;
                let b = NormBackward { dx: &o[0], dg: &o[1], db: layer.then_some(&o[2]), dy: &t[1], x: &t[0], g: &t[2], stats: &stats };
                let mut rec = Recorder::new(g);
                gpu::norm::norm_backward(&mut rec, &b, rows, 1e-5, kind)?;
                rec.submit()?;
                if layer {
                    cpu::backward::layernorm_backward(&mut dx, &mut dg, &mut db, &dy, &x, &gain, c, 1e-5);
                } else {
                    cpu::backward::rmsnorm_backward(&mut dx, &mut dg, &dy, &x, &gain, c, 1e-5);
                }
                let name = format!("{} backward {rows}x{c} {kind:?}", if layer { "layernorm" } else { "rmsnorm" });
                for (what, t, want) in [("dx", &o[0], &dx), ("dg", &o[1], &dg), ("db", &o[2], &db)] {
                    acc.add(&format!("{name} {what}"), compare(&g.read_f32(t).await?, want, ATOL, RTOL));
                }
            }
        }
    }
    for n in [1usize, 257, 1000] {
        let (dy, h, up) = (rng.vec_normal(n, 1.0), rng.vec_normal(n, 3.0), rng.vec_normal(n, 1.0));
        let t = [g.upload(&[n], &dy, "dy")?, g.upload(&[n], &h, "h")?, g.upload(&[n], &up, "up")?];
        for op in [EwOp::Relu, EwOp::Gelu, EwOp::GeluTanh, EwOp::Silu] {
            let (o, mut want) = (g.zeros(&[n], "dx")?, vec![0f32; n]);
            let mut rec = Recorder::new(g);
            gpu::act::act_backward(&mut rec, &o, &t[0], &t[1], n, op)?;
            rec.submit()?;
            cpu::backward::act_backward(&mut want, &dy, &h, op)?;
            acc.add(&format!("act_backward {op:?} n={n}"), compare(&g.read_f32(&o).await?, &want, ATOL, RTOL));
        }
        let (o1, o2) = (g.zeros(&[n], "dgate")?, g.zeros(&[n], "dup")?);
        let (mut w1, mut w2) = (vec![0f32; n], vec![0f32; n]);
        let mut rec = Recorder::new(g);
        gpu::act::swiglu_backward(&mut rec, &o1, &o2, &t[0], &t[1], &t[2], n)?;
        rec.submit()?;
        cpu::backward::swiglu_backward(&mut w1, &mut w2, &dy, &h, &up)?;
        acc.add(&format!("swiglu_backward dgate n={n}"), compare(&g.read_f32(&o1).await?, &w1, ATOL, RTOL));
        acc.add(&format!("swiglu_backward dup n={n}"), compare(&g.read_f32(&o2).await?, &w2, ATOL, RTOL));
    }
    {
        let (t, nh, hs) = (5usize, 2usize, 8usize);
        let table = cpu::rope_table(16, hs, 10000.0);
        let mut x = rng.vec_normal(2 * t * nh * hs, 1.0);
        let s = RopeShape { t, nh, hs, start_pos: 3, row_stride: nh * hs, offset: t * nh * hs };
        let (tt, xt) = (g.upload(&[16, hs / 2, 2], &table, "table")?, g.upload(&[2 * t, nh * hs], &x, "x")?);
        let mut rec = Recorder::new(g);
        gpu::rope::rope_backward(&mut rec, &xt, &tt, &s)?;
        rec.submit()?;
        cpu::backward::rope_backward(&mut x, &table, t, nh, hs, 3, nh * hs, t * nh * hs);
        acc.add("rope_backward", compare(&g.read_f32(&xt).await?, &x, ATOL, RTOL));
    }
    {
        let (v, c, rows, period) = (7usize, 10usize, 12usize, 4usize);
        let ids: Vec<u32> = (0..rows as u32).map(|r| (r * 5 + r / 3) % 6).collect();
        let (mut table, dout, mut x) = (rng.vec_normal(v * c, 1.0), rng.vec_normal(rows * c, 1.0), rng.vec_normal(rows * c, 1.0));
        let mut pos = rng.vec_normal(period * c, 1.0);
        let (it, tt, dt) =
            (g.upload_u32(&[rows], &ids, "ids")?, g.upload(&[v, c], &table, "dtable")?, g.upload(&[rows, c], &dout, "dout")?);
        let (xt, pt) = (g.upload(&[rows, c], &x, "x")?, g.upload(&[period, c], &pos, "positions")?);
        let mut rec = Recorder::new(g);
        gpu::embed::embedding_backward(&mut rec, &tt, &dt, &it, rows, 0.5)?;
        gpu::embed::add_positions(&mut rec, &xt, &pt, rows, period)?;
        gpu::embed::positions_backward(&mut rec, &pt, &xt, rows, period)?;
        rec.submit()?;
        cpu::backward::embedding_backward(&mut table, &dout, &ids, c, 0.5)?;
        for (r, row) in x.chunks_mut(c).enumerate() {
            for (o, p) in row.iter_mut().zip(&pos[(r % period) * c..][..c]) {
                *o += p;
            }
        }
        cpu::backward::positions_backward(&mut pos, &x, c, period);
        acc.add("embedding_backward", compare(&g.read_f32(&tt).await?, &table, ATOL, RTOL));
        acc.add("add_positions", compare(&g.read_f32(&xt).await?, &x, ATOL, RTOL));
        acc.add("positions_backward", compare(&g.read_f32(&pt).await?, &pos, ATOL, RTOL));
    }
    Ok(acc.finish("training backward (matmul, norms, activations, rope, embedding, positions)", "atol 1e-4 + rtol 3e-4", t0))
}

/// The training graph's batched attention, forward and backward, against cpu::backward: causal
/// and key masks (a causal query left with no key), grouped-query heads; the backward from the
/// reference's probabilities. atol 1e-4 + rtol 3e-4 (exp in f32).
async fn check_train_attention(g: &Arc<Gpu>) -> Result<CheckResult> {
    const ATOL: f64 = 1e-4;
    const RTOL: f64 = 3e-4;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(78);
    for &(b, tq, tk, heads, causal, masked) in &[
        (2usize, 5usize, 5usize, (4usize, 2usize, 8usize), true, true),
        (1, 3, 7, (2, 1, 4), false, false),
        (3, 4, 4, (6, 3, 6), false, true),
    ] {
        let s = BatchAttn::new(b, tq, tk, heads, causal);
        let (nq, nk, np, nm) = s.sizes();
        let (q, k, v, dout) = (rng.vec_normal(nq, 1.0), rng.vec_normal(nk, 1.0), rng.vec_normal(nk, 1.0), rng.vec_normal(nq, 1.0));
        // the last sequence loses key 0: its causal query 0 sees no key
        let keys: Vec<f32> = (0..nm).map(|i| if i % tk == 0 && i / tk == b - 1 || i % 3 == 2 { 0.0 } else { 1.0 }).collect();
        let (mut out, mut probs) = (vec![0f32; nq], vec![0f32; np]);
        cpu::backward::attention_batch(&mut out, &mut probs, &q, &k, &v, masked.then_some(&keys[..]), &s)?;
        let (mut dq, mut dk, mut dv) = (vec![0f32; nq], vec![0f32; nk], vec![0f32; nk]);
        cpu::backward::attention_backward(&mut dq, &mut dk, &mut dv, &dout, &probs, &q, &k, &v, &s)?;
        let t = [g.upload(&[nq], &q, "q")?, g.upload(&[nk], &k, "k")?, g.upload(&[nk], &v, "v")?];
        let (mt, dt, pin) = (g.upload(&[nm], &keys, "keys")?, g.upload(&[nq], &dout, "dout")?, g.upload(&[np], &probs, "probs")?);
        let (ot, pt) = (g.zeros(&[nq], "out")?, g.zeros(&[np], "probs")?);
        let d = [g.zeros(&[nq], "dq")?, g.zeros(&[nk], "dk")?, g.zeros(&[nk], "dv")?];
        let dots = g.zeros(&[b * heads.0 * tq], "dots")?;
        let mut rec = Recorder::new(g);
        gpu::attention::attention_batch(&mut rec, &ot, &pt, [&t[0], &t[1], &t[2]], masked.then_some(&mt), &s)?;
        gpu::attention::attention_backward(&mut rec, [&d[0], &d[1], &d[2]], &dt, &pin, [&t[0], &t[1], &t[2]], &dots, &s)?;
        rec.submit()?;
        let name = format!("B {b} Tq {tq} Tk {tk} {heads:?} causal {causal} masked {masked}");
        acc.add(&format!("{name} out"), compare(&g.read_f32(&ot).await?, &out, ATOL, RTOL));
        acc.add(&format!("{name} probs"), compare(&g.read_f32(&pt).await?, &probs, ATOL, RTOL));
        for (what, t, want) in [("dq", &d[0], &dq), ("dk", &d[1], &dk), ("dv", &d[2], &dv)] {
            acc.add(&format!("{name} {what}"), compare(&g.read_f32(t).await?, want, ATOL, RTOL));
        }
    }
    Ok(acc.finish("training attention (batched forward and backward, masks, GQA)", "atol 1e-4 + rtol 3e-4", t0))
}

/// The fused softmax + cross-entropy (with an ignored target, a vocabulary wider than a
/// workgroup), the gradient's partial squared norms and AdamW with and without the clip, against
/// cpu::backward. atol 1e-5 + rtol 3e-4.
async fn check_train_optim(g: &Arc<Gpu>) -> Result<CheckResult> {
    const ATOL: f64 = 1e-5;
    const RTOL: f64 = 3e-4;
    let t0 = now_ms();
    let mut acc = Acc::new();
    let mut rng = Rng::new(79);
    for &(vocab, ignore) in &[(11usize, None), (300, Some(2u32))] {
        let rows = 6;
        let targets: Vec<u32> = (0..rows as u32).map(|r| (r * 7 + 2) % vocab as u32).collect();
        let mut logits = rng.vec_normal(rows * vocab, 3.0);
        let (tt, lt, ot) =
            (g.upload_u32(&[rows], &targets, "targets")?, g.upload(&[rows, vocab], &logits, "logits")?, g.zeros(&[rows], "losses")?);
        let mut rec = Recorder::new(g);
        gpu::loss::cross_entropy(&mut rec, &ot, &lt, &tt, rows, 0.25, ignore)?;
        rec.submit()?;
        let mut losses = vec![0f32; rows];
        cpu::backward::cross_entropy(&mut losses, &mut logits, &targets, vocab, 0.25, ignore)?;
        acc.add(&format!("cross_entropy V {vocab} losses"), compare(&g.read_f32(&ot).await?, &losses, ATOL, RTOL));
        acc.add(&format!("cross_entropy V {vocab} gradient"), compare(&g.read_f32(&lt).await?, &logits, ATOL, RTOL));
    }
    let sizes = [1000usize, 37, 1];
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec_normal(n, 0.5)).collect();
    // the parts, then the halt slot (0: go on) and its part
    let nt = g.zeros(&[sizes.len() + 2], "norms")?;
    let gts = grads.iter().map(|v| g.upload(&[v.len()], v, "g")).collect::<Result<Vec<_>>>()?;
    let mut rec = Recorder::new(g);
    for (i, (gt, &n)) in gts.iter().zip(&sizes).enumerate() {
        gpu::optim::sum_squares(&mut rec, &nt, i, gt, n)?;
    }
    rec.submit()?;
    let norms: Vec<f32> = grads.iter().map(|v| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>() as f32).collect();
    acc.add("sum_squares", compare(&g.read_f32(&nt).await?[..sizes.len()], &norms, ATOL, RTOL));
    for &(clip, wd, step) in &[(Some(1.0f32), 0.1f32, 1u32), (None, 0.0, 3), (Some(100.0), 0.01, 7)] {
        let a = AdamStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: wd, step, clip, parts: sizes.len() };
        for (gt, gv) in gts.iter().zip(&grads) {
            let n = gv.len();
            let (mut p, mut m) = (rng.vec_normal(n, 1.0), rng.vec_normal(n, 0.1));
            let mut v: Vec<f32> = rng.vec_normal(n, 0.1).iter().map(|x| x * x).collect();
            let (pt, mt, vt) = (g.upload(&[n], &p, "p")?, g.upload(&[n], &m, "m")?, g.upload(&[n], &v, "v")?);
            let mut rec = Recorder::new(g);
            gpu::optim::adamw(&mut rec, &pt, gt, [&mt, &vt], &nt, n, &a)?;
            rec.submit()?;
            let gpu_norms = g.read_f32(&nt).await?;
            cpu::backward::adamw(&mut p, gv, &mut m, &mut v, &gpu_norms, &a);
            let name = format!("adamw clip {clip:?} wd {wd} step {step} n {n}");
            for (what, t, want) in [("p", &pt, &p), ("m", &mt, &m), ("v", &vt, &v)] {
                acc.add(&format!("{name} {what}"), compare(&g.read_f32(t).await?, want, ATOL, RTOL));
            }
        }
    }
    // the halt guard: a part that is not finite sets the slot (step, part) once; a sum that only
    // overflows names no part (3)
    for parts in [[1.0f32, 2.0, 3.0], [1.0, f32::NAN, f32::INFINITY], [3e38, 3e38, 1.0]] {
        let mut want = vec![parts[0], parts[1], parts[2], 0.0, 0.0];
        let t = g.upload(&[5], &want, "norms")?;
        let mut rec = Recorder::new(g);
        for step in [4, 9] {
            gpu::optim::guard_finite(&mut rec, &t, 3, step)?;
            cpu::backward::guard_finite(&mut want, 3, step);
        }
        rec.submit()?;
        let got = g.read_f32(&t).await?;
        acc.add(&format!("guard_finite {parts:?}"), compare(&got[3..], &want[3..], 0.0, 0.0));
    }
    Ok(acc.finish("training loss and optimizer (cross-entropy, sum of squares, AdamW, halt guard)", "atol 1e-5 + rtol 3e-4", t0))
}

/// Runs every check. A check that cannot run (an op error, a GPU error) is reported as failed with
/// the error, so one broken kernel never hides the others.
pub async fn run_all(g: &Arc<Gpu>) -> Vec<CheckResult> {
    let mut out = Vec::new();
    macro_rules! run {
        ($name:expr, $e:expr) => {{
            let t0 = now_ms();
            match $e.await {
                Ok(r) => out.push(r),
                Err(err) => out.push(CheckResult {
                    name: $name.into(),
                    ok: false,
                    max_abs_diff: f64::NAN,
                    tolerance: String::new(),
                    detail: format!("error: {err}"),
                    ms: now_ms() - t0,
                }),
            }
        }};
    }
    run!("matmul naive", check_matmul(g, MatmulKind::Naive, "matmul naive"));
    run!("matmul tiled", check_matmul(g, MatmulKind::Tiled, "matmul tiled"));
    run!("matmul tiled4", check_matmul(g, MatmulKind::Tiled4, "matmul tiled vec4"));
    run!("matmul reg", check_matmul(g, MatmulKind::Reg, "matmul register-blocked (no barriers)"));
    run!("matmul gemv", check_matmul(g, MatmulKind::Gemv, "matmul gemv (few rows)"));
    if g.k.matmul.gemv4_sg.is_some() {
        // only where the device has subgroups (tests/gpu_kernels.rs counts it there)
        run!("matmul gemv subgroup", check_matmul(g, MatmulKind::GemvSubgroup, "matmul gemv, subgroup reduction"));
    }
    run!("gemv swiglu", check_gemv_swiglu(g, false));
    run!("gemv qkv", check_gemv_qkv(g, MatmulKind::Gemv));
    run!("attention", check_attention(g, gpu::RowKind::Workgroup, "attention"));
    run!("attention rows", check_attention(g, gpu::RowKind::Invocation, "attention, an invocation per row (no barriers)"));
    run!("elementwise", check_elementwise(g));
    run!("norms", check_norms(g));
    run!("add + norm", check_add_norm(g));
    run!("rope", check_rope(g));
    run!("embedding", check_embedding(g));
    run!("sample", check_sample(g, false));
    run!("moe router", check_moe_router(g));
    run!("moe capacity + combine", check_moe_dispatch(g));
    run!("matmul f16 weights", check_matmul16(g, gpu::DType::F16));
    run!("matmul bf16 weights", check_matmul16(g, gpu::DType::BF16));
    run!("embedding 16-bit", check_embedding16(g));
    // the decode loop's barrier-free forms for GPUs emulated on the CPU (MatmulKind::Rows; its
    // attention and add + norm are the RowKind::Invocation kernels checked above)
    run!("matmul rows", check_matmul(g, MatmulKind::Rows, "matmul rows (one invocation per output)"));
    run!("rows swiglu", check_gemv_swiglu(g, true));
    run!("rows qkv", check_gemv_qkv(g, MatmulKind::Rows));
    run!("sample greedy1", check_sample(g, true));
    // the training ops (`impl Train for GpuBackend`)
    run!("training backward", check_train_backward(g));
    run!("training attention", check_train_attention(g));
    run!("training loss + optimizer", check_train_optim(g));
    out
}
