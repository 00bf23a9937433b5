//! Stable Diffusion text-to-image from a diffusers folder: prompt -> tokenizer -> CLIP
//! text encoder -> scheduler loop (UNet with classifier-free guidance) -> VAE decode ->
//! RGBA pixels. Follows diffusers' `StableDiffusionPipeline.__call__`; each denoising
//! step is one batch submitted to the GPU, with the scheduler's update applied on the
//! GPU from its [`StepPlan`](crate::StepPlan) coefficients (no readback in the loop).

use fovea_gpu::{Batch, BinaryOp, DType, Gpu, Tensor};
use fovea_models::config::SchedulerConfig;
use fovea_models::{
    ClipTextModel, ClipTokenizer, HeadPruning, MemoryFolder, PruneStats, TinyVae, UNet, Vae,
};

use crate::prune::PrunePolicy;
use crate::rng::NoiseRng;
use crate::scheduler::{Scheduler, SchedulerKind};
use crate::tiling::{self, Blender, Tile};

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
    /// The image is too large for the adapter (the message names the need, the limit
    /// and what would fit).
    #[error("{0}")]
    TooLarge(String),
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
    /// img2img: how much of the starting image to replace, in [0, 1] (1 = all).
    pub strength: f64,
    /// Decode (and encode) in tiles of this many pixels a side; `None` tiles only when
    /// one pass would exceed the adapter's limits.
    pub vae_tile: Option<usize>,
    /// Decode with the TAESD decoder (see [`StableDiffusion::load_taesd`]).
    pub taesd: bool,
    /// Attention-head pruning (off by default).
    pub prune: PrunePolicy,
    /// Denoise in overlapping tiles of this many pixels a side when the image is larger
    /// (MultiDiffusion: every step, each tile's model output is computed on its own and
    /// the outputs are cross-faded into one before the scheduler step); each tile makes
    /// its own pruning decisions. `None`: one pass.
    pub tile_size: Option<usize>,
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
            strength: 0.8,
            vae_tile: None,
            taesd: false,
            prune: PrunePolicy::default(),
            tile_size: None,
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
    /// Heads pruned per layer and step, when pruning was on.
    pub prune: Option<PruneReport>,
}

/// What pruning did in one generation.
#[derive(Clone, Debug)]
pub struct PruneReport {
    /// The threshold used (after prompt gating and CFG relaxation).
    pub threshold: f32,
    /// Detail words found in the prompt.
    pub detail_words: Vec<String>,
    /// Per layer and step head counts over the whole image (all tiles together); see
    /// [`PruneStats::skipped_share`].
    pub stats: PruneStats,
    /// Per tile, in latent pixels, when denoising was tiled (else empty).
    pub tiles: Vec<(Tile, PruneStats)>,
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
    /// VAE tiles decoded (0: one pass).
    pub decode_tiles: usize,
}

/// A loaded Stable Diffusion pipeline.
pub struct StableDiffusion {
    gpu: Gpu,
    dtype: DType,
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    unet: UNet,
    vae: Vae,
    taesd: Option<TinyVae>,
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
        Self::assemble(
            gpu,
            dtype,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
        )
    }

    /// Loads a diffusers folder held in memory (the web page's fetched or picked files);
    /// the weights are moved out of `folder` as each component is uploaded.
    pub fn from_folder(
        gpu: &Gpu,
        mut folder: MemoryFolder,
        dtype: DType,
    ) -> Result<StableDiffusion, PipelineError> {
        let (config, weights) =
            folder.take_component("text_encoder", fovea_models::ClipTextConfig::validate)?;
        let text_encoder =
            ClipTextModel::from_weights(gpu, config, std::sync::Arc::new(weights), dtype)?;
        let tokenizer =
            folder.tokenizer("tokenizer", text_encoder.config().max_position_embeddings)?;
        let (config, weights) =
            folder.take_component("unet", fovea_models::UNetConfig::validate)?;
        let unet = UNet::from_weights(gpu, config, &weights, dtype)?;
        drop(weights);
        let (config, weights) = folder.take_component("vae", fovea_models::VaeConfig::validate)?;
        let vae = Vae::from_weights(gpu, config, &weights, dtype)?;
        drop(weights);
        let sched_path = "scheduler/scheduler_config.json";
        let scheduler_config: SchedulerConfig = folder.json(sched_path)?;
        scheduler_config.validate(std::path::Path::new(&folder.label(sched_path)))?;
        Self::assemble(
            gpu,
            dtype,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
        )
    }

    fn assemble(
        gpu: &Gpu,
        dtype: DType,
        tokenizer: ClipTokenizer,
        text_encoder: ClipTextModel,
        unet: UNet,
        vae: Vae,
        scheduler_config: SchedulerConfig,
    ) -> Result<StableDiffusion, PipelineError> {
        if text_encoder.config().hidden_size != unet.config().cross_attention_dim {
            return Err(param(
                "model",
                "text_encoder + unet",
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
            taesd: None,
            scheduler_config,
        })
    }

    /// The engine's dtype for weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
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

    /// Checks every parameter of `p` against this model and adapter before any work:
    /// sizes, steps (also against the scheduler's training timesteps), guidance,
    /// strength, pruning, tiles, and whether the latents and one denoising pass (or one
    /// tile's) fit the adapter's storage-binding limit. `txt2img` and `img2img` run the
    /// same checks; this lets a caller run them before its own long work.
    pub fn check(&self, p: &GenerateParams) -> Result<(), PipelineError> {
        let (kind, _, _) = self.validate(p)?;
        Scheduler::new(kind, &self.scheduler_config, p.steps)?;
        if !(0.0..=1.0).contains(&p.strength) {
            return Err(param("strength", p.strength, "a number in [0, 1]"));
        }
        self.fit(p)
    }

    /// Token counts of a prompt: (tokens in it, tokens the text encoder reads); a prompt
    /// with more is cut to the window, as diffusers does.
    pub fn prompt_tokens(&self, prompt: &str) -> Result<(usize, usize), PipelineError> {
        Ok((
            self.tokenizer.count_tokens(prompt)?,
            self.tokenizer.max_len() - 2,
        ))
    }

    /// How a generation fits the adapter: the latents must fit one storage binding, and
    /// so must one guided UNet pass (over the whole image, or over one tile when
    /// denoising in tiles). Refusals name the size, the need and the limit, with the
    /// tile size or image size that would fit.
    ///
    /// Tiles are suggested, not chosen here: they change the image (MultiDiffusion's
    /// blend), and each tile's pass still takes its memory (on lavapipe, 3.4 GB of host
    /// memory for a 1024 px tile of the default model), so going that large is the
    /// user's call.
    fn fit(&self, p: &GenerateParams) -> Result<(), PipelineError> {
        let limit = {
            let l = self.gpu.limits();
            l.max_storage_buffer_binding_size.min(l.max_buffer_size)
        };
        let adapter = &self.gpu.adapter_info().name;
        let (s, g) = (self.vae_scale(), self.granularity());
        let elem = self.dtype.size_bytes() as u64;
        let lc = self.unet.config().in_channels as u64;
        let latent_bytes = |w: usize, h: usize| lc * (w / s) as u64 * (h / s) as u64 * elem;
        let size = format!("{}x{}", p.width, p.height);
        let latents = latent_bytes(p.width, p.height);
        if latents > limit {
            // The largest square whose latents fit, in steps of the granularity.
            let side = ((limit / (lc * elem)) as f64).sqrt() as usize * s / g * g;
            return Err(PipelineError::TooLarge(format!(
                "{size} is too large for this adapter ({adapter}): its latents alone take {} \
                 per buffer, above the adapter's limit of {}; the largest square it can \
                 hold is about {side}x{side}",
                human_bytes(latents),
                human_bytes(limit)
            )));
        }
        let batch = if p.cfg > 1.0 { 2 } else { 1 };
        let pass = |w: usize, h: usize| {
            let duplicated = batch * latent_bytes(w, h);
            unet_binding_bytes(self.unet.config(), batch, h / s, w / s, elem).max(duplicated)
        };
        let (w, h) = (p.width, p.height);
        let tile_pass = |t: usize| pass(t.min(w), t.min(h));
        let hint = |from: usize| match largest_fitting_tile(g, from, |t| tile_pass(t) <= limit) {
            Some(best) => format!("use --tile-size {best} (or less)"),
            None => "no tile size fits; pick a smaller size".into(),
        };
        match p.tile_size {
            Some(t) if t < w || t < h => {
                let needed = tile_pass(t);
                if needed > limit {
                    return Err(PipelineError::TooLarge(format!(
                        "a {t} px tile needs about {} per binding in one UNet pass, above this \
                         adapter's limit of {} ({adapter}); {}",
                        human_bytes(needed),
                        human_bytes(limit),
                        hint(t)
                    )));
                }
            }
            _ => {
                let needed = pass(w, h);
                if needed > limit {
                    return Err(PipelineError::TooLarge(format!(
                        "{size} needs about {} per binding in one UNet pass, above this \
                         adapter's limit of {} ({adapter}); denoise it in tiles: {}",
                        human_bytes(needed),
                        human_bytes(limit),
                        hint(w.max(h))
                    )));
                }
            }
        }
        Ok(())
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
        p.prune.validate()?;
        if let Some(t) = p.tile_size
            && (t == 0 || t % g != 0)
        {
            return Err(param(
                "tile_size",
                t,
                format!("a positive multiple of {g} for this model"),
            ));
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

    /// Loads a TAESD (`AutoencoderTiny`) folder as the fast decoder that
    /// [`GenerateParams::taesd`] selects.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_taesd(&mut self, dir: &std::path::Path) -> Result<(), PipelineError> {
        let taesd = TinyVae::load(&self.gpu, dir, self.dtype)?;
        self.set_taesd(taesd)
    }

    /// Loads a TAESD folder held in memory (`config.json` and weights at its top level).
    pub fn load_taesd_folder(&mut self, mut folder: MemoryFolder) -> Result<(), PipelineError> {
        let (config, weights) = folder.take_component("", fovea_models::TinyVaeConfig::validate)?;
        let taesd = TinyVae::from_weights(&self.gpu, config, &weights, self.dtype)?;
        self.set_taesd(taesd)
    }

    /// Installs a loaded TAESD decoder, checking it fits this model's latents.
    pub fn set_taesd(&mut self, taesd: TinyVae) -> Result<(), PipelineError> {
        let (lc, up) = (taesd.config().latent_channels, taesd.config().upscale());
        if lc != self.unet.config().in_channels || up != self.vae_scale() {
            return Err(param(
                "taesd",
                format!("{lc} latent channels, {up}x upscale"),
                format!(
                    "{} latent channels and {}x upscale, as this model's VAE",
                    self.unet.config().in_channels,
                    self.vae_scale()
                ),
            ));
        }
        self.taesd = Some(taesd);
        Ok(())
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
        let sched = Scheduler::new(kind, &self.scheduler_config, p.steps)?;
        self.fit(p)?;
        let (context, text_ms) = self.encode_prompt(p).await?;
        let started = web_time::Instant::now();
        let lc = self.unet.config().in_channels;
        let n = lc * lh * lw;
        let mut rng = NoiseRng::new(p.seed);
        let init = match latents {
            Some(l) => expect_len("latents", l, [1, lc, lh, lw])?.to_vec(),
            None => rng.normals(n),
        };
        // Initial latents, scaled by the scheduler's init_noise_sigma.
        let init = self
            .gpu
            .upload_f32("latents", &[1, lc, lh, lw], self.dtype, &init)?;
        let mut b = self.gpu.batch();
        let sample = b.scale(&init, sched.init_noise_sigma() as f32, 0.0)?;
        b.submit()?;
        self.finish(
            p, sched, sample, &context, &mut rng, text_ms, started, on_step,
        )
        .await
    }

    /// Generates an image from text and a starting image (diffusers'
    /// `StableDiffusionImg2ImgPipeline`): the image is encoded, noised to the level of
    /// step `steps - int(steps * strength)` and denoised from there. `init_rgba` is RGBA8
    /// of `width` x `height`. Noise is drawn from the seed in this order: the VAE
    /// posterior sample, the added noise, then any ancestral step noise; `noise`
    /// replaces the first two.
    pub async fn img2img(
        &self,
        p: &GenerateParams,
        init_rgba: &[u8],
        noise: Option<Img2ImgNoise<'_>>,
        on_step: &mut dyn FnMut(StepInfo) -> bool,
    ) -> Result<Image, PipelineError> {
        let (kind, lh, lw) = self.validate(p)?;
        let mut sched = Scheduler::new(kind, &self.scheduler_config, p.steps)?;
        let begin = sched.begin_for_strength(p.strength)?;
        self.fit(p)?;
        if init_rgba.len() != p.width * p.height * 4 {
            return Err(param(
                "init_image",
                format!("{} bytes", init_rgba.len()),
                format!(
                    "{}x{} RGBA8 ({} bytes)",
                    p.width,
                    p.height,
                    p.width * p.height * 4
                ),
            ));
        }
        let (context, text_ms) = self.encode_prompt(p).await?;
        let started = web_time::Instant::now();
        let lc = self.unet.config().in_channels;
        let shape = [1, lc, lh, lw];
        let mut rng = NoiseRng::new(p.seed);
        let (eps, added) = match noise {
            Some(z) => (
                expect_len("posterior noise", z.posterior, shape)?.to_vec(),
                expect_len("added noise", z.noise, shape)?.to_vec(),
            ),
            None => {
                let eps = rng.normals(lc * lh * lw);
                (eps, rng.normals(lc * lh * lw))
            }
        };
        // Encode, sample the posterior, scale, then noise to the starting step.
        let moments = self
            .encode_image(p, &from_rgba(init_rgba, p.width, p.height))
            .await?;
        let eps = self
            .gpu
            .upload_f32("posterior noise", &shape, self.dtype, &eps)?;
        let added = self
            .gpu
            .upload_f32("added noise", &shape, self.dtype, &added)?;
        let (a, z) = sched.add_noise_coefs(begin);
        let mut b = self.gpu.batch();
        let x0 = self.vae.sample_posterior(&mut b, &moments, &eps)?;
        let sample = lin(&mut b, &x0, a * self.vae.config().scaling_factor, &added, z)?;
        b.submit()?;
        self.finish(
            p, sched, sample, &context, &mut rng, text_ms, started, on_step,
        )
        .await
    }

    /// The guided model output for model input `x_in` (1, C, h, w): one UNet forward over
    /// the [negative, positive] pair when `cfg` > 1, with pruning when given.
    fn predict(
        &self,
        b: &mut Batch,
        x_in: &Tensor,
        ts: &Tensor,
        context: &Tensor,
        cfg: f32,
        pruning: Option<&mut HeadPruning>,
    ) -> Result<Tensor, PipelineError> {
        let guided = cfg > 1.0;
        let model_in = if guided {
            duplicate(b, x_in)?
        } else {
            x_in.clone()
        };
        let out = match pruning {
            Some(hp) => self.unet.forward_pruned(b, &model_in, ts, context, hp)?,
            None => self.unet.forward(b, &model_in, ts, context)?,
        };
        if guided {
            guidance(b, &out, cfg)
        } else {
            Ok(out)
        }
    }

    /// Prompt embeddings, [negative, positive] when guided, and the time they took.
    async fn encode_prompt(&self, p: &GenerateParams) -> Result<(Tensor, f64), PipelineError> {
        let mut ids = Vec::new();
        if p.cfg > 1.0 {
            ids.push(self.tokenizer.encode(&p.negative_prompt)?);
        }
        ids.push(self.tokenizer.encode(&p.prompt)?);
        let started = web_time::Instant::now();
        let mut b = self.gpu.batch();
        let context = self
            .text_encoder
            .forward(&mut b, &ids, p.clip_skip)?
            .embedding;
        b.submit()?;
        self.gpu.wait_idle().await?;
        Ok((context, ms(started)))
    }

    /// Runs the denoising loop from the scheduler's begin step, decodes and packs the image.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        p: &GenerateParams,
        sched: Scheduler,
        mut sample: Tensor,
        context: &Tensor,
        rng: &mut NoiseRng,
        text_ms: f64,
        started: web_time::Instant,
        on_step: &mut dyn FnMut(StepInfo) -> bool,
    ) -> Result<Image, PipelineError> {
        let gpu = &self.gpu;
        let guided = p.cfg > 1.0;
        let shape = sample.shape().to_vec();
        let n = sample.len();
        let mut prev_denoised: Option<Tensor> = None;
        let timesteps = sched.timesteps().to_vec();
        let begin = sched.begin();
        let total = timesteps.len() - begin;
        let threshold = p.prune.effective_threshold(&p.prompt, p.cfg);
        let above = p.prune.effective_above(&p.prompt, p.cfg);
        // Denoising tiles (latent pixels) with weights that sum to 1, or one pass.
        let (lh, lw) = (shape[2], shape[3]);
        let tiles = match p.tile_size.map(|t| t / self.vae_scale()) {
            Some(t) if t < lh || t < lw => {
                let overlap = (t / 4).max(1);
                let ts = tiling::tiles(lh, lw, t, overlap);
                let weights = tiling::normalized_weights(&ts, lh, lw, overlap);
                let mut out = Vec::with_capacity(ts.len());
                for (t, w) in ts.into_iter().zip(weights) {
                    out.push((
                        t,
                        gpu.upload_f32("tile weight", &[t.h, t.w], self.dtype, &w)?,
                    ));
                }
                out
            }
            _ => Vec::new(),
        };
        let mut pruning: Vec<HeadPruning> = if p.prune.enabled {
            let cross = if p.prune.cross_attention {
                threshold
            } else {
                0.0
            };
            (0..tiles.len().max(1))
                .map(|_| {
                    let mut hp = HeadPruning::new(threshold, cross, p.prune.skip.gpu());
                    hp.guard = p.prune.guard;
                    hp.self_above = above;
                    hp.cross_above = if p.prune.cross_attention { above } else { 1.0 };
                    hp.probe_stride = p.prune.probe_for(total);
                    hp
                })
                .collect()
        } else {
            Vec::new()
        };
        for (i, &t) in timesteps.iter().enumerate().skip(begin) {
            let plan = sched.plan(i);
            if plan.denoised.clip.is_some() {
                return Err(param(
                    "clip_sample",
                    "true",
                    "false (fovea's GPU sampler does not clip)",
                ));
            }
            let noise = if plan.noise != 0.0 {
                Some(gpu.upload_f32("noise", &shape, self.dtype, &rng.normals(n))?)
            } else {
                None
            };
            let batch = if guided { 2 } else { 1 };
            let ts = gpu.upload_f32("timesteps", &[batch], DType::F32, &vec![t as f32; batch])?;
            for hp in &mut pruning {
                hp.step = i - begin;
                hp.apply = !p.prune.measures(i - begin);
            }
            let mut b = gpu.batch();
            let x_in = b.scale(&sample, sched.input_scale(i) as f32, 0.0)?;
            let model_out = if tiles.is_empty() {
                self.predict(&mut b, &x_in, &ts, context, p.cfg, pruning.first_mut())?
            } else {
                // MultiDiffusion: each tile's guided output, cross-faded into one.
                let acc = gpu.empty("tiled model output", &shape, self.dtype)?;
                b.clear(&acc);
                for (k, (tile, weight)) in tiles.iter().enumerate() {
                    let x_tile = b.crop_window(&x_in, tile.y0, tile.x0, tile.h, tile.w)?;
                    let out =
                        self.predict(&mut b, &x_tile, &ts, context, p.cfg, pruning.get_mut(k))?;
                    b.add_window(&acc, &out, weight, tile.y0, tile.x0)?;
                    // One submission per tile: a batch holds the buffers it records until
                    // it is submitted, so one batch for every tile held all their
                    // activations at once (default model, 2048x2048 in 1024 px tiles on
                    // lavapipe: past 4 GB RSS in 6 s, and 22 GB at 4096x4096; one batch
                    // per tile: 3.4 GB, what one 1024 px pass takes).
                    drop((x_tile, out));
                    std::mem::replace(&mut b, gpu.batch()).submit()?;
                }
                acc
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
                step: i + 1 - begin,
                total,
                timestep: t,
            }) {
                return Err(PipelineError::Cancelled(i + 1 - begin));
            }
        }
        let mut timings = Timings {
            text_ms,
            denoise_ms: ms(started),
            steps: total,
            ..Default::default()
        };
        let prune = if pruning.is_empty() {
            None
        } else {
            let mut per_tile = Vec::with_capacity(pruning.len());
            for hp in &pruning {
                per_tile.push(hp.read_stats(gpu).await?);
            }
            let mut stats = per_tile[0].clone();
            for t in &per_tile[1..] {
                stats.entries.extend_from_slice(&t.entries);
                stats.forwards += t.forwards;
                stats.probe_flops += t.probe_flops;
            }
            Some(PruneReport {
                threshold,
                detail_words: p
                    .prune
                    .detail_hits(&p.prompt)
                    .into_iter()
                    .map(String::from)
                    .collect(),
                stats,
                tiles: if tiles.is_empty() {
                    Vec::new()
                } else {
                    tiles.iter().map(|(t, _)| *t).zip(per_tile).collect()
                },
            })
        };
        let started = web_time::Instant::now();
        let (pixels, tiles) = self.decode_latents(p, &sample).await?;
        timings.decode_ms = ms(started);
        timings.decode_tiles = tiles;
        let mut image = to_rgba(&pixels, p.width, p.height, timings);
        image.prune = prune;
        Ok(image)
    }

    /// Decodes latents (1, C, h, w) as the denoising loop leaves them (scaled by the
    /// VAE's scaling factor) to (3, H, W) pixels in about [-1, 1], with the decoder `p`
    /// selects (VAE or TAESD), in tiles of `p.vae_tile` or, without it, in one pass when
    /// that fits the adapter's limits and in tiles when not. Returns the pixels and the
    /// number of tiles (0 = one pass).
    pub async fn decode_latents(
        &self,
        p: &GenerateParams,
        sample: &Tensor,
    ) -> Result<(Vec<f32>, usize), PipelineError> {
        let scaling = match (&self.taesd, p.taesd) {
            (Some(t), true) => t.config().scaling_factor,
            (None, true) => {
                return Err(param("taesd", "true", "a TAESD decoder loaded first"));
            }
            (_, false) => self.vae.config().scaling_factor,
        };
        let mut b = self.gpu.batch();
        let z = b.scale(sample, (1.0 / scaling) as f32, 0.0)?;
        b.submit()?;
        let s = z.shape().to_vec();
        let (lh, lw) = (s[2], s[3]);
        let mut tile = match p.vae_tile {
            Some(px) => (px / self.vae_scale()).max(1),
            None => match self.decode_pass(p, &z).await {
                Err(e) if is_limit(&e) => {
                    log::info!("VAE decode over the adapter's limits in one pass ({e}); tiling");
                    largest_tile(lh, lw)
                }
                other => return other.map(|px| (px, 0)),
            },
        };
        let latents = self.gpu.read_f32(&z).await?;
        loop {
            match self.decode_tiled(p, &latents, s[1], lh, lw, tile).await {
                Err(e) if is_limit(&e) && tile > 8 => tile /= 2,
                other => return other,
            }
        }
    }

    async fn decode_pass(&self, p: &GenerateParams, z: &Tensor) -> Result<Vec<f32>, PipelineError> {
        let mut b = self.gpu.batch();
        let image = match (&self.taesd, p.taesd) {
            (Some(t), true) => t.decode(&mut b, z)?,
            _ => self.vae.decode(&mut b, z)?,
        };
        b.submit()?;
        Ok(self.gpu.read_f32(&image).await?)
    }

    /// Decodes (c, lh, lw) latents in overlapping `tile` x `tile` pieces, blended.
    async fn decode_tiled(
        &self,
        p: &GenerateParams,
        latents: &[f32],
        c: usize,
        lh: usize,
        lw: usize,
        tile: usize,
    ) -> Result<(Vec<f32>, usize), PipelineError> {
        let s = self.vae_scale();
        let overlap = (tile / 4).max(1);
        let pieces = tiling::tiles(lh, lw, tile, overlap);
        let mut out = Blender::new(3, lh * s, lw * s, overlap * s);
        for &t in &pieces {
            let part = tiling::crop(latents, c, lh, lw, t);
            let z = self
                .gpu
                .upload_f32("latent tile", &[1, c, t.h, t.w], self.dtype, &part)?;
            out.add(&self.decode_pass(p, &z).await?, t.scaled(s));
        }
        Ok((out.finish(), pieces.len()))
    }

    /// Encodes (3, H, W) pixels in [-1, 1] to the VAE posterior's moments
    /// (1, 2C, H/8, W/8), in tiles when asked or when one pass exceeds the limits.
    async fn encode_image(
        &self,
        p: &GenerateParams,
        pixels: &[f32],
    ) -> Result<Tensor, PipelineError> {
        let s = self.vae_scale();
        let (h, w) = (p.height, p.width);
        let mut tile = match p.vae_tile {
            Some(px) => (px / s).max(1),
            None => {
                let attempt = async {
                    let image =
                        self.gpu
                            .upload_f32("init image", &[1, 3, h, w], self.dtype, pixels)?;
                    let mut b = self.gpu.batch();
                    let m = self.vae.encode_moments(&mut b, &image)?;
                    b.submit()?;
                    Ok::<_, PipelineError>(m)
                };
                match attempt.await {
                    Err(e) if is_limit(&e) => largest_tile(h / s, w / s),
                    other => return other,
                }
            }
        };
        let (lh, lw) = (h / s, w / s);
        let c2 = 2 * self.vae.config().latent_channels;
        loop {
            let attempt = async {
                let overlap = (tile / 4).max(1);
                let mut out = Blender::new(c2, lh, lw, overlap);
                for t in tiling::tiles(lh, lw, tile, overlap) {
                    let px = t.scaled(s);
                    let part = tiling::crop(pixels, 3, h, w, px);
                    let image = self.gpu.upload_f32(
                        "image tile",
                        &[1, 3, px.h, px.w],
                        self.dtype,
                        &part,
                    )?;
                    let mut b = self.gpu.batch();
                    let m = self.vae.encode_moments(&mut b, &image)?;
                    b.submit()?;
                    out.add(&self.gpu.read_f32(&m).await?, t);
                }
                Ok::<_, PipelineError>(out.finish())
            };
            match attempt.await {
                Err(e) if is_limit(&e) && tile > 8 => tile /= 2,
                Err(e) => return Err(e),
                Ok(m) => {
                    return Ok(self
                        .gpu
                        .upload_f32("moments", &[1, c2, lh, lw], self.dtype, &m)?);
                }
            }
        }
    }
}

/// An upper estimate of the largest tensor, in bytes, that one UNet forward over `batch`
/// latents of `lh` x `lw` binds: per resolution level, the wider of the transformer's
/// GEGLU projection (8 x channels per pixel, where the level has attention) and the up
/// block's skip concatenation (this level's channels plus its neighbour's). The text
/// context and weights are small next to these at the sizes where this matters.
pub fn unet_binding_bytes(
    cfg: &fovea_models::UNetConfig,
    batch: u64,
    lh: usize,
    lw: usize,
    elem_bytes: u64,
) -> u64 {
    let ch = &cfg.block_out_channels;
    let levels = ch.len();
    let has_attn = |t: Option<&String>| t.is_some_and(|t| t.contains("Attn"));
    (0..levels)
        .map(|i| {
            let (h, w) = (lh.div_ceil(1 << i) as u64, lw.div_ceil(1 << i) as u64);
            let c = ch[i] as u64;
            let deeper = ch[(i + 1).min(levels - 1)] as u64;
            let shallower = ch[i.saturating_sub(1)] as u64;
            let attn = has_attn(cfg.down_block_types.get(i))
                || has_attn(cfg.up_block_types.get(levels - 1 - i))
                || (i == levels - 1 && has_attn(cfg.mid_block_type.as_ref()));
            let ff = if attn { 8 * c } else { 0 };
            let per_pixel = ff.max(c + deeper).max(c + shallower);
            batch * per_pixel * h * w * elem_bytes
        })
        .max()
        .unwrap_or(0)
}

/// The largest multiple of `granularity` up to `start` for which `fits` holds.
fn largest_fitting_tile(
    granularity: usize,
    start: usize,
    fits: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut t = start / granularity * granularity;
    while t >= granularity {
        if fits(t) {
            return Some(t);
        }
        t -= granularity;
    }
    None
}

/// Bytes for people: GiB, MiB or KiB, with a precision that keeps small limits legible.
fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if bytes >= 10 << 20 {
        format!("{:.0} MiB", b / (KIB * KIB))
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else {
        format!("{:.0} KiB", b / KIB)
    }
}

/// Caller-supplied noise for [`StableDiffusion::img2img`] (parity tests).
#[derive(Clone, Copy, Debug)]
pub struct Img2ImgNoise<'a> {
    /// Standard normals for the VAE posterior sample, (1, C, h, w).
    pub posterior: &'a [f32],
    /// Standard normals added to reach the starting step, (1, C, h, w).
    pub noise: &'a [f32],
}

/// The first tile side tried when one pass does not fit: half the longer side, halved
/// again while a tile still exceeds the limits (larger tiles blend less).
fn largest_tile(h: usize, w: usize) -> usize {
    h.max(w).div_ceil(2).max(1)
}

/// Whether an error is an adapter limit (a binding or buffer too large), which tiling
/// can avoid.
fn is_limit(e: &PipelineError) -> bool {
    matches!(
        e,
        PipelineError::Gpu(fovea_gpu::GpuError::Limit { .. })
            | PipelineError::Model(fovea_models::ModelError::Gpu(
                fovea_gpu::GpuError::Limit { .. }
            ))
    )
}

fn expect_len<'a>(
    what: &'static str,
    v: &'a [f32],
    shape: [usize; 4],
) -> Result<&'a [f32], PipelineError> {
    let n: usize = shape.iter().product();
    if v.len() != n {
        return Err(param(
            what,
            format!("{} values", v.len()),
            format!("{n} values {shape:?}"),
        ));
    }
    Ok(v)
}

/// RGBA8 -> (3, H, W) in [-1, 1], as diffusers' image preprocessing.
fn from_rgba(rgba: &[u8], width: usize, height: usize) -> Vec<f32> {
    let plane = width * height;
    let mut out = vec![0.0; 3 * plane];
    for i in 0..plane {
        for c in 0..3 {
            out[c * plane + i] = rgba[i * 4 + c] as f32 / 255.0 * 2.0 - 1.0;
        }
    }
    out
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
        prune: None,
    }
}

fn ms(since: web_time::Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
