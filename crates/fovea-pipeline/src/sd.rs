//! Stable Diffusion text-to-image from a diffusers folder: prompt -> tokenizer -> CLIP
//! text encoder -> scheduler loop (UNet with classifier-free guidance) -> VAE decode ->
//! RGBA pixels. Follows diffusers' `StableDiffusionPipeline.__call__`; each denoising
//! step is one batch submitted to the GPU, with the scheduler's update applied on the
//! GPU from its [`StepPlan`](crate::StepPlan) coefficients (no readback in the loop).

use fovea_gpu::{Batch, BinaryOp, DType, Gpu, Tensor};
use fovea_models::config::SchedulerConfig;
use fovea_models::{ClipTextModel, ClipTokenizer, UNet, Vae};

use crate::rng::NoiseRng;
use crate::scheduler::{Scheduler, SchedulerKind};

/// Pipeline errors: a parameter, a model problem, or the GPU.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A generation parameter is invalid.
    #[error("`{param}` = {value} is invalid: {expected}")]
    Param {
        /// Parameter name (as the CLI spells it).
        param: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        expected: String,
    },
    /// Loading or running a model failed.
    #[error(transparent)]
    Model(#[from] fovea_models::ModelError),
    /// A scheduler setting is invalid.
    #[error(transparent)]
    Scheduler(#[from] crate::scheduler::SchedulerError),
    /// The GPU runtime refused an operation.
    #[error(transparent)]
    Gpu(#[from] fovea_gpu::GpuError),
    /// The step callback asked to stop.
    #[error("cancelled after step {0}")]
    Cancelled(usize),
}

fn param(
    param: &'static str,
    value: impl std::fmt::Display,
    expected: impl Into<String>,
) -> PipelineError {
    PipelineError::Param {
        param,
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// The prompt.
    pub prompt: String,
    /// What to steer away from (used when `cfg` > 1).
    pub negative_prompt: String,
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale; 1 or less disables guidance.
    pub cfg: f32,
    /// Seed of the noise stream (see [`NoiseRng`]).
    pub seed: u64,
    /// Image width in pixels (a multiple of the model's pixel granularity).
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Sampler; `None` uses the folder's scheduler class.
    pub scheduler: Option<SchedulerKind>,
    /// CLIP layers to skip from the end (0 = last layer).
    pub clip_skip: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 20,
            cfg: 7.5,
            seed: 0,
            width: 512,
            height: 512,
            scheduler: None,
            clip_skip: 0,
        }
    }
}

/// A progress report from the denoising loop.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// Steps done (1-based).
    pub step: usize,
    /// Steps in all.
    pub total: usize,
    /// The timestep just denoised.
    pub timestep: f64,
}

/// A generated image.
#[derive(Clone, Debug)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// RGBA8, row-major.
    pub rgba: Vec<u8>,
    /// Wall time per stage, GPU work included.
    pub timings: Timings,
}

/// Wall time of each stage of a generation, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Tokenizer and text encoder.
    pub text_ms: f64,
    /// The denoising loop.
    pub denoise_ms: f64,
    /// VAE decode and readback.
    pub decode_ms: f64,
    /// Steps run.
    pub steps: usize,
}

/// A loaded Stable Diffusion pipeline.
pub struct StableDiffusion {
    gpu: Gpu,
    dtype: DType,
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    unet: UNet,
    vae: Vae,
    scheduler_config: SchedulerConfig,
}

impl StableDiffusion {
    /// Loads a diffusers folder (`tokenizer/`, `text_encoder/`, `unet/`, `vae/`,
    /// `scheduler/`), uploading weights in `dtype`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(
        gpu: &Gpu,
        dir: &std::path::Path,
        dtype: DType,
    ) -> Result<StableDiffusion, PipelineError> {
        if !dir.is_dir() {
            return Err(fovea_models::ModelError::Io {
                path: dir.display().to_string(),
                message: "not a diffusers model folder (no such directory)".into(),
            }
            .into());
        }
        let text_encoder = ClipTextModel::load(gpu, &dir.join("text_encoder"), dtype)?;
        let tokenizer = ClipTokenizer::from_dir(
            &dir.join("tokenizer"),
            text_encoder.config().max_position_embeddings,
        )?;
        let unet = UNet::load(gpu, &dir.join("unet"), dtype)?;
        let vae = Vae::load(gpu, &dir.join("vae"), dtype)?;
        let sched_path = dir.join("scheduler").join("scheduler_config.json");
        let scheduler_config: SchedulerConfig = fovea_models::config::read_json(&sched_path)?;
        scheduler_config.validate(&sched_path)?;
        if text_encoder.config().hidden_size != unet.config().cross_attention_dim {
            return Err(param(
                "model",
                dir.display(),
                format!(
                    "a text encoder width ({}) equal to the UNet's cross_attention_dim ({})",
                    text_encoder.config().hidden_size,
                    unet.config().cross_attention_dim
                ),
            ));
        }
        Ok(StableDiffusion {
            gpu: gpu.clone(),
            dtype,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
        })
    }

    /// Image pixels per latent pixel.
    pub fn vae_scale(&self) -> usize {
        self.vae.config().downscale()
    }

    /// The pixel size both sides must be a multiple of: the VAE's scale times the UNet's
    /// downsampling.
    pub fn granularity(&self) -> usize {
        self.vae_scale() << (self.unet.config().block_out_channels.len() - 1)
    }

    /// The model's native image size.
    pub fn native_size(&self) -> usize {
        self.unet.config().sample_size.unwrap_or(64) * self.vae_scale()
    }

    /// The sampler the folder was saved with, when fovea has it.
    pub fn default_scheduler(&self) -> Option<SchedulerKind> {
        self.scheduler_config
            .class_name
            .as_deref()
            .and_then(|c| SchedulerKind::parse(c).ok())
    }

    fn validate(&self, p: &GenerateParams) -> Result<(SchedulerKind, usize, usize), PipelineError> {
        let g = self.granularity();
        for (name, v) in [("width", p.width), ("height", p.height)] {
            if v == 0 || v % g != 0 {
                return Err(param(
                    name,
                    v,
                    format!("a positive multiple of {g} for this model"),
                ));
            }
        }
        if p.steps == 0 {
            return Err(param("steps", 0, "at least 1"));
        }
        if !p.cfg.is_finite() || p.cfg < 0.0 {
            return Err(param("cfg", p.cfg, "a finite number >= 0"));
        }
        let kind = match p.scheduler.or(self.default_scheduler()) {
            Some(k) => k,
            None => SchedulerKind::Euler,
        };
        Ok((
            kind,
            p.height / self.vae_scale(),
            p.width / self.vae_scale(),
        ))
    }

    /// Generates an image from text; `latents` replaces the seeded initial noise (it must
    /// be (1, latent_channels, h/8, w/8) standard normals). `on_step` is called after each
    /// step and may return `false` to cancel.
    pub async fn txt2img(
        &self,
        p: &GenerateParams,
        latents: Option<&[f32]>,
        on_step: &mut dyn FnMut(StepInfo) -> bool,
    ) -> Result<Image, PipelineError> {
        let (kind, lh, lw) = self.validate(p)?;
        let gpu = &self.gpu;
        let guided = p.cfg > 1.0;
        let lc = self.unet.config().in_channels;
        // 1. prompt embeddings, [negative, positive] when guided
        let mut ids = Vec::new();
        if guided {
            ids.push(self.tokenizer.encode(&p.negative_prompt)?);
        }
        ids.push(self.tokenizer.encode(&p.prompt)?);
        let started = web_time::Instant::now();
        let mut b = gpu.batch();
        let context = self
            .text_encoder
            .forward(&mut b, &ids, p.clip_skip)?
            .embedding;
        b.submit()?;
        gpu.wait_idle().await?;
        let mut timings = Timings {
            text_ms: ms(started),
            steps: p.steps,
            ..Default::default()
        };
        let started = web_time::Instant::now();
        // 2. initial latents, scaled by the scheduler's init_noise_sigma
        let sched = Scheduler::new(kind, &self.scheduler_config, p.steps)?;
        let n = lc * lh * lw;
        let mut rng = NoiseRng::new(p.seed);
        let init = match latents {
            Some(l) if l.len() == n => l.to_vec(),
            Some(l) => {
                return Err(param(
                    "latents",
                    format!("{} values", l.len()),
                    format!("{n} values (1, {lc}, {lh}, {lw})"),
                ));
            }
            None => rng.normals(n),
        };
        let mut sample = gpu.upload_f32("latents", &[1, lc, lh, lw], self.dtype, &init)?;
        let mut b = gpu.batch();
        sample = b.scale(&sample, sched.init_noise_sigma() as f32, 0.0)?;
        b.submit()?;
        // 3. denoising loop
        let mut prev_denoised: Option<Tensor> = None;
        let timesteps = sched.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let plan = sched.plan(i);
            if plan.denoised.clip.is_some() {
                return Err(param(
                    "clip_sample",
                    "true",
                    "false (fovea's GPU sampler does not clip)",
                ));
            }
            let noise = if plan.noise != 0.0 {
                Some(gpu.upload_f32("noise", &[1, lc, lh, lw], self.dtype, &rng.normals(n))?)
            } else {
                None
            };
            let batch = if guided { 2 } else { 1 };
            let ts = gpu.upload_f32("timesteps", &[batch], DType::F32, &vec![t as f32; batch])?;
            let mut b = gpu.batch();
            let x_in = b.scale(&sample, sched.input_scale(i) as f32, 0.0)?;
            let model_in = if guided {
                duplicate(&mut b, &x_in)?
            } else {
                x_in
            };
            let out = self.unet.forward(&mut b, &model_in, &ts, &context)?;
            let model_out = if guided {
                guidance(&mut b, &out, p.cfg)?
            } else {
                out
            };
            // denoised = a * sample + b * model_out; next = c * sample + d * denoised + e * prev + f * noise
            let denoised = lin(
                &mut b,
                &sample,
                plan.denoised.sample,
                &model_out,
                plan.denoised.model,
            )?;
            let mut next = lin(&mut b, &sample, plan.sample, &denoised, plan.denoised_coef)?;
            if let (Some(prev), true) = (&prev_denoised, plan.prev_denoised != 0.0) {
                next = b.binary(&next, prev, BinaryOp::Add, plan.prev_denoised as f32)?;
            }
            if let Some(z) = &noise {
                next = b.binary(&next, z, BinaryOp::Add, plan.noise as f32)?;
            }
            b.submit()?;
            sample = next;
            prev_denoised = Some(denoised);
            gpu.wait_idle().await?;
            if !on_step(StepInfo {
                step: i + 1,
                total: timesteps.len(),
                timestep: t,
            }) {
                return Err(PipelineError::Cancelled(i + 1));
            }
        }
        timings.denoise_ms = ms(started);
        // 4. VAE decode of latents / scaling_factor, then to RGBA8
        let started = web_time::Instant::now();
        let mut b = gpu.batch();
        let z = b.scale(
            &sample,
            (1.0 / self.vae.config().scaling_factor) as f32,
            0.0,
        )?;
        let image = self.vae.decode(&mut b, &z)?;
        b.submit()?;
        let pixels = gpu.read_f32(&image).await?;
        timings.decode_ms = ms(started);
        Ok(to_rgba(&pixels, p.width, p.height, timings))
    }
}

/// alpha * x + beta * y.
fn lin(
    b: &mut Batch,
    x: &Tensor,
    alpha: f64,
    y: &Tensor,
    beta: f64,
) -> Result<Tensor, PipelineError> {
    let ax = b.scale(x, alpha as f32, 0.0)?;
    Ok(b.binary(&ax, y, BinaryOp::Add, beta as f32)?)
}

/// (1, C, H, W) -> (2, C, H, W), the same latents for the unconditional and the
/// conditional pass.
fn duplicate(b: &mut Batch, x: &Tensor) -> Result<Tensor, PipelineError> {
    let s = x.shape().to_vec();
    let flat = x.reshape(&[1, 1, x.len()])?;
    Ok(b.concat_channels(&[&flat, &flat])?
        .reshape(&[2, s[1], s[2], s[3]])?)
}

/// uncond + g (cond - uncond) = (1 - g) uncond + g cond, from the (2, C, H, W) output.
fn guidance(b: &mut Batch, out: &Tensor, g: f32) -> Result<Tensor, PipelineError> {
    let s = out.shape().to_vec();
    let n = out.len() / 2;
    let pair = out.reshape(&[1, 2, n])?;
    let uncond = b.slice_channels(&pair, 0, 1)?;
    let cond = b.slice_channels(&pair, 1, 1)?;
    let mixed = lin(b, &uncond, (1.0 - g) as f64, &cond, g as f64)?;
    Ok(mixed.reshape(&[1, s[1], s[2], s[3]])?)
}

/// (1, 3, H, W) in [-1, 1] -> RGBA8 as diffusers' postprocess: (x / 2 + 0.5) clamped.
fn to_rgba(chw: &[f32], width: usize, height: usize, timings: Timings) -> Image {
    let plane = width * height;
    let mut rgba = vec![255u8; plane * 4];
    for i in 0..plane {
        for c in 0..3 {
            let v = (chw[c * plane + i] / 2.0 + 0.5).clamp(0.0, 1.0);
            rgba[i * 4 + c] = (v * 255.0).round() as u8;
        }
    }
    Image {
        width,
        height,
        rgba,
        timings,
    }
}

fn ms(since: web_time::Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
