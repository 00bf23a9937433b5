//! UNet2DConditionModel on the GPU against diffusers: two random tiny UNets covering
//! SD 1.x branches (conv proj_in, int attention_head_dim) and SD 2.x branches (linear
//! projections, per-block heads, upcast_attention, two transformer layers), with
//! per-item timesteps. Bound: relative RMS error 1e-4 in f32, 5e-3 with f16 storage.

mod common;

use common::{expected, fixtures, gpu, rel_rms};
use fovea_gpu::DType;
use fovea_models::UNet;

#[test]
fn unets_match_diffusers() {
    let gpu = gpu();
    let mut dtypes = vec![(DType::F32, 1e-4)];
    if gpu.capabilities().shader_f16 {
        dtypes.push((DType::F16, 5e-3));
    }
    for name in ["sd1", "sd2"] {
        let expected = expected(&format!("unet_{name}.safetensors"));
        for (dtype, bound) in &dtypes {
            let unet =
                UNet::load(&gpu, &fixtures().join(format!("tiny_unet_{name}")), *dtype).unwrap();
            let up = |key: &str, dt: DType| {
                let v = expected.get(key).unwrap();
                gpu.upload_f32(key, v.shape, dt, &v.to_f32().unwrap())
                    .unwrap()
            };
            let (sample, t, ctx) = (
                up("sample", *dtype),
                up("timesteps", DType::F32),
                up("encoder_hidden_states", *dtype),
            );
            let mut b = gpu.batch();
            let out = unet.forward(&mut b, &sample, &t, &ctx).unwrap();
            b.submit().unwrap();
            let err = rel_rms(
                &pollster::block_on(gpu.read_f32(&out)).unwrap(),
                &expected.get("output").unwrap().to_f32().unwrap(),
            );
            eprintln!("unet {name} {dtype}: relative RMS error {err:.2e}");
            assert!(err < *bound, "unet {name} {dtype}: {err:.2e} >= {bound}");
        }
    }
}

#[test]
fn bad_unet_inputs_are_named() {
    let gpu = gpu();
    let unet = UNet::load(&gpu, &fixtures().join("tiny_unet_sd1"), DType::F32).unwrap();
    let x = gpu
        .upload_f32("x", &[1, 4, 7, 8], DType::F32, &[0.0; 224])
        .unwrap();
    let t = gpu.upload_f32("t", &[1], DType::F32, &[1.0]).unwrap();
    let ctx = gpu
        .upload_f32("ctx", &[1, 77, 48], DType::F32, &vec![0.0; 77 * 48])
        .unwrap();
    let mut b = gpu.batch();
    let e = unet.forward(&mut b, &x, &t, &ctx).err().unwrap();
    assert!(e.to_string().contains("multiples of 2"), "{e}");
    let e = UNet::load(&gpu, &fixtures().join("tiny_vae"), DType::F32)
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("config.json") || e.to_string().contains("missing"),
        "{e}"
    );
}

/// Full size on a real GPU: `FOVEA_FULL_UNET` names a folder with `unet/` (e.g. random
/// weights in the SD 2.1-base architecture, made by tests/fixtures/full_size_unet.py)
/// and `expected.safetensors` (sample, timesteps, encoder_hidden_states and diffusers'
/// fp32 output). Prints the error and the forward time (second run, after warm-up).
#[test]
#[ignore = "needs FOVEA_FULL_UNET and a real GPU"]
fn full_size_unet_matches_diffusers() {
    let dir = std::path::PathBuf::from(std::env::var("FOVEA_FULL_UNET").expect("FOVEA_FULL_UNET"));
    let gpu = gpu();
    let expected = fovea_models::Weights::open_dir(&dir, None).unwrap();
    let mut dtypes = vec![(DType::F32, 1e-3)];
    if gpu.capabilities().shader_f16 {
        dtypes.push((DType::F16, 2e-2));
    }
    for (dtype, bound) in dtypes {
        let load = std::time::Instant::now();
        let unet = UNet::load(&gpu, &dir.join("unet"), dtype).unwrap();
        let load_s = load.elapsed().as_secs_f64();
        let up = |key: &str, dt: DType| {
            let v = expected.get(key).unwrap();
            gpu.upload_f32(key, v.shape, dt, &v.to_f32().unwrap())
                .unwrap()
        };
        let (sample, t, ctx) = (
            up("sample", dtype),
            up("timesteps", DType::F32),
            up("encoder_hidden_states", dtype),
        );
        let mut out = None;
        let mut times = Vec::new();
        for _ in 0..3 {
            let start = std::time::Instant::now();
            let mut b = gpu.batch();
            out = Some(unet.forward(&mut b, &sample, &t, &ctx).unwrap());
            b.submit().unwrap();
            pollster::block_on(gpu.wait_idle()).unwrap();
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        let got = pollster::block_on(gpu.read_f32(&out.unwrap())).unwrap();
        let err = rel_rms(&got, &expected.get("output").unwrap().to_f32().unwrap());
        eprintln!(
            "full-size unet {dtype}: relative RMS error {err:.2e}; load {load_s:.1} s; forward {:.1} ms (runs: {times:.1?}); peak pool {:.0} MiB",
            times[2],
            gpu.pool_stats().peak_in_use as f64 / (1u64 << 20) as f64
        );
        assert!(err < bound, "{dtype}: {err:.2e} >= {bound}");
        drop(unet);
        gpu.trim_pool();
    }
}
