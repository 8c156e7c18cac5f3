// moe.wgsl: the mixture-of-experts router, one thread per token.
//   logits (T, E) from the router Linear   ->   probs (T, E) = softmax(logits)
//   experts (T, K): top-k in descending probability, ties to the lower index
//   weights (T, K): the chosen probabilities renormalised to sum to 1

@group(0) @binding(0) var<uniform> P: MoeParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> experts: array<u32>;
@group(0) @binding(4) var<storage, read_write> weights: array<f32>;

const MAX_E: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn router(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = flat_group(wid, nwg) * 64u + lid.x;
    if (t >= P.t) { return; }
    let base = t * P.e;
    var mx = NEG_BIG;
    for (var i = 0u; i < P.e; i = i + 1u) { mx = max(mx, logits[base + i]); }
    var z = 0.0;
    for (var i = 0u; i < P.e; i = i + 1u) { z = z + exp(logits[base + i] - mx); }
    for (var i = 0u; i < P.e; i = i + 1u) { probs[base + i] = exp(logits[base + i] - mx) / z; }
    var taken: array<bool, 64>;
    for (var i = 0u; i < MAX_E; i = i + 1u) { taken[i] = false; }
    var sum = 0.0;
    for (var r = 0u; r < P.k; r = r + 1u) {
        var best = 0xffffffffu;
        var bp = 0.0;
        for (var i = 0u; i < P.e; i = i + 1u) {
            let p = probs[base + i];
            if (!taken[i] && (best == 0xffffffffu || p > bp)) { best = i; bp = p; }
        }
        taken[best] = true;
        experts[t * P.k + r] = best;
        sum = sum + bp;
    }
    for (var r = 0u; r < P.k; r = r + 1u) {
        weights[t * P.k + r] = probs[base + experts[t * P.k + r]] / sum;
    }
}

// entry `capacity`: deterministic capacity, one thread per expert e, tokens in order.
//   experts, weights (T, K) from `router`  ->  gate (T, E): the kept weight of expert e for token t
//   (0 where e was not chosen or the assignment was dropped), kept (T, K): 1 kept, 0 dropped.
//   An expert keeps its first `capacity` assignments (token order); capacity 0xffffffff = no limit.
@group(0) @binding(1) var<storage, read> c_experts: array<u32>;
@group(0) @binding(2) var<storage, read> c_weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> c_gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> c_kept: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn capacity(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x;
    if (e >= P.e) { return; }
    var count = 0u;
    for (var t = 0u; t < P.t; t = t + 1u) {
        var g = 0.0;
        for (var r = 0u; r < P.k; r = r + 1u) {
            if (c_experts[t * P.k + r] == e) {
                if (count < P.capacity) {
                    g = c_weights[t * P.k + r];
                    c_kept[t * P.k + r] = 1u;
                    count = count + 1u;
                } else {
                    c_kept[t * P.k + r] = 0u;
                }
            }
        }
        c_gate[t * P.e + e] = g;
    }
}

// entry `combine`: out (T, C) = sum_e gate[t, e] * ys[e, t, :], ys (E, ys_rows, C); one thread per value.
@group(0) @binding(1) var<storage, read> m_gate: array<f32>;
@group(0) @binding(2) var<storage, read> m_ys: array<f32>;
@group(0) @binding(3) var<storage, read_write> m_out: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= P.t * P.c) { return; }
    let t = idx / P.c;
    let col = idx % P.c;
    var acc = 0.0;
    for (var e = 0u; e < P.e; e = e + 1u) {
        let g = m_gate[t * P.e + e];
        if (g != 0.0) { acc = fma(g, m_ys[(e * P.ys_rows + t) * P.c + col], acc); }
    }
    m_out[idx] = acc;
}
