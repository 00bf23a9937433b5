//! `fovea`: the command-line front end. `fovea generate` makes an image from a prompt
//! with a diffusers Stable Diffusion folder; `fovea info` lists the GPU adapters wgpu
//! can see, with what fovea uses of each, and `--self-check` runs every kernel on the
//! chosen adapter against the CPU references.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fovea_gpu::{DType, Gpu, GpuOptions};
use fovea_pipeline::{GenerateParams, SchedulerKind, StableDiffusion};

#[derive(Parser)]
#[command(
    name = "fovea",
    version,
    about = "Portable text-to-image engine on WebGPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an image from a text prompt.
    Generate(GenerateArgs),
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
    /// A diffusers Stable Diffusion folder (model_index.json, unet/, vae/, ...).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// What to draw.
    #[arg(long, short = 'p')]
    prompt: String,
    /// What to avoid (used with --cfg above 1).
    #[arg(long, short = 'n', default_value = "")]
    negative_prompt: String,
    /// Denoising steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Classifier-free guidance scale (1 disables guidance).
    #[arg(long, default_value_t = 7.5)]
    cfg: f32,
    /// Seed of the initial noise (fovea's own generator, the same on every platform).
    #[arg(long, short = 's', default_value_t = 0)]
    seed: u64,
    /// Width in pixels (default: the model's native size).
    #[arg(long, short = 'W')]
    width: Option<usize>,
    /// Height in pixels (default: the model's native size).
    #[arg(long, short = 'H')]
    height: Option<usize>,
    /// Sampler: euler, euler_a, ddim, dpmpp_2m, lcm (default: the folder's scheduler).
    #[arg(long)]
    scheduler: Option<String>,
    /// CLIP layers to skip from the end.
    #[arg(long, default_value_t = 0)]
    clip_skip: usize,
    /// Use f32 weights and activations even when the adapter has shader-f16.
    #[arg(long)]
    f32: bool,
    /// Output PNG.
    #[arg(long, short = 'o', default_value = "fovea.png")]
    out: PathBuf,
}

fn generate(args: GenerateArgs) -> Result<(), String> {
    let gpu = pollster::block_on(Gpu::new(GpuOptions::default())).map_err(|e| e.to_string())?;
    let dtype = if gpu.capabilities().shader_f16 && !args.f32 {
        DType::F16
    } else {
        DType::F32
    };
    eprintln!(
        "adapter: {} ({:?}), {dtype}",
        gpu.adapter_info().name,
        gpu.adapter_info().backend
    );
    let load_start = std::time::Instant::now();
    let sd = StableDiffusion::load(&gpu, &args.model, dtype).map_err(|e| e.to_string())?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1000.0;
    let scheduler = args
        .scheduler
        .as_deref()
        .map(SchedulerKind::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    let native = sd.native_size();
    let params = GenerateParams {
        prompt: args.prompt,
        negative_prompt: args.negative_prompt,
        steps: args.steps,
        cfg: args.cfg,
        seed: args.seed,
        width: args.width.unwrap_or(native),
        height: args.height.unwrap_or(native),
        scheduler,
        clip_skip: args.clip_skip,
    };
    let bar = indicatif::ProgressBar::new(params.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    gpu.reset_peak();
    let image = pollster::block_on(sd.txt2img(&params, None, &mut |s| {
        bar.set_position(s.step as u64);
        true
    }))
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    image::save_buffer(
        &args.out,
        &image.rgba,
        image.width as u32,
        image.height as u32,
        image::ExtendedColorType::Rgba8,
    )
    .map_err(|e| format!("{}: {e}", args.out.display()))?;
    let t = image.timings;
    let peak = gpu.pool_stats().peak_in_use;
    eprintln!(
        "wrote {} ({}x{}, seed {})\n  load {:.0} ms | text {:.0} ms | denoise {:.0} ms ({:.2} steps/s) | decode {:.0} ms | peak GPU memory {:.1} MiB (activations)",
        args.out.display(),
        image.width,
        image.height,
        params.seed,
        load_ms,
        t.text_ms,
        t.denoise_ms,
        t.steps as f64 / (t.denoise_ms / 1000.0),
        t.decode_ms,
        peak as f64 / (1u64 << 20) as f64,
    );
    Ok(())
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => match generate(args) {
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
