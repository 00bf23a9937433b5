//! fovea's diffusion pipeline: the samplers ([`scheduler`], matched step for step with
//! diffusers), the platform-independent noise generator ([`rng`]) and Stable Diffusion
//! text-to-image and image-to-image from a diffusers folder ([`sd`]), with tiled VAE
//! passes ([`tiling`]).

#[cfg(feature = "image")]
pub mod image_io;
pub mod metrics;
pub mod prune;
pub mod rng;
pub mod scheduler;
pub mod sd;
pub mod tiling;

pub use fovea_models::{AttentionKind, LayerInfo, MemoryFolder, PruneStats};
pub use prune::{DEFAULT_DETAIL_WORDS, PrunePolicy, SkipMode};
pub use rng::NoiseRng;
pub use scheduler::{Prediction, Scheduler, SchedulerError, SchedulerKind, StepPlan};
pub use sd::{
    GenerateParams, Image, Img2ImgNoise, PipelineError, PruneReport, StableDiffusion, StepInfo,
    Timings, unet_binding_bytes,
};
