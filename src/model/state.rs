//! RunState: every activation buffer, the KV caches and the attention maps, allocated for a
//! [`Plan`]: the context in use (the rows of every row-sized buffer, at most max_seq_len), the
//! layers whose attention maps are kept, and the largest Tq x Tk a map holds. A pass that fits the
//! plan allocates nothing; a longer one grows the state first (`Model::plan_for`), after checking the
//! budget.
//!
//! [`RunState::declare`] is the one place that names the run-state buffers, the way
//! `Weights::declare` names the weights: it walks a [`StateBuilder`] over a [`BufferSink`] with each
//! buffer's label, shape ([`Dim`]s named in the notation of ARCHITECTURE.md), dtype and contents
//! (the vocabulary is in `state/buffers.rs`).
//! [`RunState::new`] walks it allocating on a backend; `model::memory::demand_for` walks it summing
//! bytes, so a plan is checked against the memory budget before any of it is allocated, and the
//! demand cannot differ from what is allocated.

use crate::error::{Result, TfError};
use crate::model::backend::Backend;
use crate::model::config::{Arch, ModelConfig, Positions};
use crate::model::map_kind::MapKind;
use crate::model::memory::Budget;

mod buffers;
use buffers::Allocate;
pub use buffers::{Buffer, BufferSink, Dim, Dtype, Group, Init, StateBuilder};

/// The layers whose attention maps a pass keeps for reading back. The same layer index selects the
/// encoder's, the decoder's and the cross-attention maps of the encoder-decoder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MapLayers {
    /// every layer (what a full forward pass shows)
    #[default]
    All,
    /// none: attention still needs one scratch buffer for its score rows, shared by every layer
    None,
    /// these layers, ascending, without duplicates (see [`MapLayers::only`])
    Only(Vec<usize>),
}

impl MapLayers {
    /// The given layers, sorted and without duplicates.
    pub fn only(layers: impl IntoIterator<Item = usize>) -> MapLayers {
        let mut v: Vec<usize> = layers.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        MapLayers::Only(v)
    }
    /// A caller's request: None = every layer, Some(list) = those layers (empty: none).
    pub fn from_list(list: Option<&[usize]>) -> MapLayers {
        match list {
            None => MapLayers::All,
            Some([]) => MapLayers::None,
            Some(l) => MapLayers::only(l.iter().copied()),
        }
    }
    pub fn keeps(&self, layer: usize) -> bool {
        match self {
            MapLayers::All => true,
            MapLayers::None => false,
            MapLayers::Only(v) => v.binary_search(&layer).is_ok(),
        }
    }
    /// How many of `num_layers` layers keep their maps.
    pub fn count(&self, num_layers: usize) -> usize {
        (0..num_layers).filter(|&l| self.keeps(l)).count()
    }
    /// A layer past the model's is an error naming it.
    pub fn check(&self, num_layers: usize) -> Result<()> {
        if let MapLayers::Only(v) = self {
            if let Some(&l) = v.iter().find(|&&l| l >= num_layers) {
                return Err(TfError::Input(format!(
                    "attention maps of layer {l} were asked for, but the model has {num_layers} layers (0 to {})",
                    num_layers.saturating_sub(1)
                )));
            }
        }
        Ok(())
    }
}

/// How much run state to allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// rows of every row-sized buffer (activations, K/V caches, logits, positions, MoE buffers;
    /// the encoder-decoder's masks are context x context): the longest sequence a pass may reach
    pub context: usize,
    /// the layers whose attention maps are kept
    pub maps: MapLayers,
    /// Tq x Tk of the largest pass the map buffers hold: each kept map, and the scratch that the
    /// layers without one share, holds NH x map_area values (a pass writes (NH, Tq, Tk) packed)
    pub map_area: usize,
}

impl Plan {
    /// The whole context with every map: what the model needs at most.
    pub fn full(cfg: &ModelConfig) -> Plan {
        let s = cfg.max_seq_len.max(1);
        Plan { context: s, maps: MapLayers::All, map_area: s.saturating_mul(s) }
    }
    /// A plan clamped to the model: context in 1..=max_seq_len, area in 1..=context^2.
    pub fn new(cfg: &ModelConfig, context: usize, maps: MapLayers, map_area: usize) -> Plan {
        let context = context.clamp(1, cfg.max_seq_len.max(1));
        Plan { context, maps, map_area: map_area.clamp(1, context.saturating_mul(context)) }
    }
    /// What a load allocates before any pass asks for more: a context of at most `LOAD_CONTEXT`
    /// rows, no maps, the scratch for one-row passes over it.
    pub fn at_load(cfg: &ModelConfig) -> Plan {
        let c = cfg.max_seq_len.clamp(1, LOAD_CONTEXT);
        Plan::new(cfg, c, MapLayers::None, c)
    }
    /// Whether a pass reaching position `end` whose attention is `area` = Tq x Tk cells at most,
    /// keeping the maps of `maps` and no others, fits.
    pub fn holds(&self, end: usize, area: usize, maps: &MapLayers) -> bool {
        end <= self.context && area <= self.map_area && *maps == self.maps
    }
}

/// The context a load allocates (passes past it grow the run state).
pub const LOAD_CONTEXT: usize = 256;

/// Per-layer buffers that outlive one forward pass.
pub struct LayerState<T> {
    /// (context, NKV*HS): keys / values of every position computed so far
    pub k: T,
    pub v: T,
    /// encoder-decoder decoder layers: cross keys / values (context, C)
    pub cross_k: Option<T>,
    pub cross_v: Option<T>,
    /// MoE layers: router probs (context, E), chosen experts u32 (context, K), weights (context, K), kept u32 (context, K)
    pub moe: Option<MoeState<T>>,
}

pub struct MoeState<T> {
    pub probs: T,
    pub experts: T,
    pub weights: T,
    pub kept: T,
}

/// Scratch shared by the layers of one stack; rows = context.
pub struct Scratch<T> {
    /// (context, C): the residual stream
    pub x: T,
    /// (context, C): normed input of a sub-layer / post-norm staging
    pub xn: T,
    /// (context, NH*HS): queries, then the attention output before W_o
    pub q: T,
    pub att: T,
    /// (context, C): a sub-layer's output
    pub tmp: T,
    /// (context, H): FFN hidden (d_ff, llama hidden or MoE expert_dim)
    pub h: T,
    /// (context, H): the SwiGLU up projection (llama only)
    pub h2: Option<T>,
    /// MoE: router logits (context, E), gate (context, E), expert outputs (E, context, C)
    pub router_logits: Option<T>,
    pub gate: Option<T>,
    pub ys: Option<T>,
    /// (context,) u32 token ids of the pass
    pub ids: T,
    /// (context, context) masks written by the host for the encoder-decoder (1 = may attend):
    /// `mask` in both of its stacks, `cross_mask` in the decoder's. Decoder-only models use the
    /// causal rule inside the attention kernel and have neither.
    pub mask: Option<T>,
    pub cross_mask: Option<T>,
}

/// The attention probabilities of the last pass, (NH, Tq, Tk) packed, for the layers the plan keeps;
/// the other layers write theirs into one shared scratch (the kernels need the score rows).
pub struct Maps<T> {
    /// per layer: Some for the layers kept
    pub decoder: Vec<Option<T>>,
    /// encoder-decoder: the encoder's self-attention and the decoder's cross-attention
    pub encoder: Vec<Option<T>>,
    pub cross: Vec<Option<T>>,
    /// (NH, map_area): present when some attention layer keeps no map
    pub scratch: Option<T>,
    /// bytes of the buffers above
    pub bytes: u64,
}

impl<T> Maps<T> {
    /// The kept map of layer `layer` of `kind`.
    pub fn kept(&self, kind: MapKind, layer: usize) -> Option<&T> {
        let v = match kind {
            MapKind::Encoder => &self.encoder,
            MapKind::Cross => &self.cross,
            MapKind::Decoder => &self.decoder,
        };
        v.get(layer).and_then(|m| m.as_ref())
    }
    /// Where layer `layer` of `kind` writes its probabilities in a pass: its map, or the scratch.
    pub fn target(&self, kind: MapKind, layer: usize) -> Result<&T> {
        self.kept(kind, layer)
            .or(self.scratch.as_ref())
            .ok_or_else(|| TfError::Internal(format!("no attention buffer for {kind} layer {layer}")))
    }

    /// The maps of `plan` (see [`RunState::declare`]): per kept layer (NH, Tq*Tk), a pass writing
    /// (NH, Tq, Tk) packed (the encoder-decoder: the decoder's, the encoder's and the cross maps);
    /// one shared scratch of the same shape for the layers that keep none.
    pub fn declare<S: BufferSink<T = T>>(cfg: &ModelConfig, plan: &Plan, d: &mut StateBuilder<S>) -> Result<Maps<T>> {
        let (l, s, area) = (cfg.num_layers, plan.context, plan.map_area);
        let before = d.bytes();
        // written (NH, S, S) when it holds the whole context
        let cells = if area == s.saturating_mul(s) { Dim::Square("S", s) } else { Dim::Of("Tq*Tk", area) };
        let map = [Dim::Of("NH", cfg.num_heads), cells];
        let stack = |d: &mut StateBuilder<S>, label| -> Result<Vec<Option<T>>> {
            (0..l).map(|i| plan.maps.keeps(i).then(|| d.zeros(Group::AttentionMaps, label, &map)).transpose()).collect()
        };
        let decoder = stack(d, "attention")?;
        let (encoder, cross) = if cfg.arch == Arch::EncoderDecoder {
            (stack(d, "encoder attention")?, stack(d, "cross attention")?)
        } else {
            (vec![], vec![])
        };
        let scratch = (plan.maps.count(l) < l).then(|| d.zeros(Group::AttentionScratch, "attention scratch", &map)).transpose()?;
        Ok(Maps { decoder, encoder, cross, scratch, bytes: d.bytes() - before })
    }
}

pub struct RunState<T> {
    pub dec: Scratch<T>,
    pub layers: Vec<LayerState<T>>,
    /// encoder-decoder only
    pub enc: Option<Scratch<T>>,
    pub enc_layers: Vec<LayerState<T>>,
    /// attention maps (see `Maps`)
    pub maps: Maps<T>,
    /// (context, V_out) logits of the last pass
    pub logits: T,
    /// (4,) u32: the sampled token id
    pub next: T,
    /// sinusoidal PE (context, C) or RoPE (cos, sin) table (context, HS/2, 2)
    pub pe: Option<T>,
    pub rope: Option<T>,
    /// what was allocated
    pub plan: Plan,
    /// what the state may grow to, with the weights (`Model::plan_for` checks it); set by the load
    pub budget: Budget,
    /// Bytes of every buffer above (4 per value), counted as they are declared: what
    /// model::memory::demand_for sums for `plan` from the same declaration.
    pub bytes: u64,
}

impl<T> RunState<T> {
    /// Allocates every buffer of `plan` (the walk of [`RunState::declare`] through the backend).
    /// They are freed when the RunState drops (GPU buffers are destroyed by `GpuTensor`'s Drop, in
    /// the browser too).
    pub fn new<B: Backend<T = T>>(backend: &B, cfg: &ModelConfig, plan: &Plan) -> Result<RunState<T>> {
        RunState::declare(cfg, plan, &mut StateBuilder::new(&mut Allocate(backend)))
    }

    /// Every run-state buffer of `plan`, declared once: its label, shape (each dimension named as
    /// ARCHITECTURE.md writes it), dtype and contents, and the group the memory demand reports it
    /// in. What a walk does with them is up to its sink: `RunState::new` allocates them,
    /// `memory::demand_for` sums their bytes.
    pub fn declare<S: BufferSink<T = T>>(cfg: &ModelConfig, plan: &Plan, d: &mut StateBuilder<S>) -> Result<RunState<T>> {
        use Group::*;
        let maps = Maps::declare(cfg, plan, d)?;
        let (l, s, c) = (cfg.num_layers, plan.context, cfg.d_model);
        let (nh, hs) = (cfg.num_heads, cfg.head_dim());
        let encdec = cfg.arch == Arch::EncoderDecoder;
        let swiglu = cfg.arch == Arch::Llama;
        let hidden = match (&cfg.moe, cfg.arch) {
            (Some(m), _) => m.expert_dim,
            (None, Arch::Llama) => cfg.llama_hidden_dim(),
            _ => cfg.d_ff,
        };
        let (rows, width, heads, ffn) = (Dim::Of("S", s), Dim::Of("C", c), Dim::Of("NH*HS", nh * hs), Dim::Of("H", hidden));
        let kvw = Dim::Of("NKV*HS", cfg.num_kv_heads * hs);
        // MoE: experts E, chosen per token K
        let moe = cfg.moe.as_ref().map(|m| (Dim::Of("E", m.num_experts), Dim::Of("K", m.top_k)));
        let (stacks, ffn_bufs) = (if encdec { 2 } else { 1 }, if swiglu { 2 } else { 1 });
        d.describe(Activations, || format!("{stacks} x (S {s}, 3 C + 2 NH*HS + {ffn_bufs} H + 1)"));
        if let Some(m) = &cfg.moe {
            d.describe(Routing, || format!("(S {s}, E {} + 3 K {}) per layer", m.num_experts, m.top_k));
        }
        // Scratch shared by the layers of one stack. The widest activations come first: the demand
        // names the first of a group's largest buffers.
        let scratch = |d: &mut StateBuilder<S>, cross: bool| -> Result<Scratch<T>> {
            Ok(Scratch {
                h: d.zeros(Activations, "h", &[rows, ffn])?,
                h2: swiglu.then(|| d.zeros(Activations, "h2", &[rows, ffn])).transpose()?,
                q: d.zeros(Activations, "q", &[rows, heads])?,
                att: d.zeros(Activations, "att", &[rows, heads])?,
                x: d.zeros(Activations, "x", &[rows, width])?,
                xn: d.zeros(Activations, "xn", &[rows, width])?,
                tmp: d.zeros(Activations, "tmp", &[rows, width])?,
                ids: d.zeros_u32(Activations, "ids", &[rows])?,
                router_logits: moe.map(|(e, _)| d.zeros(Routing, "router logits", &[rows, e])).transpose()?,
                gate: moe.map(|(e, _)| d.zeros(Routing, "gate", &[rows, e])).transpose()?,
                ys: moe.map(|(e, _)| d.zeros(ExpertOutputs, "expert outputs", &[e, rows, width])).transpose()?,
                mask: encdec.then(|| d.zeros(Masks, "mask", &[rows, rows])).transpose()?,
                cross_mask: (encdec && cross).then(|| d.zeros(Masks, "cross mask", &[rows, rows])).transpose()?,
            })
        };
        let layer = |d: &mut StateBuilder<S>, cross: bool| -> Result<LayerState<T>> {
            Ok(LayerState {
                k: d.zeros(KvCache, "k cache", &[rows, kvw])?,
                v: d.zeros(KvCache, "v cache", &[rows, kvw])?,
                cross_k: cross.then(|| d.zeros(CrossKv, "cross k", &[rows, width])).transpose()?,
                cross_v: cross.then(|| d.zeros(CrossKv, "cross v", &[rows, width])).transpose()?,
                moe: match moe {
                    None => None,
                    Some((e, k)) => Some(MoeState {
                        probs: d.zeros(Routing, "router probs", &[rows, e])?,
                        experts: d.zeros_u32(Routing, "experts", &[rows, k])?,
                        weights: d.zeros(Routing, "expert weights", &[rows, k])?,
                        kept: d.zeros_u32(Routing, "kept", &[rows, k])?,
                    }),
                },
            })
        };
        let out_vocab = if encdec { cfg.tgt_vocab_size } else { cfg.vocab_size };
        let (sinusoidal, rope) = (|| crate::cpu::sinusoidal_table(s, c), || cfg.rope_table(s));
        Ok(RunState {
            dec: scratch(d, true)?,
            layers: (0..l).map(|_| layer(d, encdec)).collect::<Result<_>>()?,
            enc: encdec.then(|| scratch(d, false)).transpose()?,
            enc_layers: if encdec { (0..l).map(|_| layer(d, false)).collect::<Result<_>>()? } else { vec![] },
            maps,
            logits: d.zeros(Logits, "logits", &[rows, Dim::Of("V", out_vocab)])?,
            next: d.zeros_u32(SampledId, "next token", &[Dim::Fixed(4)])?,
            // a learned table is one of the weights
            pe: (cfg.positions == Positions::Sinusoidal).then(|| d.table(PositionTables, "pe", &[rows, width], &sinusoidal)).transpose()?,
            rope: (cfg.positions == Positions::Rope)
                .then(|| d.table(PositionTables, "rope", &[rows, Dim::Of("HS/2", hs / 2), Dim::Fixed(2)], &rope))
                .transpose()?,
            plan: plan.clone(),
            budget: Budget::default(),
            bytes: d.bytes(),
        })
    }

    /// Replaces the attention maps with those of `maps` and `map_area` (the context stays): the
    /// old buffers are freed before the new ones are allocated.
    pub fn set_maps<B: Backend<T = T>>(&mut self, backend: &B, cfg: &ModelConfig, maps: MapLayers, map_area: usize) -> Result<()> {
        let plan = Plan::new(cfg, self.plan.context, maps, map_area);
        let old = std::mem::replace(&mut self.maps, Maps { decoder: vec![], encoder: vec![], cross: vec![], scratch: None, bytes: 0 });
        self.bytes -= old.bytes;
        drop(old);
        // until the new maps exist, no pass fits the plan (so a failed allocation is retried, not used)
        self.plan.map_area = 0;
        self.maps = Maps::declare(cfg, &plan, &mut StateBuilder::new(&mut Allocate(backend)))?;
        self.bytes += self.maps.bytes;
        self.plan = plan;
        Ok(())
    }
}
