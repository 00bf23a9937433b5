//! Tensors: a shape, a dtype and a pooled storage buffer, always contiguous row-major.
//! Cloning a tensor shares its buffer; `reshape` is free.

use std::sync::Arc;

use crate::context::Gpu;
use crate::error::{GpuError, Result};
use crate::pool::{self, PooledBuffer};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float (needs `shader-f16` for kernels to read it).
    F16,
    /// 32-bit unsigned integer (masks, index lists, dispatch arguments).
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }

    /// The kernel storage dtype for float tensors.
    pub fn storage(self) -> Option<fovea_shaders::Dtype> {
        match self {
            DType::F32 => Some(fovea_shaders::Dtype::F32),
            DType::F16 => Some(fovea_shaders::Dtype::F16),
            DType::U32 => None,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        })
    }
}

/// A GPU tensor.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    buf: Arc<PooledBuffer>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype)
    }
}

/// Formats a shape as `(2, 77, 768)`.
pub fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    if parts.len() == 1 {
        format!("({},)", parts[0])
    } else {
        format!("({})", parts.join(", "))
    }
}

impl Tensor {
    /// Shape, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the data in bytes.
    pub fn size_bytes(&self) -> u64 {
        (self.len() * self.dtype.size_bytes()) as u64
    }

    /// The storage buffer (may be larger than the data).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }

    /// Whether two tensors share storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }

    /// The same data with another shape of equal element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(GpuError::Shape {
                op: "reshape",
                message: format!(
                    "cannot view {} ({} elements) as {} ({} elements)",
                    fmt_shape(&self.shape),
                    self.len(),
                    fmt_shape(shape),
                    n
                ),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype: self.dtype,
            buf: self.buf.clone(),
        })
    }

    /// A view of the first elements of this tensor's storage as `shape` (no more
    /// elements than this tensor has).
    pub(crate) fn prefix_view(&self, shape: &[usize]) -> Tensor {
        debug_assert!(shape.iter().product::<usize>() <= self.len());
        Tensor {
            shape: shape.to_vec(),
            dtype: self.dtype,
            buf: self.buf.clone(),
        }
    }

    /// `shape` and `dtype` as `(1, 4, 64, 64) f16`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", fmt_shape(&self.shape), self.dtype)
    }
}

fn checked_bytes(op: &'static str, shape: &[usize], dtype: DType) -> Result<u64> {
    shape
        .iter()
        .try_fold(dtype.size_bytes() as u64, |acc, &d| {
            acc.checked_mul(d as u64)
        })
        .ok_or_else(|| GpuError::Shape {
            op,
            message: format!("{} {dtype} overflows the address space", fmt_shape(shape)),
        })
}

impl Gpu {
    /// `Err(DeviceLost)` once the device is gone (its lost callback has fired).
    pub(crate) fn fail_if_lost(&self) -> Result<()> {
        match self.inner.lost.lock().unwrap().clone() {
            Some(reason) => Err(GpuError::DeviceLost(reason)),
            None => Ok(()),
        }
    }

    /// `err`, unless the device turns out to be lost: a resource that cannot be made is
    /// most often the first sign of that, and its lost callback runs on the next poll.
    pub(crate) fn lost_or(&self, err: GpuError) -> GpuError {
        let _ = self.inner.device.poll(wgpu::PollType::Poll);
        match self.fail_if_lost() {
            Err(lost) => lost,
            Ok(()) => err,
        }
    }

    fn check_dtype(&self, op: &'static str, dtype: DType) -> Result<()> {
        if dtype == DType::F16 && !self.capabilities().shader_f16 {
            return Err(GpuError::Dtype {
                op,
                dtype,
                reason: format!(
                    "adapter `{}` has no shader-f16 feature; use f32",
                    self.adapter_info().name
                ),
            });
        }
        Ok(())
    }

    /// An uninitialised tensor from the pool. Kernels overwrite it.
    pub fn empty(&self, op: &'static str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.check_dtype(op, dtype)?;
        let bytes = checked_bytes(op, shape, dtype)?;
        self.check_binding_size(op, &format!("tensor {} {dtype}", fmt_shape(shape)), bytes)?;
        let label = format!("{op} {}", fmt_shape(shape));
        let buf = pool::acquire(&self.inner.device, &self.inner.pool, bytes, &label);
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype,
            buf: Arc::new(buf),
        })
    }

    fn upload_bytes(
        &self,
        label: &str,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
    ) -> Result<Tensor> {
        self.check_dtype("upload", dtype)?;
        let expected = checked_bytes("upload", shape, dtype)?;
        if bytes.len() as u64 != expected {
            return Err(GpuError::Upload {
                label: label.to_string(),
                message: format!(
                    "{} {dtype} needs {expected} bytes, got {}",
                    fmt_shape(shape),
                    bytes.len()
                ),
            });
        }
        self.check_binding_size(
            "upload",
            &format!("tensor `{label}` {}", fmt_shape(shape)),
            expected,
        )?;
        self.fail_if_lost()?;
        let buf = pool::create_with_data(&self.inner.device, &self.inner.pool, bytes, label)
            .map_err(|message| {
                self.lost_or(GpuError::Upload {
                    label: label.to_string(),
                    message,
                })
            })?;
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype,
            buf: Arc::new(buf),
        })
    }

    /// Uploads f32 values as a tensor of `dtype` (F32 or F16; F16 rounds to nearest).
    pub fn upload_f32(
        &self,
        label: &str,
        shape: &[usize],
        dtype: DType,
        data: &[f32],
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(GpuError::Upload {
                label: label.to_string(),
                message: format!(
                    "shape {} has {n} elements, data has {}",
                    fmt_shape(shape),
                    data.len()
                ),
            });
        }
        match dtype {
            DType::F32 => self.upload_bytes(label, shape, dtype, bytemuck::cast_slice(data)),
            DType::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
                self.upload_bytes(label, shape, dtype, bytemuck::cast_slice(&h))
            }
            DType::U32 => Err(GpuError::Dtype {
                op: "upload_f32",
                dtype,
                reason: "float data cannot fill a u32 tensor; use upload_u32".into(),
            }),
        }
    }

    /// Uploads raw f16 values.
    pub fn upload_f16(&self, label: &str, shape: &[usize], data: &[half::f16]) -> Result<Tensor> {
        self.upload_bytes(label, shape, DType::F16, bytemuck::cast_slice(data))
    }

    /// Uploads u32 values.
    pub fn upload_u32(&self, label: &str, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        self.upload_bytes(label, shape, DType::U32, bytemuck::cast_slice(data))
    }
}
