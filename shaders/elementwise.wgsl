// Elementwise kernels: activations, scale, broadcast binary ops, GEGLU.
// All arithmetic is f32; `elem` is only the storage type.

const ACT_IDENTITY: u32 = 0u;
const ACT_SILU: u32 = 1u;
const ACT_GELU: u32 = 2u;
const ACT_QUICK_GELU: u32 = 3u;
const ACT_RELU: u32 = 4u;
const ACT_TANH: u32 = 5u;
// exp(x / 2) with x clamped to [-30, 20]: a diagonal Gaussian's standard deviation
// from its log-variance, as diffusers' DiagonalGaussianDistribution computes it.
const ACT_GAUSSIAN_STD: u32 = 6u;

const OP_ADD: u32 = 0u;
const OP_MUL: u32 = 1u;

struct Params {
    // Number of output elements.
    len: u32,
    // Activation (ACT_*) for `unary`, operation (OP_*) for `binary`.
    op: u32,
    alpha: f32,
    beta: f32,
    // Output shape (d0, d1, d2, d3), row-major; `binary` only.
    shape: vec4<u32>,
    // Element strides of `a` and `b` per output dimension; 0 broadcasts.
    a_strides: vec4<u32>,
    b_strides: vec4<u32>,
    // GEGLU: width of the output rows (input rows are twice as wide).
    row_len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// a: (len) for unary and GEGLU input (rows, 2 * row_len); broadcast operand for binary
@group(0) @binding(1) var<storage, read> a: array<elem>;
// b: broadcast operand (binary only)
@group(0) @binding(2) var<storage, read> b: array<elem>;
// y: (len)
@group(0) @binding(3) var<storage, read_write> y: array<elem>;

// Each op is written once per element; the entry points below run it one element per
// invocation in 256-wide workgroups (GPUs), or RUN consecutive elements per invocation
// in 8-wide workgroups (software adapters: llvmpipe pays per workgroup and per 8-lane
// subgroup it resumes, so 16 elements per lane spread that cost; the host's
// ELEMENTWISE_RUN matches RUN).
const RUN: u32 = 16u;

// y = alpha * act(a) + beta
fn unary_at(i: u32) {
    let x = f32(a[i]);
    y[i] = elem(params.alpha * activate(x, params.op) + params.beta);
}

// y = a + alpha * b (OP_ADD) or alpha * a * b (OP_MUL), with broadcasting strides;
// `idx` is element i's (d0, d1, d2, d3) index.
fn binary_at(i: u32, idx: vec4<u32>) {
    let va = f32(a[dot(idx, params.a_strides)]);
    let vb = f32(b[dot(idx, params.b_strides)]);
    var r: f32;
    if params.op == OP_MUL {
        r = params.alpha * va * vb;
    } else {
        r = va + params.alpha * vb;
    }
    y[i] = elem(r);
}

fn index_of(i: u32) -> vec4<u32> {
    let s = params.shape;
    return vec4<u32>(i / (s.w * s.z * s.y), (i / (s.w * s.z)) % s.y, (i / s.w) % s.z, i % s.w);
}

// The index after `idx` in row-major order (a carry instead of four divisions).
fn next_index(idx: vec4<u32>) -> vec4<u32> {
    let s = params.shape;
    var n = idx;
    n.w += 1u;
    if n.w == s.w {
        n.w = 0u;
        n.z += 1u;
        if n.z == s.z {
            n.z = 0u;
            n.y += 1u;
            if n.y == s.y {
                n.y = 0u;
                n.x += 1u;
            }
        }
    }
    return n;
}

// GEGLU as diffusers: the projection's output is split in half along the last
// dimension into (value, gate) and y = value * gelu(gate). `row`, `col`: element i's
// position in the output.
fn geglu_at(i: u32, row: u32, col: u32) {
    let base = row * 2u * params.row_len;
    let value = f32(a[base + col]);
    let gate = f32(a[base + params.row_len + col]);
    y[i] = elem(value * gelu(gate));
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = flat_workgroup(wg, nwg) * 256u + lid;
    if i < params.len {
        unary_at(i);
    }
}

@compute @workgroup_size(8)
fn unary_cpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let first = (flat_workgroup(wg, nwg) * 8u + lid) * RUN;
    for (var k = 0u; k < RUN; k++) {
        if first + k < params.len {
            unary_at(first + k);
        }
    }
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_workgroup(wg, nwg) * 256u + lid;
    if i < params.len {
        binary_at(i, index_of(i));
    }
}

@compute @workgroup_size(8)
fn binary_cpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let first = (flat_workgroup(wg, nwg) * 8u + lid) * RUN;
    var idx = index_of(first);
    for (var k = 0u; k < RUN; k++) {
        if first + k < params.len {
            binary_at(first + k, idx);
        }
        idx = next_index(idx);
    }
}

@compute @workgroup_size(256)
fn geglu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = flat_workgroup(wg, nwg) * 256u + lid;
    if i < params.len {
        geglu_at(i, i / params.row_len, i % params.row_len);
    }
}

@compute @workgroup_size(8)
fn geglu_cpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let first = (flat_workgroup(wg, nwg) * 8u + lid) * RUN;
    var row = first / params.row_len;
    var col = first % params.row_len;
    for (var k = 0u; k < RUN; k++) {
        if first + k < params.len {
            geglu_at(first + k, row, col);
        }
        col += 1u;
        if col == params.row_len {
            col = 0u;
            row += 1u;
        }
    }
}
