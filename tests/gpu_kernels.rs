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
    assert_eq!(results.len(), 18, "every kernel family is checked (15 + the three 16-bit-weight checks)");
    let failed: Vec<_> = results.iter().filter(|r| !r.ok).map(|r| format!("{}: {}", r.name, r.detail)).collect();
    assert!(failed.is_empty(), "kernel checks failed:\n{}", failed.join("\n"));
}
