// norm.wgsl's software group norm (+SiLU) and layer norm, reading and writing a 16-byte
// `Block` (eight f16 or four f32 elements) per access, for the reason given in
// elementwise_blocks.wgsl (on llvmpipe each lane-varying storage access is a loop over
// the lanes per 32-bit component, whatever its width). Same Params, bindings, passes
// (centred variance, f32) and results as group_norm_cpu and layer_norm_cpu; the host
// picks these when the rows (layer norm) or each channel's spatial extent (group norm)
// are whole blocks and gamma/beta fill whole blocks of their buffers.

struct Params {
    rows: u32,
    channels: u32,
    spatial: u32,
    groups: u32,
    eps: f32,
    fuse_silu: u32,
    affine: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// x: group_norm (B, C, H*W); layer_norm (rows, D); in blocks
@group(0) @binding(1) var<storage, read> x: array<Block>;
// gamma, beta: (C) or (D) in blocks; dummies when affine is 0
@group(0) @binding(2) var<storage, read> gamma: array<Block>;
@group(0) @binding(3) var<storage, read> beta: array<Block>;
// y: same shape as x
@group(0) @binding(4) var<storage, read_write> y: array<Block>;

const NARROW: u32 = 8u;
// Quads per block that carry elements (block_quads gives two; f32 fills one).
const QUADS: u32 = BLOCK_ELEMS / 4u;

// Sum of the block's elements, as four partial sums.
fn block_sum(q: array<vec4<f32>, 2>) -> vec4<f32> {
    var s = q[0];
    if QUADS == 2u {
        s += q[1];
    }
    return s;
}

// Sum of the squared distances of the block's elements from `mean`, as four partial sums.
fn block_sq(q: array<vec4<f32>, 2>, mean: f32) -> vec4<f32> {
    let d0 = q[0] - mean;
    var s = d0 * d0;
    if QUADS == 2u {
        let d1 = q[1] - mean;
        s += d1 * d1;
    }
    return s;
}

fn silu4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(silu(v.x), silu(v.y), silu(v.z), silu(v.w));
}

var<workgroup> lanes: array<f32, NARROW>;

fn reduce_sum_narrow(v: f32, lid: u32) -> f32 {
    lanes[lid] = v;
    workgroupBarrier();
    var r = 0.0;
    for (var i = 0u; i < NARROW; i++) {
        r += lanes[i];
    }
    workgroupBarrier();
    return r;
}

// Group norm: one 8-invocation workgroup per (batch item, group), whose channels are
// contiguous; the lanes take the group's blocks in turn in every pass.
@compute @workgroup_size(8)
fn group_norm_blocks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let slot = flat_workgroup(wg, nwg);
    if slot >= params.rows * params.groups {
        return;
    }
    let channels = params.channels / params.groups;
    let count = channels * params.spatial;
    let blocks = count / BLOCK_ELEMS;
    let base = slot * blocks;
    let first_channel = (slot % params.groups) * channels;
    let row_blocks = params.spatial / BLOCK_ELEMS;

    var s = vec4<f32>(0.0);
    for (var k = lid; k < blocks; k += NARROW) {
        s += block_sum(block_quads(x[base + k]));
    }
    let mean = reduce_sum_narrow(s.x + s.y + s.z + s.w, lid) / f32(count);
    var v = vec4<f32>(0.0);
    for (var k = lid; k < blocks; k += NARROW) {
        v += block_sq(block_quads(x[base + k]), mean);
    }
    let inv_std = inverseSqrt(reduce_sum_narrow(v.x + v.y + v.z + v.w, lid) / f32(count)
                              + params.eps);
    for (var k = lid; k < blocks; k += NARROW) {
        let channel = first_channel + k / row_blocks;
        var scale = inv_std;
        var shift = 0.0;
        if params.affine == 1u {
            scale *= block_elem(gamma[channel / BLOCK_ELEMS], channel % BLOCK_ELEMS);
            shift = block_elem(beta[channel / BLOCK_ELEMS], channel % BLOCK_ELEMS);
        }
        var q = block_quads(x[base + k]);
        for (var h = 0u; h < QUADS; h++) {
            var r = (q[h] - mean) * scale + shift;
            if params.fuse_silu == 1u {
                r = silu4(r);
            }
            q[h] = r;
        }
        y[base + k] = block_of(q);
    }
}

// Layer norm: one row per invocation, 8 rows per workgroup (rows past the end are
// clamped for loading and not stored).
@compute @workgroup_size(8)
fn layer_norm_blocks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let row = flat_workgroup(wg, nwg) * 8u + lid;
    let d = params.channels;
    let blocks = d / BLOCK_ELEMS;
    let base = min(row, params.rows - 1u) * blocks;
    var s = vec4<f32>(0.0);
    for (var k = 0u; k < blocks; k++) {
        s += block_sum(block_quads(x[base + k]));
    }
    let mean = (s.x + s.y + s.z + s.w) / f32(d);
    var v = vec4<f32>(0.0);
    for (var k = 0u; k < blocks; k++) {
        v += block_sq(block_quads(x[base + k]), mean);
    }
    let inv_std = inverseSqrt((v.x + v.y + v.z + v.w) / f32(d) + params.eps);
    if row < params.rows {
        for (var k = 0u; k < blocks; k++) {
            var q = block_quads(x[base + k]);
            var g = array<vec4<f32>, 2>(vec4<f32>(1.0), vec4<f32>(1.0));
            var b = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
            if params.affine == 1u {
                g = block_quads(gamma[k]);
                b = block_quads(beta[k]);
            }
            for (var h = 0u; h < QUADS; h++) {
                var r = (q[h] - mean) * inv_std * g[h] + b[h];
                if params.fuse_silu == 1u {
                    r = silu4(r);
                }
                q[h] = r;
            }
            y[base + k] = block_of(q);
        }
    }
}
