// qkv.wgsl: the three attention projections of a few-row pass in one GEMV dispatch, with their
// biases and RoPE in the epilogue:
//   x (M, K) from x[x_offset]; W_q (NQ, K); W_k, W_v (NKV, K)
//   q (M, NQ) from q[0];  k, v (M, NKV) from k[kv_offset], v[kv_offset] (rows of the KV cache)
//   flags bit 0: + the biases, aux[0 .. NQ + 2 NKV] (b_q, b_k, b_v concatenated)
//   flags bit 1: RoPE on q and k (adjacent pairs of each head of HS, as rope.wgsl): row r is at
//                position start_pos + r, (cos, sin) from the table (max_pos, HS/2, 2) at
//                aux[table_off..]; the bias is added before the rotation
// The NQ + 2 NKV outputs of a row are numbered in that order; a workgroup of 256 threads takes 32
// of them, 8 lanes per output split K and reduce in workgroup memory, as in gemv.wgsl. A rotated
// pair (2i, 2i + 1) is two neighbouring outputs of one workgroup (NQ, NKV and 32 are even), so
// each takes its partner's sum from workgroup memory after the reduction.
// Entries: `main4` f32 weights read as vec4 (K % 4 == 0, x_offset % 4 == 0); `main1` f32, any K;
// `main16` 16-bit weights packed in pairs (matmul16.wgsl's layout and `wfmt`; half.wgsl).

@group(0) @binding(0) var<uniform> P: QkvParams;
// main4: vec4 views
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;  // (M, K/4)
@group(0) @binding(2) var<storage, read> wq4: array<vec4<f32>>; // (NQ, K/4)
@group(0) @binding(3) var<storage, read> wk4: array<vec4<f32>>; // (NKV, K/4)
@group(0) @binding(4) var<storage, read> wv4: array<vec4<f32>>; // (NKV, K/4)
// main1 (x also main16): scalar views
@group(0) @binding(1) var<storage, read> x: array<f32>;         // (M, K)
@group(0) @binding(2) var<storage, read> wq: array<f32>;        // (NQ, K)
@group(0) @binding(3) var<storage, read> wk: array<f32>;        // (NKV, K)
@group(0) @binding(4) var<storage, read> wv: array<f32>;        // (NKV, K)
// main16: packed pairs, rows of KW = ceil(K / 2) words
@group(0) @binding(2) var<storage, read> wq16: array<u32>;      // (NQ, KW)
@group(0) @binding(3) var<storage, read> wk16: array<u32>;      // (NKV, KW)
@group(0) @binding(4) var<storage, read> wv16: array<u32>;      // (NKV, KW)
@group(0) @binding(5) var<storage, read_write> q: array<f32>;   // (M, NQ)
@group(0) @binding(6) var<storage, read_write> kc: array<f32>;  // (.., NKV) the key cache
@group(0) @binding(7) var<storage, read_write> vc: array<f32>;  // (.., NKV) the value cache
@group(0) @binding(8) var<storage, read> aux: array<f32>;       // biases and / or the RoPE table

const LANES: u32 = 8u;
const OUTS: u32 = 32u;
var<workgroup> red: array<f32, 256>; // (OUTS, LANES)

// Reduces the lanes, adds the bias, rotates, and writes output `col` of row `row`. Every thread
// of the workgroup calls it (it has barriers); red[lid] holds the thread's partial sum.
fn finish(row: u32, col: u32, o: u32, lane: u32) {
    let total = P.nq + 2u * P.nkv;
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lane < s) { red[o * LANES + lane] = red[o * LANES + lane] + red[o * LANES + lane + s]; }
    }
    workgroupBarrier();
    if (lane == 0u && col < total && (P.flags & 1u) != 0u) {
        red[o * LANES] = red[o * LANES] + aux[col];
    }
    workgroupBarrier();
    if (lane != 0u || col >= total) { return; }
    var v = red[o * LANES];
    if ((P.flags & 2u) != 0u && col < P.nq + P.nkv) {
        // c: the column within the q or k row; its pair is (c & ~1, c | 1), the partner col ^ 1
        let c = select(col - P.nq, col, col < P.nq);
        let tb = P.table_off + ((P.start_pos + row) * (P.hs / 2u) + (c % P.hs) / 2u) * 2u;
        let cs = aux[tb];
        let sn = aux[tb + 1u];
        let partner = red[(o ^ 1u) * LANES];
        // (x0, x1) <- (x0 cos - x1 sin, x0 sin + x1 cos)
        if ((c & 1u) == 0u) {
            v = v * cs - partner * sn;
        } else {
            v = partner * sn + v * cs;
        }
    }
    if (col < P.nq) {
        q[row * P.nq + col] = v;
    } else if (col < P.nq + P.nkv) {
        kc[P.kv_offset + row * P.nkv + col - P.nq] = v;
    } else {
        vc[P.kv_offset + row * P.nkv + col - P.nq - P.nkv] = v;
    }
}

@compute @workgroup_size(256, 1, 1)
fn main4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = lid.x / LANES;
    let lane = lid.x % LANES;
    let row = wid.y;
    let col = wid.x * OUTS + o; // in [0, NQ + 2 NKV)
    let k4 = P.k / 4u;
    let xb = P.x_offset / 4u + row * k4;
    var acc = vec4<f32>(0.0);
    if (col < P.nq) {
        let wb = col * k4;
        for (var p = lane; p < k4; p = p + LANES) { acc = fma(x4[xb + p], wq4[wb + p], acc); }
    } else if (col < P.nq + P.nkv) {
        let wb = (col - P.nq) * k4;
        for (var p = lane; p < k4; p = p + LANES) { acc = fma(x4[xb + p], wk4[wb + p], acc); }
    } else if (col < P.nq + 2u * P.nkv) {
        let wb = (col - P.nq - P.nkv) * k4;
        for (var p = lane; p < k4; p = p + LANES) { acc = fma(x4[xb + p], wv4[wb + p], acc); }
    }
    red[lid.x] = acc.x + acc.y + acc.z + acc.w;
    finish(row, col, o, lane);
}

@compute @workgroup_size(256, 1, 1)
fn main1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = lid.x / LANES;
    let lane = lid.x % LANES;
    let row = wid.y;
    let col = wid.x * OUTS + o;
    let xb = P.x_offset + row * P.k;
    var acc = 0.0;
    if (col < P.nq) {
        let wb = col * P.k;
        for (var p = lane; p < P.k; p = p + LANES) { acc = fma(x[xb + p], wq[wb + p], acc); }
    } else if (col < P.nq + P.nkv) {
        let wb = (col - P.nq) * P.k;
        for (var p = lane; p < P.k; p = p + LANES) { acc = fma(x[xb + p], wk[wb + p], acc); }
    } else if (col < P.nq + 2u * P.nkv) {
        let wb = (col - P.nq - P.nkv) * P.k;
        for (var p = lane; p < P.k; p = p + LANES) { acc = fma(x[xb + p], wv[wb + p], acc); }
    }
    red[lid.x] = acc;
    finish(row, col, o, lane);
}

// x[xb + 2p], x[xb + 2p + 1] (0 past K: an odd K's last word has one element).
fn x_pair(xb: u32, p: u32) -> vec2<f32> {
    let i = 2u * p;
    var hi = 0.0;
    if (i + 1u < P.k) { hi = x[xb + i + 1u]; }
    return vec2<f32>(x[xb + i], hi);
}

@compute @workgroup_size(256, 1, 1)
fn main16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = lid.x / LANES;
    let lane = lid.x % LANES;
    let row = wid.y;
    let col = wid.x * OUTS + o;
    let kw = (P.k + 1u) / 2u;
    let xb = P.x_offset + row * P.k;
    var acc = 0.0;
    if (col < P.nq) {
        let wb = col * kw;
        for (var p = lane; p < kw; p = p + LANES) {
            let xv = x_pair(xb, p);
            let wv2 = unpack_pair(wq16[wb + p], P.wfmt);
            acc = fma(xv.x, wv2.x, fma(xv.y, wv2.y, acc));
        }
    } else if (col < P.nq + P.nkv) {
        let wb = (col - P.nq) * kw;
        for (var p = lane; p < kw; p = p + LANES) {
            let xv = x_pair(xb, p);
            let wv2 = unpack_pair(wk16[wb + p], P.wfmt);
            acc = fma(xv.x, wv2.x, fma(xv.y, wv2.y, acc));
        }
    } else if (col < P.nq + 2u * P.nkv) {
        let wb = (col - P.nq - P.nkv) * kw;
        for (var p = lane; p < kw; p = p + LANES) {
            let xv = x_pair(xb, p);
            let wv2 = unpack_pair(wv16[wb + p], P.wfmt);
            acc = fma(xv.x, wv2.x, fma(xv.y, wv2.y, acc));
        }
    }
    red[lid.x] = acc;
    finish(row, col, o, lane);
}

// ---- One invocation per rotated pair, no barriers (entries rows4, rows1): for GPUs emulated on
// the CPU, as shaders/rows.wgsl. Invocation j of a row computes outputs 2j and 2j + 1 of the
// NQ + 2 NKV (each its own dot product over all of K, plus its bias), rotates the pair when it
// lies in q or k (RoPE needs NQ and NKV even, so a pair never straddles q and k), and stores both.
// Grid (ceil(ceil((NQ + 2 NKV) / 2) / 64), M).

fn qkv_dot4(col: u32, xb: u32, k4: u32) -> f32 {
    var a = vec4<f32>(0.0);
    if (col < P.nq) {
        let wb = col * k4;
        for (var p = 0u; p < k4; p = p + 1u) { a = fma(x4[xb + p], wq4[wb + p], a); }
    } else if (col < P.nq + P.nkv) {
        let wb = (col - P.nq) * k4;
        for (var p = 0u; p < k4; p = p + 1u) { a = fma(x4[xb + p], wk4[wb + p], a); }
    } else {
        let wb = (col - P.nq - P.nkv) * k4;
        for (var p = 0u; p < k4; p = p + 1u) { a = fma(x4[xb + p], wv4[wb + p], a); }
    }
    return (a.x + a.y) + (a.z + a.w);
}

fn qkv_dot1(col: u32, xb: u32) -> f32 {
    var a = 0.0;
    if (col < P.nq) {
        let wb = col * P.k;
        for (var p = 0u; p < P.k; p = p + 1u) { a = fma(x[xb + p], wq[wb + p], a); }
    } else if (col < P.nq + P.nkv) {
        let wb = (col - P.nq) * P.k;
        for (var p = 0u; p < P.k; p = p + 1u) { a = fma(x[xb + p], wk[wb + p], a); }
    } else {
        let wb = (col - P.nq - P.nkv) * P.k;
        for (var p = 0u; p < P.k; p = p + 1u) { a = fma(x[xb + p], wv[wb + p], a); }
    }
    return a;
}

// Adds the biases, rotates (v0, v1) = outputs (c0, c0 + 1) when RoPE applies, and stores them.
fn qkv_store_pair(row: u32, c0: u32, s0: f32, s1: f32, has1: bool) {
    var v0 = s0;
    var v1 = s1;
    if ((P.flags & 1u) != 0u) {
        v0 = v0 + aux[c0];
        if (has1) { v1 = v1 + aux[c0 + 1u]; }
    }
    if ((P.flags & 2u) != 0u && c0 < P.nq + P.nkv) {
        let c = select(c0 - P.nq, c0, c0 < P.nq);
        let tb = P.table_off + ((P.start_pos + row) * (P.hs / 2u) + (c % P.hs) / 2u) * 2u;
        let cs = aux[tb];
        let sn = aux[tb + 1u];
        let r0 = v0 * cs - v1 * sn;
        v1 = v0 * sn + v1 * cs;
        v0 = r0;
    }
    for (var i = 0u; i < 2u; i = i + 1u) {
        let col = c0 + i;
        let v = select(v0, v1, i == 1u);
        if (i == 1u && !has1) { break; }
        if (col < P.nq) {
            q[row * P.nq + col] = v;
        } else if (col < P.nq + P.nkv) {
            kc[P.kv_offset + row * P.nkv + col - P.nq] = v;
        } else {
            vc[P.kv_offset + row * P.nkv + col - P.nq - P.nkv] = v;
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn rows4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let total = P.nq + 2u * P.nkv;
    let c0 = gid.x * 2u;
    let row = gid.y;
    if (c0 >= total || row >= P.m) { return; }
    let k4 = P.k / 4u;
    let xb = P.x_offset / 4u + row * k4;
    let has1 = c0 + 1u < total;
    var s1 = 0.0;
    if (has1) { s1 = qkv_dot4(c0 + 1u, xb, k4); }
    qkv_store_pair(row, c0, qkv_dot4(c0, xb, k4), s1, has1);
}

@compute @workgroup_size(64, 1, 1)
fn rows1(@builtin(global_invocation_id) gid: vec3<u32>) {
    let total = P.nq + 2u * P.nkv;
    let c0 = gid.x * 2u;
    let row = gid.y;
    if (c0 >= total || row >= P.m) { return; }
    let xb = P.x_offset + row * P.k;
    let has1 = c0 + 1u < total;
    var s1 = 0.0;
    if (has1) { s1 = qkv_dot1(c0 + 1u, xb); }
    qkv_store_pair(row, c0, qkv_dot1(c0, xb), s1, has1);
}
