// matmul_bw.wgsl: the backward of out = x @ W^T + b over M rows, W (N, K), one invocation per
// output value, each summing in a fixed order (no atomics), launched as 1-D grids of 256:
//   entry `dx`: dx[r, c] = sum over j of dy[r, j] W[j, c], added to dx when P.acc     dx (M, K)
//   entry `dw`: dw[j, c] += sum over r of dy[r, j] x[r, c]                             dw (N, K)
//   entry `db`: db[j] += sum over r of dy[r, j]                                         db (N,)

@group(0) @binding(0) var<uniform> P: MatmulBwParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= P.m * P.k) { return; }
    let r = idx / P.k;
    let c = idx % P.k;
    var s = 0.0;
    for (var j = 0u; j < P.n; j = j + 1u) { s = fma(dy[r * P.n + j], w[j * P.k + c], s); }
    if (P.acc != 0u) { s = out[idx] + s; }
    out[idx] = s;
}

@compute @workgroup_size(256, 1, 1)
fn dw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= P.n * P.k) { return; }
    let j = idx / P.k;
    let c = idx % P.k;
    var s = 0.0;
    for (var r = 0u; r < P.m; r = r + 1u) { s = fma(dy[r * P.n + j], x[r * P.k + c], s); }
    out[idx] = out[idx] + s;
}

@compute @workgroup_size(256, 1, 1)
fn db(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = flat_group(wid, nwg) * 256u + lid.x;
    if (j >= P.n) { return; }
    var s = 0.0;
    for (var r = 0u; r < P.m; r = r + 1u) { s = s + dy[r * P.n + j]; }
    out[j] = out[j] + s;
}
