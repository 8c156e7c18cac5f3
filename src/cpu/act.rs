//! Element-wise ops of the feed-forward networks and the residual stream.

/// Exact GELU as PyTorch's default nn.GELU: x * 0.5 * (1 + erf(x / sqrt(2))).
pub fn gelu_scalar(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}
pub fn silu_scalar(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + (-x).exp())) as f32
}
pub fn relu_scalar(x: f32) -> f32 {
    x.max(0.0)
}

/// The element-wise op codes shared with shaders/elementwise.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EwOp {
    Relu = 0,
    Gelu = 1,
    Silu = 2,
    /// silu(a) * b: the SwiGLU product silu(gate) * up.
    SwiGlu = 3,
    /// a + b: the residual add.
    Add = 4,
    /// a * b
    Mul = 5,
}

impl EwOp {
    pub fn is_binary(self) -> bool {
        matches!(self, EwOp::SwiGlu | EwOp::Add | EwOp::Mul)
    }
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            EwOp::Relu => relu_scalar(a),
            EwOp::Gelu => gelu_scalar(a),
            EwOp::Silu => silu_scalar(a),
            EwOp::SwiGlu => (silu_scalar(a) as f64 * b as f64) as f32,
            EwOp::Add => a + b,
            EwOp::Mul => a * b,
        }
    }
}

/// out[i] = op(a[i], b[i])  (b ignored for unary ops). out, a, b (N,)
pub fn elementwise(out: &mut [f32], a: &[f32], b: Option<&[f32]>, op: EwOp) {
    for i in 0..out.len() {
        out[i] = op.apply(a[i], b.map_or(0.0, |b| b[i]));
    }
}
pub fn relu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = relu_scalar(*v));
}
pub fn gelu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu_scalar(*v));
}
pub fn silu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = silu_scalar(*v));
}
/// out = silu(gate) * up, all (N,)
pub fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32]) {
    elementwise(out, gate, Some(up), EwOp::SwiGlu)
}
/// x += y (the residual add), both (N,)
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += *b);
}
