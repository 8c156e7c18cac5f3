//! The GPU context: device, queue, every compute pipeline (built once, here), a uniform arena for
//! op parameters, and the sticky error state (uncaptured errors, device lost).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Result, TfError};
use crate::gpu::{
    act::EwKernels, attention::AttentionKernels, embed::EmbedKernels, loss::LossKernels, matmul::MatmulKernels, moe::MoeKernels,
    norm::NormKernels, optim::OptimKernels, qkv::QkvKernels, rope::RopeKernels, sample::SampleKernels, KernelPolicy,
};

/// One compute pipeline and the layout of its bind group: binding 0 is the op's uniform params
/// (a dynamic offset into the arena), bindings 1.. are storage buffers.
pub struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub storage: usize,
}

/// Every kernel of shaders/, created at context creation, one struct per kernel family (each
/// family's module owns its pipelines). No pipeline is ever created later.
pub struct Kernels {
    pub matmul: MatmulKernels,
    pub qkv: QkvKernels,
    pub attention: AttentionKernels,
    pub norm: NormKernels,
    pub ew: EwKernels,
    pub rope: RopeKernels,
    pub embed: EmbedKernels,
    pub sample: SampleKernels,
    pub moe: MoeKernels,
    /// the training-only families
    pub loss: LossKernels,
    pub optim: OptimKernels,
}

/// Size of one parameter slot: the uniform-offset alignment every WebGPU device supports.
pub const PARAM_SLOT: u64 = 256;
/// Parameter slots per submission (the arena holds this many op dispatches before a flush).
pub const PARAM_SLOTS: u64 = 1024;

/// What the page and the CLI show about the device.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub vendor: String,
    pub device_type: String,
    pub backend: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub summary: AdapterSummary,
    pub k: Kernels,
    /// (PARAM_SLOTS * PARAM_SLOT) bytes of uniform params, rewritten before each submission.
    pub(crate) params: wgpu::Buffer,
    /// A 16-byte storage buffer bound where an op's optional input is absent.
    pub(crate) dummy: wgpu::Buffer,
    /// A second one, for an absent read-write output (a buffer may not be bound both read-only
    /// and read-write in one dispatch).
    pub(crate) dummy_rw: wgpu::Buffer,
    errors: Arc<Mutex<Option<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    /// tensor buffers alive on this device (count, bytes)
    pub(crate) live: Arc<crate::gpu::tensor::LiveBuffers>,
    /// 16-bit checkpoint weights are widened to f32 at load on this device (`Gpu::widens16`)
    widen16: AtomicBool,
    /// the adapter is a GPU emulated on the CPU (`Gpu::policy`): wgpu's device type `Cpu`, or an
    /// architecture the browser reported (`Gpu::note_architecture`)
    cpu_emulated: AtomicBool,
}

impl Gpu {
    /// Finds an adapter and creates the device with the adapter's own limits (so large storage
    /// buffers are allowed where the hardware allows them). Errors say plainly what is missing.
    pub async fn new() -> Result<Gpu> {
        Gpu::with_binding_limit(None).await
    }

    /// [`Gpu::new`] with `maxStorageBufferBindingSize` requested at most `binding_limit` bytes
    /// (honoured only below the adapter's own): natively wgpu then enforces it, so tests run the
    /// split tables (`Gpu::row_chunks`) under a genuinely small limit; in the browser, which never
    /// grants less than WebGPU's default, the device keeps its own and this context splits at the
    /// lowered size anyway (the page's `?maxbinding=` test hook).
    pub async fn with_binding_limit(binding_limit: Option<u64>) -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| TfError::NoGpu(format!("no WebGPU/Vulkan adapter was found ({e})")))?;
        let info = adapter.get_info();
        let alimits = adapter.limits();
        // subgroup operations (the GEMV's reduction) where the adapter has them (native Vulkan,
        // Metal, DX12; not WebGPU in wgpu 30)
        let features = adapter.features() & wgpu::Features::SUBGROUP;
        let mut alimits = alimits;
        let lowered = binding_limit.filter(|&l| l < alimits.max_storage_buffer_binding_size).map(|l| l.max(4) & !3);
        if let Some(l) = lowered {
            alimits.max_storage_buffer_binding_size = l;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tinyformer"),
                required_features: features,
                required_limits: alimits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| TfError::NoGpu(format!("the adapter '{}' refused to create a device: {e}", info.name)))?;
        let mut limits = device.limits();
        if let Some(l) = lowered {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(l);
        }
        let errors: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let lost: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        {
            let errors = errors.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if let Ok(mut g) = errors.lock() {
                    g.get_or_insert_with(|| error_chain(&e));
                }
            }));
            let lost = lost.clone();
            device.set_device_lost_callback(move |reason, msg| {
                if let Ok(mut g) = lost.lock() {
                    *g = Some(format!("{reason:?}: {msg}"));
                }
            });
        }
        let summary = AdapterSummary {
            name: info.name.clone(),
            vendor: if info.vendor == 0 { String::new() } else { format!("0x{:04x}", info.vendor) },
            device_type: format!("{:?}", info.device_type),
            backend: format!("{:?}", info.backend),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        };
        let k = Kernels::new(&device, device.features().contains(wgpu::Features::SUBGROUP));
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params arena"),
            size: PARAM_SLOT * PARAM_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let dummy_rw = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy rw"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        // the kernel policy of this adapter (gpu::policy): a GPU emulated on the CPU widens 16-bit weights
        let cpu_emulated = KernelPolicy::cpu_emulated(info.device_type == wgpu::DeviceType::Cpu, "");
        let widen16 = AtomicBool::new(KernelPolicy::for_adapter(cpu_emulated).widen16);
        let cpu_emulated = AtomicBool::new(cpu_emulated);
        let gpu = Gpu {
            device,
            queue,
            limits,
            summary,
            k,
            params,
            dummy,
            dummy_rw,
            errors,
            lost,
            live: Default::default(),
            widen16,
            cpu_emulated,
        };
        // Surface shader compilation problems now, not at the first forward pass.
        gpu.check()?;
        Ok(gpu)
    }

    /// Returns the first GPU error seen since the last check (validation, out of memory) or the
    /// device-lost reason. The device-lost state is permanent: the page offers a reload.
    pub fn check(&self) -> Result<()> {
        if let Some(m) = self.lost.lock().ok().and_then(|g| g.clone()) {
            return Err(TfError::Gpu(format!("the GPU device was lost ({m}); reload to start a new one")));
        }
        if let Some(m) = self.errors.lock().ok().and_then(|mut g| g.take()) {
            return Err(TfError::Gpu(m));
        }
        Ok(())
    }

    /// Runs `f` (allocations, uploads) inside out-of-memory and validation error scopes and turns
    /// what the GPU reports into an error, so a model too large for the device fails its load
    /// cleanly instead of poisoning later passes.
    pub async fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = f();
        let v = validation.pop().await;
        let o = oom.pop().await;
        if let Some(e) = o {
            return Err(TfError::Gpu(format!("out of GPU memory: {}", error_chain(&e))));
        }
        if let Some(e) = v {
            return Err(TfError::Gpu(error_chain(&e)));
        }
        r
    }

    /// Tensor buffers alive on this device now: (count, bytes).
    pub fn live_buffers(&self) -> (u64, u64) {
        self.live.get()
    }
    /// The bytes of the live 16-bit tensors (weights kept as the checkpoint stored them).
    pub fn live_bytes16(&self) -> u64 {
        self.live.bytes16()
    }

    /// Whether models loaded from now on widen their 16-bit (F16 / BF16) matmul weights and
    /// embeddings to f32 at upload (`GpuBackend::keeps_16bit` false; the memory budget then counts
    /// them at 4 bytes). The default is the adapter's policy (`Gpu::policy`); the benchmarks set it.
    pub fn widens16(&self) -> bool {
        self.widen16.load(Ordering::Relaxed)
    }
    /// Sets [`Gpu::widens16`] for models loaded from now on.
    pub fn set_widen16(&self, on: bool) {
        self.widen16.store(on, Ordering::Relaxed)
    }
    /// Whether the adapter is a GPU emulated on the CPU (llvmpipe, SwiftShader): wgpu's device type
    /// `Cpu`, or an architecture reported by [`Gpu::note_architecture`].
    pub fn is_cpu_emulated(&self) -> bool {
        self.cpu_emulated.load(Ordering::Relaxed)
    }
    /// The adapter's architecture as the browser reports it (wgpu's WebGPU backend leaves it empty,
    /// and reports SwiftShader as `Cpu` only where the browser flags it as a fallback adapter). An
    /// emulated one switches this device to the emulated policy, 16-bit widening included, for
    /// models loaded from now on.
    pub fn note_architecture(&self, architecture: &str) {
        if KernelPolicy::cpu_emulated(self.is_cpu_emulated(), architecture) && !self.is_cpu_emulated() {
            self.cpu_emulated.store(true, Ordering::Relaxed);
            self.set_widen16(KernelPolicy::for_adapter(true).widen16);
        }
    }
    /// The kernels a model loaded now takes on this device: the adapter's policy, with the 16-bit
    /// widening as last set.
    pub fn policy(&self) -> KernelPolicy {
        KernelPolicy { widen16: self.widens16(), ..KernelPolicy::for_adapter(self.is_cpu_emulated()) }
    }

    pub fn is_lost(&self) -> bool {
        self.lost.lock().map(|g| g.is_some()).unwrap_or(true)
    }

    /// Natively, blocks until submitted work is done (callbacks run). On the web, does nothing:
    /// the browser drives the device, and readbacks are awaited instead.
    pub fn poll_wait(&self) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
    }

    /// The device's limits on one buffer, for the memory budget (`model::memory::Budget`): the
    /// binding limit lowered by `lower_binding_limit` where a test asked for it.
    pub fn buffer_limits(&self) -> crate::model::memory::DeviceLimits {
        let lowered = BINDING_LIMIT_FOR_TESTS.load(std::sync::atomic::Ordering::Relaxed);
        crate::model::memory::DeviceLimits {
            max_buffer_size: self.limits.max_buffer_size,
            max_storage_buffer_binding_size: self.limits.max_storage_buffer_binding_size.min(lowered),
        }
    }

    /// How a weight of `rows` rows of `row_bytes` bytes, held in one buffer of `bytes` bytes, is
    /// bound: `None` when the whole buffer fits one binding (the common case, bound as today), else
    /// ranges of whole rows, each within `maxStorageBufferBindingSize` and starting at a multiple of
    /// `minStorageBufferOffsetAlignment` (the embedding gather and the head's matmul dispatch once
    /// per range: gpu::embed, gpu::matmul). Refused in one line where one row, or the fewest rows
    /// that keep the alignment, are over the limit.
    pub fn row_chunks(&self, bytes: u64, rows: usize, row_bytes: u64, what: &str) -> Result<Option<Vec<RowChunk>>> {
        let limit = self.limits.max_storage_buffer_binding_size;
        if bytes <= limit {
            return Ok(None);
        }
        split_rows(rows, row_bytes, limit, self.limits.min_storage_buffer_offset_alignment as u64).map(Some).ok_or_else(|| {
            TfError::Limit(format!(
                "{what} has rows of {row_bytes} bytes, and no run of whole rows aligned to {} bytes fits this GPU's maxStorageBufferBindingSize of {limit} bytes",
                self.limits.min_storage_buffer_offset_alignment
            ))
        })
    }

    /// Checks a buffer size against the device's limits before allocating.
    pub fn check_alloc(&self, bytes: u64, what: &str) -> Result<()> {
        let max_bind = self.limits.max_storage_buffer_binding_size;
        let max_buf = self.limits.max_buffer_size;
        if bytes > max_bind.min(max_buf) {
            return Err(TfError::Limit(format!(
                "{what} needs {bytes} bytes but this GPU allows at most {} bytes per storage buffer",
                max_bind.min(max_buf)
            )));
        }
        Ok(())
    }

    /// Checks the size of a staging buffer (MAP_READ, never bound to a kernel) against maxBufferSize.
    pub fn check_staging(&self, bytes: u64, what: &str) -> Result<()> {
        let max = self.limits.max_buffer_size;
        if bytes > max {
            return Err(TfError::Limit(format!("{what} needs {bytes} bytes but this GPU allows at most {max} bytes per buffer")));
        }
        Ok(())
    }

    /// Checks a workgroup count against the device's per-dimension limit.
    pub fn check_groups(&self, op: &str, g: [u32; 3]) -> Result<()> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if g.iter().any(|&d| d > max) {
            return Err(TfError::Limit(format!("{op}: dispatch {g:?} exceeds {max} workgroups per dimension")));
        }
        Ok(())
    }

    /// A 1-D launch of `groups` workgroups as a 2-D grid within the per-dimension limit
    /// (kernels recover the flat index with flat_group() in common.wgsl).
    pub fn grid_1d(&self, groups: u32) -> [u32; 3] {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if groups <= max {
            [groups.max(1), 1, 1]
        } else {
            [max, groups.div_ceil(max), 1]
        }
    }
}

impl Kernels {
    fn new(device: &wgpu::Device, subgroups: bool) -> Kernels {
        Kernels {
            matmul: MatmulKernels::new(device, subgroups),
            qkv: QkvKernels::new(device),
            attention: AttentionKernels::new(device),
            norm: NormKernels::new(device),
            ew: EwKernels::new(device),
            rope: RopeKernels::new(device),
            embed: EmbedKernels::new(device),
            sample: SampleKernels::new(device),
            moe: MoeKernels::new(device),
            loss: LossKernels::new(device),
            optim: OptimKernels::new(device),
        }
    }
}

impl Kernel {
    /// The pipeline of `entry` in `module`; its storage bindings are the ones the entry uses
    /// (`wgsl::storage_bindings`).
    pub fn new(device: &wgpu::Device, name: &'static str, module: &crate::gpu::wgsl::Module, entry: &str) -> Kernel {
        let ro = crate::gpu::wgsl::storage_bindings(&module.src, entry);
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: true, min_binding_size: None },
            count: None,
        }];
        for (i, &read_only) in ro.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(name), entries: &entries });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pl),
            module: &module.module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        Kernel { name, pipeline, layout, storage: ro.len() }
    }
}

/// One binding of a weight split by rows ([`Gpu::row_chunks`]): rows `row0..row0 + rows`, bound
/// as `size` bytes from byte `offset` of the tensor's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowChunk {
    pub row0: usize,
    pub rows: usize,
    pub offset: u64,
    pub size: u64,
}

/// `rows` rows of `row_bytes` bytes cut into runs of at most `limit` bytes, every run but the last
/// of the same number of rows, each starting at a multiple of `align` bytes; `None` where even the
/// smallest aligned run is over the limit.
pub fn split_rows(rows: usize, row_bytes: u64, limit: u64, align: u64) -> Option<Vec<RowChunk>> {
    let (row_bytes, align) = (row_bytes.max(1), align.max(1));
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    // the fewest rows whose bytes are a multiple of the alignment
    let step = align / gcd(row_bytes, align);
    let per = (limit / row_bytes) / step * step;
    if per == 0 {
        return None;
    }
    let per = per as usize;
    let mut out = Vec::with_capacity(rows.div_ceil(per));
    let mut row0 = 0;
    while row0 < rows {
        let n = per.min(rows - row0);
        out.push(RowChunk { row0, rows: n, offset: row0 as u64 * row_bytes, size: n as u64 * row_bytes });
        row0 += n;
    }
    Some(out)
}

/// A binding limit below the device's, for tests of the budget (the page's test hook); u64::MAX: none.
static BINDING_LIMIT_FOR_TESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// Makes `Gpu::buffer_limits` report at most `bytes` as the binding limit (u64::MAX: the device's).
pub fn lower_binding_limit(bytes: u64) {
    BINDING_LIMIT_FOR_TESTS.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// The whole chain of an error's sources: wgpu's Display alone says only "Validation Error".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s.replace('\n', " ")
}
