// norm.wgsl: LayerNorm and RMSNorm over the last dimension, one workgroup per row.
//   x, out (rows, C); gamma/weight, beta (C,)
//   layernorm: (x - mean) / sqrt(var + eps) * gamma + beta   (biased variance, two passes)
//   rmsnorm:   x * inverseSqrt(mean(x^2) + eps) * weight
// WG and reduce_sum come from rowsum.wgsl.

@group(0) @binding(0) var<uniform> P: NormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG, 1, 1)
fn layernorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = flat_group(wid, nwg);
    if (row >= P.rows) { return; } // uniform per workgroup
    let lid = lid3.x;
    let base = row * P.c;
    var s = 0.0;
    for (var i = lid; i < P.c; i = i + WG) { s = s + x[base + i]; }
    let mean = reduce_sum(lid, s) / f32(P.c);
    var s2 = 0.0;
    for (var i = lid; i < P.c; i = i + WG) { let d = x[base + i] - mean; s2 = fma(d, d, s2); }
    let inv = inverseSqrt(reduce_sum(lid, s2) / f32(P.c) + P.eps);
    for (var i = lid; i < P.c; i = i + WG) {
        out[base + i] = (x[base + i] - mean) * inv * gamma[i] + beta[i];
    }
}

@compute @workgroup_size(WG, 1, 1)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = flat_group(wid, nwg);
    if (row >= P.rows) { return; }
    let lid = lid3.x;
    let base = row * P.c;
    var s = 0.0;
    for (var i = lid; i < P.c; i = i + WG) { let v = x[base + i]; s = fma(v, v, s); }
    let inv = inverseSqrt(reduce_sum(lid, s) / f32(P.c) + P.eps);
    for (var i = lid; i < P.c; i = i + WG) {
        out[base + i] = x[base + i] * inv * gamma[i];
    }
}
