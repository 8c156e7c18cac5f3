// gemv_sg.wgsl: gemv.wgsl's `gemv4` (out = act(x @ W^T + b), few rows, vec4 loads: K % 4 == 0 and
// x_offset % 4 == 0) with the reduction in subgroup operations instead of workgroup memory and
// barriers. Built only where the adapter has wgpu's SUBGROUP feature (src/gpu/matmul.rs); the
// plain gemv4 stays for the others. A workgroup of 256 threads takes 32 outputs of one row; each
// subgroup takes outputs sg, sg + num_subgroups, ... one at a time, its lanes splitting K (lane l
// reads vec4s l, l + subgroup_size, ...), and subgroupAdd sums them: no barrier, whatever the
// subgroup size (8 on llvmpipe: one output per subgroup, as gemv4's 8 lanes; 32 on NVIDIA).
// (No `enable subgroups;`: naga 30 refuses the directive and takes the builtins with the feature.)

@group(0) @binding(0) var<uniform> P: MatmulParams;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;   // (M, K/4)
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;   // (N, K/4)
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // (N,) or a dummy
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // (M, N)

const OUTS: u32 = 32u;   // outputs per workgroup

@compute @workgroup_size(256, 1, 1)
fn gemv4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sgsize: u32,
) {
    let row = wid.y;
    let k4 = P.k / 4u;
    let xb = P.x_offset / 4u + row * k4;
    // o, col and the loop bounds are the same for every lane of a subgroup: subgroupAdd runs in
    // subgroup-uniform control flow
    for (var o = sg; o < OUTS; o = o + nsg) {
        let col = wid.x * OUTS + o;
        if (col >= P.n) { break; }
        let wb = col * k4;
        var acc = vec4<f32>(0.0);
        for (var p = lane; p < k4; p = p + sgsize) { acc = fma(x4[xb + p], w4[wb + p], acc); }
        let s = subgroupAdd(acc.x + acc.y + acc.z + acc.w);
        if (lane == 0u) {
            var v = s;
            if (P.has_bias != 0u) { v = v + bias[P.b_offset + col]; }
            out[P.out_offset + row * P.ldo + col] = epilogue_act(v, P.act);
        }
    }
}
