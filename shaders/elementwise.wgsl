// elementwise.wgsl: the feed-forward pieces and the residual add, one thread per element.
//   op 0 relu(a), 1 gelu(a) (exact erf form), 2 silu(a), 3 silu(a) * b (SwiGLU), 4 a + b, 5 a * b
//   entry `binary`:  out = op(a, b)        a, b, out (N,)
//   entry `inplace`: out = op(out, b)      the residual add x += y, in-place activations

struct EwParams {
    n: u32,
    op: u32,
    _p0: u32,
    _p1: u32,
};

@group(0) @binding(0) var<uniform> P: EwParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

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

fn apply(op: u32, x: f32, y: f32) -> f32 {
    switch op {
        case 0u: { return max(x, 0.0); }
        case 1u: { return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752)); }
        case 2u: { return x / (1.0 + exp(-x)); }
        case 3u: { return x / (1.0 + exp(-x)) * y; }
        case 4u: { return x + y; }
        default: { return x * y; }
    }
}

@compute @workgroup_size(256, 1, 1)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= P.n) { return; }
    var y = 0.0;
    if (P.op >= 3u) { y = b[i]; }
    out[i] = apply(P.op, a[i], y);
}

@compute @workgroup_size(256, 1, 1)
fn inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= P.n) { return; }
    var y = 0.0;
    if (P.op >= 3u) { y = b[i]; }
    out[i] = apply(P.op, out[i], y);
}
