// addnorm_rows.wgsl: addnorm.wgsl's contract (the same bindings and AddNormParams) with one
// invocation per row and no workgroup memory or barriers, for few-row passes (cached decoding)
// on GPUs emulated on the CPU (SwiftShader, llvmpipe), where addnorm.wgsl's two 7-step workgroup
// sums cost more than the row's C serial additions. Grid (ceil(rows / 64), 1, 1).
//   x (rows, C) the residual stream, updated in place: x = x + y;  y (rows, C)
//   out (rows, C) = norm(x), or x = norm(x + y) when in_place; layernorm with beta, else RMSNorm

struct AddNormParams {
    rows: u32,
    c: u32,
    eps: f32,
    layernorm: u32,
    in_place: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
};

@group(0) @binding(0) var<uniform> P: AddNormParams;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= P.rows) { return; }
    let base = row * P.c;
    var s = 0.0;
    for (var i = 0u; i < P.c; i = i + 1u) {
        let v = x[base + i] + y[base + i];
        x[base + i] = v;
        s = select(fma(v, v, s), s + v, P.layernorm != 0u);
    }
    var mean = 0.0;
    var inv = 0.0;
    if (P.layernorm != 0u) {
        mean = s / f32(P.c);
        var s2 = 0.0;
        for (var i = 0u; i < P.c; i = i + 1u) { let d = x[base + i] - mean; s2 = fma(d, d, s2); }
        inv = inverseSqrt(s2 / f32(P.c) + P.eps);
    } else {
        inv = inverseSqrt(s / f32(P.c) + P.eps);
    }
    for (var i = 0u; i < P.c; i = i + 1u) {
        var v = (x[base + i] - mean) * inv * gamma[i];
        if (P.layernorm != 0u) { v = v + beta[i]; }
        if (P.in_place != 0u) { x[base + i] = v; } else { out[base + i] = v; }
    }
}
