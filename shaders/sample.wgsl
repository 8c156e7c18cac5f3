// sample.wgsl: picks the next token on the GPU so that only 4 bytes are read back per token.
// One workgroup of 256 threads; thread t owns the chunk [t*C, (t+1)*C) of the vocabulary.
//   logits (.., V): the row at logits_offset          out: array<u32>, out[0] = the token id,
//                                                      out[1] = the number of NaN/Inf logits in the row
//   mode 0: argmax (ties -> lowest index)
//   mode 1: temperature, then top-k (keep logits >= the k-th largest), then top-p (keep p >= tau,
//           tau the largest value whose kept mass >= top_p), then the first index whose cumulative
//           kept mass exceeds u * Z. src/cpu/sample.rs mirrors every summation order.

@group(0) @binding(0) var<uniform> P: SampleUniform;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
var<workgroup> redf: array<f32, 256>;
var<workgroup> redu: array<u32, 256>;
var<workgroup> chunk: array<f32, 256>;

fn order_key(f: f32) -> u32 {
    let b = bitcast<u32>(f);
    if ((b & 0x80000000u) != 0u) { return ~b; }
    return b | 0x80000000u;
}

fn tree_sum(lid: u32, x: f32) -> f32 {
    redf[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { redf[lid] = redf[lid] + redf[lid + s]; }
        workgroupBarrier();
    }
    let r = redf[0];
    workgroupBarrier();
    return r;
}

fn tree_count(lid: u32, x: u32) -> u32 {
    redu[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { redu[lid] = redu[lid] + redu[lid + s]; }
        workgroupBarrier();
    }
    let r = redu[0];
    workgroupBarrier();
    return r;
}

fn logit(i: u32) -> f32 { return logits[P.logits_offset + i]; }

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let c = (P.v + WG - 1u) / WG;
    let lo = min(lid * c, P.v);
    let hi = min(lo + c, P.v);

    // Max (and argmax, ties to the lowest index).
    var best_v = NEG_BIG;
    var best_i = 0xffffffffu;
    for (var i = lo; i < hi; i = i + 1u) {
        let l = logit(i);
        if (best_i == 0xffffffffu || l > best_v) { best_v = l; best_i = i; }
    }
    redf[lid] = best_v;
    redu[lid] = best_i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            let ov = redf[lid + s];
            let oi = redu[lid + s];
            let take = oi != 0xffffffffu && (redu[lid] == 0xffffffffu || ov > redf[lid] || (ov == redf[lid] && oi < redu[lid]));
            if (take) { redf[lid] = ov; redu[lid] = oi; }
        }
        workgroupBarrier();
    }
    let m = redf[0];
    let arg = redu[0];
    workgroupBarrier();
    // out[1] = how many logits are NaN or Inf (exponent bits all ones; a bit test, since WGSL may
    // assume floats are finite), so the host refuses them instead of trusting the token.
    var bad = 0u;
    for (var i = lo; i < hi; i = i + 1u) {
        if ((bitcast<u32>(logit(i)) & 0x7f800000u) == 0x7f800000u) { bad = bad + 1u; }
    }
    let nbad = tree_count(lid, bad);
    if (lid == 0u) { out[1] = nbad; }
    if (P.mode == 0u) {
        if (lid == 0u) { out[0] = arg; }
        return;
    }

    // top-k: the key of the k-th largest logit, bit by bit from the top.
    var kth = 0u;
    if (P.top_k > 0u && P.top_k < P.v) {
        for (var bit = 31i; bit >= 0i; bit = bit - 1i) {
            let cand = kth | (1u << u32(bit));
            var cnt = 0u;
            for (var i = lo; i < hi; i = i + 1u) { if (order_key(logit(i)) >= cand) { cnt = cnt + 1u; } }
            if (tree_count(lid, cnt) >= P.top_k) { kth = cand; }
        }
    }

    // p_i = exp((l_i - max) / T) for tokens inside the top-k, else 0; Z their sum.
    var zs = 0.0;
    for (var i = lo; i < hi; i = i + 1u) {
        let l = logit(i);
        if (order_key(l) >= kth) { zs = zs + exp((l - m) / P.temperature); }
    }
    let z = tree_sum(lid, zs);

    // top-p: the largest tau whose kept mass is >= top_p * Z.
    var tau_bits = 0u;
    if (P.top_p < 1.0) {
        let need = P.top_p * z;
        for (var bit = 30i; bit >= 0i; bit = bit - 1i) {
            let cand = tau_bits | (1u << u32(bit));
            let tau = bitcast<f32>(cand);
            var ms = 0.0;
            for (var i = lo; i < hi; i = i + 1u) {
                let l = logit(i);
                var p = 0.0;
                if (order_key(l) >= kth) { p = exp((l - m) / P.temperature); }
                if (p >= tau) { ms = ms + p; }
            }
            if (tree_sum(lid, ms) >= need) { tau_bits = cand; }
        }
    }
    let tau = bitcast<f32>(tau_bits);

    // Kept mass per chunk, then the first index whose cumulative kept mass exceeds u * Z2.
    var cs = 0.0;
    for (var i = lo; i < hi; i = i + 1u) {
        let l = logit(i);
        var p = 0.0;
        if (order_key(l) >= kth) { p = exp((l - m) / P.temperature); }
        if (p > 0.0 && p >= tau) { cs = cs + p; }
    }
    chunk[lid] = cs;
    let z2 = tree_sum(lid, cs);
    if (lid != 0u) { return; }
    let goal = P.u * z2;
    var acc = 0.0;
    for (var t = 0u; t < WG; t = t + 1u) {
        if (acc + chunk[t] > goal) {
            let residual = goal - acc;
            var acc2 = 0.0;
            let clo = min(t * c, P.v);
            let chi = min(clo + c, P.v);
            for (var i = clo; i < chi; i = i + 1u) {
                let l = logit(i);
                var p = 0.0;
                if (order_key(l) >= kth) { p = exp((l - m) / P.temperature); }
                if (p > 0.0 && p >= tau) {
                    acc2 = acc2 + p;
                    if (acc2 > residual) { out[0] = i; return; }
                }
            }
            break;
        }
        acc = acc + chunk[t];
    }
    // Rounding put the target past the last kept token: take the last kept token.
    var i = P.v;
    loop {
        if (i == 0u) { out[0] = 0u; return; }
        i = i - 1u;
        let l = logit(i);
        var p = 0.0;
        if (order_key(l) >= kth) { p = exp((l - m) / P.temperature); }
        if (p > 0.0 && p >= tau) { out[0] = i; return; }
    }
}

// ---- greedy1: mode 0 (argmax, ties to the lowest index, and out[1] the NaN/Inf count) in one
// invocation that walks the whole row: no workgroup memory or barriers, for GPUs emulated on the
// CPU (SwiftShader, llvmpipe), where `main`'s 8-step tree reductions over 256 threads cost more
// than the V serial reads. Where the row has no NaN or Inf (the only rows the host trusts, see
// out[1]) it picks what `main` picks: the first index of the maximum.
@compute @workgroup_size(1, 1, 1)
fn greedy1() {
    var best_v = NEG_BIG;
    var best_i = 0u;
    var bad = 0u;
    for (var i = 0u; i < P.v; i = i + 1u) {
        let l = logit(i);
        if (i == 0u || l > best_v) { best_v = l; best_i = i; }
        if ((bitcast<u32>(l) & 0x7f800000u) == 0x7f800000u) { bad = bad + 1u; }
    }
    out[0] = best_i;
    out[1] = bad;
}
