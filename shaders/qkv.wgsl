// qkv.wgsl: the three attention projections of a few-row pass in one GEMV dispatch (no biases):
//   x (M, K) from x[x_offset]; W_q (NQ, K); W_k, W_v (NKV, K)
//   q (M, NQ) from q[0];  k, v (M, NKV) from k[kv_offset], v[kv_offset] (rows of the KV cache)
// The NQ + 2 NKV outputs of a row are numbered in that order; a workgroup of 256 threads takes 32
// of them, 8 lanes per output split K (vec4 loads: K % 4 == 0, x_offset % 4 == 0) and reduce in
// workgroup memory, as in gemv.wgsl.

struct QkvParams {
    m: u32,
    k: u32,
    nq: u32,
    nkv: u32,
    x_offset: u32,
    kv_offset: u32,
    _p0: u32,
    _p1: u32,
};

@group(0) @binding(0) var<uniform> P: QkvParams;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;  // (M, K/4)
@group(0) @binding(2) var<storage, read> wq4: array<vec4<f32>>; // (NQ, K/4)
@group(0) @binding(3) var<storage, read> wk4: array<vec4<f32>>; // (NKV, K/4)
@group(0) @binding(4) var<storage, read> wv4: array<vec4<f32>>; // (NKV, K/4)
@group(0) @binding(5) var<storage, read_write> q: array<f32>;   // (M, NQ)
@group(0) @binding(6) var<storage, read_write> kc: array<f32>;  // (.., NKV) the key cache
@group(0) @binding(7) var<storage, read_write> vc: array<f32>;  // (.., NKV) the value cache

const LANES: u32 = 8u;
const OUTS: u32 = 32u;
var<workgroup> red: array<f32, 256>; // (OUTS, LANES)

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
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
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lane < s) { red[lid.x] = red[lid.x] + red[lid.x + s]; }
    }
    workgroupBarrier();
    if (lane != 0u) { return; }
    let v = red[lid.x];
    if (col < P.nq) {
        q[row * P.nq + col] = v;
    } else if (col < P.nq + P.nkv) {
        kc[P.kv_offset + row * P.nkv + col - P.nq] = v;
    } else if (col < P.nq + 2u * P.nkv) {
        vc[P.kv_offset + row * P.nkv + col - P.nq - P.nkv] = v;
    }
}
