//! One whole txt2img run against diffusers' StableDiffusionPipeline on the tiny folder
//! (tests/fixtures/tiny_pipeline): same prompt, negative prompt, 4 Euler steps, CFG 7.5
//! and the same initial latents. Bound: RGBA within 2 levels of diffusers' image
//! (rounded to 8 bits) everywhere, mean absolute difference under 0.5 levels.

use std::path::{Path, PathBuf};

use fovea_gpu::{DType, Gpu, GpuOptions};
use fovea_models::Weights;
use fovea_pipeline::{GenerateParams, PipelineError, SchedulerKind, StableDiffusion};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn params() -> GenerateParams {
    GenerateParams {
        prompt: "a red apple on a blue striped background".into(),
        negative_prompt: "blurry".into(),
        steps: 4,
        cfg: 7.5,
        width: 16,
        height: 16,
        ..Default::default()
    }
}

#[test]
fn txt2img_matches_diffusers_pipeline() {
    let gpu = pollster::block_on(Gpu::new(GpuOptions::default())).unwrap();
    let sd = StableDiffusion::load(&gpu, &fixtures().join("tiny_pipeline"), DType::F32).unwrap();
    assert_eq!(sd.default_scheduler(), Some(SchedulerKind::Euler));
    let expected = Weights::from_bytes(vec![(
        "txt2img".into(),
        std::fs::read(fixtures().join("expected/txt2img.safetensors")).unwrap(),
    )])
    .unwrap();
    let latents = expected.get("latents").unwrap().to_f32().unwrap();
    let want = expected.get("image").unwrap().to_f32().unwrap();
    let mut steps_seen = Vec::new();
    let image = pollster::block_on(sd.txt2img(&params(), Some(&latents), &mut |s| {
        steps_seen.push(s.step);
        true
    }))
    .unwrap();
    assert_eq!(steps_seen, [1, 2, 3, 4]);
    assert_eq!(
        (image.width, image.height, image.rgba.len()),
        (16, 16, 16 * 16 * 4)
    );
    let (mut max_diff, mut sum) = (0i32, 0i64);
    for i in 0..16 * 16 {
        for c in 0..3 {
            let w = (want[i * 3 + c] * 255.0).round() as i32;
            let d = (image.rgba[i * 4 + c] as i32 - w).abs();
            max_diff = max_diff.max(d);
            sum += d as i64;
        }
    }
    let mean = sum as f64 / (16.0 * 16.0 * 3.0);
    eprintln!("txt2img vs diffusers: max {max_diff} levels, mean {mean:.3}");
    assert!(max_diff <= 2 && mean < 0.5, "max {max_diff}, mean {mean}");
}

#[test]
fn the_same_seed_gives_the_same_image_and_cancellation_stops() {
    let gpu = pollster::block_on(Gpu::new(GpuOptions::default())).unwrap();
    let sd = StableDiffusion::load(&gpu, &fixtures().join("tiny_pipeline"), DType::F32).unwrap();
    let p = GenerateParams {
        seed: 1234,
        ..params()
    };
    let a = pollster::block_on(sd.txt2img(&p, None, &mut |_| true)).unwrap();
    let b = pollster::block_on(sd.txt2img(&p, None, &mut |_| true)).unwrap();
    assert_eq!(a.rgba, b.rgba);
    let c = pollster::block_on(sd.txt2img(
        &GenerateParams {
            seed: 1235,
            ..p.clone()
        },
        None,
        &mut |_| true,
    ))
    .unwrap();
    assert_ne!(a.rgba, c.rgba);
    let e = pollster::block_on(sd.txt2img(&p, None, &mut |s| s.step < 2)).unwrap_err();
    assert!(matches!(e, PipelineError::Cancelled(2)), "{e}");
}

#[test]
fn bad_generation_parameters_are_named() {
    let gpu = pollster::block_on(Gpu::new(GpuOptions::default())).unwrap();
    let sd = StableDiffusion::load(&gpu, &fixtures().join("tiny_pipeline"), DType::F32).unwrap();
    for (p, needle) in [
        (
            GenerateParams {
                width: 18,
                ..params()
            },
            "`width` = 18",
        ),
        (
            GenerateParams {
                height: 0,
                ..params()
            },
            "`height` = 0",
        ),
        (
            GenerateParams {
                steps: 0,
                ..params()
            },
            "`steps` = 0",
        ),
        (
            GenerateParams {
                cfg: f32::NAN,
                ..params()
            },
            "`cfg` = NaN",
        ),
    ] {
        let e = pollster::block_on(sd.txt2img(&p, None, &mut |_| true)).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
    let e = pollster::block_on(sd.txt2img(&params(), Some(&[0.0; 3]), &mut |_| true)).unwrap_err();
    assert!(e.to_string().contains("latents"), "{e}");
    let e = StableDiffusion::load(&gpu, &fixtures().join("no-such-model"), DType::F32)
        .err()
        .unwrap();
    assert!(e.to_string().contains("no-such-model"), "{e}");
}
