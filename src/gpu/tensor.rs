//! GPU tensors: a storage buffer that knows its shape, and async readback that works in the
//! browser (map with a callback and await it; never a blocking poll on wasm).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Result, TfError};
use crate::gpu::context::Gpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    U32,
    /// A 16-bit weight as the checkpoint stored it (f16 or bf16): packed pairs in u32 words, each
    /// row (the last dimension) padded to an even length, so row r starts at word r * ceil(K / 2)
    /// and an odd K's last word holds one value and a zero (shaders/matmul16.wgsl reads it).
    /// Only the matmul and embedding kernels take it.
    F16,
    BF16,
}

impl DType {
    /// Whether the tensor holds packed 16-bit values.
    pub fn is_16bit(self) -> bool {
        matches!(self, DType::F16 | DType::BF16)
    }
    /// `wfmt` of shaders/matmul16.wgsl: 0 f16, 1 bf16.
    pub fn wfmt(self) -> u32 {
        (self == DType::BF16) as u32
    }
}

/// Packs 16-bit values of a row-major tensor with rows of `k` into u32 pairs, each row padded to an
/// even length ([`DType::F16`]): what the GPU holds, and what the kernels' CPU twins read.
pub fn pack_rows16(bits: &[u16], k: usize) -> Vec<u32> {
    let k = k.max(1);
    let kw = k.div_ceil(2);
    let mut out = Vec::with_capacity(bits.len().div_ceil(k) * kw);
    for row in bits.chunks(k) {
        for pair in row.chunks(2) {
            out.push(pair[0] as u32 | (pair.get(1).copied().unwrap_or(0) as u32) << 16);
        }
    }
    out
}

/// A row-major tensor in one storage buffer: 4 bytes per element for f32 and u32, packed pairs
/// for the 16-bit weights.
pub struct GpuTensor {
    pub buf: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// the device's live-buffer count, decremented once when the buffer is destroyed
    live: Arc<LiveBuffers>,
    destroyed: AtomicBool,
}

/// How many tensor buffers of a device are alive and their bytes: a load/unload cycle must bring
/// both back to where they were (tests/bounded.rs loads and frees a model 20 times).
#[derive(Default, Debug)]
pub struct LiveBuffers {
    count: AtomicU64,
    bytes: AtomicU64,
    /// the bytes of the 16-bit tensors among them
    bytes16: AtomicU64,
}

impl LiveBuffers {
    /// (buffers, bytes) alive now.
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Ordering::SeqCst), self.bytes.load(Ordering::SeqCst))
    }
    /// The bytes of the 16-bit tensors ([`DType::F16`], [`DType::BF16`]) alive now.
    pub fn bytes16(&self) -> u64 {
        self.bytes16.load(Ordering::SeqCst)
    }
}

impl GpuTensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The last dimension (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
    /// The product of every dimension but the last: the number of rows.
    pub fn rows(&self) -> usize {
        if self.shape.is_empty() {
            1
        } else {
            self.shape[..self.shape.len() - 1].iter().product()
        }
    }
    /// The bytes of one row (the last dimension) as stored: 4 a value, or packed pairs for 16-bit.
    pub fn row_bytes(&self) -> u64 {
        let k = self.last_dim() as u64;
        if self.dtype.is_16bit() {
            k.div_ceil(2) * 4
        } else {
            k * 4
        }
    }
    /// Checks that the tensor holds at least `n` values of `dtype` (the training ops' guard:
    /// `what` names the tensor in the error).
    pub fn need(&self, op: &'static str, dtype: DType, n: usize, what: &str) -> Result<()> {
        if self.dtype != dtype || self.len() < n {
            let msg = format!("{what} {:?} ({:?}) must hold {n} {dtype:?} values", self.shape, self.dtype);
            return Err(TfError::Shape { op, msg });
        }
        Ok(())
    }
    /// Frees the GPU memory now (in the browser, dropping a wgpu buffer does not free it by itself).
    /// Drop calls it, the one way a tensor is freed; idempotent, so the live count never drops twice.
    pub fn destroy(&self) {
        if !self.destroyed.swap(true, Ordering::SeqCst) {
            self.live.count.fetch_sub(1, Ordering::SeqCst);
            self.live.bytes.fetch_sub(self.buf.size(), Ordering::SeqCst);
            if self.dtype.is_16bit() {
                self.live.bytes16.fetch_sub(self.buf.size(), Ordering::SeqCst);
            }
        }
        self.buf.destroy();
    }
}

impl Drop for GpuTensor {
    fn drop(&mut self) {
        self.destroy();
    }
}

fn elems(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| TfError::Limit(format!("tensor shape {shape:?} overflows")))
}

impl Gpu {
    /// `split`: a weight that may exceed the binding limit, bound by rows ([`Gpu::chunks`]) where
    /// it does; everything else must fit one binding.
    fn alloc(&self, shape: &[usize], dtype: DType, label: &str, split: bool) -> Result<GpuTensor> {
        let mut n = elems(shape)?;
        if dtype.is_16bit() {
            // words: rows x ceil(K / 2)
            let k = shape.last().copied().unwrap_or(1).max(1);
            n = (n / k).checked_mul(k.div_ceil(2)).ok_or_else(|| TfError::Limit(format!("tensor shape {shape:?} overflows")))?;
        }
        let bytes = (n as u64).checked_mul(4).ok_or_else(|| TfError::Limit(format!("{label}: {n} values overflow")))?;
        let rows = if shape.len() == 2 { shape[0] } else { 0 };
        let split = split && rows > 0 && bytes <= self.limits.max_buffer_size;
        if !split || self.row_chunks(bytes, rows, bytes / rows as u64, label)?.is_none() {
            self.check_alloc(bytes, label)?;
        }
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.live.count.fetch_add(1, Ordering::SeqCst);
        self.live.bytes.fetch_add(buf.size(), Ordering::SeqCst);
        if dtype.is_16bit() {
            self.live.bytes16.fetch_add(buf.size(), Ordering::SeqCst);
        }
        Ok(GpuTensor { buf, shape: shape.to_vec(), dtype, live: self.live.clone(), destroyed: AtomicBool::new(false) })
    }

    /// A zero-filled f32 tensor (WebGPU zero-initialises new buffers).
    pub fn zeros(&self, shape: &[usize], label: &str) -> Result<GpuTensor> {
        self.alloc(shape, DType::F32, label, false)
    }
    /// [`Gpu::zeros`] of a 2-D output that may be over the binding limit (the logits of a long
    /// pass): the matmul writes it and the sampler reads it by ranges of whole rows ([`Gpu::chunks`]).
    pub fn zeros_rows(&self, shape: &[usize], label: &str) -> Result<GpuTensor> {
        self.alloc(shape, DType::F32, label, true)
    }
    pub fn zeros_u32(&self, shape: &[usize], label: &str) -> Result<GpuTensor> {
        self.alloc(shape, DType::U32, label, false)
    }

    /// How `t` is bound: `None` when it fits one binding, else its row ranges ([`Gpu::row_chunks`]).
    pub fn chunks(&self, t: &GpuTensor, what: &str) -> Result<Option<Vec<crate::gpu::context::RowChunk>>> {
        self.row_chunks(t.rows() as u64 * t.row_bytes(), t.rows(), t.row_bytes(), what)
    }

    /// Uploads 4-byte values; `data.len()` must equal the shape's product.
    fn upload_as<T: bytemuck::Pod>(&self, shape: &[usize], data: &[T], dtype: DType, label: &str, split: bool) -> Result<GpuTensor> {
        let n = elems(shape)?;
        if n != data.len() {
            return Err(TfError::Shape { op: "upload", msg: format!("{label}: shape {shape:?} holds {n} values, got {}", data.len()) });
        }
        let t = self.alloc(shape, dtype, label, split)?;
        if !data.is_empty() {
            self.queue.write_buffer(&t.buf, 0, bytemuck::cast_slice(data));
        }
        Ok(t)
    }
    pub fn upload(&self, shape: &[usize], data: &[f32], label: &str) -> Result<GpuTensor> {
        self.upload_as(shape, data, DType::F32, label, false)
    }
    /// [`Gpu::upload`] of a weight (V, C) that may be over the binding limit: the embedding gather
    /// and the matmul then bind it by rows ([`Gpu::chunks`]). The memory budget refuses, by name,
    /// the weights that are bound whole (`model::memory`).
    pub fn upload_weight(&self, shape: &[usize], data: &[f32], label: &str) -> Result<GpuTensor> {
        self.upload_as(shape, data, DType::F32, label, true)
    }
    pub fn upload_u32(&self, shape: &[usize], data: &[u32], label: &str) -> Result<GpuTensor> {
        self.upload_as(shape, data, DType::U32, label, false)
    }
    /// Uploads a 16-bit weight (`bits`: the file's f16 or bf16 values, row-major, `dtype` F16 or
    /// BF16) as packed pairs ([`DType::F16`]), 2 bytes a value; split by rows like
    /// [`Gpu::upload_weight`] where it is over the binding limit.
    pub fn upload16(&self, shape: &[usize], bits: &[u16], dtype: DType, label: &str) -> Result<GpuTensor> {
        let n = elems(shape)?;
        if n != bits.len() || !dtype.is_16bit() || n == 0 {
            let msg = format!("{label}: shape {shape:?} holds {n} values, got {} {dtype:?}", bits.len());
            return Err(TfError::Shape { op: "upload16", msg });
        }
        let t = self.alloc(shape, dtype, label, true)?;
        let words = pack_rows16(bits, shape.last().copied().unwrap_or(1));
        self.queue.write_buffer(&t.buf, 0, bytemuck::cast_slice(&words));
        Ok(t)
    }

    /// Overwrites part of an existing tensor (no allocation).
    fn write_as<T: bytemuck::Pod>(&self, t: &GpuTensor, offset_elems: usize, data: &[T]) -> Result<()> {
        if t.dtype.is_16bit() {
            return Err(TfError::Shape { op: "write", msg: "a 16-bit weight is written once, at upload".into() });
        }
        if offset_elems + data.len() > t.len() {
            let msg = format!("writing {} values at {offset_elems} into a tensor of {}", data.len(), t.len());
            return Err(TfError::Shape { op: "write", msg });
        }
        self.queue.write_buffer(&t.buf, offset_elems as u64 * 4, bytemuck::cast_slice(data));
        Ok(())
    }
    pub fn write_f32(&self, t: &GpuTensor, offset_elems: usize, data: &[f32]) -> Result<()> {
        self.write_as(t, offset_elems, data)
    }
    pub fn write_u32(&self, t: &GpuTensor, offset_elems: usize, data: &[u32]) -> Result<()> {
        self.write_as(t, offset_elems, data)
    }

    /// The whole tensor as raw 4-byte values, through a staging buffer made for this read (for
    /// tests and the self-test; the backend reads through its reused staging buffers). Awaitable in
    /// the browser; natively the poll inside makes the future ready at once.
    async fn read_all(&self, t: &GpuTensor) -> Result<Vec<u32>> {
        if t.dtype.is_16bit() {
            return Err(TfError::Shape { op: "read", msg: "a 16-bit weight is not read back".into() });
        }
        if t.len() == 0 {
            return Ok(vec![]);
        }
        let bytes = t.len() as u64 * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(&t.buf, 0, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let out = self.map_read(&staging, bytes).await;
        staging.destroy();
        out
    }

    /// Maps a MAP_READ buffer and copies its first `bytes` out.
    pub(crate) async fn map_read(&self, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<u32>> {
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(0..bytes).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.poll_wait();
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.check()?;
                return Err(TfError::Gpu(format!("reading back from the GPU failed: {e}")));
            }
            Err(_) => {
                self.check()?;
                return Err(TfError::Gpu("reading back from the GPU was cancelled".into()));
            }
        }
        let data = {
            let view =
                staging.slice(0..bytes).get_mapped_range().map_err(|e| TfError::Gpu(format!("mapping the readback buffer failed: {e}")))?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        staging.unmap();
        self.check()?;
        Ok(data)
    }

    pub async fn read_f32(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        Ok(bytemuck::cast_vec(self.read_all(t).await?))
    }
    pub async fn read_u32(&self, t: &GpuTensor) -> Result<Vec<u32>> {
        self.read_all(t).await
    }
}
