// matmul_bw.wgsl: the backward of out = x @ W^T + b over M rows, W (N, K). No atomics and no
// barriers: every output value is one invocation's sum over j (dx) or over the rows r (dW, db),
// taken in increasing order with fma, so a run repeats bit for bit (and the sums are those of one
// invocation per value).
//   entries `dx4`, `dx`: dx[r, c] = sum over j of dy[r, j] W[j, c], added to dx when P.acc     dx (M, K)
//   entries `dw4`, `dw`: dw[j, c] += sum over r of dy[r, j] x[r, c]                             dw (N, K)
//   entry `db`: db[j] += sum over r of dy[r, j]                                                  db (N,)
// dx and dW are register-blocked as the forward's `reg4` (shaders/matmul.wgsl), straight from
// memory: the caches do the work of shared tiles and CPU-emulated GPUs pay no barriers. Both are
// launched as (ceil(cols / 32), ceil(rows / 32)) workgroups, x along the output's columns (K).
//   `dx4` (K % 4 == 0) and `dw4` (K and N % 4 == 0): 8x8 blocks, workgroups of 4x4; per step of
//     the sum 16 values loaded for 64 FMAs (an emulated GPU pays for every value loaded)
//   `dx`, `dw` (any shape): 4x4 blocks of scalar loads, workgroups of 8x8
// Rows and columns past the edge read the last valid one (no bounds check in the loop) and are not
// stored. `db` is one invocation per value, launched as a 1-D grid of 256.

@group(0) @binding(0) var<uniform> P: MatmulBwParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> dy4: array<vec4<f32>>; // (M, N/4)
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;  // (M, K/4)
@group(0) @binding(3) var<storage, read> w4: array<vec4<f32>>;  // (N, K/4)

// One row of a 4x4 block: the columns c0.. inside `cols`, added to what is there when `acc`.
fn bw_store(r: u32, rows: u32, c0: u32, cols: u32, v: vec4<f32>, acc: bool) {
    if (r >= rows) { return; }
    for (var j = 0u; j < 4u; j = j + 1u) {
        let c = c0 + j;
        if (c >= cols) { return; }
        let idx = r * cols + c;
        var o = v[j];
        if (acc) { o = out[idx] + o; }
        out[idx] = o;
    }
}

// One row of an 8x8 block (two vec4 halves): the columns c0.. inside `cols`.
fn bw_store8(r: u32, rows: u32, c0: u32, cols: u32, lo: vec4<f32>, hi: vec4<f32>, acc: bool) {
    bw_store(r, rows, c0, cols, lo, acc);
    bw_store(r, rows, c0 + 4u, cols, hi, acc);
}

@compute @workgroup_size(4, 4, 1)
fn dx4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 8u;
    let r0 = gid.y * 8u;
    if (r0 >= P.m || c0 >= P.k) { return; }
    let k4 = P.k / 4u;
    let cl = gid.x * 2u;
    let ch = min(cl + 1u, k4 - 1u);
    let y0 = min(r0 + 0u, P.m - 1u) * P.n;
    let y1 = min(r0 + 1u, P.m - 1u) * P.n;
    let y2 = min(r0 + 2u, P.m - 1u) * P.n;
    let y3 = min(r0 + 3u, P.m - 1u) * P.n;
    let y4 = min(r0 + 4u, P.m - 1u) * P.n;
    let y5 = min(r0 + 5u, P.m - 1u) * P.n;
    let y6 = min(r0 + 6u, P.m - 1u) * P.n;
    let y7 = min(r0 + 7u, P.m - 1u) * P.n;
    var a0l = vec4<f32>(0.0);
    var a0h = vec4<f32>(0.0);
    var a1l = vec4<f32>(0.0);
    var a1h = vec4<f32>(0.0);
    var a2l = vec4<f32>(0.0);
    var a2h = vec4<f32>(0.0);
    var a3l = vec4<f32>(0.0);
    var a3h = vec4<f32>(0.0);
    var a4l = vec4<f32>(0.0);
    var a4h = vec4<f32>(0.0);
    var a5l = vec4<f32>(0.0);
    var a5h = vec4<f32>(0.0);
    var a6l = vec4<f32>(0.0);
    var a6h = vec4<f32>(0.0);
    var a7l = vec4<f32>(0.0);
    var a7h = vec4<f32>(0.0);
    for (var j = 0u; j < P.n; j = j + 1u) {
        let bl = w4[j * k4 + cl];
        let bh = w4[j * k4 + ch];
        let d0 = vec4<f32>(dy[y0 + j]);
        a0l = fma(d0, bl, a0l);
        a0h = fma(d0, bh, a0h);
        let d1 = vec4<f32>(dy[y1 + j]);
        a1l = fma(d1, bl, a1l);
        a1h = fma(d1, bh, a1h);
        let d2 = vec4<f32>(dy[y2 + j]);
        a2l = fma(d2, bl, a2l);
        a2h = fma(d2, bh, a2h);
        let d3 = vec4<f32>(dy[y3 + j]);
        a3l = fma(d3, bl, a3l);
        a3h = fma(d3, bh, a3h);
        let d4 = vec4<f32>(dy[y4 + j]);
        a4l = fma(d4, bl, a4l);
        a4h = fma(d4, bh, a4h);
        let d5 = vec4<f32>(dy[y5 + j]);
        a5l = fma(d5, bl, a5l);
        a5h = fma(d5, bh, a5h);
        let d6 = vec4<f32>(dy[y6 + j]);
        a6l = fma(d6, bl, a6l);
        a6h = fma(d6, bh, a6h);
        let d7 = vec4<f32>(dy[y7 + j]);
        a7l = fma(d7, bl, a7l);
        a7h = fma(d7, bh, a7h);
    }
    let acc = P.acc != 0u;
    bw_store8(r0 + 0u, P.m, c0, P.k, a0l, a0h, acc);
    bw_store8(r0 + 1u, P.m, c0, P.k, a1l, a1h, acc);
    bw_store8(r0 + 2u, P.m, c0, P.k, a2l, a2h, acc);
    bw_store8(r0 + 3u, P.m, c0, P.k, a3l, a3h, acc);
    bw_store8(r0 + 4u, P.m, c0, P.k, a4l, a4h, acc);
    bw_store8(r0 + 5u, P.m, c0, P.k, a5l, a5h, acc);
    bw_store8(r0 + 6u, P.m, c0, P.k, a6l, a6h, acc);
    bw_store8(r0 + 7u, P.m, c0, P.k, a7l, a7h, acc);
}

@compute @workgroup_size(4, 4, 1)
fn dw4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 8u;
    let j0 = gid.y * 8u;
    if (j0 >= P.n || c0 >= P.k) { return; }
    let n4 = P.n / 4u;
    let k4 = P.k / 4u;
    let cl = gid.x * 2u;
    let ch = min(cl + 1u, k4 - 1u);
    let jl = gid.y * 2u;
    let jh = min(jl + 1u, n4 - 1u);
    var a0l = vec4<f32>(0.0);
    var a0h = vec4<f32>(0.0);
    var a1l = vec4<f32>(0.0);
    var a1h = vec4<f32>(0.0);
    var a2l = vec4<f32>(0.0);
    var a2h = vec4<f32>(0.0);
    var a3l = vec4<f32>(0.0);
    var a3h = vec4<f32>(0.0);
    var a4l = vec4<f32>(0.0);
    var a4h = vec4<f32>(0.0);
    var a5l = vec4<f32>(0.0);
    var a5h = vec4<f32>(0.0);
    var a6l = vec4<f32>(0.0);
    var a6h = vec4<f32>(0.0);
    var a7l = vec4<f32>(0.0);
    var a7h = vec4<f32>(0.0);
    for (var r = 0u; r < P.m; r = r + 1u) {
        let yl = dy4[r * n4 + jl];
        let yh = dy4[r * n4 + jh];
        let bl = x4[r * k4 + cl];
        let bh = x4[r * k4 + ch];
        let d0 = vec4<f32>(yl.x);
        a0l = fma(d0, bl, a0l);
        a0h = fma(d0, bh, a0h);
        let d1 = vec4<f32>(yl.y);
        a1l = fma(d1, bl, a1l);
        a1h = fma(d1, bh, a1h);
        let d2 = vec4<f32>(yl.z);
        a2l = fma(d2, bl, a2l);
        a2h = fma(d2, bh, a2h);
        let d3 = vec4<f32>(yl.w);
        a3l = fma(d3, bl, a3l);
        a3h = fma(d3, bh, a3h);
        let d4 = vec4<f32>(yh.x);
        a4l = fma(d4, bl, a4l);
        a4h = fma(d4, bh, a4h);
        let d5 = vec4<f32>(yh.y);
        a5l = fma(d5, bl, a5l);
        a5h = fma(d5, bh, a5h);
        let d6 = vec4<f32>(yh.z);
        a6l = fma(d6, bl, a6l);
        a6h = fma(d6, bh, a6h);
        let d7 = vec4<f32>(yh.w);
        a7l = fma(d7, bl, a7l);
        a7h = fma(d7, bh, a7h);
    }
    bw_store8(j0 + 0u, P.n, c0, P.k, a0l, a0h, true);
    bw_store8(j0 + 1u, P.n, c0, P.k, a1l, a1h, true);
    bw_store8(j0 + 2u, P.n, c0, P.k, a2l, a2h, true);
    bw_store8(j0 + 3u, P.n, c0, P.k, a3l, a3h, true);
    bw_store8(j0 + 4u, P.n, c0, P.k, a4l, a4h, true);
    bw_store8(j0 + 5u, P.n, c0, P.k, a5l, a5h, true);
    bw_store8(j0 + 6u, P.n, c0, P.k, a6l, a6h, true);
    bw_store8(j0 + 7u, P.n, c0, P.k, a7l, a7h, true);
}


@compute @workgroup_size(8, 8, 1)
fn dx(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let r0 = gid.y * 4u;
    if (r0 >= P.m || c0 >= P.k) { return; }
    let y0 = r0 * P.n;
    let y1 = min(r0 + 1u, P.m - 1u) * P.n;
    let y2 = min(r0 + 2u, P.m - 1u) * P.n;
    let y3 = min(r0 + 3u, P.m - 1u) * P.n;
    let c1 = min(c0 + 1u, P.k - 1u);
    let c2 = min(c0 + 2u, P.k - 1u);
    let c3 = min(c0 + 3u, P.k - 1u);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var j = 0u; j < P.n; j = j + 1u) {
        let wb = j * P.k;
        let b = vec4<f32>(w[wb + c0], w[wb + c1], w[wb + c2], w[wb + c3]);
        acc0 = fma(vec4<f32>(dy[y0 + j]), b, acc0);
        acc1 = fma(vec4<f32>(dy[y1 + j]), b, acc1);
        acc2 = fma(vec4<f32>(dy[y2 + j]), b, acc2);
        acc3 = fma(vec4<f32>(dy[y3 + j]), b, acc3);
    }
    let acc = P.acc != 0u;
    bw_store(r0, P.m, c0, P.k, acc0, acc);
    bw_store(r0 + 1u, P.m, c0, P.k, acc1, acc);
    bw_store(r0 + 2u, P.m, c0, P.k, acc2, acc);
    bw_store(r0 + 3u, P.m, c0, P.k, acc3, acc);
}

@compute @workgroup_size(8, 8, 1)
fn dw(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let j0 = gid.y * 4u;
    if (j0 >= P.n || c0 >= P.k) { return; }
    let j1 = min(j0 + 1u, P.n - 1u);
    let j2 = min(j0 + 2u, P.n - 1u);
    let j3 = min(j0 + 3u, P.n - 1u);
    let c1 = min(c0 + 1u, P.k - 1u);
    let c2 = min(c0 + 2u, P.k - 1u);
    let c3 = min(c0 + 3u, P.k - 1u);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var r = 0u; r < P.m; r = r + 1u) {
        let yb = r * P.n;
        let xb = r * P.k;
        let b = vec4<f32>(x[xb + c0], x[xb + c1], x[xb + c2], x[xb + c3]);
        acc0 = fma(vec4<f32>(dy[yb + j0]), b, acc0);
        acc1 = fma(vec4<f32>(dy[yb + j1]), b, acc1);
        acc2 = fma(vec4<f32>(dy[yb + j2]), b, acc2);
        acc3 = fma(vec4<f32>(dy[yb + j3]), b, acc3);
    }
    bw_store(j0, P.n, c0, P.k, acc0, true);
    bw_store(j0 + 1u, P.n, c0, P.k, acc1, true);
    bw_store(j0 + 2u, P.n, c0, P.k, acc2, true);
    bw_store(j0 + 3u, P.n, c0, P.k, acc3, true);
}

@compute @workgroup_size(256, 1, 1)
fn db(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = flat_group(wid, nwg) * 256u + lid.x;
    if (j >= P.n) { return; }
    var s = 0.0;
    for (var r = 0u; r < P.m; r = r + 1u) { s = s + dy[r * P.n + j]; }
    out[j] = out[j] + s;
}
