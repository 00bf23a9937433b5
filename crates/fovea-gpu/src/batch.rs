//! Ops are data: each op validates its inputs and returns a [`Dispatch`] (pipeline,
//! bind group, workgroup counts). A [`Batch`] records many dispatches into one command
//! encoder, inside as few compute passes as possible, and submits them once.
//!
//! With profiling on (and the adapter's `timestamp-query`), every dispatch gets its own
//! pass with begin/end timestamps, and [`Submitted::timings`] reads them back per op.

use std::sync::Arc;

use crate::context::Gpu;
use crate::error::{GpuError, Result};
use crate::pipeline::{CachedPipeline, PipelineKey};
use crate::tensor::{DType, Tensor};

/// How many workgroups a dispatch runs.
#[derive(Clone, Debug)]
pub enum Workgroups {
    /// Fixed counts (x, y, z).
    Direct([u32; 3]),
    /// Counts read on the GPU from `args` (three u32) at byte `offset`.
    Indirect {
        /// Buffer holding the arguments (a u32 tensor).
        args: Tensor,
        /// Byte offset of (x, y, z).
        offset: u64,
    },
}

/// One recorded kernel launch.
pub struct Dispatch {
    /// Op label for profiles and errors, e.g. `matmul:f16/matmul`.
    pub label: String,
    /// The pipeline.
    pub pipeline: Arc<CachedPipeline>,
    /// Group 0 bindings.
    pub bind_group: wgpu::BindGroup,
    /// Workgroup counts.
    pub workgroups: Workgroups,
    /// Tensors the bind group refers to, kept alive until the dispatch is recorded.
    pub keep_alive: Vec<Tensor>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch")
            .field("label", &self.label)
            .field("workgroups", &self.workgroups)
            .finish()
    }
}

/// A kernel binding: a tensor, a uniform block, or the device's dummy buffer.
pub enum Bind<'a> {
    /// A storage tensor.
    Tensor(&'a Tensor),
    /// The 16-byte dummy for an input the kernel will not read.
    Dummy,
}

/// Splits `groups` workgroups over x and y so neither exceeds `max_per_dim`;
/// kernels recover the flat index as `x + y * num_workgroups.x`.
pub fn spread_workgroups(groups: u32, max_per_dim: u32) -> [u32; 3] {
    if groups <= max_per_dim {
        [groups.max(1), 1, 1]
    } else {
        let y = groups.div_ceil(max_per_dim);
        [groups.div_ceil(y), y, 1]
    }
}

impl Gpu {
    /// Builds a dispatch of the pipeline `key` with uniform `params` at binding 0 and
    /// `bindings` at their binding numbers. Bind only what the entry point uses: its
    /// auto-derived layout has no slot for the rest.
    pub fn dispatch(
        &self,
        key: &PipelineKey,
        params: &[u8],
        bindings: &[(u32, Bind<'_>)],
        workgroups: Workgroups,
    ) -> Result<Dispatch> {
        let pipeline = self.pipeline(key)?;
        let device = &self.inner.device;
        let uniform = wgpu::util::DeviceExt::create_buffer_init(
            device,
            &wgpu::util::BufferInitDescriptor {
                label: Some(&pipeline.label),
                contents: params,
                usage: wgpu::BufferUsages::UNIFORM,
            },
        );
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        let mut keep_alive = Vec::new();
        for (binding, b) in bindings {
            let resource = match b {
                Bind::Tensor(t) => {
                    keep_alive.push((*t).clone());
                    t.buffer().as_entire_binding()
                }
                Bind::Dummy => self.inner.dummy.as_entire_binding(),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource,
            });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&pipeline.label),
            layout: &pipeline.layout,
            entries: &entries,
        });
        // Natively a bad binding is reported synchronously: name the op now rather than
        // at submit.
        self.take_error(&format!("binding {}", pipeline.label))?;
        if let Workgroups::Indirect { args, .. } = &workgroups {
            keep_alive.push(args.clone());
        }
        Ok(Dispatch {
            label: pipeline.label.clone(),
            pipeline,
            bind_group,
            workgroups,
            keep_alive,
        })
    }

    /// Starts a batch of GPU work.
    pub fn batch(&self) -> Batch {
        Batch::new(self.clone(), false)
    }

    /// Starts a batch that records per-op GPU timestamps (when the adapter has them).
    pub fn profiled_batch(&self) -> Batch {
        Batch::new(self.clone(), true)
    }
}

const MAX_PROFILED_OPS: u32 = 2048;

struct Profiler {
    query_set: wgpu::QuerySet,
    labels: Vec<String>,
}

/// Records dispatches and copies into one command encoder; `submit` sends them at once.
pub struct Batch {
    gpu: Gpu,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    profiler: Option<Profiler>,
    dispatches: u32,
    keep_alive: Vec<Tensor>,
    /// Scratch tensors by slot, for intermediates an op makes and uses up itself (see
    /// [`Batch::scratch`]).
    scratch: Vec<Option<Tensor>>,
}

/// Per-op GPU time from a profiled batch.
#[derive(Clone, Debug)]
pub struct OpTiming {
    /// Op label.
    pub label: String,
    /// GPU time between the op's pass begin and end, in nanoseconds.
    pub gpu_ns: f64,
}

impl Batch {
    fn new(gpu: Gpu, profile: bool) -> Batch {
        let encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("fovea.batch"),
            });
        let profiler = (profile && gpu.capabilities().timestamps).then(|| Profiler {
            query_set: gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("fovea.profile"),
                ty: wgpu::QueryType::Timestamp,
                count: MAX_PROFILED_OPS * 2,
            }),
            labels: Vec::new(),
        });
        Batch {
            gpu,
            encoder: Some(encoder),
            pass: None,
            profiler,
            dispatches: 0,
            keep_alive: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The device this batch records for.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Dispatches recorded so far.
    pub fn dispatch_count(&self) -> u32 {
        self.dispatches
    }

    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder.as_mut().expect("encoder present until submit")
    }

    /// A tensor of `shape` and `dtype` for an intermediate that an op writes and reads
    /// up itself, from this batch's scratch `slot`: every op of the batch that asks for
    /// the same slot gets the same storage (grown when a request is larger). A tensor
    /// recorded into a batch stays allocated until the batch is submitted, so
    /// intermediates from the pool would add up over a whole forward; one batch's
    /// recorded work runs in order, so reusing its own scratch is safe.
    pub(crate) fn scratch(
        &mut self,
        slot: usize,
        op: &'static str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        if self.scratch.len() <= slot {
            self.scratch.resize(slot + 1, None);
        }
        let elems: usize = shape.iter().product();
        if let Some(t) = &self.scratch[slot]
            && t.dtype() == dtype
            && t.len() >= elems
        {
            return Ok(t.prefix_view(shape));
        }
        let t = self.gpu.empty(op, shape, dtype)?;
        self.scratch[slot] = Some(t.clone());
        Ok(t)
    }

    /// Records a dispatch.
    pub fn record(&mut self, d: Dispatch) {
        let profiled_index = self.profiler.as_ref().and_then(|p| {
            let i = p.labels.len() as u32;
            (i < MAX_PROFILED_OPS).then_some(i)
        });
        if let Some(i) = profiled_index {
            let profiler = self.profiler.as_mut().expect("checked above");
            profiler.labels.push(d.label.clone());
            let query_set = profiler.query_set.clone();
            let encoder = self.encoder();
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&d.label),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &query_set,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                }),
            });
            encode(&mut pass, &d);
        } else {
            if self.pass.is_none() {
                let encoder = self.encoder.as_mut().expect("encoder present until submit");
                let pass = encoder
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("fovea.ops"),
                        timestamp_writes: None,
                    })
                    .forget_lifetime();
                self.pass = Some(pass);
            }
            encode(self.pass.as_mut().expect("opened above"), &d);
        }
        self.dispatches += 1;
        self.keep_alive.extend(d.keep_alive);
    }

    /// Copies `src` into `dst` (same byte size).
    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.size_bytes() != dst.size_bytes() {
            return Err(GpuError::Shape {
                op: "copy",
                message: format!("{} into {}: sizes differ", src.describe(), dst.describe()),
            });
        }
        let bytes = src.size_bytes().div_ceil(4) * 4;
        self.encoder()
            .copy_buffer_to_buffer(src.buffer(), 0, dst.buffer(), 0, bytes);
        self.keep_alive.push(src.clone());
        self.keep_alive.push(dst.clone());
        Ok(())
    }

    /// Copies `bytes` from `src` at byte `src_offset` to `dst` at `dst_offset` (all
    /// multiples of 4).
    pub fn copy_region(
        &mut self,
        src: &Tensor,
        src_offset: u64,
        dst: &Tensor,
        dst_offset: u64,
        bytes: u64,
    ) -> Result<()> {
        let aligned = |v: u64| v.is_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        if !(aligned(src_offset) && aligned(dst_offset) && aligned(bytes))
            || src_offset + bytes > src.size_bytes()
            || dst_offset + bytes > dst.size_bytes()
        {
            return Err(GpuError::Shape {
                op: "copy_region",
                message: format!(
                    "{bytes} bytes from {} at {src_offset} into {} at {dst_offset}: out of range or not 4-byte aligned",
                    src.describe(),
                    dst.describe()
                ),
            });
        }
        self.encoder().copy_buffer_to_buffer(
            src.buffer(),
            src_offset,
            dst.buffer(),
            dst_offset,
            bytes,
        );
        self.keep_alive.push(src.clone());
        self.keep_alive.push(dst.clone());
        Ok(())
    }

    /// Fills a tensor's storage with zero bytes.
    pub fn clear(&mut self, t: &Tensor) {
        let bytes = t.size_bytes().div_ceil(4) * 4;
        self.encoder().clear_buffer(t.buffer(), 0, Some(bytes));
        self.keep_alive.push(t.clone());
    }

    /// Ends recording and submits everything as one command buffer.
    pub fn submit(mut self) -> Result<Submitted> {
        self.pass = None;
        let mut encoder = self.encoder.take().expect("encoder present until submit");
        let timestamps = self.profiler.take().and_then(|p| {
            let n = p.labels.len() as u64 * 2;
            if n == 0 {
                return None;
            }
            let bytes = n * 8;
            let resolve = self.gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("fovea.profile.resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let staging = self.gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("fovea.profile.staging"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.resolve_query_set(&p.query_set, 0..n as u32, &resolve, 0);
            encoder.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
            Some((p.labels, staging))
        });
        self.gpu.queue().submit([encoder.finish()]);
        self.gpu.take_error("submitting a batch")?;
        Ok(Submitted {
            gpu: self.gpu.clone(),
            timestamps,
            _keep_alive: std::mem::take(&mut self.keep_alive),
        })
    }
}

fn encode(pass: &mut wgpu::ComputePass<'_>, d: &Dispatch) {
    pass.set_pipeline(&d.pipeline.pipeline);
    pass.set_bind_group(0, &d.bind_group, &[]);
    match &d.workgroups {
        Workgroups::Direct([x, y, z]) => pass.dispatch_workgroups(*x, *y, *z),
        Workgroups::Indirect { args, offset } => {
            pass.dispatch_workgroups_indirect(args.buffer(), *offset)
        }
    }
}

/// A submitted batch.
pub struct Submitted {
    gpu: Gpu,
    timestamps: Option<(Vec<String>, wgpu::Buffer)>,
    _keep_alive: Vec<Tensor>,
}

impl Submitted {
    /// Waits for the batch and returns per-op GPU times (empty when the batch was not
    /// profiled or the adapter has no timestamp queries).
    pub async fn timings(self) -> Result<Vec<OpTiming>> {
        let Some((labels, staging)) = self.timestamps else {
            return Ok(Vec::new());
        };
        let bytes = crate::readback::map_read(&self.gpu, &staging, "profile timestamps").await?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let period = self.gpu.queue().get_timestamp_period() as f64;
        Ok(labels
            .into_iter()
            .enumerate()
            .map(|(i, label)| OpTiming {
                label,
                gpu_ns: ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period,
            })
            .collect())
    }
}
