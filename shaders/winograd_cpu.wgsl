// Winograd convolutions for software adapters (lavapipe/llvmpipe): a 3x3, stride-1,
// padding-1 convolution computed as one matrix product per transformed element on the
// matmul_cpu kernel. Two tiles (TILE4, chosen per layer by the host's
// WinogradTile::for_conv):
//   TILE4=0, F(2x2, 3x3): 16 products, 16 multiplies per 2x2 output tile and channel
//   pair instead of the direct convolution's 36; transforms in `elem`.
//   TILE4=1, F(4x4, 3x3): 36 products, 36 multiplies per 4x4 tile instead of 144, and
//   the transforms move less (a 6x6 patch and 36 products per 16 outputs, against 16
//   per 4). They amplify rounding (A^T has entries up to 8): with the transformed
//   weights, input or products stored as f16 a 64-channel convolution was off by ~1e-2
//   of its largest output (F(2x2): 7e-4), with all three in f32 by 3-9e-6 at 40-128
//   channels with the usual points 0, +-1, +-2 and 1.5-3.7e-6 with 0, 1, -1, 2, -1/2,
//   which these matrices use (float64 reference, numpy, sums in f32 as the matmul adds
//   them). So U, V and M are f32 in every variant (the products run on matmul_cpu's f32
//   pipelines); x and y are `elem`.
// On lavapipe the direct convolution and the matmul reach about the same FLOP rate; the
// transforms and the short products (K = C_in) take back part of the saving. The three
// kernels move the data around the products (T = 4 x 4 = 16 or 6 x 6 = 36 elements):
//   winograd_weights: g (C_out, C_in, 3, 3) -> U = G g G^T as (T, C_out, C_in)
//   winograd_input:   x (N, C, H, W)      -> V = B^T d B as (T, C, T4)
//   winograd_output:  M (T, C_out, T4)    -> y = A^T M A (+ bias, adds) as (N, C_out, H, W)
// with M[xi] = U[xi] @ V[xi] (matmul_cpu, rhs (K, N)); xi counts the transformed tile's
// elements row by row. A tile is an S x S block of the output (S = 2 or 4); tile
// t = (n * tiles_h + ty) * tiles_w + tx reads the (S + 2) x (S + 2) input patch whose
// top-left is (S ty - 1, S tx - 1), zero outside the image, and stores the outputs
// inside the image. The tiles are stored in T4 = T rounded up to a multiple of 4 columns
// (the matmul's quads); the extra columns are zero. The transforms (Lavin and Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016):
//   F(2x2): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//           G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//           A^T = [1 1 1 0; 0 1 -1 -1]
//   F(4x4) (Toom-Cook points 0, 1, -1, 2, -1/2, inf):
//           B^T = [1 3/2 -2 -3/2 1 0; 0 -1 -5/2 -1/2 1 0; 0 1 1/2 -5/2 1 0;
//                  0 -1/2 -1 1/2 1 0; 0 2 -1 -2 1 0; 0 1 3/2 -2 -3/2 1]
//           G   = [1 0 0; -1/3 -1/3 -1/3; 1/3 -1/3 1/3; 1/15 2/15 4/15;
//                  -16/15 8/15 -4/15; 0 0 1]
//           A^T = [1 1 1 1 1 0; 0 1 -1 2 -1/2 0; 0 1 1 4 1/4 0; 0 1 -1 8 -1/8 1]
// One invocation per (channel, tile) or (output channel, input channel); arithmetic in
// f32. PAIRS=1 (widths a multiple of 2 S, so that a row of tiles has an even count and
// every image row starts on a pair) gives an input or output invocation two
// neighbouring tiles of a row and moves their values two at a time (on lavapipe a
// lane-varying load or store costs about the same for one element as for two).

struct Params {
    batch: u32,
    // Channels of the tensor transformed (C for the input, C_out for the output, C_out
    // for the weights).
    channels: u32,
    h: u32,
    w: u32,
    tiles_h: u32,
    tiles_w: u32,
    // The tiles this dispatch transforms: tiles tile_base .. tile_base + tiles of the
    // convolution's, stored in tiles_padded columns (T and T4 above when one dispatch
    // takes them all; the host splits large images into runs of tiles).
    tiles: u32,
    tiles_padded: u32,
    // C_in for the weights.
    c_in: u32,
    has_bias: u32,
    tile_base: u32,
    // winograd_output: 1 adds `residual`, 2 adds `per_channel` (bits; 0: neither).
    adds: u32,
}


@group(0) @binding(0) var<uniform> params: Params;
#if PAIRS
// winograd_input: x; winograd_output with TILE4=0: M (in pairs)
@group(0) @binding(1) var<storage, read> src: array<Pair>;
#else
// winograd_input: x; winograd_output with TILE4=0: M
@group(0) @binding(1) var<storage, read> src: array<elem>;
#endif
// bias: (C_out) for winograd_output when has_bias is 1; a dummy otherwise
@group(0) @binding(2) var<storage, read> bias: array<elem>;
#if PAIRS
// winograd_input with TILE4=0: V; winograd_output: y (in pairs)
@group(0) @binding(3) var<storage, read_write> dst: array<Pair>;
#else
// winograd_input with TILE4=0: V; winograd_output: y
@group(0) @binding(3) var<storage, read_write> dst: array<elem>;
#endif
// winograd_weights: g (C_out, C_in, 3, 3) in, U (T, C_out, C_in) out (f32 with TILE4)
@group(0) @binding(4) var<storage, read> weights_in: array<elem>;
#if TILE4
@group(0) @binding(5) var<storage, read_write> weights_out: array<f32>;
#else
@group(0) @binding(5) var<storage, read_write> weights_out: array<elem>;
#endif
// winograd_output's adds, switched by params.adds (dummies when off): a skip connection
// (N, C_out, H, W), laid out as y, and one value per image and output channel (N, C_out),
// a resnet's time embedding. Added as the output is stored: a pass over it fewer each.
#if PAIRS
@group(0) @binding(6) var<storage, read> residual: array<Pair>;
#else
@group(0) @binding(6) var<storage, read> residual: array<elem>;
#endif
@group(0) @binding(7) var<storage, read> per_channel: array<elem>;
#if TILE4
#if PAIRS
// winograd_input with TILE4=1: V (f32), two neighbouring tiles per pair
@group(0) @binding(8) var<storage, read_write> v_out: array<vec2<f32>>;
// winograd_output with TILE4=1: M (f32), two neighbouring tiles per pair
@group(0) @binding(9) var<storage, read> m_in: array<vec2<f32>>;
#else
@group(0) @binding(8) var<storage, read_write> v_out: array<f32>;
@group(0) @binding(9) var<storage, read> m_in: array<f32>;
#endif
#endif

// Output channel o's bias in image n, plus its per-channel add when asked.
fn bias_of(n: u32, o: u32) -> f32 {
    var b = 0.0;
    if params.has_bias == 1u {
        b = f32(bias[o]);
    }
    if (params.adds & 2u) != 0u {
        b += f32(per_channel[n * params.channels + o]);
    }
    return b;
}

// Where this dispatch's tile t lies: (image, tile row, tile column).
fn tile_position(t: u32) -> vec3<u32> {
    let per_image = params.tiles_h * params.tiles_w;
    let g = params.tile_base + t;
    let r = g % per_image;
    return vec3<u32>(g / per_image, r / params.tiles_w, r % params.tiles_w);
}

#if PAIRS
// Pair p (elements 2p, 2p + 1) of row `row` of the plane starting at pair `plane`, or
// zeros outside the image; the load reads a clamped in-bounds pair, so no branch
// surrounds it.
fn input_pair(plane: u32, row: i32, p: i32) -> vec2<f32> {
    let half_w = i32(params.w / 2u);
    let inside = row >= 0 && row < i32(params.h) && p >= 0 && p < half_w;
    let r = u32(clamp(row, 0, i32(params.h) - 1));
    let c = u32(clamp(p, 0, half_w - 1));
    return select(vec2<f32>(0.0), pair_values(src[plane + r * (params.w / 2u) + c]), inside);
}

#else
// Element (row, col) of the plane starting at element `plane`, or 0 outside the image;
// the load reads a clamped in-bounds element, so no branch surrounds it.
fn input_at(plane: u32, row: i32, col: i32) -> f32 {
    let inside = row >= 0 && row < i32(params.h) && col >= 0 && col < i32(params.w);
    let r = u32(clamp(row, 0, i32(params.h) - 1));
    let c = u32(clamp(col, 0, i32(params.w) - 1));
    return select(0.0, f32(src[plane + r * params.w + c]), inside);
}

#endif

#if TILE4
const TILE_ELEMS: u32 = 36u;
alias Row6 = array<f32, 6>;
alias Tile6 = array<Row6, 6>;
alias Out4 = array<vec4<f32>, 4>;

// B^T d for one column d of six (and, applied to rows, d B).
fn input_1d(d: Row6) -> Row6 {
    return Row6(
        d[0] + d[4] + 1.5 * (d[1] - d[3]) - 2.0 * d[2],
        d[4] - d[1] - 2.5 * d[2] - 0.5 * d[3],
        d[1] + d[4] + 0.5 * d[2] - 2.5 * d[3],
        d[4] - d[2] + 0.5 * (d[3] - d[1]),
        d[4] - d[2] + 2.0 * (d[1] - d[3]),
        d[1] + d[5] + 1.5 * (d[2] - d[4]) - 2.0 * d[3],
    );
}

// V = B^T d B for the 6x6 patch d (rows d[0..6]).
fn input_tile(d: Tile6) -> Tile6 {
    var cols: Tile6;
    // B^T d: the combination of rows, one column at a time.
    for (var j = 0u; j < 6u; j++) {
        cols[j] = input_1d(Row6(d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j]));
    }
    var v: Tile6;
    // (B^T d) B: row i of it is the same combination over row i's columns.
    for (var i = 0u; i < 6u; i++) {
        v[i] = input_1d(Row6(cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i], cols[5][i]));
    }
    return v;
}

// A^T m for one column m of six.
fn output_1d(m: Row6) -> vec4<f32> {
    let s = m[1] + m[2];
    let d = m[1] - m[2];
    return vec4<f32>(
        m[0] + s + m[3] + m[4],
        d + 2.0 * m[3] - 0.5 * m[4],
        s + 4.0 * m[3] + 0.25 * m[4],
        d + 8.0 * m[3] - 0.125 * m[4] + m[5],
    );
}

// y = A^T m A + b for the 6x6 product tile m, as four rows of four.
fn output_tile(m: Tile6, b: f32) -> Out4 {
    // A^T m: four rows of six, kept as six columns of four.
    var cols: array<vec4<f32>, 6>;
    for (var j = 0u; j < 6u; j++) {
        cols[j] = output_1d(Row6(m[0][j], m[1][j], m[2][j], m[3][j], m[4][j], m[5][j]));
    }
    var y: Out4;
    for (var i = 0u; i < 4u; i++) {
        y[i] = output_1d(Row6(cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i], cols[5][i])) + b;
    }
    return y;
}

#if PAIRS
@compute @workgroup_size(64)
fn winograd_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    // Tiles 2 gid.x and 2 gid.x + 1, neighbours in a row (tiles_w is even).
    let pairs = params.tiles_padded / 2u;
    let tp = gid.x;
    let c = gid.y;
    if tp >= pairs || c >= params.channels {
        return;
    }
    let planes = params.channels * pairs;
    let out0 = c * pairs + tp;
    if 2u * tp >= params.tiles {
        for (var xi = 0u; xi < TILE_ELEMS; xi++) {
            v_out[xi * planes + out0] = vec2<f32>(0.0);
        }
        return;
    }
    let at = tile_position(2u * tp);
    let plane = (at.x * params.channels + c) * params.h * (params.w / 2u);
    let row0 = 4 * i32(at.y) - 1;
    // The two tiles read columns 4 tx - 1 .. 4 tx + 8 (tx = at.z): pairs 2 tx - 1 ..
    // 2 tx + 4 hold columns 4 tx - 2 .. 4 tx + 9; tile a is elements 1..6 of them, tile
    // b elements 5..10.
    let p0 = 2 * i32(at.z) - 1;
    var a: Tile6;
    var b: Tile6;
    for (var i = 0; i < 6; i++) {
        let e0 = input_pair(plane, row0 + i, p0);
        let e1 = input_pair(plane, row0 + i, p0 + 1);
        let e2 = input_pair(plane, row0 + i, p0 + 2);
        let e3 = input_pair(plane, row0 + i, p0 + 3);
        let e4 = input_pair(plane, row0 + i, p0 + 4);
        let e5 = input_pair(plane, row0 + i, p0 + 5);
        a[i] = Row6(e0.y, e1.x, e1.y, e2.x, e2.y, e3.x);
        b[i] = Row6(e2.y, e3.x, e3.y, e4.x, e4.y, e5.x);
    }
    let va = input_tile(a);
    let vb = input_tile(b);
    for (var i = 0u; i < 6u; i++) {
        let r = 6u * i * planes + out0;
        v_out[r] = vec2<f32>(va[i][0], vb[i][0]);
        v_out[r + planes] = vec2<f32>(va[i][1], vb[i][1]);
        v_out[r + 2u * planes] = vec2<f32>(va[i][2], vb[i][2]);
        v_out[r + 3u * planes] = vec2<f32>(va[i][3], vb[i][3]);
        v_out[r + 4u * planes] = vec2<f32>(va[i][4], vb[i][4]);
        v_out[r + 5u * planes] = vec2<f32>(va[i][5], vb[i][5]);
    }
}

@compute @workgroup_size(64)
fn winograd_output(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pairs = params.tiles_padded / 2u;
    let tp = gid.x;
    let o = gid.y;
    if 2u * tp >= params.tiles || o >= params.channels {
        return;
    }
    let planes = params.channels * pairs;
    let in0 = o * pairs + tp;
    // Rows written out: a 36-iteration loop, or a nested one, would stay a loop on
    // llvmpipe, with the tiles in memory.
    var ma: Tile6;
    var mb: Tile6;
    for (var i = 0u; i < 6u; i++) {
        let r = 6u * i * planes + in0;
        let m0 = m_in[r];
        let m1 = m_in[r + planes];
        let m2 = m_in[r + 2u * planes];
        let m3 = m_in[r + 3u * planes];
        let m4 = m_in[r + 4u * planes];
        let m5 = m_in[r + 5u * planes];
        ma[i] = Row6(m0.x, m1.x, m2.x, m3.x, m4.x, m5.x);
        mb[i] = Row6(m0.y, m1.y, m2.y, m3.y, m4.y, m5.y);
    }
    // The two tiles share a row of tiles, so an image.
    let at = tile_position(2u * tp);
    let bias_value = bias_of(at.x, o);
    let ya = output_tile(ma, bias_value);
    let yb = output_tile(mb, bias_value);
    let half_w = params.w / 2u;
    let plane = (at.x * params.channels + o) * params.h * half_w;
    for (var r = 0u; r < 4u; r++) {
        let row = 4u * at.y + r;
        if row < params.h {
            // Columns 4 tx .. 4 tx + 7: pairs 2 tx .. 2 tx + 3.
            let i = plane + row * half_w + 2u * at.z;
            var p = array<vec2<f32>, 4>(ya[r].xy, ya[r].zw, yb[r].xy, yb[r].zw);
            if (params.adds & 1u) != 0u {
                p[0] += pair_values(residual[i]);
                p[1] += pair_values(residual[i + 1u]);
                p[2] += pair_values(residual[i + 2u]);
                p[3] += pair_values(residual[i + 3u]);
            }
            dst[i] = pair_of(p[0]);
            dst[i + 1u] = pair_of(p[1]);
            dst[i + 2u] = pair_of(p[2]);
            dst[i + 3u] = pair_of(p[3]);
        }
    }
}
#else
@compute @workgroup_size(64)
fn winograd_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    let c = gid.y;
    if t >= params.tiles_padded || c >= params.channels {
        return;
    }
    let planes = params.channels * params.tiles_padded;
    let out0 = c * params.tiles_padded + t;
    if t >= params.tiles {
        for (var xi = 0u; xi < TILE_ELEMS; xi++) {
            v_out[xi * planes + out0] = 0.0;
        }
        return;
    }
    let at = tile_position(t);
    let plane = (at.x * params.channels + c) * params.h * params.w;
    let row0 = 4 * i32(at.y) - 1;
    let col0 = 4 * i32(at.z) - 1;
    var d: Tile6;
    for (var i = 0; i < 6; i++) {
        for (var j = 0; j < 6; j++) {
            d[i][j] = input_at(plane, row0 + i, col0 + j);
        }
    }
    let v = input_tile(d);
    for (var i = 0u; i < 6u; i++) {
        for (var j = 0u; j < 6u; j++) {
            v_out[(6u * i + j) * planes + out0] = v[i][j];
        }
    }
}

@compute @workgroup_size(64)
fn winograd_output(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    let o = gid.y;
    if t >= params.tiles || o >= params.channels {
        return;
    }
    let planes = params.channels * params.tiles_padded;
    let in0 = o * params.tiles_padded + t;
    var m: Tile6;
    for (var i = 0u; i < 6u; i++) {
        for (var j = 0u; j < 6u; j++) {
            m[i][j] = m_in[(6u * i + j) * planes + in0];
        }
    }
    let at = tile_position(t);
    let y = output_tile(m, bias_of(at.x, o));
    let plane = (at.x * params.channels + o) * params.h * params.w;
    for (var r = 0u; r < 4u; r++) {
        let row = 4u * at.y + r;
        if row < params.h {
            for (var j = 0u; j < 4u; j++) {
                let col = 4u * at.z + j;
                if col < params.w {
                    var v = y[r][j];
                    let i = plane + row * params.w + col;
                    if (params.adds & 1u) != 0u {
                        v += f32(residual[i]);
                    }
                    dst[i] = elem(v);
                }
            }
        }
    }
}
#endif

// G g for one column g of three (and, applied to rows, g G^T).
fn weight_1d(g: vec3<f32>) -> Row6 {
    let even = g.x + g.z;
    return Row6(
        g.x,
        -(even + g.y) / 3.0,
        (even - g.y) / 3.0,
        (g.x + 2.0 * g.y + 4.0 * g.z) / 15.0,
        (8.0 * g.y - 16.0 * g.x - 4.0 * g.z) / 15.0,
        g.z,
    );
}

@compute @workgroup_size(64)
fn winograd_weights(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let o = gid.y;
    if c >= params.c_in || o >= params.channels {
        return;
    }
    let base = (o * params.c_in + c) * 9u;
    // G g: six rows of three, one column of g at a time.
    var gg: array<vec3<f32>, 6>;
    for (var j = 0u; j < 3u; j++) {
        let col = weight_1d(vec3<f32>(f32(weights_in[base + j]), f32(weights_in[base + 3u + j]), f32(weights_in[base + 6u + j])));
        for (var i = 0u; i < 6u; i++) {
            gg[i][j] = col[i];
        }
    }
    let planes = params.channels * params.c_in;
    let out0 = o * params.c_in + c;
    for (var i = 0u; i < 6u; i++) {
        // (G g) G^T: the same combination over each row's three columns.
        let u = weight_1d(gg[i]);
        for (var j = 0u; j < 6u; j++) {
            weights_out[(6u * i + j) * planes + out0] = u[j];
        }
    }
}

#else
// V = B^T d B for the 4x4 patch d (rows d[0..4]), as four rows.
fn input_tile(d: array<vec4<f32>, 4>) -> array<vec4<f32>, 4> {
    // B^T d, then each row times B (the same combination over columns).
    let r = array<vec4<f32>, 4>(d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]);
    var v: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        v[i] = vec4<f32>(r[i].x - r[i].z, r[i].y + r[i].z, r[i].z - r[i].y, r[i].y - r[i].w);
    }
    return v;
}

// y = A^T m A (+ bias b) for the 4x4 product m (rows m[0..4]), as two rows of two.
fn output_tile(m: array<vec4<f32>, 4>, b: f32) -> array<vec2<f32>, 2> {
    let r0 = m[0] + m[1] + m[2];
    let r1 = m[1] - m[2] - m[3];
    return array<vec2<f32>, 2>(
        vec2<f32>(r0.x + r0.y + r0.z, r0.y - r0.z - r0.w) + b,
        vec2<f32>(r1.x + r1.y + r1.z, r1.y - r1.z - r1.w) + b,
    );
}

#if PAIRS
@compute @workgroup_size(64)
fn winograd_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    // Tiles t0 = 2 * gid.x and t0 + 1, neighbours in a row (tiles_w is even).
    let pairs = params.tiles_padded / 2u;
    let tp = gid.x;
    let c = gid.y;
    if tp >= pairs || c >= params.channels {
        return;
    }
    let planes = params.channels * pairs;
    let out0 = c * pairs + tp;
    if 2u * tp >= params.tiles {
        for (var xi = 0u; xi < 16u; xi++) {
            dst[xi * planes + out0] = pair_of(vec2<f32>(0.0));
        }
        return;
    }
    let at = tile_position(2u * tp);
    let plane = (at.x * params.channels + c) * params.h * (params.w / 2u);
    let row0 = 2 * i32(at.y) - 1;
    // The two tiles read columns 2 tx - 1 .. 2 tx + 4: pairs tx - 1 .. tx + 2.
    let p0 = i32(at.z) - 1;
    var a: array<vec4<f32>, 4>;
    var b: array<vec4<f32>, 4>;
    for (var i = 0; i < 4; i++) {
        let e0 = input_pair(plane, row0 + i, p0);
        let e1 = input_pair(plane, row0 + i, p0 + 1);
        let e2 = input_pair(plane, row0 + i, p0 + 2);
        let e3 = input_pair(plane, row0 + i, p0 + 3);
        a[i] = vec4<f32>(e0.y, e1.x, e1.y, e2.x);
        b[i] = vec4<f32>(e1.y, e2.x, e2.y, e3.x);
    }
    let va = input_tile(a);
    let vb = input_tile(b);
    for (var i = 0u; i < 4u; i++) {
        dst[(4u * i) * planes + out0] = pair_of(vec2<f32>(va[i].x, vb[i].x));
        dst[(4u * i + 1u) * planes + out0] = pair_of(vec2<f32>(va[i].y, vb[i].y));
        dst[(4u * i + 2u) * planes + out0] = pair_of(vec2<f32>(va[i].z, vb[i].z));
        dst[(4u * i + 3u) * planes + out0] = pair_of(vec2<f32>(va[i].w, vb[i].w));
    }
}

@compute @workgroup_size(64)
fn winograd_output(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pairs = params.tiles_padded / 2u;
    let tp = gid.x;
    let o = gid.y;
    if 2u * tp >= params.tiles || o >= params.channels {
        return;
    }
    let planes = params.channels * pairs;
    let in0 = o * pairs + tp;
    var ma: array<vec4<f32>, 4>;
    var mb: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        let m0 = pair_values(src[(4u * i) * planes + in0]);
        let m1 = pair_values(src[(4u * i + 1u) * planes + in0]);
        let m2 = pair_values(src[(4u * i + 2u) * planes + in0]);
        let m3 = pair_values(src[(4u * i + 3u) * planes + in0]);
        ma[i] = vec4<f32>(m0.x, m1.x, m2.x, m3.x);
        mb[i] = vec4<f32>(m0.y, m1.y, m2.y, m3.y);
    }
    // The two tiles share a row of tiles, so an image.
    let at = tile_position(2u * tp);
    let b = bias_of(at.x, o);
    let ya = output_tile(ma, b);
    let yb = output_tile(mb, b);
    let half_w = params.w / 2u;
    let plane = (at.x * params.channels + o) * params.h * half_w;
    for (var r = 0u; r < 2u; r++) {
        let row = 2u * at.y + r;
        if row < params.h {
            // Columns 2 tx .. 2 tx + 3: pairs tx and tx + 1.
            let i = plane + row * half_w + at.z;
            var pa = ya[r];
            var pb = yb[r];
            if (params.adds & 1u) != 0u {
                pa += pair_values(residual[i]);
                pb += pair_values(residual[i + 1u]);
            }
            dst[i] = pair_of(pa);
            dst[i + 1u] = pair_of(pb);
        }
    }
}
#else
@compute @workgroup_size(64)
fn winograd_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    let c = gid.y;
    if t >= params.tiles_padded || c >= params.channels {
        return;
    }
    let planes = params.channels * params.tiles_padded;
    let out0 = c * params.tiles_padded + t;
    if t >= params.tiles {
        for (var xi = 0u; xi < 16u; xi++) {
            dst[xi * planes + out0] = elem(0.0);
        }
        return;
    }
    let at = tile_position(t);
    let plane = (at.x * params.channels + c) * params.h * params.w;
    let row0 = 2 * i32(at.y) - 1;
    let col0 = 2 * i32(at.z) - 1;
    var d: array<vec4<f32>, 4>;
    for (var i = 0; i < 4; i++) {
        d[i] = vec4<f32>(
            input_at(plane, row0 + i, col0),
            input_at(plane, row0 + i, col0 + 1),
            input_at(plane, row0 + i, col0 + 2),
            input_at(plane, row0 + i, col0 + 3),
        );
    }
    let v = input_tile(d);
    for (var i = 0u; i < 4u; i++) {
        dst[(4u * i) * planes + out0] = elem(v[i].x);
        dst[(4u * i + 1u) * planes + out0] = elem(v[i].y);
        dst[(4u * i + 2u) * planes + out0] = elem(v[i].z);
        dst[(4u * i + 3u) * planes + out0] = elem(v[i].w);
    }
}

@compute @workgroup_size(64)
fn winograd_output(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    let o = gid.y;
    if t >= params.tiles || o >= params.channels {
        return;
    }
    let planes = params.channels * params.tiles_padded;
    let in0 = o * params.tiles_padded + t;
    var m: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        m[i] = vec4<f32>(
            f32(src[(4u * i) * planes + in0]),
            f32(src[(4u * i + 1u) * planes + in0]),
            f32(src[(4u * i + 2u) * planes + in0]),
            f32(src[(4u * i + 3u) * planes + in0]),
        );
    }
    let at = tile_position(t);
    let y = output_tile(m, bias_of(at.x, o));
    let plane = (at.x * params.channels + o) * params.h * params.w;
    for (var r = 0u; r < 2u; r++) {
        let row = 2u * at.y + r;
        let col = 2u * at.z;
        if row < params.h {
            let i = plane + row * params.w + col;
            store_added(i, y[r].x);
            if col + 1u < params.w {
                store_added(i + 1u, y[r].y);
            }
        }
    }
}


// Stores y element i, plus the residual's when asked.
fn store_added(i: u32, v: f32) {
    var x = v;
    if (params.adds & 1u) != 0u {
        x += f32(residual[i]);
    }
    dst[i] = elem(x);
}
#endif

// The three weights from element i on.
fn weight_row(i: u32) -> vec3<f32> {
    return vec3<f32>(f32(weights_in[i]), f32(weights_in[i + 1u]), f32(weights_in[i + 2u]));
}

@compute @workgroup_size(64)
fn winograd_weights(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let o = gid.y;
    if c >= params.c_in || o >= params.channels {
        return;
    }
    let base = (o * params.c_in + c) * 9u;
    // G g: four rows of three, from g's rows g0..g2.
    let g0 = weight_row(base);
    let g1 = weight_row(base + 3u);
    let g2 = weight_row(base + 6u);
    let rows = array<vec3<f32>, 4>(g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2);
    let planes = params.channels * params.c_in;
    let out0 = o * params.c_in + c;
    for (var i = 0u; i < 4u; i++) {
        // (G g) G^T: the same combination over each row's three columns.
        let r = rows[i];
        weights_out[(4u * i) * planes + out0] = elem(r.x);
        weights_out[(4u * i + 1u) * planes + out0] = elem(0.5 * (r.x + r.y + r.z));
        weights_out[(4u * i + 2u) * planes + out0] = elem(0.5 * (r.x - r.y + r.z));
        weights_out[(4u * i + 3u) * planes + out0] = elem(r.z);
    }
}

#endif
