// norm_bw.wgsl: the backward of LayerNorm and RMSNorm from their input x, in two passes.
//   x, dy, dx (rows, C); gamma/weight, dg, db (C,); stats: (rows, 2) for LayerNorm (mean,
//   1/std), (rows,) for RMSNorm (1/rms), written by the first pass for the second
//   pass 1, a workgroup per row (WG and reduce_sum from rowsum.wgsl or rowsum1.wgsl):
//     `layernorm_dx`: dx += rstd (dxh - mean(dxh) - xh mean(dxh xh)), xh = (x - mean) rstd, dxh = dy g
//     `rmsnorm_dx`:   dx += r dxh - r^3 x mean(dxh x),               r = rsqrt(mean(x^2) + eps), dxh = dy w
//   pass 2, an invocation per column summing the rows in order (no atomics):
//     `layernorm_dgdb`: dg += sum dy xh, db += sum dy
//     `rmsnorm_dw`:     dw += sum dy x r     (written through the dg binding)

@group(0) @binding(0) var<uniform> P: NormParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> dg: array<f32>;
@group(0) @binding(7) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(WG, 1, 1)
fn layernorm_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = flat_group(wid, nwg);
    if (row >= P.rows) { return; } // uniform per workgroup
    let lid = lid3.x;
    let base = row * P.c;
    let cf = f32(P.c);
    var s = 0.0;
    for (var i = lid; i < P.c; i = i + WG) { s = s + x[base + i]; }
    let mean = reduce_sum(lid, s) / cf;
    var s2 = 0.0;
    for (var i = lid; i < P.c; i = i + WG) { let d = x[base + i] - mean; s2 = fma(d, d, s2); }
    let rstd = inverseSqrt(reduce_sum(lid, s2) / cf + P.eps);
    var a1 = 0.0;
    var a2 = 0.0;
    for (var i = lid; i < P.c; i = i + WG) {
        let dxh = dy[base + i] * gamma[i];
        a1 = a1 + dxh;
        a2 = fma(dxh, (x[base + i] - mean) * rstd, a2);
    }
    let m1 = reduce_sum(lid, a1) / cf;
    let m2 = reduce_sum(lid, a2) / cf;
    for (var i = lid; i < P.c; i = i + WG) {
        let xh = (x[base + i] - mean) * rstd;
        let dxh = dy[base + i] * gamma[i];
        dx[base + i] = dx[base + i] + rstd * (dxh - m1 - xh * m2);
    }
    if (lid == 0u) {
        stats[2u * row] = mean;
        stats[2u * row + 1u] = rstd;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn rmsnorm_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = flat_group(wid, nwg);
    if (row >= P.rows) { return; }
    let lid = lid3.x;
    let base = row * P.c;
    let cf = f32(P.c);
    var s = 0.0;
    for (var i = lid; i < P.c; i = i + WG) { let v = x[base + i]; s = fma(v, v, s); }
    let r = inverseSqrt(reduce_sum(lid, s) / cf + P.eps);
    var a = 0.0;
    for (var i = lid; i < P.c; i = i + WG) { a = fma(dy[base + i] * gamma[i], x[base + i], a); }
    let dot = reduce_sum(lid, a) / cf;
    let r3 = r * r * r;
    for (var i = lid; i < P.c; i = i + WG) {
        dx[base + i] = dx[base + i] + r * dy[base + i] * gamma[i] - r3 * x[base + i] * dot;
    }
    if (lid == 0u) { stats[row] = r; }
}

@compute @workgroup_size(256, 1, 1)
fn layernorm_dgdb(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= P.c) { return; }
    var ag = 0.0;
    var ab = 0.0;
    for (var r = 0u; r < P.rows; r = r + 1u) {
        let d = dy[r * P.c + i];
        ag = fma(d, (x[r * P.c + i] - stats[2u * r]) * stats[2u * r + 1u], ag);
        ab = ab + d;
    }
    dg[i] = dg[i] + ag;
    db[i] = db[i] + ab;
}

@compute @workgroup_size(256, 1, 1)
fn rmsnorm_dw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= P.c) { return; }
    var a = 0.0;
    for (var r = 0u; r < P.rows; r = r + 1u) { a = fma(dy[r * P.c + i] * x[r * P.c + i], stats[r], a); }
    dg[i] = dg[i] + a;
}
