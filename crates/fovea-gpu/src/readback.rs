//! Asynchronous readback that works natively (where `Device::poll` drives the map
//! callback) and on wasm (where the browser does, and we await a channel).

use crate::context::Gpu;
use crate::error::{GpuError, Result};
use crate::tensor::{DType, Tensor};

/// Maps `buffer` (MAP_READ) and returns its bytes.
pub(crate) async fn map_read(gpu: &Gpu, buffer: &wgpu::Buffer, label: &str) -> Result<Vec<u8>> {
    let (tx, rx) = futures_channel::oneshot::channel();
    buffer.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    #[cfg(not(target_arch = "wasm32"))]
    gpu.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| GpuError::Readback {
            label: label.to_string(),
            message: e.to_string(),
        })?;
    let mapped = rx.await.map_err(|_| GpuError::Readback {
        label: label.to_string(),
        message: "the map callback was dropped (device lost?)".into(),
    })?;
    gpu.take_error(&format!("reading back {label}"))?;
    mapped.map_err(|e| GpuError::Readback {
        label: label.to_string(),
        message: e.to_string(),
    })?;
    let bytes = buffer
        .get_mapped_range(..)
        .map_err(|e| GpuError::Readback {
            label: label.to_string(),
            message: e.to_string(),
        })?
        .to_vec();
    buffer.unmap();
    Ok(bytes)
}

impl Gpu {
    /// Waits until all submitted work has finished (natively by polling the device, on
    /// the web by awaiting the queue's completion callback). Not a readback: progress
    /// reports use it to know that a step is really done.
    pub async fn wait_idle(&self) -> Result<()> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue().on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Wgpu {
                context: "waiting for the GPU".into(),
                message: e.to_string(),
            })?;
        rx.await.map_err(|_| {
            GpuError::DeviceLost("the queue dropped its completion callback".into())
        })?;
        self.take_error("waiting for the GPU")
    }

    /// Copies a tensor to the host as raw bytes (after all submitted work).
    pub async fn read_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        let size = t.size_bytes().div_ceil(4) * 4;
        let staging = self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("fovea.readback"),
            size: size.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("fovea.readback"),
            });
        if size > 0 {
            encoder.copy_buffer_to_buffer(t.buffer(), 0, &staging, 0, size);
        }
        self.queue().submit([encoder.finish()]);
        let mut bytes = map_read(self, &staging, &t.describe()).await?;
        bytes.truncate(t.size_bytes() as usize);
        Ok(bytes)
    }

    /// Reads a float tensor (f32 or f16) as f32 values.
    pub async fn read_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(t).await?;
        match t.dtype() {
            DType::F32 => Ok(bytemuck::pod_collect_to_vec(&bytes)),
            DType::F16 => Ok(bytemuck::pod_collect_to_vec::<u8, half::f16>(&bytes)
                .into_iter()
                .map(f32::from)
                .collect()),
            DType::U32 => Err(GpuError::Dtype {
                op: "read_f32",
                dtype: DType::U32,
                reason: "use read_u32 for integer tensors".into(),
            }),
        }
    }

    /// Reads a u32 tensor.
    pub async fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        if t.dtype() != DType::U32 {
            return Err(GpuError::Dtype {
                op: "read_u32",
                dtype: t.dtype(),
                reason: "use read_f32 for float tensors".into(),
            });
        }
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(t).await?))
    }
}
