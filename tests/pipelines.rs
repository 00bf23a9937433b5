//! fovea-shaders declares the kernel variants; fovea-gpu must be able to build a
//! pipeline for every one of them (every entry point) on the adapter under test, so
//! that what `cargo xtask shaders` validates offline is also what the device accepts.

use fovea_gpu::{Gpu, GpuOptions, PipelineKey};

#[test]
fn every_registered_variant_builds_on_this_adapter() {
    let gpu = pollster::block_on(Gpu::new(GpuOptions::default())).expect("a GPU adapter");
    let mut built = 0;
    let mut skipped = Vec::new();
    for variant in fovea_shaders::all_variants() {
        if (variant.needs_f16() && !gpu.capabilities().shader_f16)
            || (variant.needs_subgroups() && !gpu.capabilities().subgroups)
        {
            skipped.push(variant.label());
            continue;
        }
        for entry in variant.kernel().entry_points {
            let key = PipelineKey {
                variant: variant.clone(),
                entry,
            };
            gpu.pipeline(&key).unwrap_or_else(|e| {
                panic!("{} failed on {}: {e}", key.label(), gpu.adapter_info().name)
            });
            built += 1;
        }
    }
    if !skipped.is_empty() {
        eprintln!(
            "adapter `{}` lacks shader-f16 or subgroups; skipped {skipped:?}",
            gpu.adapter_info().name
        );
    }
    assert!(built >= 20, "only {built} pipelines built");
    eprintln!("{built} pipelines built on {}", gpu.adapter_info().name);
}
