//! The op interface the models are written against, with two implementations: the GPU (our WGSL
//! kernels through wgpu: WebGPU in the browser, Vulkan/Metal natively) and the CPU reference
//! (src/cpu/). The model code is the same for both; only `Backend::T` differs.
//!
//! Ops record work; `submit` sends it (GPU) and `read_*` waits for results. Every op takes its
//! output first and explicit row counts / element offsets, so models run over preallocated buffers.

use std::cell::RefCell;
use std::sync::Arc;

use crate::cpu::{self, AttnShape, EwOp, RopeShape, SampleParams};
use crate::error::{Result, TfError};
use crate::gpu::{
    self,
    matmul::{Act, MatmulKind},
    Gpu, GpuTensor, Recorder,
};

#[allow(clippy::too_many_arguments, async_fn_in_trait)]
pub trait Backend {
    type T;
    /// "gpu" or "cpu"
    fn kind(&self) -> &'static str;
    fn tensor(&self, shape: &[usize], data: &[f32], label: &str) -> Result<Self::T>;
    fn zeros(&self, shape: &[usize], label: &str) -> Result<Self::T>;
    fn zeros_u32(&self, shape: &[usize], label: &str) -> Result<Self::T>;
    fn write_f32(&mut self, t: &Self::T, offset: usize, data: &[f32]) -> Result<()>;
    fn write_u32(&mut self, t: &Self::T, offset: usize, data: &[u32]) -> Result<()>;
    /// out[out_off..] (M, N) = x[x_off..] (M, K) @ W^T + b
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
    /// out (M, N) = act(x (M, K) @ W^T + b), act ReLU or GELU: a matmul with its activation.
    /// The default is the matmul then the activation in place; the GPU fuses them into one dispatch.
    fn matmul_act(&mut self, out: &Self::T, x: &Self::T, m: usize, w: &Self::T, b: Option<&Self::T>, n: usize, act: EwOp) -> Result<()> {
        self.matmul(out, 0, x, 0, m, w, b)?;
        self.inplace(out, None, m * n, act)
    }
    /// The attention projections of M rows: q (M, NQ) = x @ W_q^T + b_q; k[kv_off..], v[kv_off..]
    /// (M, NKV) = x @ W_k^T + b_k, x @ W_v^T + b_v (rows of the KV cache). x (M, K). The default is
    /// three matmuls; the GPU does bias-free few-row passes in one dispatch.
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
    /// out (M, N) = silu(x (M, K) @ W_gate^T) * (x @ W_up^T): SwiGLU's two projections and their
    /// product; `up` (M, N) is scratch. The default is two matmuls and the product; the GPU does
    /// few-row passes in one dispatch.
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
    fn layernorm(&mut self, out: &Self::T, x: &Self::T, g: &Self::T, b: &Self::T, rows: usize, eps: f32) -> Result<()>;
    fn rmsnorm(&mut self, out: &Self::T, x: &Self::T, w: &Self::T, rows: usize, eps: f32) -> Result<()>;
    /// The residual add and the norm after it. x, y, out (rows, C); w, b (C,): LayerNorm with b,
    /// RMSNorm without. x = x + y, then out = norm(x) (`out` given: pre-norm blocks) or x = norm(x)
    /// (`out` None: post-norm blocks; y may be overwritten). The default is the add then the norm;
    /// the GPU does both in one dispatch.
    fn add_norm(
        &mut self,
        x: &Self::T,
        y: &Self::T,
        out: Option<&Self::T>,
        w: &Self::T,
        b: Option<&Self::T>,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let n = rows * Self::len(w);
        let (sum, dst) = match out {
            Some(out) => {
                self.inplace(x, Some(y), n, EwOp::Add)?;
                (x, out)
            }
            None => {
                self.inplace(y, Some(x), n, EwOp::Add)?;
                (y, x)
            }
        };
        match b {
            Some(b) => self.layernorm(dst, sum, w, b, rows, eps),
            None => self.rmsnorm(dst, sum, w, rows, eps),
        }
    }
    fn elementwise(&mut self, out: &Self::T, a: &Self::T, b: Option<&Self::T>, n: usize, op: EwOp) -> Result<()>;
    fn inplace(&mut self, x: &Self::T, y: Option<&Self::T>, n: usize, op: EwOp) -> Result<()>;
    fn rope(&mut self, x: &Self::T, table: &Self::T, s: &RopeShape) -> Result<()>;
    fn embedding(&mut self, out: &Self::T, table: &Self::T, ids: &Self::T, t: usize, scale: f32) -> Result<()>;
    fn add_rows(&mut self, x: &Self::T, table: &Self::T, t: usize, start: usize) -> Result<()>;
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
    fn moe_combine(&mut self, out: &Self::T, ys: &Self::T, gate: &Self::T, t: usize, e: usize, c: usize, ys_rows: usize) -> Result<()>;
    /// Writes the sampled token id (u32) to out[0], from the logits row `row`, and the number of
    /// NaN/Inf logits in that row to out[1].
    fn sample(&mut self, out: &Self::T, logits: &Self::T, row: usize, p: &SampleParams, u: f32) -> Result<()>;
    /// Sends recorded work to the device and reports any device error.
    fn submit(&mut self) -> Result<()>;
    async fn read_f32(&mut self, t: &Self::T, offset: usize, count: usize) -> Result<Vec<f32>>;
    async fn read_u32(&mut self, t: &Self::T, offset: usize, count: usize) -> Result<Vec<u32>>;
    /// Several reads in one submission and one map (the browser pays a round trip per map):
    /// each request is (tensor, offset, count); results come back as raw 4-byte values.
    async fn read_batch(&mut self, reqs: &[(&Self::T, usize, usize)]) -> Result<Vec<Vec<u32>>>;
    /// Copies of the weights this backend keeps beside them, for the memory demand.
    fn weight_copies(&self) -> crate::model::memory::WeightCopies {
        crate::model::memory::WeightCopies::None
    }
    fn len(t: &Self::T) -> usize;
}

// ------------------------------------------------------------------------------------------------
// GPU
// ------------------------------------------------------------------------------------------------

/// Small reads (sampled token ids) go through this preallocated staging buffer: no buffer is created
/// per generated token.
const SMALL_READ: usize = 64;
/// Matmuls with fewer rows than this use the GEMV kernel (see GpuBackend::matmul).
const SMALL_M: usize = 8;

pub struct GpuBackend {
    pub gpu: Arc<Gpu>,
    rec: Recorder,
    staging: wgpu::Buffer,
    /// A larger staging buffer for batched reads, grown on demand and reused.
    big_staging: Option<wgpu::Buffer>,
    /// the kernel of passes of SMALL_M rows or more
    pub matmul_kind: MatmulKind,
    /// the kernel of passes of fewer rows (cached decoding)
    pub small_matmul_kind: MatmulKind,
    /// fused epilogues and fused SwiGLU on (off: the unfused sequence, for benchmarks)
    pub fused: bool,
}

impl GpuBackend {
    pub fn new(gpu: Arc<Gpu>) -> GpuBackend {
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("small readback"),
            size: (SMALL_READ * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let rec = Recorder::new(&gpu);
        GpuBackend {
            gpu,
            rec,
            staging,
            big_staging: None,
            matmul_kind: MatmulKind::Tiled4,
            small_matmul_kind: MatmulKind::Gemv,
            fused: true,
        }
    }
    fn kind_for(&self, m: usize) -> MatmulKind {
        if m < SMALL_M {
            self.small_matmul_kind
        } else {
            self.matmul_kind
        }
    }
    /// Dispatches recorded so far (benchmarks report dispatches per token).
    pub fn dispatches(&self) -> usize {
        self.rec.dispatches
    }
    /// Queue submissions so far (one per generated token is the design).
    pub fn submits(&self) -> usize {
        self.rec.submits
    }

    async fn read_many(&mut self, reqs: &[(&GpuTensor, usize, usize)]) -> Result<Vec<Vec<u32>>> {
        let total: usize = reqs.iter().map(|r| r.2).sum();
        for (t, off, n) in reqs {
            if off + n > t.len() {
                return Err(TfError::Shape { op: "read", msg: format!("reading {n} values at {off} from a tensor of {:?}", t.shape) });
            }
        }
        if total == 0 {
            return Ok(reqs.iter().map(|_| vec![]).collect());
        }
        let staging = if total <= SMALL_READ {
            self.staging.clone()
        } else {
            let bytes = (total * 4) as u64;
            self.gpu.check_alloc(bytes, "readback")?;
            if self.big_staging.as_ref().is_none_or(|b| b.size() < bytes) {
                if let Some(old) = self.big_staging.take() {
                    old.destroy();
                }
                self.big_staging = Some(self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("batched readback"),
                    size: bytes.next_power_of_two().max(1024),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
            }
            self.big_staging.clone().expect("just created")
        };
        let mut at = 0;
        for (t, off, n) in reqs {
            self.rec.copy(&t.buf, *off, &staging, at, *n);
            at += n;
        }
        self.rec.flush();
        let all = self.gpu.map_read(&staging, (total * 4) as u64).await?;
        let mut out = Vec::with_capacity(reqs.len());
        let mut at = 0;
        for (_, _, n) in reqs {
            out.push(all[at..at + n].to_vec());
            at += n;
        }
        Ok(out)
    }

    /// One read: a copy into a reused staging buffer riding in the same submission as the recorded
    /// work, then one map.
    async fn read_bits(&mut self, t: &GpuTensor, offset: usize, count: usize) -> Result<Vec<u32>> {
        Ok(self.read_many(&[(t, offset, count)]).await?.pop().unwrap_or_default())
    }
}

impl Backend for GpuBackend {
    type T = GpuTensor;
    fn kind(&self) -> &'static str {
        "gpu"
    }
    fn tensor(&self, shape: &[usize], data: &[f32], label: &str) -> Result<GpuTensor> {
        self.gpu.upload(shape, data, label)
    }
    fn zeros(&self, shape: &[usize], label: &str) -> Result<GpuTensor> {
        self.gpu.zeros(shape, label)
    }
    fn zeros_u32(&self, shape: &[usize], label: &str) -> Result<GpuTensor> {
        self.gpu.zeros_u32(shape, label)
    }
    fn write_f32(&mut self, t: &GpuTensor, offset: usize, data: &[f32]) -> Result<()> {
        // Writes are ordered before the next submission; flush what is recorded so that they are not
        // reordered before earlier recorded ops that read the old contents.
        self.rec.flush();
        self.gpu.write_f32(t, offset, data)
    }
    fn write_u32(&mut self, t: &GpuTensor, offset: usize, data: &[u32]) -> Result<()> {
        self.rec.flush();
        self.gpu.write_u32(t, offset, data)
    }
    fn matmul(
        &mut self,
        out: &GpuTensor,
        out_off: usize,
        x: &GpuTensor,
        x_off: usize,
        m: usize,
        w: &GpuTensor,
        b: Option<&GpuTensor>,
    ) -> Result<()> {
        // A 64-row tile would compute 63 wasted rows for the one-row passes of cached decoding:
        // few rows go to the GEMV (a workgroup per 32 outputs, K split over 8 lanes) instead.
        let kind = self.kind_for(m);
        gpu::matmul::matmul(&mut self.rec, out, out_off, x, x_off, m, w, b, kind)
    }
    fn matmul_act(
        &mut self,
        out: &GpuTensor,
        x: &GpuTensor,
        m: usize,
        w: &GpuTensor,
        b: Option<&GpuTensor>,
        n: usize,
        act: EwOp,
    ) -> Result<()> {
        match Act::from_ew(act) {
            Some(a) if self.fused => {
                ensure_n(w, n, "matmul_act")?;
                let kind = self.kind_for(m);
                gpu::matmul::matmul_act(&mut self.rec, out, 0, x, 0, m, w, b, a, kind)
            }
            _ => {
                self.matmul(out, 0, x, 0, m, w, b)?;
                self.inplace(out, None, m * n, act)
            }
        }
    }
    fn qkv(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        kv_off: usize,
        x: &GpuTensor,
        m: usize,
        w: [(&GpuTensor, Option<&GpuTensor>); 3],
    ) -> Result<()> {
        let bias_free = w.iter().all(|(_, b)| b.is_none());
        if self.fused && m < SMALL_M && self.small_matmul_kind == MatmulKind::Gemv && bias_free && gpu::matmul::qkv_ok(w[0].0) {
            return gpu::matmul::gemv_qkv(&mut self.rec, q, k, v, kv_off, x, m, w[0].0, w[1].0, w[2].0);
        }
        self.matmul(q, 0, x, 0, m, w[0].0, w[0].1)?;
        self.matmul(k, kv_off, x, 0, m, w[1].0, w[1].1)?;
        self.matmul(v, kv_off, x, 0, m, w[2].0, w[2].1)
    }
    fn matmul_swiglu(
        &mut self,
        out: &GpuTensor,
        up: &GpuTensor,
        x: &GpuTensor,
        m: usize,
        w_gate: &GpuTensor,
        w_up: &GpuTensor,
        n: usize,
    ) -> Result<()> {
        if self.fused && m < SMALL_M && self.small_matmul_kind == MatmulKind::Gemv {
            ensure_n(w_gate, n, "matmul_swiglu")?;
            return gpu::matmul::gemv_swiglu(&mut self.rec, out, x, m, w_gate, w_up);
        }
        self.matmul(out, 0, x, 0, m, w_gate, None)?;
        self.matmul(up, 0, x, 0, m, w_up, None)?;
        self.inplace(out, Some(up), m * n, EwOp::SwiGlu)
    }
    fn attention(
        &mut self,
        out: &GpuTensor,
        probs: &GpuTensor,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        mask: Option<&GpuTensor>,
        s: &AttnShape,
    ) -> Result<()> {
        gpu::attention::attention(&mut self.rec, out, probs, q, k, v, mask, s)
    }
    fn layernorm(&mut self, out: &GpuTensor, x: &GpuTensor, g: &GpuTensor, b: &GpuTensor, rows: usize, eps: f32) -> Result<()> {
        gpu::norm::layernorm(&mut self.rec, out, x, g, b, rows, eps)
    }
    fn rmsnorm(&mut self, out: &GpuTensor, x: &GpuTensor, w: &GpuTensor, rows: usize, eps: f32) -> Result<()> {
        gpu::norm::rmsnorm(&mut self.rec, out, x, w, rows, eps)
    }
    fn add_norm(
        &mut self,
        x: &GpuTensor,
        y: &GpuTensor,
        out: Option<&GpuTensor>,
        w: &GpuTensor,
        b: Option<&GpuTensor>,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        if self.fused {
            return gpu::norm::add_norm(&mut self.rec, x, y, out, w, b, rows, eps);
        }
        let n = rows * w.len();
        let (sum, dst) = match out {
            Some(out) => {
                self.inplace(x, Some(y), n, EwOp::Add)?;
                (x, out)
            }
            None => {
                self.inplace(y, Some(x), n, EwOp::Add)?;
                (y, x)
            }
        };
        match b {
            Some(b) => self.layernorm(dst, sum, w, b, rows, eps),
            None => self.rmsnorm(dst, sum, w, rows, eps),
        }
    }
    fn elementwise(&mut self, out: &GpuTensor, a: &GpuTensor, b: Option<&GpuTensor>, n: usize, op: EwOp) -> Result<()> {
        gpu::act::elementwise(&mut self.rec, out, a, b, n, op)
    }
    fn inplace(&mut self, x: &GpuTensor, y: Option<&GpuTensor>, n: usize, op: EwOp) -> Result<()> {
        gpu::act::inplace(&mut self.rec, x, y, n, op)
    }
    fn rope(&mut self, x: &GpuTensor, table: &GpuTensor, s: &RopeShape) -> Result<()> {
        gpu::rope::rope(&mut self.rec, x, table, s)
    }
    fn embedding(&mut self, out: &GpuTensor, table: &GpuTensor, ids: &GpuTensor, t: usize, scale: f32) -> Result<()> {
        gpu::embed::embedding(&mut self.rec, out, table, ids, t, scale)
    }
    fn add_rows(&mut self, x: &GpuTensor, table: &GpuTensor, t: usize, start: usize) -> Result<()> {
        gpu::embed::add_rows(&mut self.rec, x, table, t, start)
    }
    fn moe_router(
        &mut self,
        probs: &GpuTensor,
        experts: &GpuTensor,
        weights: &GpuTensor,
        logits: &GpuTensor,
        t: usize,
        e: usize,
        k: usize,
    ) -> Result<()> {
        gpu::moe::moe_router(&mut self.rec, probs, experts, weights, logits, t, e, k)
    }
    fn moe_capacity(
        &mut self,
        gate: &GpuTensor,
        kept: &GpuTensor,
        experts: &GpuTensor,
        weights: &GpuTensor,
        t: usize,
        e: usize,
        k: usize,
        capacity: Option<usize>,
    ) -> Result<()> {
        gpu::moe::moe_capacity(&mut self.rec, gate, kept, experts, weights, t, e, k, capacity)
    }
    fn moe_combine(
        &mut self,
        out: &GpuTensor,
        ys: &GpuTensor,
        gate: &GpuTensor,
        t: usize,
        e: usize,
        c: usize,
        ys_rows: usize,
    ) -> Result<()> {
        gpu::moe::moe_combine(&mut self.rec, out, ys, gate, t, e, c, ys_rows)
    }
    fn sample(&mut self, out: &GpuTensor, logits: &GpuTensor, row: usize, p: &SampleParams, u: f32) -> Result<()> {
        gpu::sample::sample(&mut self.rec, out, logits, row, p, u)
    }
    fn submit(&mut self) -> Result<()> {
        self.rec.flush();
        self.gpu.check()
    }
    async fn read_f32(&mut self, t: &GpuTensor, offset: usize, count: usize) -> Result<Vec<f32>> {
        Ok(bytemuck::cast_vec(self.read_bits(t, offset, count).await?))
    }
    async fn read_u32(&mut self, t: &GpuTensor, offset: usize, count: usize) -> Result<Vec<u32>> {
        self.read_bits(t, offset, count).await
    }
    async fn read_batch(&mut self, reqs: &[(&GpuTensor, usize, usize)]) -> Result<Vec<Vec<u32>>> {
        self.read_many(reqs).await
    }
    fn len(t: &GpuTensor) -> usize {
        t.len()
    }
}

/// The fused ops take N from the caller (the default implementations need it): it must be W's rows.
fn ensure_n(w: &GpuTensor, n: usize, op: &'static str) -> Result<()> {
    if w.shape.first() != Some(&n) {
        return Err(TfError::Shape { op, msg: format!("N = {n} but W is {:?}", w.shape) });
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// CPU
// ------------------------------------------------------------------------------------------------

/// A CPU tensor: f32 values (u32 ids are stored by their bits). Ops write through `&self`, so the
/// data sits in a RefCell; an op that would alias an output with an input returns an error.
pub struct CpuTensor {
    pub shape: Vec<usize>,
    pub data: RefCell<Vec<f32>>,
}

impl CpuTensor {
    fn r(&self, op: &'static str) -> Result<std::cell::Ref<'_, Vec<f32>>> {
        self.data.try_borrow().map_err(|_| TfError::Shape { op, msg: "an input aliases the output".into() })
    }
    fn w(&self, op: &'static str) -> Result<std::cell::RefMut<'_, Vec<f32>>> {
        self.data.try_borrow_mut().map_err(|_| TfError::Shape { op, msg: "the output aliases an input".into() })
    }
}

#[derive(Default)]
pub struct CpuBackend;

fn need(op: &'static str, have: usize, want: usize, what: &str) -> Result<()> {
    if have < want {
        return Err(TfError::Shape { op, msg: format!("{what} holds {have} values, needs {want}") });
    }
    Ok(())
}

/// An empty vector with room for `n` values, reserved fallibly: a failed allocation is an error
/// naming the buffer, not an abort.
fn try_alloc(n: usize, label: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        TfError::Memory(format!("out of memory: {} needs {} bytes and the allocation failed", crate::error::quote(label), n as u128 * 4))
    })?;
    Ok(v)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

impl Backend for CpuBackend {
    type T = CpuTensor;
    fn kind(&self) -> &'static str {
        "cpu"
    }
    fn tensor(&self, shape: &[usize], data: &[f32], label: &str) -> Result<CpuTensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(TfError::Shape { op: "upload", msg: format!("{label}: shape {shape:?} holds {n} values, got {}", data.len()) });
        }
        let mut v = try_alloc(n, label)?;
        v.extend_from_slice(data);
        Ok(CpuTensor { shape: shape.to_vec(), data: RefCell::new(v) })
    }
    fn zeros(&self, shape: &[usize], label: &str) -> Result<CpuTensor> {
        let n =
            shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| TfError::Limit(format!("shape {shape:?} overflows")))?;
        let mut v = try_alloc(n, label)?;
        v.resize(n, 0.0);
        Ok(CpuTensor { shape: shape.to_vec(), data: RefCell::new(v) })
    }
    fn zeros_u32(&self, shape: &[usize], label: &str) -> Result<CpuTensor> {
        self.zeros(shape, label) // 0.0 has the bits of 0u32
    }
    fn write_f32(&mut self, t: &CpuTensor, offset: usize, data: &[f32]) -> Result<()> {
        let mut d = t.w("write")?;
        need("write", d.len(), offset + data.len(), "tensor")?;
        d[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn write_u32(&mut self, t: &CpuTensor, offset: usize, data: &[u32]) -> Result<()> {
        let v: Vec<f32> = data.iter().map(|&x| f32::from_bits(x)).collect();
        self.write_f32(t, offset, &v)
    }
    fn matmul(
        &mut self,
        out: &CpuTensor,
        out_off: usize,
        x: &CpuTensor,
        x_off: usize,
        m: usize,
        w: &CpuTensor,
        b: Option<&CpuTensor>,
    ) -> Result<()> {
        let (n, k) = (w.shape[0], w.shape[1]);
        let (xd, wd) = (x.r("matmul")?, w.r("matmul")?);
        let bd = match b {
            Some(b) => Some(b.r("matmul")?),
            None => None,
        };
        let mut od = out.w("matmul")?;
        need("matmul", xd.len(), x_off + m * k, "x")?;
        need("matmul", od.len(), out_off + m * n, "out")?;
        cpu::matmul(&mut od[out_off..out_off + m * n], &xd[x_off..x_off + m * k], &wd, bd.as_deref().map(|v| &v[..]), m, k, n)
    }
    fn attention(
        &mut self,
        out: &CpuTensor,
        probs: &CpuTensor,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        mask: Option<&CpuTensor>,
        s: &AttnShape,
    ) -> Result<()> {
        let (qd, kd, vd) = (q.r("attention")?, k.r("attention")?, v.r("attention")?);
        let md = match mask {
            Some(m) => Some(m.r("attention")?),
            None => None,
        };
        let (mut od, mut pd) = (out.w("attention")?, probs.w("attention")?);
        let on = s.tq * s.nh * s.hs;
        let pn = s.nh * s.tq * s.tk;
        need("attention", od.len(), on, "out")?;
        need("attention", pd.len(), pn, "probs")?;
        let mask_slice = md.as_deref().map(|m| &m[..s.tq * s.tk.min(m.len() / s.tq.max(1))]);
        cpu::attention(&mut od[..on], &mut pd[..pn], &qd, &kd, &vd, mask_slice, s)
    }
    fn layernorm(&mut self, out: &CpuTensor, x: &CpuTensor, g: &CpuTensor, b: &CpuTensor, rows: usize, eps: f32) -> Result<()> {
        let (xd, gd, bd) = (x.r("layernorm")?, g.r("layernorm")?, b.r("layernorm")?);
        let c = gd.len();
        let mut od = out.w("layernorm")?;
        need("layernorm", xd.len().min(od.len()), rows * c, "x/out")?;
        cpu::layernorm(&mut od[..rows * c], &xd[..rows * c], &gd, &bd, c, eps);
        Ok(())
    }
    fn rmsnorm(&mut self, out: &CpuTensor, x: &CpuTensor, w: &CpuTensor, rows: usize, eps: f32) -> Result<()> {
        let (xd, wd) = (x.r("rmsnorm")?, w.r("rmsnorm")?);
        let c = wd.len();
        let mut od = out.w("rmsnorm")?;
        need("rmsnorm", xd.len().min(od.len()), rows * c, "x/out")?;
        cpu::rmsnorm(&mut od[..rows * c], &xd[..rows * c], &wd, c, eps);
        Ok(())
    }
    fn elementwise(&mut self, out: &CpuTensor, a: &CpuTensor, b: Option<&CpuTensor>, n: usize, op: EwOp) -> Result<()> {
        let ad = a.r("elementwise")?;
        let bd = match b {
            Some(b) => Some(b.r("elementwise")?),
            None => None,
        };
        let mut od = out.w("elementwise")?;
        need("elementwise", ad.len().min(od.len()), n, "a/out")?;
        cpu::elementwise(&mut od[..n], &ad[..n], bd.as_deref().map(|v| &v[..n]), op);
        Ok(())
    }
    fn inplace(&mut self, x: &CpuTensor, y: Option<&CpuTensor>, n: usize, op: EwOp) -> Result<()> {
        let yd = match y {
            Some(y) => Some(y.r("inplace")?),
            None => None,
        };
        let mut xd = x.w("inplace")?;
        need("inplace", xd.len(), n, "x")?;
        for i in 0..n {
            xd[i] = op.apply(xd[i], yd.as_ref().map_or(0.0, |y| y[i]));
        }
        Ok(())
    }
    fn rope(&mut self, x: &CpuTensor, table: &CpuTensor, s: &RopeShape) -> Result<()> {
        let td = table.r("rope")?;
        let mut xd = x.w("rope")?;
        need("rope", td.len(), (s.start_pos + s.t) * s.hs, "table")?;
        if s.t > 0 {
            need("rope", xd.len(), s.offset + (s.t - 1) * s.row_stride + s.nh * s.hs, "x")?;
        }
        cpu::rope(&mut xd, &td, s.t, s.nh, s.hs, s.start_pos, s.row_stride, s.offset);
        Ok(())
    }
    fn embedding(&mut self, out: &CpuTensor, table: &CpuTensor, ids: &CpuTensor, t: usize, scale: f32) -> Result<()> {
        let (td, id) = (table.r("embedding")?, ids.r("embedding")?);
        let c = table.shape[1];
        let mut od = out.w("embedding")?;
        need("embedding", od.len(), t * c, "out")?;
        cpu::embedding(&mut od[..t * c], &td, &bits(&id[..t]), c, scale);
        Ok(())
    }
    fn add_rows(&mut self, x: &CpuTensor, table: &CpuTensor, t: usize, start: usize) -> Result<()> {
        let td = table.r("add_rows")?;
        let c = table.shape[1];
        let mut xd = x.w("add_rows")?;
        need("add_rows", td.len(), (start + t) * c, "table")?;
        cpu::add_rows(&mut xd[..t * c], &td, c, start);
        Ok(())
    }
    fn moe_router(
        &mut self,
        probs: &CpuTensor,
        experts: &CpuTensor,
        weights: &CpuTensor,
        logits: &CpuTensor,
        t: usize,
        e: usize,
        k: usize,
    ) -> Result<()> {
        let ld = logits.r("moe_router")?;
        let (mut pd, mut ed, mut wd) = (probs.w("moe_router")?, experts.w("moe_router")?, weights.w("moe_router")?);
        let mut ex = vec![0u32; t * k];
        cpu::moe_router(&mut pd[..t * e], &mut ex, &mut wd[..t * k], &ld[..t * e], t, e, k);
        for (d, x) in ed.iter_mut().zip(ex) {
            *d = f32::from_bits(x);
        }
        Ok(())
    }
    fn moe_capacity(
        &mut self,
        gate: &CpuTensor,
        kept: &CpuTensor,
        experts: &CpuTensor,
        weights: &CpuTensor,
        t: usize,
        e: usize,
        k: usize,
        capacity: Option<usize>,
    ) -> Result<()> {
        let (ed, wd) = (experts.r("moe_capacity")?, weights.r("moe_capacity")?);
        let (mut gd, mut kd) = (gate.w("moe_capacity")?, kept.w("moe_capacity")?);
        let mut kb = vec![0u32; t * k];
        cpu::moe_capacity(&mut gd[..t * e], &mut kb, &bits(&ed[..t * k]), &wd[..t * k], t, e, k, capacity);
        for (d, x) in kd.iter_mut().zip(kb) {
            *d = f32::from_bits(x);
        }
        Ok(())
    }
    fn moe_combine(
        &mut self,
        out: &CpuTensor,
        ys: &CpuTensor,
        gate: &CpuTensor,
        t: usize,
        e: usize,
        c: usize,
        ys_rows: usize,
    ) -> Result<()> {
        let (yd, gd) = (ys.r("moe_combine")?, gate.r("moe_combine")?);
        let mut od = out.w("moe_combine")?;
        cpu::moe_combine(&mut od[..t * c], &yd, &gd, t, e, c, ys_rows);
        Ok(())
    }
    fn sample(&mut self, out: &CpuTensor, logits: &CpuTensor, row: usize, p: &SampleParams, u: f32) -> Result<()> {
        let v = *logits.shape.last().unwrap_or(&0);
        let ld = logits.r("sample")?;
        need("sample", ld.len(), (row + 1) * v, "logits")?;
        let row = &ld[row * v..(row + 1) * v];
        let mut od = out.w("sample")?;
        need("sample", od.len(), 2, "out")?;
        od[..2].copy_from_slice(&cpu::sample_record(row, p, u));
        Ok(())
    }
    fn submit(&mut self) -> Result<()> {
        Ok(())
    }
    async fn read_f32(&mut self, t: &CpuTensor, offset: usize, count: usize) -> Result<Vec<f32>> {
        let d = t.r("read")?;
        need("read", d.len(), offset + count, "tensor")?;
        Ok(d[offset..offset + count].to_vec())
    }
    async fn read_u32(&mut self, t: &CpuTensor, offset: usize, count: usize) -> Result<Vec<u32>> {
        Ok(bits(&self.read_f32(t, offset, count).await?))
    }
    async fn read_batch(&mut self, reqs: &[(&CpuTensor, usize, usize)]) -> Result<Vec<Vec<u32>>> {
        let mut out = Vec::with_capacity(reqs.len());
        for (t, off, n) in reqs {
            out.push(self.read_u32(t, *off, *n).await?);
        }
        Ok(out)
    }
    fn len(t: &CpuTensor) -> usize {
        t.data.borrow().len()
    }
}
