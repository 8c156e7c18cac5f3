// addnorm.wgsl: the residual add fused with the norm that follows it, one workgroup per row.
//   x (rows, C) the residual stream, updated in place: x = x + y
//   y (rows, C) the sublayer's output
//   gamma/weight, beta (C,)
//   out (rows, C) = norm(x)                 (pre-norm blocks: the next sublayer's input)
//   in_place = 1: x = norm(x + y), out unused (post-norm blocks)
//   layernorm = 1: (v - mean) / sqrt(var + eps) * gamma + beta; else v * inverseSqrt(mean(v^2) + eps) * weight
// Every thread reads and writes only its own elements i = lid, lid + WG, ..., so the in-place
// forms need no barrier beyond the reductions'.
// WG and reduce_sum come from rowsum.wgsl.

@group(0) @binding(0) var<uniform> P: AddNormParams;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = flat_group(wid, nwg);
    if (row >= P.rows) { return; } // uniform per workgroup
    let lid = lid3.x;
    let base = row * P.c;
    // x = x + y, and the sum (layernorm) or the sum of squares (rmsnorm)
    var s = 0.0;
    for (var i = lid; i < P.c; i = i + WG) {
        let v = x[base + i] + y[base + i];
        x[base + i] = v;
        s = select(fma(v, v, s), s + v, P.layernorm != 0u);
    }
    var mean = 0.0;
    var inv = 0.0;
    if (P.layernorm != 0u) {
        mean = reduce_sum(lid, s) / f32(P.c);
        var s2 = 0.0;
        for (var i = lid; i < P.c; i = i + WG) { let d = x[base + i] - mean; s2 = fma(d, d, s2); }
        inv = inverseSqrt(reduce_sum(lid, s2) / f32(P.c) + P.eps);
    } else {
        inv = inverseSqrt(reduce_sum(lid, s) / f32(P.c) + P.eps);
    }
    for (var i = lid; i < P.c; i = i + WG) {
        var v = (x[base + i] - mean) * inv * gamma[i];
        if (P.layernorm != 0u) { v = v + beta[i]; }
        if (P.in_place != 0u) { x[base + i] = v; } else { out[base + i] = v; }
    }
}
