// embed_bw.wgsl: the training side of the embedding family, one thread per output value, each
// summing its rows in order (no atomics).
//   entry `embedding`: dst[v, c] += sum over r < rows with ids[r] == v of src[r, c] * scale
//                      dst (V, C) the table's gradient, src (rows, C); an id >= V matches no row
//   entry `positions`: dst[j, c] += sum over r < rows with r % period == j of src[r, c]
//                      dst (period, C) the position table's gradient
//   entry `add`:       dst[r, c] += src[r % period, c] for r < rows: a position table (period, C)
//                      added to B stacked sequences

@group(0) @binding(0) var<uniform> P: EmbedBwParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= P.v * P.c) { return; }
    let v = idx / P.c;
    let col = idx % P.c;
    var acc = dst[idx];
    for (var r = 0u; r < P.rows; r = r + 1u) {
        if (ids[r] == v) { acc = fma(src[r * P.c + col], P.scale, acc); }
    }
    dst[idx] = acc;
}

@compute @workgroup_size(256, 1, 1)
fn positions(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= P.period * P.c) { return; }
    let j = idx / P.c;
    let col = idx % P.c;
    var acc = dst[idx];
    for (var r = j; r < P.rows; r = r + P.period) { acc = acc + src[r * P.c + col]; }
    dst[idx] = acc;
}

@compute @workgroup_size(256, 1, 1)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= P.rows * P.c) { return; }
    let r = idx / P.c;
    let col = idx % P.c;
    dst[idx] = dst[idx] + src[(r % P.period) * P.c + col];
}
