//! Model loading errors: each names the file, the config field or the tensor key, and
//! what was expected.

/// Result alias for model loading.
pub type Result<T> = std::result::Result<T, ModelError>;

/// What can go wrong while reading a diffusers folder.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file or folder could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
    /// A config.json is not valid JSON or has a field of the wrong type.
    #[error("{path}: {message}")]
    Config {
        /// The config file.
        path: String,
        /// serde's message (names the field, line and column).
        message: String,
    },
    /// A config field asks for something fovea does not implement.
    #[error("{path}: `{field}` = {value} is not supported (supported: {supported})")]
    Unsupported {
        /// The config file.
        path: String,
        /// The field.
        field: String,
        /// Its value.
        value: String,
        /// What fovea accepts.
        supported: String,
    },
    /// A safetensors file is malformed (header, offsets, dtype, truncation).
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: String,
        /// What the parser found.
        message: String,
    },
    /// A tensor the model needs is absent from every weight file.
    #[error("tensor `{key}` is missing from {files}")]
    MissingTensor {
        /// Diffusers key path.
        key: String,
        /// The files searched.
        files: String,
    },
    /// A tensor has an unexpected shape.
    #[error("tensor `{key}` in {path} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// Diffusers key path.
        key: String,
        /// The file it came from.
        path: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Found shape.
        found: Vec<usize>,
    },
    /// The GPU runtime refused an operation (shape, limit, device).
    #[error(transparent)]
    Gpu(#[from] fovea_gpu::GpuError),
    /// A tensor has a dtype fovea cannot convert.
    #[error("tensor `{key}` in {path} has dtype {dtype}; fovea reads F32, F16 and BF16")]
    TensorDtype {
        /// Diffusers key path.
        key: String,
        /// The file it came from.
        path: String,
        /// The stored dtype.
        dtype: String,
    },
}

impl ModelError {
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> ModelError {
        ModelError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}
