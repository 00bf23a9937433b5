//! Shared helpers of the pipeline tests: fixture paths, the GPU, expected outputs and
//! image comparison.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fovea_gpu::{DType, Gpu, GpuOptions};
use fovea_models::Weights;
use fovea_pipeline::StableDiffusion;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn gpu() -> Gpu {
    pollster::block_on(Gpu::new(GpuOptions::default())).expect("a GPU adapter")
}

pub fn load(gpu: &Gpu, folder: &str, dtype: DType) -> StableDiffusion {
    StableDiffusion::load(gpu, &fixtures().join(folder), dtype).unwrap()
}

/// One of tests/fixtures/expected/*.safetensors.
pub fn expected(name: &str) -> Weights {
    let path = fixtures().join("expected").join(name);
    Weights::from_bytes(vec![(name.into(), std::fs::read(&path).unwrap())]).unwrap()
}

pub fn f32s(w: &Weights, key: &str) -> Vec<f32> {
    w.get(key).unwrap().to_f32().unwrap()
}

/// Largest and mean absolute difference in 8-bit levels between RGBA8 and an
/// (H, W, 3) float image in [0, 1] (diffusers' `output_type="np"`), rounded as 8 bits.
pub fn level_diff(rgba: &[u8], want_hwc: &[f32]) -> (i32, f64) {
    let n = want_hwc.len() / 3;
    assert_eq!(rgba.len(), n * 4);
    let (mut max, mut sum) = (0i32, 0i64);
    for i in 0..n {
        for c in 0..3 {
            let w = (want_hwc[i * 3 + c] * 255.0).round() as i32;
            let d = (rgba[i * 4 + c] as i32 - w).abs();
            max = max.max(d);
            sum += d as i64;
        }
    }
    (max, sum as f64 / (n * 3) as f64)
}

#[allow(unused_imports)] // not every test file compares with PSNR
pub use fovea_pipeline::metrics::psnr;
