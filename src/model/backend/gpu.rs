//! `GpuBackend`: the ops recorded as WGSL dispatches into a `Recorder` (one submission per pass),
//! reads through reused staging buffers.

use std::sync::Arc;

use crate::error::{Result, TfError};
use crate::gpu::{
    self,
    matmul::{Act, MatmulKind},
    Gpu, GpuTensor, Recorder,
};
use crate::model::backend::{add_then_norm, Backend};
use crate::ops::{AttnShape, EwOp, RopeShape, SampleParams};

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
    fn tensor16(&self, shape: &[usize], bits: &[u16], dtype: crate::model::checkpoint::FloatDtype, label: &str) -> Result<GpuTensor> {
        let d = if dtype == crate::model::checkpoint::FloatDtype::F16 { gpu::DType::F16 } else { gpu::DType::BF16 };
        self.gpu.upload16(shape, bits, d, label)
    }
    fn keeps_16bit(&self) -> bool {
        true
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
        add_then_norm(self, x, y, out, w, b, rows, w.len(), eps)
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
}

/// The fused ops take N from the caller (the default implementations need it): it must be W's rows.
fn ensure_n(w: &GpuTensor, n: usize, op: &'static str) -> Result<()> {
    if w.shape.first() != Some(&n) {
        return Err(TfError::Shape { op, msg: format!("N = {n} but W is {:?}", w.shape) });
    }
    Ok(())
}
