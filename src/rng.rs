//! Deterministic random numbers shared by the CPU and GPU paths (no `rand` dependency, same
//! stream on every platform). SplitMix64: tiny, well studied, good enough for sampling and tests.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 24 bits, exactly representable in f32.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Approximately normal (sum of uniforms), for test data.
    pub fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * 1.732_050_8
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
    pub fn vec_normal(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

/// The random number for generation step `step` of a run seeded with `seed`: both backends
/// sample with exactly this value, so a seed reproduces the same text on CPU and GPU.
pub fn step_uniform(seed: u64, step: u64) -> f32 {
    Rng::new(seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03)).uniform()
}

impl Rng {
    /// A standard normal sample (Box-Muller over two 24-bit uniforms), for parameter initialisation.
    pub fn gaussian(&mut self) -> f32 {
        let u1 = (self.uniform() as f64 + 0.5 / (1u64 << 24) as f64).min(1.0);
        let u2 = self.uniform() as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}
