// attention_rows.wgsl: attention.wgsl's contract (the same bindings and AttnParams) with one
// invocation per (query row i, head h) and no workgroup memory or barriers, for few-row passes
// (cached decoding) on GPUs emulated on the CPU (SwiftShader, llvmpipe), where attention.wgsl's
// workgroup reductions (a barrier per step) cost more than the work. The invocation walks its
// keys three times (scores and their max, exp and their sum, normalise) and then computes the
// HS outputs, each over all keys: O(Tk * HS) serial work per invocation, so only for few rows.
//   q     rows i of NH*HS values at q_offset + i*q_stride        (Tq, NH, HS)
//   k, v  rows j of NKV*HS values at k_offset + j*k_stride, ...   (Tk, NKV, HS)
//   mask  (Tq, Tk), 1 = may attend (has_mask); causal: key j allowed iff j <= i + causal_offset
//   out   (Tq, NH*HS);  probs (NH, Tq, Tk): the probabilities (and the scratch for the scores)
// Blocked keys get exactly 0; a row with no allowed key gives zeros (never NaN). Grid:
// (ceil(Tq * NH / 64), 1, 1), invocation t = i * NH + h.

struct AttnParams {
    tq: u32,
    tk: u32,
    nh: u32,
    nkv: u32,
    hs: u32,
    has_mask: u32,
    is_causal: u32,
    causal_offset: u32,
    q_offset: u32,
    q_stride: u32,
    k_offset: u32,
    k_stride: u32,
    v_offset: u32,
    v_stride: u32,
    scale: f32,
    _pad: u32,
};

@group(0) @binding(0) var<uniform> P: AttnParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> probs: array<f32>;

fn allowed(i: u32, j: u32) -> bool {
    var ok = true;
    if (P.has_mask != 0u) { ok = mask[i * P.tk + j] != 0.0; }
    if (P.is_causal != 0u && j > i + P.causal_offset) { ok = false; }
    return ok;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= P.tq * P.nh) { return; }
    let i = t / P.nh;
    let h = t % P.nh;
    let g = h / (P.nh / P.nkv);
    let prow = (h * P.tq + i) * P.tk;
    let qbase = P.q_offset + i * P.q_stride + h * P.hs;

    // 1. scores = q . k * scale for allowed keys (kept in probs), and their max.
    var mx = NEG_BIG;
    for (var j = 0u; j < P.tk; j = j + 1u) {
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

    // 2. exp(s - max) for allowed keys, exactly 0 for blocked ones; their sum.
    var z = 0.0;
    for (var j = 0u; j < P.tk; j = j + 1u) {
        var e = 0.0;
        if (any_allowed && allowed(i, j)) { e = exp(probs[prow + j] - mx); }
        probs[prow + j] = e;
        z = z + e;
    }
    var inv = 0.0;
    if (z > 0.0) { inv = 1.0 / z; }

    // 3. normalise, 4. out = probs @ V.
    for (var j = 0u; j < P.tk; j = j + 1u) { probs[prow + j] = probs[prow + j] * inv; }
    let obase = i * P.nh * P.hs + h * P.hs;
    for (var d = 0u; d < P.hs; d = d + 1u) {
        var acc = 0.0;
        for (var j = 0u; j < P.tk; j = j + 1u) {
            acc = fma(probs[prow + j], v[P.v_offset + j * P.v_stride + g * P.hs + d], acc);
        }
        out[obase + d] = acc;
    }
}
