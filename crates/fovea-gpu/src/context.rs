//! Adapter discovery and device setup: which features the engine uses when present,
//! which limits it needs, and the shared [`Gpu`] handle every other part works through.

use std::sync::{Arc, Mutex};

use crate::error::{GpuError, Result};
#[cfg(doc)]
use crate::plan::{ADAPTER_CLASS_ENV, MATMUL_KERNEL_ENV, WINOGRAD_ENV};
use crate::plan::{
    AdapterClass, KernelPlan, MatmulKernel, choose_class, matmul_kernel_from_env, winograd_from_env,
};
use crate::pool::{BufferPool, PoolStats};

/// Optional features fovea uses when the adapter has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `shader-f16`: f16 storage (and arithmetic) in shaders.
    pub shader_f16: bool,
    /// Subgroup operations.
    pub subgroups: bool,
    /// Timestamp queries at pass boundaries (per-op GPU profiling).
    pub timestamps: bool,
    /// Timestamp writes inside compute passes.
    pub timestamps_inside_passes: bool,
    /// Cooperative-matrix (tensor-core style) WGSL extension; Vulkan and Metal only.
    pub cooperative_matrix: bool,
}

impl Capabilities {
    fn from_features(f: wgpu::Features) -> Self {
        Capabilities {
            shader_f16: f.contains(wgpu::Features::SHADER_F16),
            subgroups: f.contains(wgpu::Features::SUBGROUP),
            timestamps: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamps_inside_passes: f.contains(
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            ),
            cooperative_matrix: f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
        }
    }

    fn features(self) -> wgpu::Features {
        let mut f = wgpu::Features::empty();
        if self.shader_f16 {
            f |= wgpu::Features::SHADER_F16;
        }
        if self.subgroups {
            f |= wgpu::Features::SUBGROUP;
        }
        if self.timestamps {
            f |= wgpu::Features::TIMESTAMP_QUERY;
        }
        if self.timestamps_inside_passes {
            f |= wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        }
        if self.cooperative_matrix {
            f |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        f
    }
}

/// The minimum limits fovea's kernels need; every WebGPU adapter meets them (they are
/// WebGPU's defaults or below). Larger values are requested when the adapter has them.
/// Ops that need more (e.g. attention with head_dim 160 needs 20.3 KiB of workgroup
/// memory) check at dispatch time and name the limit.
pub const REQUIRED_LIMITS: &[(&str, u64)] = &[
    ("max_storage_buffers_per_shader_stage", 8),
    ("max_compute_workgroup_storage_size", 16384),
    ("max_compute_invocations_per_workgroup", 256),
    ("max_compute_workgroup_size_x", 256),
    ("max_compute_workgroup_size_y", 16),
    ("max_compute_workgroups_per_dimension", 65535),
    ("max_storage_buffer_binding_size", 128 << 20),
];

fn limit_value(limits: &wgpu::Limits, name: &str) -> u64 {
    match name {
        "max_storage_buffers_per_shader_stage" => {
            limits.max_storage_buffers_per_shader_stage as u64
        }
        "max_compute_workgroup_storage_size" => limits.max_compute_workgroup_storage_size as u64,
        "max_compute_invocations_per_workgroup" => {
            limits.max_compute_invocations_per_workgroup as u64
        }
        "max_compute_workgroup_size_x" => limits.max_compute_workgroup_size_x as u64,
        "max_compute_workgroup_size_y" => limits.max_compute_workgroup_size_y as u64,
        "max_compute_workgroups_per_dimension" => {
            limits.max_compute_workgroups_per_dimension as u64
        }
        "max_storage_buffer_binding_size" => limits.max_storage_buffer_binding_size,
        other => unreachable!("unknown limit {other}"),
    }
}

/// Checks an adapter's limits against [`REQUIRED_LIMITS`].
pub fn check_limits(adapter_name: &str, limits: &wgpu::Limits) -> Result<()> {
    for (name, required) in REQUIRED_LIMITS {
        let available = limit_value(limits, name);
        if available < *required {
            return Err(GpuError::AdapterLimit {
                adapter: adapter_name.to_string(),
                limit: name,
                available,
                required: *required,
            });
        }
    }
    Ok(())
}

/// What `fovea info` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    /// wgpu's adapter info (name, backend, device type, driver).
    pub info: wgpu::AdapterInfo,
    /// The features fovea cares about.
    pub capabilities: Capabilities,
    /// The adapter's limits.
    pub limits: wgpu::Limits,
    /// `Ok` when the adapter meets [`REQUIRED_LIMITS`].
    pub usable: std::result::Result<(), String>,
    /// The kernel plan a device on this adapter gets (class forced by
    /// [`ADAPTER_CLASS_ENV`] when set).
    pub plan: KernelPlan,
    /// Whether the class was forced rather than detected.
    pub class_forced: bool,
}

impl AdapterReport {
    /// Class (detected or forced), chosen kernel variants, driver and driver info, in
    /// one line for `fovea info`.
    pub fn describe(&self) -> String {
        describe(&self.plan, self.class_forced, &self.info)
    }
}

fn describe(plan: &KernelPlan, forced: bool, info: &wgpu::AdapterInfo) -> String {
    format!(
        "{}{}; driver {} ({})",
        plan.describe(),
        if forced { " (forced)" } else { "" },
        info.driver,
        info.driver_info
    )
}

fn instance_with(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Lists every adapter wgpu can see on the backends allowed by `WGPU_BACKEND`
/// (all of them when unset). Native only: browsers expose one adapter at a time.
#[cfg(not(target_arch = "wasm32"))]
pub fn list_adapters() -> Vec<AdapterReport> {
    let inst = instance();
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    pollster_block_on(inst.enumerate_adapters(backends))
        .into_iter()
        .map(|a| {
            let info = a.get_info();
            let limits = a.limits();
            let usable = check_limits(&info.name, &limits).map_err(|e| e.to_string());
            let capabilities = Capabilities::from_features(a.features());
            let (class, class_forced) = choose_class(None, &info, capabilities);
            let mut plan = KernelPlan::new(class, capabilities, &info);
            if let Some(kernel) = matmul_kernel_from_env() {
                plan = plan.with_matmul_kernel(kernel);
            }
            if let Some(on) = winograd_from_env() {
                plan = plan.with_winograd(on);
            }
            AdapterReport {
                plan,
                class_forced,
                capabilities,
                info,
                limits,
                usable,
            }
        })
        .collect()
}

/// A tiny executor for the few wgpu futures that resolve immediately natively.
#[cfg(not(target_arch = "wasm32"))]
fn pollster_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// How to pick and open a device.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Prefer a discrete/high-performance adapter.
    pub power_preference: wgpu::PowerPreference,
    /// Request f16 when the adapter has it (set false to force the f32 path).
    pub allow_f16: bool,
    /// Request timestamp queries when available, for per-op profiling.
    pub allow_timestamps: bool,
    /// Request cooperative matrix when available (experimental in wgpu).
    pub allow_cooperative_matrix: bool,
    /// Request subgroup operations when available (set false to test the kernel
    /// variants that adapters without them run).
    pub allow_subgroups: bool,
    /// Cap fovea's storage-binding and buffer sizes below the adapter's, to behave as a
    /// smaller adapter would (e.g. the 128 MiB WebGPU default); `None` uses the adapter's.
    pub max_binding_bytes: Option<u64>,
    /// Force an adapter class (and so its kernel variants) instead of detecting it;
    /// `None` reads [`ADAPTER_CLASS_ENV`], then detects. Tests force each class.
    pub adapter_class: Option<AdapterClass>,
    /// Force the matmul/conv2d kernel family (and attention's where the family has
    /// one: query-per-lane with cpu-subgroup, blocked with cpu-blocked) instead of the
    /// plan's; `None` reads
    /// [`MATMUL_KERNEL_ENV`], then keeps the plan's. `cpu-subgroup` needs subgroups of
    /// exactly 8 lanes (device creation fails otherwise). Tests force each family.
    pub matmul_kernel: Option<MatmulKernel>,
    /// Force Winograd 3x3 convolutions on or off (on takes effect with the cpu-subgroup
    /// family only); `None` reads [`WINOGRAD_ENV`], then keeps the plan's (for
    /// comparisons).
    pub winograd: Option<bool>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            allow_f16: true,
            allow_timestamps: true,
            allow_cooperative_matrix: true,
            allow_subgroups: true,
            max_binding_bytes: None,
            adapter_class: None,
            matmul_kernel: None,
            winograd: None,
        }
    }
}

pub(crate) struct GpuInner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) caps: Capabilities,
    pub(crate) plan: KernelPlan,
    pub(crate) class_forced: bool,
    pub(crate) limits: wgpu::Limits,
    pub(crate) pipelines: Mutex<crate::pipeline::Pipelines>,
    /// Notified whenever a pipeline's compilation ends.
    pub(crate) pipeline_done: std::sync::Condvar,
    pub(crate) pool: Arc<Mutex<BufferPool>>,
    /// Errors wgpu raised outside any error scope, drained by [`Gpu::take_error`].
    pub(crate) uncaptured: Arc<Mutex<Vec<String>>>,
    pub(crate) lost: Arc<Mutex<Option<String>>>,
    /// A 16-byte storage buffer bound where a kernel's optional input is absent.
    pub(crate) dummy: wgpu::Buffer,
}

/// The engine's handle on one GPU device. Cheap to clone; all clones share the
/// pipeline cache and the buffer pool.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .field("caps", &self.inner.caps)
            .field("plan", &self.inner.plan)
            .finish()
    }
}

impl Gpu {
    /// Opens the preferred adapter on the backends allowed by `WGPU_BACKEND`.
    pub async fn new(options: GpuOptions) -> Result<Gpu> {
        let request = wgpu::RequestAdapterOptions {
            power_preference: options.power_preference,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        };
        // Without WGPU_BACKEND, try the primary backends (Vulkan, Metal, DX12, WebGPU)
        // first and fall back to GL only when none has an adapter: probing GL when it
        // is not needed costs time and logs driver noise.
        let adapter = match wgpu::Backends::from_env() {
            Some(_) => instance().request_adapter(&request).await,
            None => match instance_with(wgpu::Backends::PRIMARY)
                .request_adapter(&request)
                .await
            {
                Ok(a) => Ok(a),
                Err(_) => instance().request_adapter(&request).await,
            },
        }
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        Self::from_adapter(adapter, options).await
    }

    /// Opens a device on a specific adapter.
    pub async fn from_adapter(adapter: wgpu::Adapter, options: GpuOptions) -> Result<Gpu> {
        let info = adapter.get_info();
        let adapter_limits = adapter.limits();
        check_limits(&info.name, &adapter_limits)?;
        let mut caps = Capabilities::from_features(adapter.features());
        caps.shader_f16 &= options.allow_f16;
        caps.timestamps &= options.allow_timestamps;
        caps.timestamps_inside_passes &= options.allow_timestamps;
        caps.cooperative_matrix &= options.allow_cooperative_matrix;
        caps.subgroups &= options.allow_subgroups;
        let experimental = if caps.cooperative_matrix {
            // SAFETY: cooperative matrix is only used by kernels validated by
            // `cargo xtask shaders`; wgpu requires the explicit opt-in.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("fovea"),
                required_features: caps.features(),
                // Take everything the adapter offers: large models need large bindings.
                required_limits: adapter_limits.clone(),
                experimental_features: experimental,
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| GpuError::DeviceRequest {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;

        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("wgpu: {e}");
            sink.lock().unwrap().push(e.to_string());
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost_sink.lock().unwrap() = Some(if message.is_empty() {
                format!("{reason:?}")
            } else {
                format!("{reason:?}: {message}")
            });
        });
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("fovea.dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let mut limits = device.limits();
        if let Some(cap) = options.max_binding_bytes {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
            limits.max_buffer_size = limits.max_buffer_size.min(cap);
        }
        let (class, class_forced) = choose_class(options.adapter_class, &info, caps);
        let mut plan = KernelPlan::new(class, caps, &info);
        if let Some(kernel) = options.matmul_kernel.or_else(matmul_kernel_from_env) {
            let eight_lanes =
                caps.subgroups && info.subgroup_min_size == 8 && info.subgroup_max_size == 8;
            if kernel == MatmulKernel::CpuSubgroup && !eight_lanes {
                return Err(GpuError::DeviceRequest {
                    adapter: info.name.clone(),
                    message: format!(
                        "matmul kernel `{}` needs subgroups of exactly 8 lanes; this adapter's are {}..{}{}",
                        kernel.name(),
                        info.subgroup_min_size,
                        info.subgroup_max_size,
                        if caps.subgroups {
                            ""
                        } else {
                            " (subgroups not enabled)"
                        }
                    ),
                });
            }
            plan = plan.with_matmul_kernel(kernel);
        }
        if let Some(on) = options.winograd.or_else(winograd_from_env) {
            plan = plan.with_winograd(on);
        }
        log::info!("{}: {}", info.name, plan.describe());
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                device,
                queue,
                info,
                caps,
                plan,
                class_forced,
                limits,
                pipelines: Mutex::new(Default::default()),
                pipeline_done: std::sync::Condvar::new(),
                pool: Arc::new(Mutex::new(BufferPool::default())),
                uncaptured,
                lost,
                dummy,
            }),
        })
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// Adapter name, backend, device type, driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The optional features this device was opened with.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.caps
    }

    /// The kernel variants this device runs (from its adapter class).
    pub fn kernel_plan(&self) -> KernelPlan {
        self.inner.plan
    }

    /// The adapter class the kernels were chosen for.
    pub fn adapter_class(&self) -> AdapterClass {
        self.inner.plan.class
    }

    /// Class, whether it was forced, driver and driver info (Mesa's version lives there)
    /// and the chosen kernel variants, in one line.
    pub fn describe(&self) -> String {
        describe(&self.inner.plan, self.inner.class_forced, &self.inner.info)
    }

    /// The device's limits.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// Buffer pool statistics (bytes in use, high-water mark, ...).
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.lock().unwrap().stats()
    }

    /// Releases pooled buffers that no tensor holds.
    pub fn trim_pool(&self) {
        self.inner.pool.lock().unwrap().trim();
    }

    /// Resets the pool's high-water mark to the bytes in use now.
    pub fn reset_peak(&self) {
        self.inner.pool.lock().unwrap().reset_peak();
    }

    /// Returns (and clears) the first error wgpu raised outside an error scope, or
    /// the device-lost reason.
    pub fn take_error(&self, context: &str) -> Result<()> {
        if let Some(reason) = self.inner.lost.lock().unwrap().clone() {
            return Err(GpuError::DeviceLost(reason));
        }
        let mut errors = self.inner.uncaptured.lock().unwrap();
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.join("\n");
        errors.clear();
        Err(GpuError::Wgpu {
            context: context.to_string(),
            message,
        })
    }

    /// Checks that `bytes` fits one storage binding and one buffer on this device.
    pub(crate) fn check_binding_size(
        &self,
        op: &'static str,
        what: &str,
        bytes: u64,
    ) -> Result<()> {
        let l = &self.inner.limits;
        if bytes > l.max_storage_buffer_binding_size {
            return Err(GpuError::Limit {
                op,
                what: what.to_string(),
                limit: "max_storage_buffer_binding_size",
                requested: bytes,
                available: l.max_storage_buffer_binding_size,
            });
        }
        if bytes > l.max_buffer_size {
            return Err(GpuError::Limit {
                op,
                what: what.to_string(),
                limit: "max_buffer_size",
                requested: bytes,
                available: l.max_buffer_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webgpu_default_limits_are_enough() {
        check_limits("defaults", &wgpu::Limits::default()).unwrap();
    }

    #[test]
    fn a_short_limit_is_named_with_both_values() {
        let limits = wgpu::Limits {
            max_compute_workgroup_storage_size: 8192,
            ..Default::default()
        };
        let e = check_limits("tiny adapter", &limits).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("tiny adapter")
                && msg.contains("max_compute_workgroup_storage_size")
                && msg.contains("8192")
                && msg.contains("16384"),
            "{msg}"
        );
    }
}
