//! The op interface the models are written against (`Backend`, with the shapes of every op) and the
//! tensor both CPU backends share (`tensor.rs`). The backends live in their rooms and are re-exported
//! here: the GPU (`crate::gpu::backend`: our WGSL kernels through wgpu, WebGPU in the browser,
//! Vulkan/Metal natively), the CPU reference (`crate::cpu::backend`) and the fast CPU backend
//! (src/fastcpu). The model code is the same for all; only `Backend::T` differs.
//!
//! Ops record work; `submit` sends it (GPU) and `read_*` waits for results. Every op takes its
//! output first and explicit row counts / element offsets, so models run over preallocated buffers.
//! Shapes use the notation of ARCHITECTURE.md (T rows, C = d_model, NH / NKV heads, HS head size,
//! V vocabulary, E experts, K experts per token); a tensor may hold more rows than an op uses (the
//! buffers are allocated for S rows), and every op checks that its rows fit.

pub mod tensor;

pub use crate::cpu::CpuBackend;
pub use crate::gpu::backend::GpuBackend;
pub use tensor::CpuTensor;

use crate::error::Result;
use crate::ops::{AttnShape, EwOp, RopeShape, SampleParams};

#[allow(clippy::too_many_arguments, async_fn_in_trait)]
pub trait Backend {
    type T;
    /// "gpu" or "cpu"
    fn kind(&self) -> &'static str;
    /// A tensor of `shape` holding `data` (row-major f32, `data.len()` = the product of `shape`).
    fn tensor(&self, shape: &[usize], data: &[f32], label: &str) -> Result<Self::T>;
    /// A weight the checkpoint keeps 16-bit (`bits`: f16 or bf16 as `dtype` says, row-major), used
    /// only by `matmul*`, `qkv`, `embedding` and `add_rows`. The default widens it to f32 (the CPU
    /// backends); the GPU keeps it 16-bit (shaders/matmul16.wgsl).
    fn tensor16(&self, shape: &[usize], bits: &[u16], dtype: crate::model::checkpoint::FloatDtype, label: &str) -> Result<Self::T> {
        self.tensor(shape, &crate::model::checkpoint::widen16(bits, dtype), label)
    }
    /// A model weight of `role` holding `data` (`Weights::load`): [`Backend::tensor`], except where a
    /// backend stores a role its own way (the fast CPU backend keeps matmul weights only as packed panels).
    fn weight(&self, shape: &[usize], data: &[f32], role: crate::model::forward::weights::Role, label: &str) -> Result<Self::T> {
        let _ = role;
        self.tensor(shape, data, label)
    }
    /// [`Backend::weight`] for a weight the checkpoint keeps 16-bit: [`Backend::tensor16`] by default.
    fn weight16(
        &self,
        shape: &[usize],
        bits: &[u16],
        dtype: crate::model::checkpoint::FloatDtype,
        role: crate::model::forward::weights::Role,
        label: &str,
    ) -> Result<Self::T> {
        let _ = role;
        self.tensor16(shape, bits, dtype, label)
    }
    /// An f32 tensor of `shape`, all zeros.
    fn zeros(&self, shape: &[usize], label: &str) -> Result<Self::T>;
    /// [`Backend::zeros`] of a 2-D output that a GPU may bind by ranges of whole rows where it is
    /// over the binding limit (the logits of a long pass: the matmul writes it range by range, the
    /// sampler binds the range of its row); only `matmul*` and `sample` may take it.
    fn zeros_rows(&self, shape: &[usize], label: &str) -> Result<Self::T> {
        self.zeros(shape, label)
    }
    /// A u32 tensor of `shape` (token ids, expert indices, the sampler's record), all zeros.
    fn zeros_u32(&self, shape: &[usize], label: &str) -> Result<Self::T>;
    /// t[offset..offset + data.len()] = data, t f32. Ordered after the ops recorded before it.
    fn write_f32(&mut self, t: &Self::T, offset: usize, data: &[f32]) -> Result<()>;
    /// t[offset..offset + data.len()] = data, t u32.
    fn write_u32(&mut self, t: &Self::T, offset: usize, data: &[u32]) -> Result<()>;
    /// out[out_off..] (M, N) = x[x_off..] (M, K) @ W^T + b. W (N, K) as PyTorch stores a Linear
    /// weight, b (N,).
    fn matmul(
        &mut self,
        out: &Self::T,
        out_off: usize,
        x: &Self::T,
        x_off: usize,
        m: usize,
        w: &Self::T,
        b: Option<&Self::T>,
    ) -> Result<()>;
    /// out (M, N) = act(x (M, K) @ W^T + b), W (N, K), b (N,), act ReLU or GELU: a matmul with its
    /// activation. The default is the matmul then the activation in place; the GPU fuses them into
    /// one dispatch.
    fn matmul_act(&mut self, out: &Self::T, x: &Self::T, m: usize, w: &Self::T, b: Option<&Self::T>, n: usize, act: EwOp) -> Result<()> {
        self.matmul(out, 0, x, 0, m, w, b)?;
        self.inplace(out, None, m * n, act)
    }
    /// The attention projections of M rows: q (M, NQ) = x @ W_q^T + b_q; k[kv_off..], v[kv_off..]
    /// (M, NKV) = x @ W_k^T + b_k, x @ W_v^T + b_v (rows of the KV cache). x (M, K), W_q (NQ, K),
    /// W_k and W_v (NKV, K); NQ = NH*HS, NKV here the width NKV*HS. The default is three matmuls;
    /// the GPU does few-row passes, biased or not, in one dispatch.
    fn qkv(
        &mut self,
        q: &Self::T,
        k: &Self::T,
        v: &Self::T,
        kv_off: usize,
        x: &Self::T,
        m: usize,
        w: [(&Self::T, Option<&Self::T>); 3],
    ) -> Result<()> {
        self.matmul(q, 0, x, 0, m, w[0].0, w[0].1)?;
        self.matmul(k, kv_off, x, 0, m, w[1].0, w[1].1)?;
        self.matmul(v, kv_off, x, 0, m, w[2].0, w[2].1)
    }
    /// `qkv`, then RoPE on q and on the M new k rows (a llama's attention): heads = (NH, NKV, HS)
    /// (NQ = NH*HS, the k rows NKV*HS wide from `kv_off`), row r at position `start_pos + r`,
    /// `table` as `rope` takes it. The default is `qkv` then two `rope`s; the GPU rotates in the
    /// q/k/v GEMV's epilogue.
    fn qkv_rope(
        &mut self,
        q: &Self::T,
        k: &Self::T,
        v: &Self::T,
        kv_off: usize,
        x: &Self::T,
        m: usize,
        w: [(&Self::T, Option<&Self::T>); 3],
        table: &Self::T,
        (nh, nkv, hs): (usize, usize, usize),
        start_pos: usize,
    ) -> Result<()> {
        self.qkv(q, k, v, kv_off, x, m, w)?;
        self.rope(q, table, &RopeShape { t: m, nh, hs, start_pos, row_stride: nh * hs, offset: 0 })?;
        self.rope(k, table, &RopeShape { t: m, nh: nkv, hs, start_pos, row_stride: nkv * hs, offset: kv_off })
    }
    /// out (M, N) = silu(x (M, K) @ W_gate^T) * (x @ W_up^T): SwiGLU's two projections and their
    /// product; W_gate, W_up (N, K); `up` (M, N) is scratch. The default is two matmuls and the
    /// product; the GPU does few-row passes in one dispatch.
    fn matmul_swiglu(
        &mut self,
        out: &Self::T,
        up: &Self::T,
        x: &Self::T,
        m: usize,
        w_gate: &Self::T,
        w_up: &Self::T,
        n: usize,
    ) -> Result<()> {
        self.matmul(out, 0, x, 0, m, w_gate, None)?;
        self.matmul(up, 0, x, 0, m, w_up, None)?;
        self.inplace(out, Some(up), m * n, EwOp::SwiGlu)
    }
    /// out (Tq, NH*HS) = softmax(mask(q k^T * scale)) v per head, probs (NH, Tq, Tk) the attention
    /// probabilities. q, k, v are read at the offsets and strides of `s` (k, v rows of NKV*HS: the
    /// KV cache); mask (Tq, Tk), 1 = may attend, combined with `s.causal`. A query with no key
    /// left gives zeros.
    fn attention(
        &mut self,
        out: &Self::T,
        probs: &Self::T,
        q: &Self::T,
        k: &Self::T,
        v: &Self::T,
        mask: Option<&Self::T>,
        s: &AttnShape,
    ) -> Result<()>;
    /// out = LayerNorm(x) * g + b over the last dim, first `rows` rows. x, out (rows, C); g, b (C,).
    fn layernorm(&mut self, out: &Self::T, x: &Self::T, g: &Self::T, b: &Self::T, rows: usize, eps: f32) -> Result<()>;
    /// out = x * rsqrt(mean(x^2) + eps) * w over the last dim, first `rows` rows. x, out (rows, C); w (C,).
    fn rmsnorm(&mut self, out: &Self::T, x: &Self::T, w: &Self::T, rows: usize, eps: f32) -> Result<()>;
    /// The residual add and the norm after it. x, y, out (rows, C); w, b (C,): LayerNorm with b,
    /// RMSNorm without. x = x + y, then out = norm(x) (`out` given: pre-norm blocks) or x = norm(x)
    /// (`out` None: post-norm blocks; y may be overwritten). The CPU backends run
    /// [`add_then_norm`]; the GPU does both in one dispatch.
    fn add_norm(
        &mut self,
        x: &Self::T,
        y: &Self::T,
        out: Option<&Self::T>,
        w: &Self::T,
        b: Option<&Self::T>,
        rows: usize,
        eps: f32,
    ) -> Result<()>;
    /// x[..n] = op(x, y) element-wise: the residual add `x += y`, SwiGLU's product, or an
    /// activation (y None). x, y (N,).
    fn inplace(&mut self, x: &Self::T, y: Option<&Self::T>, n: usize, op: EwOp) -> Result<()>;
    /// Rotates the heads of x in place (RoPE on adjacent pairs): T rows of `s.row_stride` floats
    /// from `s.offset`, NH heads of HS, token t at position s.start_pos + t. table (S, HS/2, 2):
    /// (cos, sin) per position.
    fn rope(&mut self, x: &Self::T, table: &Self::T, s: &RopeShape) -> Result<()>;
    /// out (T, C) = table[ids[t], :] * scale. table (V, C), ids (T,) u32.
    fn embedding(&mut self, out: &Self::T, table: &Self::T, ids: &Self::T, t: usize, scale: f32) -> Result<()>;
    /// x[t, :] += table[start + t, :] for t < T (the sinusoidal PE). x (T, C), table (S, C).
    fn add_rows(&mut self, x: &Self::T, table: &Self::T, t: usize, start: usize) -> Result<()>;
    /// The MoE router over T tokens: probs (T, E) = softmax(logits (T, E)); experts (T, K) u32 the
    /// top-k in descending probability (ties to the lower index); weights (T, K) their
    /// probabilities renormalised to sum to 1.
    fn moe_router(
        &mut self,
        probs: &Self::T,
        experts: &Self::T,
        weights: &Self::T,
        logits: &Self::T,
        t: usize,
        e: usize,
        k: usize,
    ) -> Result<()>;
    /// Expert capacity in token order: each expert keeps its first `capacity` assignments (None =
    /// no limit). experts (T, K) u32, weights (T, K) -> gate (T, E) the kept weight of expert e for
    /// token t (0 when not chosen or dropped), kept (T, K) u32 1 / 0.
    fn moe_capacity(
        &mut self,
        gate: &Self::T,
        kept: &Self::T,
        experts: &Self::T,
        weights: &Self::T,
        t: usize,
        e: usize,
        k: usize,
        capacity: Option<usize>,
    ) -> Result<()>;
    /// out (T, C) = sum over e of gate[t, e] * ys[e, t, :]. gate (T, E); ys (E, ys_rows, C), the
    /// output of every expert on every token.
    fn moe_combine(&mut self, out: &Self::T, ys: &Self::T, gate: &Self::T, t: usize, e: usize, c: usize, ys_rows: usize) -> Result<()>;
    /// Writes the sampled token id to out[0] and the number of NaN/Inf logits of that row to
    /// out[1]. out (2,) u32; logits (rows, V), row `row` sampled with the uniform number u in [0, 1).
    fn sample(&mut self, out: &Self::T, logits: &Self::T, row: usize, p: &SampleParams, u: f32) -> Result<()>;
    /// Sends recorded work to the device and reports any device error.
    fn submit(&mut self) -> Result<()>;
    /// t[offset..offset + count] of an f32 tensor, after the work recorded so far.
    async fn read_f32(&mut self, t: &Self::T, offset: usize, count: usize) -> Result<Vec<f32>>;
    /// t[offset..offset + count] of a u32 tensor, after the work recorded so far.
    async fn read_u32(&mut self, t: &Self::T, offset: usize, count: usize) -> Result<Vec<u32>>;
    /// Several reads in one submission and one map (the browser pays a round trip per map):
    /// each request is (tensor, offset, count); results come back as raw 4-byte values.
    async fn read_batch(&mut self, reqs: &[(&Self::T, usize, usize)]) -> Result<Vec<Vec<u32>>>;
    /// Tokens chained on the device (model::chain): true when recorded work waits for a
    /// submission (the GPU), so that several generation steps can go out in one submission and their
    /// reads come back in one map. The CPU backends run each op at once: nothing to chain.
    fn chains(&self) -> bool {
        false
    }
    /// Starts a batch of queued reads of at most `values` 4-byte values in all.
    fn queue_begin(&mut self, _values: usize) -> Result<()> {
        Err(crate::error::TfError::Internal(format!("the {} backend does not chain tokens", self.kind())))
    }
    /// Queues reads of (tensor, offset, count), taken after the work recorded so far.
    fn queue_read(&mut self, _reqs: &[(&Self::T, usize, usize)]) -> Result<()> {
        Err(crate::error::TfError::Internal(format!("the {} backend does not chain tokens", self.kind())))
    }
    /// Submits the batch and starts reading it back, without waiting (at most two in flight).
    fn queue_submit(&mut self) -> Result<()> {
        Err(crate::error::TfError::Internal(format!("the {} backend does not chain tokens", self.kind())))
    }
    /// The reads of the oldest submitted batch, in the order queued.
    async fn queue_wait(&mut self) -> Result<Vec<Vec<u32>>> {
        Err(crate::error::TfError::Internal(format!("the {} backend does not chain tokens", self.kind())))
    }
    /// Forgets the batches in flight (a generation that ended or was stopped with one pending).
    fn queue_abandon(&mut self) {}
    /// Marks where a pass's layers begin (`true`) and end (`false`), for the benchmark's count of
    /// dispatches inside the layer loop (the GPU); the others ignore it.
    fn layers_mark(&mut self, _begin: bool) {}
    /// Copies of the weights this backend keeps beside them, for the memory demand.
    fn weight_copies(&self) -> crate::model::memory::WeightCopies {
        crate::model::memory::WeightCopies::None
    }
    /// Whether `tensor16` / `weight16` keep 16-bit weights 16-bit (the GPU; the fast CPU backend's
    /// matmul panels) rather than widening them, for the memory demand.
    fn keeps_16bit(&self) -> bool {
        false
    }
}

/// The unfused `add_norm`: the residual add, then the norm of `c` columns (w (C,)). The CPU
/// backends' `add_norm`, and the GPU's with fusion off.
#[allow(clippy::too_many_arguments)]
pub fn add_then_norm<B: Backend>(
    be: &mut B,
    x: &B::T,
    y: &B::T,
    out: Option<&B::T>,
    w: &B::T,
    bias: Option<&B::T>,
    rows: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    let n = rows * c;
    let (sum, dst) = match out {
        Some(out) => {
            be.inplace(x, Some(y), n, EwOp::Add)?;
            (x, out)
        }
        None => {
            be.inplace(y, Some(x), n, EwOp::Add)?;
            (y, x)
        }
    };
    match bias {
        Some(bias) => be.layernorm(dst, sum, w, bias, rows, eps),
        None => be.rmsnorm(dst, sum, w, rows, eps),
    }
}
