//! Shared setup for the GPU tests: one device per test binary, the dtypes it supports
//! (with the adapter named when f16 is skipped), and a fresh seed per run.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::OnceLock;

use fovea_gpu::selfcheck::{Check, Checker};
use fovea_gpu::{DType, Gpu, GpuOptions};

pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = pollster::block_on(Gpu::new(GpuOptions::default()))
            .unwrap_or_else(|e| panic!("no GPU for tests: {e}"));
        eprintln!(
            "testing on {} ({:?}, {:?}), {:?}",
            gpu.adapter_info().name,
            gpu.adapter_info().backend,
            gpu.adapter_info().device_type,
            gpu.capabilities()
        );
        gpu
    })
}

/// f32 always; f16 where the adapter has shader-f16. An adapter without it (wgpu's GL
/// backend, SwiftShader) is an expected skip, printed with the adapter's name.
pub fn dtypes() -> Vec<DType> {
    let gpu = gpu();
    if gpu.capabilities().shader_f16 {
        vec![DType::F32, DType::F16]
    } else {
        eprintln!(
            "f16 cases skipped: adapter `{}` has no shader-f16",
            gpu.adapter_info().name
        );
        vec![DType::F32]
    }
}

/// FOVEA_TEST_SEED replays a run; otherwise each run draws fresh inputs.
pub fn seed() -> u64 {
    if let Ok(s) = std::env::var("FOVEA_TEST_SEED") {
        return s.parse().expect("FOVEA_TEST_SEED must be an integer");
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

pub fn checker() -> Checker {
    Checker::new(gpu(), seed())
}

/// Runs a check future and fails with its report (and the seed) when out of bounds.
pub fn expect_pass(seed: u64, check: fovea_gpu::Result<Check>) {
    let check = check.unwrap_or_else(|e| panic!("kernel error (seed {seed}): {e}"));
    eprintln!("{check}");
    assert!(
        check.passed(),
        "{check} (replay with FOVEA_TEST_SEED={seed})"
    );
}
