//! The norms: their weights (`Norm`: LayerNorm or RMSNorm), their loaders, and their forward
//! (alone, or fused with the residual add before it).

use crate::error::Result;
use crate::model::backend::Backend;
use crate::model::forward::weights::{Role, Sink, VarBuilder};
use crate::model::forward::Model;
use crate::model::state::Scratch;

/// LayerNorm (w, b, eps 1e-5) or RMSNorm (w, eps from config) when b is None.
pub struct Norm<T> {
    pub w: T,
    pub b: Option<T>,
    pub eps: f32,
}

/// nn.LayerNorm(c, eps): `weight`, `bias` (c,).
pub(super) fn layer_norm<S: Sink>(mut vb: VarBuilder<S>, c: usize, eps: f32) -> Result<Norm<S::T>> {
    Ok(Norm { w: vb.get("weight", &[c], Role::Norm)?, b: Some(vb.get("bias", &[c], Role::Norm)?), eps })
}

/// RMSNorm(c): `weight` (c,).
pub(super) fn rms_norm<S: Sink>(mut vb: VarBuilder<S>, c: usize, eps: f32) -> Result<Norm<S::T>> {
    Ok(Norm { w: vb.get("weight", &[c], Role::Norm)?, b: None, eps })
}

impl<B: Backend> Model<B> {
    pub(super) fn norm(backend: &mut B, norm: &Norm<B::T>, out: &B::T, x: &B::T, rows: usize) -> Result<()> {
        match &norm.b {
            Some(beta) => backend.layernorm(out, x, &norm.w, beta, rows, norm.eps),
            None => backend.rmsnorm(out, x, &norm.w, rows, norm.eps),
        }
    }

    /// Pre-norm residual: x = x + tmp; xn = norm(x).
    pub(super) fn residual_pre_norm(backend: &mut B, norm: &Norm<B::T>, scratch: &Scratch<B::T>, t: usize) -> Result<()> {
        backend.add_norm(&scratch.x, &scratch.tmp, Some(&scratch.xn), &norm.w, norm.b.as_ref(), t, norm.eps)
    }

    /// Post-norm residual: x = norm(x + tmp).
    pub(super) fn residual_post_norm(backend: &mut B, norm: &Norm<B::T>, scratch: &Scratch<B::T>, t: usize) -> Result<()> {
        backend.add_norm(&scratch.x, &scratch.tmp, None, &norm.w, norm.b.as_ref(), t, norm.eps)
    }
}
