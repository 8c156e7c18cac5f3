// rowsum1.wgsl: rowsum.wgsl's interface for one invocation per row: prepended instead of it to
// norm.wgsl and addnorm.wgsl by src/gpu/wgsl.rs for their barrier-free forms (RowKind::Invocation,
// CPU-emulated GPUs): a workgroup of WG = 1 per row, whose one thread walks the whole row, so the
// "workgroup sum" is the thread's own.

const WG: u32 = 1u;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    return v;
}
