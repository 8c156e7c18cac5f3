// common.wgsl: prepended to every kernel source by src/gpu/wgsl.rs.
// Conventions: all tensors are row-major f32 (or u32 ids) in storage buffers; binding 0 of every
// kernel is its uniform params struct (bound with a dynamic offset into one shared arena), whose
// WGSL `struct` is written from its Rust declaration (params! in src/gpu/wgsl.rs) after this file.
// Large 1-D launches are folded into a 2-D grid of at most 65535 workgroups per dimension, and
// kernels recover the flat workgroup index with flat_group().

const NEG_BIG: f32 = -3.0e38;

fn flat_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// erf with |error| < 1.2e-7 (Numerical Recipes erfc, Chebyshev fit), since WGSL has no erf.
fn erf_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
            t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
            t * (-0.82215223 + t * 0.17087277)))))))));
    let e = 1.0 - r;
    return select(-e, e, x >= 0.0);
}

// GELU, tanh approximation (GPT-2's gelu_new): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// u is clamped first: tanh of a huge argument may overflow inside some implementations (tanh(10) = 1 in f32).
fn gelu_tanh(x: f32) -> f32 {
    let u = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -10.0, 10.0);
    return 0.5 * x * (1.0 + tanh(u));
}

// Matmul epilogue activations (MatmulParams.act): 0 none, 1 ReLU, 2 GELU (exact erf form), 3 GELU-tanh.
fn epilogue_act(v: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return max(v, 0.0); }
        case 2u: { return 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752)); }
        case 3u: { return gelu_tanh(v); }
        default: { return v; }
    }
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}
