//! The op vocabulary every backend and model shares: the shapes and parameters of the ops of
//! `model::backend::Backend`, the WGSL kernels (src/gpu) and their CPU twins (src/cpu, src/fastcpu).
//! Plain data, no math: the reference semantics live in src/cpu.
//! Notation (ARCHITECTURE.md): T tokens (rows), NH / NKV heads, HS head size, Tq / Tk query and key
//! rows, E experts, K experts per token.

use crate::error::{ensure, Result};

/// Where Q, K, V live and which keys each query may see. Strides and offsets are in floats, so the
/// same op reads q/k/v from a fused QKV buffer or from a KV cache.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    /// Tq: query rows; Tk: key rows
    pub tq: usize,
    pub tk: usize,
    /// NH query heads, NKV key/value heads (NH % NKV == 0), HS head size
    pub nh: usize,
    pub nkv: usize,
    pub hs: usize,
    /// Some(offset): causal, query i may see key j iff j <= i + offset (offset = cached length).
    pub causal: Option<usize>,
    /// 1 / sqrt(HS) normally
    pub scale: f32,
    pub q_offset: usize,
    pub q_stride: usize,
    pub k_offset: usize,
    pub k_stride: usize,
    pub v_offset: usize,
    pub v_stride: usize,
}

impl AttnShape {
    /// Packed q (Tq, NH*HS), k and v (Tk, NKV*HS), each in its own buffer.
    pub fn packed(tq: usize, tk: usize, nh: usize, nkv: usize, hs: usize) -> Self {
        AttnShape {
            tq,
            tk,
            nh,
            nkv,
            hs,
            causal: None,
            scale: 1.0 / (hs as f32).sqrt(),
            q_offset: 0,
            q_stride: nh * hs,
            k_offset: 0,
            k_stride: nkv * hs,
            v_offset: 0,
            v_stride: nkv * hs,
        }
    }
    /// The same shape with the causal rule: query i sees key j iff j <= i + offset.
    pub fn with_causal(mut self, offset: usize) -> Self {
        self.causal = Some(offset);
        self
    }
    /// Query head h reads KV head h / (NH / NKV).
    pub fn kv_head(&self, h: usize) -> usize {
        h / (self.nh / self.nkv)
    }
    /// Whether query i may see key j under the mask (Tq, Tk; 1 = may attend) and the causal rule.
    pub fn allowed(&self, mask: Option<&[f32]>, i: usize, j: usize) -> bool {
        let m = mask.is_none_or(|m| m[i * self.tk + j] != 0.0);
        let c = self.causal.is_none_or(|off| j <= i + off);
        m && c
    }
    /// The shape guard of every attention op: q, k, v, mask hold enough values for the strides.
    pub fn check(&self, op: &'static str, q: usize, k: usize, v: usize, mask: Option<usize>) -> Result<()> {
        let s = self;
        ensure(s.nh > 0 && s.nkv > 0 && s.hs > 0 && s.tq > 0 && s.tk > 0, op, || format!("empty shape {s:?}"))?;
        ensure(s.nh.is_multiple_of(s.nkv), op, || format!("num_heads {} is not a multiple of num_kv_heads {}", s.nh, s.nkv))?;
        let need = |off: usize, stride: usize, rows: usize, width: usize| off + (rows - 1) * stride + width;
        ensure(q >= need(s.q_offset, s.q_stride, s.tq, s.nh * s.hs), op, || {
            format!("q has {q} values, too few for Tq={} NH={} HS={} stride {}", s.tq, s.nh, s.hs, s.q_stride)
        })?;
        ensure(k >= need(s.k_offset, s.k_stride, s.tk, s.nkv * s.hs), op, || {
            format!("k has {k} values, too few for Tk={} NKV={} HS={} stride {}", s.tk, s.nkv, s.hs, s.k_stride)
        })?;
        ensure(v >= need(s.v_offset, s.v_stride, s.tk, s.nkv * s.hs), op, || {
            format!("v has {v} values, too few for Tk={} NKV={} HS={} stride {}", s.tk, s.nkv, s.hs, s.v_stride)
        })?;
        if let Some(m) = mask {
            ensure(m >= s.tq * s.tk, op, || format!("mask has {m} values, fewer than Tq*Tk = {}*{}", s.tq, s.tk))?;
        }
        Ok(())
    }
}

/// Where the heads to rotate sit: T rows of `row_stride` floats from `offset`, NH heads of HS;
/// token t is at position start_pos + t.
#[derive(Clone, Copy, Debug)]
pub struct RopeShape {
    pub t: usize,
    pub nh: usize,
    pub hs: usize,
    pub start_pos: usize,
    pub row_stride: usize,
    pub offset: usize,
}

/// The element-wise op codes shared with shaders/elementwise.wgsl (`cpu::ew` is their reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EwOp {
    Relu = 0,
    Gelu = 1,
    Silu = 2,
    /// silu(a) * b: the SwiGLU product silu(gate) * up.
    SwiGlu = 3,
    /// a + b: the residual add.
    Add = 4,
    /// a * b
    Mul = 5,
    /// GELU, tanh approximation (GPT-2's `gelu_new`, PyTorch's approximate="tanh"):
    /// 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))
    GeluTanh = 6,
}

impl EwOp {
    /// The ops that take a second input (SwiGLU, Add, Mul).
    pub fn is_binary(self) -> bool {
        matches!(self, EwOp::SwiGlu | EwOp::Add | EwOp::Mul)
    }
}

/// How `sample` picks a token from a logits row (the rules are in src/cpu/sample.rs and ARCHITECTURE.md):
/// temperature, then top-k, then top-p (the nucleus), then one uniform number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    /// <= 0 means greedy
    pub temperature: f32,
    /// 0 = off
    pub top_k: u32,
    /// >= 1 = off
    pub top_p: f32,
}

impl SampleParams {
    pub fn greedy() -> Self {
        SampleParams { temperature: 0.0, top_k: 0, top_p: 1.0 }
    }
    pub fn is_greedy(&self) -> bool {
        !(self.temperature > 0.0)
    }
}

/// The capacity of the seed's MoE for a forward over `tokens` tokens: int(capacity_factor * tokens * k / E).
pub fn moe_capacity_for(capacity_factor: f32, tokens: usize, k: usize, e: usize) -> usize {
    (capacity_factor as f64 * tokens as f64 * k as f64 / e as f64) as usize
}
