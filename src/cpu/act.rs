//! Element-wise ops of the feed-forward networks and the residual stream.

use crate::ops::EwOp;

/// Exact GELU as PyTorch's default nn.GELU: x * 0.5 * (1 + erf(x / sqrt(2))).
pub fn gelu_scalar(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}
/// GELU with the tanh approximation (GPT-2's `gelu_new`): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in f64.
pub fn gelu_tanh_scalar(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())) as f32
}
pub fn silu_scalar(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + (-x).exp())) as f32
}
pub fn relu_scalar(x: f32) -> f32 {
    x.max(0.0)
}

/// op(a, b) for one value (b ignored by the unary ops): the reference semantics of every `EwOp`.
pub fn ew(op: EwOp, a: f32, b: f32) -> f32 {
    match op {
        EwOp::Relu => relu_scalar(a),
        EwOp::Gelu => gelu_scalar(a),
        EwOp::GeluTanh => gelu_tanh_scalar(a),
        EwOp::Silu => silu_scalar(a),
        EwOp::SwiGlu => (silu_scalar(a) as f64 * b as f64) as f32,
        EwOp::Add => a + b,
        EwOp::Mul => a * b,
    }
}

/// out[i] = op(a[i], b[i])  (b ignored for unary ops). out, a, b (N,)
pub fn elementwise(out: &mut [f32], a: &[f32], b: Option<&[f32]>, op: EwOp) {
    for i in 0..out.len() {
        out[i] = ew(op, a[i], b.map_or(0.0, |b| b[i]));
    }
}
/// x[i] = op(x[i], y[i])  (y None for unary ops): the residual add, SwiGLU's product in place, or
/// an activation. x, y (N,)
pub fn inplace(x: &mut [f32], y: Option<&[f32]>, op: EwOp) {
    for i in 0..x.len() {
        x[i] = ew(op, x[i], y.map_or(0.0, |y| y[i]));
    }
}
/// x = relu(x), x (N,): the twin of the matmul kernel's ReLU epilogue
pub fn relu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = relu_scalar(*v));
}
/// x = gelu(x), x (N,): the twin of the matmul kernel's GELU epilogue
pub fn gelu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu_scalar(*v));
}
/// out = silu(gate) * up, all (N,)
pub fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32]) {
    elementwise(out, gate, Some(up), EwOp::SwiGlu)
}
