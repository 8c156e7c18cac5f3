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
use crate::model::weights::Census;

/// Default budget of the native CLI (its `--memory-budget` changes it).
pub const DEFAULT_BUDGET: u64 = 4 << 30;
/// Default budget of the page: wasm32 addresses 4 GiB at most, and the checkpoint's bytes, the
/// converted weights and the worker's copies all live in it.
pub const PAGE_BUDGET: u64 = 2 << 30;

/// How much memory a load may use, and how the user raises it (for the error message).
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub bytes: u64,
    /// e.g. "raise it with --memory-budget"
    pub how_to_raise: &'static str,
}

impl Budget {
    pub fn cli(bytes: u64) -> Budget {
        Budget { bytes, how_to_raise: "raise it with --memory-budget" }
    }
    pub fn page() -> Budget {
        Budget { bytes: PAGE_BUDGET, how_to_raise: "the page's limit" }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget { bytes: DEFAULT_BUDGET, how_to_raise: "the default budget" }
    }
}

/// One group of buffers: what it is, its shape in the notation of ARCHITECTURE.md, its bytes.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Item {
    pub what: &'static str,
    pub shape: String,
    pub bytes: u64,
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

/// The memory the model of `cfg` needs once loaded: its weights (f32) and every RunState buffer.
pub fn demand(cfg: &ModelConfig) -> Demand {
    demand_with(cfg, WeightCopies::None)
}

/// [`demand`] on a backend that keeps `copies` of the weights.
pub fn demand_with(cfg: &ModelConfig, copies: WeightCopies) -> Demand {
    demand_for(cfg, copies, false)
}

/// [`demand_with`]; `weights16`: the checkpoint is F16 / BF16 and the backend keeps its matmul
/// weights and embeddings 16-bit (the GPU, `Backend::keeps_16bit`), 2 bytes a value.
pub fn demand_for(cfg: &ModelConfig, copies: WeightCopies, weights16: bool) -> Demand {
    let (s, c, l) = (cfg.max_seq_len, cfg.d_model, cfg.num_layers);
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
    let mut add = |what: &'static str, shape: String, bytes: u64| {
        if bytes > 0 {
            items.push(Item { what, shape, bytes });
        }
    };
    let panel = match copies {
        WeightCopies::None => 0,
        WeightCopies::Panels(width) => width,
    };
    let census = Census::with_panel(cfg, panel);
    if weights16 {
        let f32s = census.params.saturating_sub(census.half_params);
        let bytes = f32s.saturating_mul(4).saturating_add(census.half_bytes);
        add("weights", format!("{} parameters, {} of them 16-bit", census.params, census.half_params), bytes);
    } else {
        add("weights", format!("{} parameters", census.params), census.params.saturating_mul(4));
    }
    add(
        "packed weights",
        format!("{} matmul values in panels of {panel} rows", census.packed_params),
        census.packed_params.saturating_mul(4),
    );
    // per layer: (NH, S, S) attention probabilities; encoder-decoder: also the encoder's and the cross maps
    let map_layers = l * stacks + if encdec { l } else { 0 };
    add("attention maps", format!("{map_layers} x (NH {nh}, S {s}, S {s})"), f32s(&[map_layers, nh, s, s]));
    add("KV cache", format!("{} x (S {s}, NKV*HS {kvw})", 2 * l * stacks), f32s(&[l * stacks, 2, s, kvw]));
    if encdec {
        add("cross K/V", format!("{} x (S {s}, C {c})", 2 * l), f32s(&[l, 2, s, c]));
    }
    add("logits", format!("(S {s}, V {out_vocab})"), f32s(&[s, out_vocab]));
    if let Some(m) = &cfg.moe {
        let (e, k) = (m.num_experts, m.top_k);
        add("MoE expert outputs", format!("(E {e}, S {s}, C {c})"), f32s(&[stacks, e, s, c]));
        // scratch: router logits and gate (S, E); per layer: probs (S, E), experts, weights, kept (S, K)
        let routing = f32s(&[stacks, 2, s, e]).saturating_add(f32s(&[l * stacks, s, e + 3 * k]));
        add("MoE routing", format!("(S {s}, E {e} + 3 K {k}) per layer"), routing);
    }
    if encdec {
        // encoder: padding mask; decoder: self mask and cross mask (host-written, (S, S) each)
        add("masks", format!("3 x (S {s}, S {s})"), f32s(&[3, s, s]));
    }
    // scratch per stack: x, xn, tmp (S, C); q, att (S, NH*HS); h (S, H), h2 (S, H) for SwiGLU; ids (S,)
    let ffn_bufs = if cfg.arch == Arch::Llama { 2 } else { 1 };
    let act = f32s(&[stacks, s, 3 * c + 2 * nh * hs + ffn_bufs * hidden + 1]);
    add("activations", format!("{stacks} x (S {s}, 3 C + 2 NH*HS + {ffn_bufs} H + 1)"), act);
    // (a learned table is one of the weights)
    let pos = match cfg.positions {
        Positions::Rope => f32s(&[s, hs / 2, 2]),
        Positions::Sinusoidal => f32s(&[s, c]),
        Positions::Learned => 0,
    };
    add("positions", format!("(S {s}, C {c})"), pos);
    add("sampled id", "4".into(), 16);
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

    /// Ok when the total fits the budget; else one line naming the total and the biggest buffers.
    pub fn check(&self, budget: &Budget) -> Result<(), String> {
        if self.total_bytes <= budget.bytes {
            return Ok(());
        }
        let biggest: Vec<String> = self.largest(3).iter().map(|i| format!("{} {} ({})", i.what, human_bytes(i.bytes), i.shape)).collect();
        Err(format!(
            "the model needs {} of memory ({} bytes), over the memory budget of {} ({}): biggest buffers: {}",
            human_bytes(self.total_bytes),
            self.total_bytes,
            human_bytes(budget.bytes),
            budget.how_to_raise,
            biggest.join(", ")
        ))
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
