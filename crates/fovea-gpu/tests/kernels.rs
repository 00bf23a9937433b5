//! Every kernel against the float64 reference on fresh random inputs, at several shapes
//! including ones that are not multiples of the tile sizes (64 for matmul/conv tiles
//! and attention query tiles, 16 for K slices and key tiles, 256 for elementwise
//! workgroups, 8 x 16 for the software ones), on every adapter class the tests run. Bounds: selfcheck::F32_BOUND (1e-5) and F16_BOUND (2e-3), normalised
//! max error; outputs are poisoned with NaN first.

mod common;

use common::{checker, checker_on, class_gpus, dtypes, expect_pass};
use fovea_gpu::{Activation, BinaryOp, MatmulKernel, WinogradTile};
use pollster::block_on;

#[test]
fn activations_match_reference() {
    for gpu in class_gpus() {
        activation_cases(&mut checker_on(gpu));
    }
}

fn activation_cases(c: &mut fovea_gpu::selfcheck::Checker) {
    for dt in dtypes() {
        for act in [
            Activation::Identity,
            Activation::Silu,
            Activation::Gelu,
            Activation::QuickGelu,
            Activation::Relu,
            Activation::Tanh,
            Activation::GaussianStd,
        ] {
            // 257: the software element kernel; 3 x 1000 and 2 x 520 (whole blocks of
            // 8 f16 / 4 f32, part-filled last workgroups): the block kernel.
            for shape in [&[1][..], &[257], &[3, 1000], &[2, 520]] {
                expect_pass(c.seed, block_on(c.unary(act, shape, dt)));
            }
        }
    }
}

#[test]
fn broadcast_binary_ops_match_reference() {
    for gpu in class_gpus() {
        binary_cases(&mut checker_on(gpu));
    }
}

fn binary_cases(c: &mut fovea_gpu::selfcheck::Checker) {
    for dt in dtypes() {
        for op in [BinaryOp::Add, BinaryOp::Mul] {
            expect_pass(
                c.seed,
                block_on(c.binary(op, &[2, 3, 5, 7], &[2, 3, 5, 7], dt)),
            );
            expect_pass(c.seed, block_on(c.binary(op, &[2, 3, 5, 7], &[7], dt)));
            expect_pass(
                c.seed,
                block_on(c.binary(op, &[2, 320, 9], &[1, 320, 1], dt)),
            );
            expect_pass(c.seed, block_on(c.binary(op, &[4, 1], &[1, 300], dt)));
            // Unit dims inside and last: the software kernel's index carries at every
            // element and across dims within one invocation's run.
            expect_pass(
                c.seed,
                block_on(c.binary(op, &[3, 1, 5, 1], &[1, 4, 1, 1], dt)),
            );
            // Last dimensions of whole blocks: the software block kernel, with operands
            // contiguous along it, broadcast along it (the time-embedding add), or
            // broadcast over rows; the index carries across dims within a run.
            expect_pass(
                c.seed,
                block_on(c.binary(op, &[2, 3, 8, 24], &[2, 3, 8, 24], dt)),
            );
            expect_pass(
                c.seed,
                block_on(c.binary(op, &[2, 64, 4, 16], &[2, 64, 1, 1], dt)),
            );
            expect_pass(c.seed, block_on(c.binary(op, &[9, 16], &[16], dt)));
            // An odd number of blocks per slab, so that a run's second block carries
            // into d1 (then d0): blocks of 8 f16 for the first two, 4 f32 for the last.
            expect_pass(
                c.seed,
                block_on(c.binary(op, &[2, 3, 3, 8], &[1, 3, 1, 8], dt)),
            );
            expect_pass(
                c.seed,
                block_on(c.binary(op, &[3, 1, 3, 8], &[3, 1, 1, 1], dt)),
            );
            expect_pass(
                c.seed,
                block_on(c.binary(op, &[2, 3, 3, 4], &[1, 3, 1, 4], dt)),
            );
            // Five broadcast elements: whole blocks in an f16 buffer, not in an f32 one
            // (that falls back to the element kernel).
            expect_pass(c.seed, block_on(c.binary(op, &[5, 8], &[5, 1], dt)));
        }
    }
}

#[test]
fn geglu_matches_reference() {
    for gpu in class_gpus() {
        let mut c = checker_on(gpu);
        for dt in dtypes() {
            expect_pass(c.seed, block_on(c.geglu(1, 1, dt)));
            // Rows shorter than one invocation's run of 16.
            expect_pass(c.seed, block_on(c.geglu(7, 3, dt)));
            // Rows of whole blocks (the software block kernel): one block per row, and
            // several.
            expect_pass(c.seed, block_on(c.geglu(5, 8, dt)));
            expect_pass(c.seed, block_on(c.geglu(33, 160, dt)));
        }
    }
}

#[test]
fn matmul_matches_reference_on_awkward_shapes() {
    for gpu in class_gpus() {
        matmul_cases(&mut checker_on(gpu));
    }
}

/// K long enough that a kernel whose inner loops llvmpipe did not unroll would run past
/// its 65535-iteration budget (and leave outputs unwritten or partial).
#[test]
fn matmul_matches_reference_with_long_k() {
    for gpu in class_gpus() {
        let mut c = checker_on(gpu);
        for dt in dtypes() {
            expect_pass(
                c.seed,
                block_on(c.matmul(1, 9, 17, 8203, false, true, true, false, dt)),
            );
            // A multiple of 4: the Linear path that loads quads on software adapters.
            expect_pass(
                c.seed,
                block_on(c.matmul(1, 9, 17, 8204, false, true, true, false, dt)),
            );
            expect_pass(
                c.seed,
                block_on(c.matmul(2, 11, 5, 4099, true, false, false, true, dt)),
            );
            // Quads with three groups of 8 rows per workgroup (N a multiple of 4 too).
            expect_pass(
                c.seed,
                block_on(c.matmul(1, 40, 16, 8204, false, true, true, false, dt)),
            );
        }
    }
}

fn matmul_cases(c: &mut fovea_gpu::selfcheck::Checker) {
    for dt in dtypes() {
        // (batch, m, n, k, trans_a, trans_b, bias, b_batched)
        let cases = [
            (1, 1, 1, 1, false, false, false, true),
            (1, 64, 64, 16, false, false, false, true),
            (1, 65, 33, 70, false, false, true, true),
            (3, 17, 129, 31, true, false, false, true),
            (2, 40, 50, 77, false, true, true, false),
            (2, 77, 77, 40, true, true, false, true),
            (1, 130, 257, 200, false, true, true, false),
            // The Linear layout with K a multiple of 4: software adapters load K in
            // quads (one quad, batched weights); K = 2 mod 4 keeps one-element loads.
            (2, 9, 23, 4, false, true, true, true),
            (3, 19, 21, 36, false, true, false, true),
            (1, 33, 17, 6, false, true, false, false),
            // rhs (K, N) with K and N multiples of 4: software adapters give each lane
            // four neighbouring columns (one quad per k), the last workgroup part-filled.
            (2, 9, 36, 12, false, false, true, false),
            (2, 10, 44, 20, false, false, false, true),
            // Quads in both layouts on 8-lane subgroups take 1 to 4 groups of 8 rows
            // per workgroup by M (matmul_cpu's ROW_GROUPS): 4 groups with the last tile
            // holding 26 rows (its fourth group 2), 3 groups with a second tile of one
            // group, 2 groups part-filled.
            (2, 90, 40, 36, false, true, true, false),
            (1, 40, 12, 8, false, true, false, true),
            (2, 13, 8, 20, false, true, true, true),
            (2, 90, 36, 20, false, false, true, true),
            (1, 40, 8, 12, false, false, false, false),
            // lhs (K, M) with M a multiple of 4: 8-lane subgroups load it in quads along
            // M and regroup them along K (3 row groups, the last tile part-filled; one
            // group; the UNet's token projection).
            (2, 36, 20, 12, true, true, true, false),
            (1, 68, 8, 16, true, false, false, true),
            (1, 8, 12, 8, true, true, false, true),
            (2, 1024, 64, 64, true, true, true, false),
        ];
        for (batch, m, n, k, ta, tb, bias, bb) in cases {
            expect_pass(
                c.seed,
                block_on(c.matmul(batch, m, n, k, ta, tb, bias, bb, dt)),
            );
        }
        // Linear plus a residual, and GEGLU of a Linear: both in the matmul's store on
        // 8-lane subgroups where K and N are multiples of 4 (1 to 4 row groups, with and
        // without bias; GEGLU's output columns past the last workgroup's half), separate
        // ops elsewhere (N = 6).
        for (batch, rows, inf, outf, bias) in [
            (2, 45, 12, 40, true),
            (1, 9, 8, 8, false),
            (1, 20, 16, 24, true),
            (2, 1024, 64, 512, true),
            (1, 7, 8, 6, true),
        ] {
            expect_pass(
                c.seed,
                block_on(c.linear_add(batch, rows, inf, outf, bias, dt)),
            );
            expect_pass(
                c.seed,
                block_on(c.linear_geglu(batch, rows, inf, outf, bias, dt)),
            );
        }
        // A bias per row (M), with quads stored a row at a time on software adapters
        // (both layouts, several row blocks, the last part-filled) and without.
        for (batch, m, n, k, tb) in [
            (2, 19, 24, 12, true),
            (1, 10, 36, 8, false),
            (1, 9, 7, 5, false),
            // Four and three row groups per workgroup (see above).
            (1, 90, 16, 8, true),
            (2, 40, 8, 12, false),
        ] {
            expect_pass(
                c.seed,
                block_on(c.matmul_bias_per_row(batch, m, n, k, tb, dt)),
            );
        }
    }
}

#[test]
fn conv2d_matches_reference_for_sd_kernel_shapes() {
    for gpu in class_gpus() {
        conv2d_cases(&mut checker_on(gpu), gpu.kernel_plan().conv2d);
    }
}

fn conv2d_cases(c: &mut fovea_gpu::selfcheck::Checker, plan: MatmulKernel) {
    for dt in dtypes() {
        // (n, c_in, h, w, c_out, kernel, stride, pad, bias)
        let cases = [
            (1, 4, 8, 8, 8, 3, 1, 1, true),    // 3x3 stride 1 (resnet conv)
            (2, 3, 13, 11, 5, 3, 1, 1, false), // odd sizes
            (1, 8, 16, 15, 8, 3, 2, 1, true),  // stride-2 downsample (diffusers pads 1)
            (1, 70, 9, 7, 65, 1, 1, 0, true),  // 1x1 projection, channels past a tile
            (1, 5, 6, 6, 3, 3, 2, 0, true),    // stride 2 without padding
            (1, 6, 10, 9, 9, 3, 1, 0, true),   // 3x3 stride 1 without padding
            (1, 33, 12, 12, 17, 3, 1, 1, true),
            (2, 9, 5, 7, 11, 1, 1, 0, false), // 1x1, batch 2, pixels < one lane tile
            (1, 3, 7, 6, 4, 2, 1, 0, true),   // 2x2: the tiled kernel on every class
            // 7400 input channels: 66600 taps, past llvmpipe's 65535-iteration loop
            // budget per invocation if the taps ran as a loop
            (1, 7400, 2, 2, 3, 3, 1, 1, true),
            // Even widths kept by the conv that are not multiples of 4, and an odd
            // number of weights: one-element loads on software adapters.
            (2, 5, 6, 10, 10, 3, 1, 1, false),
            (1, 70, 4, 6, 12, 1, 1, 0, true),
            (1, 3, 4, 6, 5, 3, 1, 1, true),
            // Widths a multiple of 4: each lane owns four neighbouring pixels (a last
            // workgroup part-filled, a 1x1 channel tail).
            (2, 5, 7, 12, 10, 3, 1, 1, false),
            (1, 70, 4, 8, 12, 1, 1, 0, true),
            // 1x1 with C_in and H * W multiples of 4: the 8-lane plans run these on the
            // quad matmul (weights shared by the batch items, bias per output row), here
            // with batch 2, then a part-filled output-channel tile without bias.
            (2, 68, 5, 4, 20, 1, 1, 0, true),
            (1, 8, 3, 4, 9, 1, 1, 0, false),
            // Stride 2 over rows of three 8-pixel blocks, the last part-filled (the
            // blocked kernel's 17 input columns per row).
            (1, 6, 9, 37, 10, 3, 2, 1, true),
            // 3x3, stride 1, padding 1 with 16-33 channels (the direct kernels), then
            // with 64+ (Winograd on the cpu-subgroup plan, weights transformed by
            // conv2d itself): a width that is a multiple of 4 with an odd height (two
            // tiles per invocation, the last tile row half outside, tile counts padded
            // to a multiple of 4), then odd sizes and batch 2 (one tile per invocation).
            (1, 16, 8, 8, 16, 3, 1, 1, true),
            (1, 24, 5, 12, 32, 3, 1, 1, true),
            (2, 20, 7, 9, 18, 3, 1, 1, false),
            (1, 64, 5, 8, 72, 3, 1, 1, true),
            (2, 66, 3, 5, 64, 3, 1, 1, false),
            // Halving 3x3 convs (stride 2, padding 1, even input widths, output widths a
            // multiple of 4): each lane owns four neighbouring pixels and reads nine
            // input columns per row from five words (8-lane subgroups), here with an
            // odd height (a padded bottom row), a part-filled last workgroup and
            // output-channel tile, and batch 2; then an odd number of weights, which
            // keeps one-element loads.
            (1, 8, 16, 16, 8, 3, 2, 1, true),
            (2, 5, 9, 24, 10, 3, 2, 1, false),
            (1, 3, 8, 8, 3, 3, 2, 1, true),
            // With pairs and 8-lane subgroups a workgroup takes two groups of 8 output
            // channels (conv2d_cpu's ROW_GROUPS; the 3x3 cases above with pairs too,
            // where 8 or 10 channels leave the second group wholly or mostly past the
            // end): here two tiles of 16, the second holding 14.
            (1, 6, 16, 16, 30, 3, 2, 1, true),
            (1, 7, 6, 8, 30, 3, 1, 1, false),
        ];
        for (n, ci, h, w, co, k, s, p, b) in cases {
            expect_pass(c.seed, block_on(c.conv2d(n, ci, h, w, co, k, s, p, b, dt)));
        }
        // The VAE encoder's downsample: pad (0, 1, 0, 1), then a stride-2 3x3 conv.
        expect_pass(
            c.seed,
            block_on(c.conv2d_padded(1, 6, 9, 8, 7, 3, 2, [0, 1, 0, 1], true, dt)),
        );
        // Stride 1 with padding only below: the pixel pairs (and quads, at width 8)
        // meet the bottom rows' zeros.
        expect_pass(
            c.seed,
            block_on(c.conv2d_padded(1, 4, 5, 6, 8, 3, 1, [0, 2, 1, 1], true, dt)),
        );
        expect_pass(
            c.seed,
            block_on(c.conv2d_padded(1, 4, 5, 8, 8, 3, 1, [0, 2, 1, 1], true, dt)),
        );
        // A 1x1 conv padded above and below only (width kept, a multiple of 4): the
        // cpu kernels' four-pixel path meets whole rows of zeros, four channels at a
        // time and in the channel tail. (The blocked plan runs padded 1x1 convs on the
        // tiled kernel, which llvmpipe on GL takes many minutes to compile; it is
        // checked on Vulkan's GPU-class device.)
        if plan != MatmulKernel::CpuBlocked {
            expect_pass(
                c.seed,
                block_on(c.conv2d_padded(1, 9, 3, 8, 8, 1, 1, [1, 2, 0, 0], true, dt)),
            );
        }
    }
}

/// The explicit Winograd path (weights transformed in a batch of their own, as the
/// models run it) with both tiles on every class, whether or not its plan picks it for
/// conv2d: tile counts that are odd, a multiple of 4 and padded, sides that are not a
/// multiple of the tile, one and two tiles per invocation, batch 2, few channels; then
/// images split into runs of tiles (runs of 4 tiles over two images, and runs whose last
/// one is short).
#[test]
fn winograd_conv2d_matches_reference() {
    let whole = fovea_gpu::ops::WINOGRAD_RUN_ELEMS;
    for gpu in class_gpus() {
        let c = &mut checker_on(gpu);
        for dt in dtypes() {
            for tile in [WinogradTile::F2, WinogradTile::F4] {
                // (n, c_in, h, w, c_out, bias, adds (a value per image and channel and a
                // residual, in the output's store), tiles per run (0: all))
                for (n, ci, h, w, co, b, adds, run_tiles) in [
                    (1, 8, 8, 8, 8, true, false, 0),
                    (2, 5, 7, 9, 6, false, true, 0),
                    (1, 12, 6, 6, 9, true, false, 0),
                    (2, 40, 10, 16, 36, true, true, 0),
                    (1, 3, 1, 4, 2, true, false, 0),
                    (2, 6, 6, 8, 5, true, true, 4),
                    (1, 7, 9, 7, 8, false, true, 12),
                    (2, 4, 10, 12, 4, false, false, 8),
                    (1, 4, 13, 24, 8, true, true, 4),
                    (1, 6, 9, 32, 5, true, true, 8),
                    (2, 8, 16, 16, 8, false, true, 4),
                ] {
                    let run = match run_tiles {
                        0 => whole,
                        t => t * tile.elems() * ci.max(co),
                    };
                    expect_pass(
                        c.seed,
                        block_on(c.conv2d_winograd(tile, n, ci, h, w, co, b, adds, run, dt)),
                    );
                }
            }
        }
    }
}

#[test]
fn norms_and_softmax_match_reference() {
    for gpu in class_gpus() {
        norm_cases(&mut checker_on(gpu));
    }
}

fn norm_cases(c: &mut fovea_gpu::selfcheck::Checker) {
    for dt in dtypes() {
        expect_pass(c.seed, block_on(c.group_norm(2, 32, 64, 32, false, dt)));
        expect_pass(c.seed, block_on(c.group_norm(1, 64, 81, 8, true, dt)));
        expect_pass(c.seed, block_on(c.group_norm(3, 6, 5, 3, true, dt)));
        // Channels of whole blocks (the software block kernel): fewer blocks per group
        // than lanes, and an odd number of blocks per channel.
        expect_pass(c.seed, block_on(c.group_norm(2, 64, 16, 32, true, dt)));
        expect_pass(c.seed, block_on(c.group_norm(1, 24, 40, 6, true, dt)));
        // A group at the narrow (software) kernel's 131072-element limit, and one past it.
        expect_pass(c.seed, block_on(c.group_norm(1, 32, 4096, 1, true, dt)));
        expect_pass(c.seed, block_on(c.group_norm(1, 2, 65552, 1, false, dt)));
        expect_pass(c.seed, block_on(c.layer_norm(7, 320, dt)));
        expect_pass(c.seed, block_on(c.layer_norm(3, 1, dt)));
        expect_pass(c.seed, block_on(c.layer_norm(2, 1280, dt)));
        // Rows of whole blocks, rows not a multiple of 8 (the software block kernel).
        expect_pass(c.seed, block_on(c.layer_norm(13, 24, dt)));
        // Rows not a multiple of 8 (per-lane variant), and a row past its 16384 limit.
        expect_pass(c.seed, block_on(c.layer_norm(1001, 17, dt)));
        expect_pass(c.seed, block_on(c.layer_norm(2, 16500, dt)));
        expect_pass(c.seed, block_on(c.softmax(5, 77, dt)));
        expect_pass(c.seed, block_on(c.softmax(2, 1000, dt)));
    }
}

#[test]
fn layout_ops_are_exact() {
    let mut c = checker();
    for dt in dtypes() {
        expect_pass(c.seed, block_on(c.upsample(2, 3, 5, 7, dt)));
        expect_pass(c.seed, block_on(c.upsample(1, 1, 1, 1, dt)));
        expect_pass(c.seed, block_on(c.concat(2, 3, 5, 7, dt)));
        expect_pass(c.seed, block_on(c.concat(1, 64, 1, 33, dt)));
        // Output rows and channel planes of whole blocks (8 f16 / 4 f32): the software
        // block kernels, with an input half-block starting mid-block.
        expect_pass(c.seed, block_on(c.upsample(2, 3, 4, 8, dt)));
        expect_pass(c.seed, block_on(c.upsample(1, 2, 3, 4, dt)));
        expect_pass(c.seed, block_on(c.concat(2, 3, 5, 16, dt)));
        expect_pass(c.seed, block_on(c.concat(1, 2, 1, 8, dt)));
        expect_pass(c.seed, block_on(c.slice(2, 8, 0, 4, 15, dt)));
        expect_pass(c.seed, block_on(c.slice(3, 5, 2, 3, 7, dt)));
    }
}

#[test]
fn timestep_embedding_matches_diffusers_definition() {
    let mut c = checker();
    for dt in dtypes() {
        expect_pass(c.seed, block_on(c.timestep(4, 320, true, 0.0, dt)));
        expect_pass(c.seed, block_on(c.timestep(2, 33, false, 1.0, dt)));
    }
}

/// Every attention kernel the adapter's plans use (the tiled one, the software class's
/// query-per-lane one, the blocked one) on SD's and fovea-tiny's head dims, odd sizes and
/// causal masking.
#[test]
fn attention_matches_reference_at_sd_head_dims() {
    // Once per attention kernel: plans that share it (the GPU class and the software
    // class without subgroups both run the tiled one) would only repeat the run. The
    // software plans come first: on wgpu's GL backend the forced GPU-class device's
    // first materialised attention (tiled matmul + softmax pipelines) was seen compiling
    // in llvmpipe for over 25 minutes.
    let mut seen = Vec::new();
    for gpu in class_gpus().into_iter().rev() {
        let plan = gpu.kernel_plan();
        let kernel = (plan.attention_per_lane, plan.attention_blocked);
        if !seen.contains(&kernel) {
            seen.push(kernel);
            attention_cases(&mut checker_on(gpu));
        }
    }
}

fn attention_cases(c: &mut fovea_gpu::selfcheck::Checker) {
    for dt in dtypes() {
        // (batch, heads, n_q, n_k, head_dim, causal): SD 1.5 uses D=40/80/160, SD 2.1 D=64,
        // fovea-tiny 8/16/32 (UNet) and 64 (text, causal); key lengths 77 (text) and N
        // (self); 33 is an odd head_dim, 36 one without a query-per-lane variant.
        let cases = [
            (2, 2, 64, 77, 40, false),
            (1, 1, 1024, 77, 40, false),
            (1, 1, 1024, 1024, 64, false),
            (1, 2, 256, 256, 80, false),
            (1, 1, 300, 300, 160, false),
            (2, 1, 100, 77, 160, false),
            (1, 3, 65, 65, 33, false),
            (1, 2, 77, 77, 64, true),
            (1, 1, 1, 1, 40, false),
            (2, 4, 256, 256, 32, false),
            (1, 4, 61, 13, 16, false),
            (1, 2, 19, 19, 8, true),
            (1, 1, 9, 3, 128, false),
            (1, 1, 10, 10, 36, true),
        ];
        for (b, h, nq, nk, d, causal) in cases {
            expect_pass(c.seed, block_on(c.attention(b, h, nq, nk, d, causal, dt)));
        }
        expect_pass(c.seed, block_on(c.attention_fused_qkv(2, 3, 70, 40, 0, dt)));
        // Strides that are not multiples of 4: the software kernel reads k and v one
        // element at a time.
        expect_pass(c.seed, block_on(c.attention_fused_qkv(1, 2, 21, 16, 2, dt)));
        // Head dims beyond the fused kernel (the SD VAE's 512), materialised.
        expect_pass(
            c.seed,
            block_on(c.attention_materialized(2, 70, 65, 512, dt)),
        );
    }
}

/// Full Stable Diffusion sizes. Too slow for software GPUs (and beyond llvmpipe's loop
/// limit), so ignored by default; run on real GPUs with `--ignored`.
#[test]
#[ignore = "full SD sizes; run on a real GPU with --ignored"]
fn kernels_match_reference_at_full_sd_sizes() {
    let mut c = checker();
    for dt in dtypes() {
        // SD 2.1 self-attention at 64x64 latent, SD 1.5 cross-attention, D=160 at 32x32.
        expect_pass(
            c.seed,
            block_on(c.attention(1, 1, 4096, 4096, 64, false, dt)),
        );
        expect_pass(c.seed, block_on(c.attention(2, 2, 4096, 77, 40, false, dt)));
        expect_pass(
            c.seed,
            block_on(c.attention(1, 2, 1024, 1024, 160, false, dt)),
        );
        // A 320-channel resnet conv at 64x64 and a 1280-wide projection.
        expect_pass(
            c.seed,
            block_on(c.conv2d(1, 320, 64, 64, 320, 3, 1, 1, true, dt)),
        );
        expect_pass(
            c.seed,
            block_on(c.matmul(1, 1024, 1280, 1280, false, true, true, false, dt)),
        );
        expect_pass(c.seed, block_on(c.group_norm(2, 320, 4096, 32, true, dt)));
    }
}

/// Spatial windows for tiled generation: crop_window equals slicing on the host, and
/// add_window accumulates weighted tiles in place (overlapping tiles recorded in one
/// batch add up in order); f32 exactly, f16 within its rounding.
#[test]
fn windows_crop_and_accumulate() {
    use rand::{Rng, SeedableRng};
    let s = common::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s);
    let g = common::gpu();
    let (b, c, h, w) = (2usize, 3usize, 13usize, 17usize);
    for dt in dtypes() {
        let x: Vec<f32> = (0..b * c * h * w)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let xt = g.upload_f32("x", &[b, c, h, w], dt, &x).unwrap();
        let tiles = [
            (0usize, 0usize, 8usize, 9usize),
            (5, 8, 8, 9),
            (2, 3, 11, 5),
        ];
        let mut acc_host = vec![0.0f64; x.len()];
        let acc = g
            .upload_f32("acc", &[b, c, h, w], dt, &vec![0.0; x.len()])
            .unwrap();
        let mut batch = g.batch();
        let mut crops = Vec::new();
        for &(y0, x0, th, tw) in &tiles {
            let crop = batch.crop_window(&xt, y0, x0, th, tw).unwrap();
            let weight: Vec<f32> = (0..th * tw).map(|_| rng.random_range(0.0..1.0)).collect();
            let wt = g.upload_f32("w", &[th, tw], dt, &weight).unwrap();
            batch.add_window(&acc, &crop, &wt, y0, x0).unwrap();
            for p in 0..b * c {
                for y in 0..th {
                    for xx in 0..tw {
                        let o = (p * h + y0 + y) * w + x0 + xx;
                        acc_host[o] += weight[y * tw + xx] as f64 * x[o] as f64;
                    }
                }
            }
            crops.push((crop, y0, x0, th, tw));
        }
        batch.submit().unwrap();
        for (crop, y0, x0, th, tw) in crops {
            let got = block_on(g.read_f32(&crop)).unwrap();
            for p in 0..b * c {
                for y in 0..th {
                    for xx in 0..tw {
                        let want = x[(p * h + y0 + y) * w + x0 + xx];
                        let tol = if dt == fovea_gpu::DType::F16 {
                            1e-3
                        } else {
                            0.0
                        };
                        let v = got[(p * th + y) * tw + xx];
                        assert!((v - want).abs() <= tol, "crop {dt} (seed {s})");
                    }
                }
            }
        }
        let got = block_on(g.read_f32(&acc)).unwrap();
        let tol = if dt == fovea_gpu::DType::F16 {
            4e-3
        } else {
            1e-6
        };
        for (gv, wv) in got.iter().zip(&acc_host) {
            assert!(
                (*gv as f64 - wv).abs() <= tol,
                "add_window {dt}: {gv} vs {wv} (seed {s})"
            );
        }
        let mut batch = g.batch();
        let e = batch.crop_window(&xt, 10, 0, 8, 8).unwrap_err();
        assert!(e.to_string().contains("window 8x8 at (10, 0)"), "{e}");
    }
}

/// Not a check: wall-clock GFLOP/s of matmul and conv2d on every kernel family this
/// adapter can run, in one process, for comparing variants
/// (`cargo test -p fovea-gpu --test kernels kernel_family_speeds -- --ignored --nocapture`).
#[test]
#[ignore = "timing, not a check"]
fn kernel_family_speeds() {
    use fovea_gpu::{DType, MatmulOptions};
    let fill = |gpu: &fovea_gpu::Gpu, shape: &[usize]| {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        gpu.upload_f32("x", shape, DType::F32, &data).unwrap()
    };
    let time = |gpu: &fovea_gpu::Gpu, run: &dyn Fn(&mut fovea_gpu::Batch)| {
        let once = || {
            let start = std::time::Instant::now();
            let mut b = gpu.batch();
            run(&mut b);
            drop(b.submit().unwrap());
            block_on(gpu.wait_idle()).unwrap();
            start.elapsed().as_secs_f64()
        };
        once();
        let mut runs: Vec<f64> = (0..3).map(|_| once()).collect();
        runs.sort_by(f64::total_cmp);
        runs[1]
    };
    for gpu in class_gpus() {
        let plan = gpu.kernel_plan();
        for (m, k, n, tb) in [
            (512, 256, 256, false),
            (1024, 1024, 1024, false),
            (1024, 320, 320, true),
        ] {
            let a = fill(gpu, &[m, k]);
            let w_shape = if tb { [n, k] } else { [k, n] };
            let w = fill(gpu, &w_shape);
            let opts = MatmulOptions {
                trans_b: tb,
                ..Default::default()
            };
            let s = time(gpu, &|b| drop(b.matmul(&a, &w, None, opts).unwrap()));
            eprintln!(
                "matmul {:<13} {m}x{k} @ {k}x{n}{}: {:.2} GFLOP/s",
                plan.matmul.name(),
                if tb { "^T" } else { "" },
                2.0 * (m * k * n) as f64 / s / 1e9
            );
        }
        for (c, hw, kernel) in [(64, 32, 3), (128, 32, 3), (128, 32, 1)] {
            let x = fill(gpu, &[1, c, hw, hw]);
            let w = fill(gpu, &[c, c, kernel, kernel]);
            let s = time(gpu, &|b| {
                drop(b.conv2d(&x, &w, None, 1, kernel / 2).unwrap())
            });
            eprintln!(
                "conv2d {:<13} {c}x{hw}x{hw} k{kernel}: {:.2} GFLOP/s",
                plan.conv2d.name(),
                2.0 * (c * hw * hw * c * kernel * kernel) as f64 / s / 1e9
            );
        }
    }
}
