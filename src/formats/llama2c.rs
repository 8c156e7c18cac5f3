//! karpathy/llama2.c's legacy `model.bin`: a header of 7 little-endian int32 (dim, hidden_dim, n_layers,
//! n_heads, n_kv_heads, vocab_size (negative when the classifier is not shared), seq_len), then f32 weights
//! in a fixed order, each kind for every layer at once:
//! token embedding, attention norms, wq, wk, wv, wo, ffn norms, w1, w2, w3, final norm,
//! freq_cis_real and freq_cis_imag ([seq_len, head_dim / 2] each; run.c ignores them), then the classifier
//! when it is not shared. RoPE is on adjacent pairs (Meta's layout, ours), with base 10000, and RMSNorm's
//! eps is 1e-5, as run.c has them.

use super::{err, DType, Dims, Family, Files, Format, Op, Plan, Result, Source, TensorPlan};
use super::{MAX_DIM, MAX_LAYERS};

/// RMSNorm eps of run.c.
pub const EPS: f32 = 1e-5;
/// RoPE base of run.c.
pub const THETA: f32 = 10000.0;

/// Plans the load of `bin` (a llama2.c model.bin among `files`).
pub fn plan(files: &dyn Files, bin: &str) -> Result<Plan> {
    let size = files.size(bin).ok_or_else(|| super::FormatError(format!("{bin}: no such file")))?;
    if size < 28 {
        return err(format!("{bin}: {size} bytes, too short for llama2.c's 28-byte header"));
    }
    let h = files.read_range(bin, 0, 28)?;
    let hdr: Vec<i32> = h.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let [dim, hidden, layers, heads, kv_heads, vocab, seq_len] = [hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5], hdr[6]];
    let shared = vocab > 0;
    let field = |v: i32, name: &str, max: usize| -> Result<usize> {
        let u = v.unsigned_abs() as usize;
        if v == 0 || (v < 0 && name != "vocab_size") || u > max {
            return err(format!("{bin}: header field {name} = {v} is out of range (1 to {max}); is this a llama2.c model.bin?"));
        }
        Ok(u)
    };
    let d = field(dim, "dim", MAX_DIM)?;
    let ff = field(hidden, "hidden_dim", MAX_DIM)?;
    let l = field(layers, "n_layers", MAX_LAYERS)?;
    let nh = field(heads, "n_heads", MAX_LAYERS)?;
    let nkv = field(kv_heads, "n_kv_heads", MAX_LAYERS)?;
    let v = field(vocab, "vocab_size", MAX_DIM)?;
    let s = field(seq_len, "seq_len", MAX_DIM)?;
    if d % nh != 0 || nh % nkv != 0 || (d / nh) % 2 != 0 {
        return err(format!("{bin}: dim {d}, n_heads {nh}, n_kv_heads {nkv} do not make whole, even heads with whole KV groups"));
    }
    let hd = d / nh;
    let kvd = nkv * hd;
    let (d64, ff64, l64, v64, s64, kv64, hd64) = (d as u64, ff as u64, l as u64, v as u64, s as u64, kvd as u64, hd as u64);
    // Every count fits in u64: each factor is at most 2^20 and layers at most 2^10.
    let floats = v64 * d64
        + l64 * d64
        + l64 * d64 * d64
        + 2 * l64 * kv64 * d64
        + l64 * d64 * d64
        + l64 * d64
        + 3 * l64 * ff64 * d64
        + d64
        + s64 * hd64
        + if shared { 0 } else { v64 * d64 };
    if 28 + 4 * floats != size {
        return err(format!(
            "{bin}: the header (dim {d}, hidden {ff}, {l} layers, {nh} heads, {nkv} KV heads, vocab {v}{}, seq_len {s}) needs {} bytes but the file has {size}",
            if shared { "" } else { ", unshared classifier" },
            28 + 4 * floats
        ));
    }
    let mut tensors = Vec::new();
    let mut off = 28u64;
    let next = |name: String, shape: Vec<usize>, foreign: String, tensors: &mut Vec<TensorPlan>, off: &mut u64| {
        let n: u64 = shape.iter().map(|&x| x as u64).product();
        tensors.push(TensorPlan {
            name,
            shape: shape.clone(),
            source: Source { file: bin.to_string(), offset: *off, dtype: DType::F32, stored: shape, foreign },
            op: Op::Copy,
        });
        *off += 4 * n;
    };
    next("tok_embeddings.weight".into(), vec![v, d], "token_embedding_table".into(), &mut tensors, &mut off);
    let per_layer: [(&str, &str, [usize; 2]); 9] = [
        ("attention_norm.weight", "rms_att_weight", [d, 1]),
        ("attention.wq.weight", "wq", [d, d]),
        ("attention.wk.weight", "wk", [kvd, d]),
        ("attention.wv.weight", "wv", [kvd, d]),
        ("attention.wo.weight", "wo", [d, d]),
        ("ffn_norm.weight", "rms_ffn_weight", [d, 1]),
        ("feed_forward.w1.weight", "w1", [ff, d]),
        ("feed_forward.w2.weight", "w2", [d, ff]),
        ("feed_forward.w3.weight", "w3", [ff, d]),
    ];
    for (ours, theirs, shape) in per_layer {
        for i in 0..l {
            let shape = if shape[1] == 1 { vec![shape[0]] } else { shape.to_vec() };
            next(format!("layers.{i}.{ours}"), shape, format!("{theirs} (layer {i})"), &mut tensors, &mut off);
        }
    }
    next("norm.weight".into(), vec![d], "rms_final_weight".into(), &mut tensors, &mut off);
    off += 4 * s64 * hd64; // freq_cis_real + freq_cis_imag
    debug_assert!(shared || off + 4 * v64 * d64 == size);
    // a shared classifier is the token embedding (the model ties its head: no output tensor of ours)
    if !shared {
        next("output.weight".into(), vec![v, d], "wcls".into(), &mut tensors, &mut off);
    }
    let dims = Dims {
        vocab_size: v,
        d_model: d,
        num_layers: l,
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: hd,
        ffn_hidden: ff,
        context: s,
        norm_eps: EPS,
        rope_theta: THETA,
        tied: shared,
        qkv_bias: false,
        rotary_dims: 0,
        parallel_residual: false,
        activation: "swiglu",
    };
    Ok(Plan { format: Format::Llama2c, family: Family::Llama, declared: "llama2.c".into(), dims, tensors, dtype: DType::F32 })
}
