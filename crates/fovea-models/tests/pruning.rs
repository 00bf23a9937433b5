//! Head pruning inside the UNet (tiny SD 2.x-branch UNet, the parity fixture's inputs):
//! the GPU decisions equal the CPU statement of the rule on the measured entropies, and
//! the thresholds' extremes reproduce the unpruned forward / the all-skipped forward
//! exactly.

mod common;

use common::{expected, fixtures, gpu};
use fovea_gpu::{DType, Gpu, SkippedOutput, Tensor};
use fovea_models::{AttentionKind, HeadPruning, UNet};

struct Inputs {
    sample: Tensor,
    t: Tensor,
    ctx: Tensor,
}

fn setup(gpu: &Gpu) -> (UNet, Inputs) {
    let unet = UNet::load(gpu, &fixtures().join("tiny_unet_sd2"), DType::F32).unwrap();
    let e = expected("unet_sd2.safetensors");
    let up = |key: &str| {
        let v = e.get(key).unwrap();
        gpu.upload_f32(key, v.shape, DType::F32, &v.to_f32().unwrap())
            .unwrap()
    };
    let inputs = Inputs {
        sample: up("sample"),
        t: up("timesteps"),
        ctx: up("encoder_hidden_states"),
    };
    (unet, inputs)
}

fn run(gpu: &Gpu, unet: &UNet, x: &Inputs, prune: Option<&mut HeadPruning>) -> Vec<f32> {
    let mut b = gpu.batch();
    let out = match prune {
        Some(p) => unet.forward_pruned(&mut b, &x.sample, &x.t, &x.ctx, p),
        None => unet.forward(&mut b, &x.sample, &x.t, &x.ctx),
    }
    .unwrap();
    b.submit().unwrap();
    pollster::block_on(gpu.read_f32(&out)).unwrap()
}

#[test]
fn gpu_decisions_equal_the_cpu_rule_on_measured_entropies() {
    let gpu = gpu();
    let (unet, x) = setup(&gpu);
    let mut p = HeadPruning::new(0.0, 0.0, SkippedOutput::Zero);
    run(&gpu, &unet, &x, Some(&mut p));
    let entropies = pollster::block_on(p.read_entropies(&gpu)).unwrap();
    let layers = p.layers();
    // sd2: 2 transformer layers in each of 4 attention blocks (1 down, 1 mid, 2 up),
    // self + cross each.
    assert_eq!(layers.len(), 16);
    assert!(
        layers
            .iter()
            .any(|l| l.kind == AttentionKind::CrossAttention)
    );
    for (l, e) in layers.iter().zip(&entropies) {
        assert_eq!(e.len(), 2 * l.batch * l.heads);
        assert!(e.iter().all(|h| (0.0..=1.0 + 1e-6).contains(h)), "{e:?}");
    }
    // Means only (the guard is off by default).
    let entropies: Vec<Vec<f32>> = entropies
        .iter()
        .map(|e| e[..e.len() / 2].to_vec())
        .collect();
    // Thresholds at each layer kind's median entropy: some heads go, some stay.
    let median = |kind: AttentionKind| {
        let mut all: Vec<f32> = layers
            .iter()
            .zip(&entropies)
            .filter(|(l, _)| l.kind == kind)
            .flat_map(|(_, e)| e.iter().copied())
            .collect();
        all.sort_by(f32::total_cmp);
        all[all.len() / 2]
    };
    p.self_threshold = median(AttentionKind::SelfAttention);
    p.cross_threshold = median(AttentionKind::CrossAttention);
    p.apply = true;
    p.step = 1;
    run(&gpu, &unet, &x, Some(&mut p));
    let stats = pollster::block_on(p.read_stats(&gpu)).unwrap();
    assert_eq!(stats.entries.len(), 16);
    let mut pruned_any = false;
    for &(step, layer, active, all) in &stats.entries {
        let threshold = match layers[layer].kind {
            AttentionKind::SelfAttention => p.self_threshold,
            AttentionKind::CrossAttention => p.cross_threshold,
        };
        let want = entropies[layer]
            .iter()
            .filter(|&&h| h.is_nan() || h >= threshold)
            .count();
        assert_eq!((step, active as usize), (1, want), "layer {layer}");
        assert_eq!(all as usize, entropies[layer].len());
        pruned_any |= (active as usize) < entropies[layer].len();
    }
    assert!(pruned_any);
    let share = stats.skipped_share();
    assert!(share > 0.0 && share < 0.5, "{share}");
}

#[test]
fn threshold_extremes_equal_the_unpruned_and_the_all_skipped_forward() {
    let gpu = gpu();
    let (unet, x) = setup(&gpu);
    let plain = run(&gpu, &unet, &x, None);
    for skipped in [SkippedOutput::Zero, SkippedOutput::Keep] {
        // Threshold 0: every head computed, through the indirect path.
        let mut p = HeadPruning::new(0.0, 0.0, skipped);
        assert_eq!(run(&gpu, &unet, &x, Some(&mut p)), plain, "measuring");
        p.apply = true;
        assert_eq!(
            run(&gpu, &unet, &x, Some(&mut p)),
            plain,
            "threshold 0, {skipped:?}"
        );
        let stats = pollster::block_on(p.read_stats(&gpu)).unwrap();
        assert_eq!(stats.skipped_share(), 0.0);
    }
    // Threshold 1 with cached outputs: every head reuses the measuring forward's output
    // on the same inputs, so the result is that forward's exactly.
    let mut p = HeadPruning::new(1.0, 1.0, SkippedOutput::Keep);
    run(&gpu, &unet, &x, Some(&mut p));
    p.apply = true;
    assert_eq!(run(&gpu, &unet, &x, Some(&mut p)), plain);
    let stats = pollster::block_on(p.read_stats(&gpu)).unwrap();
    assert!(stats.entries.iter().all(|&(_, _, active, _)| active == 0));
    assert!(
        (stats.skipped_share() - 0.5).abs() < 1e-9,
        "half the forwards skipped all"
    );
    // Threshold 1 with zeros: every head skipped and zeroed in every layer (no
    // attention output at all), which differs from the unpruned forward and repeats.
    let mut p = HeadPruning::new(1.0, 1.0, SkippedOutput::Zero);
    run(&gpu, &unet, &x, Some(&mut p));
    p.apply = true;
    let zeroed = run(&gpu, &unet, &x, Some(&mut p));
    assert_ne!(zeroed, plain);
    p.apply = true;
    assert_eq!(
        run(&gpu, &unet, &x, Some(&mut p)),
        zeroed,
        "all-skipped is deterministic"
    );
}

/// The in-step probe (every 2nd query row) measures nearly what all rows measure, and
/// with threshold 0 the forward equals the unpruned one exactly.
#[test]
fn the_in_step_probe_measures_like_the_full_rows() {
    let gpu = gpu();
    let (unet, x) = setup(&gpu);
    let plain = run(&gpu, &unet, &x, None);
    let mut full = HeadPruning::new(0.0, 0.0, SkippedOutput::Zero);
    run(&gpu, &unet, &x, Some(&mut full));
    let want = pollster::block_on(full.read_entropies(&gpu)).unwrap();
    let mut probe = HeadPruning::new(0.0, 0.0, SkippedOutput::Zero);
    probe.probe_stride = 2;
    assert_eq!(run(&gpu, &unet, &x, Some(&mut probe)), plain);
    // The stored statistics are the probe's for skipped heads and the full rows' for
    // computed ones; with threshold 0 every head was computed, so compare a fresh probe
    // through a threshold that skips all heads (nothing overwrites the probe's numbers).
    let mut only = HeadPruning::new(1.0, 1.0, SkippedOutput::Zero);
    only.probe_stride = 2;
    run(&gpu, &unet, &x, Some(&mut only));
    let got = pollster::block_on(only.read_entropies(&gpu)).unwrap();
    let mut worst = 0.0f32;
    for (g, w) in got.iter().zip(&want) {
        let n = g.len() / 2;
        for i in 0..n {
            worst = worst.max((g[i] - w[i]).abs());
        }
    }
    eprintln!("probe (every 2nd row) vs all rows: mean entropy within {worst:.4}");
    assert!(worst < 0.05, "{worst}");
    let stats = pollster::block_on(only.read_stats(&gpu)).unwrap();
    assert!(
        (stats.probe_share() - 0.5).abs() < 1e-9,
        "{}",
        stats.probe_share()
    );
}
