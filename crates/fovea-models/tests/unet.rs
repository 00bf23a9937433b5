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

/// `Weights::random` (what `fovea bench` builds full-size UNets from) gives every tensor
/// of the requested shapes, deterministically, and a UNet built from it runs to a finite
/// output.
#[test]
fn random_weights_build_a_working_unet() {
    use fovea_models::{UNetConfig, Weights};
    let gpu = gpu();
    let dir = fixtures().join("tiny_unet_sd1");
    let real = Weights::open_dir(&dir, None).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = real
        .keys()
        .into_iter()
        .map(|k| (k.to_string(), real.get(k).unwrap().shape.to_vec()))
        .collect();
    let a = Weights::random("random sd1", &shapes, 1);
    let b = Weights::random("random sd1", &shapes, 1);
    assert_eq!(a.len(), shapes.len());
    let key = "conv_in.weight";
    let va = a.get(key).unwrap().to_f32().unwrap();
    assert_eq!(va, b.get(key).unwrap().to_f32().unwrap());
    let fan_in: usize = shapes.iter().find(|(k, _)| k == key).unwrap().1[1..]
        .iter()
        .product();
    let bound = (3.0 / fan_in as f32).sqrt();
    assert!(va.iter().all(|v| v.abs() <= bound * 1.001) && va.iter().any(|v| *v != 0.0));
    let config: UNetConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let (cin, side, cross) = (
        config.in_channels,
        config.sample_size.unwrap_or(8),
        config.cross_attention_dim,
    );
    let unet = UNet::from_weights(&gpu, config, &a, DType::F32).unwrap();
    let sample = gpu
        .upload_f32(
            "s",
            &[1, cin, side, side],
            DType::F32,
            &vec![0.5; cin * side * side],
        )
        .unwrap();
    let t = gpu.upload_f32("t", &[1], DType::F32, &[10.0]).unwrap();
    let ctx = gpu
        .upload_f32("c", &[1, 77, cross], DType::F32, &vec![0.1; 77 * cross])
        .unwrap();
    let mut batch = gpu.batch();
    let out = unet.forward(&mut batch, &sample, &t, &ctx).unwrap();
    batch.submit().unwrap();
    let v = pollster::block_on(gpu.read_f32(&out)).unwrap();
    assert!(v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0));
}
