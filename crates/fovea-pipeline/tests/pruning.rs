//! Attention pruning in whole generations on the tiny pipeline: threshold 0 reproduces
//! the unpruned image exactly, a positive threshold skips work and says how much, and
//! policies are validated.

mod common;

use common::{gpu, load, psnr};
use fovea_gpu::DType;
use fovea_pipeline::{GenerateParams, PrunePolicy, SkipMode};

fn params(prune: PrunePolicy) -> GenerateParams {
    GenerateParams {
        prompt: "a red apple on a blue striped background".into(),
        negative_prompt: "blurry".into(),
        steps: 4,
        cfg: 7.5,
        width: 16,
        height: 16,
        seed: 11,
        prune,
        ..Default::default()
    }
}

/// Pruning measured on earlier steps (no in-step probe, whatever the step count).
fn on(threshold: f32, skip: SkipMode, refresh: usize) -> PrunePolicy {
    PrunePolicy {
        enabled: true,
        threshold,
        skip,
        refresh,
        probe_steps: 0,
        ..Default::default()
    }
}

#[test]
fn threshold_zero_is_the_unpruned_image_and_higher_skips_work() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    let run = |p: &GenerateParams| pollster::block_on(sd.txt2img(p, None, &mut |_| true)).unwrap();
    let plain = run(&params(PrunePolicy::default()));
    assert!(plain.prune.is_none());
    for skip in [SkipMode::Zero, SkipMode::Cached] {
        let zero = run(&params(on(0.0, skip, 0)));
        assert_eq!(zero.rgba, plain.rgba, "{skip}");
        assert_eq!(zero.prune.unwrap().stats.skipped_share(), 0.0);
    }
    // Threshold 1 (every head short of uniform attention), measured once: the three
    // later steps skip all attention.
    for skip in [SkipMode::Zero, SkipMode::Cached] {
        let all = run(&params(on(1.0, skip, 0)));
        let report = all.prune.unwrap();
        let layers = report.stats.layers.len();
        assert_eq!(
            layers, 8,
            "tiny sd1 UNet: 4 transformers (1 down, 1 mid, 2 up) x self + cross"
        );
        assert_eq!(report.stats.entries.len(), 3 * layers);
        let share = report.stats.skipped_share();
        assert!((share - 0.75).abs() < 1e-9, "{skip}: {share}");
        eprintln!(
            "all heads skipped on 3 of 4 steps ({skip}): PSNR {:.1} dB against unpruned",
            psnr(&all.rgba, &plain.rgba)
        );
    }
    // Re-measuring every 2 steps: steps 0 and 2 measure, 1 and 3 apply.
    let half = run(&params(on(1.0, SkipMode::Cached, 2)));
    let steps: Vec<usize> = half
        .prune
        .unwrap()
        .stats
        .entries
        .iter()
        .map(|e| e.0)
        .collect();
    assert!(steps.iter().all(|&s| s == 1 || s == 3), "{steps:?}");
}

#[test]
fn prompt_words_and_guidance_set_the_threshold() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    let run = |p: &GenerateParams| {
        pollster::block_on(sd.txt2img(p, None, &mut |_| true))
            .unwrap()
            .prune
            .unwrap()
    };
    let base = run(&params(on(0.4, SkipMode::Cached, 0)));
    assert_eq!(base.threshold, 0.4);
    assert!(base.detail_words.is_empty());
    let detailed = run(&GenerateParams {
        prompt: "a red apple, highly detailed, 纹理清晰".into(),
        ..params(on(0.4, SkipMode::Cached, 0))
    });
    assert_eq!(detailed.threshold, 0.2);
    assert_eq!(
        detailed.detail_words,
        ["highly detailed", "detailed", "纹理清晰", "纹理"]
    );
    let strong = run(&GenerateParams {
        cfg: 12.5,
        ..params(on(0.4, SkipMode::Cached, 0))
    });
    assert!(
        (strong.threshold - 0.4 / 1.5).abs() < 1e-6,
        "{}",
        strong.threshold
    );
}

#[test]
fn invalid_policies_are_refused_before_any_work() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    for (policy, needle) in [
        (on(-0.1, SkipMode::Zero, 0), "`prune_threshold` = -0.1"),
        (on(f32::NAN, SkipMode::Zero, 0), "`prune_threshold` = NaN"),
        (
            PrunePolicy {
                cfg_slope: -1.0,
                ..on(0.3, SkipMode::Zero, 0)
            },
            "`prune_cfg_slope` = -1",
        ),
    ] {
        let mut steps = 0;
        let e = pollster::block_on(sd.txt2img(&params(policy), None, &mut |_| {
            steps += 1;
            true
        }))
        .unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
        assert_eq!(steps, 0);
    }
}

/// Tiled (MultiDiffusion) denoising with per-tile pruning decisions: a tile as large as
/// the image is the one-pass run exactly; 24x16 pixels in 16-pixel tiles runs 2 tiles,
/// each with its own statistics, which add up to the whole image's.
#[test]
fn tiled_denoising_decides_per_tile() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    let run = |p: &GenerateParams| pollster::block_on(sd.txt2img(p, None, &mut |_| true));
    let base = GenerateParams {
        width: 24,
        height: 16,
        steps: 3,
        ..params(on(0.97, SkipMode::Cached, 0))
    };
    let whole = run(&base).unwrap();
    let same = run(&GenerateParams {
        tile_size: Some(24),
        ..base.clone()
    })
    .unwrap();
    assert_eq!(whole.rgba, same.rgba);
    assert!(same.prune.as_ref().unwrap().tiles.is_empty());
    let tiled = run(&GenerateParams {
        tile_size: Some(16),
        ..base.clone()
    })
    .unwrap();
    let report = tiled.prune.unwrap();
    assert_eq!(report.tiles.len(), 2);
    let per_layer = report.stats.layers.len();
    let mut entries = 0;
    for (tile, stats) in &report.tiles {
        assert_eq!((tile.h, tile.w), (8, 8));
        assert_eq!(
            stats.entries.len(),
            2 * per_layer,
            "2 applying steps per tile"
        );
        entries += stats.entries.len();
    }
    assert_eq!(report.stats.entries.len(), entries);
    let shares: Vec<f64> = report
        .tiles
        .iter()
        .map(|(_, s)| s.skipped_share())
        .collect();
    eprintln!(
        "tiled: whole-image skipped share {:.3}, per tile {shares:.3?}; PSNR vs one pass {:.1} dB",
        report.stats.skipped_share(),
        psnr(&tiled.rgba, &whole.rgba)
    );
    let first = &tiled.rgba[..3];
    assert!(tiled.rgba.chunks(4).any(|px| &px[..3] != first), "blank");
    let e = run(&GenerateParams {
        tile_size: Some(18),
        ..base
    })
    .unwrap_err();
    assert!(e.to_string().contains("`tile_size` = 18"), "{e}");
}

/// Turbo-style runs (<= probe_steps steps) decide from an in-step probe: every step
/// prunes, threshold 0 still reproduces the unpruned image, and the probe's cost is
/// reported (1/stride of the attention work per forward).
#[test]
fn short_runs_probe_in_step() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    let run = |p: &GenerateParams| pollster::block_on(sd.txt2img(p, None, &mut |_| true)).unwrap();
    let probe = |threshold| PrunePolicy {
        enabled: true,
        threshold,
        probe_steps: 4,
        probe_stride: 4,
        ..Default::default()
    };
    let p = GenerateParams {
        steps: 2,
        ..params(PrunePolicy::default())
    };
    let plain = run(&p);
    let zero = run(&GenerateParams {
        prune: probe(0.0),
        ..p.clone()
    });
    assert_eq!(zero.rgba, plain.rgba);
    let report = zero.prune.unwrap();
    assert_eq!(
        report.stats.entries.len(),
        2 * report.stats.layers.len(),
        "every step prunes"
    );
    assert!(
        (report.stats.probe_share() - 0.25).abs() < 1e-9,
        "{}",
        report.stats.probe_share()
    );
    let all = run(&GenerateParams {
        prune: probe(1.0),
        ..p.clone()
    })
    .prune
    .unwrap();
    eprintln!(
        "probe at threshold 1: skipped {:.3}, probe cost {:.3}",
        all.stats.skipped_share(),
        all.stats.probe_share()
    );
    assert!(all.stats.skipped_share() > 0.5);
}

/// Pruning from above: the tiny model's random weights attend almost uniformly, so
/// `above` = 0.9 skips most heads on the applying steps; replacing them by the mean of
/// their values (what uniform attention outputs) stays much closer to the unpruned
/// image than zeros do, and `above` = 1 prunes nothing.
#[test]
fn near_uniform_heads_pruned_from_above_output_the_mean_of_their_values() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    let run = |p: &GenerateParams| pollster::block_on(sd.txt2img(p, None, &mut |_| true)).unwrap();
    let plain = run(&params(PrunePolicy::default()));
    let banded = |skip, above| PrunePolicy {
        above,
        ..on(0.0, skip, 0)
    };
    let none = run(&params(banded(SkipMode::Mean, 1.0)));
    assert_eq!(none.rgba, plain.rgba);
    let mean = run(&params(banded(SkipMode::Mean, 0.9)));
    let zero = run(&params(banded(SkipMode::Zero, 0.9)));
    let share = mean.prune.as_ref().unwrap().stats.skipped_share();
    let (p_mean, p_zero) = (psnr(&mean.rgba, &plain.rgba), psnr(&zero.rgba, &plain.rgba));
    eprintln!(
        "above 0.9: {:.0}% of attention skipped; PSNR vs unpruned: mean {p_mean:.1} dB, zero {p_zero:.1} dB",
        share * 100.0
    );
    assert!(share > 0.3, "skipped {share}");
    assert!(
        p_mean > p_zero + 3.0,
        "mean {p_mean} dB vs zero {p_zero} dB"
    );
}
