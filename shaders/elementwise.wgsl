// elementwise.wgsl: the feed-forward pieces and the residual add, one thread per element.
//   op 0 relu(a), 1 gelu(a) (exact erf form), 2 silu(a), 3 silu(a) * b (SwiGLU), 4 a + b, 5 a * b,
//   6 gelu_tanh(a) (GPT-2's gelu_new, in common.wgsl); ops 3..=5 read b
//   entry `binary`:  out = op(a, b)        a, b, out (N,)
//   entry `inplace`: out = op(out, b)      the residual add x += y, in-place activations

@group(0) @binding(0) var<uniform> P: EwParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// erf_approx is in common.wgsl (the matmul epilogues use it too).

fn apply(op: u32, x: f32, y: f32) -> f32 {
    switch op {
        case 0u: { return max(x, 0.0); }
        case 1u: { return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752)); }
        case 2u: { return x / (1.0 + exp(-x)); }
        case 3u: { return x / (1.0 + exp(-x)) * y; }
        case 4u: { return x + y; }
        case 6u: { return gelu_tanh(x); }
        default: { return x * y; }
    }
}

@compute @workgroup_size(256, 1, 1)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= P.n) { return; }
    var y = 0.0;
    if (P.op >= 3u && P.op <= 5u) { y = b[i]; }
    out[i] = apply(P.op, a[i], y);
}

@compute @workgroup_size(256, 1, 1)
fn inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= P.n) { return; }
    var y = 0.0;
    if (P.op >= 3u && P.op <= 5u) { y = b[i]; }
    out[i] = apply(P.op, out[i], y);
}
