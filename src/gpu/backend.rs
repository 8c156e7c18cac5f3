//! `GpuBackend`: the ops recorded as WGSL dispatches into a `Recorder` (one submission per pass),
//! reads through reused staging buffers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::error::{Result, TfError};
use crate::gpu::{
    self,
    matmul::{Act, MatmulKind, SMALL_M},
    qkv::QkvRope,
    Gpu, GpuTensor, KernelPolicy, Recorder,
};
use crate::model::backend::{add_then_norm, Backend};
use crate::ops::{AttnShape, EwOp, RopeShape, SampleParams};

/// Small reads (sampled token ids) go through this preallocated staging buffer: no buffer is created
/// per generated token.
const SMALL_READ: usize = 64;

pub struct GpuBackend {
    pub gpu: Arc<Gpu>,
    pub(crate) rec: Recorder,
    staging: wgpu::Buffer,
    /// A larger staging buffer for batched reads, grown on demand and reused.
    big_staging: Option<wgpu::Buffer>,
    /// bytes copied back from the GPU so far (tests count what a token reads back)
    pub bytes_read: u64,
    /// the kernel of passes of SMALL_M rows or more
    pub matmul_kind: MatmulKind,
    /// the kernel of passes of fewer rows (cached decoding): the GEMV, or on a CPU-type adapter
    /// (llvmpipe natively) the barrier-free one-row forms of every decode op (`MatmulKind::Rows`)
    pub small_matmul_kind: MatmulKind,
    /// the attention kernel of passes of SMALL_M query rows or more (prefill); fewer rows take an
    /// invocation per row where `small_matmul_kind` is `Rows`, else the workgroup kernel
    pub attention_kind: gpu::RowKind,
    /// the norms' kernel (norm, add + norm) of passes of SMALL_M rows or more; fewer rows as
    /// `attention_kind` says
    pub norm_kind: gpu::RowKind,
    /// fused epilogues and fused SwiGLU on (off: the unfused sequence, for benchmarks)
    pub fused: bool,
    /// with `fused`: the q/k/v GEMV takes the biases and RoPE in its epilogue (off: as before
    /// issue 12's step to 8 dispatches a layer: bias-free GEMVs only, RoPE as two more dispatches)
    pub qkv_epilogue: bool,
    /// one-row matmuls reduce in subgroup operations where the device has them
    /// (MatmulKind::GemvSubgroup). Off by default until `bench generate`'s `cached_subgroups`
    /// shows a gain (BENCHMARKS.md): the workgroup-memory GEMV is the measured path.
    pub subgroups: bool,
    /// 16-bit checkpoint weights are widened to f32 at load (`keeps_16bit` false); from
    /// `Gpu::widens16` when the backend is made (the device's kind), set before a load
    pub widen16: bool,
    /// dispatches recorded inside passes' layer loops (`Backend::layers_mark`), and where the
    /// current loop began
    pub layer_dispatches: usize,
    layers_from: Option<usize>,
    /// b_q, b_k, b_v concatenated, per layer, for the q/k/v GEMV (one binding: shaders/qkv.wgsl),
    /// made on first use by copies on the GPU and kept while the backend lives (a backend per
    /// model load, as the page and the CLI make; a few KiB a layer)
    qkv_biases: HashMap<[wgpu::Buffer; 3], GpuTensor>,
    /// Tokens chained on the GPU (model::chain): the reads of one batch of generation steps are
    /// copied into one of these two staging buffers as the steps are recorded, then read with one
    /// map; while one batch's map is pending the next batch is recorded into the other.
    chain_bufs: [Option<wgpu::Buffer>; 2],
    /// the slot the next batch copies into
    chain_slot: usize,
    /// the batch being recorded: (slot, values queued, the size of each read)
    chain_cur: Option<(usize, usize, Vec<usize>)>,
    /// submitted batches whose values have not been taken yet, oldest first
    in_flight: VecDeque<InFlight>,
    /// the training ops' scratch (a norm backward's row statistics, the attention backward's row
    /// sums), grown on demand by `gpu::train`
    pub(crate) scratch: Option<GpuTensor>,
}

/// A submitted batch of chained reads and its pending map.
struct InFlight {
    slot: usize,
    sizes: Vec<usize>,
    /// natively the wait is for this submission only (in the browser the map resolves by itself)
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    index: Option<wgpu::SubmissionIndex>,
    rx: Option<futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>>,
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
        // the device's kernel policy (gpu::policy): the barrier-free kernels on a GPU emulated on the CPU
        let p = gpu.policy();
        GpuBackend {
            gpu,
            rec,
            staging,
            big_staging: None,
            bytes_read: 0,
            matmul_kind: p.many_rows,
            small_matmul_kind: p.few_rows,
            attention_kind: p.attention,
            norm_kind: p.norms,
            fused: p.fused,
            qkv_epilogue: true,
            subgroups: false,
            widen16: p.widen16,
            layer_dispatches: 0,
            layers_from: None,
            qkv_biases: HashMap::new(),
            chain_bufs: [None, None],
            chain_slot: 0,
            chain_cur: None,
            in_flight: VecDeque::new(),
            scratch: None,
        }
    }
    /// The kernels this backend runs now, as the policy type the page shows and the benchmarks set.
    pub fn policy(&self) -> KernelPolicy {
        KernelPolicy {
            fused: self.fused,
            few_rows: self.small_matmul_kind,
            many_rows: self.matmul_kind,
            attention: self.attention_kind,
            norms: self.norm_kind,
            widen16: self.widen16,
        }
    }
    /// Runs `p`'s kernels from the next pass on. Its `widen16` applies to a later load only (the
    /// weights in memory stay as they were uploaded), so it is not changed here.
    pub fn set_policy(&mut self, p: &KernelPolicy) {
        (self.fused, self.small_matmul_kind, self.matmul_kind) = (p.fused, p.few_rows, p.many_rows);
        (self.attention_kind, self.norm_kind) = (p.attention, p.norms);
    }
    fn kind_for(&self, m: usize) -> MatmulKind {
        MatmulKind::for_rows(m, self.matmul_kind, self.small_matmul_kind, self.subgroups, &self.gpu.k.matmul)
    }
    /// The norms' kernel for a pass of `rows` rows (`norm_kind` from SMALL_M rows on).
    pub(crate) fn norm_kind_for(&self, rows: usize) -> gpu::RowKind {
        if rows >= SMALL_M {
            self.norm_kind
        } else {
            self.few_rows_kind()
        }
    }
    /// The attention and norm kernels of passes of fewer than SMALL_M rows: an invocation per row
    /// where the few-row matmuls are the barrier-free `Rows`, else the workgroup kernels.
    fn few_rows_kind(&self) -> gpu::RowKind {
        if self.small_matmul_kind == MatmulKind::Rows {
            gpu::RowKind::Invocation
        } else {
            gpu::RowKind::Workgroup
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
        self.bytes_read += total as u64 * 4;
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
            self.gpu.check_staging(bytes.next_power_of_two().max(1024), "readback")?;
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

impl GpuBackend {
    /// `qkv` (and RoPE): one GEMV dispatch for few-row passes with fusion on (shaders/qkv.wgsl),
    /// else the three matmuls and the rope dispatches.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn qkv_with(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        kv_off: usize,
        x: &GpuTensor,
        m: usize,
        w: [(&GpuTensor, Option<&GpuTensor>); 3],
        rope: Option<(&GpuTensor, (usize, usize, usize), usize)>,
    ) -> Result<()> {
        let biased = w.iter().any(|(_, b)| b.is_some());
        let one_dtype = w.iter().all(|(t, _)| t.dtype == w[0].0.dtype);
        let small = self.small_matmul_kind;
        if self.fused && m < SMALL_M && matches!(small, MatmulKind::Gemv | MatmulKind::Rows) && one_dtype && (self.qkv_epilogue || !biased)
        {
            let key = if biased { Some(self.qkv_biases(w)?) } else { None };
            let biases = key.and_then(|key| self.qkv_biases.get(&key));
            let ws = [w[0].0, w[1].0, w[2].0];
            match rope {
                Some((table, (_, _, hs), start_pos)) if self.qkv_epilogue => {
                    let r = QkvRope { table, hs, start_pos };
                    return gpu::qkv::qkv_kind(&mut self.rec, q, k, v, kv_off, x, m, ws, biases, Some(r), small);
                }
                _ => gpu::qkv::qkv_kind(&mut self.rec, q, k, v, kv_off, x, m, ws, biases, None, small)?,
            }
        } else {
            self.matmul(q, 0, x, 0, m, w[0].0, w[0].1)?;
            self.matmul(k, kv_off, x, 0, m, w[1].0, w[1].1)?;
            self.matmul(v, kv_off, x, 0, m, w[2].0, w[2].1)?;
        }
        if let Some((table, (nh, nkv, hs), start_pos)) = rope {
            self.rope(q, table, &RopeShape { t: m, nh, hs, start_pos, row_stride: nh * hs, offset: 0 })?;
            self.rope(k, table, &RopeShape { t: m, nh: nkv, hs, start_pos, row_stride: nkv * hs, offset: kv_off })?;
        }
        Ok(())
    }

    /// b_q, b_k, b_v concatenated into one tensor (an absent one as zeros), made once per layer by
    /// copies recorded before the dispatch that reads it; returns its key in `self.qkv_biases`.
    fn qkv_biases(&mut self, w: [(&GpuTensor, Option<&GpuTensor>); 3]) -> Result<[wgpu::Buffer; 3]> {
        let key = w.map(|(t, b)| b.map_or_else(|| t.buf.clone(), |b| b.buf.clone()));
        if self.qkv_biases.contains_key(&key) {
            return Ok(key);
        }
        let n: usize = w.iter().map(|(t, _)| t.shape.first().copied().unwrap_or(0)).sum();
        let cat = self.gpu.zeros(&[n], "qkv biases")?;
        let mut at = 0;
        for (t, b) in w {
            let rows = t.shape.first().copied().unwrap_or(0);
            if let Some(b) = b {
                if b.len() != rows || b.dtype != gpu::DType::F32 {
                    return Err(TfError::Shape { op: "qkv", msg: format!("bias {:?} ({:?}) for W {:?}", b.shape, b.dtype, t.shape) });
                }
                self.rec.copy(&b.buf, 0, &cat.buf, at, rows);
            }
            at += rows;
        }
        if self.qkv_biases.len() >= 1024 {
            self.qkv_biases.clear(); // models loaded one after another on one backend: start over
        }
        self.qkv_biases.insert(key.clone(), cat);
        Ok(key)
    }
}

impl Backend for GpuBackend {
    type T = GpuTensor;
    fn kind(&self) -> &'static str {
        "gpu"
    }
    fn tensor(&self, shape: &[usize], data: &[f32], label: &str) -> Result<GpuTensor> {
        // a weight: one over the binding limit is bound by rows where it is a token embedding or a
        // head (gpu::embed, gpu::matmul); the budget refuses the others by name before the load
        self.gpu.upload_weight(shape, data, label)
    }
    fn tensor16(&self, shape: &[usize], bits: &[u16], dtype: crate::model::checkpoint::FloatDtype, label: &str) -> Result<GpuTensor> {
        if self.widen16 {
            // a CPU-type adapter: widened at upload, as the CPU backends do (keeps_16bit is false)
            return self.gpu.upload_weight(shape, &crate::model::checkpoint::widen16(bits, dtype), label);
        }
        let d = if dtype == crate::model::checkpoint::FloatDtype::F16 { gpu::DType::F16 } else { gpu::DType::BF16 };
        self.gpu.upload16(shape, bits, d, label)
    }
    fn keeps_16bit(&self) -> bool {
        !self.widen16
    }
    fn zeros(&self, shape: &[usize], label: &str) -> Result<GpuTensor> {
        self.gpu.zeros(shape, label)
    }
    fn zeros_rows(&self, shape: &[usize], label: &str) -> Result<GpuTensor> {
        self.gpu.zeros_rows(shape, label)
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
        self.qkv_with(q, k, v, kv_off, x, m, w, None)
    }
    fn qkv_rope(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        kv_off: usize,
        x: &GpuTensor,
        m: usize,
        w: [(&GpuTensor, Option<&GpuTensor>); 3],
        table: &GpuTensor,
        (nh, nkv, hs): (usize, usize, usize),
        start_pos: usize,
    ) -> Result<()> {
        ensure_n(w[0].0, nh * hs, "qkv_rope")?;
        ensure_n(w[1].0, nkv * hs, "qkv_rope")?;
        self.qkv_with(q, k, v, kv_off, x, m, w, Some((table, (nh, nkv, hs), start_pos)))
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
        if self.fused && m < SMALL_M && self.small_matmul_kind == MatmulKind::Rows {
            ensure_n(w_gate, n, "matmul_swiglu")?;
            return gpu::matmul::rows_swiglu(&mut self.rec, out, x, m, w_gate, w_up);
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
        let kind = if s.tq >= SMALL_M { self.attention_kind } else { self.few_rows_kind() };
        gpu::attention::attention_kind(&mut self.rec, out, probs, q, k, v, mask, s, kind)
    }
    fn layernorm(&mut self, out: &GpuTensor, x: &GpuTensor, g: &GpuTensor, b: &GpuTensor, rows: usize, eps: f32) -> Result<()> {
        let kind = self.norm_kind_for(rows);
        gpu::norm::layernorm_kind(&mut self.rec, out, x, g, b, rows, eps, kind)
    }
    fn rmsnorm(&mut self, out: &GpuTensor, x: &GpuTensor, w: &GpuTensor, rows: usize, eps: f32) -> Result<()> {
        let kind = self.norm_kind_for(rows);
        gpu::norm::rmsnorm_kind(&mut self.rec, out, x, w, rows, eps, kind)
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
            let kind = self.norm_kind_for(rows);
            return gpu::norm::add_norm_kind(&mut self.rec, x, y, out, w, b, rows, eps, kind);
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
        if self.small_matmul_kind == MatmulKind::Rows {
            return gpu::sample::sample_one_invocation(&mut self.rec, out, logits, row, p, u);
        }
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
    fn chains(&self) -> bool {
        true
    }
    fn layers_mark(&mut self, begin: bool) {
        let now = self.rec.dispatches;
        match (begin, self.layers_from.take()) {
            (true, _) => self.layers_from = Some(now),
            (false, Some(from)) => self.layer_dispatches += now - from,
            (false, None) => {}
        }
    }
    fn queue_begin(&mut self, values: usize) -> Result<()> {
        let slot = self.chain_slot;
        if self.chain_cur.is_some() || self.in_flight.iter().any(|f| f.slot == slot) {
            return Err(TfError::Internal("a chained batch began while both readback buffers were in use".into()));
        }
        let bytes = (values.max(1) * 4) as u64;
        self.gpu.check_staging(bytes.next_power_of_two().max(256), "chained readback")?;
        if self.chain_bufs[slot].as_ref().is_none_or(|b| b.size() < bytes) {
            if let Some(old) = self.chain_bufs[slot].take() {
                old.destroy();
            }
            self.chain_bufs[slot] = Some(self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("chained readback"),
                size: bytes.next_power_of_two().max(256),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        self.chain_cur = Some((slot, 0, Vec::new()));
        Ok(())
    }
    fn queue_read(&mut self, reqs: &[(&GpuTensor, usize, usize)]) -> Result<()> {
        let Some((slot, mut at, mut sizes)) = self.chain_cur.take() else {
            return Err(TfError::Internal("queue_read outside a chained batch".into()));
        };
        let staging = self.chain_bufs[slot].clone().ok_or_else(|| TfError::Internal("no chained readback buffer".into()))?;
        for (t, off, n) in reqs {
            if off + n > t.len() {
                return Err(TfError::Shape { op: "read", msg: format!("reading {n} values at {off} from a tensor of {:?}", t.shape) });
            }
            if (at + n) as u64 * 4 > staging.size() {
                return Err(TfError::Internal(format!("a chained batch read more than the {} bytes it reserved", staging.size())));
            }
            self.rec.copy(&t.buf, *off, &staging, at, *n);
            at += n;
            sizes.push(*n);
        }
        self.chain_cur = Some((slot, at, sizes));
        Ok(())
    }
    fn queue_submit(&mut self) -> Result<()> {
        let Some((slot, at, sizes)) = self.chain_cur.take() else {
            return Err(TfError::Internal("queue_submit outside a chained batch".into()));
        };
        self.rec.flush();
        self.gpu.check()?;
        let rx = if at > 0 {
            let staging = self.chain_bufs[slot].as_ref().ok_or_else(|| TfError::Internal("no chained readback buffer".into()))?;
            let (tx, rx) = futures_channel::oneshot::channel();
            staging.slice(0..at as u64 * 4).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            Some(rx)
        } else {
            None
        };
        self.in_flight.push_back(InFlight { slot, sizes, index: self.rec.last_submission.clone(), rx });
        self.chain_slot = 1 - slot;
        Ok(())
    }
    async fn queue_wait(&mut self) -> Result<Vec<Vec<u32>>> {
        let f = self.in_flight.pop_front().ok_or_else(|| TfError::Internal("no chained batch in flight".into()))?;
        let Some(rx) = f.rx else { return Ok(f.sizes.iter().map(|_| vec![]).collect()) };
        // Natively: wait for this batch's submission only, so the batch recorded after it keeps
        // running. In the browser the map resolves from the event loop.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.gpu.device.poll(wgpu::PollType::Wait { submission_index: f.index.clone(), timeout: None });
        }
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.gpu.check()?;
                return Err(TfError::Gpu(format!("reading back from the GPU failed: {e}")));
            }
            Err(_) => {
                self.gpu.check()?;
                return Err(TfError::Gpu("reading back from the GPU was cancelled".into()));
            }
        }
        let staging = self.chain_bufs[f.slot].as_ref().ok_or_else(|| TfError::Internal("no chained readback buffer".into()))?;
        let total: usize = f.sizes.iter().sum();
        let all: Vec<u32> = {
            let view = staging
                .slice(0..total as u64 * 4)
                .get_mapped_range()
                .map_err(|e| TfError::Gpu(format!("mapping the readback buffer failed: {e}")))?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        staging.unmap();
        self.gpu.check()?;
        let mut out = Vec::with_capacity(f.sizes.len());
        let mut at = 0;
        for n in f.sizes {
            out.push(all[at..at + n].to_vec());
            at += n;
        }
        Ok(out)
    }
    fn queue_abandon(&mut self) {
        // A batch nobody will read (a generation stopped with one in flight): its buffer may still
        // have a map pending, so it is destroyed (the map fails, nobody listens) and made anew.
        self.rec.flush();
        for f in self.in_flight.drain(..) {
            if let Some(b) = self.chain_bufs[f.slot].take() {
                b.destroy();
            }
        }
        if let Some((slot, ..)) = self.chain_cur.take() {
            if let Some(b) = self.chain_bufs[slot].take() {
                b.destroy();
            }
        }
    }
}

/// The fused ops take N from the caller (the default implementations need it): it must be W's rows.
fn ensure_n(w: &GpuTensor, n: usize, op: &'static str) -> Result<()> {
    if w.shape.first() != Some(&n) {
        return Err(TfError::Shape { op, msg: format!("N = {n} but W is {:?}", w.shape) });
    }
    Ok(())
}
