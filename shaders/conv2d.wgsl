// 2D convolution (NCHW, weights (C_out, C_in, kh, kw)) as an implicit GEMM:
//   out[n] (C_out x HW_out) = weight (C_out x C_in*kh*kw) @ patches (C_in*kh*kw x HW_out)
// The patches matrix is never stored: each tile is gathered from the input as it is
// staged. Tiling is as in matmul.wgsl: 64x64 outputs per workgroup, K slices of 16.

const TILE: u32 = 64u;
const SLICE: u32 = 16u;

struct Params {
    batch: u32,
    c_in: u32,
    h_in: u32,
    w_in: u32,
    c_out: u32,
    h_out: u32,
    w_out: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    // Zero padding before the first row and column; the padding after them only
    // changes the output size, which the host computes (diffusers' VAE encoder pads
    // (0, 1, 0, 1) before its stride-2 convs).
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
// weight: (C_out, C_in, kh, kw)
@group(0) @binding(2) var<storage, read> weight: array<elem>;
// bias: (C_out); a dummy when has_bias is 0
@group(0) @binding(3) var<storage, read> bias: array<elem>;
// out: (N, C_out, H_out, W_out)
@group(0) @binding(4) var<storage, read_write> out: array<elem>;

var<workgroup> weight_tile: array<array<f32, TILE>, SLICE>;
var<workgroup> patch_tile: array<array<f32, TILE>, SLICE>;

fn load_weight(co: u32, kidx: u32, k_total: u32) -> f32 {
    if co >= params.c_out || kidx >= k_total {
        return 0.0;
    }
    return f32(weight[co * k_total + kidx]);
}

fn load_patch(n: u32, kidx: u32, pix: u32, k_total: u32) -> f32 {
    let hw_out = params.h_out * params.w_out;
    if kidx >= k_total || pix >= hw_out {
        return 0.0;
    }
    let taps = params.kernel_h * params.kernel_w;
    let ci = kidx / taps;
    let tap = kidx % taps;
    let ky = tap / params.kernel_w;
    let kx = tap % params.kernel_w;
    let oy = pix / params.w_out;
    let ox = pix % params.w_out;
    // Signed arithmetic: padding makes the top-left taps fall outside the image.
    let iy = i32(oy * params.stride + ky) - i32(params.pad_top);
    let ix = i32(ox * params.stride + kx) - i32(params.pad_left);
    if iy < 0 || ix < 0 || iy >= i32(params.h_in) || ix >= i32(params.w_in) {
        return 0.0;
    }
    let idx = ((n * params.c_in + ci) * params.h_in + u32(iy)) * params.w_in + u32(ix);
    return f32(input[idx]);
}

// Stages element e (of 16 x 64) of both operand tiles for the K slice at k0.
fn stage(e: u32, n: u32, co0: u32, pix0: u32, k0: u32, k_total: u32) {
    let kk = e / TILE;
    let mm = e % TILE;
    weight_tile[kk][mm] = load_weight(co0 + mm, k0 + kk, k_total);
    patch_tile[kk][mm] = load_patch(n, k0 + kk, pix0 + mm, k_total);
}

@compute @workgroup_size(16, 16)
fn conv2d(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wg.z;
    let co0 = wg.y * TILE;
    let pix0 = wg.x * TILE;
    let k_total = params.c_in * params.kernel_h * params.kernel_w;
    let flat = lid.y * 16u + lid.x;

    // acc[i][j]: row i * 16 + lid.y, column j * 16 + lid.x of this thread's 4x4 block.
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < k_total; k0 += SLICE) {
        // 256 threads stage 16 x 64 values of each operand, 4 apiece.
        stage(flat, n, co0, pix0, k0, k_total);
        stage(flat + 256u, n, co0, pix0, k0, k_total);
        stage(flat + 512u, n, co0, pix0, k0, k_total);
        stage(flat + 768u, n, co0, pix0, k0, k_total);
        workgroupBarrier();
        // Unrolled 4x4 outer product in vec4s: few loop iterations per thread (llvmpipe
        // stops a shader's loops after 65535 iterations in total).
        for (var kk = 0u; kk < SLICE; kk++) {
            let wv = vec4<f32>(weight_tile[kk][lid.y], weight_tile[kk][lid.y + 16u], weight_tile[kk][lid.y + 32u], weight_tile[kk][lid.y + 48u]);
            let pv = vec4<f32>(patch_tile[kk][lid.x], patch_tile[kk][lid.x + 16u], patch_tile[kk][lid.x + 32u], patch_tile[kk][lid.x + 48u]);
            acc[0] = fma(vec4<f32>(wv.x), pv, acc[0]);
            acc[1] = fma(vec4<f32>(wv.y), pv, acc[1]);
            acc[2] = fma(vec4<f32>(wv.z), pv, acc[2]);
            acc[3] = fma(vec4<f32>(wv.w), pv, acc[3]);
        }
        workgroupBarrier();
    }

    let hw_out = params.h_out * params.w_out;
    for (var i = 0u; i < 4u; i++) {
        let co = co0 + lid.y + 16u * i;
        if co >= params.c_out {
            continue;
        }
        var b = 0.0;
        if params.has_bias == 1u {
            b = f32(bias[co]);
        }
        for (var j = 0u; j < 4u; j++) {
            let pix = pix0 + lid.x + 16u * j;
            if pix >= hw_out {
                continue;
            }
            out[(n * params.c_out + co) * hw_out + pix] = elem(acc[i][j] + b);
        }
    }
}
