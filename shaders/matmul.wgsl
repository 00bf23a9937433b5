// Batched matrix multiply with optional transposes and bias:
//   c[b] = alpha * op(a[b]) @ op(b[b]) + bias
// Each workgroup computes a 64x64 tile of c with 16x16 threads, 4x4 outputs per thread,
// stepping through K in slices of 16 that are staged in workgroup memory.

const TILE: u32 = 64u;
const SLICE: u32 = 16u;

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
    // 1: a is stored (K, M) and used transposed; b likewise stored (N, K).
    trans_a: u32,
    trans_b: u32,
    // 1: add bias[n] to every row; 2: add bias[m] to every column.
    bias_mode: u32,
    alpha: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// lhs: (batch, M, K), or (batch, K, M) when trans_a
@group(0) @binding(1) var<storage, read> lhs: array<elem>;
// rhs: (batch, K, N), or (batch, N, K) when trans_b
@group(0) @binding(2) var<storage, read> rhs: array<elem>;
// bias: (N) or (M), per bias_mode; a dummy when bias_mode is 0
@group(0) @binding(3) var<storage, read> bias: array<elem>;
// out: (batch, M, N)
@group(0) @binding(4) var<storage, read_write> out: array<elem>;

var<workgroup> lhs_tile: array<array<f32, TILE>, SLICE>;
var<workgroup> rhs_tile: array<array<f32, TILE>, SLICE>;

fn load_lhs(base: u32, row: u32, col: u32) -> f32 {
    // row indexes M, col indexes K
    if row >= params.m || col >= params.k {
        return 0.0;
    }
    if params.trans_a == 1u {
        return f32(lhs[base + col * params.lda + row]);
    }
    return f32(lhs[base + row * params.lda + col]);
}

fn load_rhs(base: u32, row: u32, col: u32) -> f32 {
    // row indexes K, col indexes N
    if row >= params.k || col >= params.n {
        return 0.0;
    }
    if params.trans_b == 1u {
        return f32(rhs[base + col * params.ldb + row]);
    }
    return f32(rhs[base + row * params.ldb + col]);
}

// Stages element e (of 16 x 64) of both operand tiles for the K slice at k0.
fn stage(e: u32, a_base: u32, b_base: u32, row0: u32, col0: u32, k0: u32) {
    let kk = e / TILE;
    let mm = e % TILE;
    lhs_tile[kk][mm] = load_lhs(a_base, row0 + mm, k0 + kk);
    rhs_tile[kk][mm] = load_rhs(b_base, k0 + kk, col0 + mm);
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wg.z;
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let a_base = batch * params.a_batch_stride;
    let b_base = batch * params.b_batch_stride;
    let flat = lid.y * 16u + lid.x;

    // acc[i][j]: row i * 16 + lid.y, column j * 16 + lid.x of this thread's 4x4 block.
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < params.k; k0 += SLICE) {
        // 256 threads stage 16 x 64 values of each operand, 4 apiece.
        stage(flat, a_base, b_base, row0, col0, k0);
        stage(flat + 256u, a_base, b_base, row0, col0, k0);
        stage(flat + 512u, a_base, b_base, row0, col0, k0);
        stage(flat + 768u, a_base, b_base, row0, col0, k0);
        workgroupBarrier();
        // Unrolled 4x4 outer product in vec4s: few loop iterations per thread (llvmpipe
        // stops a shader's loops after 65535 iterations in total).
        for (var kk = 0u; kk < SLICE; kk++) {
            let av = vec4<f32>(lhs_tile[kk][lid.y], lhs_tile[kk][lid.y + 16u], lhs_tile[kk][lid.y + 32u], lhs_tile[kk][lid.y + 48u]);
            let bv = vec4<f32>(rhs_tile[kk][lid.x], rhs_tile[kk][lid.x + 16u], rhs_tile[kk][lid.x + 32u], rhs_tile[kk][lid.x + 48u]);
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }

    let c_base = batch * params.c_batch_stride;
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y + 16u * i;
        if row >= params.m {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            if col >= params.n {
                continue;
            }
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
