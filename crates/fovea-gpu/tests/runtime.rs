//! The runtime around the kernels: error paths name the op, shapes and limits without
//! panicking or losing the device; the pool reuses buffers and tracks its peak; a
//! batch of chained ops is one submission; profiling returns per-op GPU times.

mod common;

use common::{class_gpus, gpu};
use fovea_gpu::{
    AdapterClass, AttentionOptions, ConvAdds, DType, Gpu, GpuError, GpuOptions, MatmulKernel,
    MatmulOptions, WinogradTile,
};
use pollster::block_on;

fn zeros(shape: &[usize]) -> fovea_gpu::Tensor {
    let n = shape.iter().product();
    gpu()
        .upload_f32("zeros", shape, DType::F32, &vec![0.0; n])
        .unwrap()
}

#[test]
fn shape_mismatches_name_the_op_and_shapes() {
    let g = gpu();
    let mut b = g.batch();
    let e = b
        .matmul(
            &zeros(&[2, 3, 4]),
            &zeros(&[5, 6]),
            None,
            MatmulOptions::default(),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("matmul:") && msg.contains("(2, 3, 4)") && msg.contains("(5, 6)"),
        "{msg}"
    );

    let e = b
        .conv2d(&zeros(&[1, 3, 8, 8]), &zeros(&[4, 5, 3, 3]), None, 1, 1)
        .unwrap_err();
    assert!(
        e.to_string().contains("conv2d") && e.to_string().contains("input channels"),
        "{e}"
    );

    let e = b.add(&zeros(&[2, 3]), &zeros(&[4])).unwrap_err();
    assert!(e.to_string().contains("do not broadcast"), "{e}");

    // Winograd adds of the wrong size, named with the sizes they need.
    let mut prep = g.batch();
    let u = prep
        .winograd_weights(&zeros(&[4, 3, 3, 3]), WinogradTile::F2)
        .unwrap();
    prep.submit().unwrap();
    let x = zeros(&[2, 3, 8, 8]);
    let (per_channel, residual) = (zeros(&[4]), zeros(&[2, 4, 8, 4]));
    let e = b
        .conv2d_winograd_add(
            &x,
            &u,
            None,
            ConvAdds {
                per_channel: Some(&per_channel),
                residual: None,
            },
        )
        .unwrap_err();
    assert!(
        e.to_string().starts_with("conv2d_winograd:") && e.to_string().contains("2 x 4"),
        "{e}"
    );
    let e = b
        .conv2d_winograd_add(
            &x,
            &u,
            None,
            ConvAdds {
                per_channel: None,
                residual: Some(&residual),
            },
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("residual (2, 4, 8, 4)") && e.to_string().contains("(2, 4, 8, 8)"),
        "{e}"
    );

    // A residual that is not the output's shape, named with both shapes.
    let e = b
        .linear_add(&zeros(&[2, 8]), &zeros(&[4, 8]), None, &zeros(&[2, 8]))
        .unwrap_err();
    assert!(
        e.to_string().starts_with("linear:")
            && e.to_string().contains("residual (2, 8)")
            && e.to_string().contains("(2, 4)"),
        "{e}"
    );
    let e = b
        .matmul_add(
            &zeros(&[3, 4]),
            &zeros(&[4, 8]),
            None,
            MatmulOptions::default(),
            &zeros(&[8, 3]),
        )
        .unwrap_err();
    assert!(
        e.to_string().starts_with("matmul:") && e.to_string().contains("(3, 8)"),
        "{e}"
    );

    let e = b
        .winograd_weights(&zeros(&[4, 5, 1, 1]), WinogradTile::F4)
        .unwrap_err();
    assert!(
        e.to_string().starts_with("winograd_weights:")
            && e.to_string().contains("3x3")
            && e.to_string().contains("(4, 5, 1, 1)"),
        "{e}"
    );
    let e = b
        .conv2d_winograd(&zeros(&[1, 3, 8, 8]), &zeros(&[16, 4, 5]), None)
        .unwrap_err();
    assert!(
        e.to_string().starts_with("conv2d_winograd:")
            && e.to_string().contains("(1, 3, 8, 8)")
            && e.to_string().contains("(16, 4, 5)"),
        "{e}"
    );
    let e = b
        .conv2d_winograd(
            &zeros(&[1, 5, 8, 8]),
            &zeros(&[16, 4, 5]),
            Some(&zeros(&[3])),
        )
        .unwrap_err();
    assert!(e.to_string().contains("C_out = 4"), "{e}");
    // Weights of neither tile's size; F(4x4) weights in f16 (they are f32 for every
    // input dtype).
    let e = b
        .conv2d_winograd(&zeros(&[1, 5, 8, 8]), &zeros(&[25, 4, 5]), None)
        .unwrap_err();
    assert!(e.to_string().contains("(16 or 36, C_out, C_in)"), "{e}");
    if g.capabilities().shader_f16 {
        let half = |shape: &[usize]| {
            let n = shape.iter().product();
            g.upload_f32("zeros", shape, DType::F16, &vec![0.0; n])
                .unwrap()
        };
        let e = b
            .conv2d_winograd(&half(&[1, 5, 8, 8]), &half(&[36, 4, 5]), None)
            .unwrap_err();
        assert!(
            e.to_string().contains("(36, 4, 5)") && e.to_string().contains("must be f32"),
            "{e}"
        );
    }

    let e = b
        .group_norm(&zeros(&[1, 6, 4]), 4, None, 1e-5, false)
        .unwrap_err();
    assert!(
        e.to_string().contains("groups") && e.to_string().contains("divisor"),
        "{e}"
    );

    let e = b.geglu(&zeros(&[3, 5])).unwrap_err();
    assert!(e.to_string().contains("even last dimension"), "{e}");

    let e = zeros(&[2, 3]).reshape(&[7]).unwrap_err();
    assert!(
        e.to_string().contains("(2, 3)") && e.to_string().contains("(7,)"),
        "{e}"
    );

    let e = b
        .attention(
            &zeros(&[1, 4, 8]),
            &zeros(&[1, 5, 8]),
            &zeros(&[1, 6, 8]),
            &AttentionOptions::new(1, 2, 4),
        )
        .unwrap_err();
    assert!(e.to_string().contains("k has 5 tokens but v has 6"), "{e}");

    // Nothing was recorded by the failed calls, and the device still works.
    assert_eq!(b.dispatch_count(), 0);
    b.submit().unwrap();
    let mut b = g.batch();
    let y = b.scale(&zeros(&[3]), 1.0, 2.0).unwrap();
    b.submit().unwrap();
    assert_eq!(block_on(g.read_f32(&y)).unwrap(), vec![2.0; 3]);
}

#[test]
fn invalid_parameters_are_errors() {
    let g = gpu();
    let mut b = g.batch();
    let e = b
        .attention(
            &zeros(&[1, 4, 200]),
            &zeros(&[1, 4, 200]),
            &zeros(&[1, 4, 200]),
            &AttentionOptions::new(1, 1, 200),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            GpuError::Param {
                param: "head_dim",
                ..
            }
        ),
        "{e}"
    );
    let e = b
        .conv2d(&zeros(&[1, 1, 4, 4]), &zeros(&[1, 1, 3, 3]), None, 0, 1)
        .unwrap_err();
    assert!(
        matches!(
            e,
            GpuError::Param {
                param: "stride",
                ..
            }
        ),
        "{e}"
    );
    let e = b.layer_norm(&zeros(&[2, 4]), None, f32::NAN).unwrap_err();
    assert!(matches!(e, GpuError::Param { param: "eps", .. }), "{e}");
    let e = b.softmax(&zeros(&[2, 4]), f32::INFINITY).unwrap_err();
    assert!(matches!(e, GpuError::Param { param: "scale", .. }), "{e}");
    let mut opts = AttentionOptions::new(1, 1, 8);
    opts.scale = Some(f32::NAN);
    let e = b
        .attention(
            &zeros(&[1, 4, 8]),
            &zeros(&[1, 4, 8]),
            &zeros(&[1, 4, 8]),
            &opts,
        )
        .unwrap_err();
    assert!(matches!(e, GpuError::Param { param: "scale", .. }), "{e}");
}

#[test]
fn buffers_beyond_the_adapter_limit_are_refused_with_the_limit_named() {
    let g = gpu();
    let limit = g.limits().max_storage_buffer_binding_size;
    let elems = (limit / 4 + 1) as usize;
    let e = g.empty("test_op", &[elems], DType::F32).unwrap_err();
    match &e {
        GpuError::Limit {
            op,
            limit: name,
            requested,
            available,
            ..
        } => {
            assert_eq!(*op, "test_op");
            assert_eq!(*name, "max_storage_buffer_binding_size");
            assert!(requested > available);
        }
        other => panic!("expected a limit error, got {other}"),
    }
    assert!(
        e.to_string().contains("max_storage_buffer_binding_size"),
        "{e}"
    );
    // An upload whose data does not match its shape.
    let e = g
        .upload_f32("weights", &[2, 2], DType::F32, &[1.0; 3])
        .unwrap_err();
    assert!(
        e.to_string().contains("weights") && e.to_string().contains("4 elements"),
        "{e}"
    );
}

#[test]
fn f16_on_a_device_without_shader_f16_is_a_clear_error() {
    // Open a second device with f16 disabled: the same refusal as on adapters that lack it.
    let g = block_on(Gpu::new(GpuOptions {
        allow_f16: false,
        ..Default::default()
    }))
    .unwrap();
    let e = g.upload_f32("x", &[4], DType::F16, &[0.0; 4]).unwrap_err();
    assert!(
        matches!(
            e,
            GpuError::Dtype {
                dtype: DType::F16,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("shader-f16"), "{e}");
    let e = g.empty("matmul", &[4], DType::F16).unwrap_err();
    assert!(e.to_string().starts_with("matmul:"), "{e}");
}

#[test]
fn mixed_dtypes_are_refused() {
    let g = gpu();
    if !g.capabilities().shader_f16 {
        eprintln!(
            "skipped: adapter `{}` has no shader-f16",
            g.adapter_info().name
        );
        return;
    }
    let h = g.upload_f32("h", &[2, 2], DType::F16, &[0.0; 4]).unwrap();
    let mut b = g.batch();
    let e = b.add(&zeros(&[2, 2]), &h).unwrap_err();
    assert!(e.to_string().contains("mix f32 and f16"), "{e}");
}

#[test]
fn chained_ops_run_as_one_submission() {
    let g = gpu();
    let x = g
        .upload_f32("x", &[2, 3], DType::F32, &[1.0, -2.0, 3.0, 0.5, 0.0, -1.0])
        .unwrap();
    let w = g
        .upload_f32(
            "w",
            &[4, 3],
            DType::F32,
            &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        )
        .unwrap();
    let bias = g
        .upload_f32("bias", &[4], DType::F32, &[0.5, 0.5, 0.5, 0.5])
        .unwrap();
    let mut b = g.batch();
    let h = b.linear(&x, &w, Some(&bias)).unwrap();
    let h = b.silu(&h).unwrap();
    let y = b.add(&h, &bias).unwrap();
    assert_eq!(b.dispatch_count(), 3);
    b.submit().unwrap();
    let got = block_on(g.read_f32(&y)).unwrap();
    let silu = |v: f64| v / (1.0 + (-v).exp());
    let rows = [[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]];
    for (r, row) in rows.iter().enumerate() {
        let lin = [
            row[0] + 0.5,
            row[1] + 0.5,
            row[2] + 0.5,
            row.iter().sum::<f64>() + 0.5,
        ];
        for (c, v) in lin.iter().enumerate() {
            let want = silu(*v) + 0.5;
            assert!(
                (got[r * 4 + c] as f64 - want).abs() < 1e-5,
                "[{r},{c}] got {} want {want}",
                got[r * 4 + c]
            );
        }
    }
}

#[test]
fn pool_reuses_buffers_and_reports_its_peak() {
    // A private device so other tests' allocations do not interleave.
    let g = block_on(Gpu::new(GpuOptions::default())).unwrap();
    let before = g.pool_stats();
    assert_eq!(before.in_use, 0);
    let a = g.empty("t", &[1024], DType::F32).unwrap();
    let b = g.empty("t", &[1024], DType::F32).unwrap();
    let s = g.pool_stats();
    assert_eq!(s.in_use, 8192);
    assert_eq!(s.buffers_created, 2);
    drop(a);
    drop(b);
    let s = g.pool_stats();
    assert_eq!((s.in_use, s.peak_in_use, s.allocated), (0, 8192, 8192));
    // 3996 bytes round up to the same 4096-byte bucket: reused, nothing created.
    let c = g.empty("t", &[999], DType::F32).unwrap();
    let s = g.pool_stats();
    assert_eq!((s.buffers_created, s.reuses, s.in_use), (2, 1, 4096));
    drop(c);
    g.trim_pool();
    assert_eq!(g.pool_stats().allocated, 0);
    g.reset_peak();
    assert_eq!(g.pool_stats().peak_in_use, 0);
}

#[test]
fn pipelines_are_cached_and_labelled() {
    let g = block_on(Gpu::new(GpuOptions::default())).unwrap();
    let x = g.upload_f32("x", &[4], DType::F32, &[1.0; 4]).unwrap();
    for _ in 0..3 {
        let mut b = g.batch();
        b.silu(&x).unwrap();
        b.gelu(&x).unwrap();
        b.submit().unwrap();
    }
    // One module variant, one pipeline per entry point used.
    assert_eq!(g.cached_pipelines(), 1);
}

/// Records a few ops of different kernels and returns their outputs.
fn a_few_ops(g: &Gpu) -> Vec<Vec<f32>> {
    let x = g
        .upload_f32(
            "x",
            &[16, 16],
            DType::F32,
            &(0..256).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<_>>(),
        )
        .unwrap();
    let mut b = g.batch();
    let y = b.matmul(&x, &x, None, MatmulOptions::default()).unwrap();
    let z = b.silu(&y).unwrap();
    let w = b.softmax(&z, 0.5).unwrap();
    b.submit().unwrap();
    [y, z, w]
        .iter()
        .map(|t| block_on(g.read_f32(t)).unwrap())
        .collect()
}

#[test]
fn pipelines_compiled_ahead_serve_the_engine_and_keep_its_order() {
    let first = block_on(Gpu::new(GpuOptions::default())).unwrap();
    let expected = a_few_ops(&first);
    let used = first.used_pipelines();
    assert!(used.len() >= 3, "{used:?}");
    assert!(
        used.iter().all(|(_, ms)| ms.is_some_and(|ms| ms >= 0.0)),
        "{used:?}"
    );
    let mut labels: Vec<String> = used.iter().map(|(l, _)| l.clone()).collect();
    // What a later process asks for, costliest first, plus labels of kernels, dtypes,
    // defines and entry points this build does not have: those are skipped.
    labels.reverse();
    let mut hints = labels.clone();
    hints.extend(
        [
            "nokernel:f32/x",
            "matmul:f64/matmul",
            "matmul_cpu:f32:TRANS_A=7/matmul_cpu",
            "matmul:f32/not_an_entry",
            "no label at all",
        ]
        .map(String::from),
    );
    let g = block_on(Gpu::new(GpuOptions::default())).unwrap();
    assert_eq!(g.warm_pipelines(&hints), labels.len());
    // The ops start while the background threads compile; they wait for a pipeline
    // being compiled there rather than compiling it again.
    assert_eq!(a_few_ops(&g), expected);
    assert_eq!(g.cached_pipelines(), labels.len());
    let again: Vec<String> = g.used_pipelines().into_iter().map(|(l, _)| l).collect();
    labels.reverse();
    assert_eq!(again, labels, "the engine's own order, not the hint's");
}

#[test]
fn every_pipeline_label_names_its_key() {
    for kernel in fovea_shaders::KERNELS {
        for set in kernel.define_sets {
            for dtype in fovea_shaders::Dtype::ALL {
                for &entry in kernel.entry_points {
                    let key = fovea_gpu::PipelineKey {
                        variant: fovea_shaders::Variant::new(kernel.name, dtype, set).unwrap(),
                        entry,
                    };
                    assert_eq!(fovea_gpu::PipelineKey::from_label(&key.label()), Some(key));
                }
            }
        }
    }
    for bad in [
        "",
        "/",
        "matmul",
        "matmul:f32",
        "matmul:f32:/matmul",
        "matmul:f32:X/matmul",
    ] {
        assert_eq!(fovea_gpu::PipelineKey::from_label(bad), None, "{bad}");
    }
}

#[test]
fn profiled_batches_time_each_op() {
    let g = gpu();
    let x = zeros(&[64, 64]);
    let mut b = g.profiled_batch();
    let y = b.matmul(&x, &x, None, MatmulOptions::default()).unwrap();
    b.silu(&y).unwrap();
    let timings = block_on(b.submit().unwrap().timings()).unwrap();
    if !has_timestamps(g) {
        assert!(timings.is_empty());
        return;
    }
    let labels: Vec<&str> = timings.iter().map(|t| t.label.as_str()).collect();
    // The label names the variant the device's kernel plan chose (64 x 64: the
    // software kernels load four neighbouring columns at a time, and with 8-lane
    // subgroups take 32 rows per workgroup).
    let matmul = match g.kernel_plan().matmul {
        MatmulKernel::Tiled => "matmul:f32/matmul",
        MatmulKernel::CpuUniform => {
            "matmul_cpu:f32:TRANS_A=0,TRANS_B=0,SUBGROUP=0,QUADS=1,ROW_GROUPS=1,GEGLU=0/matmul_cpu"
        }
        MatmulKernel::CpuSubgroup => {
            "matmul_cpu:f32:TRANS_A=0,TRANS_B=0,SUBGROUP=1,QUADS=1,ROW_GROUPS=4,GEGLU=0/matmul_cpu"
        }
        MatmulKernel::CpuBlocked => "matmul_blocked:f32/matmul_blocked",
    };
    // Software adapters read the 64 x 64 f32 output as whole blocks.
    let unary = if g.kernel_plan().narrow {
        "elementwise_blocks:f32/unary_blocks"
    } else {
        "elementwise:f32/unary"
    };
    assert_eq!(labels, [matmul, unary]);
    assert!(
        timings
            .iter()
            .all(|t| t.gpu_ns.is_finite() && t.gpu_ns >= 0.0)
    );
}

/// Whether `g` can time dispatches; says so when it cannot (the test is then skipped).
fn has_timestamps(g: &Gpu) -> bool {
    let yes = g.capabilities().timestamps;
    if !yes {
        eprintln!(
            "skipped: adapter `{}` has no timestamp queries",
            g.adapter_info().name
        );
    }
    yes
}

/// Each plan runs the attention kernel it names: the software class with 8-lane
/// subgroups the query-per-lane kernel for the head dims it is compiled for, the tiled
/// kernel otherwise.
#[test]
fn the_plan_picks_the_attention_kernel() {
    for g in class_gpus() {
        if !has_timestamps(g) {
            return;
        }
        let plan = g.kernel_plan();
        for d in [32, 36] {
            let x = g
                .upload_f32("x", &[1, 9, 2 * d], DType::F32, &vec![0.5; 18 * d])
                .unwrap();
            let mut b = g.profiled_batch();
            b.attention(&x, &x, &x, &AttentionOptions::new(1, 2, d))
                .unwrap();
            let timings = block_on(b.submit().unwrap().timings()).unwrap();
            assert_eq!(
                plan.attention_per_lane,
                plan.matmul == MatmulKernel::CpuSubgroup
            );
            assert_eq!(
                plan.attention_blocked,
                plan.matmul == MatmulKernel::CpuBlocked
            );
            let want = if plan.attention_per_lane && d == 32 {
                // Rows of 2 * 32 elements: k and v are read in quads; four queries
                // per lane at this head dim.
                "attention_cpu:f32:HEAD_DIM=32,SUBGROUP=1,COUNT_WORK=0,QUADS=1,QUERY_GROUPS=4/attention_cpu"
                    .to_string()
            } else if plan.attention_blocked && d <= 32 {
                // Head dims 17..=32: the 32-wide rows.
                "attention_blocked:f32:ROW32=1,COUNT_WORK=0/attention_blocked".to_string()
            } else {
                "attention:f32:D_MAX=64,KEY_TILE=16,COUNT_WORK=0/attention".to_string()
            };
            assert_eq!(timings[0].label, want, "{}", plan.describe());
        }
    }
}

#[test]
fn the_plan_picks_the_norm_and_elementwise_kernels() {
    for g in class_gpus() {
        if !has_timestamps(g) {
            return;
        }
        let plan = g.kernel_plan();
        assert_eq!(plan.narrow, plan.class == AdapterClass::Software);
        // 4 x 32768 elements per group fit the narrow kernel; 2 x 65540 do not.
        for (c, s, narrow) in [(8, 32768, true), (4, 65540, false)] {
            let x = g
                .upload_f32("x", &[1, c, s], DType::F32, &vec![0.5; c * s])
                .unwrap();
            let mut b = g.profiled_batch();
            b.group_norm(&x, 2, None, 1e-5, false).unwrap();
            b.silu(&x).unwrap();
            let timings = block_on(b.submit().unwrap().timings()).unwrap();
            let (norm, unary) = match (plan.narrow, narrow) {
                (true, true) => (
                    "norm_blocks:f32/group_norm_blocks",
                    "elementwise_blocks:f32/unary_blocks",
                ),
                (true, false) => ("norm:f32/group_norm", "elementwise_blocks:f32/unary_blocks"),
                (false, _) => ("norm:f32/group_norm", "elementwise:f32/unary"),
            };
            let labels = [timings[0].label.as_str(), timings[1].label.as_str()];
            assert_eq!(labels, [norm, unary], "{}", plan.describe());
        }
    }
}
