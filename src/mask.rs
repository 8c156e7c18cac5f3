//! Attention masks, in one convention: 1 = may attend, 0 = blocked, laid out (query, key).
//!
//! The seed's `create_padding_mask` / `create_look_ahead_mask` return 1 for *blocked* cells while
//! its attention blocks where mask == 0, so its demo masks the wrong cells. We compute the
//! intended masks; `to_seed_convention` shows what the seed's helpers would return, for the page.

use serde::Serialize;

use crate::error::{Result, TfError};

pub const PAD_ID: u32 = 0;

/// A (rows, cols) mask, row-major, 1.0 = may attend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mask {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Mask {
    pub fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> bool) -> Mask {
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                data.push(if f(i, j) { 1.0 } else { 0.0 });
            }
        }
        Mask { rows, cols, data }
    }
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.cols + j]
    }
    /// The same cells in the seed helpers' convention (1 = blocked).
    pub fn to_seed_convention(&self) -> Mask {
        Mask { rows: self.rows, cols: self.cols, data: self.data.iter().map(|&v| 1.0 - v).collect() }
    }
    pub fn rows_vec(&self) -> Vec<Vec<f32>> {
        self.data.chunks(self.cols.max(1)).map(|r| r.to_vec()).collect()
    }
}

/// Key padding: query i (of `tq`) may attend key j iff keys[j] is not PAD.
/// Encoder self-attention uses it with tq = len(src); cross-attention with tq = len(tgt).
pub fn padding(tq: usize, keys: &[u32]) -> Mask {
    Mask::from_fn(tq, keys.len(), |_, j| keys[j] != PAD_ID)
}

/// Look-ahead (causal): query i may attend key j iff j <= i.
pub fn look_ahead(t: usize) -> Mask {
    Mask::from_fn(t, t, |i, j| j <= i)
}

/// Decoder self-attention of the encoder-decoder: target key padding AND look-ahead.
pub fn decoder_self(tgt: &[u32]) -> Mask {
    Mask::from_fn(tgt.len(), tgt.len(), |i, j| j <= i && tgt[j] != PAD_ID)
}

/// The causal mask over cached + new tokens, as the seed's `create_causal_mask(seq_len, cached_len)`:
/// (new, cached + new), new token i (at absolute position cached + i) may attend key j iff j <= cached + i.
pub fn kv_cache(cached: usize, new: usize) -> Mask {
    Mask::from_fn(new, cached + new, |i, j| j <= cached + i)
}

/// The matrices the page's Masks view draws for a sequence of `seq_len` tokens whose last `num_pad`
/// are PAD, and a KV cache holding `cached_len` earlier tokens.
#[derive(Clone, Debug, Serialize)]
pub struct MaskSet {
    pub seq_len: usize,
    pub num_pad: usize,
    pub cached_len: usize,
    pub tokens: Vec<String>,
    pub padding: Mask,
    pub look_ahead: Mask,
    pub combined: Mask,
    pub kv_cache: Mask,
}

/// Largest sequence the Masks view draws.
pub const MAX_VIEW_LEN: usize = 64;

pub fn mask_set(seq_len: usize, num_pad: usize, cached_len: usize) -> Result<MaskSet> {
    if seq_len == 0 || seq_len > MAX_VIEW_LEN {
        return Err(TfError::Input(format!("sequence length must be between 1 and {MAX_VIEW_LEN}, got {seq_len}")));
    }
    if num_pad > seq_len {
        return Err(TfError::Input(format!("{num_pad} PAD tokens do not fit in a sequence of {seq_len}")));
    }
    if cached_len > MAX_VIEW_LEN {
        return Err(TfError::Input(format!("cached length must be at most {MAX_VIEW_LEN}, got {cached_len}")));
    }
    let ids: Vec<u32> = (0..seq_len).map(|i| if i < seq_len - num_pad { 1 + i as u32 } else { PAD_ID }).collect();
    let tokens = ids.iter().enumerate().map(|(i, &id)| if id == PAD_ID { "PAD".to_string() } else { format!("t{i}") }).collect();
    Ok(MaskSet {
        seq_len,
        num_pad,
        cached_len,
        tokens,
        padding: padding(seq_len, &ids),
        look_ahead: look_ahead(seq_len),
        combined: decoder_self(&ids),
        kv_cache: kv_cache(cached_len, seq_len),
    })
}

/// The encoder-decoder's cross-attention mask for the Masks view: a target of `tgt_len` tokens over
/// a source of `src_len` tokens whose last `src_pad` are PAD, (tgt_len, src_len), 1 = may attend.
pub fn cross_mask(tgt_len: usize, src_len: usize, src_pad: usize) -> Result<Mask> {
    let (t, s, p) = (tgt_len, src_len, src_pad);
    if t == 0 || s == 0 || t > MAX_VIEW_LEN || s > MAX_VIEW_LEN {
        return Err(TfError::Input(format!("lengths must be between 1 and {MAX_VIEW_LEN}, got target {t}, source {s}")));
    }
    if p > s {
        return Err(TfError::Input(format!("{p} PAD tokens do not fit in a source of {s}")));
    }
    let src: Vec<u32> = (0..s).map(|i| if i < s - p { 1 + i as u32 } else { PAD_ID }).collect();
    Ok(padding(t, &src))
}
