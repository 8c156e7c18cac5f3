//! Weights: the checkpoint's tensors uploaded to a backend, grouped the way the papers draw them.
//! Names follow the PyTorch state_dict of the seeds' modules (see model::config::expected_tensors).

use crate::error::{Result, TfError};
use crate::model::backend::Backend;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::{Arch, ModelConfig};

/// nn.Linear: w (out, in), b (out,) optional.
pub struct Linear<T> {
    pub w: T,
    pub b: Option<T>,
}

/// LayerNorm (w, b, eps 1e-5) or RMSNorm (w, eps from config) when b is None.
pub struct Norm<T> {
    pub w: T,
    pub b: Option<T>,
    pub eps: f32,
}

/// The four projections of one attention block.
pub struct AttnW<T> {
    pub q: Linear<T>,
    pub k: Linear<T>,
    pub v: Linear<T>,
    pub o: Linear<T>,
}

pub enum Ffn<T> {
    /// linear2(relu(linear1(x)))
    Relu { l1: Linear<T>, l2: Linear<T> },
    /// w2(silu(w1 x) * w3 x)
    SwiGlu { w1: Linear<T>, w2: Linear<T>, w3: Linear<T> },
    /// router -> softmax -> top-k; experts are Linear -> GELU -> Linear
    Moe { router: Linear<T>, experts: Vec<(Linear<T>, Linear<T>)> },
}

/// One block. For pre-norm stacks (decoder, llama) `norm_attn` / `norm_ffn` come before their
/// sub-layers; for post-norm stacks (encoder-decoder) after the residual add.
pub struct Layer<T> {
    pub attn: AttnW<T>,
    pub norm_attn: Norm<T>,
    /// encoder-decoder decoder layers: cross-attention and its norm (norm2)
    pub cross: Option<(AttnW<T>, Norm<T>)>,
    pub ffn: Ffn<T>,
    pub norm_ffn: Norm<T>,
}

pub struct Weights<T> {
    /// token embedding of the (decoder) input: (V_in, C)
    pub embed: T,
    /// encoder-decoder only: the encoder's embedding (V_src, C) and layers
    pub enc_embed: Option<T>,
    pub enc_layers: Vec<Layer<T>>,
    pub layers: Vec<Layer<T>>,
    /// ln_f (decoder) / norm (llama); none for the post-norm encoder-decoder
    pub final_norm: Option<Norm<T>>,
    /// lm_head / output (no bias) or final_layer (bias): (V_out, C)
    pub head: Linear<T>,
}

struct Loader<'a, B: Backend> {
    b: &'a B,
    ck: &'a mut Checkpoint,
}

impl<B: Backend> Loader<'_, B> {
    fn t(&mut self, name: &str) -> Result<B::T> {
        let t = self.ck.take(name).ok_or_else(|| TfError::Checkpoint(format!("tensor '{name}' is missing")))?;
        self.b.tensor(&t.shape, &t.data, name)
    }
    fn lin(&mut self, p: &str, bias: bool) -> Result<Linear<B::T>> {
        Ok(Linear { w: self.t(&format!("{p}.weight"))?, b: if bias { Some(self.t(&format!("{p}.bias"))?) } else { None } })
    }
    fn ln(&mut self, p: &str) -> Result<Norm<B::T>> {
        Ok(Norm { w: self.t(&format!("{p}.weight"))?, b: Some(self.t(&format!("{p}.bias"))?), eps: 1e-5 })
    }
    fn rms(&mut self, p: &str, eps: f32) -> Result<Norm<B::T>> {
        Ok(Norm { w: self.t(&format!("{p}.weight"))?, b: None, eps })
    }
    fn attn(&mut self, p: &str, names: [&str; 4], bias: bool) -> Result<AttnW<B::T>> {
        Ok(AttnW {
            q: self.lin(&format!("{p}.{}", names[0]), bias)?,
            k: self.lin(&format!("{p}.{}", names[1]), bias)?,
            v: self.lin(&format!("{p}.{}", names[2]), bias)?,
            o: self.lin(&format!("{p}.{}", names[3]), bias)?,
        })
    }
    fn relu_ffn(&mut self, p: &str) -> Result<Ffn<B::T>> {
        Ok(Ffn::Relu { l1: self.lin(&format!("{p}.linear1"), true)?, l2: self.lin(&format!("{p}.linear2"), true)? })
    }
}

const ENCDEC_ATTN: [&str; 4] = ["W_q", "W_k", "W_v", "W_o"];
const DEC_ATTN: [&str; 4] = ["w_q", "w_k", "w_v", "w_o"];
const LLAMA_ATTN: [&str; 4] = ["wq", "wk", "wv", "wo"];

impl<T> Weights<T> {
    /// Uploads every tensor the config needs (the checkpoint was validated against the config's
    /// expected tensors already, so a missing tensor here is a bug, reported as an error all the same).
    pub fn load<B: Backend<T = T>>(b: &B, cfg: &ModelConfig, ck: &mut Checkpoint) -> Result<Weights<T>> {
        let mut l = Loader { b, ck };
        match cfg.arch {
            Arch::EncoderDecoder => {
                let mut enc_layers = Vec::new();
                for i in 0..cfg.num_layers {
                    let p = format!("encoder.layers.{i}");
                    enc_layers.push(Layer {
                        attn: l.attn(&format!("{p}.self_attention"), ENCDEC_ATTN, true)?,
                        norm_attn: l.ln(&format!("{p}.norm1"))?,
                        cross: None,
                        ffn: l.relu_ffn(&format!("{p}.feed_forward"))?,
                        norm_ffn: l.ln(&format!("{p}.norm2"))?,
                    });
                }
                let mut layers = Vec::new();
                for i in 0..cfg.num_layers {
                    let p = format!("decoder.layers.{i}");
                    layers.push(Layer {
                        attn: l.attn(&format!("{p}.self_attention"), ENCDEC_ATTN, true)?,
                        norm_attn: l.ln(&format!("{p}.norm1"))?,
                        cross: Some((l.attn(&format!("{p}.encoder_attention"), ENCDEC_ATTN, true)?, l.ln(&format!("{p}.norm2"))?)),
                        ffn: l.relu_ffn(&format!("{p}.feed_forward"))?,
                        norm_ffn: l.ln(&format!("{p}.norm3"))?,
                    });
                }
                Ok(Weights {
                    embed: l.t("decoder.embedding.weight")?,
                    enc_embed: Some(l.t("encoder.embedding.weight")?),
                    enc_layers,
                    layers,
                    final_norm: None,
                    head: l.lin("final_layer", true)?,
                })
            }
            Arch::Decoder => {
                let mut layers = Vec::new();
                for i in 0..cfg.num_layers {
                    let p = format!("decoder_layers.{i}");
                    let ffn = match &cfg.moe {
                        None => l.relu_ffn(&format!("{p}.feed_forward"))?,
                        Some(m) => {
                            let router = l.lin(&format!("{p}.feed_forward.router"), true)?;
                            let mut experts = Vec::new();
                            for e in 0..m.num_experts {
                                let q = format!("{p}.feed_forward.experts.{e}");
                                experts.push((l.lin(&format!("{q}.0"), true)?, l.lin(&format!("{q}.2"), true)?));
                            }
                            Ffn::Moe { router, experts }
                        }
                    };
                    layers.push(Layer {
                        attn: l.attn(&format!("{p}.self_attn"), DEC_ATTN, true)?,
                        norm_attn: l.ln(&format!("{p}.norm1"))?,
                        cross: None,
                        ffn,
                        norm_ffn: l.ln(&format!("{p}.norm2"))?,
                    });
                }
                Ok(Weights {
                    embed: l.t("token_embedding.weight")?,
                    enc_embed: None,
                    enc_layers: vec![],
                    layers,
                    final_norm: Some(l.ln("ln_f")?),
                    head: l.lin("lm_head", false)?,
                })
            }
            Arch::Llama => {
                let eps = cfg.norm_eps;
                let mut layers = Vec::new();
                for i in 0..cfg.num_layers {
                    let p = format!("layers.{i}");
                    layers.push(Layer {
                        attn: l.attn(&format!("{p}.attention"), LLAMA_ATTN, false)?,
                        norm_attn: l.rms(&format!("{p}.attention_norm"), eps)?,
                        cross: None,
                        ffn: Ffn::SwiGlu {
                            w1: l.lin(&format!("{p}.feed_forward.w1"), false)?,
                            w2: l.lin(&format!("{p}.feed_forward.w2"), false)?,
                            w3: l.lin(&format!("{p}.feed_forward.w3"), false)?,
                        },
                        norm_ffn: l.rms(&format!("{p}.ffn_norm"), eps)?,
                    });
                }
                Ok(Weights {
                    embed: l.t("tok_embeddings.weight")?,
                    enc_embed: None,
                    enc_layers: vec![],
                    layers,
                    final_norm: Some(l.rms("norm", eps)?),
                    head: l.lin("output", false)?,
                })
            }
        }
    }

    /// Every tensor, for freeing.
    pub fn for_each(&self, mut f: impl FnMut(&T)) {
        let lin = |l: &Linear<T>, f: &mut dyn FnMut(&T)| {
            f(&l.w);
            if let Some(b) = &l.b {
                f(b)
            }
        };
        let norm = |n: &Norm<T>, f: &mut dyn FnMut(&T)| {
            f(&n.w);
            if let Some(b) = &n.b {
                f(b)
            }
        };
        let attn = |a: &AttnW<T>, f: &mut dyn FnMut(&T)| {
            for l in [&a.q, &a.k, &a.v, &a.o] {
                lin(l, f)
            }
        };
        f(&self.embed);
        if let Some(e) = &self.enc_embed {
            f(e)
        }
        for layer in self.enc_layers.iter().chain(&self.layers) {
            attn(&layer.attn, &mut f);
            norm(&layer.norm_attn, &mut f);
            if let Some((a, n)) = &layer.cross {
                attn(a, &mut f);
                norm(n, &mut f);
            }
            norm(&layer.norm_ffn, &mut f);
            match &layer.ffn {
                Ffn::Relu { l1, l2 } => {
                    lin(l1, &mut f);
                    lin(l2, &mut f)
                }
                Ffn::SwiGlu { w1, w2, w3 } => {
                    lin(w1, &mut f);
                    lin(w2, &mut f);
                    lin(w3, &mut f)
                }
                Ffn::Moe { router, experts } => {
                    lin(router, &mut f);
                    for (a, b) in experts {
                        lin(a, &mut f);
                        lin(b, &mut f)
                    }
                }
            }
        }
        if let Some(n) = &self.final_norm {
            norm(n, &mut f)
        }
        lin(&self.head, &mut f);
    }
}
