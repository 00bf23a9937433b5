//! fovea's diffusion pipeline. So far: the samplers ([`scheduler`]), matched step for
//! step against diffusers fixtures. The denoising loop, guidance and image output
//! build on them.

pub mod scheduler;

pub use scheduler::{Prediction, Scheduler, SchedulerError, SchedulerKind, StepPlan};
