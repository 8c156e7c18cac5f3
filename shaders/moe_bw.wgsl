// moe_bw.wgsl: the mixture-of-experts routing's backward and its load-balancing loss. Every output
// is owned by one invocation and every sum runs in a fixed order, so a run repeats bit for bit.
//   entry `combine_bw`, one thread per value of dy (T, C), the first T also own dgate[t, x]:
//     dy[t, :] = gate[t, x] * dout[t, :];  dgate[t, x] = dout[t, :] . ys[x, t, :] (in column order)
//   entry `counts`, one thread per expert i: counts[i] = the assignments to i among experts (T, K)
//   entry `router_bw`, one thread per token, from `counts`: the gradient to the router logits
//     through the kept renormalised top-k weights, the load-balancing term aux_scale * counts[i]
//     (aux E / (T K T), folded on the host) on every expert, and the softmax
//   entry `aux_loss`, one workgroup, a thread per expert (E <= 64): out[slot] = E sum_i f_i P_i,
//     f_i = counts / (T K), P_i = the mean of probs[:, i] (tokens in order), the experts in order
// An expert index >= E (never made by `router`) is counted nowhere and routes no gradient.

@group(0) @binding(0) var<uniform> P: MoeBwParams;

@group(0) @binding(1) var<storage, read> b_dout: array<f32>;
@group(0) @binding(2) var<storage, read> b_ys: array<f32>;
@group(0) @binding(3) var<storage, read> b_gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> b_dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> b_dgate: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn combine_bw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx < P.t * P.c) {
        let t = idx / P.c;
        b_dy[idx] = b_gate[t * P.e + P.x] * b_dout[idx];
    }
    if (idx < P.t) {
        let y = (P.x * P.ys_rows + idx) * P.c;
        var acc = 0.0;
        for (var j = 0u; j < P.c; j = j + 1u) { acc = fma(b_dout[idx * P.c + j], b_ys[y + j], acc); }
        b_dgate[idx * P.e + P.x] = acc;
    }
}

@group(0) @binding(1) var<storage, read> r_experts: array<u32>;
@group(0) @binding(2) var<storage, read_write> r_counts_out: array<f32>;
@group(0) @binding(2) var<storage, read> r_counts: array<f32>;
@group(0) @binding(3) var<storage, read> r_probs: array<f32>;
@group(0) @binding(4) var<storage, read> r_weights: array<f32>;
@group(0) @binding(5) var<storage, read> r_kept: array<u32>;
@group(0) @binding(6) var<storage, read> r_dgate: array<f32>;
@group(0) @binding(7) var<storage, read_write> r_dlogits: array<f32>;

const MAX_E: u32 = 64u;

// How many of the T*K assignments go to expert i (exact in f32 below 2^24).
fn count_of(i: u32) -> f32 {
    var n = 0u;
    for (var a = 0u; a < P.t * P.k; a = a + 1u) {
        if (r_experts[a] == i) { n = n + 1u; }
    }
    return f32(n);
}

@compute @workgroup_size(64, 1, 1)
fn counts(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= P.e) { return; }
    r_counts_out[i] = count_of(i);
}

@compute @workgroup_size(64, 1, 1)
fn router_bw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = flat_group(wid, nwg) * 64u + lid.x;
    if (t >= P.t) { return; }
    let base = t * P.e;
    let kb = t * P.k;
    // S = the sum of the chosen probabilities; dot = sum_r dw_r w_r (dw_r = 0 for a dropped slot)
    var s = 0.0;
    var dot = 0.0;
    for (var r = 0u; r < P.k; r = r + 1u) {
        let x = r_experts[kb + r];
        if (x >= P.e) { continue; }
        s = s + r_probs[base + x];
        if (r_kept[kb + r] != 0u) { dot = fma(r_dgate[base + x], r_weights[kb + r], dot); }
    }
    var dp: array<f32, 64>;
    for (var i = 0u; i < P.e; i = i + 1u) { dp[i] = P.aux_scale * r_counts[i]; }
    for (var r = 0u; r < P.k; r = r + 1u) {
        let x = r_experts[kb + r];
        if (x >= P.e) { continue; }
        let dw = select(0.0, r_dgate[base + x], r_kept[kb + r] != 0u);
        dp[x] = dp[x] + (dw - dot) / s;
    }
    var pdp = 0.0;
    for (var i = 0u; i < P.e; i = i + 1u) { pdp = fma(r_probs[base + i], dp[i], pdp); }
    for (var i = 0u; i < P.e; i = i + 1u) { r_dlogits[base + i] = r_probs[base + i] * (dp[i] - pdp); }
}

@group(0) @binding(2) var<storage, read> a_probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> a_out: array<f32>;

var<workgroup> fp: array<f32, 64>;

@compute @workgroup_size(64, 1, 1)
fn aux_loss(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let i = lid3.x;
    if (i < P.e) {
        var sum = 0.0;
        for (var t = 0u; t < P.t; t = t + 1u) { sum = sum + a_probs[t * P.e + i]; }
        let n = max(P.t, 1u);
        fp[i] = (count_of(i) / f32(max(P.t * P.k, 1u))) * (sum / f32(n));
    }
    workgroupBarrier();
    if (i == 0u) {
        var acc = 0.0;
        for (var j = 0u; j < P.e; j = j + 1u) { acc = acc + fp[j]; }
        a_out[P.slot] = f32(P.e) * acc;
    }
}
