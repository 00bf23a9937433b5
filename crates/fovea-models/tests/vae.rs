//! AutoencoderKL on the GPU against diffusers: a random tiny VAE (tests/fixtures/tiny_vae)
//! decoding fixed latents and encoding a fixed image to its posterior mean. Bound:
//! relative RMS error 1e-4 in f32, 3e-3 with f16 storage.

mod common;

use common::{expected, fixtures, gpu, rel_rms};
use fovea_gpu::DType;
use fovea_models::{TinyVae, Vae};

#[test]
fn vae_decode_and_encode_match_diffusers() {
    let gpu = gpu();
    let expected = expected("vae.safetensors");
    let mut dtypes = vec![(DType::F32, 1e-4)];
    if gpu.capabilities().shader_f16 {
        dtypes.push((DType::F16, 3e-3));
    }
    for (dtype, bound) in dtypes {
        let vae = Vae::load(&gpu, &fixtures().join("tiny_vae"), dtype).unwrap();
        let upload = |key: &str| {
            let v = expected.get(key).unwrap();
            gpu.upload_f32(key, v.shape, dtype, &v.to_f32().unwrap())
                .unwrap()
        };
        let (latents, image) = (upload("latents"), upload("image"));
        let mut b = gpu.batch();
        let decoded = vae.decode(&mut b, &latents).unwrap();
        let mean = vae.encode_mean(&mut b, &image).unwrap();
        b.submit().unwrap();
        for (name, t) in [("decoded", decoded), ("encoded_mean", mean)] {
            let want = expected.get(name).unwrap();
            assert_eq!(t.shape(), want.shape, "{name} shape");
            let err = rel_rms(
                &pollster::block_on(gpu.read_f32(&t)).unwrap(),
                &want.to_f32().unwrap(),
            );
            eprintln!("vae {name} {dtype}: relative RMS error {err:.2e}");
            assert!(err < bound, "vae {name} {dtype}: {err:.2e} >= {bound}");
        }
    }
}

/// TAESD (diffusers `AutoencoderTiny`) decoder on a random 2-stage model
/// (tests/fixtures/tiny_taesd), latents scaled x3 so the tanh clamp matters. Same bounds.
#[test]
fn taesd_decode_matches_diffusers() {
    let gpu = gpu();
    let expected = expected("taesd.safetensors");
    let mut dtypes = vec![(DType::F32, 1e-4)];
    if gpu.capabilities().shader_f16 {
        dtypes.push((DType::F16, 3e-3));
    }
    for (dtype, bound) in dtypes {
        let taesd = TinyVae::load(&gpu, &fixtures().join("tiny_taesd"), dtype).unwrap();
        assert_eq!(taesd.config().upscale(), 2);
        let v = expected.get("latents").unwrap();
        let latents = gpu
            .upload_f32("latents", v.shape, dtype, &v.to_f32().unwrap())
            .unwrap();
        let mut b = gpu.batch();
        let decoded = taesd.decode(&mut b, &latents).unwrap();
        b.submit().unwrap();
        let want = expected.get("decoded").unwrap();
        assert_eq!(decoded.shape(), want.shape);
        let err = rel_rms(
            &pollster::block_on(gpu.read_f32(&decoded)).unwrap(),
            &want.to_f32().unwrap(),
        );
        eprintln!("taesd decode {dtype}: relative RMS error {err:.2e}");
        assert!(err < bound, "taesd {dtype}: {err:.2e} >= {bound}");
    }
}
