//! RunState: every activation buffer, the KV caches and the attention maps, allocated once at load
//! for the full context (max_seq_len rows), so a forward pass or a generated token allocates nothing.
//! model::memory::demand lists the same buffers (a test checks the two agree), so a config is
//! checked against the memory budget before any of this is allocated.

use crate::error::Result;
use crate::model::backend::Backend;
use crate::model::config::{Arch, ModelConfig, Positions};

/// Per-layer buffers that outlive one forward pass.
pub struct LayerState<T> {
    /// (max_seq, NKV*HS): keys / values of every position computed so far
    pub k: T,
    pub v: T,
    /// (NH, max_seq, max_seq): attention probabilities of the last pass, laid out (NH, Tq, Tk)
    pub probs: T,
    /// encoder-decoder decoder layers: cross keys / values (max_seq, C) and cross probs (NH, max_seq, max_seq)
    pub cross_k: Option<T>,
    pub cross_v: Option<T>,
    pub cross_probs: Option<T>,
    /// MoE layers: router probs (max_seq, E), chosen experts u32 (max_seq, K), weights (max_seq, K), kept u32 (max_seq, K)
    pub moe: Option<MoeState<T>>,
}

pub struct MoeState<T> {
    pub probs: T,
    pub experts: T,
    pub weights: T,
    pub kept: T,
}

/// Scratch shared by the layers of one stack; rows = max_seq.
pub struct Scratch<T> {
    /// (max_seq, C): the residual stream
    pub x: T,
    /// (max_seq, C): normed input of a sub-layer / post-norm staging
    pub xn: T,
    /// (max_seq, NH*HS): queries, then the attention output before W_o
    pub q: T,
    pub att: T,
    /// (max_seq, C): a sub-layer's output
    pub tmp: T,
    /// (max_seq, H): FFN hidden (d_ff, llama hidden or MoE expert_dim)
    pub h: T,
    /// (max_seq, H): the SwiGLU up projection (llama only)
    pub h2: Option<T>,
    /// MoE: router logits (max_seq, E), gate (max_seq, E), expert outputs (E, max_seq, C)
    pub router_logits: Option<T>,
    pub gate: Option<T>,
    pub ys: Option<T>,
    /// (max_seq,) u32 token ids of the pass
    pub ids: T,
    /// (max_seq, max_seq) masks written by the host for the encoder-decoder (1 = may attend):
    /// `mask` in both of its stacks, `cross_mask` in the decoder's. Decoder-only models use the
    /// causal rule inside the attention kernel and have neither.
    pub mask: Option<T>,
    pub cross_mask: Option<T>,
}

pub struct RunState<T> {
    pub dec: Scratch<T>,
    pub layers: Vec<LayerState<T>>,
    /// encoder-decoder only
    pub enc: Option<Scratch<T>>,
    pub enc_layers: Vec<LayerState<T>>,
    /// (max_seq, V_out) logits of the last pass
    pub logits: T,
    /// (4,) u32: the sampled token id
    pub next: T,
    /// sinusoidal PE (max_seq, C) or RoPE (cos, sin) table (max_seq, HS/2, 2)
    pub pe: Option<T>,
    pub rope: Option<T>,
    /// Bytes of every buffer above (4 per value), counted as they are allocated: what
    /// model::memory::demand must predict.
    pub bytes: u64,
}

impl<T> RunState<T> {
    /// Allocates every buffer. They are freed when the RunState drops (GPU buffers are destroyed
    /// by `GpuTensor`'s Drop, in the browser too).
    pub fn new<B: Backend<T = T>>(backend: &B, cfg: &ModelConfig) -> Result<RunState<T>> {
        let b = &Counted { backend, bytes: std::cell::Cell::new(0) };
        let s = cfg.max_seq_len;
        let c = cfg.d_model;
        let (nh, hs) = (cfg.num_heads, cfg.head_dim());
        let kvw = cfg.num_kv_heads * hs;
        let hidden = match (&cfg.moe, cfg.arch) {
            (Some(m), _) => m.expert_dim,
            (None, Arch::Llama) => cfg.llama_hidden_dim(),
            _ => cfg.d_ff,
        };
        let encdec = cfg.arch == Arch::EncoderDecoder;
        let swiglu = cfg.arch == Arch::Llama;
        let scratch = |b: &Counted<B>, cross: bool| -> Result<Scratch<T>> {
            Ok(Scratch {
                x: b.zeros(&[s, c], "x")?,
                xn: b.zeros(&[s, c], "xn")?,
                q: b.zeros(&[s, nh * hs], "q")?,
                att: b.zeros(&[s, nh * hs], "att")?,
                tmp: b.zeros(&[s, c], "tmp")?,
                h: b.zeros(&[s, hidden], "h")?,
                h2: swiglu.then(|| b.zeros(&[s, hidden], "h2")).transpose()?,
                router_logits: cfg.moe.as_ref().map(|m| b.zeros(&[s, m.num_experts], "router logits")).transpose()?,
                gate: cfg.moe.as_ref().map(|m| b.zeros(&[s, m.num_experts], "gate")).transpose()?,
                ys: cfg.moe.as_ref().map(|m| b.zeros(&[m.num_experts, s, c], "expert outputs")).transpose()?,
                ids: b.zeros_u32(&[s], "ids")?,
                mask: encdec.then(|| b.zeros(&[s, s], "mask")).transpose()?,
                cross_mask: (encdec && cross).then(|| b.zeros(&[s, s], "cross mask")).transpose()?,
            })
        };
        let layer = |b: &Counted<B>, cross: bool| -> Result<LayerState<T>> {
            Ok(LayerState {
                k: b.zeros(&[s, kvw], "k cache")?,
                v: b.zeros(&[s, kvw], "v cache")?,
                probs: b.zeros(&[nh, s, s], "attention")?,
                cross_k: cross.then(|| b.zeros(&[s, c], "cross k")).transpose()?,
                cross_v: cross.then(|| b.zeros(&[s, c], "cross v")).transpose()?,
                cross_probs: cross.then(|| b.zeros(&[nh, s, s], "cross attention")).transpose()?,
                moe: match &cfg.moe {
                    None => None,
                    Some(m) => Some(MoeState {
                        probs: b.zeros(&[s, m.num_experts], "router probs")?,
                        experts: b.zeros_u32(&[s, m.top_k], "experts")?,
                        weights: b.zeros(&[s, m.top_k], "expert weights")?,
                        kept: b.zeros_u32(&[s, m.top_k], "kept")?,
                    }),
                },
            })
        };
        let out_vocab = if encdec { cfg.tgt_vocab_size } else { cfg.vocab_size };
        let mut st = RunState {
            dec: scratch(b, true)?,
            layers: (0..cfg.num_layers).map(|_| layer(b, encdec)).collect::<Result<_>>()?,
            enc: if encdec { Some(scratch(b, false)?) } else { None },
            enc_layers: if encdec { (0..cfg.num_layers).map(|_| layer(b, false)).collect::<Result<_>>()? } else { vec![] },
            logits: b.zeros(&[s, out_vocab], "logits")?,
            next: b.zeros_u32(&[4], "next token")?,
            pe: if cfg.positions != Positions::Sinusoidal {
                None
            } else {
                Some(b.tensor(&[s, c], &crate::cpu::sinusoidal_table(s, c), "pe")?)
            },
            rope: if cfg.arch == Arch::Llama {
                Some(b.tensor(&[s, hs / 2, 2], &crate::cpu::rope_table(s, hs, cfg.rope_theta), "rope")?)
            } else {
                None
            },
            bytes: 0,
        };
        st.bytes = b.bytes.get();
        Ok(st)
    }
}

/// The backend's allocations, counting their bytes.
struct Counted<'a, B> {
    backend: &'a B,
    bytes: std::cell::Cell<u64>,
}

impl<B: Backend> Counted<'_, B> {
    fn count(&self, shape: &[usize]) {
        let n = shape.iter().fold(4u64, |a, &d| a.saturating_mul(d as u64));
        self.bytes.set(self.bytes.get().saturating_add(n));
    }
    fn zeros(&self, shape: &[usize], label: &str) -> Result<B::T> {
        self.count(shape);
        self.backend.zeros(shape, label)
    }
    fn zeros_u32(&self, shape: &[usize], label: &str) -> Result<B::T> {
        self.count(shape);
        self.backend.zeros_u32(shape, label)
    }
    fn tensor(&self, shape: &[usize], data: &[f32], label: &str) -> Result<B::T> {
        self.count(shape);
        self.backend.tensor(shape, data, label)
    }
}
