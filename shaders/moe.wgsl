// moe.wgsl: the mixture-of-experts router, one thread per token.
//   logits (T, E) from the router Linear   ->   probs (T, E) = softmax(logits)
//   experts (T, K): top-k in descending probability, ties to the lower index
//   weights (T, K): the chosen probabilities renormalised to sum to 1

struct MoeParams {
    t: u32,
    e: u32,
    k: u32,
    _pad: u32,
};

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
