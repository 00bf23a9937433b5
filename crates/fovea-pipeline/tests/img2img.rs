//! img2img against diffusers' StableDiffusionImg2ImgPipeline on the tiny folder, from a
//! fixed 16x16 image with the posterior and added noise diffusers drew (fed to both):
//! Euler 8 steps at strength 0.5 (4 run) and DPM++ 2M 5 steps at strength 0.6 (3 run,
//! starting first-order), CFG 5 with a negative prompt. Bound: every RGB value within 2
//! levels of diffusers' image rounded to 8 bits, mean under 0.5.

mod common;

use common::{expected, f32s, gpu, level_diff, load, psnr};
use fovea_gpu::DType;
use fovea_pipeline::{GenerateParams, Img2ImgNoise, SchedulerKind};

fn params(scheduler: SchedulerKind, steps: usize, strength: f64) -> GenerateParams {
    GenerateParams {
        prompt: "a green frog on a grid".into(),
        negative_prompt: "blurry".into(),
        steps,
        cfg: 5.0,
        width: 16,
        height: 16,
        scheduler: Some(scheduler),
        strength,
        ..Default::default()
    }
}

/// The fixture's (H, W, 3) uint8 image as RGBA8.
fn init_rgba() -> Vec<u8> {
    let e = expected("img2img.safetensors");
    let v = e.get("init_image").unwrap();
    assert_eq!(v.shape, [16, 16, 3]);
    v.data
        .chunks(3)
        .flat_map(|px| [px[0], px[1], px[2], 255])
        .collect()
}

#[test]
fn img2img_matches_diffusers() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    let e = expected("img2img.safetensors");
    let init = init_rgba();
    for (name, kind, steps, strength, run) in [
        ("euler", SchedulerKind::Euler, 8, 0.5, 4),
        ("dpmpp_2m", SchedulerKind::DpmPlusPlus2M, 5, 0.6, 3),
    ] {
        let (posterior, noise) = (
            f32s(&e, &format!("{name}_posterior")),
            f32s(&e, &format!("{name}_noise")),
        );
        let mut seen = Vec::new();
        let image = pollster::block_on(sd.img2img(
            &params(kind, steps, strength),
            &init,
            Some(Img2ImgNoise {
                posterior: &posterior,
                noise: &noise,
            }),
            &mut |s| {
                seen.push((s.step, s.total));
                true
            },
        ))
        .unwrap();
        assert_eq!(seen.len(), run, "{name}");
        assert_eq!(seen.last(), Some(&(run, run)), "{name}");
        assert_eq!(image.timings.steps, run);
        let (max, mean) = level_diff(&image.rgba, &f32s(&e, &format!("{name}_image")));
        eprintln!("img2img {name} vs diffusers: max {max} levels, mean {mean:.3}");
        assert!(max <= 2 && mean < 0.5, "{name}: max {max}, mean {mean}");
    }
}

/// Tiled encode and decode (24-pixel tiles, 6-pixel cross-fade) of a 32x32 img2img run against one pass:
/// PSNR >= 30 dB, and seeded runs repeat exactly.
#[test]
fn tiled_img2img_is_close_to_one_pass_and_seeded() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    // The fixture image upscaled 2x.
    let small = init_rgba();
    let mut init = vec![0u8; 32 * 32 * 4];
    for y in 0..32 {
        for x in 0..32 {
            let (d, s) = ((y * 32 + x) * 4, ((y / 2) * 16 + x / 2) * 4);
            init[d..d + 4].copy_from_slice(&small[s..s + 4]);
        }
    }
    let p = GenerateParams {
        width: 32,
        height: 32,
        seed: 3,
        ..params(SchedulerKind::Euler, 4, 0.5)
    };
    let run =
        |p: &GenerateParams| pollster::block_on(sd.img2img(p, &init, None, &mut |_| true)).unwrap();
    let whole = run(&p);
    assert_eq!(whole.rgba, run(&p).rgba);
    let tiled = run(&GenerateParams {
        vae_tile: Some(24),
        ..p.clone()
    });
    assert_eq!(tiled.timings.decode_tiles, 4);
    let db = psnr(&whole.rgba, &tiled.rgba);
    eprintln!("tiled img2img vs one pass: PSNR {db:.1} dB");
    assert!(db >= 30.0, "{db}");
}

#[test]
fn bad_img2img_inputs_are_named() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    let init = init_rgba();
    for (p, init, needle) in [
        (
            params(SchedulerKind::Euler, 4, 1.5),
            &init[..],
            "`strength` = 1.5",
        ),
        (
            params(SchedulerKind::Euler, 4, f64::NAN),
            &init[..],
            "`strength` = NaN",
        ),
        (
            params(SchedulerKind::Euler, 4, 0.2),
            &init[..],
            "no step would run",
        ),
        (
            params(SchedulerKind::Euler, 4, 0.5),
            &init[..100],
            "`init_image` = 100 bytes",
        ),
    ] {
        let e = pollster::block_on(sd.img2img(&p, init, None, &mut |_| true)).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
}
