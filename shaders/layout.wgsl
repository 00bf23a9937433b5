// Data movement: nearest-neighbour 2x upsampling, channel copies (concatenation), and
// spatial windows (tiled generation: crop a tile, add a weighted tile back).

struct Params {
    // Number of output elements written by this dispatch.
    len: u32,
    // upsample: input (H, W); copy: spatial size H*W and 0.
    h: u32,
    w: u32,
    // copy_channels: channels of src, channels of dst, channel offset in dst.
    src_channels: u32,
    dst_channels: u32,
    dst_channel_offset: u32,
    // Windows: the full planes' (H, W) and the window's top-left corner; (h, w) above
    // is the window's size.
    full_h: u32,
    full_w: u32,
    y0: u32,
    x0: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// src: upsample (B*C, H, W); copy (B, C_src, H*W)
@group(0) @binding(1) var<storage, read> src: array<elem>;
// dst: upsample (B*C, 2H, 2W); copy (B, C_dst, H*W)
@group(0) @binding(2) var<storage, read_write> dst: array<elem>;
// weight: add_window's per-pixel weights (h, w)
@group(0) @binding(3) var<storage, read> weight: array<elem>;

@compute @workgroup_size(256)
fn upsample_nearest2x(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_workgroup(wg, nwg) * 256u + lid;
    if i >= params.len {
        return;
    }
    let w2 = params.w * 2u;
    let h2 = params.h * 2u;
    let ox = i % w2;
    let oy = (i / w2) % h2;
    let plane = i / (w2 * h2);
    dst[i] = src[(plane * params.h + oy / 2u) * params.w + ox / 2u];
}

// Copies src into dst's channels [offset, offset + C_src): two calls make a concat.
@compute @workgroup_size(256)
fn copy_channels(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_workgroup(wg, nwg) * 256u + lid;
    if i >= params.len {
        return;
    }
    let spatial = params.h;
    let s = i % spatial;
    let c = (i / spatial) % params.src_channels;
    let b = i / (spatial * params.src_channels);
    dst[(b * params.dst_channels + params.dst_channel_offset + c) * spatial + s] = src[i];
}

// Copies channels [offset, offset + C_dst) of src (B, C_src, H*W) into dst (B, C_dst,
// H*W); `dst_channel_offset` holds the source offset here.
@compute @workgroup_size(256)
fn slice_channels(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_workgroup(wg, nwg) * 256u + lid;
    if i >= params.len {
        return;
    }
    let spatial = params.h;
    let s = i % spatial;
    let c = (i / spatial) % params.dst_channels;
    let b = i / (spatial * params.dst_channels);
    dst[i] = src[(b * params.src_channels + params.dst_channel_offset + c) * spatial + s];
}

// dst (P, h, w) = the (h, w) window at (y0, x0) of src (P, full_h, full_w).
@compute @workgroup_size(256)
fn crop_window(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_workgroup(wg, nwg) * 256u + lid;
    if i >= params.len {
        return;
    }
    let x = i % params.w;
    let y = (i / params.w) % params.h;
    let p = i / (params.w * params.h);
    dst[i] = src[(p * params.full_h + params.y0 + y) * params.full_w + params.x0 + x];
}

// dst (P, full_h, full_w) window at (y0, x0) += weight (h, w) * src (P, h, w), in place.
@compute @workgroup_size(256)
fn add_window(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_workgroup(wg, nwg) * 256u + lid;
    if i >= params.len {
        return;
    }
    let x = i % params.w;
    let y = (i / params.w) % params.h;
    let p = i / (params.w * params.h);
    let o = (p * params.full_h + params.y0 + y) * params.full_w + params.x0 + x;
    dst[o] = elem(f32(dst[o]) + f32(weight[y * params.w + x]) * f32(src[i]));
}
