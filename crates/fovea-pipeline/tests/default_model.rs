//! The shipped default model, models/fovea-tiny, against diffusers and against itself.
//!
//! - Parity: diffusers' StableDiffusionPipeline loaded from the same folder (fp16 weights
//!   as float32), one held-out prompt, the same initial latents, 2 Euler steps, CFG 5
//!   (recorded by models/training/parity.py, which export.py runs after every export;
//!   the folder's scheduler, Euler).
//!   Bound: every channel of every pixel within 2 levels, mean under 0.5 levels.
//! - Stability: the same seed twice on the same adapter gives the same bytes.

mod common;

use std::path::{Path, PathBuf};

use common::{expected, f32s, gpu, level_diff};
use fovea_gpu::DType;
use fovea_models::Weights;
use fovea_pipeline::{GenerateParams, SchedulerKind, StableDiffusion};

/// Keep in step with models/training/parity.py.
const PROMPT: &str = "a large angry face at the bottom left on a plain white background";

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fovea-tiny")
}

/// The first 64 values of the shipped UNet's conv_in weight: they tell whether the
/// recorded fixture belongs to these weights.
fn fingerprint() -> Vec<f32> {
    let path = model_dir().join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let w = Weights::from_bytes(vec![(path.display().to_string(), bytes)]).unwrap();
    let mut v = w.get("conv_in.weight").unwrap().to_f32().unwrap();
    v.truncate(64);
    v
}

#[test]
fn default_model_matches_diffusers() {
    let gpu = gpu();
    let want = expected("fovea_tiny.safetensors");
    assert_eq!(
        fingerprint(),
        f32s(&want, "fingerprint"),
        "tests/fixtures/expected/fovea_tiny.safetensors was recorded for other weights: \
         run models/training/parity.py"
    );
    let sd = StableDiffusion::load(&gpu, &model_dir(), DType::F32).unwrap();
    assert_eq!(sd.default_scheduler(), Some(SchedulerKind::Euler));
    let p = GenerateParams {
        prompt: PROMPT.into(),
        steps: 2,
        cfg: 5.0,
        width: 128,
        height: 128,
        // The folder's own scheduler, as diffusers uses it.
        scheduler: None,
        ..Default::default()
    };
    let latents = f32s(&want, "latents");
    let image = pollster::block_on(sd.txt2img(&p, Some(&latents), &mut |_| true)).unwrap();
    let (max, mean) = level_diff(&image.rgba, &f32s(&want, "image"));
    eprintln!("fovea-tiny vs diffusers: max {max} levels, mean {mean:.3}");
    assert!(max <= 2 && mean < 0.5, "max {max} levels, mean {mean}");
}

#[test]
fn default_model_output_is_stable_across_runs() {
    let gpu = gpu();
    let dtype = if gpu.capabilities().shader_f16 {
        DType::F16
    } else {
        DType::F32
    };
    let sd = StableDiffusion::load(&gpu, &model_dir(), dtype).unwrap();
    // A smaller image and few steps keep this quick on a software adapter; the model is
    // fully convolutional, so every layer still runs.
    let p = GenerateParams {
        prompt: "一只小猫在中间，纯蓝色背景".into(),
        steps: 2,
        width: 64,
        height: 64,
        seed: 7,
        ..Default::default()
    };
    let a = pollster::block_on(sd.txt2img(&p, None, &mut |_| true)).unwrap();
    let b = pollster::block_on(sd.txt2img(&p, None, &mut |_| true)).unwrap();
    assert_eq!(a.rgba, b.rgba, "two runs with seed 7 differ");
    assert!(
        a.rgba.chunks(4).any(|px| px[..3] != a.rgba[..3]),
        "a flat image"
    );
}
