// matmul16.wgsl: the matmul and GEMV kernels over 16-bit weights, computing in f32.
// A 16-bit weight (N, K) (f16 or bf16, as the checkpoint stored it) is held as packed pairs in u32
// words, each row padded to an even length: row n is words n * KW .. n * KW + KW, KW = ceil(K / 2),
// word j holding element 2j in its low 16 bits and element 2j + 1 (0 past K) in its high 16 bits.
// MatmulParams.wfmt says which: 0 f16 (unpack2x16float; subnormals rebuilt
// exactly by f16_small), 1 bf16 (the bits are the top half of an f32: a shift). Both conversions are exact, so the kernels see exactly the
// checkpoint's values; x, bias and out stay f32, and so does every accumulation.
//   entry `tiled`:  out = act(x @ W^T + b)        the 64x64 tile of matmul.wgsl (prefill, M >= 8)
//   entry `tiled4`: the same with vec4 loads and FMAs (matmul.wgsl's tiled4), K % 4 == 0
//   entry `gemv`:   out = act(x @ W^T + b)        the 32-outputs-per-workgroup GEMV of gemv.wgsl
//   entry `gemv_swiglu`: out = silu(x @ W^T) * (x @ W_up^T), W_up packed the same way

@group(0) @binding(0) var<uniform> P: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;           // (M, K)
@group(0) @binding(2) var<storage, read> w: array<u32>;           // (N, KW) packed pairs
@group(0) @binding(3) var<storage, read> bias: array<f32>;        // (N,) or a dummy
@group(0) @binding(3) var<storage, read> wup: array<u32>;         // gemv_swiglu: W_up (N, KW)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // (M, N)

// f16_small, unpack_pair and packed_at come from half.wgsl (prepended by src/gpu/wgsl.rs).

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> xs: array<f32, 1024>; // (TK, TM)
var<workgroup> ws: array<f32, 1024>; // (TK, TN)

@compute @workgroup_size(16, 16, 1)
fn tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let t = lid.y * 16u + lid.x;
    let kw = (P.k + 1u) / 2u;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        for (var j = 0u; j < 4u; j = j + 1u) { acc[i][j] = 0.0; }
    }
    for (var k0 = 0u; k0 < P.k; k0 = k0 + TK) {
        for (var l = 0u; l < 4u; l = l + 1u) {
            let idx = t + l * 256u;
            let r = idx / TK;
            let kk = idx % TK;
            let gk = k0 + kk;
            let gr = row0 + r;
            let gc = col0 + r;
            var xv = 0.0;
            var wv = 0.0;
            if (gr < P.m && gk < P.k) {
                xv = x[P.x_offset + gr * P.k + gk];
            }
            if (gc < P.n && gk < P.k) {
                wv = packed_at(w[gc * kw + gk / 2u], gk, P.wfmt);
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

// Tiled, vec4: matmul.wgsl's `tiled4` (the same 64x64 tile, slabs transposed in workgroup memory,
// vec4 FMAs), W read as two words (4 values) per load; for K % 4 == 0 and x_offset % 4 == 0
// (src/gpu/matmul.rs checks; other shapes use `tiled`). Rows of K / 2 words are then K / 4 word pairs.
var<workgroup> xs4: array<vec4<f32>, 256>;
var<workgroup> ws4: array<vec4<f32>, 256>;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;   // (M, K/4)
@group(0) @binding(2) var<storage, read> w2: array<vec2<u32>>;   // (N, K/4) pairs of words

fn w4_at(i: u32) -> vec4<f32> {
    let p = w2[i];
    return vec4<f32>(unpack_pair(p.x, P.wfmt), unpack_pair(p.y, P.wfmt));
}

@compute @workgroup_size(16, 16, 1)
fn tiled4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let t = lid.y * 16u + lid.x;
    let lr = t % 64u;
    let kq = t / 64u;
    let k4 = P.k / 4u;
    let xb = P.x_offset / 4u + (row0 + lr) * k4;
    let wb = (col0 + lr) * k4;
    var acc: array<vec4<f32>, 4>;
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
            wv = w4_at(wb + kv);
        } else {
            if (row_ok && kv < k4) { xv = x4[xb + kv]; }
            if (col_ok && kv < k4) { wv = w4_at(wb + kv); }
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

// GEMV: a workgroup of 256 threads per 32 outputs of one row, 8 lanes per output splitting the row's
// words (lane l reads words l, l + 8, ...), then gemv.wgsl's tree reduction.
const LANES: u32 = 8u;
const OUTS: u32 = 32u;
var<workgroup> red: array<f32, 256>;
var<workgroup> red2: array<f32, 256>;

fn reduce_lanes(o: u32, lane: u32, both: bool) {
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lane < s) {
            red[o * LANES + lane] = red[o * LANES + lane] + red[o * LANES + lane + s];
            if (both) { red2[o * LANES + lane] = red2[o * LANES + lane] + red2[o * LANES + lane + s]; }
        }
    }
    workgroupBarrier();
}

// x[xb + 2p], x[xb + 2p + 1] (0 past K: an odd K's last word has one element).
fn x_pair(xb: u32, p: u32) -> vec2<f32> {
    let i = 2u * p;
    var hi = 0.0;
    if (i + 1u < P.k) { hi = x[xb + i + 1u]; }
    return vec2<f32>(x[xb + i], hi);
}

@compute @workgroup_size(256, 1, 1)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = lid.x / LANES;
    let lane = lid.x % LANES;
    let row = wid.y;
    let col = wid.x * OUTS + o;
    let kw = (P.k + 1u) / 2u;
    var acc = 0.0;
    if (col < P.n) {
        let xb = P.x_offset + row * P.k;
        let wb = col * kw;
        for (var p = lane; p < kw; p = p + LANES) {
            let xv = x_pair(xb, p);
            let wv = unpack_pair(w[wb + p], P.wfmt);
            acc = fma(xv.x, wv.x, fma(xv.y, wv.y, acc));
        }
    }
    red[lid.x] = acc;
    reduce_lanes(o, lane, false);
    if (lane == 0u && col < P.n) {
        var v = red[o * LANES];
        if (P.has_bias != 0u) { v = v + bias[P.b_offset + col]; }
        out[P.out_offset + row * P.ldo + col] = epilogue_act(v, P.act);
    }
}

@compute @workgroup_size(256, 1, 1)
fn gemv_swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = lid.x / LANES;
    let lane = lid.x % LANES;
    let row = wid.y;
    let col = wid.x * OUTS + o;
    let kw = (P.k + 1u) / 2u;
    var gate = 0.0;
    var up = 0.0;
    if (col < P.n) {
        let xb = P.x_offset + row * P.k;
        let wb = col * kw;
        for (var p = lane; p < kw; p = p + LANES) {
            let xv = x_pair(xb, p);
            let g = unpack_pair(w[wb + p], P.wfmt);
            let u = unpack_pair(wup[wb + p], P.wfmt);
            gate = fma(xv.x, g.x, fma(xv.y, g.y, gate));
            up = fma(xv.x, u.x, fma(xv.y, u.y, up));
        }
    }
    red[lid.x] = gate;
    red2[lid.x] = up;
    reduce_lanes(o, lane, true);
    if (lane == 0u && col < P.n) {
        out[P.out_offset + row * P.ldo + col] = silu(red[o * LANES]) * red2[o * LANES];
    }
}

// Register-blocked, no workgroup memory and no barriers: matmul.wgsl's `reg4` over packed 16-bit
// weights, with 8 rows per invocation (an 8x4 output block) so that each unpacked vec4 of W serves
// 8 rows of x; W read as two words (4 values) per load. K % 4 == 0 and x_offset % 4 == 0
// (src/gpu/matmul.rs checks; other shapes use `tiled`). Rows and columns past M or N are clamped
// in the K loop and not stored.
@compute @workgroup_size(8, 8, 1)
fn reg8(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let r0 = gid.y * 8u;
    if (r0 >= P.m || c0 >= P.n) { return; }
    let k4 = P.k / 4u;
    let xb = P.x_offset / 4u;
    let last = P.m - 1u;
    let x0 = xb + r0 * k4;
    let x1 = xb + min(r0 + 1u, last) * k4;
    let x2 = xb + min(r0 + 2u, last) * k4;
    let x3 = xb + min(r0 + 3u, last) * k4;
    let x4_ = xb + min(r0 + 4u, last) * k4;
    let x5 = xb + min(r0 + 5u, last) * k4;
    let x6 = xb + min(r0 + 6u, last) * k4;
    let x7 = xb + min(r0 + 7u, last) * k4;
    let w0 = c0 * k4;
    let w1 = min(c0 + 1u, P.n - 1u) * k4;
    let w2_ = min(c0 + 2u, P.n - 1u) * k4;
    let w3 = min(c0 + 3u, P.n - 1u) * k4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    for (var p = 0u; p < k4; p = p + 1u) {
        let b0 = w4_at(w0 + p);
        let b1 = w4_at(w1 + p);
        let b2 = w4_at(w2_ + p);
        let b3 = w4_at(w3 + p);
        var a = x4[x0 + p];
        acc0 = acc0 + vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
        a = x4[x1 + p];
        acc1 = acc1 + vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
        a = x4[x2 + p];
        acc2 = acc2 + vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
        a = x4[x3 + p];
        acc3 = acc3 + vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
        a = x4[x4_ + p];
        acc4 = acc4 + vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
        a = x4[x5 + p];
        acc5 = acc5 + vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
        a = x4[x6 + p];
        acc6 = acc6 + vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
        a = x4[x7 + p];
        acc7 = acc7 + vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
    }
    reg_store(r0, c0, acc0);
    reg_store(r0 + 1u, c0, acc1);
    reg_store(r0 + 2u, c0, acc2);
    reg_store(r0 + 3u, c0, acc3);
    reg_store(r0 + 4u, c0, acc4);
    reg_store(r0 + 5u, c0, acc5);
    reg_store(r0 + 6u, c0, acc6);
    reg_store(r0 + 7u, c0, acc7);
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
