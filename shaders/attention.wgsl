// attention.wgsl: masked scaled dot-product attention, one workgroup per (query row i, head h).
//   q     rows i of NH*HS values at q_offset + i*q_stride        (Tq, NH, HS)
//   k, v  rows j of NKV*HS values at k_offset + j*k_stride, ...   (Tk, NKV, HS)
//   mask  (Tq, Tk), 1 = may attend, 0 = blocked (used when has_mask)
//   causal: key j allowed iff j <= i + causal_offset (used when is_causal; offset = cached length)
//   out   (Tq, NH*HS)
//   probs (NH, Tq, Tk): the attention probabilities, also the scratch for the scores.
// Query head h reads KV head h / (NH / NKV) (grouped-query attention).
// Blocked keys get exactly 0; a row with no allowed key gives zeros (never NaN).

@group(0) @binding(0) var<uniform> P: AttnParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> probs: array<f32>;

const WG: u32 = 64u;
const MAX_HS: u32 = 256u;
var<workgroup> red: array<f32, 64>;
var<workgroup> qs: array<f32, 256>;

fn allowed(i: u32, j: u32) -> bool {
    var ok = true;
    if (P.has_mask != 0u) { ok = mask[i * P.tk + j] != 0.0; }
    if (P.is_causal != 0u && j > i + P.causal_offset) { ok = false; }
    return ok;
}

fn reduce_max(lid: u32, x: f32) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, x: f32) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let i = wid.x;
    let h = wid.y;
    let lid = lid3.x;
    let g = h / (P.nh / P.nkv);
    let prow = (h * P.tq + i) * P.tk;
    let qbase = P.q_offset + i * P.q_stride + h * P.hs;
    for (var d = lid; d < P.hs; d = d + WG) { qs[d] = q[qbase + d]; }
    workgroupBarrier();

    // 1. scores = q . k * scale for allowed keys (kept in probs), and their max.
    var mx = NEG_BIG;
    for (var j = lid; j < P.tk; j = j + WG) {
        if (allowed(i, j)) {
            let kb = P.k_offset + j * P.k_stride + g * P.hs;
            var s = 0.0;
            for (var d = 0u; d < P.hs; d = d + 1u) { s = fma(qs[d], k[kb + d], s); }
            s = s * P.scale;
            probs[prow + j] = s;
            mx = max(mx, s);
        }
    }
    mx = reduce_max(lid, mx);
    let any_allowed = mx > NEG_BIG;

    // 2. exp(s - max) for allowed keys, exactly 0 for blocked ones; their sum.
    var z = 0.0;
    for (var j = lid; j < P.tk; j = j + WG) {
        var e = 0.0;
        if (any_allowed && allowed(i, j)) { e = exp(probs[prow + j] - mx); }
        probs[prow + j] = e;
        z = z + e;
    }
    z = reduce_sum(lid, z);
    var inv = 0.0;
    if (z > 0.0) { inv = 1.0 / z; }

    // 3. normalise.
    for (var j = lid; j < P.tk; j = j + WG) { probs[prow + j] = probs[prow + j] * inv; }
    storageBarrier();

    // 4. out = probs @ V, one output dimension per thread.
    let obase = i * P.nh * P.hs + h * P.hs;
    for (var d = lid; d < P.hs; d = d + WG) {
        var acc = 0.0;
        for (var j = 0u; j < P.tk; j = j + 1u) {
            acc = fma(probs[prow + j], v[P.v_offset + j * P.v_stride + g * P.hs + d], acc);
        }
        out[obase + d] = acc;
    }
}

// One invocation per (query row i, head h), no workgroup memory and no barriers (for CPU-emulated
// GPUs, where a barrier switches between the SIMD lanes that emulate invocations): the same four
// steps as `main`, each over the whole row in one invocation; the max and the sum are taken in
// key order. Launched as (ceil(Tq / 64), NH) workgroups of 64.
@compute @workgroup_size(64, 1, 1)
fn rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let h = gid.y;
    if (i >= P.tq) { return; }
    let g = h / (P.nh / P.nkv);
    let prow = (h * P.tq + i) * P.tk;
    let qbase = P.q_offset + i * P.q_stride + h * P.hs;
    // keys past the causal limit are blocked: the loops stop there (probs past it are set to 0)
    var jend = P.tk;
    if (P.is_causal != 0u) { jend = min(P.tk, i + P.causal_offset + 1u); }
    var mx = NEG_BIG;
    for (var j = 0u; j < jend; j = j + 1u) {
        if (allowed(i, j)) {
            let kb = P.k_offset + j * P.k_stride + g * P.hs;
            var s = 0.0;
            for (var d = 0u; d < P.hs; d = d + 1u) { s = fma(q[qbase + d], k[kb + d], s); }
            s = s * P.scale;
            probs[prow + j] = s;
            mx = max(mx, s);
        }
    }
    let any_allowed = mx > NEG_BIG;
    var z = 0.0;
    for (var j = 0u; j < jend; j = j + 1u) {
        var e = 0.0;
        if (any_allowed && allowed(i, j)) { e = exp(probs[prow + j] - mx); }
        probs[prow + j] = e;
        z = z + e;
    }
    var inv = 0.0;
    if (z > 0.0) { inv = 1.0 / z; }
    for (var j = 0u; j < jend; j = j + 1u) { probs[prow + j] = probs[prow + j] * inv; }
    for (var j = jend; j < P.tk; j = j + 1u) { probs[prow + j] = 0.0; }
    let obase = i * P.nh * P.hs + h * P.hs;
    let vb = P.v_offset + g * P.hs;
    for (var d = 0u; d < P.hs; d = d + 1u) {
        var acc = 0.0;
        for (var j = 0u; j < jend; j = j + 1u) {
            acc = fma(probs[prow + j], v[vb + j * P.v_stride + d], acc);
        }
        out[obase + d] = acc;
    }
}
