//! `fovea`: the command-line front end. `fovea info` lists the GPU adapters wgpu can
//! see, with what fovea uses of each, and `--self-check` runs every kernel on the
//! chosen adapter against the CPU references.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fovea_gpu::{Gpu, GpuOptions};

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
