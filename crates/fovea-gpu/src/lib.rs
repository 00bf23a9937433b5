//! fovea's GPU runtime on wgpu: device setup with feature and limit detection
//! ([`Gpu`]), tensors backed by a pooled allocator that reports its high-water mark
//! ([`Tensor`], [`PoolStats`]), pipelines cached by kernel variant, ops recorded as data
//! into batched command buffers ([`Batch`], [`Dispatch`]), async readback that works
//! natively and on wasm, per-op GPU timestamps, and the kernel library itself: matmul,
//! conv2d, norms, activations, layout ops, timestep embedding and fused attention with
//! per-head entropy and GPU-driven head skipping ([`attention`]).
//!
//! [`reference`](mod@reference) holds float64 CPU implementations of every kernel; tests and
//! `fovea info --self-check` compare against them.

pub mod attention;
mod batch;
mod context;
mod error;
pub mod ops;
mod pipeline;
mod plan;
mod pool;
mod readback;
pub mod reference;
pub mod selfcheck;
mod tensor;

pub use attention::{
    AttentionOptions, AttentionOutput, HeadLayout, HeadList, HeadView, SkippedOutput,
};
pub use batch::{Batch, Bind, Dispatch, OpTiming, Submitted, Workgroups, spread_workgroups};
#[cfg(not(target_arch = "wasm32"))]
pub use context::list_adapters;
pub use context::{AdapterReport, Capabilities, Gpu, GpuOptions, REQUIRED_LIMITS, check_limits};
pub use error::{GpuError, Result};
pub use ops::{Activation, BinaryOp, ConvAdds, MatmulOptions, TimestepOptions, WinogradTile};
pub use pipeline::{CachedPipeline, PipelineKey};
pub use plan::{
    ADAPTER_CLASS_ENV, AdapterClass, KernelPlan, MATMUL_KERNEL_ENV, MatmulKernel, WINOGRAD_ENV,
    WINOGRAD_MIN_CHANNELS, choose_class,
};
pub use pool::{PoolStats, PooledBuffer};
pub use tensor::{DType, Tensor, fmt_shape};
