// attention_bw.wgsl: the training graph's batched attention, forward and backward, one invocation
// per row, every sum over keys, queries and heads taken in order (no atomics, no barriers).
//   q, out, dq, dout  (B*Tq, NH*HS)      k, v, dk, dv (B*Tk, NKV*HS)
//   probs (B, NH, Tq, Tk); keys (B, Tk), 1 = may attend (when has_keys); causal: key j <= query i
//   dots  (B, NH, Tq): sum over j of P_ij dP_ij, written by `dq` for `dkv`
// Query head h reads key/value head h / (NH / NKV) (grouped-query attention).
//   entry `forward`, per (query i, head h, sequence b): probs and out as attention.wgsl's `rows`;
//     a query with no key left gets zero probabilities and a zero output
//   entry `dq`, per (i, h, b): dP_ij = dO_i . V_j, dS_ij = P_ij (dP_ij - dots_i) scale,
//     dq_i = sum over j of dS_ij K_j
//   entry `dkv`, per (key j, kv head g, b): over the query heads h of g and the queries i in order,
//     dk_j = sum dS_ij q_i, dv_j = sum P_ij dO_i
// When causal, every loop over keys stops at the query (key_end) and `dkv`'s loop over queries
// starts at the key: the terms skipped have P_ij = 0.
// Launched as (ceil(rows / 64), heads, B) workgroups of 64.

@group(0) @binding(0) var<uniform> P: BatchAttnParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> keys: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> probs: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read_write> dots: array<f32>;
@group(0) @binding(9) var<storage, read_write> dk: array<f32>;
@group(0) @binding(10) var<storage, read_write> dv: array<f32>;

const MAX_HS: u32 = 256u;

fn allowed(b: u32, i: u32, j: u32) -> bool {
    var ok = true;
    if (P.has_keys != 0u) { ok = keys[b * P.tk + j] != 0.0; }
    if (P.causal != 0u && j > i) { ok = false; }
    return ok;
}

// The keys query i may reach: all, or up to itself when causal (the loops stop there; the
// probabilities past it are written as zeros).
fn key_end(i: u32) -> u32 {
    if (P.causal != 0u) { return min(i + 1u, P.tk); }
    return P.tk;
}

@compute @workgroup_size(64, 1, 1)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let h = gid.y;
    let b = gid.z;
    if (i >= P.tq) { return; }
    let g = h / (P.nh / P.nkv);
    let qbase = (b * P.tq + i) * P.nh * P.hs + h * P.hs;
    let kw = P.nkv * P.hs;
    let prow = ((b * P.nh + h) * P.tq + i) * P.tk;
    let jend = key_end(i);
    var mx = NEG_BIG;
    for (var j = 0u; j < jend; j = j + 1u) {
        if (allowed(b, i, j)) {
            let kb = (b * P.tk + j) * kw + g * P.hs;
            var s = 0.0;
            for (var d = 0u; d < P.hs; d = d + 1u) { s = fma(q[qbase + d], k[kb + d], s); }
            s = s * P.scale;
            probs[prow + j] = s;
            mx = max(mx, s);
        }
    }
    let any_allowed = mx > NEG_BIG;
    var z = 0.0;
    for (var j = 0u; j < P.tk; j = j + 1u) {
        var e = 0.0;
        if (any_allowed && j < jend && allowed(b, i, j)) { e = exp(probs[prow + j] - mx); }
        probs[prow + j] = e;
        z = z + e;
    }
    var inv = 0.0;
    if (z > 0.0) { inv = 1.0 / z; }
    for (var j = 0u; j < jend; j = j + 1u) { probs[prow + j] = probs[prow + j] * inv; }
    for (var d = 0u; d < P.hs; d = d + 1u) {
        var acc = 0.0;
        for (var j = 0u; j < jend; j = j + 1u) {
            acc = fma(probs[prow + j], v[(b * P.tk + j) * kw + g * P.hs + d], acc);
        }
        out[qbase + d] = acc;
    }
}

@compute @workgroup_size(64, 1, 1)
fn dq(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let h = gid.y;
    let b = gid.z;
    if (i >= P.tq) { return; }
    let g = h / (P.nh / P.nkv);
    let qbase = (b * P.tq + i) * P.nh * P.hs + h * P.hs;
    let kw = P.nkv * P.hs;
    let prow = ((b * P.nh + h) * P.tq + i) * P.tk;
    let jend = key_end(i);
    var dot = 0.0;
    for (var j = 0u; j < jend; j = j + 1u) {
        let p = probs[prow + j];
        if (p != 0.0) {
            let vb = (b * P.tk + j) * kw + g * P.hs;
            var dp = 0.0;
            for (var d = 0u; d < P.hs; d = d + 1u) { dp = fma(dout[qbase + d], v[vb + d], dp); }
            dot = fma(p, dp, dot);
        }
    }
    dots[(b * P.nh + h) * P.tq + i] = dot;
    var acc: array<f32, MAX_HS>;
    for (var d = 0u; d < P.hs; d = d + 1u) { acc[d] = 0.0; }
    for (var j = 0u; j < jend; j = j + 1u) {
        let p = probs[prow + j];
        if (p != 0.0) {
            let kb = (b * P.tk + j) * kw + g * P.hs;
            var dp = 0.0;
            for (var d = 0u; d < P.hs; d = d + 1u) { dp = fma(dout[qbase + d], v[kb + d], dp); }
            let ds = p * (dp - dot) * P.scale;
            for (var d = 0u; d < P.hs; d = d + 1u) { acc[d] = fma(ds, k[kb + d], acc[d]); }
        }
    }
    for (var d = 0u; d < P.hs; d = d + 1u) { out[qbase + d] = acc[d]; }
}

@compute @workgroup_size(64, 1, 1)
fn dkv(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let g = gid.y;
    let b = gid.z;
    if (j >= P.tk) { return; }
    let group = P.nh / P.nkv;
    let kb = (b * P.tk + j) * P.nkv * P.hs + g * P.hs;
    var ak: array<f32, MAX_HS>;
    var av: array<f32, MAX_HS>;
    for (var d = 0u; d < P.hs; d = d + 1u) {
        ak[d] = 0.0;
        av[d] = 0.0;
    }
    for (var hh = 0u; hh < group; hh = hh + 1u) {
        let h = g * group + hh;
        for (var i = select(0u, j, P.causal != 0u); i < P.tq; i = i + 1u) {
            let p = probs[((b * P.nh + h) * P.tq + i) * P.tk + j];
            if (p != 0.0) {
                let qbase = (b * P.tq + i) * P.nh * P.hs + h * P.hs;
                var dp = 0.0;
                for (var d = 0u; d < P.hs; d = d + 1u) { dp = fma(dout[qbase + d], v[kb + d], dp); }
                let ds = p * (dp - dots[(b * P.nh + h) * P.tq + i]) * P.scale;
                for (var d = 0u; d < P.hs; d = d + 1u) {
                    ak[d] = fma(ds, q[qbase + d], ak[d]);
                    av[d] = fma(p, dout[qbase + d], av[d]);
                }
            }
        }
    }
    for (var d = 0u; d < P.hs; d = d + 1u) {
        dk[kb + d] = ak[d];
        dv[kb + d] = av[d];
    }
}
