//! Stable Diffusion models from diffusers folders: the `config.json` files as serde
//! structs with diffusers' defaults ([`config`]), and safetensors weights looked up by
//! diffusers key paths with errors that name the file, key and shapes ([`weights`]), and
//! CLIP's tokenizer ([`tokenizer`]).
//! The model forward passes (CLIP text encoder, UNet, VAE, TAESD) build on these.

mod blocks;
pub mod clip;
pub mod config;
mod error;
pub mod folder;
pub mod pruning;
pub mod taesd;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

pub use clip::{ClipOutput, ClipTextModel};
pub use config::{ClipTextConfig, PerBlock, SchedulerConfig, TinyVaeConfig, UNetConfig, VaeConfig};
pub use error::{ModelError, Result};
pub use folder::MemoryFolder;
pub use pruning::{AttentionKind, HeadPruning, LayerInfo, PruneStats};
pub use taesd::TinyVae;
pub use tokenizer::ClipTokenizer;
pub use unet::UNet;
pub use vae::Vae;
pub use weights::{WeightView, Weights};
