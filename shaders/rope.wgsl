// rope.wgsl: rotary position embedding on adjacent pairs, in place, one thread per pair.
//   x     rows t at offset + t*row_stride, each NH heads of HS values      (T, NH, HS)
//   table (max_pos, HS/2, 2): cos and sin of pos * theta^(-2i/HS), built once on the CPU
//   token t is at position start_pos + t
//   (x0, x1) <- (x0 cos - x1 sin, x0 sin + x1 cos)

@group(0) @binding(0) var<uniform> P: RopeParams;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    let half = P.hs / 2u;
    if (idx >= P.t * P.nh * half) { return; }
    let i = idx % half;
    let h = (idx / half) % P.nh;
    let t = idx / (half * P.nh);
    let tb = ((P.start_pos + t) * half + i) * 2u;
    let c = table[tb];
    let s = table[tb + 1u];
    let base = P.offset + t * P.row_stride + h * P.hs + 2u * i;
    let x0 = x[base];
    let x1 = x[base + 1u];
    x[base] = x0 * c - x1 * s;
    x[base + 1u] = x0 * s + x1 * c;
}

// entry `backward`: the inverse rotation (by -angle), in place: RoPE's backward on the gradient.
//   (x0, x1) <- (x0 cos + x1 sin, -x0 sin + x1 cos)
@compute @workgroup_size(256, 1, 1)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    let half = P.hs / 2u;
    if (idx >= P.t * P.nh * half) { return; }
    let i = idx % half;
    let h = (idx / half) % P.nh;
    let t = idx / (half * P.nh);
    let tb = ((P.start_pos + t) * half + i) * 2u;
    let c = table[tb];
    let s = table[tb + 1u];
    let base = P.offset + t * P.row_stride + h * P.hs + 2u * i;
    let x0 = x[base];
    let x1 = x[base + 1u];
    x[base] = x0 * c + x1 * s;
    x[base + 1u] = -x0 * s + x1 * c;
}
