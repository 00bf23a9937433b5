// Fused multi-head attention for software adapters with 8-lane subgroups (lavapipe on
// AVX2), with the Params and bindings of attention.wgsl and the same results: output,
// per-query normalised entropy, head lists, causal masking, the work probe.
//
// There an invocation is one SIMD lane and a workgroup runs on one CPU thread. This
// kernel uses no workgroup memory and no barriers: a workgroup is one subgroup of
// LANES = 8 invocations that owns 8 consecutive queries of one head (one per lane, its
// scaled q row and output accumulator in registers) and walks the keys in blocks of
// KEY_BLOCK = 8. Lane i loads key row i of the block (a lane-varying load: one scalar
// load per lane) and subgroupBroadcast hands each loaded vec4 to all 8 lanes, so a
// loaded value feeds 8 queries; the value rows likewise. (Loads at workgroup-uniform
// addresses inside the key loop were measured no faster than the tiled kernel: llvmpipe
// still issues them per lane there.) Per key a lane does 2 * HEAD_DIM FMAs and one exp;
// the block's running-max rescale costs one more exp per block.
//
// HEAD_DIM is fixed at pipeline creation (a multiple of 4) so that the loops over it
// have constant trip counts (llvmpipe unrolls loops of <= 32 iterations and keeps the
// rows in registers instead of indexed scratch memory; it hoists nothing out of loops
// and ends an invocation's loops after 65535 iterations in total); the 8 keys of a
// block are written out. Keys past the end (the last block, causal masking) are loaded
// clamped and masked to probability 0, never branched around: every lane takes part in
// every broadcast.
//
// QUADS=1 (every k and v offset and stride a multiple of 4): key and value rows are
// read as four-element words (`Quad`), a quarter of the loads; on lavapipe a
// lane-varying load is a loop over the lanes whose cost grows far less than its width.
//
// Entropy: lane i writes its query's normalised entropy and its square to
// entropy_partial[slot][query] (one entry per query, no reduction here);
// entropy_reduce in attention_heads.wgsl sums them.

const LANES: u32 = 8u;
const KEY_BLOCK: u32 = 8u;
const D4: u32 = HEAD_DIM / 4u;
const MASKED: f32 = -3.0e38;

struct Params {
    n_q: u32,
    n_k: u32,
    head_dim: u32,
    n_heads: u32,
    // (offset, batch stride, token stride, head stride) in elements, per tensor.
    q_layout: vec4<u32>,
    k_layout: vec4<u32>,
    v_layout: vec4<u32>,
    o_layout: vec4<u32>,
    scale: f32,
    // 1: query i attends to keys 0..=i only (CLIP's text encoder).
    causal: u32,
    // 1: workgroup_id.y indexes the active part of head_list; 0: it is the head slot.
    use_head_list: u32,
    // Entries per head in entropy_partial (n_q here: one per query).
    n_query_tiles: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// q: (B, N_q, H, D) through q_layout
@group(0) @binding(1) var<storage, read> q: array<elem>;
#if QUADS
// k: (B, N_k, H, D) through k_layout, in quads
@group(0) @binding(2) var<storage, read> k: array<Quad>;
// v: (B, N_k, H, D) through v_layout, in quads
@group(0) @binding(3) var<storage, read> v: array<Quad>;
#else
// k: (B, N_k, H, D) through k_layout
@group(0) @binding(2) var<storage, read> k: array<elem>;
// v: (B, N_k, H, D) through v_layout
@group(0) @binding(3) var<storage, read> v: array<elem>;
#endif
// out: (B, N_q, H, D) through o_layout
@group(0) @binding(4) var<storage, read_write> out: array<elem>;
// entropy_partial: (B * H, N_q, 2) each query's normalised entropy H and H^2, f32
@group(0) @binding(5) var<storage, read_write> entropy_partial: array<f32>;
// head_list: [n_active, n_inactive, slots...] (B * H + 2); unread when use_head_list is 0
@group(0) @binding(6) var<storage, read> head_list: array<u32>;
#if COUNT_WORK
// work: [query-key scores computed]; a test-only probe that proves skipped heads do no work
@group(0) @binding(7) var<storage, read_write> work: array<atomic<u32>>;
#endif

alias Row = array<vec4<f32>, D4>;

// Elements c .. c + 3 of k and of v.
fn k_quad(c: u32) -> vec4<f32> {
#if QUADS
    return quad_values(k[c / 4u]);
#else
    return vec4<f32>(f32(k[c]), f32(k[c + 1u]), f32(k[c + 2u]), f32(k[c + 3u]));
#endif
}

fn v_quad(c: u32) -> vec4<f32> {
#if QUADS
    return quad_values(v[c / 4u]);
#else
    return vec4<f32>(f32(v[c]), f32(v[c + 1u]), f32(v[c + 2u]), f32(v[c + 3u]));
#endif
}

// The 8 scores of a key block: lane i loads key row i's values (row_mine is where its
// row starts) and subgroupBroadcast hands them to every lane. Returns keys 0-3 and 4-7.
fn block_scores(q_row: ptr<function, Row>, row_mine: u32) -> array<vec4<f32>, 2> {
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var c4 = 0u; c4 < D4; c4++) {
        let c = row_mine + c4 * 4u;
        let kr = k_quad(c);
        let qv = (*q_row)[c4];
        lo += vec4<f32>(
            dot(qv, subgroupBroadcast(kr, 0u)),
            dot(qv, subgroupBroadcast(kr, 1u)),
            dot(qv, subgroupBroadcast(kr, 2u)),
            dot(qv, subgroupBroadcast(kr, 3u)),
        );
        hi += vec4<f32>(
            dot(qv, subgroupBroadcast(kr, 4u)),
            dot(qv, subgroupBroadcast(kr, 5u)),
            dot(qv, subgroupBroadcast(kr, 6u)),
            dot(qv, subgroupBroadcast(kr, 7u)),
        );
    }
    return array<vec4<f32>, 2>(lo, hi);
}

// acc += the block's probabilities times its value rows, shared as in block_scores.
fn block_accumulate(acc: ptr<function, Row>, p_lo: vec4<f32>, p_hi: vec4<f32>, row_mine: u32) {
    for (var c4 = 0u; c4 < D4; c4++) {
        let c = row_mine + c4 * 4u;
        let vr = v_quad(c);
        var a = (*acc)[c4];
        a = fma(vec4<f32>(p_lo.x), subgroupBroadcast(vr, 0u), a);
        a = fma(vec4<f32>(p_lo.y), subgroupBroadcast(vr, 1u), a);
        a = fma(vec4<f32>(p_lo.z), subgroupBroadcast(vr, 2u), a);
        a = fma(vec4<f32>(p_lo.w), subgroupBroadcast(vr, 3u), a);
        a = fma(vec4<f32>(p_hi.x), subgroupBroadcast(vr, 4u), a);
        a = fma(vec4<f32>(p_hi.y), subgroupBroadcast(vr, 5u), a);
        a = fma(vec4<f32>(p_hi.z), subgroupBroadcast(vr, 6u), a);
        a = fma(vec4<f32>(p_hi.w), subgroupBroadcast(vr, 7u), a);
        (*acc)[c4] = a;
    }
}

@compute @workgroup_size(8)
fn attention_cpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    // The workgroup is one subgroup of 8: local index order is subgroup lane order.
    var slot = wg.y;
    if params.use_head_list == 1u {
        slot = head_list[2u + wg.y];
    }
    let b = slot / params.n_heads;
    let h = slot % params.n_heads;
    let qi = wg.x * LANES + lane;
    let valid = qi < params.n_q;
    let q_row_index = min(qi, params.n_q - 1u);

    // Keys this workgroup visits: all of them, or up to its last query when causal; the
    // keys this lane's query attends to.
    var keys_needed = params.n_k;
    var my_keys = params.n_k;
    if params.causal == 1u {
        keys_needed = min(params.n_k, (wg.x + 1u) * LANES);
        my_keys = min(params.n_k, q_row_index + 1u);
    }

    var q_row: Row;
    var acc: Row;
    let qb = params.q_layout.x + b * params.q_layout.y + q_row_index * params.q_layout.z + h * params.q_layout.w;
    for (var c4 = 0u; c4 < D4; c4++) {
        let c = qb + c4 * 4u;
        q_row[c4] = vec4<f32>(f32(q[c]), f32(q[c + 1u]), f32(q[c + 2u]), f32(q[c + 3u])) * params.scale;
        acc[c4] = vec4<f32>(0.0);
    }
    var m = MASKED;
    var l = 0.0;
    var t = 0.0;

    let kb = params.k_layout.x + b * params.k_layout.y + h * params.k_layout.w;
    let vb = params.v_layout.x + b * params.v_layout.y + h * params.v_layout.w;
    let k_step = params.k_layout.z;
    let v_step = params.v_layout.z;
    let last_key = params.n_k - 1u;
    for (var key0 = 0u; key0 < keys_needed; key0 += KEY_BLOCK) {
        let keys_lo = vec4<u32>(key0) + vec4<u32>(0u, 1u, 2u, 3u);
        let keys_hi = keys_lo + vec4<u32>(4u);
        let live_lo = keys_lo < vec4<u32>(my_keys);
        let live_hi = keys_hi < vec4<u32>(my_keys);
        let row_mine = min(key0 + lane, last_key);
        let s_block = block_scores(&q_row, kb + row_mine * k_step);
        let s_lo = select(vec4<f32>(MASKED), s_block[0], live_lo);
        let s_hi = select(vec4<f32>(MASKED), s_block[1], live_hi);
        let s_max = max(s_lo, s_hi);
        // Every lane's first block holds its key 0, so m is a real score from then on
        // and exp(MASKED - m) is 0.
        let m_new = max(m, max(max(s_max.x, s_max.y), max(s_max.z, s_max.w)));
        let rescale = exp(m - m_new);
        for (var c4 = 0u; c4 < D4; c4++) {
            acc[c4] *= rescale;
        }
        let p_lo = select(vec4<f32>(0.0), exp(s_lo - vec4<f32>(m_new)), live_lo);
        let p_hi = select(vec4<f32>(0.0), exp(s_hi - vec4<f32>(m_new)), live_hi);
        l = l * rescale + dot(p_lo + p_hi, vec4<f32>(1.0));
        t = t * rescale + dot(p_lo, s_lo) + dot(p_hi, s_hi);
        block_accumulate(&acc, p_lo, p_hi, vb + row_mine * v_step);
        m = m_new;
    }

    if valid {
        let ob = params.o_layout.x + b * params.o_layout.y + qi * params.o_layout.z + h * params.o_layout.w;
        let inv_l = 1.0 / l;
        for (var c4 = 0u; c4 < D4; c4++) {
            let r = acc[c4] * inv_l;
            let c = ob + c4 * 4u;
            out[c] = elem(r.x);
            out[c + 1u] = elem(r.y);
            out[c + 2u] = elem(r.z);
            out[c + 3u] = elem(r.w);
        }
        var entropy = 0.0;
        if my_keys > 1u {
            entropy = (m + log(l) - t * inv_l) / log(f32(my_keys));
        }
        let p = (slot * params.n_query_tiles + qi) * 2u;
        entropy_partial[p] = entropy;
        entropy_partial[p + 1u] = entropy * entropy;
#if COUNT_WORK
        atomicAdd(&work[0], my_keys);
#endif
    }
}
