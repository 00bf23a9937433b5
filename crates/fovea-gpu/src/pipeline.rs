//! Compute pipelines cached by (kernel variant, entry point). Each pipeline and its
//! shader module are labelled with the variant's label, so validation errors and GPU
//! captures name the op.

use std::sync::Arc;

use fovea_shaders::Variant;

use crate::context::Gpu;
use crate::error::Result;

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

impl Gpu {
    /// Returns the cached pipeline for `key`, compiling it on first use.
    pub fn pipeline(&self, key: &PipelineKey) -> Result<Arc<CachedPipeline>> {
        if let Some(p) = self.inner.pipelines.lock().unwrap().get(key) {
            return Ok(p.clone());
        }
        let label = key.label();
        let source = key.variant.source()?;
        let device = &self.inner.device;
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
        // Natively wgpu reports creation errors synchronously to the uncaptured-error
        // handler; on the web they surface at the next submit.
        self.take_error(&format!("creating pipeline {label}"))?;
        let layout = pipeline.get_bind_group_layout(0);
        let cached = Arc::new(CachedPipeline {
            pipeline,
            layout,
            label,
        });
        self.inner
            .pipelines
            .lock()
            .unwrap()
            .insert(key.clone(), cached.clone());
        Ok(cached)
    }

    /// Number of pipelines compiled so far.
    pub fn cached_pipelines(&self) -> usize {
        self.inner.pipelines.lock().unwrap().len()
    }
}
