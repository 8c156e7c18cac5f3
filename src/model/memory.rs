//! The memory a model asks for, computed from its config before anything is allocated, and the
//! budget it is checked against.
//!
//! A checkpoint of a few kilobytes can describe a model whose run state needs terabytes: the
//! attention maps are (NH, S, S) per layer and the logits (S, V), and neither is stored in the file.
//! [`demand`] sums every buffer of the run state's declaration
//! ([`RunState::declare`], the list [`RunState::new`] allocates from) by [`Group`], plus the weights
//! (counted from the architecture's declaration, `Weights::declare`), plus the copies of the weights
//! a backend keeps ([`WeightCopies`]), and [`Demand::check`] refuses a model over the budget with one
//! line that names the total and the biggest buffers.

use crate::model::config::ModelConfig;
use crate::model::state::{Buffer, BufferSink, Group, Plan, RunState, StateBuilder};
use crate::model::weights::{Census, Role, Sink, VarBuilder, Weights};

/// Default budget of the native CLI (its `--memory-budget` changes it).
pub const DEFAULT_BUDGET: u64 = 4 << 30;
/// Default budget of the page: wasm32 addresses 4 GiB at most, and the checkpoint's bytes, the
/// converted weights and the worker's copies all live in it.
pub const PAGE_BUDGET: u64 = 2 << 30;

/// How much memory a load may use, and how the user raises it (for the error message); on a GPU,
/// also the device's limits on one buffer.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub bytes: u64,
    /// e.g. "raise it with --memory-budget"
    pub how_to_raise: &'static str,
    /// the largest buffer the device creates (WebGPU maxBufferSize); u64::MAX: no such limit
    pub max_buffer: u64,
    /// the largest buffer a kernel binds (WebGPU maxStorageBufferBindingSize); u64::MAX: none
    pub max_binding: u64,
}

/// The limits of a GPU device on one buffer (WebGPU's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceLimits {
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
}

impl Budget {
    pub fn cli(bytes: u64) -> Budget {
        Budget { bytes, how_to_raise: "raise it with --memory-budget", max_buffer: u64::MAX, max_binding: u64::MAX }
    }
    /// The page's fixed cap, without a device's limits.
    pub fn page() -> Budget {
        Budget::page_for(None, None)
    }
    /// The page's budget: `PAGE_BUDGET`, or half of the machine's memory where the browser tells it
    /// (`navigator.deviceMemory`, in GiB, rounded down by the browser), whichever is less; on the
    /// GPU path also the adapter's limits on one buffer.
    pub fn page_for(gpu: Option<DeviceLimits>, device_memory_gib: Option<f64>) -> Budget {
        let mut bytes = PAGE_BUDGET;
        let mut how_to_raise = "the page's limit";
        if let Some(gib) = device_memory_gib.filter(|g| g.is_finite() && *g > 0.0) {
            let half = (gib * (1u64 << 30) as f64 / 2.0) as u64;
            if half < bytes {
                (bytes, how_to_raise) = (half, "half of this machine's memory (navigator.deviceMemory)");
            }
        }
        let (max_buffer, max_binding) = gpu.map_or((u64::MAX, u64::MAX), |l| (l.max_buffer_size, l.max_storage_buffer_binding_size));
        Budget { bytes, how_to_raise, max_buffer, max_binding }
    }
    /// This budget with a device's limits on one buffer (the native GPU path).
    pub fn with_limits(self, l: DeviceLimits) -> Budget {
        Budget { max_buffer: l.max_buffer_size, max_binding: l.max_storage_buffer_binding_size, ..self }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget { bytes: DEFAULT_BUDGET, how_to_raise: "the default budget", max_buffer: u64::MAX, max_binding: u64::MAX }
    }
}

/// One group of buffers: what it is, its shape in the notation of ARCHITECTURE.md, its bytes.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Item {
    pub what: &'static str,
    pub shape: String,
    pub bytes: u64,
    /// the largest single buffer of the group (what one GPU binding must hold) and its shape
    pub buffer: u64,
    pub buffer_shape: String,
    /// a group the GPU binds by rows (the logits: `gpu::matmul::matmul_act` writes an out over
    /// the binding limit in ranges of whole rows, the sampler binds the range of its row): the
    /// largest row, which one binding must hold; its buffers are held to maxBufferSize only
    #[serde(skip)]
    pub row_bound: Option<u64>,
}

/// Every buffer a loaded model holds, grouped.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Demand {
    pub items: Vec<Item>,
    pub total_bytes: u64,
    /// The weights a GPU may bind by rows (token embeddings, the head: `Gpu::row_chunks`), which
    /// the weights item's `buffer` leaves out: the largest of them (for maxBufferSize) and the
    /// largest row among them (for maxStorageBufferBindingSize)
    pub split: Option<SplitWeights>,
}

/// The largest weight a GPU may bind by rows, and its largest row.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SplitWeights {
    pub name: String,
    pub shape: Vec<usize>,
    pub bytes: u64,
    /// the largest row of any of them: the least one binding must hold
    pub row_name: String,
    pub row_bytes: u64,
}

/// A walk of the run-state declaration summed by [`Group`]: each group's buffers, bytes and the
/// first of its largest buffers.
#[derive(Default)]
struct Tally([Sum; Group::COUNT]);

#[derive(Default)]
struct Sum {
    group: Option<Group>,
    text: Option<String>,
    buffers: u64,
    bytes: u64,
    buffer: u64,
    buffer_shape: String,
    /// the largest row of the group's buffers
    row: u64,
}

impl BufferSink for Tally {
    type T = ();
    fn describe(&mut self, group: Group, text: &dyn Fn() -> String) {
        self.0[group as usize].text = Some(text());
    }
    fn take(&mut self, buf: &Buffer) -> crate::error::Result<()> {
        let sum = &mut self.0[buf.group as usize];
        let bytes = buf.bytes();
        if sum.group.is_none() || bytes > sum.buffer {
            (sum.buffer, sum.buffer_shape) = (bytes, buf.notation());
        }
        let rows = buf.shape().first().copied().unwrap_or(1).max(1) as u64;
        sum.row = sum.row.max(bytes / rows);
        sum.group = Some(buf.group);
        sum.buffers += 1;
        sum.bytes = sum.bytes.saturating_add(bytes);
        Ok(())
    }
}

impl Tally {
    /// The groups that hold any bytes, in the order of [`Group`].
    fn items(self) -> impl Iterator<Item = Item> {
        self.0.into_iter().filter(|s| s.bytes > 0).filter_map(|s| {
            let group = s.group?;
            let shape = match s.text {
                Some(text) => text,
                None if group.counted() => format!("{} x {}", s.buffers, s.buffer_shape),
                None => s.buffer_shape.clone(),
            };
            let row_bound = group.bound_by_rows().then_some(s.row);
            Some(Item { what: group.what(), shape, bytes: s.bytes, buffer: s.buffer, buffer_shape: s.buffer_shape, row_bound })
        })
    }
}

/// "1.5 GiB", "300.0 MiB", "12.0 KiB", "80 B".
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (u, s) in UNITS {
        if b >= s {
            return format!("{:.1} {u}", b as f64 / s as f64);
        }
    }
    format!("{b} B")
}

/// Parses a byte size: "4GiB", "512MiB", "1.5G", "100000" (bytes). K/M/G/T are powers of 1024.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err("expected a size such as 4GiB, 512MiB or a number of bytes".into()),
    };
    let x: f64 = num.parse().map_err(|_| "expected a size such as 4GiB, 512MiB or a number of bytes".to_string())?;
    let bytes = x * mult as f64;
    if !(1.0..1.8e19).contains(&bytes) {
        return Err("the size must be at least 1 byte and at most 16 EiB".into());
    }
    Ok(bytes as u64)
}

/// Copies of the weights a backend keeps beside them (`Backend::weight_copies`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightCopies {
    /// the backend computes from the uploaded weights alone (GPU, CPU reference)
    #[default]
    None,
    /// the fast CPU backend (src/fastcpu): every matmul weight (N, K) held (instead of its rows) as
    /// ceil(N / width) panels of (K, width), 16-bit where the file is (`weights16`), f32 otherwise
    Panels(usize),
}

/// The memory the model of `cfg` needs at most (its whole context, every attention map): its
/// weights (f32) and every RunState buffer of [`Plan::full`].
pub fn demand(cfg: &ModelConfig) -> Demand {
    demand_with(cfg, WeightCopies::None)
}

/// [`demand`] on a backend that keeps `copies` of the weights.
pub fn demand_with(cfg: &ModelConfig, copies: WeightCopies) -> Demand {
    demand_for(cfg, copies, &Plan::full(cfg))
}

/// The largest weight tensors of a declaration in bytes (16-bit ones at 2 bytes a value where
/// `weights16`): the largest of those a GPU binds whole, and of those it may bind by rows.
#[derive(Default)]
struct Largest {
    weights16: bool,
    /// bytes, shape and name of the largest weight bound whole
    whole: (u64, Vec<usize>, String),
    split: Option<SplitWeights>,
}

/// Whether a GPU may bind the weight `name` of `role` by rows (`Gpu::row_chunks`): the tables the
/// embedding gather reads (token embeddings, not learned positions) and the output head.
pub fn splits_by_rows(name: &str, role: Role) -> bool {
    match role {
        Role::TiedEmbedding | Role::Head => true,
        Role::Embedding => !name.ends_with("position_embedding.weight"),
        _ => false,
    }
}

impl Sink for Largest {
    type T = ();
    fn take(&mut self, name: &str, shape: &[usize], role: Role) -> crate::error::Result<()> {
        let n = shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64));
        let k = shape.last().copied().unwrap_or(1).max(1) as u64;
        let row = if self.weights16 && role.keeps_16bit() { k.div_ceil(2).saturating_mul(4) } else { k.saturating_mul(4) };
        let bytes = (n / k).saturating_mul(row);
        if shape.len() == 2 && splits_by_rows(name, role) {
            let s = self.split.get_or_insert_with(|| SplitWeights {
                name: String::new(),
                shape: vec![],
                bytes: 0,
                row_name: String::new(),
                row_bytes: 0,
            });
            if bytes > s.bytes {
                (s.name, s.shape, s.bytes) = (name.to_string(), shape.to_vec(), bytes);
            }
            if row > s.row_bytes {
                (s.row_name, s.row_bytes) = (name.to_string(), row);
            }
        } else if bytes > self.whole.0 {
            self.whole = (bytes, shape.to_vec(), name.to_string());
        }
        Ok(())
    }
}

/// The memory of the model of `cfg` with the run state of `plan` (what `RunState::new(.., plan)`
/// allocates: the same declaration, walked): the weights, their copies, and every buffer sized by
/// the plan's context, its kept maps and the shared attention scratch.
pub fn demand_for(cfg: &ModelConfig, copies: WeightCopies, plan: &Plan) -> Demand {
    demand_of(cfg, copies, plan, false)
}

/// [`demand_for`]; `weights16`: the checkpoint is F16 / BF16 and the backend keeps its matmul
/// weights and embeddings 16-bit (the GPU, `Backend::keeps_16bit`), 2 bytes a value.
pub fn demand_of(cfg: &ModelConfig, copies: WeightCopies, plan: &Plan, weights16: bool) -> Demand {
    let mut items = Vec::new();
    // each group: what, its shape, its bytes, and its largest single buffer's bytes
    let mut add = |what: &'static str, shape: String, bytes: u64, (buffer_shape, buffer): (String, u64)| {
        if bytes > 0 {
            items.push(Item { what, shape, bytes, buffer, buffer_shape, row_bound: None });
        }
    };
    let panel = match copies {
        WeightCopies::None => 0,
        WeightCopies::Panels(width) => width,
    };
    let census = Census::with_panel(cfg, panel);
    let mut largest = Largest { weights16, ..Largest::default() };
    let _ = Weights::<()>::declare(cfg, &mut VarBuilder::new(&mut largest));
    // the largest weight a GPU binds whole (those it may bind by rows are in `split`)
    let largest_buf = (format!("{} {:?}", largest.whole.2, largest.whole.1), largest.whole.0);
    // the largest tensor of all, as the weights item names it
    let biggest_shape = match &largest.split {
        Some(s) if s.bytes > largest.whole.0 => s.shape.clone(),
        _ => largest.whole.1.clone(),
    };
    if panel > 0 {
        // the matmul weights as panels only, the rest (norms, biases, untied embedding tables) as f32 rows
        let rows = census.params.saturating_sub(census.matmul_params);
        add(
            "weights",
            format!(
                "{} parameters, the largest tensor {:?}; {} of them in the packed weights below",
                census.params, biggest_shape, census.matmul_params
            ),
            rows.saturating_mul(4),
            largest_buf,
        );
        let (per, what) = if weights16 { (2, "16-bit") } else { (4, "f32") };
        add(
            "packed weights",
            format!("{} matmul values ({what}) in panels of {panel} rows", census.packed_params),
            census.packed_params.saturating_mul(per),
            (String::new(), 0),
        );
    } else if weights16 {
        let f32s = census.params.saturating_sub(census.half_params);
        let bytes = f32s.saturating_mul(4).saturating_add(census.half_bytes);
        add(
            "weights",
            format!("{} parameters, {} of them 16-bit, the largest tensor {:?}", census.params, census.half_params, biggest_shape),
            bytes,
            largest_buf,
        );
    } else {
        add(
            "weights",
            format!("{} parameters, the largest tensor {:?}", census.params, biggest_shape),
            census.params.saturating_mul(4),
            largest_buf,
        );
    }
    // the run state: every buffer of its declaration, summed by group
    let mut tally = Tally::default();
    let _ = RunState::<()>::declare(cfg, plan, &mut StateBuilder::new(&mut tally));
    items.extend(tally.items());
    let total_bytes = items.iter().fold(0u64, |a, i| a.saturating_add(i.bytes));
    Demand { items, total_bytes, split: largest.split }
}

impl Demand {
    /// The run state alone (everything but the weights and their packed copies).
    pub fn run_state_bytes(&self) -> u64 {
        self.items.iter().filter(|i| i.what != "weights" && i.what != "packed weights").fold(0u64, |a, i| a.saturating_add(i.bytes))
    }

    /// The `n` largest groups, largest first.
    pub fn largest(&self, n: usize) -> Vec<&Item> {
        let mut v: Vec<&Item> = self.items.iter().collect();
        v.sort_by_key(|i| std::cmp::Reverse(i.bytes));
        v.truncate(n);
        v
    }

    /// Ok when the total fits the budget and every buffer the device's limits; else one line
    /// naming the total (or the buffer), the limit and the biggest buffers.
    pub fn check(&self, budget: &Budget) -> Result<(), String> {
        let biggest: Vec<String> = self.largest(3).iter().map(|i| format!("{} {} ({})", i.what, human_bytes(i.bytes), i.shape)).collect();
        if self.total_bytes > budget.bytes {
            return Err(format!(
                "the model needs {} of memory ({} bytes), over the memory budget of {} ({}): biggest buffers: {}",
                human_bytes(self.total_bytes),
                self.total_bytes,
                human_bytes(budget.bytes),
                budget.how_to_raise,
                biggest.join(", ")
            ));
        }
        if let Some(s) = &self.split {
            // a weight bound by rows needs one row per binding, and one buffer for the whole
            let (limit, name) = (budget.max_binding, "maxStorageBufferBindingSize");
            if s.row_bytes > limit {
                return Err(format!(
                    "the weight {} has rows of {} bytes, over this GPU's {name} of {} ({limit} bytes), so it cannot be bound even one row at a time",
                    s.row_name,
                    s.row_bytes,
                    human_bytes(limit)
                ));
            }
            let (limit, name) = (budget.max_buffer, "maxBufferSize");
            if s.bytes > limit {
                return Err(format!(
                    "the weight {} {:?} needs one buffer of {} ({} bytes), over this GPU's {name} of {} ({limit} bytes); in all the model needs {}",
                    s.name,
                    s.shape,
                    human_bytes(s.bytes),
                    s.bytes,
                    human_bytes(limit),
                    human_bytes(self.total_bytes)
                ));
            }
        }
        // a group bound by rows needs one row per binding (and one buffer for the whole, below)
        if let Some(i) = self.items.iter().find(|i| i.row_bound.is_some_and(|r| r > budget.max_binding)) {
            return Err(format!(
                "the {} have rows of {} bytes, over this GPU's maxStorageBufferBindingSize of {} ({} bytes), so they cannot be bound even one row at a time",
                i.what,
                i.row_bound.unwrap_or(0),
                human_bytes(budget.max_binding),
                budget.max_binding
            ));
        }
        let limits = [(budget.max_binding, "maxStorageBufferBindingSize", true), (budget.max_buffer, "maxBufferSize", false)];
        for (limit, name, binding) in limits {
            let bound_whole = |i: &&Item| !(binding && i.row_bound.is_some());
            let Some(big) = self.items.iter().filter(bound_whole).filter(|i| i.buffer > limit).max_by_key(|i| i.buffer) else { continue };
            return Err(format!(
                "the model needs one {} buffer of {} ({} bytes; {}), over this GPU's {name} of {} ({limit} bytes); in all it needs {}: biggest buffers: {}",
                big.what,
                human_bytes(big.buffer),
                big.buffer,
                big.buffer_shape,
                human_bytes(limit),
                human_bytes(self.total_bytes),
                biggest.join(", ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Arch;

    #[test]
    fn byte_sizes_parse_and_print() {
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("-1GiB").is_err());
        assert!(parse_bytes("4 parsecs").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(80), "80 B");
    }

    #[test]
    fn a_long_context_is_refused_by_its_attention_maps() {
        let cfg = ModelConfig::from_json(
            r#"{"arch":"decoder","vocab_size":11,"d_model":8,"num_layers":1,"num_heads":8,"max_seq_len":65536,"d_ff":16}"#,
        )
        .unwrap();
        let d = demand(&cfg);
        // 1 x 8 x 65536 x 65536 x 4 bytes = 128 GiB of maps
        assert_eq!(d.largest(1)[0].what, "attention maps");
        assert_eq!(d.largest(1)[0].bytes, 128 << 30);
        let e = d.check(&Budget::cli(4 << 30)).unwrap_err();
        assert!(e.starts_with("the model needs 128."), "{e}");
        assert!(e.contains("attention maps 128.0 GiB (1 x (NH 8, S 65536, S 65536))"), "{e}");
        assert!(e.contains("over the memory budget of 4.0 GiB (raise it with --memory-budget)"), "{e}");
        assert!(d.check(&Budget::cli(200 << 30)).is_ok());
    }

    #[test]
    fn the_largest_configs_do_not_overflow() {
        let cfg = ModelConfig {
            arch: Arch::EncoderDecoder,
            vocab_size: 1 << 20,
            src_vocab_size: 1 << 20,
            tgt_vocab_size: 1 << 20,
            d_model: 1 << 20,
            num_layers: 1024,
            num_heads: 1 << 20,
            max_seq_len: 65536,
            d_ff: 1 << 20,
            num_kv_heads: 1 << 20,
            multiple_of: 0,
            norm_eps: 1e-5,
            rope_theta: 1e4,
            moe: None,
            positions: crate::model::config::Positions::Sinusoidal,
            activation: crate::model::config::Activation::Relu,
            qkv_bias: true,
            tie_embeddings: false,
            attention_only: false,
            rotary_dims: 0,
            parallel_residual: false,
        };
        let d = demand(&cfg);
        assert_eq!(d.total_bytes, u64::MAX);
        assert!(d.check(&Budget::default()).is_err());
    }
}
