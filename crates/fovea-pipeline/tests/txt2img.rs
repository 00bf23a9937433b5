//! One whole txt2img run against diffusers' StableDiffusionPipeline on the tiny folder
//! (tests/fixtures/tiny_pipeline): same prompt, negative prompt, 4 Euler steps, CFG 7.5
//! and the same initial latents. Bound: RGBA within 2 levels of diffusers' image
//! (rounded to 8 bits) everywhere, mean absolute difference under 0.5 levels.

mod common;

use common::{expected, f32s, fixtures, gpu, level_diff, load, psnr};
use fovea_gpu::{DType, Gpu, GpuOptions};
use fovea_pipeline::{GenerateParams, PipelineError, SchedulerKind, StableDiffusion};

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
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    assert_eq!(sd.default_scheduler(), Some(SchedulerKind::Euler));
    let expected = expected("txt2img.safetensors");
    let latents = f32s(&expected, "latents");
    let want = f32s(&expected, "image");
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
    let (max_diff, mean) = level_diff(&image.rgba, &want);
    eprintln!("txt2img vs diffusers: max {max_diff} levels, mean {mean:.3}");
    assert!(max_diff <= 2 && mean < 0.5, "max {max_diff}, mean {mean}");
}

#[test]
fn the_same_seed_gives_the_same_image_and_cancellation_stops() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
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
    // A run cancelled part-way leaves the engine as it was: the next gives the same image.
    let d = pollster::block_on(sd.txt2img(&p, None, &mut |_| true)).unwrap();
    assert_eq!(a.rgba, d.rgba);
}

#[test]
fn bad_generation_parameters_are_named() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
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

/// SD-Turbo's way of use on an SD-Turbo-shaped folder (tests/fixtures/tiny_turbo: SD 2.x
/// UNet, Euler ancestral with trailing spacing): one step, no guidance, against
/// diffusers. Same bound as the txt2img run.
#[test]
fn one_step_turbo_matches_diffusers() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_turbo", DType::F32);
    assert_eq!(sd.default_scheduler(), Some(SchedulerKind::EulerAncestral));
    let expected = expected("turbo.safetensors");
    let p = GenerateParams {
        prompt: "a cat in the snow".into(),
        steps: 1,
        cfg: 0.0,
        width: 16,
        height: 16,
        ..Default::default()
    };
    let latents = f32s(&expected, "latents");
    let image = pollster::block_on(sd.txt2img(&p, Some(&latents), &mut |_| true)).unwrap();
    let (max, mean) = level_diff(&image.rgba, &f32s(&expected, "image"));
    eprintln!("turbo vs diffusers: max {max} levels, mean {mean:.3}");
    assert!(max <= 2 && mean < 0.5, "max {max}, mean {mean}");
}

/// A folder saved as diffusers saves fp16 checkpoints (`*.fp16.safetensors` variant
/// files of float16 tensors, tokenizer.json only) gives diffusers' fp32 image up to the
/// rounding of the weights: within 8 levels, mean under 1.5.
#[test]
fn an_fp16_folder_loads_and_matches() {
    let gpu = gpu();
    let expected = expected("txt2img.safetensors");
    let latents = f32s(&expected, "latents");
    let mut dtypes = vec![DType::F32];
    if gpu.capabilities().shader_f16 {
        dtypes.push(DType::F16);
    }
    for dtype in dtypes {
        let sd = load(&gpu, "tiny_pipeline_fp16", dtype);
        let image =
            pollster::block_on(sd.txt2img(&params(), Some(&latents), &mut |_| true)).unwrap();
        let (max, mean) = level_diff(&image.rgba, &f32s(&expected, "image"));
        eprintln!(
            "fp16 folder, {dtype} engine vs diffusers fp32: max {max} levels, mean {mean:.3}"
        );
        assert!(max <= 8 && mean < 1.5, "{dtype}: max {max}, mean {mean}");
    }
}

fn random_latents(seed: u64, n: usize) -> Vec<f32> {
    fovea_pipeline::NoiseRng::new(seed).normals(n)
}

/// Tiled VAE decode against one pass on 32x32 latents (64x64 pixels) of the tiny random
/// VAE: 16-latent tiles with a 4-latent cross-fade. Bound: PSNR >= 30 dB.
#[test]
fn tiled_decode_is_close_to_one_pass() {
    let gpu = gpu();
    let sd = load(&gpu, "tiny_pipeline", DType::F32);
    let scaled = random_latents(7, 4 * 32 * 32);
    let z = gpu
        .upload_f32("z", &[1, 4, 32, 32], DType::F32, &scaled)
        .unwrap();
    let one = GenerateParams::default();
    let (whole, tiles) = pollster::block_on(sd.decode_latents(&one, &z)).unwrap();
    assert_eq!(tiles, 0);
    let tiled = GenerateParams {
        vae_tile: Some(32),
        ..Default::default()
    };
    let (pieces, tiles) = pollster::block_on(sd.decode_latents(&tiled, &z)).unwrap();
    assert_eq!(tiles, 9);
    let db = psnr(&to8(&whole), &to8(&pieces));
    eprintln!("tiled VAE decode vs one pass: PSNR {db:.1} dB over {tiles} tiles");
    assert!(db >= 30.0, "{db}");
}

/// (3, H, W) in [-1, 1] -> RGBA8, as the pipeline packs images.
fn to8(chw: &[f32]) -> Vec<u8> {
    let plane = chw.len() / 3;
    let mut out = vec![255u8; plane * 4];
    for i in 0..plane {
        for c in 0..3 {
            out[i * 4 + c] =
                ((chw[c * plane + i] / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
}

/// On an adapter whose bindings are too small for a one-pass decode (capped at 512 KiB
/// here, where the decoder's largest activation is 1 MiB), the VAE alone refuses with
/// the limit named, and the pipeline switches to tiles by itself and still decodes.
#[test]
fn a_decode_over_the_binding_limit_is_tiled_automatically() {
    let small = pollster::block_on(Gpu::new(GpuOptions {
        max_binding_bytes: Some(512 << 10),
        ..Default::default()
    }))
    .unwrap();
    let sd = load(&small, "tiny_pipeline", DType::F32);
    let scaled = random_latents(8, 4 * 32 * 32);
    let z = small
        .upload_f32("z", &[1, 4, 32, 32], DType::F32, &scaled)
        .unwrap();
    let vae =
        fovea_models::Vae::load(&small, &fixtures().join("tiny_pipeline/vae"), DType::F32).unwrap();
    let mut b = small.batch();
    let e = vae
        .decode(&mut b, &z)
        .expect_err("a one-pass decode over the limit");
    assert!(
        e.to_string().contains("max_storage_buffer_binding_size"),
        "{e}"
    );
    drop(b);
    let (pixels, tiles) =
        pollster::block_on(sd.decode_latents(&GenerateParams::default(), &z)).unwrap();
    assert!(tiles > 1, "{tiles}");
    // The same latents on an uncapped adapter, in one pass.
    let big = gpu();
    let sd_big = load(&big, "tiny_pipeline", DType::F32);
    let z_big = big
        .upload_f32("z", &[1, 4, 32, 32], DType::F32, &scaled)
        .unwrap();
    let (whole, _) =
        pollster::block_on(sd_big.decode_latents(&GenerateParams::default(), &z_big)).unwrap();
    let db = psnr(&to8(&whole), &to8(&pixels));
    eprintln!("auto-tiled decode ({tiles} tiles) vs one pass: PSNR {db:.1} dB");
    assert!(db >= 30.0, "{db}");
}

/// The TAESD decoder in the pipeline: loads beside the model, decodes the same run to
/// a picture close to the VAE's for a trained pair (not here: both are random), so this
/// checks the wiring: it must be loaded first, must fit the latents, and gives a
/// different, non-blank image.
#[test]
fn taesd_decoding_in_the_pipeline() {
    let gpu = gpu();
    let mut sd = load(&gpu, "tiny_pipeline", DType::F32);
    let p = GenerateParams {
        taesd: true,
        ..params()
    };
    let e = pollster::block_on(sd.txt2img(&p, None, &mut |_| true)).unwrap_err();
    assert!(e.to_string().contains("taesd"), "{e}");
    sd.load_taesd(&fixtures().join("tiny_taesd")).unwrap();
    let fast = pollster::block_on(sd.txt2img(&p, None, &mut |_| true)).unwrap();
    let full = pollster::block_on(sd.txt2img(&params(), None, &mut |_| true)).unwrap();
    assert_ne!(fast.rgba, full.rgba);
    let first = &fast.rgba[..3];
    assert!(
        fast.rgba.chunks(4).any(|px| &px[..3] != first),
        "blank image"
    );
}

/// A folder held in memory (as the web page has it) loads to the same engine as the
/// folder on disk; a missing file is named with its path.
#[test]
fn an_in_memory_folder_gives_the_same_image() {
    use fovea_pipeline::MemoryFolder;
    let gpu = gpu();
    let disk = load(&gpu, "tiny_pipeline", DType::F32);
    let folder = MemoryFolder::read_dir(&fixtures().join("tiny_pipeline")).unwrap();
    assert!(
        folder
            .paths()
            .contains(&"unet/diffusion_pytorch_model.safetensors")
    );
    let memory = StableDiffusion::from_folder(&gpu, folder, DType::F32).unwrap();
    let p = GenerateParams {
        seed: 9,
        ..params()
    };
    let a = pollster::block_on(disk.txt2img(&p, None, &mut |_| true)).unwrap();
    let b = pollster::block_on(memory.txt2img(&p, None, &mut |_| true)).unwrap();
    assert_eq!(a.rgba, b.rgba);
    let mut partial = MemoryFolder::new("https://example.org/model");
    for path in ["text_encoder/config.json", "text_encoder/model.safetensors"] {
        let bytes = std::fs::read(fixtures().join("tiny_pipeline").join(path)).unwrap();
        partial.insert(path, bytes);
    }
    let e = StableDiffusion::from_folder(&gpu, partial, DType::F32)
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("https://example.org/model/tokenizer"),
        "{e}"
    );
}

fn capped_gpu(bytes: u64) -> Gpu {
    pollster::block_on(Gpu::new(GpuOptions {
        max_binding_bytes: Some(bytes),
        ..Default::default()
    }))
    .unwrap()
}

/// `unet_binding_bytes` must not underestimate: on an adapter capped at exactly its
/// estimate for 32x32 (f32, guided), one UNet pass runs (no limit error), and twice
/// the area is refused before any step.
#[test]
fn the_unet_binding_estimate_is_an_upper_bound() {
    let p = GenerateParams {
        width: 32,
        height: 32,
        steps: 1,
        ..params()
    };
    let cfg: fovea_models::UNetConfig = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiny_pipeline/unet/config.json")).unwrap(),
    )
    .unwrap();
    let estimate = fovea_pipeline::unet_binding_bytes(&cfg, 2, 16, 16, 4);
    let small = capped_gpu(estimate);
    let sd = load(&small, "tiny_pipeline", DType::F32);
    sd.check(&p).unwrap();
    let image = pollster::block_on(sd.txt2img(&p, None, &mut |_| true)).unwrap();
    assert_eq!((image.width, image.height), (32, 32));
    let e = sd.check(&GenerateParams { width: 64, ..p }).unwrap_err();
    assert!(matches!(e, PipelineError::TooLarge(_)), "{e}");
}

/// Sizes over the adapter's binding limit, named in user terms before any work (capped
/// at 512 KiB here): one pass too large gets the tile size that fits, a tile too large
/// gets the smaller one, latents that do not fit at all get the largest size; tiles of
/// the suggested size then run.
#[test]
fn sizes_over_the_binding_limit_are_refused_with_the_way_out() {
    let small = capped_gpu(512 << 10);
    let sd = load(&small, "tiny_pipeline", DType::F32);
    let p = GenerateParams {
        width: 64,
        height: 64,
        steps: 1,
        ..params()
    };
    let e = sd.check(&p).unwrap_err().to_string();
    for needle in [
        "64x64 needs about 2.0 MiB per binding",
        "limit of 512 KiB",
        "--tile-size 32 (or less)",
    ] {
        assert!(e.contains(needle), "missing `{needle}`: {e}");
    }
    let e = sd
        .check(&GenerateParams {
            tile_size: Some(48),
            ..p.clone()
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a 48 px tile") && e.contains("--tile-size 32 (or less)"),
        "{e}"
    );
    let big = GenerateParams {
        width: 512,
        height: 512,
        ..p.clone()
    };
    let e = sd.check(&big).unwrap_err().to_string();
    assert!(
        e.contains("512x512 is too large") && e.contains("latents") && e.contains("about 360x360"),
        "{e}"
    );
    // The same refusal from txt2img itself, before any step runs.
    let mut steps = 0;
    let r = pollster::block_on(sd.txt2img(&big, None, &mut |_| {
        steps += 1;
        true
    }));
    assert!(matches!(r, Err(PipelineError::TooLarge(_))) && steps == 0);
    let tiled = GenerateParams {
        tile_size: Some(32),
        ..p
    };
    sd.check(&tiled).unwrap();
    let image = pollster::block_on(sd.txt2img(&tiled, None, &mut |_| true)).unwrap();
    assert_eq!((image.width, image.height), (64, 64));
}
