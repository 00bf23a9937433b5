// Normalisations: group norm (optionally fused with SiLU), layer norm, softmax.
// One workgroup of 256 threads per normalised group/row; mean and variance are
// computed in two passes (centred variance) in f32 for accuracy.

const WG: u32 = 256u;

struct Params {
    // group_norm: batch; layer_norm/softmax: number of rows.
    rows: u32,
    // group_norm: channels; layer_norm/softmax: row length.
    channels: u32,
    // group_norm: spatial size H*W; unused otherwise.
    spatial: u32,
    // group_norm: number of groups; unused otherwise.
    groups: u32,
    eps: f32,
    // 1: apply SiLU after the affine transform (group_norm, layer_norm).
    fuse_silu: u32,
    // 1: apply gamma/beta; 0: plain normalisation. softmax: the logit scale is `eps`.
    affine: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// x: group_norm (B, C, H*W); layer_norm/softmax (rows, D)
@group(0) @binding(1) var<storage, read> x: array<elem>;
// gamma, beta: (C) or (D); dummies when affine is 0 (and for softmax)
@group(0) @binding(2) var<storage, read> gamma: array<elem>;
@group(0) @binding(3) var<storage, read> beta: array<elem>;
// y: same shape as x
@group(0) @binding(4) var<storage, read_write> y: array<elem>;

var<workgroup> scratch: array<f32, WG>;

fn reduce_sum(v: f32, lid: u32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            scratch[lid] += scratch[lid + s];
        }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(v: f32, lid: u32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            scratch[lid] = max(scratch[lid], scratch[lid + s]);
        }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

fn finish(v: f32, channel: u32) -> f32 {
    var r = v;
    if params.affine == 1u {
        r = r * f32(gamma[channel]) + f32(beta[channel]);
    }
    if params.fuse_silu == 1u {
        r = silu(r);
    }
    return r;
}

// Where group-norm slot `slot` (batch item * groups + group) lies in x.
struct GroupSpan {
    // Channels per group, and elements (channels * spatial).
    channels: u32,
    count: u32,
    // Index of its first element, and its first channel.
    base: u32,
    first_channel: u32,
}

fn group_at(slot: u32) -> GroupSpan {
    let channels = params.channels / params.groups;
    let count = channels * params.spatial;
    return GroupSpan(channels, count, slot * count, (slot % params.groups) * channels);
}

@compute @workgroup_size(256)
fn group_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    // One workgroup per (batch, group); a group's channels are contiguous in memory.
    let slot = flat_workgroup(wg, nwg);
    if slot >= params.rows * params.groups {
        return;
    }
    let g = group_at(slot);

    var sum = 0.0;
    for (var i = lid; i < g.count; i += WG) {
        sum += f32(x[g.base + i]);
    }
    let mean = reduce_sum(sum, lid) / f32(g.count);
    var sq = 0.0;
    for (var i = lid; i < g.count; i += WG) {
        let d = f32(x[g.base + i]) - mean;
        sq += d * d;
    }
    let var_ = reduce_sum(sq, lid) / f32(g.count);
    let inv_std = inverseSqrt(var_ + params.eps);
    for (var i = lid; i < g.count; i += WG) {
        let channel = g.first_channel + i / params.spatial;
        y[g.base + i] = elem(finish((f32(x[g.base + i]) - mean) * inv_std, channel));
    }
}

@compute @workgroup_size(256)
fn layer_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let row = flat_workgroup(wg, nwg);
    if row >= params.rows {
        return;
    }
    let d = params.channels;
    let base = row * d;
    var sum = 0.0;
    for (var i = lid; i < d; i += WG) {
        sum += f32(x[base + i]);
    }
    let mean = reduce_sum(sum, lid) / f32(d);
    var sq = 0.0;
    for (var i = lid; i < d; i += WG) {
        let c = f32(x[base + i]) - mean;
        sq += c * c;
    }
    let inv_std = inverseSqrt(reduce_sum(sq, lid) / f32(d) + params.eps);
    for (var i = lid; i < d; i += WG) {
        y[base + i] = elem(finish((f32(x[base + i]) - mean) * inv_std, i));
    }
}

// layer_norm for software adapters (lavapipe, SwiftShader): one row per invocation, 8
// rows per workgroup, no workgroup memory or barriers (the 256-wide workgroup above
// runs as 32 SIMD passes with 18 barriers per row there). The host uses it for rows of
// at most 16384 elements: its three passes stay inside llvmpipe's 65535-iteration loop
// budget. Rows past the end are clamped for loading and not stored.
@compute @workgroup_size(8)
fn layer_norm_cpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let row = flat_workgroup(wg, nwg) * 8u + lid;
    let d = params.channels;
    let base = min(row, params.rows - 1u) * d;
    var sum = 0.0;
    for (var i = 0u; i < d; i++) {
        sum += f32(x[base + i]);
    }
    let mean = sum / f32(d);
    var sq = 0.0;
    for (var i = 0u; i < d; i++) {
        let c = f32(x[base + i]) - mean;
        sq += c * c;
    }
    let inv_std = inverseSqrt(sq / f32(d) + params.eps);
    if row < params.rows {
        for (var i = 0u; i < d; i++) {
            y[base + i] = elem(finish((f32(x[base + i]) - mean) * inv_std, i));
        }
    }
}

// group_norm for software adapters: one 8-invocation workgroup per (batch, group), so on
// lavapipe (8 lanes) it is a single subgroup and each reduction is one barrier pair
// instead of the 256-wide kernel's 32 subgroups resumed at 18 barriers. Four independent
// sums per lane keep the FMA units fed; gamma/beta are read once per channel
// (workgroup-uniform) by walking the output channel by channel. The host uses it while
// the three passes stay inside llvmpipe's 65,535-iteration loop budget.
const NARROW: u32 = 8u;
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

// x[i], x[i + NARROW], x[i + 2 NARROW], x[i + 3 NARROW]: a lane's share of one block.
fn block4(i: u32) -> vec4<f32> {
    return vec4<f32>(f32(x[i]), f32(x[i + NARROW]), f32(x[i + 2u * NARROW]), f32(x[i + 3u * NARROW]));
}

@compute @workgroup_size(8)
fn group_norm_cpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let slot = flat_workgroup(wg, nwg);
    if slot >= params.rows * params.groups {
        return;
    }
    let g = group_at(slot);
    // Whole blocks of 4 * NARROW elements, then a tail of < 4 per lane.
    let blocks = g.count / (4u * NARROW);
    let tail = blocks * 4u * NARROW + lid;

    var s = vec4<f32>(0.0);
    for (var k = 0u; k < blocks; k++) {
        s += block4(g.base + k * 4u * NARROW + lid);
    }
    for (var i = tail; i < g.count; i += NARROW) {
        s.x += f32(x[g.base + i]);
    }
    let mean = reduce_sum_narrow(s.x + s.y + s.z + s.w, lid) / f32(g.count);
    var q = vec4<f32>(0.0);
    for (var k = 0u; k < blocks; k++) {
        let d = block4(g.base + k * 4u * NARROW + lid) - mean;
        q += d * d;
    }
    for (var i = tail; i < g.count; i += NARROW) {
        let d = f32(x[g.base + i]) - mean;
        q.x += d * d;
    }
    let inv_std = inverseSqrt(reduce_sum_narrow(q.x + q.y + q.z + q.w, lid) / f32(g.count)
                              + params.eps);
    for (var c = 0u; c < g.channels; c++) {
        let channel = g.first_channel + c;
        var scale = inv_std;
        var shift = 0.0;
        if params.affine == 1u {
            scale *= f32(gamma[channel]);
            shift = f32(beta[channel]);
        }
        let row = g.base + c * params.spatial;
        for (var i = lid; i < params.spatial; i += NARROW) {
            var r = (f32(x[row + i]) - mean) * scale + shift;
            if params.fuse_silu == 1u {
                r = silu(r);
            }
            y[row + i] = elem(r);
        }
    }
}

// softmax(scale * x) along rows; the scale travels in `eps`.
@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = flat_workgroup(wg, nwg);
    if row >= params.rows {
        return;
    }
    let d = params.channels;
    let base = row * d;
    let scale = params.eps;
    var m = -3.0e38;
    for (var i = lid; i < d; i += WG) {
        m = max(m, scale * f32(x[base + i]));
    }
    m = reduce_max(m, lid);
    var sum = 0.0;
    for (var i = lid; i < d; i += WG) {
        sum += exp(scale * f32(x[base + i]) - m);
    }
    let inv = 1.0 / reduce_sum(sum, lid);
    for (var i = lid; i < d; i += WG) {
        y[base + i] = elem(exp(scale * f32(x[base + i]) - m) * inv);
    }
}
