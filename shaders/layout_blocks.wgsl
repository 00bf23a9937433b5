// layout.wgsl's channel concat and nearest 2x upsampling for software adapters, a
// 16-byte `Block` (eight f16 or four f32 elements) per store, for the reason given in
// elementwise_blocks.wgsl. Params and bindings are layout.wgsl's; the host picks these
// when every channel plane (concat) or output row (upsampling) is whole blocks.

struct Params {
    len: u32,
    h: u32,
    w: u32,
    src_channels: u32,
    dst_channels: u32,
    dst_channel_offset: u32,
    full_h: u32,
    full_w: u32,
    y0: u32,
    x0: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// src: upsample (B*C, H, W); copy (B, C_src, H*W); in blocks
@group(0) @binding(1) var<storage, read> src: array<Block>;
// dst: upsample (B*C, 2H, 2W); copy (B, C_dst, H*W); in blocks
@group(0) @binding(2) var<storage, read_write> dst: array<Block>;

// Blocks per invocation (the host's RUN_BLOCKS).
const RUN_BLOCKS: u32 = 2u;

// Copies src into dst's channels [offset, offset + C_src): two calls make a concat.
@compute @workgroup_size(8)
fn copy_channels_blocks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let first = (flat_workgroup(wg, nwg) * 8u + lid) * RUN_BLOCKS;
    let blocks = params.len / BLOCK_ELEMS;
    let plane = params.h / BLOCK_ELEMS;
    for (var k = 0u; k < RUN_BLOCKS; k++) {
        let i = first + k;
        if i < blocks {
            let s = i % plane;
            let c = (i / plane) % params.src_channels;
            let b = i / (plane * params.src_channels);
            dst[(b * params.dst_channels + params.dst_channel_offset + c) * plane + s] = src[i];
        }
    }
}

// Each output block repeats half a block of its input row twice over.
@compute @workgroup_size(8)
fn upsample_nearest2x_blocks(@builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let first = (flat_workgroup(wg, nwg) * 8u + lid) * RUN_BLOCKS;
    let blocks = params.len / BLOCK_ELEMS;
    let w2 = params.w * 2u;
    let h2 = params.h * 2u;
    for (var k = 0u; k < RUN_BLOCKS; k++) {
        let i = first + k;
        if i < blocks {
            let e = i * BLOCK_ELEMS;
            let ox = e % w2;
            let oy = (e / w2) % h2;
            let plane = e / (w2 * h2);
            // The first input element (a multiple of BLOCK_ELEMS / 2, so the half
            // block lies in one block).
            let off = (plane * params.h + oy / 2u) * params.w + ox / 2u;
            let blk = src[off / BLOCK_ELEMS];
            let e0 = off % BLOCK_ELEMS;
            var q: array<vec4<f32>, 2>;
            let v0 = block_elem(blk, e0);
            let v1 = block_elem(blk, e0 + 1u);
            q[0] = vec4<f32>(v0, v0, v1, v1);
            if BLOCK_ELEMS == 8u {
                let v2 = block_elem(blk, e0 + 2u);
                let v3 = block_elem(blk, e0 + 3u);
                q[1] = vec4<f32>(v2, v2, v3, v3);
            }
            dst[i] = block_of(q);
        }
    }
}
