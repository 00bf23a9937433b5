// Batched matrix multiply for software adapters (lavapipe/llvmpipe, SwiftShader, WARP),
// with the Params and bindings of matmul.wgsl:
//   c[b] = alpha * op(a[b]) @ op(b[b]) + bias
// There an invocation is one SIMD lane and a workgroup runs on one CPU thread, so this
// kernel uses no workgroup memory and no barriers, and what counts is FMAs per loaded
// value: lane-varying loads become one scalar load per lane. A workgroup of LANES
// invocations computes ROWS rows x LANES * COLS columns; lane l owns the columns
// col0 + l + LANES * j. Each k step loads the ROWS lhs values once for the whole
// workgroup and COLS rhs values per lane, for ROWS * COLS FMAs per lane:
//   SUBGROUP=0: the lhs values are workgroup-uniform loads (one scalar load each).
//   SUBGROUP=1: subgroup lane i loads row i's value and subgroupBroadcast shares it
//               (needs a subgroup of exactly LANES = ROWS = 8 invocations).
// QUADS=1 (the Linear layout: lhs (M, K) and rhs (N, K), K a multiple of 4): each load
// brings four consecutive K values (`Quad`: two 32-bit words of f16 pairs, or a vec4 of
// f32). On lavapipe a lane-varying load is a loop over the lanes whose cost grows far
// less than its width, and the operand loads were ~60% of this kernel's time there
// (linear row on one lavapipe thread: one element per load 6.1 ms, two 4.2, four 3.4,
// eight 3.3).
// QUADS=1 with TRANS_B=0 (lhs (M, K), rhs (K, N), K and N multiples of 4): lane l owns
// the four neighbouring columns col0 + 4l .. 4l + 3 instead, one rhs quad per k.
// TRANS_A / TRANS_B fix the stored layouts at pipeline creation. Rows and columns past
// the matrix are clamped for loading (no divergent branches around loads) and skipped
// at the store. K is unrolled by 4 by hand: llvmpipe unrolls only loops of <= 32
// iterations, hoists nothing out of loops, and ends an invocation's loops after 65535
// iterations in total.

const LANES: u32 = 8u;
const ROWS: u32 = 8u;
const COLS: u32 = 4u;
const K_UNROLL: u32 = 4u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    // Element strides between batch items; 0 reuses one matrix for every item.
    a_batch_stride: u32,
    b_batch_stride: u32,
    c_batch_stride: u32,
    // Row strides (leading dimensions) of the stored matrices.
    lda: u32,
    ldb: u32,
    ldc: u32,
    // Read from the TRANS_A / TRANS_B defines instead; kept for matmul.wgsl's layout.
    trans_a: u32,
    trans_b: u32,
    // 1: add bias[n] to every row; 2: add bias[m] to every column.
    bias_mode: u32,
    alpha: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
#if QUADS
// lhs: (batch, M, K) in quads along K
@group(0) @binding(1) var<storage, read> lhs: array<Quad>;
// rhs: (batch, N, K) in quads along K
@group(0) @binding(2) var<storage, read> rhs: array<Quad>;
#else
// lhs: (batch, M, K), or (batch, K, M) when TRANS_A
@group(0) @binding(1) var<storage, read> lhs: array<elem>;
// rhs: (batch, K, N), or (batch, N, K) when TRANS_B
@group(0) @binding(2) var<storage, read> rhs: array<elem>;
#endif
// bias: (N) or (M), per bias_mode; a dummy when bias_mode is 0
@group(0) @binding(3) var<storage, read> bias: array<elem>;
#if QUADS
// out: (batch, M, N) in quads along N (N a multiple of 4)
@group(0) @binding(4) var<storage, read_write> out: array<Quad>;
#else
// out: (batch, M, N)
@group(0) @binding(4) var<storage, read_write> out: array<elem>;
#endif

// Operand offsets at k = 0: SUBGROUP=1 keeps this lane's row, SUBGROUP=0 all ROWS rows.
#if SUBGROUP
alias LhsOffsets = u32;
#else
alias LhsOffsets = array<u32, ROWS>;
#endif
alias Acc = array<array<f32, COLS>, ROWS>;

#if QUADS
// The ROWS lhs quads of quad q of K (offsets in quads).
fn lhs_quads(a_off: LhsOffsets, q: u32) -> array<vec4<f32>, ROWS> {
    var a: array<vec4<f32>, ROWS>;
#if SUBGROUP
    let mine = quad_values(lhs[a_off + q]);
    a[0] = subgroupBroadcast(mine, 0u);
    a[1] = subgroupBroadcast(mine, 1u);
    a[2] = subgroupBroadcast(mine, 2u);
    a[3] = subgroupBroadcast(mine, 3u);
    a[4] = subgroupBroadcast(mine, 4u);
    a[5] = subgroupBroadcast(mine, 5u);
    a[6] = subgroupBroadcast(mine, 6u);
    a[7] = subgroupBroadcast(mine, 7u);
#else
    for (var i = 0u; i < ROWS; i++) {
        a[i] = quad_values(lhs[a_off[i] + q]);
    }
#endif
    return a;
}

#if TRANS_B
// Four k steps (quad q of K): this lane's COLS rhs quads times the ROWS lhs quads. The
// offsets count quads.
fn quad_step(acc: ptr<function, Acc>, a_off: LhsOffsets, b_off: array<u32, COLS>, q: u32) {
    let a = lhs_quads(a_off, q);
    var b: array<vec4<f32>, COLS>;
    for (var j = 0u; j < COLS; j++) {
        b[j] = quad_values(rhs[b_off[j] + q]);
    }
    // In k order, as the one-element loop adds them.
    for (var i = 0u; i < ROWS; i++) {
        for (var j = 0u; j < COLS; j++) {
            var c = (*acc)[i][j];
            c = fma(a[i].x, b[j].x, c);
            c = fma(a[i].y, b[j].y, c);
            c = fma(a[i].z, b[j].z, c);
            (*acc)[i][j] = fma(a[i].w, b[j].w, c);
        }
    }
}
#else
// Four k steps (quad q of K) of the (K, N) layout: this lane's four columns are one quad
// of each of the four rhs rows (b_off: the lane's quad in row 0; row_quads: quads per
// row).
fn quad_step_cols(acc: ptr<function, Acc>, a_off: LhsOffsets, b_off: u32, row_quads: u32, q: u32) {
    let a = lhs_quads(a_off, q);
    let b = b_off + 4u * q * row_quads;
    let b0 = quad_values(rhs[b]);
    let b1 = quad_values(rhs[b + row_quads]);
    let b2 = quad_values(rhs[b + 2u * row_quads]);
    let b3 = quad_values(rhs[b + 3u * row_quads]);
    for (var i = 0u; i < ROWS; i++) {
        for (var j = 0u; j < COLS; j++) {
            var c = (*acc)[i][j];
            c = fma(a[i].x, b0[j], c);
            c = fma(a[i].y, b1[j], c);
            c = fma(a[i].z, b2[j], c);
            (*acc)[i][j] = fma(a[i].w, b3[j], c);
        }
    }
}
#endif
#else
// The ROWS lhs values of one k step (a_k = k times the k step).
fn lhs_values(a_off: LhsOffsets, a_k: u32) -> array<f32, ROWS> {
    var a: array<f32, ROWS>;
#if SUBGROUP
    let mine = f32(lhs[a_off + a_k]);
    a[0] = subgroupBroadcast(mine, 0u);
    a[1] = subgroupBroadcast(mine, 1u);
    a[2] = subgroupBroadcast(mine, 2u);
    a[3] = subgroupBroadcast(mine, 3u);
    a[4] = subgroupBroadcast(mine, 4u);
    a[5] = subgroupBroadcast(mine, 5u);
    a[6] = subgroupBroadcast(mine, 6u);
    a[7] = subgroupBroadcast(mine, 7u);
#else
    for (var i = 0u; i < ROWS; i++) {
        a[i] = f32(lhs[a_off[i] + a_k]);
    }
#endif
    return a;
}

// One k step: this lane's COLS rhs values times the ROWS lhs values.
fn k_step(acc: ptr<function, Acc>, a_off: LhsOffsets, b_off: array<u32, COLS>, a_k: u32, b_k: u32) {
    let a = lhs_values(a_off, a_k);
    var b: array<f32, COLS>;
    for (var j = 0u; j < COLS; j++) {
        b[j] = f32(rhs[b_off[j] + b_k]);
    }
    for (var i = 0u; i < ROWS; i++) {
        for (var j = 0u; j < COLS; j++) {
            (*acc)[i][j] = fma(a[i], b[j], (*acc)[i][j]);
        }
    }
}

#endif

// The output column of this lane's accumulator column j.
fn lane_col(col0: u32, lane: u32, j: u32) -> u32 {
    if QUADS == 1u {
        return col0 + 4u * lane + j;
    }
    return col0 + lane + LANES * j;
}

@compute @workgroup_size(8)
fn matmul_cpu(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
#if SUBGROUP
    @builtin(subgroup_invocation_id) sg_lane: u32,
#endif
) {
    let batch = wg.z;
    let row0 = wg.y * ROWS;
    let col0 = wg.x * (LANES * COLS);
    let a_base = batch * params.a_batch_stride;
    let b_base = batch * params.b_batch_stride;
    let last_row = params.m - 1u;
    let last_col = params.n - 1u;

    // Element offsets of the operands at k = 0, and their steps per k.
#if TRANS_A
    let a_step = params.lda;
    let a_row_stride = 1u;
#else
    let a_step = 1u;
    let a_row_stride = params.lda;
#endif
#if TRANS_B
    let b_step = 1u;
    let b_col_stride = params.ldb;
#else
    let b_step = params.ldb;
    let b_col_stride = 1u;
#endif
#if SUBGROUP
    let a_off = a_base + min(row0 + sg_lane, last_row) * a_row_stride;
#else
    var a_off: LhsOffsets;
    for (var i = 0u; i < ROWS; i++) {
        a_off[i] = a_base + min(row0 + i, last_row) * a_row_stride;
    }
#endif
    var b_off: array<u32, COLS>;
    for (var j = 0u; j < COLS; j++) {
        b_off[j] = b_base + min(lane_col(col0, lane, j), last_col) * b_col_stride;
    }

    var acc: Acc;
#if QUADS
    // Offsets in quads (the host guarantees K a multiple of 4, so every row and batch
    // item starts on a quad), one quad per iteration.
    let quads = params.k / 4u;
#if SUBGROUP
    let a_quad = a_off / 4u;
#else
    var a_quad: LhsOffsets;
    for (var i = 0u; i < ROWS; i++) {
        a_quad[i] = a_off[i] / 4u;
    }
#endif
#if TRANS_B
    var b_quad: array<u32, COLS>;
    for (var j = 0u; j < COLS; j++) {
        b_quad[j] = b_off[j] / 4u;
    }
    for (var q = 0u; q < quads; q++) {
        quad_step(&acc, a_quad, b_quad, q);
    }
#else
    // This lane's column quad (the last one past the end, N a multiple of 4).
    let b_quad = (b_base + min(col0 + 4u * lane, params.n - 4u)) / 4u;
    for (var q = 0u; q < quads; q++) {
        quad_step_cols(&acc, a_quad, b_quad, params.ldb / 4u, q);
    }
#endif
#else
    let k_main = params.k - params.k % K_UNROLL;
    var k = 0u;
    // Written out rather than a 4-iteration loop: lavapipe ran conv2d_cpu's 9-tap loop
    // around such calls as a loop, at about a quarter of the speed.
    for (; k < k_main; k += K_UNROLL) {
        let a_k = k * a_step;
        let b_k = k * b_step;
        k_step(&acc, a_off, b_off, a_k, b_k);
        k_step(&acc, a_off, b_off, a_k + a_step, b_k + b_step);
        k_step(&acc, a_off, b_off, a_k + 2u * a_step, b_k + 2u * b_step);
        k_step(&acc, a_off, b_off, a_k + 3u * a_step, b_k + 3u * b_step);
    }
    for (; k < params.k; k++) {
        k_step(&acc, a_off, b_off, k * a_step, k * b_step);
    }
#endif

    let c_base = batch * params.c_batch_stride;
#if QUADS
    // The lane's four neighbouring columns, stored as one quad per row (N is a multiple
    // of 4, so the quad lies inside the row): a quarter of the stores, each costing on
    // lavapipe what a one-element store does.
    let col = col0 + 4u * lane;
    if col < params.n {
        var col_bias = vec4<f32>(0.0);
        if params.bias_mode == 1u {
            col_bias = vec4<f32>(
                f32(bias[col]),
                f32(bias[col + 1u]),
                f32(bias[col + 2u]),
                f32(bias[col + 3u]),
            );
        }
        for (var i = 0u; i < ROWS; i++) {
            let row = row0 + i;
            if row >= params.m {
                break;
            }
            var v = params.alpha * vec4<f32>(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
            if params.bias_mode == 1u {
                v += col_bias;
            } else if params.bias_mode == 2u {
                v += f32(bias[row]);
            }
            out[(c_base + row * params.ldc + col) / 4u] = quad_of(v);
        }
    }
#else
    for (var i = 0u; i < ROWS; i++) {
        let row = row0 + i;
        if row >= params.m {
            break;
        }
        for (var j = 0u; j < COLS; j++) {
            let col = lane_col(col0, lane, j);
            if col < params.n {
                var v = params.alpha * acc[i][j];
                if params.bias_mode == 1u {
                    v += f32(bias[col]);
                } else if params.bias_mode == 2u {
                    v += f32(bias[row]);
                }
                out[c_base + row * params.ldc + col] = elem(v);
            }
        }
    }
#endif
}
