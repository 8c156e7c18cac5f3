//! The fast CPU backend on several threads (`--threads`, src/fastcpu/matmul.rs `mod threads`):
//! - the split matmul gives the same bits as one thread (every output is computed by the same
//!   instructions in the same order), for the GEMM row split and the GEMV panel split, in the AVX2
//!   and the portable builds, with and without bias, on shapes whose rows and columns do not divide
//!   evenly into tiles, panels or tasks;
//! - the split matmul against the f64 reference twin (crate::cpu::matmul), within the tolerance below;
//! - the shipped models on 2 and 3 threads: the same logits, attention maps and greedy ids, bit for bit,
//!   as on one thread (so the fast backend's comparison with the reference, tests/fastcpu_models.rs,
//!   holds for them too);
//! - the thread count's bounds, as one-line errors.

use tinyformer::cpu;
use tinyformer::fastcpu::matmul::{self, Packed, Threads};
use tinyformer::fastcpu::{simd, FastCpuBackend};
use tinyformer::model::run::GenConfig;
use tinyformer::model::Model;

// f32 (fused multiply-adds over K <= 768) vs f64 accumulation, inputs in [-0.5, 0.5):
// within 1e-5 + 1e-5 * |reference|.
const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-5;

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// (M, K, N): GEMV and GEMM, M not a multiple of the tile heights or of the 12-row blocks, N not a
/// multiple of the 16-column panels, and the models' own shapes.
const SHAPES: [(usize, usize, usize); 9] =
    [(1, 192, 768), (1, 768, 192), (1, 37, 70), (2, 64, 33), (7, 50, 17), (25, 192, 100), (128, 192, 192), (128, 768, 192), (131, 96, 515)];

#[test]
fn the_split_matmul_gives_the_same_bits_as_one_thread() {
    let pools = [Threads::new(2).unwrap(), Threads::new(3).unwrap()];
    assert_eq!(pools.iter().map(Threads::count).collect::<Vec<_>>(), vec![2, 3]);
    let mut checked = 0;
    for portable in [false, true] {
        simd::force_portable(portable);
        for &(m, k, n) in &SHAPES {
            let (x, w, b) = (rand_vec(m * k, 1 + m as u64), rand_vec(n * k, 2 + n as u64), rand_vec(n, 3));
            let pk = Packed::new(&w, n, k).unwrap();
            for bias in [None, Some(&b[..])] {
                let mut one = vec![0f32; m * n];
                matmul::matmul(&mut one, &x, &pk, bias, m).unwrap();
                for t in &pools {
                    for tasks in [2, 3, 5] {
                        let mut got = vec![f32::NAN; m * n];
                        matmul::matmul_split(t, &mut got, &x, &pk, bias, m, tasks).unwrap();
                        assert!(
                            bits(&got) == bits(&one),
                            "({m}, {k}, {n}) on {t:?} in {tasks} parts (portable: {portable}): not the same bits"
                        );
                        checked += 1;
                    }
                    let mut got = vec![f32::NAN; m * n];
                    matmul::matmul_on(t, &mut got, &x, &pk, bias, m).unwrap();
                    assert!(bits(&got) == bits(&one), "({m}, {k}, {n}) matmul_on {t:?} (portable: {portable})");
                }
            }
        }
    }
    simd::force_portable(false);
    assert_eq!(checked, 2 * SHAPES.len() * 2 * 2 * 3);
}

#[test]
fn the_split_matmul_matches_the_reference() {
    let t = Threads::new(2).unwrap();
    for &(m, k, n) in &SHAPES {
        let (x, w, b) = (rand_vec(m * k, 4), rand_vec(n * k, 5), rand_vec(n, 6));
        let pk = Packed::new(&w, n, k).unwrap();
        let mut got = vec![f32::NAN; m * n];
        matmul::matmul_split(&t, &mut got, &x, &pk, Some(&b), m, 2).unwrap();
        let mut want = vec![0f32; m * n];
        cpu::matmul(&mut want, &x, &w, Some(&b), m, k, n).unwrap();
        for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
            assert!((g - r).abs() <= ATOL + RTOL * r.abs(), "({m}, {k}, {n})[{i}]: split {g}, reference {r}");
        }
    }
}

/// The backend splits what is worth splitting: the prefill's products on the shipped models' shapes,
/// not the decode's (so the model test below runs the split path, and decode stays on one thread).
#[test]
fn the_backend_splits_prefill_products_only() {
    let t = Threads::new(2).unwrap();
    let mut split = 0;
    for (k, n) in [(192, 192), (192, 64), (192, 768), (768, 192), (192, 512), (512, 192)] {
        let want = if 2 * 128 * n * k >= matmul::PAR_MIN_FLOP { 2 } else { 1 };
        assert_eq!(matmul::tasks_for(&t, 128, n, k), want, "prefill-128 ({k}, {n})");
        split += (want == 2) as usize;
        assert_eq!(matmul::tasks_for(&t, 1, n, k), 1, "decode ({k}, {n}) is split");
        assert_eq!(matmul::tasks_for(&Threads::ONE, 128, n, k), 1);
    }
    // the C x C and FFN products of both models at least
    assert!(split >= 5, "only {split} of the prefill shapes are split");
}

#[test]
fn the_shipped_models_give_the_same_bits_on_several_threads() {
    for name in ["shakespeare-gpt", "shakespeare-llama"] {
        let bytes = std::fs::read(format!("models/{name}.safetensors")).unwrap();
        let mut one = FastCpuBackend::default();
        let mut m1 = Model::load(&one, &bytes).unwrap();
        let v = m1.in_vocab() as u32;
        let ids: Vec<u32> = (0..128u32).map(|i| 3 + (i * 37 + 11) % (v - 3)).collect();
        let want = pollster::block_on(m1.forward(&mut one, &ids, None)).unwrap();
        let cfg = GenConfig { max_new_tokens: 24, ..GenConfig::default() };
        let want_ids = pollster::block_on(m1.generate(&mut one, &ids[..16], None, cfg.clone())).unwrap();
        for n in [2, 3] {
            let mut many = FastCpuBackend { threads: Threads::new(n).unwrap() };
            let mut mn = Model::load(&many, &bytes).unwrap();
            let got = pollster::block_on(mn.forward(&mut many, &ids, None)).unwrap();
            assert!(bits(&got.logits) == bits(&want.logits), "{name} on {n} threads: other logits");
            assert_eq!(got.attention.len(), want.attention.len());
            for (g, w) in got.attention.iter().zip(&want.attention) {
                assert!(bits(&g.data) == bits(&w.data), "{name} on {n} threads: other attention (layer {})", g.layer);
            }
            let got_ids = pollster::block_on(mn.generate(&mut many, &ids[..16], None, cfg.clone())).unwrap();
            assert_eq!(got_ids, want_ids, "{name} on {n} threads: other greedy ids");
        }
    }
}

#[test]
fn thread_counts_out_of_bounds_are_one_line_errors() {
    for n in [0, matmul::MAX_THREADS + 1, usize::MAX] {
        let e = Threads::new(n).unwrap_err().to_string();
        assert_eq!(e, format!("the thread count must be between 1 and {}, got {n}", matmul::MAX_THREADS));
    }
    assert_eq!(Threads::new(1).unwrap().count(), 1);
    assert_eq!(Threads::new(matmul::MAX_THREADS).unwrap().count(), matmul::MAX_THREADS);
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tinyformer")).args(args).output().expect("run tinyformer");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// `--threads N`: the same JSON as one thread (a 128-token forward, split); bad counts and a backend
/// other than cpu give one line and exit 2.
#[test]
fn the_cli_threads_flag() {
    let m = "models/shakespeare-llama.safetensors";
    let ids: Vec<String> = (0..128u32).map(|i| (3 + (i * 37 + 11) % 60).to_string()).collect();
    let ids = ids.join(",");
    let base = ["forward", "--model", m, "--ids", &ids, "--backend", "cpu"];
    let (c1, one, e1) = cli(&base);
    assert_eq!(c1, 0, "{e1}");
    let (c2, two, e2) = cli(&[&base[..], &["--threads", "2"]].concat());
    assert_eq!(c2, 0, "{e2}");
    let (v1, v2): (serde_json::Value, serde_json::Value) = (serde_json::from_str(&one).unwrap(), serde_json::from_str(&two).unwrap());
    assert!(v1["logits"].as_array().is_some_and(|l| !l.is_empty()));
    assert_eq!(v1, v2, "--threads 2 changed the forward pass");
    let cases: &[(&[&str], &str)] = &[
        (&["--threads", "0"], "1..=64"),
        (&["--threads", "65"], "1..=64"),
        (&["--threads", "two"], "1..=64"),
        (&["--threads", "2", "--backend", "reference"], "--backend cpu"),
    ];
    for (extra, needle) in cases {
        let args = [&["forward", "--model", m, "--ids", "3,4"][..], extra].concat();
        let (code, out, err) = cli(&args);
        assert_eq!(code, 2, "{args:?}: exit {code}, stdout {out}, stderr {err}");
        assert!(err.contains(needle), "{args:?}: stderr {err:?} lacks {needle:?}");
        assert!(!err.contains("panicked") && err.trim().lines().count() == 1, "{args:?}: {err}");
    }
}
