// matmul.wgsl: out = x @ W^T + b   (nn.Linear)
//   x   (M, K)  row-major
//   W   (N, K)  as PyTorch stores nn.Linear.weight
//   b   (N,)    optional (has_bias)
//   out (M, N)    = act(x @ W^T + b), act: 0 none, 1 ReLU, 2 GELU, 3 GELU-tanh (epilogue_act in common.wgsl)

@group(0) @binding(0) var<uniform> P: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;      // (M, K)
@group(0) @binding(2) var<storage, read> w: array<f32>;      // (N, K)
@group(0) @binding(3) var<storage, read> bias: array<f32>;   // (N,) or a dummy
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // (M, N)

// Baseline: one thread per output element, every operand read from global memory.
@compute @workgroup_size(16, 16, 1)
fn naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if (row >= P.m || col >= P.n) { return; }
    var acc = 0.0;
    for (var p = 0u; p < P.k; p = p + 1u) {
        acc = acc + x[P.x_offset + row * P.k + p] * w[col * P.k + p];
    }
    if (P.has_bias != 0u) { acc = acc + bias[P.b_offset + col]; }
    out[P.out_offset + row * P.ldo + col] = epilogue_act(acc, P.act);
}

// Tiled: a 64x64 output tile per workgroup of 16x16 threads, each thread a 4x4 register block.
// The K dimension is walked in slabs of 16 staged through workgroup memory; edges are zero-padded
// on load, so every shape is correct (not only multiples of the tile).
const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> xs: array<f32, 1024>; // (TK, TM): xs[kk * TM + r]
var<workgroup> ws: array<f32, 1024>; // (TK, TN): ws[kk * TN + c]

@compute @workgroup_size(16, 16, 1)
fn tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let t = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        for (var j = 0u; j < 4u; j = j + 1u) { acc[i][j] = 0.0; }
    }
    let full_rows = row0 + TM <= P.m;
    let full_cols = col0 + TN <= P.n;
    for (var k0 = 0u; k0 < P.k; k0 = k0 + TK) {
        let full_k = k0 + TK <= P.k;
        // Stage the slabs: 1024 values of x and 1024 of W, 4 per thread, coalesced along K.
        for (var l = 0u; l < 4u; l = l + 1u) {
            let idx = t + l * 256u;
            let r = idx / TK;
            let kk = idx % TK;
            let gk = k0 + kk;
            let gr = row0 + r;
            let gc = col0 + r;
            var xv = 0.0;
            var wv = 0.0;
            if (full_k && full_rows) {
                xv = x[P.x_offset + gr * P.k + gk];
            } else if (gr < P.m && gk < P.k) {
                xv = x[P.x_offset + gr * P.k + gk];
            }
            if (full_k && full_cols) {
                wv = w[gc * P.k + gk];
            } else if (gc < P.n && gk < P.k) {
                wv = w[gc * P.k + gk];
            }
            xs[kk * TM + r] = xv;
            ws[kk * TN + r] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk = kk + 1u) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i = i + 1u) {
                a[i] = xs[kk * TM + lid.y + 16u * i];
                b[i] = ws[kk * TN + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i = i + 1u) {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    acc[i][j] = fma(a[i], b[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = row0 + lid.y + 16u * i;
        if (r >= P.m) { continue; }
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = col0 + lid.x + 16u * j;
            if (c >= P.n) { continue; }
            var v = acc[i][j];
            if (P.has_bias != 0u) { v = v + bias[P.b_offset + c]; }
            out[P.out_offset + r * P.ldo + c] = epilogue_act(v, P.act);
        }
    }
}

// Tiled, vec4: the same 64x64 tile and 4x4 register blocks, for K % 4 == 0 and x_offset % 4 == 0
// (src/gpu/matmul.rs checks; other shapes use `tiled`).
// - Global loads are vec4 along K: each thread stages one vec4 of x and one of W per K slab.
// - Workgroup memory holds the slabs transposed, (TK, 64) with the 64 tile rows contiguous, viewed
//   as vec4: a thread reads its 4 rows and its 4 columns at one k as two vec4 loads, and does 16
//   FMAs as 4 vec4 FMAs. Staging thread t writes row t % 64, so the 32 threads of a warp store to
//   32 consecutive words (no bank conflicts); in the inner loop a warp's W reads are 16
//   consecutive vec4 and its x reads a broadcast.
// - Bounds are checked only in edge tiles (rows or columns past M or N, or the last K slab).
var<workgroup> xs4: array<vec4<f32>, 256>; // (TK, TM/4): xs4[kk * 16 + r / 4][r % 4] = x[row0 + r, k0 + kk]
var<workgroup> ws4: array<vec4<f32>, 256>; // (TK, TN/4): likewise for W's rows (the output columns)
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>; // (M, K/4), the vec4 view of x
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>; // (N, K/4), the vec4 view of W

@compute @workgroup_size(16, 16, 1)
fn tiled4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let t = lid.y * 16u + lid.x;
    let lr = t % 64u;  // staging: tile row (of x) and tile column (row of W)
    let kq = t / 64u;  // staging: which vec4 of the 16-wide K slab
    let k4 = P.k / 4u;
    let xb = P.x_offset / 4u + (row0 + lr) * k4;
    let wb = (col0 + lr) * k4;
    var acc: array<vec4<f32>, 4>; // acc[i] = out[row0 + 4 ty + i, col0 + 4 tx .. +3]
    for (var i = 0u; i < 4u; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
    let interior = row0 + TM <= P.m && col0 + TN <= P.n;
    let row_ok = row0 + lr < P.m;
    let col_ok = col0 + lr < P.n;
    for (var k0 = 0u; k0 < P.k; k0 = k0 + TK) {
        let kv = k0 / 4u + kq;
        var xv = vec4<f32>(0.0);
        var wv = vec4<f32>(0.0);
        if (interior && k0 + TK <= P.k) {
            xv = x4[xb + kv];
            wv = w4[wb + kv];
        } else {
            if (row_ok && kv < k4) { xv = x4[xb + kv]; }
            if (col_ok && kv < k4) { wv = w4[wb + kv]; }
        }
        let slot = lr / 4u;
        let lane = lr % 4u;
        for (var j = 0u; j < 4u; j = j + 1u) {
            xs4[(kq * 4u + j) * 16u + slot][lane] = xv[j];
            ws4[(kq * 4u + j) * 16u + slot][lane] = wv[j];
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk = kk + 1u) {
            let a = xs4[kk * 16u + lid.y];
            let b = ws4[kk * 16u + lid.x];
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }
    let c0 = col0 + lid.x * 4u;
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = row0 + lid.y * 4u + i;
        if (!interior && r >= P.m) { continue; }
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = c0 + j;
            if (!interior && c >= P.n) { continue; }
            var v = acc[i][j];
            if (P.has_bias != 0u) { v = v + bias[P.b_offset + c]; }
            out[P.out_offset + r * P.ldo + c] = epilogue_act(v, P.act);
        }
    }
}

// Register-blocked, no workgroup memory and no barriers (for CPU-emulated GPUs: SwiftShader,
// llvmpipe, where an invocation is a SIMD lane and a barrier switches between them): each
// invocation computes an 8x8 output block straight from memory, vec4 loads along K (K % 4 == 0 and
// x_offset % 4 == 0; src/gpu/matmul.rs checks, other shapes use `tiled`), 64 vec4 dot products per
// 16 loads (an emulated GPU pays for every value loaded, and spills the accumulators cheaply); the
// CPU's caches do the job of the shared slabs. Workgroups of 4x4 invocations, 32x32 outputs. Rows
// and columns past M or N read the last valid row or column (clamped: no bounds check in the K
// loop) and are not stored. Each output is acc + dot of 4 over K in order, as with 4x4 blocks.
@compute @workgroup_size(4, 4, 1)
fn reg4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 8u;
    let r0 = gid.y * 8u;
    if (r0 >= P.m || c0 >= P.n) { return; }
    let k4 = P.k / 4u;
    let xb = P.x_offset / 4u;
    let xr0 = xb + min(r0 + 0u, P.m - 1u) * k4;
    let xr1 = xb + min(r0 + 1u, P.m - 1u) * k4;
    let xr2 = xb + min(r0 + 2u, P.m - 1u) * k4;
    let xr3 = xb + min(r0 + 3u, P.m - 1u) * k4;
    let xr4 = xb + min(r0 + 4u, P.m - 1u) * k4;
    let xr5 = xb + min(r0 + 5u, P.m - 1u) * k4;
    let xr6 = xb + min(r0 + 6u, P.m - 1u) * k4;
    let xr7 = xb + min(r0 + 7u, P.m - 1u) * k4;
    let wr0 = min(c0 + 0u, P.n - 1u) * k4;
    let wr1 = min(c0 + 1u, P.n - 1u) * k4;
    let wr2 = min(c0 + 2u, P.n - 1u) * k4;
    let wr3 = min(c0 + 3u, P.n - 1u) * k4;
    let wr4 = min(c0 + 4u, P.n - 1u) * k4;
    let wr5 = min(c0 + 5u, P.n - 1u) * k4;
    let wr6 = min(c0 + 6u, P.n - 1u) * k4;
    let wr7 = min(c0 + 7u, P.n - 1u) * k4;
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
    for (var p = 0u; p < k4; p = p + 1u) {
        let b0 = w4[wr0 + p];
        let b1 = w4[wr1 + p];
        let b2 = w4[wr2 + p];
        let b3 = w4[wr3 + p];
        let b4 = w4[wr4 + p];
        let b5 = w4[wr5 + p];
        let b6 = w4[wr6 + p];
        let b7 = w4[wr7 + p];
        let x0v = x4[xr0 + p];
        a0l = a0l + vec4<f32>(dot(x0v, b0), dot(x0v, b1), dot(x0v, b2), dot(x0v, b3));
        a0h = a0h + vec4<f32>(dot(x0v, b4), dot(x0v, b5), dot(x0v, b6), dot(x0v, b7));
        let x1v = x4[xr1 + p];
        a1l = a1l + vec4<f32>(dot(x1v, b0), dot(x1v, b1), dot(x1v, b2), dot(x1v, b3));
        a1h = a1h + vec4<f32>(dot(x1v, b4), dot(x1v, b5), dot(x1v, b6), dot(x1v, b7));
        let x2v = x4[xr2 + p];
        a2l = a2l + vec4<f32>(dot(x2v, b0), dot(x2v, b1), dot(x2v, b2), dot(x2v, b3));
        a2h = a2h + vec4<f32>(dot(x2v, b4), dot(x2v, b5), dot(x2v, b6), dot(x2v, b7));
        let x3v = x4[xr3 + p];
        a3l = a3l + vec4<f32>(dot(x3v, b0), dot(x3v, b1), dot(x3v, b2), dot(x3v, b3));
        a3h = a3h + vec4<f32>(dot(x3v, b4), dot(x3v, b5), dot(x3v, b6), dot(x3v, b7));
        let x4v = x4[xr4 + p];
        a4l = a4l + vec4<f32>(dot(x4v, b0), dot(x4v, b1), dot(x4v, b2), dot(x4v, b3));
        a4h = a4h + vec4<f32>(dot(x4v, b4), dot(x4v, b5), dot(x4v, b6), dot(x4v, b7));
        let x5v = x4[xr5 + p];
        a5l = a5l + vec4<f32>(dot(x5v, b0), dot(x5v, b1), dot(x5v, b2), dot(x5v, b3));
        a5h = a5h + vec4<f32>(dot(x5v, b4), dot(x5v, b5), dot(x5v, b6), dot(x5v, b7));
        let x6v = x4[xr6 + p];
        a6l = a6l + vec4<f32>(dot(x6v, b0), dot(x6v, b1), dot(x6v, b2), dot(x6v, b3));
        a6h = a6h + vec4<f32>(dot(x6v, b4), dot(x6v, b5), dot(x6v, b6), dot(x6v, b7));
        let x7v = x4[xr7 + p];
        a7l = a7l + vec4<f32>(dot(x7v, b0), dot(x7v, b1), dot(x7v, b2), dot(x7v, b3));
        a7h = a7h + vec4<f32>(dot(x7v, b4), dot(x7v, b5), dot(x7v, b6), dot(x7v, b7));
    }
    reg_store(r0 + 0u, c0, a0l);
    reg_store(r0 + 0u, c0 + 4u, a0h);
    reg_store(r0 + 1u, c0, a1l);
    reg_store(r0 + 1u, c0 + 4u, a1h);
    reg_store(r0 + 2u, c0, a2l);
    reg_store(r0 + 2u, c0 + 4u, a2h);
    reg_store(r0 + 3u, c0, a3l);
    reg_store(r0 + 3u, c0 + 4u, a3h);
    reg_store(r0 + 4u, c0, a4l);
    reg_store(r0 + 4u, c0 + 4u, a4h);
    reg_store(r0 + 5u, c0, a5l);
    reg_store(r0 + 5u, c0 + 4u, a5h);
    reg_store(r0 + 6u, c0, a6l);
    reg_store(r0 + 6u, c0 + 4u, a6h);
    reg_store(r0 + 7u, c0, a7l);
    reg_store(r0 + 7u, c0 + 4u, a7h);
}


// One row's 4 outputs of a register block: bias, activation, and only the ones inside (M, N).
fn reg_store(r: u32, c0: u32, v: vec4<f32>) {
    if (r >= P.m) { return; }
    for (var j = 0u; j < 4u; j = j + 1u) {
        let c = c0 + j;
        if (c >= P.n) { return; }
        var o = v[j];
        if (P.has_bias != 0u) { o = o + bias[P.b_offset + c]; }
        out[P.out_offset + r * P.ldo + c] = epilogue_act(o, P.act);
    }
}
