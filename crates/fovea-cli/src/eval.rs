//! `fovea prune-eval`: a prompt suite generated with pruning off and on from the same
//! seeds, reporting per prompt the FLOP-weighted share of attention work skipped, the
//! image difference (PSNR, SSIM), time and peak memory; averages per background type;
//! the detail-word effect on the same scenes; and a CFG sweep. Writes report.json,
//! report.md and pairs.png (unpruned | pruned | difference x4, one row per prompt).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fovea_gpu::Gpu;
use fovea_pipeline::metrics::{psnr, ssim};
use fovea_pipeline::{GenerateParams, Image, StableDiffusion};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Suite {
    #[serde(default)]
    negative_prompt: String,
    prompts: Vec<SuitePrompt>,
}

#[derive(Deserialize, Clone)]
struct SuitePrompt {
    id: String,
    #[serde(default)]
    scene: String,
    background: String,
    #[serde(default)]
    lang: String,
    #[serde(default)]
    detail: bool,
    prompt: String,
}

/// One prompt's outcome.
#[derive(Serialize)]
pub struct Row {
    id: String,
    background: String,
    lang: String,
    detail: bool,
    threshold: f32,
    skipped_share: f64,
    psnr_db: f64,
    ssim: f64,
    denoise_ms_unpruned: f64,
    denoise_ms_pruned: f64,
    peak_bytes_unpruned: u64,
    peak_bytes_pruned: u64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    adapter: String,
    settings: BTreeMap<&'static str, String>,
    rows: Vec<Row>,
    by_background: BTreeMap<String, Summary>,
    overall: Summary,
    detail_effect: Vec<DetailPair>,
    cfg_sweep: Vec<(f32, f64)>,
    checks: Vec<(String, bool)>,
}

#[derive(Serialize, Default, Clone)]
struct Summary {
    prompts: usize,
    mean_skipped_share: f64,
    min_psnr_db: f64,
    min_ssim: f64,
    mean_speedup: f64,
}

#[derive(Serialize)]
struct DetailPair {
    scene: String,
    lang: String,
    skipped_without: f64,
    skipped_with: f64,
}

fn summarize<'a>(rows: impl Iterator<Item = &'a Row>) -> Summary {
    let mut s = Summary {
        min_psnr_db: f64::INFINITY,
        min_ssim: f64::INFINITY,
        ..Default::default()
    };
    for r in rows {
        s.prompts += 1;
        s.mean_skipped_share += r.skipped_share;
        s.min_psnr_db = s.min_psnr_db.min(r.psnr_db);
        s.min_ssim = s.min_ssim.min(r.ssim);
        s.mean_speedup += r.denoise_ms_unpruned / r.denoise_ms_pruned.max(1e-9);
    }
    if s.prompts > 0 {
        s.mean_skipped_share /= s.prompts as f64;
        s.mean_speedup /= s.prompts as f64;
    }
    s
}

/// What `prune-eval` runs.
pub struct EvalOptions {
    pub suite: PathBuf,
    pub out: PathBuf,
    pub limit: Option<usize>,
    pub cfg_sweep: Vec<f32>,
}

fn run(gpu: &Gpu, sd: &StableDiffusion, p: &GenerateParams) -> Result<(Image, u64), String> {
    gpu.reset_peak();
    let image =
        pollster::block_on(sd.txt2img(p, None, &mut |_| true)).map_err(|e| e.to_string())?;
    Ok((image, gpu.pool_stats().peak_in_use))
}

/// Runs the suite; `base` carries the model settings and the pruning policy (enabled).
pub fn prune_eval(
    gpu: &Gpu,
    sd: &StableDiffusion,
    model: &Path,
    base: &GenerateParams,
    opts: &EvalOptions,
) -> Result<(), String> {
    let text = std::fs::read_to_string(&opts.suite)
        .map_err(|e| format!("{}: {e}", opts.suite.display()))?;
    let suite: Suite =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", opts.suite.display()))?;
    let prompts: Vec<SuitePrompt> = suite
        .prompts
        .iter()
        .take(opts.limit.unwrap_or(usize::MAX))
        .cloned()
        .collect();
    if prompts.is_empty() {
        return Err(format!("{}: no prompts", opts.suite.display()));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| format!("{}: {e}", opts.out.display()))?;
    let (w, h) = (base.width, base.height);
    let mut sheet = image::RgbaImage::new((3 * w + 8) as u32, (prompts.len() * (h + 4)) as u32);
    let mut rows = Vec::new();
    for (k, sp) in prompts.iter().enumerate() {
        let mut p = base.clone();
        p.prompt = sp.prompt.clone();
        p.negative_prompt = suite.negative_prompt.clone();
        p.prune.enabled = false;
        let (plain, peak_plain) = run(gpu, sd, &p)?;
        p.prune.enabled = true;
        let (pruned, peak_pruned) = run(gpu, sd, &p)?;
        let report = pruned.prune.as_ref().expect("pruning was on");
        let row = Row {
            id: sp.id.clone(),
            background: sp.background.clone(),
            lang: sp.lang.clone(),
            detail: sp.detail,
            threshold: report.threshold,
            skipped_share: report.stats.skipped_share(),
            psnr_db: psnr(&plain.rgba, &pruned.rgba),
            ssim: ssim(&plain.rgba, &pruned.rgba, w, h),
            denoise_ms_unpruned: plain.timings.denoise_ms,
            denoise_ms_pruned: pruned.timings.denoise_ms,
            peak_bytes_unpruned: peak_plain,
            peak_bytes_pruned: peak_pruned,
        };
        eprintln!(
            "[{}/{}] {:<28} skipped {:5.1}%  PSNR {:6.2} dB  SSIM {:.4}",
            k + 1,
            prompts.len(),
            sp.id,
            100.0 * row.skipped_share,
            row.psnr_db,
            row.ssim
        );
        draw_pair(&mut sheet, k * (h + 4), &plain, &pruned);
        rows.push(row);
    }
    // Detail words: the same scene and language with and without them.
    let mut detail_effect = Vec::new();
    for r in rows.iter().filter(|r| !r.detail) {
        let scene = prompts
            .iter()
            .find(|p| p.id == r.id)
            .map(|p| p.scene.clone())
            .unwrap_or_default();
        if let Some(d) = rows.iter().find(|d| {
            d.detail
                && d.lang == r.lang
                && prompts
                    .iter()
                    .any(|p| p.id == d.id && p.scene == scene && !scene.is_empty())
        }) {
            detail_effect.push(DetailPair {
                scene,
                lang: r.lang.clone(),
                skipped_without: r.skipped_share,
                skipped_with: d.skipped_share,
            });
        }
    }
    // CFG sweep on the first prompt.
    let mut cfg_sweep = Vec::new();
    for &cfg in &opts.cfg_sweep {
        let mut p = base.clone();
        p.prompt = prompts[0].prompt.clone();
        p.cfg = cfg;
        p.prune.enabled = true;
        let (img, _) = run(gpu, sd, &p)?;
        cfg_sweep.push((cfg, img.prune.map_or(0.0, |r| r.stats.skipped_share())));
    }
    let mut by_background = BTreeMap::new();
    for bg in rows
        .iter()
        .map(|r| r.background.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        by_background.insert(
            bg.clone(),
            summarize(rows.iter().filter(|r| r.background == bg)),
        );
    }
    let overall = summarize(rows.iter());
    let simple = summarize(
        rows.iter()
            .filter(|r| r.background == "plain" || r.background == "sky"),
    );
    let checks = vec![
        (
            "mean attention work skipped >= 35%".to_string(),
            overall.mean_skipped_share >= 0.35,
        ),
        (
            "plain/sky work skipped >= 50%".to_string(),
            simple.prompts > 0 && simple.mean_skipped_share >= 0.50,
        ),
        (
            "PSNR >= 30 dB on every prompt".to_string(),
            overall.min_psnr_db >= 30.0,
        ),
        (
            "SSIM >= 0.95 on every prompt".to_string(),
            overall.min_ssim >= 0.95,
        ),
        (
            "detail words never increase the skipped share".to_string(),
            detail_effect
                .iter()
                .all(|d| d.skipped_with <= d.skipped_without + 1e-12),
        ),
        (
            "skipped share falls monotonically as CFG rises".to_string(),
            cfg_sweep.windows(2).all(|w| w[1].1 <= w[0].1 + 1e-12),
        ),
    ];
    let mut settings = BTreeMap::new();
    settings.insert("steps", base.steps.to_string());
    settings.insert("cfg", base.cfg.to_string());
    settings.insert("seed", base.seed.to_string());
    settings.insert("size", format!("{w}x{h}"));
    settings.insert("threshold", base.prune.threshold.to_string());
    settings.insert("guard", base.prune.guard.to_string());
    settings.insert("skip", base.prune.skip.to_string());
    settings.insert("refresh", base.prune.refresh.to_string());
    let report = Report {
        model: model.display().to_string(),
        adapter: format!(
            "{} ({:?})",
            gpu.adapter_info().name,
            gpu.adapter_info().backend
        ),
        settings,
        rows,
        by_background,
        overall,
        detail_effect,
        cfg_sweep,
        checks,
    };
    let json = serde_json::to_string_pretty(&report).expect("serialisable");
    write(&opts.out.join("report.json"), json.as_bytes())?;
    write(&opts.out.join("report.md"), markdown(&report).as_bytes())?;
    let sheet_path = opts.out.join("pairs.png");
    sheet
        .save(&sheet_path)
        .map_err(|e| format!("{}: {e}", sheet_path.display()))?;
    eprint!("{}", markdown_summary(&report));
    eprintln!(
        "wrote {}/report.json, report.md, pairs.png",
        opts.out.display()
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Unpruned, pruned and their absolute difference x4, side by side at row `top`.
fn draw_pair(sheet: &mut image::RgbaImage, top: usize, a: &Image, b: &Image) {
    let (w, h) = (a.width, a.height);
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) * 4;
            let pa = [a.rgba[i], a.rgba[i + 1], a.rgba[i + 2], 255];
            let pb = [b.rgba[i], b.rgba[i + 1], b.rgba[i + 2], 255];
            let mut d = [0u8, 0, 0, 255];
            for c in 0..3 {
                d[c] = ((pa[c] as i32 - pb[c] as i32).unsigned_abs() * 4).min(255) as u8;
            }
            let yy = (top + y) as u32;
            sheet.put_pixel(x as u32, yy, image::Rgba(pa));
            sheet.put_pixel((w + 4 + x) as u32, yy, image::Rgba(pb));
            sheet.put_pixel((2 * w + 8 + x) as u32, yy, image::Rgba(d));
        }
    }
}

fn markdown_summary(r: &Report) -> String {
    let mut s = String::new();
    s.push_str("| background | prompts | work skipped | min PSNR (dB) | min SSIM | speed-up |\n");
    s.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for (bg, x) in r
        .by_background
        .iter()
        .chain([(&"all".to_string(), &r.overall)])
    {
        s.push_str(&format!(
            "| {bg} | {} | {:.1}% | {:.2} | {:.4} | {:.2}x |\n",
            x.prompts,
            100.0 * x.mean_skipped_share,
            x.min_psnr_db,
            x.min_ssim,
            x.mean_speedup
        ));
    }
    s.push('\n');
    for (name, ok) in &r.checks {
        s.push_str(&format!("- [{}] {name}\n", if *ok { "x" } else { " " }));
    }
    s
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# Pruning evaluation\n\nModel `{}` on {}; settings: {}.\n\n## Summary\n\n",
        r.model,
        r.adapter,
        r.settings
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.push_str(&markdown_summary(r));
    s.push_str("\n## Detail words (same scene)\n\n| scene | lang | skipped without | skipped with |\n| --- | --- | --- | --- |\n");
    for d in &r.detail_effect {
        s.push_str(&format!(
            "| {} | {} | {:.1}% | {:.1}% |\n",
            d.scene,
            d.lang,
            100.0 * d.skipped_without,
            100.0 * d.skipped_with
        ));
    }
    s.push_str("\n## CFG sweep (first prompt)\n\n| CFG | work skipped |\n| --- | --- |\n");
    for (cfg, share) in &r.cfg_sweep {
        s.push_str(&format!("| {cfg} | {:.1}% |\n", 100.0 * share));
    }
    s.push_str("\n## Per prompt\n\n| id | threshold | work skipped | PSNR (dB) | SSIM | denoise ms off / on | peak MiB off / on |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for x in &r.rows {
        s.push_str(&format!(
            "| {} | {:.3} | {:.1}% | {:.2} | {:.4} | {:.0} / {:.0} | {:.1} / {:.1} |\n",
            x.id,
            x.threshold,
            100.0 * x.skipped_share,
            x.psnr_db,
            x.ssim,
            x.denoise_ms_unpruned,
            x.denoise_ms_pruned,
            x.peak_bytes_unpruned as f64 / 1048576.0,
            x.peak_bytes_pruned as f64 / 1048576.0
        ));
    }
    s.push_str(
        "\nImages: `pairs.png` (unpruned | pruned | difference x4 per row, in suite order).\n",
    );
    s
}
