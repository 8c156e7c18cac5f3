// optim.wgsl: the optimizer's ops.
//   entry `sum_squares`, one workgroup: norms[part] = the sum of g[..n]^2 (each thread a strided
//     partial in order, then a fixed tree), a partial of the global gradient norm
//   entry `adamw`, one thread per value: the clip factor min(1, clip / (norm + 1e-6)) from the
//     norm sqrt(sum of norms[..parts], in order), then torch.optim.AdamW: p *= decay (1 - lr wd);
//     m, v moments; p -= step_size (lr / bc1) m / (sqrt(v) inv_sqrt_bc2 + eps)
//     nothing changes when the halt slot norms[parts] is not 0
//   entry `guard_finite`, one thread: when the halt slot norms[parts] is 0 and the sum of
//     norms[..parts] (in order) is not finite, norms[parts] = step and norms[parts + 1] = the
//     first part that is not finite (parts when only the sum overflowed)
//   entry `fill_zero`, one thread per value: x[..n] = 0 (through the p binding)

@group(0) @binding(0) var<uniform> P: OptimParams;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> norms: array<f32>;
@group(0) @binding(2) var<storage, read_write> norms_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;

const SWG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn sum_squares(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    var s = 0.0;
    for (var i = lid; i < P.n; i = i + SWG) { let x = g[i]; s = fma(x, x, s); }
    red[lid] = s;
    workgroupBarrier();
    for (var w = SWG / 2u; w > 0u; w = w / 2u) {
        if (lid < w) { red[lid] = red[lid] + red[lid + w]; }
        workgroupBarrier();
    }
    if (lid == 0u) { norms_out[P.part] = red[0]; }
}

@compute @workgroup_size(256, 1, 1)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= P.n || norms[P.parts] != 0.0) { return; }
    var f = 1.0;
    if (P.has_clip != 0u) {
        var s = 0.0;
        for (var k = 0u; k < P.parts; k = k + 1u) { s = s + norms[k]; }
        f = min(1.0, P.clip / (sqrt(s) + 1e-6));
    }
    let gi = g[i] * f;
    let mi = P.beta1 * m[i] + (1.0 - P.beta1) * gi;
    let vi = P.beta2 * v[i] + (1.0 - P.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * P.decay - P.step_size * mi / (sqrt(vi) * P.inv_sqrt_bc2 + P.eps);
}

// x != x and |x| > max f32 without the literals Tint folds away or rejects
fn finite(x: f32) -> bool {
    let b = bitcast<u32>(x) & 0x7fffffffu;
    return b < 0x7f800000u;
}

@compute @workgroup_size(1, 1, 1)
fn guard_finite() {
    if (norms_out[P.parts] != 0.0) { return; }
    var s = 0.0;
    for (var k = 0u; k < P.parts; k = k + 1u) { s = s + norms_out[k]; }
    if (finite(s)) { return; }
    var first = P.parts;
    for (var k = 0u; k < P.parts; k = k + 1u) {
        if (!finite(norms_out[k])) { first = k; break; }
    }
    norms_out[P.parts] = f32(P.step);
    norms_out[P.parts + 1u] = f32(first);
}

@compute @workgroup_size(256, 1, 1)
fn fill_zero(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= P.n) { return; }
    p[i] = 0.0;
}
