// loss.wgsl: softmax + cross-entropy per row, fused, one invocation per row (sums in column order).
//   logits (rows, V), replaced by their gradient scale * (softmax - onehot(target))
//   targets (rows,) u32, losses (rows,): -log softmax(logits)[target]
//   a row whose target is the ignored id (when has_ignore) gets loss 0 and a zero gradient; a
//   target >= V gets a NaN loss (the trainer stops on it) and the softmax as its gradient

@group(0) @binding(0) var<uniform> P: LossParams;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = flat_group(wid, nwg) * 64u + lid.x;
    if (r >= P.rows) { return; }
    let t = targets[r];
    let base = r * P.v;
    if (P.has_ignore != 0u && t == P.ignore) {
        for (var j = 0u; j < P.v; j = j + 1u) { logits[base + j] = 0.0; }
        losses[r] = 0.0;
        return;
    }
    var mx = NEG_BIG;
    for (var j = 0u; j < P.v; j = j + 1u) { mx = max(mx, logits[base + j]); }
    var z = 0.0;
    for (var j = 0u; j < P.v; j = j + 1u) { z = z + exp(logits[base + j] - mx); }
    let lse = mx + log(z);
    if (t < P.v) {
        losses[r] = lse - logits[base + t];
    } else {
        // a quiet NaN made at run time: Tint rejects a NaN that a constant expression would fold to
        losses[r] = bitcast<f32>(0x7fc00000u + min(P.v, 0u));
    }
    for (var j = 0u; j < P.v; j = j + 1u) {
        let p = exp(logits[base + j] - lse);
        logits[base + j] = (p - select(0.0, 1.0, j == t)) * P.scale;
    }
}
