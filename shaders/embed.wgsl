// embed.wgsl: token embedding lookup and adding positional rows, one thread per value.
//   entry `lookup`:   out[t, :] = table[ids[t], :] * scale    table (V, C), ids (T,), out (T, C)
//                     an id >= V gives a zero row (the host rejects such ids before this runs);
//                     a table split by rows (Gpu::row_chunks) binds rows start..start + V: a
//                     dispatch with start > 0 writes only the ids of its rows, the first writes the rest
//                     (an id in a later range is overwritten by that range's dispatch)
//   entry `add_rows`: out[t, :] += table[start + t, :]        table (max_len, C): the sinusoidal PE

@group(0) @binding(0) var<uniform> P: EmbedParams;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn lookup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= P.t * P.c) { return; }
    let t = idx / P.c;
    let col = idx % P.c;
    let id = ids[t];
    var val = 0.0;
    if (id >= P.start && id - P.start < P.v) {
        val = table[(id - P.start) * P.c + col] * P.scale;
    } else if (P.start != 0u) {
        return;
    }
    out[idx] = val;
}

@compute @workgroup_size(256, 1, 1)
fn add_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= P.t * P.c) { return; }
    out[idx] = out[idx] + table[P.start * P.c + idx];
}
