// Fused multi-head attention for software adapters with 8-lane subgroups (lavapipe on
// AVX2), with the Params and bindings of attention.wgsl and the same results: output,
// per-query normalised entropy, head lists, causal masking, the work probe.
//
// There an invocation is one SIMD lane and a workgroup runs on one CPU thread. This
// kernel uses no workgroup memory and no barriers: a workgroup is one subgroup of
// LANES = 8 invocations that owns QUERIES = 16 consecutive queries of one head, two per
// lane (queries i and i + 8: their scaled q rows and output accumulators in registers),
// and walks the keys in blocks of KEY_BLOCK = 8. Lane i loads key row i of the block (a
// lane-varying load: one scalar load per lane) and subgroupBroadcast hands each loaded
// vec4 to all 8 lanes, so a loaded value feeds 16 queries; the value rows likewise.
// (One query per lane fed 8: on one lavapipe thread the default UNet's 16-wide
// self-attentions took 93-100 ms per guided step that way, 66 ms with two, as lavapipe
// spends most of this kernel on those loads. Loads at workgroup-uniform addresses inside
// the key loop were measured no faster than the tiled kernel: llvmpipe still issues them
// per lane there.) Per key a lane does 4 * HEAD_DIM FMAs and two exps; each query's
// running-max rescale costs one more exp per block.
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
// Entropy: each lane writes its queries' normalised entropy and its square to
// entropy_partial[slot][query] (one entry per query, no reduction here);
// entropy_reduce in attention_heads.wgsl sums them.

const LANES: u32 = 8u;
// Queries per workgroup: two per lane (attention.rs's CPU_QUERY_TILE).
const QUERIES: u32 = 2u * LANES;
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

// Lane i's vec4 to every lane, for i = 0..7.
fn broadcast8(mine: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u),
        subgroupBroadcast(mine, 3u), subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u),
        subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u),
    );
}

// One query's partial scores (its elements `q`) against 8 keys' elements `k`: keys 0-3
// and 4-7.
fn dots8(q: vec4<f32>, k: array<vec4<f32>, 8>) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(
        vec4<f32>(dot(q, k[0]), dot(q, k[1]), dot(q, k[2]), dot(q, k[3])),
        vec4<f32>(dot(q, k[4]), dot(q, k[5]), dot(q, k[6]), dot(q, k[7])),
    );
}

// acc + the 8 keys' probabilities (keys 0-3 in lo, 4-7 in hi) times their value
// elements `v`, in key order.
fn weigh8(acc: vec4<f32>, lo: vec4<f32>, hi: vec4<f32>, v: array<vec4<f32>, 8>) -> vec4<f32> {
    var a = acc;
    a = fma(vec4<f32>(lo.x), v[0], a);
    a = fma(vec4<f32>(lo.y), v[1], a);
    a = fma(vec4<f32>(lo.z), v[2], a);
    a = fma(vec4<f32>(lo.w), v[3], a);
    a = fma(vec4<f32>(hi.x), v[4], a);
    a = fma(vec4<f32>(hi.y), v[5], a);
    a = fma(vec4<f32>(hi.z), v[6], a);
    return fma(vec4<f32>(hi.w), v[7], a);
}

// The 8 scores of a key block for both of this lane's queries (a, b): lane i loads key
// row i's values (row_mine is where its row starts) and subgroupBroadcast hands them to
// every lane. Returns keys 0-3 and 4-7 of query a, then of query b.
fn block_scores(qa: ptr<function, Row>, qb: ptr<function, Row>, row_mine: u32) -> array<vec4<f32>, 4> {
    var r: array<vec4<f32>, 4>;
    for (var c4 = 0u; c4 < D4; c4++) {
        let k = broadcast8(k_quad(row_mine + c4 * 4u));
        let sa = dots8((*qa)[c4], k);
        let sb = dots8((*qb)[c4], k);
        r[0] += sa[0];
        r[1] += sa[1];
        r[2] += sb[0];
        r[3] += sb[1];
    }
    return r;
}

// acc_a, acc_b += the block's probabilities (as block_scores returns them) times its
// value rows, shared as in block_scores.
fn block_accumulate(acc_a: ptr<function, Row>, acc_b: ptr<function, Row>, p: array<vec4<f32>, 4>, row_mine: u32) {
    for (var c4 = 0u; c4 < D4; c4++) {
        let v = broadcast8(v_quad(row_mine + c4 * 4u));
        (*acc_a)[c4] = weigh8((*acc_a)[c4], p[0], p[1], v);
        (*acc_b)[c4] = weigh8((*acc_b)[c4], p[2], p[3], v);
    }
}

// One query's running softmax state: the largest score so far, the sum of exp(s - m)
// and of s * exp(s - m) (for the entropy).
struct Run {
    m: f32,
    l: f32,
    t: f32,
}

// Folds a block's scores (keys 0-3, 4-7; live_lo/hi: which attend) into one query's
// state; returns the probabilities and leaves acc rescaled.
fn fold_block(run: ptr<function, Run>, acc: ptr<function, Row>, s_lo_in: vec4<f32>, s_hi_in: vec4<f32>,
              live_lo: vec4<bool>, live_hi: vec4<bool>) -> array<vec4<f32>, 2> {
    let s_lo = select(vec4<f32>(MASKED), s_lo_in, live_lo);
    let s_hi = select(vec4<f32>(MASKED), s_hi_in, live_hi);
    let s_max = max(s_lo, s_hi);
    let m_new = max((*run).m, max(max(s_max.x, s_max.y), max(s_max.z, s_max.w)));
    let rescale = exp((*run).m - m_new);
    for (var c4 = 0u; c4 < D4; c4++) {
        (*acc)[c4] *= rescale;
    }
    let p_lo = select(vec4<f32>(0.0), exp(s_lo - vec4<f32>(m_new)), live_lo);
    let p_hi = select(vec4<f32>(0.0), exp(s_hi - vec4<f32>(m_new)), live_hi);
    (*run).l = (*run).l * rescale + dot(p_lo + p_hi, vec4<f32>(1.0));
    (*run).t = (*run).t * rescale + dot(p_lo, s_lo) + dot(p_hi, s_hi);
    (*run).m = m_new;
    return array<vec4<f32>, 2>(p_lo, p_hi);
}

// Writes one query's output row and entropy.
fn finish(qi: u32, slot: u32, b: u32, h: u32, my_keys: u32, acc: ptr<function, Row>, run: Run) {
    let ob = params.o_layout.x + b * params.o_layout.y + qi * params.o_layout.z + h * params.o_layout.w;
    let inv_l = 1.0 / run.l;
    for (var c4 = 0u; c4 < D4; c4++) {
        let r = (*acc)[c4] * inv_l;
        let c = ob + c4 * 4u;
        out[c] = elem(r.x);
        out[c + 1u] = elem(r.y);
        out[c + 2u] = elem(r.z);
        out[c + 3u] = elem(r.w);
    }
    var entropy = 0.0;
    if my_keys > 1u {
        entropy = (run.m + log(run.l) - run.t * inv_l) / log(f32(my_keys));
    }
    let p = (slot * params.n_query_tiles + qi) * 2u;
    entropy_partial[p] = entropy;
    entropy_partial[p + 1u] = entropy * entropy;
#if COUNT_WORK
    atomicAdd(&work[0], my_keys);
#endif
}

// A query's row (its elements from qb on), scaled.
fn load_q(qb: u32) -> Row {
    var q_row: Row;
    for (var c4 = 0u; c4 < D4; c4++) {
        let c = qb + c4 * 4u;
        q_row[c4] = vec4<f32>(f32(q[c]), f32(q[c + 1u]), f32(q[c + 2u]), f32(q[c + 3u])) * params.scale;
    }
    return q_row;
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
    // This lane's queries a and b (rows past the end clamped for loading, not stored).
    let qa = wg.x * QUERIES + lane;
    let qb = qa + LANES;
    let qa_row = min(qa, params.n_q - 1u);
    let qb_row = min(qb, params.n_q - 1u);
    // Keys this workgroup visits: all of them, or up to its last query when causal; the
    // keys each of this lane's queries attends to.
    var keys_needed = params.n_k;
    var keys_a = params.n_k;
    var keys_b = params.n_k;
    if params.causal == 1u {
        keys_needed = min(params.n_k, (wg.x + 1u) * QUERIES);
        keys_a = min(params.n_k, qa_row + 1u);
        keys_b = min(params.n_k, qb_row + 1u);
    }
    let q_base = params.q_layout.x + b * params.q_layout.y + h * params.q_layout.w;
    var q_a = load_q(q_base + qa_row * params.q_layout.z);
    var q_b = load_q(q_base + qb_row * params.q_layout.z);
    var acc_a: Row;
    var acc_b: Row;
    // Every query's first block holds its key 0, so m is a real score from then on and
    // exp(MASKED - m) is 0.
    var run_a = Run(MASKED, 0.0, 0.0);
    var run_b = Run(MASKED, 0.0, 0.0);

    let kb = params.k_layout.x + b * params.k_layout.y + h * params.k_layout.w;
    let vb = params.v_layout.x + b * params.v_layout.y + h * params.v_layout.w;
    let k_step = params.k_layout.z;
    let v_step = params.v_layout.z;
    let last_key = params.n_k - 1u;
    for (var key0 = 0u; key0 < keys_needed; key0 += KEY_BLOCK) {
        let keys_lo = vec4<u32>(key0) + vec4<u32>(0u, 1u, 2u, 3u);
        let keys_hi = keys_lo + vec4<u32>(4u);
        let row_mine = min(key0 + lane, last_key);
        let s = block_scores(&q_a, &q_b, kb + row_mine * k_step);
        let pa = fold_block(&run_a, &acc_a, s[0], s[1], keys_lo < vec4<u32>(keys_a), keys_hi < vec4<u32>(keys_a));
        let pb = fold_block(&run_b, &acc_b, s[2], s[3], keys_lo < vec4<u32>(keys_b), keys_hi < vec4<u32>(keys_b));
        block_accumulate(&acc_a, &acc_b, array<vec4<f32>, 4>(pa[0], pa[1], pb[0], pb[1]), vb + row_mine * v_step);
    }
    if qa < params.n_q {
        finish(qa, slot, b, h, keys_a, &acc_a, run_a);
    }
    if qb < params.n_q {
        finish(qb, slot, b, h, keys_b, &acc_b, run_b);
    }
}
