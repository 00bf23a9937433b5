// elementwise.wgsl's unary, binary and GEGLU ops for software adapters, reading and
// writing a 16-byte `Block` (eight f16 or four f32 elements) per access. With Mesa
// 25.0's llvmpipe every lane-varying storage access is a loop over the 8 lanes with a
// branch, a descriptor load and a bounds check per lane and 32-bit component, whatever
// its width: elementwise.wgsl's software entry points pay that loop three times per
// element, these three times per block. The host picks them when every operand is
// block-aligned: the element count (GEGLU: the row width) a multiple of BLOCK_ELEMS,
// and for binary ops the output's last dimension too, with each operand either
// contiguous along it (its other strides multiples of BLOCK_ELEMS) or broadcast
// along it (stride 0: one element per block).
//
// Params, bindings and the arithmetic are elementwise.wgsl's (all f32).

struct Params {
    len: u32,
    op: u32,
    alpha: f32,
    beta: f32,
    shape: vec4<u32>,
    a_strides: vec4<u32>,
    b_strides: vec4<u32>,
    row_len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// a: unary and GEGLU input; binary's first operand
@group(0) @binding(1) var<storage, read> a: array<Block>;
// b: binary's second operand
@group(0) @binding(2) var<storage, read> b: array<Block>;
// y: (len)
@group(0) @binding(3) var<storage, read_write> y: array<Block>;

// Blocks per invocation: 16 f16 or 8 f32 elements, spreading llvmpipe's cost per
// workgroup and per resumed subgroup as elementwise.wgsl's RUN does; the host's
// RUN_BLOCKS matches it.
const RUN_BLOCKS: u32 = 2u;
// Quads per block that carry elements (block_quads gives two; f32 fills one).
const QUADS: u32 = BLOCK_ELEMS / 4u;

// This invocation's first block, and the number of blocks.
fn first_block(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (flat_workgroup(wg, nwg) * 8u + lid) * RUN_BLOCKS;
}

@compute @workgroup_size(8)
fn unary_blocks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let first = first_block(wg, nwg, lid);
    let blocks = params.len / BLOCK_ELEMS;
    for (var k = 0u; k < RUN_BLOCKS; k++) {
        let i = first + k;
        if i < blocks {
            var q = block_quads(a[i]);
            for (var h = 0u; h < QUADS; h++) {
                let x = q[h];
                q[h] = params.alpha * vec4<f32>(
                    activate(x.x, params.op),
                    activate(x.y, params.op),
                    activate(x.z, params.op),
                    activate(x.w, params.op),
                ) + params.beta;
            }
            y[i] = block_of(q);
        }
    }
}

// Operand values of the block whose first element has offset `off` in an operand of
// last-dimension stride `inner`: the block itself (1) or its first element repeated (0).
fn operand_a(off: u32, inner: u32) -> array<vec4<f32>, 2> {
    let blk = a[off / BLOCK_ELEMS];
    if inner == 0u {
        let v = vec4<f32>(block_elem(blk, off % BLOCK_ELEMS));
        return array(v, v);
    }
    return block_quads(blk);
}

fn operand_b(off: u32, inner: u32) -> array<vec4<f32>, 2> {
    let blk = b[off / BLOCK_ELEMS];
    if inner == 0u {
        let v = vec4<f32>(block_elem(blk, off % BLOCK_ELEMS));
        return array(v, v);
    }
    return block_quads(blk);
}

// y = a + alpha * b (OP_ADD = 0) or alpha * a * b (OP_MUL = 1), broadcasting.
@compute @workgroup_size(8)
fn binary_blocks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let first = first_block(wg, nwg, lid);
    let blocks = params.len / BLOCK_ELEMS;
    let s = params.shape;
    // The (d0, d1, d2, d3) index of the first element; d3 stays a multiple of
    // BLOCK_ELEMS, which divides s.w.
    let e = first * BLOCK_ELEMS;
    var idx = vec4<u32>(e / (s.w * s.z * s.y), (e / (s.w * s.z)) % s.y, (e / s.w) % s.z, e % s.w);
    for (var k = 0u; k < RUN_BLOCKS; k++) {
        let i = first + k;
        if i < blocks {
            let va = operand_a(dot(idx, params.a_strides), params.a_strides.w);
            let vb = operand_b(dot(idx, params.b_strides), params.b_strides.w);
            var r: array<vec4<f32>, 2>;
            for (var h = 0u; h < QUADS; h++) {
                if params.op == 1u {
                    r[h] = params.alpha * va[h] * vb[h];
                } else {
                    r[h] = va[h] + params.alpha * vb[h];
                }
            }
            y[i] = block_of(r);
        }
        idx.w += BLOCK_ELEMS;
        if idx.w == s.w {
            idx.w = 0u;
            idx.z += 1u;
            if idx.z == s.z {
                idx.z = 0u;
                idx.y += 1u;
                if idx.y == s.y {
                    idx.y = 0u;
                    idx.x += 1u;
                }
            }
        }
    }
}

// GEGLU: input rows (value, gate) of 2 * row_len, y = value * gelu(gate).
@compute @workgroup_size(8)
fn geglu_blocks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let first = first_block(wg, nwg, lid);
    let blocks = params.len / BLOCK_ELEMS;
    // Blocks per output row, and this invocation's first row and column (in blocks).
    let row_blocks = params.row_len / BLOCK_ELEMS;
    var row = first / row_blocks;
    var col = first % row_blocks;
    for (var k = 0u; k < RUN_BLOCKS; k++) {
        let i = first + k;
        if i < blocks {
            let base = row * 2u * row_blocks + col;
            let value = block_quads(a[base]);
            let gate = block_quads(a[base + row_blocks]);
            var r: array<vec4<f32>, 2>;
            for (var h = 0u; h < QUADS; h++) {
                let g = gate[h];
                r[h] = value[h] * vec4<f32>(gelu(g.x), gelu(g.y), gelu(g.z), gelu(g.w));
            }
            y[i] = block_of(r);
        }
        col += 1u;
        if col == row_blocks {
            col = 0u;
            row += 1u;
        }
    }
}
