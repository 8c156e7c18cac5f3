// embed16.wgsl: embed.wgsl's entries over a 16-bit table (V, C) packed in pairs as matmul16.wgsl
// packs a weight (rows padded to an even length; EmbedParams.wfmt: 0 f16, 1 bf16), read with
// half.wgsl's packed_at (prepended by src/gpu/wgsl.rs).
//   entry `lookup`:   out[t, :] = table[ids[t], :] * scale (an id >= V gives a zero row; a
//                     table split by rows binds rows start..start + V, as in embed.wgsl)
//   entry `add_rows`: out[t, :] += table[start + t, :] (learned positions)

@group(0) @binding(0) var<uniform> E: EmbedParams;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> eout: array<f32>;

fn table_at(row: u32, col: u32) -> f32 {
    let cw = (E.c + 1u) / 2u;
    return packed_at(table[row * cw + col / 2u], col, E.wfmt);
}

@compute @workgroup_size(256, 1, 1)
fn lookup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= E.t * E.c) { return; }
    let t = idx / E.c;
    let col = idx % E.c;
    let id = ids[t];
    var val = 0.0;
    if (id >= E.start && id - E.start < E.v) {
        val = table_at(id - E.start, col) * E.scale;
    } else if (E.start != 0u) {
        return;
    }
    eout[idx] = val;
}

@compute @workgroup_size(256, 1, 1)
fn add_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= E.t * E.c) { return; }
    eout[idx] = eout[idx] + table_at(E.start + idx / E.c, idx % E.c);
}
