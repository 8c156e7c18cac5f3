// common.wgsl: prepended to every kernel source by src/gpu/context.rs.
// Conventions: all tensors are row-major f32 (or u32 ids) in storage buffers; binding 0 of every
// kernel is its uniform params struct (bound with a dynamic offset into one shared arena).
// Large 1-D launches are folded into a 2-D grid of at most 65535 workgroups per dimension, and
// kernels recover the flat workgroup index with flat_group().

const NEG_BIG: f32 = -3.0e38;

fn flat_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
