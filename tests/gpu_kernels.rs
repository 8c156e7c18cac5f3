//! Every WGSL kernel against its CPU twin on the native GPU (Mesa llvmpipe in CI).
//! No adapter is a FAILURE, not a skip: CI installs mesa-vulkan-drivers so there always is one.

use tinyformer::gpu::Gpu;
use tinyformer::selftest;

#[test]
fn every_kernel_matches_its_cpu_twin() {
    let gpu = std::sync::Arc::new(pollster::block_on(Gpu::new()).unwrap_or_else(|e| {
        panic!("GPU initialisation failed: {e}. If no adapter was found, install Mesa's Vulkan drivers (apt-get install mesa-vulkan-drivers); scripts/setup.sh does.")
    }));
    println!("adapter: {} ({}, {})", gpu.summary.name, gpu.summary.backend, gpu.summary.device_type);
    let results = pollster::block_on(selftest::run_all(&gpu));
    for r in &results {
        println!(
            "{:<52} {:<4} max|diff| {:<10.3e} {:>8.1} ms  [{}]  {}",
            r.name,
            if r.ok { "ok" } else { "FAIL" },
            r.max_abs_diff,
            r.ms,
            r.tolerance,
            r.detail
        );
    }
    // the subgroup GEMV where the device has subgroups (llvmpipe does: the check runs in CI)
    let subgroups = gpu.k.matmul.gemv4_sg.is_some();
    println!("subgroups: {subgroups}");
    assert_eq!(
        results.len(),
        27 + subgroups as usize,
        "every kernel family is checked (15 + the barrier-free matmul and attention + the three 16-bit-weight checks + the four barrier-free decode forms (matmul, SwiGLU, q/k/v, greedy sampling) + the three training checks + the subgroup GEMV where there are subgroups)"
    );
    let failed: Vec<_> = results.iter().filter(|r| !r.ok).map(|r| format!("{}: {}", r.name, r.detail)).collect();
    assert!(failed.is_empty(), "kernel checks failed:\n{}", failed.join("\n"));
}

/// Cached decoding on the fixtures, one token per pass at positions 0.. (the decode loop's shape:
/// RoPE at later positions, k and v written at a cache offset): the GPU's logits with the q/k/v
/// GEMV's epilogue (biases, RoPE) on and off, and with the subgroup GEMV (where the device has
/// subgroups), against the reference CPU backend's, within
/// LOGIT_ATOL + LOGIT_RTOL * |cpu| (f32 sums in another order; the fixtures are tiny), and the
/// dispatches inside the layer loop: 7 a layer for the llama and the decoder with the epilogue
/// (the goal: at most 8), 9 without it.
#[test]
fn decode_loop_dispatches_and_logits() {
    use tinyformer::model::state::MapLayers;
    use tinyformer::model::{Backend, CpuBackend, GpuBackend, Logits, Model};
    const LOGIT_ATOL: f32 = 1e-4;
    const LOGIT_RTOL: f32 = 1e-4;
    let gpu = std::sync::Arc::new(pollster::block_on(Gpu::new()).expect("GPU initialisation failed (install mesa-vulkan-drivers)"));
    let tokens = [3u32, 1, 4, 1, 5, 9, 2];
    fn decode<B: Backend>(b: &mut B, bytes: &[u8], tokens: &[u32]) -> (Vec<Vec<f32>>, usize) {
        let mut m = Model::load(b, bytes).unwrap();
        m.plan_pass(b, None, tokens.len(), &MapLayers::None).unwrap();
        let v = m.in_vocab();
        let mut out = vec![];
        for (pos, &id) in tokens.iter().enumerate() {
            m.run_lm(b, &[id], pos, Logits::Last).unwrap();
            b.submit().unwrap();
            out.push(pollster::block_on(b.read_f32(&m.state.logits, 0, v)).unwrap());
        }
        (out, m.cfg.num_layers)
    }
    // (fixture, in-loop dispatches a layer with the epilogue, without; None: not asserted)
    for (name, with, without) in [
        ("llama_gqa", Some(7.0), Some(9.0)),
        ("llama_mqa", Some(7.0), Some(9.0)),
        ("decoder_a", Some(7.0), Some(9.0)),
        ("decoder_a_bf16", Some(7.0), Some(9.0)),
        ("moe_a", None, None),
    ] {
        let bytes = std::fs::read(format!("tests/fixtures/models/{name}.safetensors")).unwrap();
        let (want, _) = decode(&mut CpuBackend, &bytes, &tokens);
        // (the q/k/v epilogue, the subgroup GEMV where the device has subgroups, the barrier-free
        // one-row forms of every op with 16-bit weights widened to f32; the others keep a 16-bit
        // fixture 16-bit, whatever the device's default)
        for (epilogue, subgroups, rows) in [(true, false, false), (false, false, false), (true, true, false), (true, false, true)] {
            let mut b = GpuBackend::new(gpu.clone());
            (b.qkv_epilogue, b.subgroups, b.widen16) = (epilogue, subgroups, rows);
            b.small_matmul_kind = if rows { tinyformer::gpu::matmul::MatmulKind::Rows } else { tinyformer::gpu::matmul::MatmulKind::Gemv };
            let (got, layers) = decode(&mut b, &bytes, &tokens);
            for (pos, (g, w)) in got.iter().zip(&want).enumerate() {
                for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                    let d = (g - w).abs();
                    let what = format!("{name} epilogue={epilogue} subgroups={subgroups} rows={rows} pos {pos} logit {i}");
                    assert!(d <= LOGIT_ATOL + LOGIT_RTOL * w.abs(), "{what}: GPU {g}, CPU {w}");
                }
            }
            let per_layer = b.layer_dispatches as f64 / tokens.len() as f64 / layers as f64;
            println!("{name} epilogue={epilogue} subgroups={subgroups} rows={rows}: {per_layer} dispatches a layer inside the loop");
            if let Some(expect) = if epilogue { with } else { without } {
                assert_eq!(per_layer, expect, "{name} epilogue={epilogue}: dispatches a layer inside the decode loop");
            }
        }
    }
}
