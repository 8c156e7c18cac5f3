// rowsum.wgsl: the workgroup sum of the one-workgroup-per-row kernels (norm.wgsl, addnorm.wgsl),
// prepended to them after common.wgsl by src/gpu/wgsl.rs. WG threads; each passes its partial
// sum and every thread gets the row's total.

const WG: u32 = 128u;
var<workgroup> red: array<f32, 128>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
