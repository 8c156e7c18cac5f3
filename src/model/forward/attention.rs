//! Self-attention: its weights (`AttnW`: the Q, K, V, O projections), their loader, and its
//! forward over a layer's key/value cache. (The encoder-decoder's cross-attention reuses `AttnW`;
//! its forward is in the decoder pass.)

use crate::error::Result;
use crate::model::backend::Backend;
use crate::model::forward::weights::{linear, Linear, Sink, VarBuilder};
use crate::model::forward::Model;
use crate::model::map_kind::Stack;
use crate::model::state::{LayerState, Scratch};
use crate::ops::AttnShape;

/// The four projections of one attention block.
pub struct AttnW<T> {
    pub q: Linear<T>,
    pub k: Linear<T>,
    pub v: Linear<T>,
    pub o: Linear<T>,
}

/// Q, K, V, O projections named `names`: Q (NH*HS, C), K and V (NKV*HS, C), O (C, NH*HS); biases
/// on Q, K, V with `qkv_bias`, on O with `o_bias`.
pub(super) fn attention<S: Sink>(
    mut vb: VarBuilder<S>,
    names: [&str; 4],
    c: usize,
    q_width: usize,
    kv_width: usize,
    [qkv_bias, o_bias]: [bool; 2],
) -> Result<AttnW<S::T>> {
    Ok(AttnW {
        q: linear(vb.pp(names[0]), q_width, c, qkv_bias)?,
        k: linear(vb.pp(names[1]), kv_width, c, qkv_bias)?,
        v: linear(vb.pp(names[2]), kv_width, c, qkv_bias)?,
        o: linear(vb.pp(names[3]), c, q_width, o_bias)?,
    })
}

impl<B: Backend> Model<B> {
    /// Self-attention of T tokens at positions pos..pos+T over the cache of layer `li` of `stack`:
    /// scratch.tmp = W_o(attn(input)).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn self_attention(
        &self,
        backend: &mut B,
        (stack, li): (Stack, usize),
        attn: &AttnW<B::T>,
        layer_state: &LayerState<B::T>,
        scratch: &Scratch<B::T>,
        input: &B::T,
        t: usize,
        pos: usize,
        mask: Option<&B::T>,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let (nh, nkv, hs) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim());
        let kv_width = nkv * hs;
        // q = x W_q^T; k, v = x W_k^T, x W_v^T written into the cache at rows pos..pos+T
        // (the llama: q and the new k rows rotated, RoPE, in the same pass where the backend can)
        let (q, k, v) = (&scratch.q, &layer_state.k, &layer_state.v);
        let w = [(&attn.q.w, attn.q.b.as_ref()), (&attn.k.w, attn.k.b.as_ref()), (&attn.v.w, attn.v.b.as_ref())];
        match &self.state.rope {
            Some(table) => backend.qkv_rope(q, k, v, pos * kv_width, input, t, w, table, (nh, nkv, hs), pos)?,
            None => backend.qkv(q, k, v, pos * kv_width, input, t, w)?,
        }
        // softmax(q k^T / sqrt(HS) + mask) v over every cached key; causal unless a mask is given
        let mut s = AttnShape::packed(t, pos + t, nh, nkv, hs);
        if mask.is_none() {
            s = s.with_causal(pos);
        }
        let probs = self.state.maps.target(stack.self_attention(), li)?;
        backend.attention(&scratch.att, probs, &scratch.q, &layer_state.k, &layer_state.v, mask, &s)?;
        self.hook_heads(backend, (stack, li), &scratch.att, t, pos)?; // capture / ablate heads before W_o
        backend.matmul(&scratch.tmp, 0, &scratch.att, 0, t, &attn.o.w, attn.o.b.as_ref())
    }
}
