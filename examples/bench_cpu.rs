//! CPU benchmarks, as JSON (one run, ratios in the same process):
//!
//! `cargo run --release --example bench_cpu -- kernels`
//!   nn.Linear on the shipped models' shapes (M = 1 decode, M = 128 prefill): the fast backend
//!   (AVX2+FMA and portable builds), the f64 reference, and, when built with
//!   `--features compare-gemm-crates`, the `matrixmultiply` and `gemm` crates.
//! `cargo run --release --example bench_cpu -- attention`
//!   the fast attention alone on the shipped models' shapes (NH 6, NKV 6 / 2, HS 32): prefill (Tq = Tk
//!   = 128, causal) and decode (Tq = 1 over 16..128 cached keys), AVX2+FMA and portable builds, µs.
//! `cargo run --release --example bench_cpu -- models models/shakespeare-gpt.safetensors ...`
//!   per model, fast backend and reference, 1 thread: greedy decode of 64 tokens after a 16-token
//!   prompt (KV cache) and a 128-token prefill, on the ids of models/<name>.json's eval slice; the
//!   generated ids are printed so scripts/bench-peers.sh can check every engine produced the same.
//! `cargo run --release --example bench_cpu -- kernels-train [decode]`
//!   the training preset's kernels one by one (src/fastcpu/bench.rs); `BENCH_CLOCK=cpu` times them by
//!   the thread's CPU time (less sensitive to other processes on a shared machine than the wall clock).
//! `cargo run --release --example bench_cpu -- threads models/shakespeare-gpt.safetensors ...`
//!   1 vs `BENCH_THREADS` (default 2) threads of the fast backend, interleaved: the matmul split's
//!   crossover per shape, then decode and prefill-128 per model (same ids and logits checked).

use std::time::Instant;

use serde_json::{json, Value};
use tinyformer::cpu;
use tinyformer::fastcpu::{attention, matmul, simd, FastCpuBackend};
use tinyformer::model::run::GenConfig;
use tinyformer::model::{Backend, CpuBackend, Logits, Model};

/// Best of `reps` timings of `f`, in seconds, after one warm-up call.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

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

fn kernels() -> Value {
    // (K, N) of the shipped models' linears: q/o (192,192), k/v of llama (192,64), gpt FFN
    // (192,768)/(768,192), llama FFN (192,512)/(512,192), head (192,512)
    let shapes = [(192, 192), (192, 64), (192, 768), (768, 192), (192, 512), (512, 192)];
    let mut rows = vec![];
    for m in [1usize, 128] {
        for &(k, n) in &shapes {
            let x = rand_vec(m * k, 1);
            let w = rand_vec(n * k, 2);
            let b = rand_vec(n, 3);
            let mut out = vec![0f32; m * n];
            let flop = 2.0 * (m * n * k) as f64;
            let reps = ((2e8 / flop) as usize).clamp(5, 20000);
            let pk = matmul::Packed::new(&w, n, k).unwrap();
            let mut r = serde_json::Map::new();
            let gf = |secs: f64| flop / secs / 1e9;
            let t = best(reps, || matmul::matmul(&mut out, &x, &pk, Some(&b), m).unwrap());
            r.insert("fast_gflops".into(), json!(gf(t)));
            simd::force_portable(true);
            let t = best(reps, || matmul::matmul(&mut out, &x, &pk, Some(&b), m).unwrap());
            simd::force_portable(false);
            r.insert("fast_portable_gflops".into(), json!(gf(t)));
            let t = best(reps.min(50), || cpu::matmul(&mut out, &x, &w, Some(&b), m, k, n).unwrap());
            r.insert("reference_gflops".into(), json!(gf(t)));
            let t = best(reps, || {
                let _ = matmul::Packed::new(&w, n, k).unwrap();
            });
            r.insert("pack_us".into(), json!(t * 1e6));
            #[cfg(feature = "compare-gemm-crates")]
            {
                // out (M,N) = x (M,K) @ W^T: W^T is W with swapped strides; bias added after (not fused)
                let t = best(reps, || {
                    unsafe {
                        matrixmultiply::sgemm(
                            m,
                            k,
                            n,
                            1.0,
                            x.as_ptr(),
                            k as isize,
                            1,
                            w.as_ptr(),
                            1,
                            k as isize,
                            0.0,
                            out.as_mut_ptr(),
                            n as isize,
                            1,
                        );
                    }
                    for row in out.chunks_mut(n) {
                        row.iter_mut().zip(&b).for_each(|(o, b)| *o += b);
                    }
                });
                r.insert("matrixmultiply_gflops".into(), json!(gf(t)));
                let t = best(reps, || {
                    unsafe {
                        gemm::gemm(
                            m,
                            n,
                            k,
                            out.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            x.as_ptr(),
                            1,
                            k as isize,
                            w.as_ptr(),
                            k as isize,
                            1,
                            0.0f32,
                            1.0f32,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                    for row in out.chunks_mut(n) {
                        row.iter_mut().zip(&b).for_each(|(o, b)| *o += b);
                    }
                });
                r.insert("gemm_gflops".into(), json!(gf(t)));
            }
            rows.push(json!({"m": m, "k": k, "n": n, "results": r}));
        }
    }
    json!({"bench": "cpu_kernels", "isa": simd::isa(), "threads": 1, "shapes": rows})
}

fn attention_bench() -> Value {
    let mut rows = vec![];
    for nkv in [6usize, 2] {
        let (nh, hs) = (6usize, 32usize);
        for (tq, tk) in [(128usize, 128usize), (1, 16), (1, 64), (1, 128)] {
            let q = rand_vec(tq * nh * hs, 4);
            let k = rand_vec(tk * nkv * hs, 5);
            let v = rand_vec(tk * nkv * hs, 6);
            let s = tinyformer::ops::AttnShape::packed(tq, tk, nh, nkv, hs).with_causal(tk - tq);
            let (mut out, mut probs) = (vec![0f32; tq * nh * hs], vec![0f32; nh * tq * tk]);
            let reps = if tq > 1 { 200 } else { 5000 };
            let mut r = serde_json::Map::new();
            for portable in [false, true] {
                simd::force_portable(portable);
                let t = best(reps, || attention::attention(&mut out, &mut probs, &q, &k, &v, None, &s).unwrap());
                r.insert(if portable { "portable_us" } else { "fast_us" }.into(), json!(t * 1e6));
            }
            simd::force_portable(false);
            rows.push(json!({"nh": nh, "nkv": nkv, "hs": hs, "tq": tq, "tk": tk, "results": r}));
        }
    }
    json!({"bench": "cpu_attention", "isa": simd::isa(), "threads": 1, "shapes": rows})
}

fn sidecar_ids(path: &str) -> Vec<u32> {
    let side = path.replace(".safetensors", ".json");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&side).unwrap_or_else(|e| panic!("{side}: {e}"))).unwrap();
    j["eval_slice"]["ids"].as_array().expect("eval_slice.ids").iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// decode: 64 new tokens after a 16-token prompt, greedy, KV cache, tok/s = 64 / (whole generate);
/// prefill: one 128-token pass from an empty cache (last-row logits), in ms. Best of `reps`.
fn model_bench<B: Backend>(b: &mut B, bytes: &[u8], ids: &[u32], reps: usize) -> Value {
    let mut m = Model::load(b, bytes).unwrap();
    let prompt = &ids[..16];
    let cfg = GenConfig { max_new_tokens: 64, ..GenConfig::default() };
    let mut out = vec![];
    let gen = best(reps, || out = pollster::block_on(m.generate(b, prompt, None, cfg.clone())).unwrap());
    let pre = &ids[..128];
    m.plan_pass(b, None, pre.len(), &tinyformer::model::state::MapLayers::None).unwrap();
    let prefill = best(reps, || {
        m.run_lm(b, pre, 0, Logits::Last).unwrap();
        b.submit().unwrap();
    });
    let next = pollster::block_on(b.read_f32(&m.state.logits, 0, m.in_vocab())).unwrap();
    json!({
        "decode_tokens_per_second": 64.0 / gen,
        "prefill_128_ms": prefill * 1e3,
        "ids": out[16..],
        "prefill_argmax": cpu::argmax(&next),
    })
}

fn models(paths: &[String]) -> Value {
    let reps: usize = std::env::var("BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut res = serde_json::Map::new();
    for p in paths {
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        let ids = sidecar_ids(p);
        let name = std::path::Path::new(p).file_stem().unwrap().to_string_lossy().to_string();
        let fast = model_bench(&mut FastCpuBackend::default(), &bytes, &ids, reps);
        let reference = model_bench(&mut CpuBackend, &bytes, &ids, reps.min(2));
        res.insert(name, json!({"fast_cpu": fast, "reference_cpu": reference}));
    }
    json!({"bench": "cpu_models", "isa": simd::isa(), "threads": 1, "prompt_tokens": 16, "new_tokens": 64, "prefill_tokens": 128, "models": res})
}

/// 1 thread vs `BENCH_THREADS` (default 2) of the fast backend, interleaved within each repetition (so
/// the load of a shared machine falls on both alike), best of `BENCH_REPS` (default 9):
/// - `kernels`: the crossover of the matmul split on the models' shapes, M = 1 (GEMV, split over
///   panels) and M = 2..128 (GEMM, split over rows), forced split vs one thread; `matmul_on` is what
///   the backend runs (split above matmul::PAR_MIN_FLOP);
/// - per model: decode (64 tokens after 16) and prefill-128 as in `models`, with the same ids checked.
fn threads(paths: &[String]) -> Value {
    let reps: usize = std::env::var("BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(9);
    let nt: usize = std::env::var("BENCH_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let many = matmul::Threads::new(nt).unwrap();
    let shapes = [(192, 192), (192, 64), (192, 768), (768, 192), (192, 512), (512, 192)];
    let mut rows = vec![];
    for m in [1usize, 2, 6, 12, 24, 48, 128] {
        for &(k, n) in &shapes {
            let (x, w, b) = (rand_vec(m * k, 1), rand_vec(n * k, 2), rand_vec(n, 3));
            let pk = matmul::Packed::new(&w, n, k).unwrap();
            let mut out = vec![0f32; m * n];
            let flop = 2.0 * (m * n * k) as f64;
            let inner = ((2e7 / flop) as usize).clamp(1, 2000);
            let mut run = |t: &matmul::Threads, tasks: usize| {
                let s = Instant::now();
                for _ in 0..inner {
                    matmul::matmul_split(t, &mut out, &x, &pk, Some(&b), m, tasks).unwrap();
                }
                s.elapsed().as_secs_f64() / inner as f64
            };
            let (mut one, mut split) = (f64::INFINITY, f64::INFINITY);
            run(&many, nt);
            for _ in 0..reps {
                one = one.min(run(&matmul::Threads::ONE, 1));
                split = split.min(run(&many, nt));
            }
            rows.push(json!({"m": m, "k": k, "n": n, "mflop": flop / 1e6, "one_us": one * 1e6, "split_us": split * 1e6,
                "speedup": one / split, "backend_splits": matmul::tasks_for(&many, m, n, k) > 1}));
        }
    }
    let mut res = serde_json::Map::new();
    for p in paths {
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        let ids = sidecar_ids(p);
        let name = std::path::Path::new(p).file_stem().unwrap().to_string_lossy().to_string();
        let mut b1 = FastCpuBackend::default();
        let mut bn = FastCpuBackend { threads: many.clone() };
        let mut m1 = Model::load(&b1, &bytes).unwrap();
        let mut mn = Model::load(&bn, &bytes).unwrap();
        let prompt = &ids[..16];
        let cfg = GenConfig { max_new_tokens: 64, ..GenConfig::default() };
        let pre = &ids[..128];
        let mut t = [[f64::INFINITY; 2]; 2]; // [decode, prefill][one, many]
        let mut outs: [Vec<u32>; 2] = Default::default();
        let mut logits: [Vec<f32>; 2] = Default::default();
        for rep in 0..=reps {
            for (v, (b, m)) in [(&mut b1, &mut m1), (&mut bn, &mut mn)].into_iter().enumerate() {
                let s = Instant::now();
                outs[v] = pollster::block_on(m.generate(b, prompt, None, cfg.clone())).unwrap();
                let gen = s.elapsed().as_secs_f64();
                m.plan_pass(b, None, pre.len(), &tinyformer::model::state::MapLayers::None).unwrap();
                let s = Instant::now();
                m.run_lm(b, pre, 0, Logits::Last).unwrap();
                b.submit().unwrap();
                let prefill = s.elapsed().as_secs_f64();
                logits[v] = pollster::block_on(b.read_f32(&m.state.logits, 0, m.in_vocab())).unwrap();
                if rep > 0 {
                    // rep 0 warms up
                    t[0][v] = t[0][v].min(gen);
                    t[1][v] = t[1][v].min(prefill);
                }
            }
        }
        let same_ids = outs[0] == outs[1];
        let same_logits = logits[0].iter().zip(&logits[1]).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same_ids && same_logits, "{name}: {nt} threads gave other ids or logits than one");
        res.insert(
            name,
            json!({
                "decode_tokens_per_second": {"1": 64.0 / t[0][0], nt.to_string(): 64.0 / t[0][1], "ratio": t[0][0] / t[0][1]},
                "prefill_128_ms": {"1": t[1][0] * 1e3, nt.to_string(): t[1][1] * 1e3, "ratio": t[1][0] / t[1][1]},
                "same_ids": same_ids, "same_logits_bits": same_logits,
            }),
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({"bench": "cpu_threads", "isa": simd::isa(), "threads": nt, "reps": reps, "par_min_flop": matmul::PAR_MIN_FLOP,
        "loadavg": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "), "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernels": rows, "models": res})
}

/// The training preset's kernels one by one (src/fastcpu/bench.rs), the same code the wasm export
/// `fastcpu_kernel_bench` runs in the page's builds; `decode`: GPT-2 small's GEMVs as well.
/// `BENCH_CLOCK=cpu`: the thread's CPU time (Linux's CLOCK_THREAD_CPUTIME_ID) instead of the wall
/// clock, so that time the scheduler gave to other processes on a shared machine is not counted
/// (their effect on the caches still is).
fn kernels_train(decode: bool) -> serde_json::Value {
    let cpu = std::env::var("BENCH_CLOCK").is_ok_and(|c| c == "cpu") && thread_cpu_ms().is_some();
    let t0 = std::time::Instant::now();
    let now = || if cpu { thread_cpu_ms().unwrap_or(0.0) } else { t0.elapsed().as_secs_f64() * 1e3 };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    serde_json::json!({"isa": tinyformer::fastcpu::simd::isa(), "clock": if cpu { "thread cpu time" } else { "wall" },
        "loadavg": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "kernels": tinyformer::fastcpu::bench::kernel_bench(&now, 30.0, decode)})
}

/// This thread's CPU time in milliseconds (None where the clock is missing).
#[cfg(target_os = "linux")]
fn thread_cpu_ms() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (two 64-bit fields on 64-bit Linux) to ts
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0 && cfg!(target_pointer_width = "64")).then(|| ts.sec as f64 * 1e3 + ts.nsec as f64 / 1e6)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_ms() -> Option<f64> {
    None
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let v = match args.first().map(|s| s.as_str()) {
        Some("kernels") => kernels(),
        Some("models") => models(&args[1..]),
        Some("attention") => attention_bench(),
        Some("threads") => threads(&args[1..]),
        Some("kernels-train") => kernels_train(args.get(1).map(|s| s == "decode").unwrap_or(false)),
        _ => {
            eprintln!("usage: bench_cpu kernels | kernels-train [decode] | attention | models FILE.safetensors... | threads [FILE.safetensors...]");
            std::process::exit(2);
        }
    };
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
}
