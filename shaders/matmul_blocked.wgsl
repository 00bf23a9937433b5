// Batched matrix multiply for software adapters whose lanes cannot share values (no
// subgroups: SwiftShader, the browser's WebGPU fallback, where wgpu cannot request
// them; WARP), with the Params and bindings of matmul.wgsl:
//   c[b] = alpha * op(a[b]) @ op(b[b]) + bias
// SwiftShader runs 4 lanes per SIMD instruction and turns every load whose offset is
// not a compile-time constant into a gather: a branch and a scalar load per lane, the
// same cost whether the lanes read one address or four, from storage or workgroup
// memory. So what counts is FMAs per loaded element in each lane: each invocation
// computes an 8 x 8 block of c on its own, loading 8 lhs and 8 rhs values per k step
// for 64 FMAs (the tiled kernel: 8 loads from workgroup memory for 16 FMAs, plus
// barriers, which make every 4-lane subgroup a fiber). The block lives in sixteen vec4
// variables written out by name: SwiftShader does not unroll loops, and a private
// array indexed by a loop counter becomes memory reached by gathers and scatters.
// Rows and columns past the matrix are clamped for loading and skipped at the store.

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

// Block rows and columns per invocation (the code below writes out 8 x 8).
const BLOCK: u32 = 8u;

fn lhs4(o: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(f32(lhs[o.x]), f32(lhs[o.y]), f32(lhs[o.z]), f32(lhs[o.w]));
}

fn rhs4(o: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(f32(rhs[o.x]), f32(rhs[o.y]), f32(rhs[o.z]), f32(rhs[o.w]));
}

// Four consecutive indices from `first`, clamped to `last`.
fn clamped4(first: u32, last: u32) -> vec4<u32> {
    return min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last));
}

// Stores column `col` of the block: rows row0 .. row0 + 7 from lo (the first four)
// and hi.
fn store_col(c_base: u32, row0: u32, col: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if col >= params.n {
        return;
    }
    var b = 0.0;
    if params.bias_mode == 1u {
        b = f32(bias[col]);
    }
    for (var i = 0u; i < BLOCK; i++) {
        let row = row0 + i;
        if row >= params.m {
            return;
        }
        var v = params.alpha * select(hi, lo, i < 4u)[i & 3u];
        if params.bias_mode == 2u {
            v += f32(bias[row]);
        }
        out[c_base + row * params.ldc + col] = elem(v + b);
    }
}

@compute @workgroup_size(4, 4)
fn matmul_blocked(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col0 = gid.x * BLOCK;
    let row0 = gid.y * BLOCK;
    let batch = gid.z;
    if col0 >= params.n || row0 >= params.m {
        return;
    }
    // Element (row, k) of a and (k, col) of b: offsets = row * a_rs + k * a_ks and
    // col * b_cs + k * b_ks, per the stored layouts.
    let a_rs = select(params.lda, 1u, params.trans_a == 1u);
    let a_ks = select(1u, params.lda, params.trans_a == 1u);
    let b_cs = select(1u, params.ldb, params.trans_b == 1u);
    let b_ks = select(params.ldb, 1u, params.trans_b == 1u);
    let a_base = vec4<u32>(batch * params.a_batch_stride);
    let b_base = vec4<u32>(batch * params.b_batch_stride);
    let a_lo = a_base + clamped4(row0, params.m - 1u) * a_rs;
    let a_hi = a_base + clamped4(row0 + 4u, params.m - 1u) * a_rs;
    let b_lo = b_base + clamped4(col0, params.n - 1u) * b_cs;
    let b_hi = b_base + clamped4(col0 + 4u, params.n - 1u) * b_cs;

    // c{j}{l|h}: column col0 + j, rows row0 .. row0 + 3 (l) and row0 + 4 .. row0 + 7 (h).
    var c0l = vec4<f32>(0.0);
    var c0h = vec4<f32>(0.0);
    var c1l = vec4<f32>(0.0);
    var c1h = vec4<f32>(0.0);
    var c2l = vec4<f32>(0.0);
    var c2h = vec4<f32>(0.0);
    var c3l = vec4<f32>(0.0);
    var c3h = vec4<f32>(0.0);
    var c4l = vec4<f32>(0.0);
    var c4h = vec4<f32>(0.0);
    var c5l = vec4<f32>(0.0);
    var c5h = vec4<f32>(0.0);
    var c6l = vec4<f32>(0.0);
    var c6h = vec4<f32>(0.0);
    var c7l = vec4<f32>(0.0);
    var c7h = vec4<f32>(0.0);
    for (var k = 0u; k < params.k; k++) {
        let al = lhs4(a_lo + vec4<u32>(k * a_ks));
        let ah = lhs4(a_hi + vec4<u32>(k * a_ks));
        let bl = rhs4(b_lo + vec4<u32>(k * b_ks));
        let bh = rhs4(b_hi + vec4<u32>(k * b_ks));
        c0l = fma(al, vec4<f32>(bl.x), c0l);
        c0h = fma(ah, vec4<f32>(bl.x), c0h);
        c1l = fma(al, vec4<f32>(bl.y), c1l);
        c1h = fma(ah, vec4<f32>(bl.y), c1h);
        c2l = fma(al, vec4<f32>(bl.z), c2l);
        c2h = fma(ah, vec4<f32>(bl.z), c2h);
        c3l = fma(al, vec4<f32>(bl.w), c3l);
        c3h = fma(ah, vec4<f32>(bl.w), c3h);
        c4l = fma(al, vec4<f32>(bh.x), c4l);
        c4h = fma(ah, vec4<f32>(bh.x), c4h);
        c5l = fma(al, vec4<f32>(bh.y), c5l);
        c5h = fma(ah, vec4<f32>(bh.y), c5h);
        c6l = fma(al, vec4<f32>(bh.z), c6l);
        c6h = fma(ah, vec4<f32>(bh.z), c6h);
        c7l = fma(al, vec4<f32>(bh.w), c7l);
        c7h = fma(ah, vec4<f32>(bh.w), c7h);
    }

    let c_base = batch * params.c_batch_stride;
    store_col(c_base, row0, col0, c0l, c0h);
    store_col(c_base, row0, col0 + 1u, c1l, c1h);
    store_col(c_base, row0, col0 + 2u, c2l, c2h);
    store_col(c_base, row0, col0 + 3u, c3l, c3h);
    store_col(c_base, row0, col0 + 4u, c4l, c4h);
    store_col(c_base, row0, col0 + 5u, c5l, c5h);
    store_col(c_base, row0, col0 + 6u, c6l, c6h);
    store_col(c_base, row0, col0 + 7u, c7l, c7h);
}
