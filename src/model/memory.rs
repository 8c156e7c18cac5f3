//! The memory a model asks for, computed from its config before anything is allocated, and the
//! budget it is checked against.
//!
//! A checkpoint of a few kilobytes can describe a model whose run state needs terabytes: the
//! attention maps are (NH, S, S) per layer and the logits (S, V), and neither is stored in the file.
//! [`demand`] lists every buffer [`RunState::new`](crate::model::state::RunState::new) allocates
//! (a test allocates a RunState for every architecture and checks the two agree byte for byte) plus
//! the weights (counted from the architecture's declaration, `Weights::declare`), plus the copies of
//! the weights a backend keeps ([`WeightCopies`]), and [`Demand::check`] refuses a model over the budget with one line that names the
//! total and the biggest buffers.

use crate::model::config::{Arch, ModelConfig, Positions};
use crate::model::state::Plan;
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
}

/// Every buffer a loaded model holds, grouped.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Demand {
    pub items: Vec<Item>,
    pub total_bytes: u64,
}

/// Bytes of `count` 4-byte values, saturating (u128 inside: L x NH x S x S overflows u64).
fn f32s(dims: &[usize]) -> u64 {
    let n = dims.iter().fold(4u128, |a, &d| a.saturating_mul(d as u128));
    u64::try_from(n).unwrap_or(u64::MAX)
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
    /// the fast CPU backend (src/fastcpu): every matmul weight (N, K) packed again, on its first
    /// use, into ceil(N / width) panels of (K, width)
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

/// The largest weight tensor of a declaration (its elements and shape).
#[derive(Default)]
struct Largest(u64, Vec<usize>);

impl Sink for Largest {
    type T = ();
    const NAMES: bool = false;
    fn take(&mut self, _name: &str, shape: &[usize], _role: Role) -> crate::error::Result<()> {
        let n = shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64));
        if n > self.0 {
            *self = Largest(n, shape.to_vec());
        }
        Ok(())
    }
}

/// The memory of the model of `cfg` with the run state of `plan` (what `RunState::new(.., plan)`
/// allocates, buffer for buffer): the weights, their copies, and every buffer sized by the plan's
/// context, its kept maps and the shared attention scratch.
pub fn demand_for(cfg: &ModelConfig, copies: WeightCopies, plan: &Plan) -> Demand {
    demand_of(cfg, copies, plan, false)
}

/// [`demand_for`]; `weights16`: the checkpoint is F16 / BF16 and the backend keeps its matmul
/// weights and embeddings 16-bit (the GPU, `Backend::keeps_16bit`), 2 bytes a value.
pub fn demand_of(cfg: &ModelConfig, copies: WeightCopies, plan: &Plan, weights16: bool) -> Demand {
    let (s, c, l) = (plan.context, cfg.d_model, cfg.num_layers);
    let (nh, hs) = (cfg.num_heads, cfg.head_dim());
    let kvw = cfg.num_kv_heads * hs;
    let encdec = cfg.arch == Arch::EncoderDecoder;
    let stacks = if encdec { 2 } else { 1 };
    let hidden = match (&cfg.moe, cfg.arch) {
        (Some(m), _) => m.expert_dim,
        (None, Arch::Llama) => cfg.llama_hidden_dim(),
        _ => cfg.d_ff,
    };
    let out_vocab = if encdec { cfg.tgt_vocab_size } else { cfg.vocab_size };
    let mut items = Vec::new();
    // each group: what, its shape, its bytes, and its largest single buffer's bytes
    let mut add = |what: &'static str, shape: String, bytes: u64, (buffer_shape, buffer): (String, u64)| {
        if bytes > 0 {
            items.push(Item { what, shape, bytes, buffer, buffer_shape });
        }
    };
    // one buffer: its shape as written and its bytes
    let one = |shape: String, dims: &[usize]| (shape, f32s(dims));
    let panel = match copies {
        WeightCopies::None => 0,
        WeightCopies::Panels(width) => width,
    };
    let census = Census::with_panel(cfg, panel);
    let mut largest = Largest::default();
    let _ = Weights::<()>::declare(cfg, &mut VarBuilder::new(&mut largest));
    // (with 16-bit weights the largest tensor, a matmul weight or an embedding, is 16-bit too)
    let largest_buf = (format!("{:?}", largest.1), largest.0.saturating_mul(if weights16 { 2 } else { 4 }));
    if weights16 {
        let f32s = census.params.saturating_sub(census.half_params);
        let bytes = f32s.saturating_mul(4).saturating_add(census.half_bytes);
        add(
            "weights",
            format!("{} parameters, {} of them 16-bit, the largest tensor {:?}", census.params, census.half_params, largest.1),
            bytes,
            largest_buf,
        );
    } else {
        add(
            "weights",
            format!("{} parameters, the largest tensor {:?}", census.params, largest.1),
            census.params.saturating_mul(4),
            largest_buf,
        );
    }
    add(
        "packed weights",
        format!("{} matmul values in panels of {panel} rows", census.packed_params),
        census.packed_params.saturating_mul(4),
        (String::new(), 0),
    );
    // per kept layer: (NH, Tq*Tk) attention probabilities (encoder-decoder: the encoder's, the
    // decoder's and the cross maps); one shared (NH, Tq*Tk) scratch for the layers that keep none
    let area = plan.map_area;
    let cells = if area == s.saturating_mul(s) { format!("S {s}, S {s}") } else { format!("Tq*Tk {area}") };
    let kept = plan.maps.count(l) * if encdec { 3 } else { 1 };
    let map = one(format!("(NH {nh}, {cells})"), &[nh, area]);
    add("attention maps", format!("{kept} x (NH {nh}, {cells})"), f32s(&[kept, nh, area]), map.clone());
    if plan.maps.count(l) < l {
        add("attention scratch", map.0.clone(), map.1, map);
    }
    let kv = one(format!("(S {s}, NKV*HS {kvw})"), &[s, kvw]);
    add("KV cache", format!("{} x (S {s}, NKV*HS {kvw})", 2 * l * stacks), f32s(&[l * stacks, 2, s, kvw]), kv);
    if encdec {
        add("cross K/V", format!("{} x (S {s}, C {c})", 2 * l), f32s(&[l, 2, s, c]), one(format!("(S {s}, C {c})"), &[s, c]));
    }
    let logits = one(format!("(S {s}, V {out_vocab})"), &[s, out_vocab]);
    add("logits", logits.0.clone(), logits.1, logits);
    if let Some(m) = &cfg.moe {
        let (e, k) = (m.num_experts, m.top_k);
        let ys = one(format!("(E {e}, S {s}, C {c})"), &[e, s, c]);
        add("MoE expert outputs", ys.0.clone(), f32s(&[stacks, e, s, c]), ys);
        // scratch: router logits and gate (S, E); per layer: probs (S, E), experts, weights, kept (S, K)
        let routing = f32s(&[stacks, 2, s, e]).saturating_add(f32s(&[l * stacks, s, e + 3 * k]));
        add("MoE routing", format!("(S {s}, E {e} + 3 K {k}) per layer"), routing, one(format!("(S {s}, E {e})"), &[s, e.max(k)]));
    }
    if encdec {
        // encoder: padding mask; decoder: self mask and cross mask (host-written, (S, S) each)
        add("masks", format!("3 x (S {s}, S {s})"), f32s(&[3, s, s]), one(format!("(S {s}, S {s})"), &[s, s]));
    }
    // scratch per stack: x, xn, tmp (S, C); q, att (S, NH*HS); h (S, H), h2 (S, H) for SwiGLU; ids (S,)
    let ffn_bufs = if cfg.arch == Arch::Llama { 2 } else { 1 };
    let act = f32s(&[stacks, s, 3 * c + 2 * nh * hs + ffn_bufs * hidden + 1]);
    let widest = [(c, "C"), (nh * hs, "NH*HS"), (hidden, "H")].into_iter().max_by_key(|w| w.0).unwrap_or((c, "C"));
    let act_buf = one(format!("(S {s}, {} {})", widest.1, widest.0), &[s, widest.0]);
    add("activations", format!("{stacks} x (S {s}, 3 C + 2 NH*HS + {ffn_bufs} H + 1)"), act, act_buf);
    // (a learned table is one of the weights)
    let (pos, pos_shape) = match cfg.positions {
        Positions::Rope => (f32s(&[s, hs / 2, 2]), format!("(S {s}, HS/2 {}, 2)", hs / 2)),
        Positions::Sinusoidal => (f32s(&[s, c]), format!("(S {s}, C {c})")),
        Positions::Learned => (0, String::new()),
    };
    if pos > 0 {
        add("positions", pos_shape.clone(), pos, (pos_shape, pos));
    }
    add("sampled id", "4".into(), 16, ("4".into(), 16));
    let total_bytes = items.iter().fold(0u64, |a, i| a.saturating_add(i.bytes));
    Demand { items, total_bytes }
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
        let limits = [(budget.max_binding, "maxStorageBufferBindingSize"), (budget.max_buffer, "maxBufferSize")];
        for (limit, name) in limits {
            let Some(big) = self.items.iter().filter(|i| i.buffer > limit).max_by_key(|i| i.buffer) else { continue };
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
        };
        let d = demand(&cfg);
        assert_eq!(d.total_bytes, u64::MAX);
        assert!(d.check(&Budget::default()).is_err());
    }
}
