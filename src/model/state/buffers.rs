//! The vocabulary of the run state's declaration (`RunState::declare`): each buffer's [`Dim`]s,
//! [`Dtype`] and contents ([`Init`]), the [`Group`] the memory demand reports it in, and the walker
//! ([`StateBuilder`]) that hands each [`Buffer`] to a [`BufferSink`]: the backend's allocation here
//! (`Allocate`), `model::memory`'s sums there.

use crate::error::Result;
use crate::model::backend::Backend;

/// The groups the demand reports the run state in, in its order (`RunState::declare` puts each
/// buffer in one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// the kept layers' attention maps
    AttentionMaps,
    /// the map the other layers share
    AttentionScratch,
    KvCache,
    /// the encoder-decoder's cross-attention keys and values
    CrossKv,
    Logits,
    ExpertOutputs,
    /// the MoE router's logits, probabilities and choices
    Routing,
    /// the encoder-decoder's host-written masks
    Masks,
    Activations,
    /// the sinusoidal or RoPE table
    PositionTables,
    SampledId,
}

impl Group {
    pub const COUNT: usize = Group::SampledId as usize + 1;

    pub fn what(self) -> &'static str {
        match self {
            Group::AttentionMaps => "attention maps",
            Group::AttentionScratch => "attention scratch",
            Group::KvCache => "KV cache",
            Group::CrossKv => "cross K/V",
            Group::Logits => "logits",
            Group::ExpertOutputs => "MoE expert outputs",
            Group::Routing => "MoE routing",
            Group::Masks => "masks",
            Group::Activations => "activations",
            Group::PositionTables => "positions",
            Group::SampledId => "sampled id",
        }
    }

    /// Whether the GPU binds its buffers by ranges of whole rows where one is over the binding
    /// limit (the logits: a long pass over a large vocabulary, GPT-2 small past 667 rows under
    /// 128 MiB), so the budget holds them to maxBufferSize and their row to the binding limit.
    pub fn bound_by_rows(self) -> bool {
        matches!(self, Group::Logits)
    }

    /// Whether its shape is written as a count of equal buffers ("4 x (S 32, NKV*HS 24)") rather
    /// than one buffer's shape (where the declaration does not describe it).
    pub fn counted(self) -> bool {
        matches!(self, Group::AttentionMaps | Group::KvCache | Group::CrossKv | Group::Masks)
    }
}

/// One dimension of a run-state buffer, named in the notation of ARCHITECTURE.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// `n` values along `name`: written "S 32"
    Of(&'static str, usize),
    /// `n` x `n` values along `name` twice, kept as one dimension: written "S 32, S 32"
    Square(&'static str, usize),
    /// an unnamed size: written "2"
    Fixed(usize),
}

impl Dim {
    pub fn size(self) -> usize {
        match self {
            Dim::Of(_, n) | Dim::Fixed(n) => n,
            Dim::Square(_, n) => n.saturating_mul(n),
        }
    }
}

/// The type of a buffer's values (4 bytes each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    U32,
}

/// What a buffer holds once allocated.
#[derive(Clone, Copy)]
pub enum Init<'a> {
    Zeros(Dtype),
    /// f32 values computed when it is allocated (the position tables)
    Table(&'a dyn Fn() -> Vec<f32>),
}

/// One declared run-state buffer.
pub struct Buffer<'a> {
    /// the group of the memory demand that counts it
    pub group: Group,
    /// the backend's label for it
    pub label: &'static str,
    pub dims: &'a [Dim],
    pub init: Init<'a>,
}

impl Buffer<'_> {
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().map(|d| d.size()).collect()
    }
    /// 4 per value, saturating (u128 inside: NH x S x S of a long context overflows usize on wasm32).
    pub fn bytes(&self) -> u64 {
        let n = self.dims.iter().fold(4u128, |a, d| a.saturating_mul(d.size() as u128));
        u64::try_from(n).unwrap_or(u64::MAX)
    }
    /// Its shape as the memory demand writes it: "(S 32, NKV*HS 24)"; unnamed sizes alone are bare: "4".
    pub fn notation(&self) -> String {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|d| match *d {
                Dim::Of(name, n) => format!("{name} {n}"),
                Dim::Square(name, n) => format!("{name} {n}, {name} {n}"),
                Dim::Fixed(n) => n.to_string(),
            })
            .collect();
        if self.dims.iter().all(|d| matches!(d, Dim::Fixed(_))) {
            dims.join(", ")
        } else {
            format!("({})", dims.join(", "))
        }
    }
}

/// Where a walk of the run-state declaration puts each buffer.
pub trait BufferSink {
    /// What the walk builds `RunState<T>` of.
    type T;
    /// How the memory demand writes `group`'s shape, where it is not one buffer's shape.
    fn describe(&mut self, _group: Group, _text: &dyn Fn() -> String) {}
    fn take(&mut self, buf: &Buffer) -> Result<Self::T>;
}

/// A walk over a sink, counting the bytes declared.
pub struct StateBuilder<'a, S: BufferSink> {
    sink: &'a mut S,
    bytes: u64,
}

impl<'a, S: BufferSink> StateBuilder<'a, S> {
    pub fn new(sink: &'a mut S) -> Self {
        StateBuilder { sink, bytes: 0 }
    }
    /// The bytes declared so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub(super) fn describe(&mut self, group: Group, text: impl Fn() -> String) {
        self.sink.describe(group, &text);
    }
    fn take(&mut self, group: Group, label: &'static str, dims: &[Dim], init: Init) -> Result<S::T> {
        let buf = Buffer { group, label, dims, init };
        self.bytes = self.bytes.saturating_add(buf.bytes());
        self.sink.take(&buf)
    }
    pub(super) fn zeros(&mut self, group: Group, label: &'static str, dims: &[Dim]) -> Result<S::T> {
        self.take(group, label, dims, Init::Zeros(Dtype::F32))
    }
    pub(super) fn zeros_u32(&mut self, group: Group, label: &'static str, dims: &[Dim]) -> Result<S::T> {
        self.take(group, label, dims, Init::Zeros(Dtype::U32))
    }
    pub(super) fn table(&mut self, group: Group, label: &'static str, dims: &[Dim], values: &dyn Fn() -> Vec<f32>) -> Result<S::T> {
        self.take(group, label, dims, Init::Table(values))
    }
}

/// Allocates each declared buffer on the backend.
pub(super) struct Allocate<'a, B>(pub(super) &'a B);

impl<B: Backend> BufferSink for Allocate<'_, B> {
    type T = B::T;
    fn take(&mut self, buf: &Buffer) -> Result<B::T> {
        let shape = buf.shape();
        match buf.init {
            Init::Zeros(Dtype::F32) if buf.group.bound_by_rows() => self.0.zeros_rows(&shape, buf.label),
            Init::Zeros(Dtype::F32) => self.0.zeros(&shape, buf.label),
            Init::Zeros(Dtype::U32) => self.0.zeros_u32(&shape, buf.label),
            Init::Table(values) => self.0.tensor(&shape, &values(), buf.label),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ModelConfig;
    use crate::model::memory::{demand_for, WeightCopies};
    use crate::model::state::{MapLayers, Plan, RunState};
    use crate::model::CpuBackend;

    /// Allocates on the CPU, summing the bytes of the tensors the backend returned.
    struct Measured(Allocate<'static, CpuBackend>, u64);

    impl BufferSink for Measured {
        type T = ();
        fn take(&mut self, buf: &Buffer) -> Result<()> {
            let t = self.0.take(buf)?;
            self.1 += 4 * t.len() as u64;
            Ok(())
        }
    }

    const CONFIGS: [&str; 4] = [
        r#"{"arch":"decoder","vocab_size":11,"d_model":8,"num_layers":2,"num_heads":2,"max_seq_len":64,"d_ff":8}"#,
        r#"{"arch":"decoder","vocab_size":11,"d_model":8,"num_layers":3,"num_heads":2,"max_seq_len":64,"moe":{"num_experts":3,"top_k":3,"expert_dim":8,"capacity_factor":1.0}}"#,
        r#"{"arch":"llama","vocab_size":11,"d_model":8,"num_layers":2,"num_heads":2,"num_kv_heads":1,"max_seq_len":64,"multiple_of":4}"#,
        r#"{"arch":"encoder_decoder","src_vocab_size":11,"tgt_vocab_size":13,"d_model":8,"num_layers":2,"num_heads":2,"max_seq_len":64,"d_ff":8}"#,
    ];

    #[test]
    fn the_backend_allocates_the_bytes_the_demand_sums() {
        for json in CONFIGS {
            let cfg = ModelConfig::from_json(json).unwrap();
            for plan in [Plan::full(&cfg), Plan::at_load(&cfg), Plan::new(&cfg, 7, MapLayers::only([1]), 21)] {
                let mut sink = Measured(Allocate(&CpuBackend), 0);
                let st = RunState::declare(&cfg, &plan, &mut StateBuilder::new(&mut sink)).unwrap();
                assert_eq!(sink.1, st.bytes, "{json} {plan:?}");
                assert_eq!(demand_for(&cfg, WeightCopies::None, &plan).run_state_bytes(), st.bytes, "{json} {plan:?}");
            }
        }
    }

    #[test]
    fn equal_buffers_are_named_as_before() {
        // C, NH*HS and H all 8, E = K = 3: the demand names the widest by H, then NH*HS, then C,
        // and the routing's largest by E
        let cfg = ModelConfig::from_json(CONFIGS[1]).unwrap();
        let d = demand_for(&cfg, WeightCopies::None, &Plan::new(&cfg, 7, MapLayers::None, 7));
        let shapes: Vec<(&str, &str, &str)> = d.items.iter().map(|i| (i.what, i.shape.as_str(), i.buffer_shape.as_str())).collect();
        assert_eq!(
            shapes[1..],
            [
                ("attention scratch", "(NH 2, Tq*Tk 7)", "(NH 2, Tq*Tk 7)"),
                ("KV cache", "6 x (S 7, NKV*HS 8)", "(S 7, NKV*HS 8)"),
                ("logits", "(S 7, V 11)", "(S 7, V 11)"),
                ("MoE expert outputs", "(E 3, S 7, C 8)", "(E 3, S 7, C 8)"),
                ("MoE routing", "(S 7, E 3 + 3 K 3) per layer", "(S 7, E 3)"),
                ("activations", "1 x (S 7, 3 C + 2 NH*HS + 1 H + 1)", "(S 7, H 8)"),
                ("positions", "(S 7, C 8)", "(S 7, C 8)"),
                ("sampled id", "4", "4"),
            ]
        );
    }
}
