// rows.wgsl: few-row matmuls (cached decoding) with one invocation per output and no workgroup
// memory or barriers, for GPUs emulated on the CPU (SwiftShader, llvmpipe), where a workgroup
// barrier is a costly switch between the emulated threads and the GEMV's 3-step reduction
// (gemv.wgsl) pays three of them per 32 outputs. The layout of matmul.wgsl:
//   x   (M, K)  row-major, from x[x_offset]
//   W   (N, K)  as PyTorch stores nn.Linear.weight (f32; 16-bit weights take gemv16)
//   b   (N,)    optional (has_bias); the SwiGLU entries bind W_up (N, K) here instead
//   out (M, N)  from out[out_offset]
//   rows*:        out = act(x @ W^T + b)          act: 0 none, 1 ReLU, 2 GELU, 3 GELU-tanh
//   rows*_swiglu: out = silu(x @ W^T) * (x @ W_up^T)
// Workgroups of 64 invocations along N, one row of x per workgroup row (grid (ceil(N / 64), M)).
// Each invocation walks all of K: the `4` entries read x and W as vec4 with two accumulators
// (needs K % 4 == 0 and x_offset % 4 == 0, checked by src/gpu/matmul.rs); the others read scalars.

// MatmulParams and the bindings (x / x4, w / w4, bias / up4, out) are gemv.wgsl's: this file is appended
// to it into one module (src/gpu/matmul.rs), its entries beside the GEMV's.

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

fn store(row: u32, col: u32, v: f32) {
    var r = v;
    if (P.has_bias != 0u) { r = r + bias[P.b_offset + col]; }
    out[P.out_offset + row * P.ldo + col] = epilogue_act(r, P.act);
}

@compute @workgroup_size(64, 1, 1)
fn rows4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if (col >= P.n || row >= P.m) { return; }
    let k4 = P.k / 4u;
    let xb = P.x_offset / 4u + row * k4;
    let wb = col * k4;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var p = 0u;
    for (; p + 1u < k4; p = p + 2u) {
        a0 = fma(x4[xb + p], w4[wb + p], a0);
        a1 = fma(x4[xb + p + 1u], w4[wb + p + 1u], a1);
    }
    if (p < k4) { a0 = fma(x4[xb + p], w4[wb + p], a0); }
    store(row, col, hsum(a0 + a1));
}

@compute @workgroup_size(64, 1, 1)
fn rows1(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if (col >= P.n || row >= P.m) { return; }
    let xb = P.x_offset + row * P.k;
    let wb = col * P.k;
    var acc = 0.0;
    for (var p = 0u; p < P.k; p = p + 1u) { acc = fma(x[xb + p], w[wb + p], acc); }
    store(row, col, acc);
}

@compute @workgroup_size(64, 1, 1)
fn rows4_swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if (col >= P.n || row >= P.m) { return; }
    let k4 = P.k / 4u;
    let xb = P.x_offset / 4u + row * k4;
    let wb = col * k4;
    var gate = vec4<f32>(0.0);
    var up = vec4<f32>(0.0);
    for (var p = 0u; p < k4; p = p + 1u) {
        let xv = x4[xb + p];
        gate = fma(xv, w4[wb + p], gate);
        up = fma(xv, up4[wb + p], up);
    }
    out[P.out_offset + row * P.ldo + col] = silu(hsum(gate)) * hsum(up);
}

@compute @workgroup_size(64, 1, 1)
fn rows1_swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if (col >= P.n || row >= P.m) { return; }
    let xb = P.x_offset + row * P.k;
    let wb = col * P.k;
    var gate = 0.0;
    var up = 0.0;
    for (var p = 0u; p < P.k; p = p + 1u) {
        let xv = x[xb + p];
        gate = fma(xv, w[wb + p], gate);
        up = fma(xv, bias[wb + p], up);
    }
    out[P.out_offset + row * P.ldo + col] = silu(gate) * up;
}
