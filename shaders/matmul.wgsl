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
// invocation computes a 4x4 output block straight from memory, vec4 loads along K (K % 4 == 0 and
// x_offset % 4 == 0; src/gpu/matmul.rs checks, other shapes use `tiled`), 16 vec4 dot products per
// 8 loads; the CPU's caches do the job of the shared slabs. Rows and columns past M or N read the
// last valid row or column (clamped: no bounds check in the K loop) and are not stored.
@compute @workgroup_size(8, 8, 1)
fn reg4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let r0 = gid.y * 4u;
    if (r0 >= P.m || c0 >= P.n) { return; }
    let k4 = P.k / 4u;
    let xb = P.x_offset / 4u;
    let x0 = xb + r0 * k4;
    let x1 = xb + min(r0 + 1u, P.m - 1u) * k4;
    let x2 = xb + min(r0 + 2u, P.m - 1u) * k4;
    let x3 = xb + min(r0 + 3u, P.m - 1u) * k4;
    let w0 = c0 * k4;
    let w1 = min(c0 + 1u, P.n - 1u) * k4;
    let w2 = min(c0 + 2u, P.n - 1u) * k4;
    let w3 = min(c0 + 3u, P.n - 1u) * k4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var p = 0u; p < k4; p = p + 1u) {
        let b0 = w4[w0 + p];
        let b1 = w4[w1 + p];
        let b2 = w4[w2 + p];
        let b3 = w4[w3 + p];
        let a0 = x4[x0 + p];
        acc0 = acc0 + vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
        let a1 = x4[x1 + p];
        acc1 = acc1 + vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
        let a2 = x4[x2 + p];
        acc2 = acc2 + vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
        let a3 = x4[x3 + p];
        acc3 = acc3 + vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
    }
    reg_store(r0, c0, acc0);
    reg_store(r0 + 1u, c0, acc1);
    reg_store(r0 + 2u, c0, acc2);
    reg_store(r0 + 3u, c0, acc3);
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
