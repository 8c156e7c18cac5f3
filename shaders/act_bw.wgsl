// act_bw.wgsl: the element-wise family's backward, one thread per element.
//   entry `act`:    dx = dy * act'(h), op as elementwise.wgsl numbers them: 0 ReLU, 1 GELU (erf form),
//                   2 SiLU, 6 GELU-tanh                                       dy, h, dx (N,)
//   entry `swiglu`: y = silu(gate) * up:  dgate = dy up silu'(gate), dup = dy silu(gate)
//                   (gate through the h binding, dgate through dx)           all (N,)

@group(0) @binding(0) var<uniform> P: EwParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> up: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> dup: array<f32>;

fn dsilu(x: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-x));
    return s * (1.0 + x * (1.0 - s));
}

fn act_grad(op: u32, x: f32) -> f32 {
    switch op {
        case 0u: { return select(0.0, 1.0, x > 0.0); }
        case 1u: { return 0.5 * (1.0 + erf_approx(x * 0.70710678118654752)) + x * exp(-0.5 * x * x) * 0.3989422804014327; }
        case 2u: { return dsilu(x); }
        default: {
            // GELU-tanh; u clamped as in common.wgsl's gelu_tanh
            let k = 0.7978845608028654;
            let t = tanh(clamp(k * (x + 0.044715 * x * x * x), -10.0, 10.0));
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn act(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= P.n) { return; }
    dx[i] = dy[i] * act_grad(P.op, h[i]);
}

@compute @workgroup_size(256, 1, 1)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= P.n) { return; }
    let g = h[i];
    dx[i] = dy[i] * up[i] * dsilu(g);
    dup[i] = dy[i] * silu(g);
}
