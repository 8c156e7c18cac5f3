// gemv.wgsl: few-row matmul for cached decoding (M < 8 rows), the layout of matmul.wgsl:
//   x   (M, K)  row-major, from x[x_offset]
//   W   (N, K)  as PyTorch stores nn.Linear.weight
//   b   (N,)    optional (has_bias); the SwiGLU entries bind W_up (N, K) here instead
//   out (M, N)  from out[out_offset]
//   gemv*:        out = act(x @ W^T + b)          act: 0 none, 1 ReLU, 2 GELU, 3 GELU-tanh
//   gemv*_swiglu: out = silu(x @ W^T) * (x @ W_up^T)
// One workgroup of 256 threads per block of 32 outputs of one row: 8 lanes split K for each
// output (lane l reads vec4s l, l+8, ..., so the 8 lanes of an output read 128 contiguous bytes),
// then a 3-step tree reduction over the lanes in workgroup memory. 8 lanes rather than 32: on
// llvmpipe the barriers of a longer reduction cost more than the split saves (bench matmul's
// m1_* keys, BENCHMARKS.md). The `4` entries read x and W as vec4 (needs K % 4 == 0 and
// x_offset % 4 == 0, checked by src/gpu/matmul.rs); the others read
// scalars, for any K.

@group(0) @binding(0) var<uniform> P: MatmulParams;
// scalar view (entries gemv, gemv_swiglu)
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (M, K)
@group(0) @binding(2) var<storage, read> w: array<f32>;          // (N, K)
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // (N,), or W_up (N, K)
// vec4 view of the same bindings (entries gemv4, gemv4_swiglu)
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;   // (M, K/4)
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;   // (N, K/4)
@group(0) @binding(3) var<storage, read> up4: array<vec4<f32>>;  // (N, K/4)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // (M, N)

const LANES: u32 = 8u;   // threads per output
const OUTS: u32 = 32u;   // outputs per workgroup
var<workgroup> red: array<f32, 256>;   // (OUTS, LANES)
var<workgroup> red2: array<f32, 256>;  // (OUTS, LANES): the up projection of SwiGLU

// Sums red[o * LANES ..][..LANES] (and red2) into their first lane; every thread must call it.
fn reduce_lanes(o: u32, lane: u32, both: bool) {
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lane < s) {
            red[o * LANES + lane] = red[o * LANES + lane] + red[o * LANES + lane + s];
            if (both) { red2[o * LANES + lane] = red2[o * LANES + lane] + red2[o * LANES + lane + s]; }
        }
    }
    workgroupBarrier();
}

fn finish(row: u32, col: u32, o: u32, lane: u32) {
    reduce_lanes(o, lane, false);
    if (lane == 0u && col < P.n) {
        var v = red[o * LANES];
        if (P.has_bias != 0u) { v = v + bias[P.b_offset + col]; }
        out[P.out_offset + row * P.ldo + col] = epilogue_act(v, P.act);
    }
}

fn finish_swiglu(row: u32, col: u32, o: u32, lane: u32) {
    reduce_lanes(o, lane, true);
    if (lane == 0u && col < P.n) {
        out[P.out_offset + row * P.ldo + col] = silu(red[o * LANES]) * red2[o * LANES];
    }
}

@compute @workgroup_size(256, 1, 1)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = lid.x / LANES;
    let lane = lid.x % LANES;
    let row = wid.y;
    let col = wid.x * OUTS + o;
    var acc = 0.0;
    if (col < P.n) {
        let xb = P.x_offset + row * P.k;
        let wb = col * P.k;
        for (var p = lane; p < P.k; p = p + LANES) { acc = fma(x[xb + p], w[wb + p], acc); }
    }
    red[lid.x] = acc;
    finish(row, col, o, lane);
}

@compute @workgroup_size(256, 1, 1)
fn gemv4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = lid.x / LANES;
    let lane = lid.x % LANES;
    let row = wid.y;
    let col = wid.x * OUTS + o;
    var acc = vec4<f32>(0.0);
    if (col < P.n) {
        let k4 = P.k / 4u;
        let xb = P.x_offset / 4u + row * k4;
        let wb = col * k4;
        for (var p = lane; p < k4; p = p + LANES) { acc = fma(x4[xb + p], w4[wb + p], acc); }
    }
    red[lid.x] = acc.x + acc.y + acc.z + acc.w;
    finish(row, col, o, lane);
}

@compute @workgroup_size(256, 1, 1)
fn gemv_swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = lid.x / LANES;
    let lane = lid.x % LANES;
    let row = wid.y;
    let col = wid.x * OUTS + o;
    var gate = 0.0;
    var up = 0.0;
    if (col < P.n) {
        let xb = P.x_offset + row * P.k;
        let wb = col * P.k;
        for (var p = lane; p < P.k; p = p + LANES) {
            let xv = x[xb + p];
            gate = fma(xv, w[wb + p], gate);
            up = fma(xv, bias[wb + p], up);
        }
    }
    red[lid.x] = gate;
    red2[lid.x] = up;
    finish_swiglu(row, col, o, lane);
}

@compute @workgroup_size(256, 1, 1)
fn gemv4_swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = lid.x / LANES;
    let lane = lid.x % LANES;
    let row = wid.y;
    let col = wid.x * OUTS + o;
    var gate = vec4<f32>(0.0);
    var up = vec4<f32>(0.0);
    if (col < P.n) {
        let k4 = P.k / 4u;
        let xb = P.x_offset / 4u + row * k4;
        let wb = col * k4;
        for (var p = lane; p < k4; p = p + LANES) {
            let xv = x4[xb + p];
            gate = fma(xv, w4[wb + p], gate);
            up = fma(xv, up4[wb + p], up);
        }
    }
    red[lid.x] = gate.x + gate.y + gate.z + gate.w;
    red2[lid.x] = up.x + up.y + up.z + up.w;
    finish_swiglu(row, col, o, lane);
}
