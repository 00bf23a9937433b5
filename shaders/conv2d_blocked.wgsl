// 3x3 convolution for software adapters whose lanes cannot share values (no subgroups:
// SwiftShader, the browser's WebGPU fallback; WARP), with the Params and bindings of
// conv2d.wgsl: NCHW input, weights (C_out, C_in, 3, 3). Shaped as matmul_blocked.wgsl
// (read its header for why): each invocation computes 8 output channels x 8
// neighbouring pixels of one output row on its own, in registers. Per input channel and
// kernel row it loads the input columns its pixels' three taps read (10 with stride 1,
// 17 with stride 2) and the 8 channels' 3 weights, and does 192 FMAs as four matrix
// products: (3 taps x 4 channels) weights times (4 pixels x 3 taps) inputs, for each
// half of the channels and of the pixels. Matrices keep every index a compile-time
// constant (SwiftShader does not unroll loops, so an array indexed by a loop counter
// becomes memory). Input taps in the padding load a clamped element and select 0;
// pixels and channels past the output are skipped at the store.

struct Params {
    batch: u32,
    c_in: u32,
    h_in: u32,
    w_in: u32,
    c_out: u32,
    h_out: u32,
    w_out: u32,
    // 3 (the host uses this kernel for 3x3 kernels only)
    kernel_h: u32,
    kernel_w: u32,
    // 1 or 2, as the STRIDE2 define.
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    has_bias: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// input: (N, C_in, H_in, W_in)
@group(0) @binding(1) var<storage, read> input: array<elem>;
// weight: (C_out, C_in, 3, 3)
@group(0) @binding(2) var<storage, read> weight: array<elem>;
// bias: (C_out); a dummy when has_bias is 0
@group(0) @binding(3) var<storage, read> bias: array<elem>;
// out: (N, C_out, H_out, W_out)
@group(0) @binding(4) var<storage, read_write> out: array<elem>;

// Output channels and pixels per invocation.
const BLOCK: u32 = 8u;
// The stride, fixed at pipeline creation (STRIDE2: 2, else 1).
const STRIDE: u32 = 1u + STRIDE2;

// The four channels' weights at offsets o (one tap).
fn weight4(o: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(f32(weight[o.x]), f32(weight[o.y]), f32(weight[o.z]), f32(weight[o.w]));
}

// One kernel row's three taps (columns) for four channels (rows): offsets o.
fn weights_row(o: vec4<u32>) -> mat3x4<f32> {
    return mat3x4<f32>(weight4(o), weight4(o + vec4<u32>(1u)), weight4(o + vec4<u32>(2u)));
}

// Input row `row` (clamped in bounds; `row_ok` false in the padding), column `col`
// (may lie in the padding: 0 there).
fn input_at(row: u32, row_ok: bool, col: i32) -> f32 {
    let inside = row_ok && u32(col) < params.w_in;
    let v = f32(input[row + u32(clamp(col, 0, i32(params.w_in) - 1))]);
    return select(0.0, v, inside);
}

// Stores channel `co` of the block: pixels (oy, ox0 .. ox0 + 7) from lo (the first
// four) and hi.
fn store_channel(n: u32, co: u32, oy: u32, ox0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if co >= params.c_out {
        return;
    }
    var b = 0.0;
    if params.has_bias == 1u {
        b = f32(bias[co]);
    }
    let row = ((n * params.c_out + co) * params.h_out + oy) * params.w_out;
    for (var j = 0u; j < BLOCK; j++) {
        let ox = ox0 + j;
        if ox >= params.w_out {
            return;
        }
        out[row + ox] = elem(select(hi, lo, j < 4u)[j & 3u] + b);
    }
}

@compute @workgroup_size(4, 4)
fn conv2d_blocked(@builtin(global_invocation_id) gid: vec3<u32>) {
    let blocks_per_row = (params.w_out + BLOCK - 1u) / BLOCK;
    let oy = gid.x / blocks_per_row;
    let ox0 = (gid.x % blocks_per_row) * BLOCK;
    let co0 = gid.y * BLOCK;
    let n = gid.z;
    if oy >= params.h_out || co0 >= params.c_out {
        return;
    }
    let iy0 = i32(oy * STRIDE) - i32(params.pad_top);
    let ix0 = i32(ox0 * STRIDE) - i32(params.pad_left);
    // Weight offsets of the channels' first taps (channels past C_out clamped).
    let k_total = params.c_in * 9u;
    let last = params.c_out - 1u;
    let w_lo = min(vec4<u32>(co0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last)) * k_total;
    let w_hi = min(vec4<u32>(co0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(last)) * k_total;
    let hw_in = params.h_in * params.w_in;

    // acc_{channels}{pixels}: column j = pixel, row i = channel, for the low and high
    // four of each.
    var acc_ll = mat4x4<f32>();
    var acc_lh = mat4x4<f32>();
    var acc_hl = mat4x4<f32>();
    var acc_hh = mat4x4<f32>();
    for (var ci = 0u; ci < params.c_in; ci++) {
        let plane = (n * params.c_in + ci) * hw_in;
        for (var ky = 0u; ky < 3u; ky++) {
            let iy = iy0 + i32(ky);
            let row_ok = u32(iy) < params.h_in;
            let row = plane + u32(clamp(iy, 0, i32(params.h_in) - 1)) * params.w_in;
            let tap = ci * 9u + ky * 3u;
            let wl = weights_row(w_lo + vec4<u32>(tap));
            let wh = weights_row(w_hi + vec4<u32>(tap));
            // Input columns ix0 .. : pixel j's taps read x[STRIDE * j + kx].
            let x0 = input_at(row, row_ok, ix0);
            let x1 = input_at(row, row_ok, ix0 + 1);
            let x2 = input_at(row, row_ok, ix0 + 2);
            let x3 = input_at(row, row_ok, ix0 + 3);
            let x4 = input_at(row, row_ok, ix0 + 4);
            let x5 = input_at(row, row_ok, ix0 + 5);
            let x6 = input_at(row, row_ok, ix0 + 6);
            let x7 = input_at(row, row_ok, ix0 + 7);
            let x8 = input_at(row, row_ok, ix0 + 8);
            let x9 = input_at(row, row_ok, ix0 + 9);
#if STRIDE2
            let x10 = input_at(row, row_ok, ix0 + 10);
            let x11 = input_at(row, row_ok, ix0 + 11);
            let x12 = input_at(row, row_ok, ix0 + 12);
            let x13 = input_at(row, row_ok, ix0 + 13);
            let x14 = input_at(row, row_ok, ix0 + 14);
            let x15 = input_at(row, row_ok, ix0 + 15);
            let x16 = input_at(row, row_ok, ix0 + 16);
            let xl = mat4x3<f32>(vec3(x0, x1, x2), vec3(x2, x3, x4), vec3(x4, x5, x6), vec3(x6, x7, x8));
            let xh = mat4x3<f32>(vec3(x8, x9, x10), vec3(x10, x11, x12), vec3(x12, x13, x14), vec3(x14, x15, x16));
#else
            let xl = mat4x3<f32>(vec3(x0, x1, x2), vec3(x1, x2, x3), vec3(x2, x3, x4), vec3(x3, x4, x5));
            let xh = mat4x3<f32>(vec3(x4, x5, x6), vec3(x5, x6, x7), vec3(x6, x7, x8), vec3(x7, x8, x9));
#endif
            acc_ll += wl * xl;
            acc_lh += wl * xh;
            acc_hl += wh * xl;
            acc_hh += wh * xh;
        }
    }

    // Rows of the transposes: one channel's pixels each.
    let ll = transpose(acc_ll);
    let lh = transpose(acc_lh);
    let hl = transpose(acc_hl);
    let hh = transpose(acc_hh);
    store_channel(n, co0, oy, ox0, ll[0], lh[0]);
    store_channel(n, co0 + 1u, oy, ox0, ll[1], lh[1]);
    store_channel(n, co0 + 2u, oy, ox0, ll[2], lh[2]);
    store_channel(n, co0 + 3u, oy, ox0, ll[3], lh[3]);
    store_channel(n, co0 + 4u, oy, ox0, hl[0], hh[0]);
    store_channel(n, co0 + 5u, oy, ox0, hl[1], hh[1]);
    store_channel(n, co0 + 6u, oy, ox0, hl[2], hh[2]);
    store_channel(n, co0 + 7u, oy, ox0, hl[3], hh[3]);
}
