//! Compute pipelines cached by (kernel variant, entry point). Each pipeline and its
//! shader module are labelled with the variant's label, so validation errors and GPU
//! captures name the op.
//!
//! Creating a pipeline is the bulk of a process's fixed cost on software adapters:
//! lavapipe translates and optimises every shader on `vkCreateComputePipelines` (its
//! disk cache keeps only the machine code, and it ignores pipeline caches), about 0.55 s
//! for the default model's 18 pipelines on one core of this project's machine. So a
//! caller that knows which pipelines a run will need (the labels the last run used,
//! [`Gpu::used_pipeline_labels`]) can have them compiled on background threads
//! ([`Gpu::warm_pipelines`]) while it loads weights and records work; an op that needs
//! a pipeline being compiled there waits for it instead of compiling it again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use fovea_shaders::{Dtype, Variant};

use crate::context::Gpu;
use crate::error::{GpuError, Result};

/// Cache key: the kernel variant (kernel, dtype, defines) and the entry point.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    /// Kernel variant.
    pub variant: Variant,
    /// Entry point in the kernel's module.
    pub entry: &'static str,
}

impl PipelineKey {
    /// `kernel:dtype[:defines]/entry`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.variant.label(), self.entry)
    }

    /// The key a [`label`](Self::label) names, or `None` when it names no kernel, dtype,
    /// declared define set or entry point of this build.
    pub fn from_label(label: &str) -> Option<PipelineKey> {
        let (variant, entry) = label.rsplit_once('/')?;
        let mut parts = variant.splitn(3, ':');
        let kernel = parts.next()?;
        let dtype_name = parts.next()?;
        let dtype = Dtype::ALL
            .into_iter()
            .find(|d| d.to_string() == dtype_name)?;
        let mut defines = Vec::new();
        if let Some(list) = parts.next() {
            for pair in list.split(',') {
                let (name, value) = pair.split_once('=')?;
                defines.push((name, value.parse::<u32>().ok()?));
            }
        }
        let variant = Variant::new(kernel, dtype, &defines).ok()?;
        let entry = *variant
            .kernel()
            .entry_points
            .iter()
            .find(|e| **e == entry)?;
        Some(PipelineKey { variant, entry })
    }
}

/// A compiled pipeline and the layout of its bind group 0.
pub struct CachedPipeline {
    /// The pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Layout of group 0 (auto-derived from the shader).
    pub layout: wgpu::BindGroupLayout,
    /// Label (see [`PipelineKey::label`]).
    pub label: String,
}

/// The device's pipelines: compiled, being compiled, and the order the engine first
/// asked for them in.
#[derive(Default)]
pub(crate) struct Pipelines {
    ready: HashMap<PipelineKey, Arc<CachedPipeline>>,
    compiling: HashSet<PipelineKey>,
    used: Vec<PipelineKey>,
    /// Milliseconds each pipeline took to create, on whichever thread compiled it.
    cost_ms: HashMap<PipelineKey, f64>,
}

/// Marks a key as being compiled until dropped (also on a panic), then wakes the
/// threads waiting for it.
struct Compiling<'a> {
    gpu: &'a Gpu,
    key: &'a PipelineKey,
}

impl Drop for Compiling<'_> {
    fn drop(&mut self) {
        let mut p = self.gpu.inner.pipelines.lock().unwrap();
        p.compiling.remove(self.key);
        drop(p);
        self.gpu.inner.pipeline_done.notify_all();
    }
}

impl Gpu {
    /// Returns the cached pipeline for `key`, compiling it on first use (or waiting for
    /// a background thread that is compiling it).
    pub fn pipeline(&self, key: &PipelineKey) -> Result<Arc<CachedPipeline>> {
        let mut p = self.inner.pipelines.lock().unwrap();
        if !p.used.contains(key) {
            p.used.push(key.clone());
        }
        loop {
            if let Some(ready) = p.ready.get(key) {
                return Ok(ready.clone());
            }
            if !p.compiling.contains(key) {
                break;
            }
            p = self.inner.pipeline_done.wait(p).unwrap();
        }
        p.compiling.insert(key.clone());
        drop(p);
        let _compiling = Compiling { gpu: self, key };
        let (cached, error) = self.create_pipeline(key)?;
        // Natively wgpu reports creation errors synchronously to the uncaptured-error
        // handler; on the web they surface at the next submit.
        if let Some(message) = error {
            return Err(GpuError::Wgpu {
                context: format!("creating pipeline {}", cached.label),
                message,
            });
        }
        self.take_error(&format!("creating pipeline {}", cached.label))?;
        self.inner
            .pipelines
            .lock()
            .unwrap()
            .ready
            .insert(key.clone(), cached.clone());
        Ok(cached)
    }

    /// Compiles `key`'s pipeline. Natively that happens inside error scopes of this
    /// thread, and their errors are returned here, so that one raised on a background
    /// thread is not left for whichever op looks next; on the web errors stay
    /// uncaptured and surface at the next submit.
    fn create_pipeline(&self, key: &PipelineKey) -> Result<(Arc<CachedPipeline>, Option<String>)> {
        let label = key.label();
        let started = clock_now();
        let source = key.variant.source()?;
        let device = &self.inner.device;
        #[cfg(not(target_arch = "wasm32"))]
        let scopes = [
            wgpu::ErrorFilter::Validation,
            wgpu::ErrorFilter::Internal,
            wgpu::ErrorFilter::OutOfMemory,
        ]
        .map(|filter| device.push_error_scope(filter));
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        #[cfg(not(target_arch = "wasm32"))]
        let error = {
            // Popped innermost first; each future is ready at once natively.
            let [validation, internal, memory] = scopes;
            let errors: Vec<String> = [memory, internal, validation]
                .into_iter()
                .filter_map(|scope| pollster::block_on(scope.pop()))
                .map(|e| e.to_string())
                .collect();
            (!errors.is_empty()).then(|| errors.join("\n"))
        };
        #[cfg(target_arch = "wasm32")]
        let error = None;
        if let Some(ms) = elapsed_ms(started) {
            self.inner
                .pipelines
                .lock()
                .unwrap()
                .cost_ms
                .insert(key.clone(), ms);
        }
        Ok((
            Arc::new(CachedPipeline {
                pipeline,
                layout,
                label,
            }),
            error,
        ))
    }

    /// Starts compiling the pipelines these labels name (see
    /// [`PipelineKey::label`]) on background threads, one per core (at most four), in
    /// the order given; labels that name nothing in this build, or a dtype this device
    /// lacks, are skipped. Returns how many pipelines were queued. A pipeline that fails
    /// to compile there is left for [`pipeline`](Self::pipeline) to compile and report.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn warm_pipelines<S: AsRef<str>>(&self, labels: &[S]) -> usize {
        let f16 = self.inner.caps.shader_f16;
        let keys: Vec<PipelineKey> = labels
            .iter()
            .filter_map(|l| PipelineKey::from_label(l.as_ref()))
            .filter(|k| f16 || k.variant.dtype != Dtype::F16)
            .collect();
        let queued = keys.len();
        if queued == 0 {
            return 0;
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(queued);
        let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
            keys,
        )));
        for i in 0..threads {
            let gpu = self.clone();
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("fovea-pipelines-{i}"))
                .spawn(move || {
                    loop {
                        let Some(key) = queue.lock().unwrap().pop_front() else {
                            break;
                        };
                        gpu.warm_one(&key);
                    }
                });
            if let Err(e) = spawned {
                log::debug!("no thread to compile pipelines ahead: {e}");
                break;
            }
        }
        queued
    }

    /// Compiles `key` unless it is ready or being compiled; errors are left for the
    /// engine's own request to report.
    #[cfg(not(target_arch = "wasm32"))]
    fn warm_one(&self, key: &PipelineKey) {
        let mut p = self.inner.pipelines.lock().unwrap();
        if p.ready.contains_key(key) || p.compiling.contains(key) {
            return;
        }
        p.compiling.insert(key.clone());
        drop(p);
        let _compiling = Compiling { gpu: self, key };
        match self.create_pipeline(key) {
            Ok((cached, None)) => {
                self.inner
                    .pipelines
                    .lock()
                    .unwrap()
                    .ready
                    .insert(key.clone(), cached);
            }
            Ok((cached, Some(e))) => log::debug!("compiling {} ahead: {e}", cached.label),
            Err(e) => log::debug!("compiling {} ahead: {e}", key.label()),
        }
    }

    /// The pipelines the engine has asked for, in the order it first asked, each with
    /// the milliseconds its creation took (natively; `None` on the web or while it is
    /// still being compiled): what [`warm_pipelines`](Self::warm_pipelines) takes in a
    /// later process.
    pub fn used_pipelines(&self) -> Vec<(String, Option<f64>)> {
        let p = self.inner.pipelines.lock().unwrap();
        p.used
            .iter()
            .map(|k| (k.label(), p.cost_ms.get(k).copied()))
            .collect()
    }

    /// Number of pipelines compiled so far.
    pub fn cached_pipelines(&self) -> usize {
        self.inner.pipelines.lock().unwrap().ready.len()
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn clock_now() -> Option<std::time::Instant> {
    Some(std::time::Instant::now())
}

// No clock on wasm32-unknown-unknown: `Instant::now` panics there.
#[cfg(target_arch = "wasm32")]
fn clock_now() -> Option<std::time::Instant> {
    None
}

fn elapsed_ms(started: Option<std::time::Instant>) -> Option<f64> {
    started.map(|t| t.elapsed().as_secs_f64() * 1e3)
}
