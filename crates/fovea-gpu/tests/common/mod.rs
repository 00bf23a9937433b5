//! Shared setup for the GPU tests: one device per test binary, the dtypes it supports
//! (with the adapter named when f16 is skipped), and a fresh seed per run.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::OnceLock;

use fovea_gpu::selfcheck::{Check, Checker};
use fovea_gpu::{AdapterClass, DType, Gpu, GpuOptions, MatmulKernel};

fn open(options: GpuOptions) -> Gpu {
    let gpu =
        pollster::block_on(Gpu::new(options)).unwrap_or_else(|e| panic!("no GPU for tests: {e}"));
    eprintln!(
        "testing on {} ({:?}, {:?}), {:?}; {}",
        gpu.adapter_info().name,
        gpu.adapter_info().backend,
        gpu.adapter_info().device_type,
        gpu.capabilities(),
        gpu.describe()
    );
    gpu
}

/// The adapter as detected (or as FOVEA_ADAPTER_CLASS forces it).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| open(GpuOptions::default()))
}

/// One device per kernel family the tests must cover on any adapter: the GPU class
/// (not on GL over llvmpipe, see below), the software class, and where the adapter has
/// subgroups, the software class without them (the blocked kernels: what SwiftShader
/// and GL run; without subgroups the software class itself runs them) and that again
/// forced to the cpu-uniform matmul/conv2d kernels (chosen by no adapter, kept for
/// comparisons). Kernel tests run their bodies on each.
pub fn class_gpus() -> Vec<&'static Gpu> {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| {
        let forced = |class, allow_subgroups, matmul_kernel| {
            open(GpuOptions {
                adapter_class: Some(class),
                allow_subgroups,
                matmul_kernel,
                ..Default::default()
            })
        };
        let software = forced(AdapterClass::Software, true, None);
        let mut gpus = Vec::new();
        // wgpu's GL backend on llvmpipe (the CI's GL run) gets no GPU-class device: there
        // llvmpipe spent 25+ minutes compiling the tiled matmul (a 256-invocation kernel
        // with barriers, which llvmpipe turns into coroutines) on a cold shader cache.
        // The GPU-class kernels are checked on Vulkan; GL on llvmpipe runs the software
        // plan.
        let software_gl = software.adapter_info().backend == wgpu::Backend::Gl
            && software.adapter_info().device_type == wgpu::DeviceType::Cpu;
        if !software_gl {
            gpus.push(forced(AdapterClass::Gpu, true, None));
        }
        let subgroups = software.capabilities().subgroups;
        gpus.push(software);
        if subgroups {
            gpus.push(forced(AdapterClass::Software, false, None));
            gpus.push(forced(
                AdapterClass::Software,
                false,
                Some(MatmulKernel::CpuUniform),
            ));
        }
        gpus
    })
    .iter()
    .collect()
}

/// A checker on `gpu` with this run's seed.
pub fn checker_on(gpu: &Gpu) -> Checker {
    Checker::new(gpu, seed())
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
