// 2D convolution for software adapters (lavapipe/llvmpipe, SwiftShader, WARP), with the
// Params and bindings of conv2d.wgsl: NCHW input, weights (C_out, C_in, KSIZE, KSIZE).
// An implicit GEMM like conv2d.wgsl's, shaped as matmul_cpu.wgsl for CPUs: no workgroup
// memory, no barriers; a workgroup of LANES invocations computes ROWS (x ROW_GROUPS,
// below) output channels x LANES * COLS output pixels (lane l owns pixels pix0 + l + LANES * j). Each (input
// channel, tap) step loads the ROWS weights once for the workgroup and COLS input values
// per lane, for ROWS * COLS FMAs per lane:
//   SUBGROUP=0: the weights are workgroup-uniform loads.
//   SUBGROUP=1: subgroup lane i loads output channel i's weight and subgroupBroadcast
//               shares it (needs a subgroup of exactly LANES = ROWS = 8 invocations);
//               faster on lavapipe, where uniform loads in loops are not cheap.
// KSIZE (1 or 3) is fixed at pipeline creation and the taps are written out (lavapipe
// ran a 9-iteration tap loop as a loop, at about a quarter of the speed). Each lane
// works out its pixels' top-left input row and column once, outside the channel loop
// (llvmpipe hoists nothing). Padded taps load a clamped in-bounds element and select 0,
// so no branch surrounds a load.
// PAIRS=1 (stride 1, widths a multiple of 4, the same width in and out, left padding
// KSIZE / 2, an even number of weights): lane l owns the four neighbouring pixels
// pix0 + 4l .. pix0 + 4l + 3 and reads the input as two-element words (`Pair`): per
// input row of a 3x3 kernel four words hold the six columns its three taps need for the
// four pixels, instead of twelve loads; with 8-lane subgroups each lane also loads its
// channel's nine taps as five words. On lavapipe a lane-varying load costs the same for
// 16 or 32 bits, and loads were about 60% of this kernel's time. (Conv row on one
// lavapipe thread, GPU time, same hour: two pixels per lane 4.8-4.9 ms, four 3.9-4.1.)
// PAIRS=2 (3x3, stride 2, padding 1, the input twice the output's even width, 8-lane
// subgroups): the same for a halving convolution; a lane's four pixels read the nine
// input columns 2x - 1 .. 2x + 7 of each row from five words.

const LANES: u32 = 8u;
// Output channels per group; a workgroup has ROW_GROUPS groups (a define: 2 for a 3x3
// kernel with PAIRS and SUBGROUP, 1 otherwise), lane i loading the taps of channel
// i of each group, so each loaded input value feeds 8 * ROW_GROUPS channels (as in
// matmul_cpu.wgsl; one lavapipe thread, 32 channels at 128x128: 13.6 -> 12.4 ms with
// two groups, 14.2 with four, as this kernel does 288 FMAs per 17 words loaded already).
// The second group's code is written out under `if ROW_GROUPS > 1u`: an accumulator
// indexed in a loop llvmpipe does not unroll would put them all in memory.
const ROWS: u32 = 8u;
const MAX_ROW_GROUPS: u32 = 2u;
const COLS: u32 = 4u;
const TAPS: u32 = KSIZE * KSIZE;
// Input channels per loop iteration: 4 for 1x1 (as matmul_cpu's K), 1 for 3x3 (its 9
// taps are enough work per iteration).
const C_UNROLL: u32 = (4u + TAPS - 1u) / TAPS;
// PAIRS: the stride between a lane's four pixels in the input (1 or 2), and the most
// input columns of one row that their 3x3 taps read (9 at stride 2; 6 are used at 1).
const PAIR_STRIDE: u32 = max(PAIRS, 1u);
const SPAN: u32 = 9u;

struct Params {
    batch: u32,
    c_in: u32,
    h_in: u32,
    w_in: u32,
    c_out: u32,
    h_out: u32,
    w_out: u32,
    // Equal to KSIZE (the host picks the variant by it).
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    has_bias: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
#if PAIRS
// input: (N, C_in, H_in, W_in) in pairs along W
@group(0) @binding(1) var<storage, read> input: array<Pair>;
#else
// input: (N, C_in, H_in, W_in)
@group(0) @binding(1) var<storage, read> input: array<elem>;
#endif
#if PAIRS
// weight: (C_out, C_in, KSIZE, KSIZE) in pairs (an even count; a channel's taps may
// start on either half of a word)
@group(0) @binding(2) var<storage, read> weight: array<Pair>;
#else
// weight: (C_out, C_in, KSIZE, KSIZE)
@group(0) @binding(2) var<storage, read> weight: array<elem>;
#endif
// bias: (C_out); a dummy when has_bias is 0
@group(0) @binding(3) var<storage, read> bias: array<elem>;
// out: (N, C_out, H_out, W_out)
@group(0) @binding(4) var<storage, read_write> out: array<elem>;

#if SUBGROUP
// Per group: this lane's output channel's weight row.
alias WeightOffsets = array<u32, MAX_ROW_GROUPS>;
#else
alias WeightOffsets = array<u32, ROWS>;
#endif
// Per group, per output channel, per pixel (groups past ROW_GROUPS unused).
alias Acc = array<array<array<f32, COLS>, ROWS>, MAX_ROW_GROUPS>;

// Per invocation, set once before the channel loop (private, so no copies per call).
// Per pixel: the input row and column of its top-left tap (negative in the padding).
// Each tap's offset and padding test are recomputed from them: a few ALU ops instead
// of 2 * TAPS live values per pixel, which spill. PAIRS: the four pixels share the row
// and `pix_x[0]` is the word holding the first two's columns.
var<private> pix_y: array<i32, COLS>;
var<private> pix_x: array<i32, COLS>;
// Weight rows of this workgroup's output channels (clamped; extra rows are not stored).
var<private> w_off: WeightOffsets;

// Weight element e.
fn weight_at(e: u32) -> f32 {
#if PAIRS
    let p = pair_values(weight[e / 2u]);
    return select(p.x, p.y, (e & 1u) == 1u);
#else
    return f32(weight[e]);
#endif
}

#if SUBGROUP
// Each subgroup lane's value to every lane: lane i's is output channel i's weight.
fn broadcast_rows(mine: f32) -> array<f32, ROWS> {
    var w: array<f32, ROWS>;
    w[0] = subgroupBroadcast(mine, 0u);
    w[1] = subgroupBroadcast(mine, 1u);
    w[2] = subgroupBroadcast(mine, 2u);
    w[3] = subgroupBroadcast(mine, 3u);
    w[4] = subgroupBroadcast(mine, 4u);
    w[5] = subgroupBroadcast(mine, 5u);
    w[6] = subgroupBroadcast(mine, 6u);
    w[7] = subgroupBroadcast(mine, 7u);
    return w;
}
#endif

// The ROWS output channels' weights of one tap (t = its index among the weights).
fn tap_weights(t: u32) -> array<f32, ROWS> {
#if SUBGROUP
    return broadcast_rows(weight_at(w_off[0] + t));
#else
    var w: array<f32, ROWS>;
    for (var i = 0u; i < ROWS; i++) {
        w[i] = weight_at(w_off[i] + t);
    }
    return w;
#endif
}

// One tap's weights (w[i] for output channel i) times this lane's COLS input values
// (one group: the tap-by-tap paths have ROW_GROUPS = 1).
fn tap_fma(acc: ptr<function, Acc>, w: array<f32, ROWS>, x: array<f32, COLS>) {
    for (var i = 0u; i < ROWS; i++) {
        for (var j = 0u; j < COLS; j++) {
            (*acc)[0][i][j] = fma(w[i], x[j], (*acc)[0][i][j]);
        }
    }
}

#if PAIRS
#if SUBGROUP
// A 3x3 kernel's taps of one input channel for this lane's output channel of group g
// (they start at w_off[g] + w_k), from the five words that hold them: nine one-element
// loads become five, and each tap is taken from the half it falls in.
fn lane_taps3(g: u32, w_k: u32) -> array<f32, 9> {
    let e = w_off[g] + w_k;
    let first = e / 2u;
    let odd = (e & 1u) == 1u;
    var h: array<f32, 10>;
    for (var i = 0u; i < 5u; i++) {
        let v = pair_values(weight[first + i]);
        h[2u * i] = v.x;
        h[2u * i + 1u] = v.y;
    }
    var w: array<f32, 9>;
    for (var t = 0u; t < 9u; t++) {
        w[t] = select(h[t], h[t + 1u], odd);
    }
    return w;
}
#endif

// The input columns of input row ky of one input channel (its words start at
// in_base; zero in the padding) that a 3x3 kernel's taps read for this lane's four
// pixels: at stride 1 the six columns ox - 1 .. ox + 4, from the words left of, at and
// right of the pixels' own columns; at stride 2 the nine columns 2ox - 1 .. 2ox + 7, from
// the word left of them and the four words from column 2ox on (the input is twice the
// output's width, so the last is always inside it).
fn row_columns(in_base: u32, ky: u32) -> array<f32, SPAN> {
    let words = params.w_in / 2u;
    let iy = pix_y[0] + i32(ky);
    let row_ok = u32(iy) < params.h_in;
    let row = in_base + u32(clamp(iy, 0, i32(params.h_in) - 1)) * words;
    let xm = pix_x[0];
    let left = pair_values(input[row + u32(max(xm - 1, 0))]);
    let w0 = pair_values(input[row + u32(xm)]);
    let w1 = pair_values(input[row + u32(xm + 1)]);
    var c: array<f32, SPAN>;
    c[0] = select(0.0, left.y, row_ok && xm > 0);
    c[1] = select(0.0, w0.x, row_ok);
    c[2] = select(0.0, w0.y, row_ok);
    c[3] = select(0.0, w1.x, row_ok);
    c[4] = select(0.0, w1.y, row_ok);
    if PAIR_STRIDE == 1u {
        let right = pair_values(input[row + u32(min(xm + 2, i32(words) - 1))]);
        c[5] = select(0.0, right.x, row_ok && xm + 2 < i32(words));
    } else {
        let w2 = pair_values(input[row + u32(xm + 2)]);
        let w3 = pair_values(input[row + u32(xm + 3)]);
        c[5] = select(0.0, w2.x, row_ok);
        c[6] = select(0.0, w2.y, row_ok);
        c[7] = select(0.0, w3.x, row_ok);
        c[8] = select(0.0, w3.y, row_ok);
    }
    return c;
}

// The four pixels' values of one input channel of a 1x1 kernel (its words start at
// in_base; zero in rows of padding).
fn pixel_values(in_base: u32) -> vec4<f32> {
    let iy = pix_y[0];
    let row = in_base + u32(clamp(iy, 0, i32(params.h_in) - 1)) * (params.w_in / 2u) + u32(pix_x[0]);
    let v = vec4<f32>(pair_values(input[row]), pair_values(input[row + 1u]));
    return select(vec4<f32>(0.0), v, u32(iy) < params.h_in);
}

// One input row (ky) of one input channel (its words start at in_base; its weights at
// w_k), tap by tap: without 8-lane subgroups, and for a 1x1 kernel's last channels.
fn pair_row(acc: ptr<function, Acc>, in_base: u32, w_k: u32, ky: u32) {
    if KSIZE == 1u {
        let c = pixel_values(in_base);
        tap_fma(acc, tap_weights(w_k), array(c.x, c.y, c.z, c.w));
    } else {
        let c = row_columns(in_base, ky);
        let t = w_k + ky * KSIZE;
        tap_fma(acc, tap_weights(t), array(c[0], c[1], c[2], c[3]));
        tap_fma(acc, tap_weights(t + 1u), array(c[1], c[2], c[3], c[4]));
        tap_fma(acc, tap_weights(t + 2u), array(c[2], c[3], c[4], c[5]));
    }
}

#if SUBGROUP
// One output channel's four accumulators after one input channel of a 3x3 kernel: its
// taps `w` (in order) times the three rows' columns, each accumulator taking the nine
// taps in the order the row-by-row path adds them.
fn channel_taps(a: array<f32, COLS>, w: array<f32, 9>, r0: array<f32, SPAN>,
                r1: array<f32, SPAN>, r2: array<f32, SPAN>) -> array<f32, COLS> {
    var out = a;
    for (var j = 0u; j < COLS; j++) {
        let x = j * PAIR_STRIDE;
        var c = out[j];
        c = fma(w[0], r0[x], c);
        c = fma(w[1], r0[x + 1u], c);
        c = fma(w[2], r0[x + 2u], c);
        c = fma(w[3], r1[x], c);
        c = fma(w[4], r1[x + 1u], c);
        c = fma(w[5], r1[x + 2u], c);
        c = fma(w[6], r2[x], c);
        c = fma(w[7], r2[x + 1u], c);
        out[j] = fma(w[8], r2[x + 2u], c);
    }
    return out;
}

// Output channel i's nine taps from the subgroup lane that loaded them.
fn shuffle_taps(lane_w: array<f32, 9>, i: u32) -> array<f32, 9> {
    var w: array<f32, 9>;
    for (var t = 0u; t < 9u; t++) {
        w[t] = subgroupShuffle(lane_w[t], i);
    }
    return w;
}

// One input channel of a 3x3 kernel, output channel by output channel: the three rows'
// columns and this lane's taps stay in registers while each output channel's four
// accumulators take all nine taps, so llvmpipe reloads and stores a spilled
// accumulator once per input channel rather than once per tap (the tap-by-tap order
// kept all 32 accumulators and 72 broadcast weights live; same sums, same order).
fn channel_step3(acc: ptr<function, Acc>, in_base: u32, w_k: u32) {
    let r0 = row_columns(in_base, 0u);
    let r1 = row_columns(in_base, 1u);
    let r2 = row_columns(in_base, 2u);
    group_step3(acc, 0u, lane_taps3(0u, w_k), r0, r1, r2);
    if ROW_GROUPS > 1u {
        group_step3(acc, 1u, lane_taps3(1u, w_k), r0, r1, r2);
    }
}

// Group g's output channels after one input channel (lane_w: this lane's taps of its
// channel of the group).
fn group_step3(acc: ptr<function, Acc>, g: u32, lane_w: array<f32, 9>, r0: array<f32, SPAN>,
               r1: array<f32, SPAN>, r2: array<f32, SPAN>) {
    for (var i = 0u; i < ROWS; i++) {
        (*acc)[g][i] = channel_taps((*acc)[g][i], shuffle_taps(lane_w, i), r0, r1, r2);
    }
}

// Four input channels of a 1x1 kernel (inputs from x_c on, a plane apart; weights from
// w_c on), output channel by output channel as channel_step3: each accumulator takes
// the four channels in order, its weights shuffled in from the lane that loaded them.
fn channels4_1x1(acc: ptr<function, Acc>, x_c: u32, w_c: u32, plane: u32) {
    let x0 = pixel_values(x_c);
    let x1 = pixel_values(x_c + plane);
    let x2 = pixel_values(x_c + 2u * plane);
    let x3 = pixel_values(x_c + 3u * plane);
    let w = vec4<f32>(weight_at(w_off[0] + w_c), weight_at(w_off[0] + w_c + 1u),
                      weight_at(w_off[0] + w_c + 2u), weight_at(w_off[0] + w_c + 3u));
    for (var i = 0u; i < ROWS; i++) {
        let wi = subgroupShuffle(w, i);
        for (var j = 0u; j < COLS; j++) {
            var c = (*acc)[0][i][j];
            c = fma(wi.x, x0[j], c);
            c = fma(wi.y, x1[j], c);
            c = fma(wi.z, x2[j], c);
            (*acc)[0][i][j] = fma(wi.w, x3[j], c);
        }
    }
}
#endif

// Every input row of one input channel.
fn channel_step(acc: ptr<function, Acc>, in_base: u32, w_k: u32) {
#if SUBGROUP
    if KSIZE == 3u {
        channel_step3(acc, in_base, w_k);
        return;
    }
#endif
    pair_row(acc, in_base, w_k, 0u);
    if KSIZE == 3u {
        pair_row(acc, in_base, w_k, 1u);
        pair_row(acc, in_base, w_k, 2u);
    }
}
#else
// One tap (ky, kx) of one input channel (its elements start at in_base; its weights at
// w_k).
fn tap_step(acc: ptr<function, Acc>, in_base: u32, w_k: u32, ky: u32, kx: u32) {
    var x: array<f32, COLS>;
    for (var j = 0u; j < COLS; j++) {
        let iy = pix_y[j] + i32(ky);
        let ix = pix_x[j] + i32(kx);
        let inside = u32(iy) < params.h_in && u32(ix) < params.w_in;
        let off = u32(clamp(iy, 0, i32(params.h_in) - 1)) * params.w_in + u32(clamp(ix, 0, i32(params.w_in) - 1));
        let v = f32(input[in_base + off]);
        x[j] = select(0.0, v, inside);
    }
    tap_fma(acc, tap_weights(w_k + ky * KSIZE + kx), x);
}

// Every tap of one input channel, written out: lavapipe ran a 9-iteration tap loop
// as a loop (one tap per iteration), at a quarter of the unrolled speed.
fn channel_step(acc: ptr<function, Acc>, in_base: u32, w_k: u32) {
    tap_step(acc, in_base, w_k, 0u, 0u);
    if KSIZE == 3u {
        tap_step(acc, in_base, w_k, 0u, 1u);
        tap_step(acc, in_base, w_k, 0u, 2u);
        tap_step(acc, in_base, w_k, 1u, 0u);
        tap_step(acc, in_base, w_k, 1u, 1u);
        tap_step(acc, in_base, w_k, 1u, 2u);
        tap_step(acc, in_base, w_k, 2u, 0u);
        tap_step(acc, in_base, w_k, 2u, 1u);
        tap_step(acc, in_base, w_k, 2u, 2u);
    }
}
#endif

// The output pixel of this lane's accumulator column j (pixels past the end are
// clamped for loading and skipped at the store).
fn lane_pixel(pix0: u32, lane: u32, j: u32) -> u32 {
#if PAIRS
    return pix0 + 4u * lane + j;
#else
    return pix0 + lane + LANES * j;
#endif
}

// Stores group g's output channels (from g0 on) of batch item n, plus the bias.
fn store_group(acc: ptr<function, Acc>, g: u32, n: u32, g0: u32, pix0: u32, lane: u32) {
    let hw_out = params.h_out * params.w_out;
    for (var i = 0u; i < ROWS; i++) {
        let co = g0 + i;
        if co >= params.c_out {
            break;
        }
        var b = 0.0;
        if params.has_bias == 1u {
            b = f32(bias[co]);
        }
        for (var j = 0u; j < COLS; j++) {
            let pix = lane_pixel(pix0, lane, j);
            if pix < hw_out {
                out[(n * params.c_out + co) * hw_out + pix] = elem((*acc)[g][i][j] + b);
            }
        }
    }
}

@compute @workgroup_size(8)
fn conv2d_cpu(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
#if SUBGROUP
    @builtin(subgroup_invocation_id) sg_lane: u32,
#endif
) {
    let n = wg.z;
    let co0 = wg.y * ROWS * ROW_GROUPS;
    let pix0 = wg.x * (LANES * COLS);
    let hw_in = params.h_in * params.w_in;
    let hw_out = params.h_out * params.w_out;
    let k_total = params.c_in * TAPS;

#if PAIRS
    // The four pixels lie in one row (width a multiple of 4); the host guarantees the
    // stride is PAIR_STRIDE. pix_x[0]: the word holding the first pixel's centre column.
    let pix = min(lane_pixel(pix0, lane, 0u), hw_out - 4u);
    pix_y[0] = i32(pix / params.w_out * PAIR_STRIDE) - i32(params.pad_top);
    pix_x[0] = i32(pix % params.w_out * PAIR_STRIDE) / 2;
    // Channel planes and batch items in words.
    let plane = hw_in / 2u;
#else
    for (var j = 0u; j < COLS; j++) {
        let pix = min(lane_pixel(pix0, lane, j), hw_out - 1u);
        let oy = pix / params.w_out;
        let ox = pix % params.w_out;
        pix_y[j] = i32(oy * params.stride) - i32(params.pad_top);
        pix_x[j] = i32(ox * params.stride) - i32(params.pad_left);
    }
    let plane = hw_in;
#endif
#if SUBGROUP
    let last_co = params.c_out - 1u;
    w_off[0] = min(co0 + sg_lane, last_co) * k_total;
    if ROW_GROUPS > 1u {
        w_off[1] = min(co0 + ROWS + sg_lane, last_co) * k_total;
    }
#else
    for (var i = 0u; i < ROWS; i++) {
        w_off[i] = min(co0 + i, params.c_out - 1u) * k_total;
    }
#endif

    var acc: Acc;
    let in_base = n * params.c_in * plane;
    // C_UNROLL input channels per iteration while they fit (written out, as the taps),
    // then single ones.
    let c_main = params.c_in - params.c_in % C_UNROLL;
    var ci = 0u;
    for (; ci < c_main; ci += C_UNROLL) {
        let x_c = in_base + ci * plane;
        let w_c = ci * TAPS;
#if PAIRS
#if SUBGROUP
        if C_UNROLL == 4u {
            channels4_1x1(&acc, x_c, w_c, plane);
            continue;
        }
#endif
#endif
        channel_step(&acc, x_c, w_c);
        if C_UNROLL == 4u {
            channel_step(&acc, x_c + plane, w_c + TAPS);
            channel_step(&acc, x_c + 2u * plane, w_c + 2u * TAPS);
            channel_step(&acc, x_c + 3u * plane, w_c + 3u * TAPS);
        }
    }
    // The channels left over (none for a 3x3 kernel, C_UNROLL = 1: a constant test, so
    // that its pipelines do not compile the channel step twice).
    if C_UNROLL > 1u {
        for (; ci < params.c_in; ci++) {
            channel_step(&acc, in_base + ci * plane, ci * TAPS);
        }
    }

    store_group(&acc, 0u, n, co0, pix0, lane);
    if ROW_GROUPS > 1u {
        store_group(&acc, 1u, n, co0 + ROWS, pix0, lane);
    }
}
