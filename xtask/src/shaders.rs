//! `cargo xtask shaders`: parse and validate every kernel variant with naga, then
//! translate it to SPIR-V, MSL, HLSL and GLSL. Any failure is an error; the targets a
//! variant cannot reach are declared in `fovea_shaders::Variant::unsupported_targets`.

use fovea_shaders::{Dtype, Target, Variant};
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// One validated-and-translated module: how many bytes each backend produced.
pub struct Translated {
    /// Label of what was checked.
    pub label: String,
    /// (target, output size in bytes), or the declared reason it was not attempted.
    pub outputs: Vec<(Target, Result<usize, &'static str>)>,
}

/// Validates WGSL `source` (already preprocessed) and translates every entry point to
/// every target except those in `skip`. Returns a readable error naming the stage.
pub fn check_source(
    label: &str,
    source: &str,
    dtype: Dtype,
    subgroups: bool,
    skip: &[(Target, &'static str)],
) -> Result<Translated, String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{label}: WGSL parse error\n{}", e.emit_to_string(source)))?;
    let mut caps = Capabilities::empty();
    if dtype == Dtype::F16 {
        // f16 modules unpack two f16 from one u32 (`pair_values`); wgpu grants the
        // f16-in-f32 capability on every backend that has SHADER_F16.
        caps |= Capabilities::SHADER_FLOAT16 | Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    }
    if subgroups {
        caps |= Capabilities::SUBGROUP;
    }
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("{label}: validation error\n{}", e.emit_to_string(source)))?;

    let entry_points: Vec<String> = module.entry_points.iter().map(|e| e.name.clone()).collect();
    if entry_points.is_empty() {
        return Err(format!("{label}: no entry points"));
    }
    let mut outputs = Vec::new();
    for target in Target::ALL {
        if let Some((_, why)) = skip.iter().find(|(t, _)| *t == target) {
            outputs.push((target, Err(*why)));
            continue;
        }
        let mut bytes = 0usize;
        for entry in &entry_points {
            bytes += translate(&module, &info, target, entry, dtype, subgroups).map_err(|e| {
                format!(
                    "{label}: {} translation of `{entry}` failed: {e}",
                    target.name()
                )
            })?;
        }
        outputs.push((target, Ok(bytes)));
    }
    Ok(Translated {
        label: label.to_string(),
        outputs,
    })
}

fn translate(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    target: Target,
    entry: &str,
    dtype: Dtype,
    subgroups: bool,
) -> Result<usize, String> {
    let stage = naga::ShaderStage::Compute;
    match target {
        Target::SpirV => {
            let options = spv::Options {
                lang_version: (1, 3),
                ..Default::default()
            };
            let pipeline = spv::PipelineOptions {
                shader_stage: stage,
                entry_point: entry.to_string(),
            };
            spv::write_vec(module, info, &options, Some(&pipeline))
                .map(|words| words.len() * 4)
                .map_err(|e| format!("{e:?}"))
        }
        Target::Msl => {
            let options = msl::Options {
                lang_version: (2, 4),
                ..Default::default()
            };
            let pipeline = msl::PipelineOptions {
                entry_point: Some((stage, entry.to_string())),
                ..Default::default()
            };
            msl::write_string(module, info, &options, &pipeline)
                .map(|(s, _)| s.len())
                .map_err(|e| format!("{e:?}"))
        }
        Target::Hlsl => {
            let options = hlsl::Options {
                // Shader model 6.2 is the first with native 16-bit types; D3D12 adapters
                // that report shader-f16 support it.
                // Wave intrinsics (subgroups) need shader model 6.0.
                shader_model: if dtype == Dtype::F16 {
                    hlsl::ShaderModel::V6_2
                } else if subgroups {
                    hlsl::ShaderModel::V6_0
                } else {
                    hlsl::ShaderModel::V5_1
                },
                ..Default::default()
            };
            let pipeline = hlsl::PipelineOptions {
                entry_point: Some((stage, entry.to_string())),
            };
            let mut out = String::new();
            hlsl::Writer::new(&mut out, &options, &pipeline)
                .write(module, info, None)
                .map_err(|e| format!("{e:?}"))?;
            Ok(out.len())
        }
        Target::Glsl => {
            let options = glsl::Options::default();
            let pipeline = glsl::PipelineOptions {
                shader_stage: stage,
                entry_point: entry.to_string(),
                multiview: None,
            };
            let mut out = String::new();
            glsl::Writer::new(
                &mut out,
                module,
                info,
                &options,
                &pipeline,
                naga::proc::BoundsCheckPolicies::default(),
            )
            .and_then(|mut w| w.write())
            .map_err(|e| format!("{e:?}"))?;
            Ok(out.len())
        }
    }
}

/// Checks one registered variant.
pub fn check_variant(variant: &Variant) -> Result<Translated, String> {
    let source = variant.source().map_err(|e| e.to_string())?;
    check_source(
        &variant.label(),
        &source,
        variant.dtype,
        variant.needs_subgroups(),
        &variant.unsupported_targets(),
    )
}

/// Checks a standalone WGSL file as if it were a kernel (f32 storage, no defines).
pub fn check_file(path: &std::path::Path) -> Result<Translated, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.display().to_string();
    let source =
        fovea_shaders::preprocess(&text, &name, Dtype::F32, &[]).map_err(|e| e.to_string())?;
    check_source(&name, &source, Dtype::F32, false, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_variant_validates_and_translates() {
        for v in fovea_shaders::all_variants() {
            if let Err(e) = check_variant(&v) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn a_broken_shader_fails_with_its_label() {
        let dir = std::env::temp_dir().join(format!("fovea-xtask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Type error: assigning an f32 to a u32 variable.
        let type_error = dir.join("broken_type.wgsl");
        std::fs::write(
            &type_error,
            "@group(0) @binding(0) var<storage, read_write> y: array<u32>;\n\
             @compute @workgroup_size(1) fn main() { y[0] = 1.5; }\n",
        )
        .unwrap();
        let err = check_file(&type_error).err().expect("type error must fail");
        assert!(err.contains("broken_type.wgsl"), "{err}");
        // Syntax error.
        let syntax = dir.join("broken_syntax.wgsl");
        std::fs::write(&syntax, "@compute @workgroup_size(1) fn main( {}\n").unwrap();
        assert!(check_file(&syntax).is_err());
        // A reserved word (PLATFORM.md: `active`) used as a name.
        let reserved = dir.join("broken_reserved.wgsl");
        std::fs::write(
            &reserved,
            "@compute @workgroup_size(1) fn main() { let active = 1u; }\n",
        )
        .unwrap();
        assert!(check_file(&reserved).is_err());
        // A correct file passes, so the failures above are not vacuous.
        let good = dir.join("good.wgsl");
        std::fs::write(
            &good,
            "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
             @compute @workgroup_size(1) fn main() { y[0] = silu(1.5); }\n",
        )
        .unwrap();
        let ok = check_file(&good).unwrap();
        assert_eq!(ok.outputs.len(), 4);
        assert!(ok.outputs.iter().all(|(_, r)| r.is_ok()));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn f16_without_the_capability_is_rejected() {
        let v = Variant::new("matmul", Dtype::F16, &[]).unwrap();
        let src = v.source().unwrap();
        // Validating an f16 module as if it were f32 must fail: the capability check is real.
        assert!(check_source("f16-as-f32", &src, Dtype::F32, false, &[]).is_err());
    }
}
