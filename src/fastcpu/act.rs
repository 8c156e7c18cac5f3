//! Fast element-wise ops (activations, residual add) with branch-free f32 exp / erf that
//! vectorise. Twin: crate::cpu::act (f64 libm).

use crate::fastcpu::isa::{multiversion, Isa};
use crate::fastcpu::simd::{gelu, gelu_tanh, silu};
use crate::ops::EwOp;

multiversion!(
    /// out[i] = op(a[i], b[i]) (b ignored by unary ops; 0 stands in when it is missing). out, a, b (N,)
    pub fn elementwise(out: &mut [f32], a: &[f32], b: Option<&[f32]>, op: EwOp) => elementwise_impl
);
multiversion!(
    /// x[i] = op(x[i], y[i]). x, y (N,)
    pub fn inplace(x: &mut [f32], y: Option<&[f32]>, op: EwOp) => inplace_impl
);

#[inline(always)]
fn apply(op: EwOp, a: f32, b: f32) -> f32 {
    match op {
        EwOp::Relu => a.max(0.0),
        EwOp::Gelu => gelu(a),
        EwOp::GeluTanh => gelu_tanh(a),
        EwOp::Silu => silu(a),
        EwOp::SwiGlu => silu(a) * b,
        EwOp::Add => a + b,
        EwOp::Mul => a * b,
    }
}

/// One loop per op, so each is a straight vectorisable loop.
macro_rules! per_op {
    ($op:expr, |$o:ident| $body:expr) => {
        match $op {
            EwOp::Relu => {
                let $o = EwOp::Relu;
                $body
            }
            EwOp::Gelu => {
                let $o = EwOp::Gelu;
                $body
            }
            EwOp::GeluTanh => {
                let $o = EwOp::GeluTanh;
                $body
            }
            EwOp::Silu => {
                let $o = EwOp::Silu;
                $body
            }
            EwOp::SwiGlu => {
                let $o = EwOp::SwiGlu;
                $body
            }
            EwOp::Add => {
                let $o = EwOp::Add;
                $body
            }
            EwOp::Mul => {
                let $o = EwOp::Mul;
                $body
            }
        }
    };
}

#[inline(always)]
fn elementwise_impl<S: Isa>(out: &mut [f32], a: &[f32], b: Option<&[f32]>, op: EwOp) {
    match b {
        Some(b) => per_op!(op, |o| out.iter_mut().zip(a).zip(b).for_each(|((d, &x), &y)| *d = apply(o, x, y))),
        None => per_op!(op, |o| out.iter_mut().zip(a).for_each(|(d, &x)| *d = apply(o, x, 0.0))),
    }
}

#[inline(always)]
fn inplace_impl<S: Isa>(x: &mut [f32], y: Option<&[f32]>, op: EwOp) {
    S::inplace(x, y, op)
}

/// `inplace` one straight loop per op (every ISA's; the page has its own SiLU and SwiGLU). Plain
/// `for` loops: a `for_each` closure was compiled outside the ISA's function (no AVX2 there).
#[inline(always)]
pub(crate) fn inplace_lanes(x: &mut [f32], y: Option<&[f32]>, op: EwOp) {
    match y {
        Some(y) => per_op!(op, |o| {
            let n = x.len().min(y.len());
            let (x, y) = (&mut x[..n], &y[..n]);
            for i in 0..n {
                x[i] = apply(o, x[i], y[i]);
            }
        }),
        None => per_op!(op, |o| {
            for v in x.iter_mut() {
                *v = apply(o, *v, 0.0);
            }
        }),
    }
}
