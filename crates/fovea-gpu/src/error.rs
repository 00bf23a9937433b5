//! The runtime's error type. Every error names what failed (op, tensor, limit) and the
//! values involved, so a user can act on it without a debugger.

use crate::DType;

/// Result alias for the GPU runtime.
pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// What can go wrong in the GPU runtime.
/// What to do when no adapter is found, per platform.
#[cfg(not(target_arch = "wasm32"))]
const NO_ADAPTER_HINT: &str =
    "on Linux install a Vulkan driver (e.g. mesa-vulkan-drivers) or set WGPU_BACKEND=gl";
#[cfg(target_arch = "wasm32")]
const NO_ADAPTER_HINT: &str = "this browser offers no WebGPU adapter: use a browser with WebGPU \
     enabled (Chrome/Edge 113+, Safari 26+, Firefox 141+ on Windows) and a supported GPU";

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter could be found for the requested backends.
    #[error("no GPU adapter found ({0}); {hint}", hint = NO_ADAPTER_HINT)]
    NoAdapter(String),
    /// The adapter lacks a limit the engine needs.
    #[error(
        "adapter `{adapter}` offers {limit} = {available}, but fovea needs at least {required}"
    )]
    AdapterLimit {
        /// Adapter name.
        adapter: String,
        /// wgpu limit name.
        limit: &'static str,
        /// What the adapter offers.
        available: u64,
        /// What fovea needs.
        required: u64,
    },
    /// Device creation failed.
    #[error("could not create a device on `{adapter}`: {message}")]
    DeviceRequest {
        /// Adapter name.
        adapter: String,
        /// wgpu's message.
        message: String,
    },
    /// Input shapes do not fit the op.
    #[error("{op}: {message}")]
    Shape {
        /// Op name.
        op: &'static str,
        /// Which shapes and why.
        message: String,
    },
    /// A dtype the op or adapter cannot handle.
    #[error("{op}: dtype {dtype} is not supported here: {reason}")]
    Dtype {
        /// Op name.
        op: &'static str,
        /// The offending dtype.
        dtype: DType,
        /// Why.
        reason: String,
    },
    /// A request exceeds one of the device's limits.
    #[error("{op}: {what} needs {requested}, above the adapter's {limit} of {available}")]
    Limit {
        /// Op name.
        op: &'static str,
        /// What was being sized (e.g. "output buffer (1, 4096, 4096) f32").
        what: String,
        /// wgpu limit name.
        limit: &'static str,
        /// The requested amount.
        requested: u64,
        /// The adapter's limit.
        available: u64,
    },
    /// A parameter is outside its valid range.
    #[error("{op}: parameter `{param}` = {value} is invalid: {expected}")]
    Param {
        /// Op name.
        op: &'static str,
        /// Parameter name.
        param: &'static str,
        /// The given value, formatted.
        value: String,
        /// What is expected.
        expected: String,
    },
    /// The data given to an upload does not match the tensor.
    #[error("upload `{label}`: {message}")]
    Upload {
        /// Tensor label.
        label: String,
        /// What is wrong.
        message: String,
    },
    /// A shader variant could not be instantiated.
    #[error("shader: {0}")]
    Shader(#[from] fovea_shaders::VariantError),
    /// wgpu reported a validation or out-of-memory error.
    #[error("GPU error during {context}: {message}")]
    Wgpu {
        /// What the engine was doing.
        context: String,
        /// wgpu's message.
        message: String,
    },
    /// Mapping a buffer for readback failed.
    #[error("reading back `{label}` failed: {message}")]
    Readback {
        /// What was read.
        label: String,
        /// Why.
        message: String,
    },
    /// The device was lost (driver reset, browser tab backgrounded, ...).
    #[error("the GPU device was lost: {0}; create a new engine to continue")]
    DeviceLost(String),
}
