//! `fovea`: the command-line front end. `fovea generate` makes an image from a prompt
//! with a diffusers Stable Diffusion folder; `fovea info` lists the GPU adapters wgpu
//! can see, with what fovea uses of each, and `--self-check` runs every kernel on the
//! chosen adapter against the CPU references.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fovea_gpu::{DType, Gpu, GpuOptions};
use fovea_pipeline::{GenerateParams, PrunePolicy, SchedulerKind, SkipMode, StableDiffusion};

mod bench;
mod checks;
mod eval;
mod model_lookup;
mod pipeline_list;
mod prune_report;
mod runtime_dir;

/// Printed by `generate` when no earlier run with this model left a pipeline list on
/// this adapter: drivers then compile each kernel when it is first used, which on
/// lavapipe with an empty Mesa shader cache made the README's generation 17.8 s instead
/// of ~7 (2-core machine, docs/PERFORMANCE.md).
const FIRST_RUN_NOTE: &str = "first run of this model on this adapter: the driver compiles \
fovea's kernels as they are first needed, so the first steps are slower (on a 2-core CPU \
with lavapipe, about 10 s more); later runs reuse them";

#[derive(Parser)]
#[command(
    name = "fovea",
    version,
    about = "Portable text-to-image engine on WebGPU"
)]
struct Cli {
    /// Show driver, wgpu and engine messages: -v info, -vv debug, -vvv trace (RUST_LOG,
    /// when set, chooses instead).
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an image from a text prompt.
    Generate(Box<GenerateArgs>),
    /// Run a prompt suite with attention pruning off and on (same seeds) and write a
    /// JSON + markdown report with images.
    PruneEval(Box<EvalArgs>),
    /// Time kernels and models (SD 1.5 / 2.1 UNets and the SD VAE with random weights,
    /// the default model) on the preferred adapter; print a table and write JSON.
    Bench(Box<BenchArgs>),
    /// List GPU adapters with backend, device type, features and key limits.
    Info {
        /// Also run every kernel on the preferred adapter against CPU references.
        #[arg(long)]
        self_check: bool,
        /// Seed of the self-check's random inputs (default: time-based).
        #[arg(long)]
        seed: Option<u64>,
        /// Use only f32 kernels even when the adapter has shader-f16.
        #[arg(long)]
        no_f16: bool,
    },
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// A diffusers Stable Diffusion folder (model_index.json, unet/, vae/, ...); default:
    /// fovea's own small model, models/fovea-tiny.
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// What to draw.
    #[arg(long, short = 'p', required_unless_present = "from_file")]
    prompt: Option<String>,
    /// Draw every prompt in this text file (one per line; blank lines and lines starting
    /// with # are skipped), loading the model once; the output for line N is `OUT_N.png`
    /// (`OUT_N_K.png` with `--batch-count`).
    #[arg(long, conflicts_with = "prompt")]
    from_file: Option<PathBuf>,
    /// What to avoid (used with --cfg above 1).
    #[arg(long, short = 'n', default_value = "")]
    negative_prompt: String,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Sampler: euler, euler_a, ddim, dpmpp_2m, lcm (default: the folder's scheduler).
    #[arg(long)]
    scheduler: Option<String>,
    /// CLIP layers to skip from the end.
    #[arg(long, default_value_t = 0)]
    clip_skip: usize,
    /// Use f32 weights and activations even when the adapter has shader-f16.
    #[arg(long)]
    f32: bool,
    /// img2img: start from this image (PNG or JPEG), resized to --width/--height
    /// (default: its own size rounded down to the model's granularity).
    #[arg(long, short = 'i')]
    init_image: Option<PathBuf>,
    /// img2img: how much of the init image to replace, 0..1 (1 = all of it).
    #[arg(long, default_value_t = 0.8)]
    strength: f64,
    /// Images to make, with seeds seed, seed+1, ...; outputs get a _1, _2, ... suffix.
    #[arg(long, short = 'b', default_value_t = 1)]
    batch_count: usize,
    /// Decode (and encode) with the VAE in tiles of this many pixels a side (default:
    /// tiles only when one pass would exceed the adapter's limits).
    #[arg(long)]
    vae_tile: Option<usize>,
    /// Denoise images larger than this many pixels in overlapping tiles of this size
    /// (MultiDiffusion), each tile deciding its own pruning.
    #[arg(long)]
    tile_size: Option<usize>,
    /// Decode with this TAESD (AutoencoderTiny) folder instead of the model's VAE: fast,
    /// slightly softer.
    #[arg(long)]
    taesd: Option<PathBuf>,
    #[command(flatten)]
    pruning: PruneArgs,
    /// Print per-layer pruning statistics.
    #[arg(long)]
    prune_stats: bool,
    /// Write a heat map of pruned heads (layers x steps) to this PNG.
    #[arg(long)]
    prune_map: Option<PathBuf>,
    /// Output PNG.
    #[arg(long, short = 'o', default_value = "fovea.png")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// UNets to time: sd15, sd21 (random weights, real shapes), default (models/fovea-tiny
    /// with its text encoder and VAE); comma-separated, or "none".
    #[arg(long, default_value = "default")]
    unets: String,
    /// Latent sides of the SD UNets (64 = 512 px images, 128 = 1024 px).
    #[arg(long, default_value = "64")]
    latents: String,
    /// UNet batch sizes (2 = one step with classifier-free guidance).
    #[arg(long, default_value = "1,2")]
    batches: String,
    /// Kernel micro-benchmarks: small (software adapters), full (real GPUs) or none.
    #[arg(long, default_value = "small")]
    kernels: String,
    /// Time the SD VAE decoder (random weights) at these image sides, e.g. 512,1024.
    #[arg(long, default_value = "")]
    vae: String,
    /// Also time UNet forwards that prune attention heads at this entropy threshold.
    #[arg(long, conflicts_with = "prune_share")]
    prune: Option<f32>,
    /// Also time pruned UNet forwards, with the threshold set to prune this share of the
    /// heads measured on a first forward (random weights attend almost uniformly, so no
    /// fixed threshold prunes them: this sets the skipped share to study speed).
    #[arg(long)]
    prune_share: Option<f32>,
    /// Timed runs per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Untimed runs first (pipeline compilation, caches).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// f32 weights and activations even when the adapter has shader-f16.
    #[arg(long)]
    f32: bool,
    /// The default model's folder (default: models/fovea-tiny).
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// JSON output.
    #[arg(long, short = 'o', default_value = "bench.json")]
    out: PathBuf,
}

fn list<T: std::str::FromStr>(flag: &str, text: &str) -> Result<Vec<T>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "none")
        .map(|s| {
            s.parse()
                .map_err(|_| format!("`--{flag}`: `{s}` is not a valid value"))
        })
        .collect()
}

fn bench(args: BenchArgs) -> Result<(), String> {
    let kernels = match args.kernels.as_str() {
        "none" => None,
        "small" | "full" => Some(args.kernels.clone()),
        other => return Err(format!("`--kernels` = {other}: small, full or none")),
    };
    if let Some(t) = args.prune.filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(format!("`--prune` = {t}: a normalised entropy in [0, 1]"));
    }
    if let Some(t) = args.prune_share.filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(format!("`--prune-share` = {t}: a share in [0, 1]"));
    }
    let unets: Vec<String> = list("unets", &args.unets)?;
    if let Some(u) = unets
        .iter()
        .find(|u| !["sd15", "sd21", "default"].contains(&u.as_str()))
    {
        return Err(format!("`--unets`: unknown `{u}` (sd15, sd21, default)"));
    }
    let latents: Vec<usize> = list("latents", &args.latents)?;
    if let Some(l) = latents.iter().find(|&&l| l == 0 || l % 8 != 0) {
        return Err(format!("`--latents`: {l} is not a positive multiple of 8"));
    }
    let batches: Vec<usize> = list("batches", &args.batches)?;
    if batches.contains(&0) || (batches.is_empty() && !unets.is_empty()) {
        return Err("`--batches`: batch sizes of at least 1".into());
    }
    let vae_sides: Vec<usize> = list("vae", &args.vae)?;
    if let Some(v) = vae_sides.iter().find(|&&v| v < 64 || v % 64 != 0) {
        return Err(format!("`--vae`: {v} px is not a positive multiple of 64"));
    }
    if unets.iter().any(|u| u == "default") {
        model_dir(args.model.as_ref())?;
    }
    if args.repeats == 0 {
        return Err("`--repeats` = 0: at least 1".into());
    }
    let opts = bench::BenchOptions {
        unets,
        latents,
        batches,
        kernels,
        vae_sides,
        prune: args.prune,
        prune_share: args.prune_share,
        repeats: args.repeats,
        warmup: args.warmup,
        dtype: DType::F32,
        model: args.model,
        out: args.out,
    };
    let gpu = pollster::block_on(Gpu::new(GpuOptions::default())).map_err(|e| e.to_string())?;
    let dtype = if gpu.capabilities().shader_f16 && !args.f32 {
        DType::F16
    } else {
        DType::F32
    };
    bench::run(&gpu, &bench::BenchOptions { dtype, ..opts })
}

#[derive(clap::Args)]
struct EvalArgs {
    /// A diffusers Stable Diffusion folder (default: models/fovea-tiny).
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// The prompt suite (JSON: {"prompts": [{"id", "background", "prompt", ...}]}).
    #[arg(long, default_value = "tests/prompts/prune_suite.json")]
    suite: PathBuf,
    /// Only the first N prompts.
    #[arg(long)]
    limit: Option<usize>,
    /// Output folder for report.json, report.md and pairs.png.
    #[arg(long, short = 'o', default_value = "prune-eval")]
    out: PathBuf,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Guidance scales of the CFG sweep (comma-separated; empty: none).
    #[arg(long, default_value = "1,3,5,7.5,10,12.5")]
    cfg_sweep: String,
    /// Use f32 even when the adapter has shader-f16.
    #[arg(long)]
    f32: bool,
    #[command(flatten)]
    pruning: PruneArgs,
}

/// The model folder to use: the one given, else the default model, found as
/// [`model_lookup`] describes.
fn model_dir(given: Option<&PathBuf>) -> Result<PathBuf, String> {
    match given {
        Some(dir) => Ok(dir.clone()),
        None => model_lookup::LookupEnv::from_process().find(),
    }
}

fn prune_eval(args: EvalArgs) -> Result<(), String> {
    let model = model_dir(args.model.as_ref())?;
    let mut prune = args.pruning.policy()?;
    prune.enabled = true;
    let cfg_sweep = args
        .cfg_sweep
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<f32>()
                .map_err(|_| format!("`--cfg-sweep` value `{s}` is not a number"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let gpu = pollster::block_on(Gpu::new(GpuOptions::default())).map_err(|e| e.to_string())?;
    let dtype = if gpu.capabilities().shader_f16 && !args.f32 {
        DType::F16
    } else {
        DType::F32
    };
    let sd = StableDiffusion::load(&gpu, &model, dtype).map_err(|e| e.to_string())?;
    let native = sd.native_size();
    let base = GenerateParams {
        steps: args.sampling.steps,
        cfg: args.sampling.cfg,
        seed: args.sampling.seed,
        width: args.sampling.width.unwrap_or(native),
        height: args.sampling.height.unwrap_or(native),
        prune,
        ..Default::default()
    };
    eval::prune_eval(
        &gpu,
        &sd,
        &model,
        &base,
        &eval::EvalOptions {
            suite: args.suite,
            out: args.out,
            limit: args.limit,
            cfg_sweep,
        },
    )
}

/// Steps, guidance, seed and size, shared by `generate` and `prune-eval`.
#[derive(clap::Args)]
struct SamplingArgs {
    /// Denoising steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Classifier-free guidance scale (1 or less disables guidance).
    #[arg(long, default_value_t = 7.5)]
    cfg: f32,
    /// Seed of the noise (fovea's own generator, the same on every platform).
    #[arg(long, short = 's', default_value_t = 0)]
    seed: u64,
    /// Width in pixels (default: the model's native size).
    #[arg(long, short = 'W')]
    width: Option<usize>,
    /// Height in pixels (default: the model's native size).
    #[arg(long, short = 'H')]
    height: Option<usize>,
}

/// The pruning policy flags, shared by `generate` and `prune-eval`.
#[derive(clap::Args, Clone)]
pub struct PruneArgs {
    /// Prune attention heads by entropy (see --prune-threshold).
    #[arg(long)]
    pub prune: bool,
    /// Normalised-entropy threshold in [0, 1]: heads below it are pruned (higher prunes
    /// more). Detail words in the prompt and guidance above 7.5 lower it.
    #[arg(long, default_value_t = PrunePolicy::default().threshold)]
    pub prune_threshold: f32,
    /// What pruned heads output: cached (their last computed output), zero, or mean (the
    /// mean of their values: what uniform attention gives; for --prune-above).
    #[arg(long, default_value = "cached")]
    pub prune_skip: String,
    /// Also prune heads whose normalised entropy is above this (near-uniform attention);
    /// 1 prunes none from above. Pair with --prune-skip mean.
    #[arg(long, default_value_t = PrunePolicy::default().above)]
    pub prune_above: f32,
    /// Re-measure every head's entropy every N steps (0: only on the first step).
    #[arg(long, default_value_t = PrunePolicy::default().refresh)]
    pub prune_refresh: usize,
    /// Prune self-attention only.
    #[arg(long)]
    pub prune_self_only: bool,
    /// Runs of at most this many steps (turbo models) decide from an in-step probe.
    #[arg(long, default_value_t = PrunePolicy::default().probe_steps)]
    pub prune_probe_steps: usize,
    /// The in-step probe measures every N-th query row.
    #[arg(long, default_value_t = PrunePolicy::default().probe_stride)]
    pub prune_probe_stride: usize,
    /// Pattern guard: keep heads whose entropy spread over the image exceeds this
    /// (stripes, grids); 0.5 turns it off.
    #[arg(long, default_value_t = PrunePolicy::default().guard)]
    pub prune_guard: f32,
    /// Comma-separated detail words that make pruning gentler (default: a built-in
    /// English and Chinese list).
    #[arg(long)]
    pub detail_words: Option<String>,
}

impl PruneArgs {
    /// The validated policy (enabled as `--prune` says).
    pub fn policy(&self) -> Result<PrunePolicy, String> {
        let mut p = PrunePolicy {
            enabled: self.prune,
            threshold: self.prune_threshold,
            skip: SkipMode::parse(&self.prune_skip).map_err(|e| e.to_string())?,
            above: self.prune_above,
            refresh: self.prune_refresh,
            cross_attention: !self.prune_self_only,
            guard: self.prune_guard,
            probe_steps: self.prune_probe_steps,
            probe_stride: self.prune_probe_stride,
            ..Default::default()
        };
        if let Some(words) = &self.detail_words {
            p.detail_words = words
                .split(',')
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty())
                .collect();
        }
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }
}

fn prune_policy(args: &GenerateArgs) -> Result<PrunePolicy, String> {
    let p = args.pruning.policy()?;
    if !p.enabled && (args.prune_stats || args.prune_map.is_some()) {
        return Err("--prune-stats and --prune-map need --prune".into());
    }
    Ok(p)
}

fn generate(args: GenerateArgs) -> Result<(), String> {
    // Everything that needs neither the model nor the GPU is checked first.
    let prune = prune_policy(&args)?;
    let prompts = prompt_list(args.prompt.as_deref(), args.from_file.as_deref())?;
    checks::check_batch_count(args.batch_count, prompts.len())?;
    let scheduler = args
        .scheduler
        .as_deref()
        .map(SchedulerKind::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    for (line, _) in &prompts {
        for k in 0..args.batch_count {
            checks::check_writable("--out", &output_name(&args.out, *line, k, args.batch_count))?;
            if let Some(map) = &args.prune_map {
                checks::check_writable(
                    "--prune-map",
                    &output_name(map, *line, k, args.batch_count),
                )?;
            }
        }
    }
    let model = model_dir(args.model.as_ref())?;
    let gpu = pollster::block_on(Gpu::new(GpuOptions::default())).map_err(|e| e.to_string())?;
    let dtype = if gpu.capabilities().shader_f16 && !args.f32 {
        DType::F16
    } else {
        DType::F32
    };
    // What decides the kernels a run needs besides the adapter: the model's folders and
    // the dtype.
    let setup = format!(
        "{}|{:?}|{dtype}",
        std::fs::canonicalize(&model)
            .unwrap_or_else(|_| model.clone())
            .display(),
        args.taesd
            .as_ref()
            .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())),
    );
    let first_run = pipeline_list::warm(&gpu, &setup).is_none();
    eprintln!(
        "adapter: {} ({:?}), {dtype}",
        gpu.adapter_info().name,
        gpu.adapter_info().backend
    );
    if first_run {
        // The first steps would otherwise sit at "step 1" with no word of why.
        eprintln!("{FIRST_RUN_NOTE}");
    }
    let load_start = std::time::Instant::now();
    eprintln!("model: {}", model.display());
    let mut sd = StableDiffusion::load(&gpu, &model, dtype).map_err(|e| e.to_string())?;
    if let Some(dir) = &args.taesd {
        sd.load_taesd(dir).map_err(|e| e.to_string())?;
    }
    let load_ms = load_start.elapsed().as_secs_f64() * 1000.0;
    let init = match &args.init_image {
        Some(path) => Some(
            image::open(path)
                .map_err(|e| format!("--init-image {}: {e}", path.display()))?
                .to_rgba8(),
        ),
        None => None,
    };
    let native = sd.native_size();
    let g = sd.granularity();
    // img2img defaults to the init image's size, rounded down to the granularity.
    let own = |v: u32| ((v as usize / g) * g).max(g);
    let (width, height) = match &init {
        Some(img) => (
            args.sampling.width.unwrap_or(own(img.width())),
            args.sampling.height.unwrap_or(own(img.height())),
        ),
        None => (
            args.sampling.width.unwrap_or(native),
            args.sampling.height.unwrap_or(native),
        ),
    };
    let mut params = GenerateParams {
        prompt: String::new(),
        negative_prompt: args.negative_prompt,
        steps: args.sampling.steps,
        cfg: args.sampling.cfg,
        seed: args.sampling.seed,
        width,
        height,
        scheduler,
        clip_skip: args.clip_skip,
        strength: args.strength,
        vae_tile: args.vae_tile,
        taesd: args.taesd.is_some(),
        prune,
        tile_size: args.tile_size,
    };
    // Sizes, steps and tiles against this model and adapter, before the first step.
    sd.check(&params).map_err(|e| e.to_string())?;
    for (what, text) in prompts
        .iter()
        .map(|(_, p)| ("prompt", p.as_str()))
        .chain(std::iter::once((
            "negative prompt",
            params.negative_prompt.as_str(),
        )))
    {
        let (tokens, window) = sd.prompt_tokens(text).map_err(|e| e.to_string())?;
        if tokens > window {
            eprintln!(
                "warning: the {what} {:?} is {tokens} tokens long; the text encoder reads the first {window}, the rest is ignored",
                truncate_chars(text, 40)
            );
        }
    }
    // diffusers resizes with Lanczos too.
    let init_rgba = init.map(|img| {
        let sized = if (img.width() as usize, img.height() as usize) == (width, height) {
            img
        } else {
            image::imageops::resize(
                &img,
                width as u32,
                height as u32,
                image::imageops::FilterType::Lanczos3,
            )
        };
        sized.into_raw()
    });
    let jobs = prompts
        .iter()
        .flat_map(|(line, prompt)| (0..args.batch_count).map(move |k| (*line, prompt.as_str(), k)));
    for (job, (line, prompt, k)) in jobs.enumerate() {
        params.prompt = prompt.to_string();
        params.seed = args.sampling.seed.wrapping_add(k as u64);
        let name = |path: &std::path::Path| output_name(path, line, k, args.batch_count);
        let out = name(&args.out);
        if line.is_some() {
            eprintln!("{}", params.prompt);
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:30}] {per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        gpu.reset_peak();
        let mut on_step = |s: fovea_pipeline::StepInfo| {
            bar.set_length(s.total as u64);
            bar.set_position(s.step as u64);
            true
        };
        let image = match &init_rgba {
            Some(rgba) => pollster::block_on(sd.img2img(&params, rgba, None, &mut on_step)),
            None => pollster::block_on(sd.txt2img(&params, None, &mut on_step)),
        }
        .map_err(|e| e.to_string())?;
        bar.finish_and_clear();
        image::save_buffer(
            &out,
            &image.rgba,
            image.width as u32,
            image.height as u32,
            image::ExtendedColorType::Rgba8,
        )
        .map_err(|e| format!("{}: {e}", out.display()))?;
        let t = image.timings;
        let peak = gpu.pool_stats().peak_in_use;
        let tiles = if t.decode_tiles > 0 {
            format!(" in {} tiles", t.decode_tiles)
        } else {
            String::new()
        };
        eprintln!(
            "wrote {} ({}x{}, seed {})\n  load {:.0} ms | text {:.0} ms | denoise {:.0} ms ({} steps, {:.2} steps/s) | decode {:.0} ms{tiles} | peak GPU memory {:.1} MiB (activations)",
            out.display(),
            image.width,
            image.height,
            params.seed,
            if job == 0 { load_ms } else { 0.0 },
            t.text_ms,
            t.denoise_ms,
            t.steps,
            t.steps as f64 / (t.denoise_ms / 1000.0),
            t.decode_ms,
            peak as f64 / (1u64 << 20) as f64,
        );
        if let Some(r) = &image.prune {
            if args.prune_stats {
                eprint!("{}", prune_report::table(r));
            } else {
                eprintln!(
                    "  pruning: {:.1}% of attention FLOPs skipped (threshold {:.3})",
                    100.0 * r.stats.skipped_share(),
                    r.threshold
                );
            }
            if let Some(map) = &args.prune_map {
                let path = name(map);
                prune_report::heat_map(r, &path)?;
                eprintln!("  wrote {}", path.display());
            }
        }
    }
    pipeline_list::save(&gpu, &setup);
    Ok(())
}

/// The prompts to draw: `--prompt` alone (no line number), or each prompt line of
/// `--from-file` with its 1-based line number.
fn prompt_list(
    prompt: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Vec<(Option<usize>, String)>, String> {
    let Some(file) = file else {
        return Ok(vec![(None, prompt.unwrap_or_default().to_string())]);
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("--from-file {}: {e}", file.display()))?;
    let prompts: Vec<_> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| (Some(i + 1), l.trim().to_string()))
        .collect();
    if prompts.is_empty() {
        return Err(format!("--from-file {}: no prompts in it", file.display()));
    }
    Ok(prompts)
}

/// Where image `k` (0-based) of prompt line `line` goes: `out.png`, `out_N.png` for line
/// N of `--from-file`, then `_K` (1-based) with `--batch-count` above 1.
fn output_name(
    path: &std::path::Path,
    line: Option<usize>,
    k: usize,
    batch_count: usize,
) -> PathBuf {
    let path = match line {
        Some(n) => numbered(path, n),
        None => path.to_path_buf(),
    };
    if batch_count == 1 {
        path
    } else {
        numbered(&path, k + 1)
    }
}

/// The first `n` characters of `text`, with "..." when cut.
fn truncate_chars(text: &str, n: usize) -> String {
    match text.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// `out.png` -> `out_3.png`.
fn numbered(path: &std::path::Path, k: usize) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("fovea");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("png");
    path.with_file_name(format!("{stem}_{k}.{ext}"))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

fn print_adapters() -> usize {
    let adapters = fovea_gpu::list_adapters();
    if adapters.is_empty() {
        println!(
            "no GPU adapters found (install a Vulkan driver, e.g. mesa-vulkan-drivers, or try WGPU_BACKEND=gl)"
        );
    }
    for (i, a) in adapters.iter().enumerate() {
        let info = &a.info;
        println!("adapter {i}: {}", info.name);
        println!(
            "  backend {:?}, type {:?}, driver {} {}",
            info.backend, info.device_type, info.driver, info.driver_info
        );
        println!("  fovea: {}", a.describe());
        let c = &a.capabilities;
        println!(
            "  features: shader-f16 {}, subgroups {}, timestamps {} (inside passes {}), cooperative matrix {}",
            yes_no(c.shader_f16),
            yes_no(c.subgroups),
            yes_no(c.timestamps),
            yes_no(c.timestamps_inside_passes),
            yes_no(c.cooperative_matrix)
        );
        let l = &a.limits;
        println!(
            "  limits: buffer {}, storage binding {}, {} storage buffers/stage, workgroup memory {} KiB, {} invocations/workgroup, subgroup size {}..{}",
            mib(l.max_buffer_size),
            mib(l.max_storage_buffer_binding_size),
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroup_storage_size / 1024,
            l.max_compute_invocations_per_workgroup,
            info.subgroup_min_size,
            info.subgroup_max_size,
        );
        match &a.usable {
            Ok(()) => println!("  usable by fovea: yes"),
            Err(e) => println!("  usable by fovea: no ({e})"),
        }
    }
    adapters.len()
}

fn self_check(seed: Option<u64>, no_f16: bool) -> Result<bool, fovea_gpu::GpuError> {
    let gpu = pollster::block_on(Gpu::new(GpuOptions {
        allow_f16: !no_f16,
        ..Default::default()
    }))?;
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!(
        "\nself-check on {} ({:?}), seed {seed}:",
        gpu.adapter_info().name,
        gpu.adapter_info().backend
    );
    let checks = pollster::block_on(fovea_gpu::selfcheck::self_check(&gpu, seed))?;
    let failed = checks.iter().filter(|c| !c.passed()).count();
    for c in &checks {
        println!("  {c}");
    }
    println!("{} passed, {failed} failed", checks.len() - failed);
    Ok(failed == 0)
}

fn main() -> ExitCode {
    // Before anything can start a thread (see runtime_dir).
    let runtime_dir = runtime_dir::ensure();
    let cli = Cli::parse();
    let default_filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .init();
    if let Some(dir) = runtime_dir {
        log::info!(
            "XDG_RUNTIME_DIR was not set: using {} (quiets the Wayland probe of Mesa's drivers)",
            dir.display()
        );
    }
    match cli.command {
        Command::PruneEval(args) => match prune_eval(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench(args) => match bench(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Generate(args) => match generate(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Info {
            self_check: run_check,
            seed,
            no_f16,
        } => {
            let found = print_adapters();
            if !run_check {
                return if found > 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            match self_check(seed, no_f16) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
