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
//   SUBGROUP=1: subgroup lane i loads row i of each group of 8 rows and
//               subgroupBroadcast shares it (needs a subgroup of exactly LANES = 8
//               invocations).
// QUADS=1 (the Linear layout: lhs (M, K) and rhs (N, K), K a multiple of 4): each load
// brings four consecutive K values (`Quad`: two 32-bit words of f16 pairs, or a vec4 of
// f32). On lavapipe a lane-varying load is a loop over the lanes whose cost grows far
// less than its width, and the operand loads were ~60% of this kernel's time there
// (linear row on one lavapipe thread: one element per load 6.1 ms, two 4.2, four 3.4,
// eight 3.3).
// QUADS=1 with TRANS_B=0 (lhs (M, K), rhs (K, N), K and N multiples of 4): lane l owns
// the four neighbouring columns col0 + 4l .. 4l + 3 instead, one rhs quad per k.
// QUADS=1 without GEGLU adds a tensor of the output's shape as the output is stored when
// params.residual is 1.
// GEGLU=1 (QUADS=1, TRANS_B=1) stores GEGLU of the product instead of the product.
// TRANS_A / TRANS_B fix the stored layouts at pipeline creation. Rows and columns past
// the matrix are clamped for loading (no divergent branches around loads) and skipped
// at the store. K is unrolled by 4 by hand: llvmpipe unrolls only loops of <= 32
// iterations, hoists nothing out of loops, and ends an invocation's loops after 65535
// iterations in total.

const LANES: u32 = 8u;
// Rows per group: the workgroup's ROWS rows are ROW_GROUPS groups of 8 (ROW_GROUPS, a
// define, is 1 unless SUBGROUP=1 and QUADS=1; at most MAX_ROW_GROUPS). With SUBGROUP=1
// lane i loads row i of each group. More rows per workgroup mean more FMAs per loaded
// rhs value; on lavapipe the accumulators then spill to the stack, which costs far less
// than the per-lane operand loads they save. Each group's code is written out under
// `if ROW_GROUPS > g` (a constant condition) so that every index into the accumulators
// is a constant: one loop left with an indexed accumulator puts them all in memory.
const GROUP: u32 = 8u;
const MAX_ROW_GROUPS: u32 = 4u;
const ROWS: u32 = GROUP * ROW_GROUPS;
const COLS: u32 = 4u;
// Output columns per workgroup: GEGLU (QUADS=1, TRANS_B=1) pairs each lane's two
// value columns with their two gate columns, so a lane stores two outputs per row.
const OUT_COLS: u32 = LANES * COLS / (1u + GEGLU);
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
    // 1: add `residual` as the output is stored (QUADS=1 without GEGLU).
    residual: u32,
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
#if GEGLU
// out: (batch, M, N / 2) in pairs: GEGLU of the product, value * gelu(gate) with the
// values in columns 0 .. N / 2 and the gates after them (diffusers' GEGLU)
@group(0) @binding(4) var<storage, read_write> out: array<Pair>;
#else
#if QUADS
// out: (batch, M, N) in quads along N (N a multiple of 4)
@group(0) @binding(4) var<storage, read_write> out: array<Quad>;
// residual: (batch, M, N) in quads, added to the output as it is stored when
// params.residual is 1 (a skip connection: one pass over the output fewer than a
// separate add; a runtime switch, so that it costs no pipeline of its own); a dummy
// otherwise
@group(0) @binding(5) var<storage, read> residual: array<Quad>;
#else
// out: (batch, M, N)
@group(0) @binding(4) var<storage, read_write> out: array<elem>;
#endif
#endif

// Operand offsets at k = 0: SUBGROUP=1 keeps this lane's row of each group, SUBGROUP=0
// the 8 rows of its one group.
#if SUBGROUP
const LHS_OFFSETS: u32 = MAX_ROW_GROUPS;
#else
const LHS_OFFSETS: u32 = GROUP;
#endif
alias LhsOffsets = array<u32, LHS_OFFSETS>;
alias Acc = array<array<array<f32, COLS>, GROUP>, MAX_ROW_GROUPS>;

#if SUBGROUP
// Lane i's value to every lane, for i = 0..7.
fn share8(mine: vec4<f32>) -> array<vec4<f32>, GROUP> {
    return array<vec4<f32>, GROUP>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u),
        subgroupBroadcast(mine, 3u), subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u),
        subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u),
    );
}

#if TRANS_A
// TRANS_A with quads (lhs (K, M), M a multiple of 4): lane 2j + h holds rows 4h .. 4h + 3
// of the group at k step j as one quad along M (`group_offset`); row r = 4h + c's four
// k values are component c of lanes h, 2 + h, 4 + h and 6 + h. As many broadcasts as
// share8 makes, each of one component.
fn gather_k_rows(mine: vec4<f32>) -> array<vec4<f32>, GROUP> {
    return array<vec4<f32>, GROUP>(
        vec4<f32>(subgroupBroadcast(mine.x, 0u), subgroupBroadcast(mine.x, 2u), subgroupBroadcast(mine.x, 4u), subgroupBroadcast(mine.x, 6u)),
        vec4<f32>(subgroupBroadcast(mine.y, 0u), subgroupBroadcast(mine.y, 2u), subgroupBroadcast(mine.y, 4u), subgroupBroadcast(mine.y, 6u)),
        vec4<f32>(subgroupBroadcast(mine.z, 0u), subgroupBroadcast(mine.z, 2u), subgroupBroadcast(mine.z, 4u), subgroupBroadcast(mine.z, 6u)),
        vec4<f32>(subgroupBroadcast(mine.w, 0u), subgroupBroadcast(mine.w, 2u), subgroupBroadcast(mine.w, 4u), subgroupBroadcast(mine.w, 6u)),
        vec4<f32>(subgroupBroadcast(mine.x, 1u), subgroupBroadcast(mine.x, 3u), subgroupBroadcast(mine.x, 5u), subgroupBroadcast(mine.x, 7u)),
        vec4<f32>(subgroupBroadcast(mine.y, 1u), subgroupBroadcast(mine.y, 3u), subgroupBroadcast(mine.y, 5u), subgroupBroadcast(mine.y, 7u)),
        vec4<f32>(subgroupBroadcast(mine.z, 1u), subgroupBroadcast(mine.z, 3u), subgroupBroadcast(mine.z, 5u), subgroupBroadcast(mine.z, 7u)),
        vec4<f32>(subgroupBroadcast(mine.w, 1u), subgroupBroadcast(mine.w, 3u), subgroupBroadcast(mine.w, 5u), subgroupBroadcast(mine.w, 7u)),
    );
}
#endif

// This lane's lhs offset (elements, at k = 0) for the group of 8 rows from g0 on: its
// row, clamped (rows past M are loaded, never stored); with TRANS_A and quads, the quad
// of rows g0 + 4h .. + 3 at k step j for lane 2j + h (M a multiple of 4, so a quad
// past the end is wholly past it).
fn group_offset(g0: u32, a_base: u32, sg_lane: u32, a_row_stride: u32) -> u32 {
#if TRANS_A
    if QUADS == 1u {
        return a_base + min(g0 + 4u * (sg_lane % 2u), params.m - 4u) + (sg_lane / 2u) * params.lda;
    }
#endif
    return a_base + min(g0 + sg_lane, params.m - 1u) * a_row_stride;
}
#endif

#if QUADS
// Group g's 8 lhs quads of quad q of K (offsets in quads).
fn lhs_quads(a_off: LhsOffsets, g: u32, q: u32) -> array<vec4<f32>, GROUP> {
#if SUBGROUP
#if TRANS_A
    // Four k rows of lda quads each per quad of K.
    return gather_k_rows(quad_values(lhs[a_off[g] + q * params.lda]));
#else
    return share8(quad_values(lhs[a_off[g] + q]));
#endif
#else
    var a: array<vec4<f32>, GROUP>;
    for (var i = 0u; i < GROUP; i++) {
        a[i] = quad_values(lhs[a_off[i] + q]);
    }
    return a;
#endif
}

#if TRANS_B
// Group g's accumulators += its lhs quads times this lane's COLS rhs quads (four k
// steps, in k order as the one-element loop adds them).
fn group_quads(acc: ptr<function, Acc>, g: u32, a: array<vec4<f32>, GROUP>, b: array<vec4<f32>, COLS>) {
    for (var i = 0u; i < GROUP; i++) {
        for (var j = 0u; j < COLS; j++) {
            var c = (*acc)[g][i][j];
            c = fma(a[i].x, b[j].x, c);
            c = fma(a[i].y, b[j].y, c);
            c = fma(a[i].z, b[j].z, c);
            (*acc)[g][i][j] = fma(a[i].w, b[j].w, c);
        }
    }
}

// Four k steps (quad q of K): this lane's COLS rhs quads times the ROWS lhs quads. The
// offsets count quads.
fn quad_step(acc: ptr<function, Acc>, a_off: LhsOffsets, b_off: array<u32, COLS>, q: u32) {
    var b: array<vec4<f32>, COLS>;
    for (var j = 0u; j < COLS; j++) {
        b[j] = quad_values(rhs[b_off[j] + q]);
    }
    group_quads(acc, 0u, lhs_quads(a_off, 0u, q), b);
    if ROW_GROUPS > 1u {
        group_quads(acc, 1u, lhs_quads(a_off, 1u, q), b);
    }
    if ROW_GROUPS > 2u {
        group_quads(acc, 2u, lhs_quads(a_off, 2u, q), b);
    }
    if ROW_GROUPS > 3u {
        group_quads(acc, 3u, lhs_quads(a_off, 3u, q), b);
    }
}
#else
// Group g's accumulators += its lhs quads times the four rhs rows' quads holding this
// lane's four columns (four k steps).
fn group_cols(acc: ptr<function, Acc>, g: u32, a: array<vec4<f32>, GROUP>, b: array<vec4<f32>, 4>) {
    for (var i = 0u; i < GROUP; i++) {
        for (var j = 0u; j < COLS; j++) {
            var c = (*acc)[g][i][j];
            c = fma(a[i].x, b[0][j], c);
            c = fma(a[i].y, b[1][j], c);
            c = fma(a[i].z, b[2][j], c);
            (*acc)[g][i][j] = fma(a[i].w, b[3][j], c);
        }
    }
}

// Four k steps (quad q of K) of the (K, N) layout: this lane's four columns are one quad
// of each of the four rhs rows (b_off: the lane's quad in row 0; row_quads: quads per
// row).
fn quad_step_cols(acc: ptr<function, Acc>, a_off: LhsOffsets, b_off: u32, row_quads: u32, q: u32) {
    let r = b_off + 4u * q * row_quads;
    let b = array<vec4<f32>, 4>(
        quad_values(rhs[r]),
        quad_values(rhs[r + row_quads]),
        quad_values(rhs[r + 2u * row_quads]),
        quad_values(rhs[r + 3u * row_quads]),
    );
    group_cols(acc, 0u, lhs_quads(a_off, 0u, q), b);
    if ROW_GROUPS > 1u {
        group_cols(acc, 1u, lhs_quads(a_off, 1u, q), b);
    }
    if ROW_GROUPS > 2u {
        group_cols(acc, 2u, lhs_quads(a_off, 2u, q), b);
    }
    if ROW_GROUPS > 3u {
        group_cols(acc, 3u, lhs_quads(a_off, 3u, q), b);
    }
}
#endif
#else
// The 8 lhs values of one k step (a_k = k times the k step). Without quads the
// workgroup has one group (ROW_GROUPS=1).
fn lhs_values(a_off: LhsOffsets, a_k: u32) -> array<f32, GROUP> {
#if SUBGROUP
    let mine = f32(lhs[a_off[0] + a_k]);
    return array<f32, GROUP>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u),
        subgroupBroadcast(mine, 3u), subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u),
        subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u),
    );
#else
    var a: array<f32, GROUP>;
    for (var i = 0u; i < GROUP; i++) {
        a[i] = f32(lhs[a_off[i] + a_k]);
    }
    return a;
#endif
}

// One k step: this lane's COLS rhs values times the 8 lhs values.
fn k_step(acc: ptr<function, Acc>, a_off: LhsOffsets, b_off: array<u32, COLS>, a_k: u32, b_k: u32) {
    let a = lhs_values(a_off, a_k);
    var b: array<f32, COLS>;
    for (var j = 0u; j < COLS; j++) {
        b[j] = f32(rhs[b_off[j] + b_k]);
    }
    for (var i = 0u; i < GROUP; i++) {
        for (var j = 0u; j < COLS; j++) {
            (*acc)[0][i][j] = fma(a[i], b[j], (*acc)[0][i][j]);
        }
    }
}

#endif

#if QUADS
// Stores group g's rows (from row g0 on) of the lane's four neighbouring columns (from
// col on), one quad per row (N is a multiple of 4, so the quad lies inside the row): a
// quarter of the stores, each costing on lavapipe what a one-element store does.
fn store_group(acc: ptr<function, Acc>, g: u32, g0: u32, col: u32, c_base: u32, col_bias: vec4<f32>) {
    for (var i = 0u; i < GROUP; i++) {
        let row = g0 + i;
        if row >= params.m {
            break;
        }
        var v = params.alpha * vec4<f32>((*acc)[g][i][0], (*acc)[g][i][1], (*acc)[g][i][2], (*acc)[g][i][3]);
        if params.bias_mode == 1u {
            v += col_bias;
        } else if params.bias_mode == 2u {
            v += f32(bias[row]);
        }
#if GEGLU
        // Output columns col and col + 1 (ldc = N / 2): values x, y; gates z, w.
        out[(c_base + row * params.ldc + col) / 2u] = pair_of(vec2<f32>(v.x * gelu(v.z), v.y * gelu(v.w)));
#else
        let o = (c_base + row * params.ldc + col) / 4u;
        if params.residual == 1u {
            v += quad_values(residual[o]);
        }
        out[o] = quad_of(v);
#endif
    }
}
#endif

// The product column of this lane's accumulator column j (GEGLU: col0 counts output
// columns, and the lane's two take the values' and the gates' product columns).
fn lane_col(col0: u32, lane: u32, j: u32) -> u32 {
    if GEGLU == 1u {
        return col0 + 2u * lane + j % 2u + (j / 2u) * (params.n / 2u);
    }
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
    let col0 = wg.x * OUT_COLS;
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
    var a_off: LhsOffsets;
#if SUBGROUP
    a_off[0] = group_offset(row0, a_base, sg_lane, a_row_stride);
    if ROW_GROUPS > 1u {
        a_off[1] = group_offset(row0 + GROUP, a_base, sg_lane, a_row_stride);
    }
    if ROW_GROUPS > 2u {
        a_off[2] = group_offset(row0 + 2u * GROUP, a_base, sg_lane, a_row_stride);
    }
    if ROW_GROUPS > 3u {
        a_off[3] = group_offset(row0 + 3u * GROUP, a_base, sg_lane, a_row_stride);
    }
#else
    for (var i = 0u; i < GROUP; i++) {
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
    var a_quad: LhsOffsets;
    for (var i = 0u; i < LHS_OFFSETS; i++) {
        a_quad[i] = a_off[i] / 4u;
    }
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
    // The lane's first output column (of four neighbouring ones, or two with GEGLU).
    let col = lane_col(col0, lane, 0u);
    if col < params.n / (1u + GEGLU) {
        var col_bias = vec4<f32>(0.0);
        if params.bias_mode == 1u {
            col_bias = vec4<f32>(
                f32(bias[col]),
                f32(bias[lane_col(col0, lane, 1u)]),
                f32(bias[lane_col(col0, lane, 2u)]),
                f32(bias[lane_col(col0, lane, 3u)]),
            );
        }
        store_group(&acc, 0u, row0, col, c_base, col_bias);
        if ROW_GROUPS > 1u {
            store_group(&acc, 1u, row0 + GROUP, col, c_base, col_bias);
        }
        if ROW_GROUPS > 2u {
            store_group(&acc, 2u, row0 + 2u * GROUP, col, c_base, col_bias);
        }
        if ROW_GROUPS > 3u {
            store_group(&acc, 3u, row0 + 3u * GROUP, col, c_base, col_bias);
        }
    }
#else
    for (var i = 0u; i < GROUP; i++) {
        let row = row0 + i;
        if row >= params.m {
            break;
        }
        for (var j = 0u; j < COLS; j++) {
            let col = lane_col(col0, lane, j);
            if col < params.n {
                var v = params.alpha * acc[0][i][j];
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
