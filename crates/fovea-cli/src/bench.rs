//! `fovea bench`: kernel throughput and model times on one adapter, printed as a table
//! and saved as JSON.
//!
//! Every figure is the median of `--repeats` timed runs after `--warmup` untimed ones.
//! A run records the work into one batch, submits it and waits for the device to go
//! idle, so its wall time is what a caller sees (encoding + GPU). Where the adapter has
//! timestamp queries, one extra profiled run also sums the GPU time of every dispatch
//! (`gpu_ms`) and names the kernels that took longest.
//!
//! Models: the SD 1.5 and SD 2.1 UNet and the SD VAE decoder with random weights of their
//! real shapes (tests/fixtures/configs: the public configs and their tensor shapes, no
//! weights), and the default model's own text encoder, UNet and VAE.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fovea_gpu::{AttentionOptions, Batch, DType, Gpu, MatmulOptions, SkippedOutput, Tensor};
use fovea_models::{ClipTextModel, HeadPruning, UNet, UNetConfig, Vae, VaeConfig, Weights};
use serde::Serialize;

const SD15_UNET: (&str, &str) = (
    include_str!("../../../tests/fixtures/configs/sd15_unet.json"),
    include_str!("../../../tests/fixtures/configs/sd15_unet.keys.json"),
);
const SD21_UNET: (&str, &str) = (
    include_str!("../../../tests/fixtures/configs/sd21_unet.json"),
    include_str!("../../../tests/fixtures/configs/sd21_unet.keys.json"),
);
const SD_VAE: (&str, &str) = (
    include_str!("../../../tests/fixtures/configs/sd_vae.json"),
    include_str!("../../../tests/fixtures/configs/sd_vae.keys.json"),
);

/// What to measure.
pub struct BenchOptions {
    /// UNets: `sd15`, `sd21`, `default`.
    pub unets: Vec<String>,
    /// Latent sides for the SD UNets (the default model runs at its native size).
    pub latents: Vec<usize>,
    /// UNet batch sizes (2 = one classifier-free-guidance step).
    pub batches: Vec<usize>,
    /// Kernel size class: `small` (software adapters) or `full`.
    pub kernels: Option<String>,
    /// SD VAE decode at these image sides (random weights).
    pub vae_sides: Vec<usize>,
    /// Also time pruned UNet forwards at this threshold...
    pub prune: Option<f32>,
    /// ...or at the threshold that prunes this share of the heads measured on the first
    /// forward (random weights give near-uniform attention, which no fixed threshold
    /// below 1 prunes; this sets the skipped share to study speed).
    pub prune_share: Option<f32>,
    /// Timed runs per figure.
    pub repeats: usize,
    /// Untimed runs first.
    pub warmup: usize,
    /// Weights and activations.
    pub dtype: DType,
    /// The default model's folder.
    pub model: Option<PathBuf>,
    /// JSON output.
    pub out: PathBuf,
}

#[derive(Serialize, Default, Clone)]
struct Timing {
    /// Median wall time of a submitted-and-finished run.
    wall_ms: f64,
    /// All timed runs.
    runs_ms: Vec<f64>,
    /// Sum of per-dispatch GPU times of the profiled run (timestamp queries).
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_ms: Option<f64>,
    /// Dispatches per run.
    dispatches: u32,
    /// Peak GPU memory of tensors during the timed runs above what was live before
    /// them (weights, inputs): activations and outputs, MiB.
    peak_mib: f64,
    /// GPU time of the attention kernels (profiled run).
    #[serde(skip_serializing_if = "Option::is_none")]
    attention_ms: Option<f64>,
    /// GPU time of the per-head entropy reduction after each attention (runs whether or
    /// not pruning is on; the entropy sums inside the attention kernel are part of
    /// `attention_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    entropy_ms: Option<f64>,
    /// GPU time of the pruning decision: head mask and compaction (profiled run).
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_ms: Option<f64>,
    /// The 16 kernels with the most GPU time in the profiled run: (label, ms, calls).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    top_kernels: Vec<(String, f64, usize)>,
}

#[derive(Serialize)]
struct KernelRow {
    kernel: String,
    shape: String,
    /// Floating-point operations (2 per multiply-add) or bytes moved.
    work: f64,
    unit: &'static str,
    /// GFLOP/s or GB/s from the wall time (and from the GPU time where known).
    rate_wall: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_gpu: Option<f64>,
    timing: Timing,
}

#[derive(Serialize)]
struct ModelRow {
    model: String,
    part: String,
    /// Latent side (UNet, VAE) or tokens (text encoder).
    size: usize,
    batch: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pruned: Option<PrunedRow>,
    timing: Timing,
}

#[derive(Serialize)]
struct PrunedRow {
    threshold: f32,
    /// The requested share when the threshold was derived from one (`--prune-share`).
    #[serde(skip_serializing_if = "Option::is_none")]
    target_share: Option<f32>,
    /// Share of attention FLOPs skipped by the timed pruned forward.
    skipped_share: f64,
}

#[derive(Serialize)]
struct Report {
    adapter: String,
    backend: String,
    driver: String,
    /// Adapter class and the kernel variants it chose (`Gpu::describe`), so every figure
    /// can be traced to its kernels.
    kernel_plan: String,
    dtype: String,
    features: BTreeMap<&'static str, bool>,
    repeats: usize,
    warmup: usize,
    kernels: Vec<KernelRow>,
    models: Vec<ModelRow>,
}

/// Times `record` (which records one run into the batch and returns nothing useful).
fn time<F>(gpu: &Gpu, o: &BenchOptions, mut record: F) -> Result<Timing, String>
where
    F: FnMut(&mut Batch) -> Result<(), String>,
{
    let mut run = |profiled: bool| -> Result<(f64, u32, Option<Vec<fovea_gpu::OpTiming>>), String> {
        let start = Instant::now();
        let mut b = if profiled {
            gpu.profiled_batch()
        } else {
            gpu.batch()
        };
        record(&mut b)?;
        let n = b.dispatch_count();
        let submitted = b.submit().map_err(|e| e.to_string())?;
        let ops = if profiled {
            Some(pollster::block_on(submitted.timings()).map_err(|e| e.to_string())?)
        } else {
            drop(submitted);
            None
        };
        pollster::block_on(gpu.wait_idle()).map_err(|e| e.to_string())?;
        Ok((start.elapsed().as_secs_f64() * 1e3, n, ops))
    };
    for _ in 0..o.warmup {
        run(false)?;
    }
    gpu.reset_peak();
    let base = gpu.pool_stats().in_use;
    let mut runs = Vec::with_capacity(o.repeats);
    let mut dispatches = 0;
    for _ in 0..o.repeats.max(1) {
        let (ms, n, _) = run(false)?;
        runs.push(ms);
        dispatches = n;
    }
    let peak_mib = gpu.pool_stats().peak_in_use.saturating_sub(base) as f64 / (1u64 << 20) as f64;
    let mut t = Timing {
        wall_ms: median(&runs),
        runs_ms: runs,
        dispatches,
        peak_mib,
        ..Default::default()
    };
    if gpu.capabilities().timestamps {
        let (_, _, ops) = run(true)?;
        let ops = ops.unwrap_or_default();
        if !ops.is_empty() {
            t.gpu_ms = Some(ops.iter().map(|o| o.gpu_ns).sum::<f64>() / 1e6);
            let sum = |ends: &[&str]| {
                let ms: f64 = ops
                    .iter()
                    .filter(|o| ends.iter().any(|e| o.label.ends_with(e)))
                    .map(|o| o.gpu_ns / 1e6)
                    .sum();
                (ms > 0.0).then_some(ms)
            };
            t.attention_ms = sum(&["/attention", "/attention_cpu"]);
            t.entropy_ms = sum(&["/entropy_reduce"]);
            t.decision_ms = sum(&["/decide_heads", "/compact_heads"]);
            let mut by: BTreeMap<String, (f64, usize)> = BTreeMap::new();
            for op in ops {
                let e = by.entry(op.label).or_default();
                e.0 += op.gpu_ns / 1e6;
                e.1 += 1;
            }
            let mut top: Vec<_> = by.into_iter().map(|(k, (ms, n))| (k, ms, n)).collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            top.truncate(16);
            t.top_kernels = top;
        }
    }
    Ok(t)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// A tensor of values in [-1, 1] (a fixed pattern: timing does not care).
fn filled(gpu: &Gpu, label: &str, shape: &[usize], dtype: DType) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0) - 1.0)
        .collect();
    gpu.upload_f32(label, shape, dtype, &data)
        .map_err(|e| e.to_string())
}

fn gerr(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn kernels(gpu: &Gpu, o: &BenchOptions, full: bool) -> Result<Vec<KernelRow>, String> {
    let dt = o.dtype;
    let bytes = if dt == DType::F16 { 2.0 } else { 4.0 };
    let mut rows = Vec::new();
    let mut push = |kernel: &str, shape: String, work: f64, unit, t: Timing| {
        let per = |ms: f64| work / (ms / 1e3) / 1e9;
        rows.push(KernelRow {
            kernel: kernel.into(),
            shape,
            work,
            unit,
            rate_wall: per(t.wall_ms),
            rate_gpu: t.gpu_ms.map(per),
            timing: t,
        });
    };
    // Matmul (M, K) @ (K, N): a projection of 4096 tokens (full); on software adapters
    // a small one and issue 12's 512 and 1024 squares.
    let matmuls: &[(usize, usize, usize)] = if full {
        &[(4096, 1280, 1280)]
    } else {
        &[(512, 256, 256), (512, 512, 512), (1024, 1024, 1024)]
    };
    for &(m, k, n) in matmuls {
        let a = filled(gpu, "a", &[m, k], dt)?;
        let w = filled(gpu, "w", &[k, n], dt)?;
        let t = time(gpu, o, |b| {
            b.matmul(&a, &w, None, MatmulOptions::default())
                .map(drop)
                .map_err(gerr)
        })?;
        push(
            "matmul",
            format!("{m}x{k} @ {k}x{n}"),
            2.0 * (m * k * n) as f64,
            "GFLOP/s",
            t,
        );
        // The same product as a Linear layer: weight stored (N, K), as every
        // projection in the models (the software class's QUADS matmul path).
        let lw = filled(gpu, "linear w", &[n, k], dt)?;
        let t = time(gpu, o, |b| b.linear(&a, &lw, None).map(drop).map_err(gerr))?;
        push(
            "linear",
            format!("{m}x{k} @ ({n}x{k})^T"),
            2.0 * (m * k * n) as f64,
            "GFLOP/s",
            t,
        );
    }
    // 3x3 convolution, a UNet resnet's (software adapters: 64 and 128 channels at 32x32,
    // issue 12's shapes).
    let convs: &[(usize, usize, usize)] = if full {
        &[(2, 320, 64)]
    } else {
        &[(1, 64, 32), (1, 128, 32)]
    };
    for &(bn, c, hw) in convs {
        let x = filled(gpu, "x", &[bn, c, hw, hw], dt)?;
        let cw = filled(gpu, "conv w", &[c, c, 3, 3], dt)?;
        // As the models run it: where the plan takes the Winograd path, the weights are
        // transformed once, outside the timing (a model does it once per layer).
        let mut prep = gpu.batch();
        let t = if let Some(tile) = prep.winograd_tile(&x, &cw, 1, [1; 4]) {
            let u = prep.winograd_weights(&cw, tile).map_err(gerr)?;
            prep.submit().map_err(gerr)?;
            time(gpu, o, |b| {
                b.conv2d_winograd(&x, &u, None).map(drop).map_err(gerr)
            })?
        } else {
            time(gpu, o, |b| {
                b.conv2d(&x, &cw, None, 1, 1).map(drop).map_err(gerr)
            })?
        };
        push(
            "conv2d 3x3",
            format!("{bn}x{c}x{hw}x{hw} -> {c}"),
            2.0 * (bn * c * hw * hw * c * 9) as f64,
            "GFLOP/s",
            t,
        );
    }
    // The norm and elementwise rows' input: the first convolution's.
    let (bn, c, hw) = convs[0];
    let x = filled(gpu, "x", &[bn, c, hw, hw], dt)?;
    // Self-attention over a 64x64 latent's tokens (SD 2.1 first level: 5 heads of 64).
    let (ab, tokens, heads, hd) = if full {
        (2, 4096, 5, 64)
    } else {
        (1, 256, 4, 32)
    };
    let q = filled(gpu, "q", &[ab, tokens, heads * hd], dt)?;
    let t = time(gpu, o, |b| {
        b.attention(&q, &q, &q, &AttentionOptions::new(ab, heads, hd))
            .map(drop)
            .map_err(gerr)
    })?;
    push(
        "attention",
        format!("B{ab} N{tokens} H{heads} d{hd}"),
        4.0 * (ab * heads * tokens * tokens * hd) as f64,
        "GFLOP/s",
        t,
    );
    // Group norm + SiLU, memory bound; counted at its minimum traffic (read once, write
    // once: the kernel reads more, so this is the effective rate).
    let t = time(gpu, o, |b| {
        b.group_norm(&x, 32.min(c), None, 1e-5, true)
            .map(drop)
            .map_err(gerr)
    })?;
    push(
        "group_norm+silu",
        format!("{bn}x{c}x{hw}x{hw}"),
        2.0 * bytes * x.len() as f64,
        "GB/s",
        t,
    );
    let t = time(gpu, o, |b| b.silu(&x).map(drop).map_err(gerr))?;
    push(
        "silu",
        format!("{bn}x{c}x{hw}x{hw}"),
        2.0 * bytes * x.len() as f64,
        "GB/s",
        t,
    );
    Ok(rows)
}

fn parse_config<C: for<'de> serde::Deserialize<'de>>(name: &str, json: &str) -> Result<C, String> {
    serde_json::from_str(json).map_err(|e| format!("{name}: {e}"))
}

fn random_weights(name: &str, keys_json: &str) -> Result<Weights, String> {
    let keys: BTreeMap<String, Vec<usize>> =
        serde_json::from_str(keys_json).map_err(|e| format!("{name}: {e}"))?;
    let shapes: Vec<(String, Vec<usize>)> = keys.into_iter().collect();
    Ok(Weights::random(name, &shapes, 1))
}

fn unet_rows(
    gpu: &Gpu,
    o: &BenchOptions,
    name: &str,
    unet: &UNet,
    sides: &[usize],
    rows: &mut Vec<ModelRow>,
) -> Result<(), String> {
    let c = unet.config();
    for &side in sides {
        for &batch in &o.batches {
            let sample = filled(gpu, "sample", &[batch, c.in_channels, side, side], o.dtype)?;
            let ts = gpu
                .upload_f32("t", &[batch], DType::F32, &vec![500.0; batch])
                .map_err(gerr)?;
            let ctx = filled(gpu, "context", &[batch, 77, c.cross_attention_dim], o.dtype)?;
            let t = time(gpu, o, |b| {
                unet.forward(b, &sample, &ts, &ctx).map(drop).map_err(gerr)
            })?;
            eprintln!(
                "  {name} unet {side}x{side} batch {batch}: {:.1} ms",
                t.wall_ms
            );
            rows.push(ModelRow {
                model: name.into(),
                part: "unet".into(),
                size: side,
                batch,
                pruned: None,
                timing: t,
            });
            if o.prune.is_some() || o.prune_share.is_some() {
                // One measuring forward, then timed forwards that apply its decisions.
                let mut p = HeadPruning::new(0.0, 0.0, SkippedOutput::Keep);
                let mut b = gpu.batch();
                unet.forward_pruned(&mut b, &sample, &ts, &ctx, &mut p)
                    .map_err(gerr)?;
                b.submit().map_err(gerr)?;
                let threshold = match (o.prune, o.prune_share) {
                    (Some(t), _) => t,
                    (None, Some(share)) => {
                        let ent = pollster::block_on(p.read_entropies(gpu)).map_err(gerr)?;
                        share_threshold(&ent, share)
                    }
                    (None, None) => unreachable!("checked above"),
                };
                p.self_threshold = threshold;
                p.cross_threshold = threshold;
                p.apply = true;
                let t = time(gpu, o, |b| {
                    unet.forward_pruned(b, &sample, &ts, &ctx, &mut p)
                        .map(drop)
                        .map_err(gerr)
                })?;
                let mut stats = pollster::block_on(p.read_stats(gpu)).map_err(gerr)?;
                // The measuring forward above is set-up, not part of the timed work.
                stats.forwards = stats.forwards.saturating_sub(1);
                eprintln!(
                    "  {name} unet {side}x{side} batch {batch} pruned at {threshold:.4}: {:.1} ms, {:.1}% of attention skipped",
                    t.wall_ms,
                    100.0 * stats.skipped_share()
                );
                rows.push(ModelRow {
                    model: name.into(),
                    part: "unet".into(),
                    size: side,
                    batch,
                    pruned: Some(PrunedRow {
                        threshold,
                        target_share: o.prune_share,
                        skipped_share: stats.skipped_share(),
                    }),
                    timing: t,
                });
            }
        }
    }
    Ok(())
}

/// The threshold under which `share` of the measured heads' mean entropies fall (the
/// entropies are (2, B, H) per layer: means first).
fn share_threshold(entropies: &[Vec<f32>], share: f32) -> f32 {
    let mut means: Vec<f32> = entropies
        .iter()
        .flat_map(|e| e[..e.len() / 2].iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    if means.is_empty() {
        return 0.0;
    }
    means.sort_by(f32::total_cmp);
    let k = ((share * means.len() as f32).round() as usize).min(means.len());
    if k == 0 {
        0.0
    } else if k == means.len() {
        1.0 + f32::EPSILON
    } else {
        // Between the k-th and (k+1)-th smallest: exactly k heads fall below it.
        0.5 * (means[k - 1] + means[k])
    }
}

fn vae_row(
    gpu: &Gpu,
    o: &BenchOptions,
    name: &str,
    vae: &Vae,
    latent: usize,
) -> Result<ModelRow, String> {
    let z = filled(
        gpu,
        "z",
        &[1, vae.config().latent_channels, latent, latent],
        o.dtype,
    )?;
    let t = time(gpu, o, |b| vae.decode(b, &z).map(drop).map_err(gerr))?;
    eprintln!(
        "  {name} vae decode {latent}x{latent} latent: {:.1} ms",
        t.wall_ms
    );
    Ok(ModelRow {
        model: name.into(),
        part: "vae_decode".into(),
        size: latent,
        batch: 1,
        pruned: None,
        timing: t,
    })
}

pub fn run(gpu: &Gpu, o: &BenchOptions) -> Result<(), String> {
    let info = gpu.adapter_info();
    let caps = gpu.capabilities();
    eprintln!("adapter: {} ({:?}), {}", info.name, info.backend, o.dtype);
    let mut report = Report {
        adapter: info.name.clone(),
        backend: format!("{:?}", info.backend),
        driver: format!("{} {}", info.driver, info.driver_info),
        kernel_plan: gpu.describe(),
        dtype: o.dtype.to_string(),
        features: BTreeMap::from([
            ("shader_f16", caps.shader_f16),
            ("subgroups", caps.subgroups),
            ("timestamps", caps.timestamps),
            ("cooperative_matrix", caps.cooperative_matrix),
        ]),
        repeats: o.repeats,
        warmup: o.warmup,
        kernels: Vec::new(),
        models: Vec::new(),
    };
    let save = |r: &Report| -> Result<(), String> {
        let json = serde_json::to_string_pretty(r).map_err(gerr)?;
        std::fs::write(&o.out, json + "\n").map_err(|e| format!("{}: {e}", o.out.display()))
    };
    if let Some(size) = &o.kernels {
        report.kernels = kernels(gpu, o, size == "full")?;
        save(&report)?;
    }
    for name in &o.unets {
        match name.as_str() {
            "sd15" | "sd21" => {
                let (cfg, keys) = if name == "sd15" { SD15_UNET } else { SD21_UNET };
                let file = format!("{name}_unet.json");
                let config: UNetConfig = parse_config(&file, cfg)?;
                config.validate(Path::new(&file)).map_err(gerr)?;
                let weights = random_weights(&file, keys)?;
                let unet = UNet::from_weights(gpu, config, &weights, o.dtype).map_err(gerr)?;
                drop(weights);
                unet_rows(gpu, o, name, &unet, &o.latents, &mut report.models)?;
            }
            "default" => {
                let dir = crate::model_dir(o.model.as_ref())?;
                let unet = UNet::load(gpu, &dir.join("unet"), o.dtype).map_err(gerr)?;
                let native = unet.config().sample_size.unwrap_or(64);
                unet_rows(gpu, o, "default", &unet, &[native], &mut report.models)?;
                drop(unet);
                let te =
                    ClipTextModel::load(gpu, &dir.join("text_encoder"), o.dtype).map_err(gerr)?;
                let vocab = te.config().vocab_size;
                let ids: Vec<Vec<u32>> = (0..2)
                    .map(|r| (0..77).map(|i| ((i * 7 + r) % vocab) as u32).collect())
                    .collect();
                let t = time(gpu, o, |b| te.forward(b, &ids, 0).map(drop).map_err(gerr))?;
                eprintln!(
                    "  default text encoder (2 x 77 tokens): {:.1} ms",
                    t.wall_ms
                );
                report.models.push(ModelRow {
                    model: "default".into(),
                    part: "text_encoder".into(),
                    size: 77,
                    batch: 2,
                    pruned: None,
                    timing: t,
                });
                drop(te);
                let vae = Vae::load(gpu, &dir.join("vae"), o.dtype).map_err(gerr)?;
                report
                    .models
                    .push(vae_row(gpu, o, "default", &vae, native)?);
            }
            other => return Err(format!("--unets: unknown `{other}` (sd15, sd21, default)")),
        }
        save(&report)?;
        gpu.trim_pool();
    }
    if !o.vae_sides.is_empty() {
        let config: VaeConfig = parse_config("sd_vae.json", SD_VAE.0)?;
        config.validate(Path::new("sd_vae.json")).map_err(gerr)?;
        let weights = random_weights("sd_vae.json", SD_VAE.1)?;
        let vae = Vae::from_weights(gpu, config, &weights, o.dtype).map_err(gerr)?;
        drop(weights);
        for &side in &o.vae_sides {
            report.models.push(vae_row(gpu, o, "sd", &vae, side / 8)?);
            save(&report)?;
        }
    }
    print_table(&report);
    save(&report)?;
    eprintln!("wrote {}", o.out.display());
    Ok(())
}

fn print_table(r: &Report) {
    println!("{} ({}), {}", r.adapter, r.backend, r.dtype);
    println!("{}", r.kernel_plan);
    if !r.kernels.is_empty() {
        println!(
            "{:<18} {:<28} {:>10} {:>10} {:>14}",
            "kernel", "shape", "wall ms", "gpu ms", "rate (wall/gpu)"
        );
        for k in &r.kernels {
            println!(
                "{:<18} {:<28} {:>10.3} {:>10} {:>8.1}/{} {}",
                k.kernel,
                k.shape,
                k.timing.wall_ms,
                k.timing.gpu_ms.map_or("-".into(), |g| format!("{g:.3}")),
                k.rate_wall,
                k.rate_gpu.map_or("-".into(), |g| format!("{g:.1}")),
                k.unit
            );
        }
    }
    if !r.models.is_empty() {
        println!(
            "{:<8} {:<13} {:>5} {:>5} {:>10} {:>10} {:>10} {:>9}",
            "model", "part", "size", "batch", "wall ms", "gpu ms", "peak MiB", "pruned"
        );
        for m in &r.models {
            println!(
                "{:<8} {:<13} {:>5} {:>5} {:>10.1} {:>10} {:>10.1} {:>9}",
                m.model,
                m.part,
                m.size,
                m.batch,
                m.timing.wall_ms,
                m.timing.gpu_ms.map_or("-".into(), |g| format!("{g:.1}")),
                m.timing.peak_mib,
                m.pruned
                    .as_ref()
                    .map_or("-".into(), |p| format!("{:.0}%", 100.0 * p.skipped_share)),
            );
            if let (Some(d), Some(a), true) = (
                m.timing.decision_ms,
                m.timing.attention_ms,
                m.pruned.is_some(),
            ) {
                println!(
                    "{:>40} attention {a:.2} ms (+ entropy reduction {:.2} ms), pruning decision {d:.2} ms ({:.1}% of attention)",
                    "",
                    m.timing.entropy_ms.unwrap_or(0.0),
                    100.0 * d / a
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::share_threshold;

    #[test]
    fn share_threshold_prunes_that_share_of_the_measured_heads() {
        // Two layers of (2, B=1, H=4): means first, then spreads (ignored).
        let layers = vec![
            vec![0.9, 0.1, 0.5, 0.7, 9.0, 9.0, 9.0, 9.0],
            vec![0.3, 0.8, f32::NAN, 0.2, 0.0, 0.0, 0.0, 0.0],
        ];
        let below = |t: f32| {
            layers
                .iter()
                .flat_map(|l| l[..4].iter())
                .filter(|v| **v < t)
                .count()
        };
        // 7 finite means: 0.1 0.2 0.3 0.5 0.7 0.8 0.9.
        assert_eq!(below(share_threshold(&layers, 0.0)), 0);
        assert_eq!(below(share_threshold(&layers, 3.0 / 7.0)), 3);
        assert_eq!(below(share_threshold(&layers, 0.5)), 4);
        assert_eq!(below(share_threshold(&layers, 1.0)), 7);
    }
}
