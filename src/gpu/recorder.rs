//! Records op dispatches into one command encoder and submits them together: one submit per
//! forward pass (or per generated token). Op parameters go into slots of the context's uniform
//! arena, written once per submission.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Result, TfError};
use crate::gpu::context::{Gpu, Kernel, PARAM_SLOT, PARAM_SLOTS};

enum Cmd {
    Dispatch { pipeline: wgpu::ComputePipeline, group: wgpu::BindGroup, offset: u32, groups: [u32; 3] },
    Copy { src: wgpu::Buffer, src_off: u64, dst: wgpu::Buffer, dst_off: u64, bytes: u64 },
}

pub struct Recorder {
    pub gpu: Arc<Gpu>,
    params: Vec<u8>,
    cmds: Vec<Cmd>,
    /// Dispatches recorded since creation (across flushes): benchmarks report it.
    pub dispatches: usize,
    /// Queue submissions made since creation: tests assert one per generated token.
    pub submits: usize,
    /// The index of the last submission: a chained batch's readback waits for its own submission
    /// only, not for the batch recorded after it (model::chain).
    pub last_submission: Option<wgpu::SubmissionIndex>,
    /// Bind groups by (kernel, buffers): a model binds the same buffers every token, so after the
    /// first token a dispatch creates nothing.
    groups: HashMap<GroupKey, wgpu::BindGroup>,
}

/// A bind group's key: the kernel and each binding's (buffer, offset, size; u64::MAX: the whole buffer).
type GroupKey = (&'static str, Vec<(wgpu::Buffer, u64, u64)>);

/// Bind groups kept at most; past this the cache starts over (one-off shapes in tests, benchmarks).
const MAX_CACHED_GROUPS: usize = 4096;

impl Recorder {
    pub fn new(gpu: &Arc<Gpu>) -> Self {
        Recorder {
            gpu: gpu.clone(),
            params: Vec::with_capacity(4096),
            cmds: Vec::new(),
            dispatches: 0,
            submits: 0,
            last_submission: None,
            groups: HashMap::new(),
        }
    }

    /// Records one dispatch of `k` with `params` and the storage buffers for bindings 1.. in order.
    pub fn dispatch<P: bytemuck::Pod>(&mut self, k: &Kernel, params: &P, bufs: &[&wgpu::Buffer], groups: [u32; 3]) -> Result<()> {
        self.dispatch_with(k, params, bufs.len(), |i| (bufs[i], None), groups)
    }

    /// [`Recorder::dispatch`] where a binding may be a range of its buffer, `(offset, size)` in
    /// bytes: one row range of a weight split by rows (`Gpu::row_chunks`); `None` binds it whole.
    pub fn dispatch_ranges<P: bytemuck::Pod>(
        &mut self,
        k: &Kernel,
        params: &P,
        bufs: &[(&wgpu::Buffer, Option<(u64, u64)>)],
        groups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_with(k, params, bufs.len(), |i| bufs[i], groups)
    }

    fn dispatch_with<'b, P: bytemuck::Pod>(
        &mut self,
        k: &Kernel,
        params: &P,
        count: usize,
        bind: impl Fn(usize) -> (&'b wgpu::Buffer, Option<(u64, u64)>),
        groups: [u32; 3],
    ) -> Result<()> {
        if count != k.storage {
            return Err(TfError::Shape { op: k.name, msg: format!("{count} buffers bound, the kernel has {}", k.storage) });
        }
        self.gpu.check_groups(k.name, groups)?;
        if groups.contains(&0) {
            return Ok(()); // nothing to do for an empty tensor
        }
        let p = bytemuck::bytes_of(params);
        debug_assert!(p.len() as u64 <= PARAM_SLOT);
        if self.params.len() as u64 >= PARAM_SLOT * PARAM_SLOTS {
            self.flush();
        }
        let offset = self.params.len() as u32;
        self.params.extend_from_slice(p);
        self.params.resize(offset as usize + PARAM_SLOT as usize, 0);
        let key = (
            k.name,
            (0..count)
                .map(|i| {
                    let (b, r) = bind(i);
                    (b.clone(), r.map_or(0, |r| r.0), r.map_or(u64::MAX, |r| r.1))
                })
                .collect::<Vec<_>>(),
        );
        let group = match self.groups.get(&key) {
            Some(g) => g.clone(),
            None => {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.gpu.params,
                        offset: 0,
                        size: wgpu::BufferSize::new(PARAM_SLOT),
                    }),
                }];
                for i in 0..count {
                    let (b, range) = bind(i);
                    let resource = match range {
                        None => b.as_entire_binding(),
                        Some((offset, size)) => {
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: b, offset, size: wgpu::BufferSize::new(size) })
                        }
                    };
                    entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource });
                }
                let g = self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(k.name),
                    layout: &k.layout,
                    entries: &entries,
                });
                if self.groups.len() >= MAX_CACHED_GROUPS {
                    self.groups.clear();
                }
                self.groups.insert(key, g.clone());
                g
            }
        };
        self.cmds.push(Cmd::Dispatch { pipeline: k.pipeline.clone(), group, offset, groups });
        self.dispatches += 1;
        Ok(())
    }

    /// Records a buffer-to-buffer copy of `elems` 4-byte values.
    pub fn copy(&mut self, src: &wgpu::Buffer, src_elem: usize, dst: &wgpu::Buffer, dst_elem: usize, elems: usize) {
        if elems > 0 {
            self.cmds.push(Cmd::Copy {
                src: src.clone(),
                src_off: src_elem as u64 * 4,
                dst: dst.clone(),
                dst_off: dst_elem as u64 * 4,
                bytes: elems as u64 * 4,
            });
        }
    }

    /// Encodes and submits what was recorded: consecutive dispatches share one compute pass.
    pub fn flush(&mut self) {
        if self.cmds.is_empty() {
            return;
        }
        let gpu = self.gpu.clone();
        if !self.params.is_empty() {
            gpu.queue.write_buffer(&gpu.params, 0, &self.params);
        }
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tinyformer") });
        let cmds = std::mem::take(&mut self.cmds);
        let mut i = 0;
        while i < cmds.len() {
            match &cmds[i] {
                Cmd::Copy { src, src_off, dst, dst_off, bytes } => {
                    enc.copy_buffer_to_buffer(src, *src_off, dst, *dst_off, *bytes);
                    i += 1;
                }
                Cmd::Dispatch { .. } => {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("ops"), timestamp_writes: None });
                    while let Some(Cmd::Dispatch { pipeline, group, offset, groups }) = cmds.get(i) {
                        pass.set_pipeline(pipeline);
                        pass.set_bind_group(0, group, &[*offset]);
                        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        i += 1;
                    }
                }
            }
        }
        self.last_submission = Some(gpu.queue.submit([enc.finish()]));
        self.submits += 1;
        self.params.clear();
    }

    /// Submits everything and reports any GPU error raised so far.
    pub fn submit(mut self) -> Result<()> {
        self.flush();
        self.gpu.check()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}
