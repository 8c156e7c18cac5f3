//! Weights: the checkpoint's tensors uploaded to a backend, grouped the way the papers draw them
//! (each block's own weights and loader sit beside its forward: `attention`, `ffn`, `norm`), and
//! [`Weights::declare`]: the one place where an architecture names its tensors.
//!
//! The declaration walks a [`VarBuilder`] with path prefixes, in the style of candle's
//! `vb.pp("self_attn")`: each sub-module gets its prefix and asks for its tensors by their last
//! name, shape and [`Role`]. What a walk does with them is up to its [`Sink`]:
//! - [`Census`]: counts tensors, parameters and the fast CPU backend's packed copies (config bounds,
//!   `ModelConfig::param_count`, the memory demand);
//! - [`Listing`]: names and shapes in declaration order (`ModelConfig::expected_tensors`, which the
//!   checkpoint validates the file against);
//! - [`Weights::load`]'s upload: takes each tensor out of the checkpoint and uploads it.
//!
//! So adding a tensor is one line in `declare` (plus the field that holds it). Names are the
//! PyTorch `state_dict()` names of the seeds' modules; other checkpoint layouts map their names onto
//! these in `model::checkpoint::Layout`.

use std::fmt::Display;

use crate::error::{Result, TfError};
use crate::model::backend::Backend;
use crate::model::checkpoint::{Checkpoint, HostTensor};
use crate::model::config::{Arch, ModelConfig, Positions};
use crate::model::forward::attention::{attention, AttnW};
use crate::model::forward::ffn::{dense_ffn, moe_ffn, swiglu_ffn, Ffn};
use crate::model::forward::norm::{layer_norm, rms_norm, Norm};
use crate::ops::EwOp;

/// nn.Linear: w (out, in), b (out,) optional.
pub struct Linear<T> {
    pub w: T,
    pub b: Option<T>,
}

/// One block. For pre-norm stacks (decoder, llama) `norm_attn` and the FFN's norm come before their
/// sub-layers; for post-norm stacks (encoder-decoder) after the residual add.
pub struct Layer<T> {
    pub attn: AttnW<T>,
    pub norm_attn: Norm<T>,
    /// encoder-decoder decoder layers: cross-attention and its norm (norm2)
    pub cross: Option<(AttnW<T>, Norm<T>)>,
    /// the feed-forward half; None in an attention-only model
    pub ffn: Option<FfnBlock<T>>,
}

/// A block's feed-forward network and its norm.
pub struct FfnBlock<T> {
    pub norm: Norm<T>,
    pub net: Ffn<T>,
}

impl<T> Layer<T> {
    /// The feed-forward half, which every architecture but the attention-only decoder has.
    pub fn ffn_block(&self) -> Result<&FfnBlock<T>> {
        self.ffn.as_ref().ok_or_else(|| TfError::Internal("a layer without its feed-forward network".into()))
    }
}

pub struct Weights<T> {
    /// token embedding of the (decoder) input: (V_in, C); also the head's weight when the config
    /// ties them
    pub embed: T,
    /// learned positions (GPT-2's `wpe`): (S, C), added to the embedding
    pub pos_embed: Option<T>,
    /// encoder-decoder only: the encoder's embedding (V_src, C) and layers
    pub enc_embed: Option<T>,
    pub enc_layers: Vec<Layer<T>>,
    pub layers: Vec<Layer<T>>,
    /// ln_f (decoder) / norm (llama); none for the post-norm encoder-decoder
    pub final_norm: Option<Norm<T>>,
    /// lm_head / output (no bias) or final_layer (bias): (V_out, C); None when tied to `embed`
    /// (see [`Weights::head`])
    pub head: Option<Linear<T>>,
}

impl<T> Weights<T> {
    /// The output head's weight (V_out, C) and bias: its own Linear, or the token embedding when
    /// the config ties them.
    pub fn head(&self) -> (&T, Option<&T>) {
        match &self.head {
            Some(h) => (&h.w, h.b.as_ref()),
            None => (&self.embed, None),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The walker

/// What a declared tensor is for. Other checkpoint layouts store some roles differently (GPT-2's
/// Conv1D keeps a matmul weight as (in, out)), and backends keep copies of some (the fast CPU
/// backend packs every matmul weight into panels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// (V, C): a lookup table of rows
    Embedding,
    /// (V, C): the token embedding that is also the output head's matmul weight (tied)
    TiedEmbedding,
    /// (out, in): the W of `x @ W^T`
    Matmul,
    /// (V_out, C): the output head's own W (untied lm_head / output / embed_out / final_layer): a
    /// matmul weight that the GPU may bind by rows where it is over the binding limit
    Head,
    /// (out,): the bias of a matmul
    Bias,
    /// (C,): a norm's scale or shift
    Norm,
}

impl Role {
    /// Whether a tensor of this role keeps a 16-bit file's f16 / bf16 values 16-bit (on the GPU:
    /// packed pairs read by the 16-bit kernels, matmul16.wgsl, embed16.wgsl and qkv.wgsl's `main16`):
    /// the matmul weights and the embedding tables, nearly all of a model's bytes. Biases and norms
    /// are widened to f32 (a few kB).
    pub fn keeps_16bit(self) -> bool {
        matches!(self, Role::Embedding | Role::TiedEmbedding | Role::Matmul | Role::Head)
    }
}

/// Where a walk of the declaration puts each tensor.
pub trait Sink {
    /// What the walk builds `Weights<T>` of.
    type T;
    /// Whether the walk needs full names; a census does not, and skips building them.
    const NAMES: bool = true;
    /// The tensor `name` (dotted, empty when `NAMES` is false) of `shape`.
    fn take(&mut self, name: &str, shape: &[usize], role: Role) -> Result<Self::T>;
}

/// A path prefix over a sink: `vb.pp("layers").pp(3).get("weight", ..)` asks for `layers.3.weight`.
pub struct VarBuilder<'a, S: Sink> {
    sink: &'a mut S,
    prefix: String,
}

impl<'a, S: Sink> VarBuilder<'a, S> {
    pub fn new(sink: &'a mut S) -> Self {
        VarBuilder { sink, prefix: String::new() }
    }

    fn join(&self, name: &dyn Display) -> String {
        match (S::NAMES, self.prefix.is_empty()) {
            (false, _) => String::new(),
            (true, true) => name.to_string(),
            (true, false) => format!("{}.{name}", self.prefix),
        }
    }

    /// The builder of a sub-module: its names get `name.` in front.
    pub fn pp(&mut self, name: impl Display) -> VarBuilder<'_, S> {
        let prefix = self.join(&name);
        VarBuilder { sink: &mut *self.sink, prefix }
    }

    /// The tensor `name` under this prefix.
    pub fn get(&mut self, name: &str, shape: &[usize], role: Role) -> Result<S::T> {
        let full = self.join(&name);
        self.sink.take(&full, shape, role)
    }
}

/// nn.Linear(inp, out): `weight` (out, inp) and, with `bias`, `bias` (out,).
pub(super) fn linear<S: Sink>(mut vb: VarBuilder<S>, out: usize, inp: usize, bias: bool) -> Result<Linear<S::T>> {
    Ok(Linear { w: vb.get("weight", &[out, inp], Role::Matmul)?, b: if bias { Some(vb.get("bias", &[out], Role::Bias)?) } else { None } })
}

/// The output head's own Linear (V_out, C) ([`Role::Head`]), with or without a bias.
fn head_linear<S: Sink>(mut vb: VarBuilder<S>, out: usize, inp: usize, bias: bool) -> Result<Linear<S::T>> {
    Ok(Linear { w: vb.get("weight", &[out, inp], Role::Head)?, b: if bias { Some(vb.get("bias", &[out], Role::Bias)?) } else { None } })
}

/// The token embedding (V, C) named `name`: a plain table, or also the head's weight when tied.
fn token_embedding<S: Sink>(vb: &mut VarBuilder<S>, name: &str, cfg: &ModelConfig) -> Result<S::T> {
    let role = if cfg.tie_embeddings { Role::TiedEmbedding } else { Role::Embedding };
    vb.get(name, &[cfg.vocab_size, cfg.d_model], role)
}

const ENCDEC_ATTN: [&str; 4] = ["W_q", "W_k", "W_v", "W_o"];
const DEC_ATTN: [&str; 4] = ["w_q", "w_k", "w_v", "w_o"];
const LLAMA_ATTN: [&str; 4] = ["wq", "wk", "wv", "wo"];

impl<T> Weights<T> {
    /// Every architecture's tensors, declared once: names, shapes and roles, in the order of the
    /// PyTorch `state_dict()` (which `ModelConfig::expected_tensors` keeps). Registered buffers
    /// (`*.pos_encoding.pe`) are not declared: they are recomputed.
    pub fn declare<S: Sink<T = T>>(cfg: &ModelConfig, vb: &mut VarBuilder<S>) -> Result<Weights<T>> {
        let c = cfg.d_model;
        match cfg.arch {
            // seed 000 Transformer: post-norm, biases everywhere, ReLU FFN
            Arch::EncoderDecoder => {
                let ff = cfg.d_ff;
                let attn = |vb: VarBuilder<S>| attention(vb, ENCDEC_ATTN, c, c, c, [true, true]);
                let eps = cfg.norm_eps; // the seed's 1e-5
                let mut enc = vb.pp("encoder");
                let enc_embed = enc.get("embedding.weight", &[cfg.src_vocab_size, c], Role::Embedding)?;
                let mut enc_layers = Vec::with_capacity(cfg.num_layers);
                for i in 0..cfg.num_layers {
                    let mut l = enc.pp(format_args!("layers.{i}"));
                    enc_layers.push(Layer {
                        attn: attn(l.pp("self_attention"))?,
                        norm_attn: layer_norm(l.pp("norm1"), c, eps)?,
                        ffn: Some(FfnBlock {
                            norm: layer_norm(l.pp("norm2"), c, eps)?,
                            net: dense_ffn(l.pp("feed_forward"), c, ff, EwOp::Relu)?,
                        }),
                        cross: None,
                    });
                }
                let mut dec = vb.pp("decoder");
                let embed = dec.get("embedding.weight", &[cfg.tgt_vocab_size, c], Role::Embedding)?;
                let mut layers = Vec::with_capacity(cfg.num_layers);
                for i in 0..cfg.num_layers {
                    let mut l = dec.pp(format_args!("layers.{i}"));
                    let self_attn = attn(l.pp("self_attention"))?;
                    let cross_attn = attn(l.pp("encoder_attention"))?;
                    layers.push(Layer {
                        attn: self_attn,
                        norm_attn: layer_norm(l.pp("norm1"), c, eps)?,
                        cross: Some((cross_attn, layer_norm(l.pp("norm2"), c, eps)?)),
                        ffn: Some(FfnBlock {
                            norm: layer_norm(l.pp("norm3"), c, eps)?,
                            net: dense_ffn(l.pp("feed_forward"), c, ff, EwOp::Relu)?,
                        }),
                    });
                }
                let head = head_linear(vb.pp("final_layer"), cfg.tgt_vocab_size, c, true)?;
                Ok(Weights { embed, pos_embed: None, enc_embed: Some(enc_embed), enc_layers, layers, final_norm: None, head: Some(head) })
            }
            // seed 000 decoder-only LLM: pre-norm, ReLU FFN or a mixture of GELU experts, lm_head without bias;
            // GPT-2 is the same graph with learned positions, GELU-tanh and the head tied to the embedding;
            // GPT-NeoX with RoPE, the erf GELU, an untied head and (maybe) the parallel residual
            Arch::Decoder => {
                let eps = cfg.norm_eps;
                let embed = token_embedding(vb, "token_embedding.weight", cfg)?;
                let pos_embed = match cfg.positions {
                    Positions::Learned => Some(vb.get("position_embedding.weight", &[cfg.max_seq_len, c], Role::Embedding)?),
                    Positions::Sinusoidal | Positions::Rope => None,
                };
                let mut layers = Vec::with_capacity(cfg.num_layers);
                for i in 0..cfg.num_layers {
                    let mut l = vb.pp(format_args!("decoder_layers.{i}"));
                    // GPT-NeoX's attention_bias: false leaves all four attention projections without biases
                    let attn = attention(l.pp("self_attn"), DEC_ATTN, c, c, c, [cfg.qkv_bias, cfg.qkv_bias])?;
                    let norm_attn = layer_norm(l.pp("norm1"), c, eps)?;
                    let ffn = if cfg.attention_only {
                        None
                    } else {
                        let norm = layer_norm(l.pp("norm2"), c, eps)?;
                        let net = match &cfg.moe {
                            None => {
                                let act = cfg.activation.ew().ok_or_else(|| TfError::Internal("a two-layer FFN with SwiGLU".into()))?;
                                dense_ffn(l.pp("feed_forward"), c, cfg.d_ff, act)?
                            }
                            Some(m) => moe_ffn(l.pp("feed_forward"), c, m)?,
                        };
                        Some(FfnBlock { norm, net })
                    };
                    layers.push(Layer { attn, norm_attn, cross: None, ffn });
                }
                let final_norm = layer_norm(vb.pp("ln_f"), c, eps)?;
                let head = if cfg.tie_embeddings { None } else { Some(head_linear(vb.pp("lm_head"), cfg.vocab_size, c, false)?) };
                Ok(Weights { embed, pos_embed, enc_embed: None, enc_layers: vec![], layers, final_norm: Some(final_norm), head })
            }
            // seed 004 Llama: RMSNorm, grouped-query attention, SwiGLU, no biases; the foreign Llamas
            // may tie the head to the embedding, and Qwen2 adds q/k/v biases
            Arch::Llama => {
                let (q_width, kv_width) = (cfg.num_heads * cfg.head_dim(), cfg.num_kv_heads * cfg.head_dim());
                let (hidden, eps) = (cfg.llama_hidden_dim(), cfg.norm_eps);
                let embed = token_embedding(vb, "tok_embeddings.weight", cfg)?;
                let mut layers = Vec::with_capacity(cfg.num_layers);
                for i in 0..cfg.num_layers {
                    let mut l = vb.pp(format_args!("layers.{i}"));
                    let attn = attention(l.pp("attention"), LLAMA_ATTN, c, q_width, kv_width, [cfg.qkv_bias, false])?;
                    let net = swiglu_ffn(l.pp("feed_forward"), c, hidden)?;
                    let norm_attn = rms_norm(l.pp("attention_norm"), c, eps)?;
                    let norm = rms_norm(l.pp("ffn_norm"), c, eps)?;
                    layers.push(Layer { attn, norm_attn, cross: None, ffn: Some(FfnBlock { norm, net }) });
                }
                let final_norm = rms_norm(vb.pp("norm"), c, eps)?;
                let head = if cfg.tie_embeddings { None } else { Some(head_linear(vb.pp("output"), cfg.vocab_size, c, false)?) };
                Ok(Weights { embed, pos_embed: None, enc_embed: None, enc_layers: vec![], layers, final_norm: Some(final_norm), head })
            }
        }
    }

    /// Uploads every declared tensor, taking it out of the checkpoint (which validated names,
    /// shapes and values against the same declaration, so a missing tensor here is a bug,
    /// reported as an error all the same).
    pub fn load<B: Backend<T = T>>(b: &B, cfg: &ModelConfig, ck: &mut Checkpoint) -> Result<Weights<T>> {
        Weights::load_from(b, cfg, ck)
    }

    /// [`Weights::load`] from any [`TensorSource`] (a checkpoint in memory, or a foreign one read a
    /// tensor at a time: `formats::open16_lazy`).
    pub fn load_from<B: Backend<T = T>>(b: &B, cfg: &ModelConfig, src: &mut dyn TensorSource) -> Result<Weights<T>> {
        Weights::declare(cfg, &mut VarBuilder::new(&mut Upload { backend: b, ck: src }))
    }
}

// ---------------------------------------------------------------------------------------------
// Sinks

/// Where [`Weights::load_from`] takes each tensor from, by name (moved out: each is dropped once uploaded).
pub trait TensorSource {
    /// The tensor `name`, None if there is no such tensor.
    fn take_tensor(&mut self, name: &str) -> Result<Option<HostTensor>>;
    /// The line naming the tensors taken so far that hold NaN / Inf values (`Checkpoint::non_finite`).
    fn non_finite(&mut self) -> Option<String>;
}

impl TensorSource for Checkpoint {
    fn take_tensor(&mut self, name: &str) -> Result<Option<HostTensor>> {
        Ok(self.take(name))
    }
    fn non_finite(&mut self) -> Option<String> {
        Checkpoint::non_finite(self)
    }
}

/// Uploads each declared tensor from the checkpoint.
struct Upload<'a, B: Backend> {
    backend: &'a B,
    ck: &'a mut dyn TensorSource,
}

impl<B: Backend> Sink for Upload<'_, B> {
    type T = B::T;
    fn take(&mut self, name: &str, shape: &[usize], role: Role) -> Result<B::T> {
        let t = self.ck.take_tensor(name)?.ok_or_else(|| TfError::Checkpoint(format!("tensor '{name}' is missing")))?;
        if t.shape != shape {
            return Err(TfError::Checkpoint(format!("tensor '{name}' has shape {:?}, declared {shape:?}", t.shape)));
        }
        if t.is_16bit() {
            // the GPU keeps it 16-bit, and so do the fast CPU backend's matmul panels; the rest is widened
            return self.backend.weight16(&t.shape, &t.bits, t.dtype, role, name);
        }
        self.backend.weight(&t.shape, &t.data, role, name)
    }
}

/// Counts of a declaration, in saturating u64 arithmetic (a config may describe more than memory holds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// tensors declared
    pub tensors: u64,
    /// their elements
    pub params: u64,
    /// elements of the matmul weights ((out, in) each; a tied embedding is the head's)
    pub matmul_params: u64,
    /// elements of the matmul weights with `out` rounded up to a multiple of `panel` (the fast CPU
    /// backend's packed copies); 0 when `panel` is 0
    pub packed_params: u64,
    /// the panel width counted in `packed_params`
    pub panel: usize,
    /// elements of the tensors a 16-bit checkpoint keeps 16-bit on the GPU ([`Role::keeps_16bit`])
    pub half_params: u64,
    /// their bytes there: 4 per pair of values, each row padded to an even length
    pub half_bytes: u64,
}

impl Census {
    /// The counts of `cfg`'s declaration, without building any name.
    pub fn of(cfg: &ModelConfig) -> Census {
        Census::with_panel(cfg, 0)
    }

    /// [`Census::of`], also counting matmul weights packed in panels of `panel` output rows.
    pub fn with_panel(cfg: &ModelConfig, panel: usize) -> Census {
        let mut c = Census { panel, ..Census::default() };
        // A census never fails (its sink always answers Ok).
        let _ = Weights::declare(cfg, &mut VarBuilder::new(&mut c));
        c
    }
}

impl Sink for Census {
    type T = ();
    const NAMES: bool = false;
    fn take(&mut self, _name: &str, shape: &[usize], role: Role) -> Result<()> {
        let n = shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64));
        self.tensors += 1;
        self.params = self.params.saturating_add(n);
        if role.keeps_16bit() {
            self.half_params = self.half_params.saturating_add(n);
            let k = shape.last().copied().unwrap_or(1).max(1) as u64;
            self.half_bytes = self.half_bytes.saturating_add((n / k).saturating_mul(k.div_ceil(2)).saturating_mul(4));
        }
        if let (Role::Matmul | Role::Head | Role::TiedEmbedding, [out, inp]) = (role, shape) {
            self.matmul_params = self.matmul_params.saturating_add(n);
            if self.panel > 0 {
                let padded = out.div_ceil(self.panel) as u64 * self.panel as u64;
                self.packed_params = self.packed_params.saturating_add(padded.saturating_mul(*inp as u64));
            }
        }
        Ok(())
    }
}

/// One declared tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
}

/// Every declared tensor, in declaration order.
#[derive(Default, Debug)]
pub struct Listing(pub Vec<Declared>);

impl Listing {
    pub fn of(cfg: &ModelConfig) -> Vec<Declared> {
        let mut l = Listing::default();
        let _ = Weights::declare(cfg, &mut VarBuilder::new(&mut l));
        l.0
    }
}

impl Sink for Listing {
    type T = ();
    fn take(&mut self, name: &str, shape: &[usize], role: Role) -> Result<()> {
        self.0.push(Declared { name: name.to_string(), shape: shape.to_vec(), role });
        Ok(())
    }
}
